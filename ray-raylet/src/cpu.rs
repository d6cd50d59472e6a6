//! The machine's CPU use, as Ray's `ray_node_cpu_utilization` reports it: the share of time
//! the machine's CPUs were busy between two reads of `/proc/stat`.

/// CPU time so far, in clock ticks: busy and all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

/// The first line of `/proc/stat` (`cpu  user nice system idle iowait irq softirq steal ...`)
/// as CPU times; `None` if it is not that.
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().next()?;
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    // user, nice, system, idle, iowait, irq, softirq, steal (guest time is within user).
    let ticks: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if ticks.len() < 4 {
        return None;
    }
    let total: u64 = ticks.iter().sum();
    let idle = ticks[3] + ticks.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: total - idle,
        total,
    })
}

/// Percent of the CPUs busy between `before` and `after` (0 if no time passed).
pub fn utilization(before: CpuTimes, after: CpuTimes) -> f64 {
    let total = after.total.saturating_sub(before.total);
    if total == 0 {
        return 0.0;
    }
    let busy = after.busy.saturating_sub(before.busy);
    100.0 * busy as f64 / total as f64
}

/// This machine's CPU times now (`None` without `/proc`).
pub fn read() -> Option<CpuTimes> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_share_between_two_reads() {
        let a = parse_proc_stat("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!(
            a,
            CpuTimes {
                busy: 200,
                total: 1000
            }
        );
        let b = parse_proc_stat("cpu  400 0 100 800 100 0 0 0 0 0\n").unwrap();
        assert_eq!(utilization(a, b), 75.0);
        assert_eq!(utilization(b, b), 0.0);
        assert!(parse_proc_stat("intr 1 2 3").is_none());
        assert!(read().is_some(), "Linux has /proc/stat");
    }
}
