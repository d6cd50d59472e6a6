//! Which of the node's GPUs each lease holds. A lease asking for GPUs is given device ids
//! (Ray's rules: a fraction of one device, or whole devices), and its worker process is
//! started with them in `CUDA_VISIBLE_DEVICES`: a worker serves only leases of the same ids.
//!
//! Invariant: a device's free share stays within `0..=PRECISION`, and what a lease took
//! ([`Assignment`]) is given back exactly once, when the lease is forgotten.

use ray_scheduler::resources::PRECISION;

/// The variable CUDA reads, set in the worker of a lease holding GPUs.
pub const CUDA_VISIBLE_DEVICES: &str = "CUDA_VISIBLE_DEVICES";
/// The same ids, for `ray::get_gpu_ids()` (a user's `CUDA_VISIBLE_DEVICES` may be rewritten).
pub const GPU_IDS_VAR: &str = "RAYRS_GPU_IDS";

/// The ids of the GPUs a node sees: the `CUDA_VISIBLE_DEVICES` it was started with, else
/// the devices `nvidia-smi -L` lists; empty when neither says anything.
pub fn detect() -> Vec<String> {
    if let Some(ids) = std::env::var(CUDA_VISIBLE_DEVICES)
        .ok()
        .and_then(|v| parse_visible(&v))
    {
        return ids;
    }
    match std::process::Command::new("nvidia-smi").arg("-L").output() {
        Ok(out) if out.status.success() => parse_nvidia_smi(&String::from_utf8_lossy(&out.stdout)),
        _ => Vec::new(),
    }
}

/// The ids in a `CUDA_VISIBLE_DEVICES` value; `None` for a value that names no device list
/// (empty, or CUDA's "NoDevFiles").
pub fn parse_visible(value: &str) -> Option<Vec<String>> {
    let value = value.trim();
    if value.is_empty() || value == "NoDevFiles" {
        return None;
    }
    Some(
        value
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    )
}

/// The device indexes of `nvidia-smi -L` output ("GPU 0: NVIDIA A100 (UUID: ..)").
pub fn parse_nvidia_smi(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("GPU "))
        .filter_map(|rest| rest.split(':').next())
        .filter(|n| n.parse::<u32>().is_ok())
        .map(str::to_string)
        .collect()
}

/// The ids of a node offering `count` GPUs: the first `count` of `seen` (the devices it
/// detected), and numbers counting on past them when it is told of more than it sees (fake
/// GPUs, as tests use).
pub fn node_ids(count: usize, seen: &[String]) -> Vec<String> {
    let mut ids: Vec<String> = seen.iter().take(count).cloned().collect();
    let mut n = 0u32;
    while ids.len() < count {
        let id = n.to_string();
        if !ids.contains(&id) {
            ids.push(id);
        }
        n += 1;
    }
    ids
}

/// Shares of devices one lease holds: `(device index, fixed-point share)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assignment(Vec<(usize, i64)>);

impl Assignment {
    /// Holds no GPU.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A node's GPUs and what is free on each.
#[derive(Debug)]
pub struct GpuSlots {
    ids: Vec<String>,
    free: Vec<i64>,
}

impl GpuSlots {
    /// Devices `ids`, all free.
    pub fn new(ids: Vec<String>) -> Self {
        let free = vec![PRECISION; ids.len()];
        GpuSlots { ids, free }
    }

    /// The ways to hold `want` (fixed-point GPUs), in the order to try them: for a fraction
    /// of one device, each device with that much free (the fullest first, so that whole
    /// devices stay whole); for whole devices, the first free ones. Empty when none fits now
    /// (or `want` is more than one device and not whole, which Ray refuses).
    pub fn choices(&self, want: i64) -> Vec<Assignment> {
        if want <= 0 {
            return vec![Assignment::default()];
        }
        if want < PRECISION {
            let mut fit: Vec<usize> = (0..self.free.len())
                .filter(|&i| self.free[i] >= want)
                .collect();
            fit.sort_by_key(|&i| (self.free[i], i));
            return fit
                .into_iter()
                .map(|i| Assignment(vec![(i, want)]))
                .collect();
        }
        if want % PRECISION != 0 {
            return Vec::new();
        }
        let whole = (want / PRECISION) as usize;
        let free: Vec<usize> = (0..self.free.len())
            .filter(|&i| self.free[i] == PRECISION)
            .take(whole)
            .collect();
        if free.len() < whole {
            return Vec::new();
        }
        vec![Assignment(
            free.into_iter().map(|i| (i, PRECISION)).collect(),
        )]
    }

    /// What is free on the devices `a` names, together: choices that pack as well as each
    /// other have the same.
    pub fn free_on(&self, a: &Assignment) -> i64 {
        a.0.iter().map(|&(i, _)| self.free[i]).sum()
    }

    /// Takes what `a` holds (one of [`GpuSlots::choices`], taken at once).
    pub fn take(&mut self, a: &Assignment) {
        for &(i, share) in &a.0 {
            self.free[i] = (self.free[i] - share).max(0);
        }
    }

    /// Gives back what `a` held.
    pub fn give_back(&mut self, a: &Assignment) {
        for &(i, share) in &a.0 {
            self.free[i] = (self.free[i] + share).min(PRECISION);
        }
    }

    /// The worker environment of a lease holding `a`: the device ids, comma-separated, in
    /// `CUDA_VISIBLE_DEVICES` and [`GPU_IDS_VAR`], on top of `env`. Nothing added for none.
    pub fn env(&self, a: &Assignment, env: &[ray_proto::EnvVar]) -> Vec<ray_proto::EnvVar> {
        let mut out: Vec<ray_proto::EnvVar> = env.to_vec();
        if a.is_empty() {
            return out;
        }
        let ids: Vec<&str> = a.0.iter().map(|&(i, _)| self.ids[i].as_str()).collect();
        let ids = ids.join(",");
        out.retain(|v| v.name != CUDA_VISIBLE_DEVICES && v.name != GPU_IDS_VAR);
        for name in [CUDA_VISIBLE_DEVICES, GPU_IDS_VAR] {
            out.push(ray_proto::EnvVar {
                name: name.to_string(),
                value: ids.clone(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HALF: i64 = PRECISION / 2;

    fn ids(a: &Assignment) -> Vec<usize> {
        a.0.iter().map(|&(i, _)| i).collect()
    }

    #[test]
    fn fractions_share_a_device_and_whole_devices_stay_whole() {
        let mut g = GpuSlots::new(vec!["0".into(), "1".into()]);
        let first = g.choices(HALF)[0].clone();
        g.take(&first);
        // The next half goes to the same device (the fullest that fits), keeping 1 whole.
        let second = g.choices(HALF)[0].clone();
        assert_eq!(ids(&first), ids(&second));
        g.take(&second);
        assert_eq!(ids(&g.choices(PRECISION)[0]), vec![1]);
        assert!(g.choices(2 * PRECISION).is_empty());
        g.give_back(&first);
        g.give_back(&second);
        assert_eq!(ids(&g.choices(2 * PRECISION)[0]), vec![0, 1]);
        // More than one device and not whole: never.
        assert!(g.choices(PRECISION + HALF).is_empty());
    }

    #[test]
    fn a_tiny_share_still_names_a_device() {
        let mut g = GpuSlots::new(vec!["3".into()]);
        let a = g.choices(100)[0].clone();
        g.take(&a);
        let env = g.env(&a, &[]);
        assert_eq!(env.len(), 2);
        assert!(env.iter().all(|v| v.value == "3"), "{env:?}");
        // The rest of the device is still there for others.
        assert_eq!(g.choices(PRECISION - 100).len(), 1);
        assert!(g.choices(PRECISION).is_empty());
    }

    #[test]
    fn detection_reads_visible_devices_and_nvidia_smi() {
        assert_eq!(parse_visible("2, 5"), Some(vec!["2".into(), "5".into()]));
        assert_eq!(parse_visible(""), None);
        assert_eq!(parse_visible("NoDevFiles"), None);
        let smi =
            "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-aaaa)\nGPU 1: NVIDIA A100 (UUID: GPU-bbbb)\n";
        assert_eq!(
            parse_nvidia_smi(smi),
            vec!["0".to_string(), "1".to_string()]
        );
        assert!(parse_nvidia_smi("No devices were found").is_empty());
        assert_eq!(
            node_ids(2, &["7".into(), "9".into(), "11".into()]),
            vec!["7", "9"]
        );
        assert_eq!(node_ids(3, &["1".into()]), vec!["1", "0", "2"]);
    }
}
