//! Fixed-point resource sets, following Ray's resource rules.
//!
//! Every amount is held as an integer number of ten-thousandths ([`PRECISION`]), like Ray's
//! `FixedPoint`, so that adding and subtracting fractional CPUs never drifts: `0.1 + 0.2`
//! subtracted again leaves exactly zero.
//!
//! Validation happens once, when a set is built from floats ([`ResourceSet::from_pairs`]):
//!
//! * an amount must be finite and not negative ([`ResourceError::NotFinite`],
//!   [`ResourceError::Negative`]);
//! * it may carry at most four decimal places ([`ResourceError::TooPrecise`]);
//! * for *unit-instance* resources (`GPU`, and the accelerator names in
//!   [`UNIT_INSTANCE_RESOURCES`]) an amount above 1 must be whole: `0.5` and `2` are fine,
//!   `1.5` is not ([`ResourceError::NotWhole`]). Ray applies the same rule because such
//!   resources are handed out as individual device instances;
//! * zero amounts are dropped, so two sets that hold the same non-zero amounts compare equal.
//!
//! After validation no operation panics: arithmetic saturates at the `i64` limits (which no
//! validated amount approaches, see [`MAX_AMOUNT`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Name of the CPU resource.
pub const CPU: &str = "CPU";
/// Name of the GPU resource.
pub const GPU: &str = "GPU";
/// Name of the (logical) memory resource, in bytes.
pub const MEMORY: &str = "memory";
/// Name of the object store memory resource, in bytes.
pub const OBJECT_STORE_MEMORY: &str = "object_store_memory";

/// Number of fixed-point units in one resource unit (four decimal places, as in Ray).
pub const PRECISION: i64 = 10_000;

/// Largest amount accepted for one resource (10^14, i.e. 100 TB of memory in bytes).
///
/// Kept well below `i64::MAX / PRECISION` so that sums of many such amounts stay exact.
pub const MAX_AMOUNT: f64 = 1e14;

/// Custom resources that, like `GPU`, are allocated as whole device instances: an amount
/// above 1 must be a whole number. Mirrors Ray's `custom_unit_instance_resources` default.
pub const UNIT_INSTANCE_RESOURCES: &[&str] = &["neuron_cores", "TPU", "NPU", "HPU", "RBLN"];

/// The predefined resources, in the order they are stored and iterated.
pub(crate) const PREDEFINED: [&str; 4] = [CPU, GPU, MEMORY, OBJECT_STORE_MEMORY];
pub(crate) const CPU_IDX: usize = 0;
pub(crate) const GPU_IDX: usize = 1;
pub(crate) const MEM_IDX: usize = 2;
pub(crate) const OBJ_IDX: usize = 3;

/// Whether amounts above 1 of `name` must be whole (GPU and accelerator instances).
pub fn is_unit_instance_resource(name: &str) -> bool {
    name == GPU || UNIT_INSTANCE_RESOURCES.contains(&name)
}

fn predefined_index(name: &str) -> Option<usize> {
    PREDEFINED.iter().position(|p| *p == name)
}

/// Why a resource amount was refused. Returned, never panicked on.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ResourceError {
    /// The amount is below zero.
    #[error("resource {name:?}: amount {value} is negative")]
    Negative {
        /// Resource name.
        name: String,
        /// Offending amount.
        value: f64,
    },
    /// The amount is NaN or infinite.
    #[error("resource {name:?}: amount is not a finite number")]
    NotFinite {
        /// Resource name.
        name: String,
    },
    /// The amount has more than four decimal places.
    #[error(
        "resource {name:?}: amount {value} has more than 4 decimal places (precision is 0.0001)"
    )]
    TooPrecise {
        /// Resource name.
        name: String,
        /// Offending amount.
        value: f64,
    },
    /// A unit-instance resource (GPU, accelerators) above 1 that is not a whole number.
    #[error("resource {name:?}: amount {value} must be a whole number or a fraction below 1")]
    NotWhole {
        /// Resource name.
        name: String,
        /// Offending amount.
        value: f64,
    },
    /// The amount exceeds [`MAX_AMOUNT`].
    #[error("resource {name:?}: amount {value} exceeds the maximum {max}", max = MAX_AMOUNT)]
    TooLarge {
        /// Resource name.
        name: String,
        /// Offending amount.
        value: f64,
    },
    /// The resource name is empty.
    #[error("resource name is empty")]
    EmptyName,
    /// The same resource name was given twice.
    #[error("resource {name:?} is given more than once")]
    Duplicate {
        /// Resource name.
        name: String,
    },
}

/// Convert a validated float to fixed point units.
fn to_fixed(name: &str, value: f64) -> Result<i64, ResourceError> {
    if name.is_empty() {
        return Err(ResourceError::EmptyName);
    }
    if !value.is_finite() {
        return Err(ResourceError::NotFinite {
            name: name.to_owned(),
        });
    }
    if value < 0.0 {
        return Err(ResourceError::Negative {
            name: name.to_owned(),
            value,
        });
    }
    if value > MAX_AMOUNT {
        return Err(ResourceError::TooLarge {
            name: name.to_owned(),
            value,
        });
    }
    let scaled = value * PRECISION as f64;
    let rounded = scaled.round();
    // Tolerate the representation error of decimal fractions (0.1 * 1e4 is not exactly 1000).
    let tolerance = (scaled.abs() * 1e-12).max(1e-6);
    if (scaled - rounded).abs() > tolerance {
        return Err(ResourceError::TooPrecise {
            name: name.to_owned(),
            value,
        });
    }
    let fixed = rounded as i64;
    if fixed > PRECISION && fixed % PRECISION != 0 && is_unit_instance_resource(name) {
        return Err(ResourceError::NotWhole {
            name: name.to_owned(),
            value,
        });
    }
    Ok(fixed)
}

#[inline]
pub(crate) fn to_f64(fixed: i64) -> f64 {
    fixed as f64 / PRECISION as f64
}

/// A set of named resource amounts in fixed point (precision 0.0001).
///
/// The four predefined resources ([`CPU`], [`GPU`], [`MEMORY`], [`OBJECT_STORE_MEMORY`]) live
/// in a fixed array; custom resources in a small vector sorted by name, so a set without
/// custom resources never allocates. Absent and zero amounts are the same thing.
///
/// Amounts built by the constructors are never negative. [`ResourceSet::sub`] is exact and
/// may drive an amount below zero; see its documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceSet {
    pub(crate) predefined: [i64; 4],
    /// Sorted by name, no zero amounts.
    pub(crate) custom: Vec<(Arc<str>, i64)>,
}

impl ResourceSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Build a set from `(name, amount)` pairs, validating every amount (see the module
    /// documentation). Zero amounts are dropped; a name given twice is an error.
    pub fn from_pairs<I, S>(pairs: I) -> Result<Self, ResourceError>
    where
        I: IntoIterator<Item = (S, f64)>,
        S: Into<String>,
    {
        let mut set = ResourceSet::new();
        let mut seen_predefined = [false; 4];
        for (name, value) in pairs {
            let name: String = name.into();
            let fixed = to_fixed(&name, value)?;
            if let Some(i) = predefined_index(&name) {
                if seen_predefined[i] {
                    return Err(ResourceError::Duplicate { name });
                }
                seen_predefined[i] = true;
                set.predefined[i] = fixed;
            } else {
                match set
                    .custom
                    .binary_search_by(|(n, _)| (**n).cmp(name.as_str()))
                {
                    Ok(_) => return Err(ResourceError::Duplicate { name }),
                    Err(pos) => set.custom.insert(pos, (Arc::from(name), fixed)),
                }
            }
        }
        set.custom.retain(|(_, v)| *v != 0);
        Ok(set)
    }

    /// A set holding only `n` CPUs.
    pub fn cpus(n: f64) -> Result<Self, ResourceError> {
        Self::from_pairs([(CPU, n)])
    }

    /// Amount of `name` (0 when absent).
    pub fn get(&self, name: &str) -> f64 {
        to_f64(self.get_fixed(name))
    }

    /// Amount of `name` in fixed-point units (0 when absent).
    pub fn get_fixed(&self, name: &str) -> i64 {
        if let Some(i) = predefined_index(name) {
            return self.predefined[i];
        }
        self.custom_fixed(name)
    }

    pub(crate) fn custom_fixed(&self, name: &str) -> i64 {
        match self.custom.binary_search_by(|(n, _)| (**n).cmp(name)) {
            Ok(pos) => self.custom[pos].1,
            Err(_) => 0,
        }
    }

    /// Whether every amount is zero.
    pub fn is_empty(&self) -> bool {
        self.predefined.iter().all(|v| *v == 0) && self.custom.is_empty()
    }

    /// Whether no amount is below zero (always true for sets built by the constructors).
    pub fn is_nonnegative(&self) -> bool {
        self.predefined.iter().all(|v| *v >= 0) && self.custom.iter().all(|(_, v)| *v >= 0)
    }

    /// Whether `self <= available` for every resource with a positive amount in `self`.
    pub fn fits_in(&self, available: &ResourceSet) -> bool {
        for i in 0..4 {
            if self.predefined[i] > available.predefined[i] {
                return false;
            }
        }
        if self.custom.is_empty() {
            return true;
        }
        self.custom
            .iter()
            .all(|(name, v)| *v <= 0 || *v <= available.custom_fixed(name))
    }

    /// Add `other` to `self`, resource by resource (saturating at the `i64` limits).
    pub fn add(&mut self, other: &ResourceSet) {
        for i in 0..4 {
            self.predefined[i] = self.predefined[i].saturating_add(other.predefined[i]);
        }
        for (name, v) in &other.custom {
            self.add_custom(name, *v);
        }
    }

    /// Subtract `other` from `self`, resource by resource.
    ///
    /// Subtraction is **exact and never clamps**: when `other` holds more of a resource than
    /// `self`, the amount goes negative and stays visible through [`ResourceSet::get`] and
    /// [`ResourceSet::is_nonnegative`], so an accounting error shows up instead of being
    /// silently absorbed. A negative available amount fits nothing. Use
    /// [`NodeResources::try_allocate`] for a subtraction that refuses to go below zero.
    pub fn sub(&mut self, other: &ResourceSet) {
        for i in 0..4 {
            self.predefined[i] = self.predefined[i].saturating_sub(other.predefined[i]);
        }
        for (name, v) in &other.custom {
            self.add_custom(name, v.saturating_neg());
        }
    }

    pub(crate) fn add_custom(&mut self, name: &Arc<str>, delta: i64) {
        if delta == 0 {
            return;
        }
        match self.custom.binary_search_by(|(n, _)| (**n).cmp(name)) {
            Ok(pos) => {
                let v = self.custom[pos].1.saturating_add(delta);
                if v == 0 {
                    self.custom.remove(pos);
                } else {
                    self.custom[pos].1 = v;
                }
            }
            Err(pos) => self.custom.insert(pos, (name.clone(), delta)),
        }
    }

    /// Clamp every amount of `self` to at most the matching amount of `cap`.
    pub(crate) fn clamp_to(&mut self, cap: &ResourceSet) {
        for i in 0..4 {
            self.predefined[i] = self.predefined[i].min(cap.predefined[i]);
        }
        if !self.custom.is_empty() {
            for entry in self.custom.iter_mut() {
                entry.1 = entry.1.min(cap.custom_fixed(&entry.0));
            }
            self.custom.retain(|(_, v)| *v != 0);
        }
    }

    /// Raise every negative amount to zero.
    pub(crate) fn clamp_nonnegative(&mut self) {
        for v in self.predefined.iter_mut() {
            *v = (*v).max(0);
        }
        self.custom.retain(|(_, v)| *v > 0);
    }

    /// Iterate over the non-zero amounts: predefined resources first (CPU, GPU, memory,
    /// object store memory), then custom resources by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.iter_fixed().map(|(n, v)| (n, to_f64(v)))
    }

    /// Like [`ResourceSet::iter`], in fixed-point units.
    pub fn iter_fixed(&self) -> impl Iterator<Item = (&str, i64)> {
        PREDEFINED
            .iter()
            .zip(self.predefined.iter())
            .filter(|(_, v)| **v != 0)
            .map(|(n, v)| (*n, *v))
            .chain(self.custom.iter().map(|(n, v)| (&**n, *v)))
    }

    /// The non-zero amounts as a map from name to amount.
    pub fn to_map(&self) -> BTreeMap<String, f64> {
        self.iter().map(|(n, v)| (n.to_owned(), v)).collect()
    }

    /// Whether the set asks for any GPU.
    pub fn has_gpu(&self) -> bool {
        self.predefined[GPU_IDX] > 0
    }
}

impl fmt::Display for ResourceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (n, v)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}: {v}")?;
        }
        f.write_str("}")
    }
}

/// Whether a request can never fit (infeasible) or only not right now (busy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShortfallKind {
    /// The total of at least one resource is below the request: waiting will not help
    /// until the node (or cluster) changes.
    Infeasible,
    /// The request fits the totals; it waits for resources in use to be returned.
    Busy,
}

/// One resource a request is short of.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceShortfall {
    /// Resource name.
    pub name: String,
    /// Amount requested.
    pub requested: f64,
    /// Amount available when the decision was made.
    pub available: f64,
    /// Total amount.
    pub total: f64,
}

impl ResourceShortfall {
    /// How far the available amount is below the request.
    pub fn missing(&self) -> f64 {
        self.requested - self.available
    }

    /// Whether the total itself is below the request.
    pub fn is_infeasible(&self) -> bool {
        self.requested > self.total
    }
}

/// Why a request does not fit a node: every resource it is short of, and whether it is
/// infeasible (beyond the totals) or only busy.
#[derive(Clone, Debug, PartialEq)]
pub struct Shortfall {
    /// Infeasible if any resource is beyond the node's total, busy otherwise.
    pub kind: ShortfallKind,
    /// The resources short, in [`ResourceSet::iter`] order.
    pub resources: Vec<ResourceShortfall>,
}

impl Shortfall {
    /// Compute the shortfall of `req` against `total`/`available`; `None` when it fits.
    pub fn compute(
        req: &ResourceSet,
        total: &ResourceSet,
        available: &ResourceSet,
    ) -> Option<Self> {
        let mut resources = Vec::new();
        let mut infeasible = false;
        for (name, want) in req.iter_fixed() {
            let avail = available.get_fixed(name);
            if want > avail {
                let tot = total.get_fixed(name);
                infeasible |= want > tot;
                resources.push(ResourceShortfall {
                    name: name.to_owned(),
                    requested: to_f64(want),
                    available: to_f64(avail),
                    total: to_f64(tot),
                });
            }
        }
        if resources.is_empty() {
            None
        } else {
            Some(Shortfall {
                kind: if infeasible {
                    ShortfallKind::Infeasible
                } else {
                    ShortfallKind::Busy
                },
                resources,
            })
        }
    }
}

/// Why `req` can never run on a node whose resources are `total`, as a user reads it
/// ("requested {CPU: 1, GPU: 1}, the node has {CPU: 2}: GPU short by 1"); `None` when it fits.
pub fn never_fits(req: &ResourceSet, total: &ResourceSet) -> Option<String> {
    let s = Shortfall::compute(req, total, total)?;
    let short: Vec<String> = s
        .resources
        .iter()
        .map(|r| format!("{} short by {}", r.name, r.missing()))
        .collect();
    Some(format!(
        "requested {req}, the node has {total}: {}",
        short.join(", ")
    ))
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ShortfallKind::Infeasible => "infeasible",
            ShortfallKind::Busy => "busy",
        };
        write!(f, "{kind}:")?;
        for r in &self.resources {
            write!(
                f,
                " {} requested {} available {} total {} (short {});",
                r.name,
                r.requested,
                r.available,
                r.total,
                r.missing()
            )?;
        }
        Ok(())
    }
}

/// The resources of one node: its totals and what is currently free.
///
/// Invariant kept by the methods (the fields are public for reading and for callers that
/// rebuild a node from a report): `available <= total` for every resource, and `available`
/// never negative after [`NodeResources::try_allocate`] / [`NodeResources::release`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeResources {
    /// What the node has in all.
    pub total: ResourceSet,
    /// What is free now.
    pub available: ResourceSet,
}

impl NodeResources {
    /// A node with everything free.
    pub fn new(total: ResourceSet) -> Self {
        NodeResources {
            available: total.clone(),
            total,
        }
    }

    /// Whether `req` fits in the node's totals (could ever run here).
    pub fn is_feasible(&self, req: &ResourceSet) -> bool {
        req.fits_in(&self.total)
    }

    /// Whether `req` fits in what is free now.
    pub fn is_available(&self, req: &ResourceSet) -> bool {
        req.fits_in(&self.available)
    }

    /// Take `req` out of the available resources, or leave the node unchanged and say what
    /// is missing.
    pub fn try_allocate(&mut self, req: &ResourceSet) -> Result<(), Shortfall> {
        if req.fits_in(&self.available) {
            self.available.sub(req);
            Ok(())
        } else {
            Err(self.shortfall(req).unwrap_or(Shortfall {
                kind: ShortfallKind::Busy,
                resources: Vec::new(),
            }))
        }
    }

    /// Return `req` to the available resources. Each amount is capped at the node's total:
    /// over-releasing never creates capacity that the node does not have.
    pub fn release(&mut self, req: &ResourceSet) {
        self.available.add(req);
        self.available.clamp_to(&self.total);
    }

    /// Reserve a placement-group bundle: take `bundle` out of what is free and add
    /// `renamed` (the bundle under its group's names, [`crate::bundles::bundle_resources`])
    /// to the total and to what is free, so that only tasks of the group can use it. Leaves
    /// the node unchanged and says what is missing if `bundle` does not fit now.
    pub fn reserve_bundle(
        &mut self,
        bundle: &ResourceSet,
        renamed: &ResourceSet,
    ) -> Result<(), Shortfall> {
        self.try_allocate(bundle)?;
        self.total.add(renamed);
        self.available.add(renamed);
        Ok(())
    }

    /// Undo [`NodeResources::reserve_bundle`]: the group's names leave the node (whatever of
    /// them leases still hold is gone with them: take those leases back first) and `bundle`
    /// is free again.
    pub fn unreserve_bundle(&mut self, bundle: &ResourceSet, renamed: &ResourceSet) {
        self.total.sub(renamed);
        self.total.clamp_nonnegative();
        self.available.sub(renamed);
        self.available.clamp_nonnegative();
        self.available.clamp_to(&self.total);
        self.release(bundle);
    }

    /// What `req` is short of on this node, or `None` if it fits now.
    pub fn shortfall(&self, req: &ResourceSet) -> Option<Shortfall> {
        Shortfall::compute(req, &self.total, &self.available)
    }

    /// Ray's "critical resource utilization": the highest `1 - available / total` over CPU,
    /// memory and object store memory (GPU and custom resources are not counted), in `[0, 1]`.
    pub fn critical_utilization(&self) -> f64 {
        let mut highest = 0.0f64;
        for i in [CPU_IDX, MEM_IDX, OBJ_IDX] {
            let total = self.total.predefined[i];
            if total <= 0 {
                continue;
            }
            let avail = self.available.predefined[i].clamp(0, total);
            let u = 1.0 - avail as f64 / total as f64;
            if u > highest {
                highest = u;
            }
        }
        highest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(pairs: &[(&str, f64)]) -> ResourceSet {
        ResourceSet::from_pairs(pairs.iter().map(|(n, v)| (*n, *v))).unwrap()
    }

    #[test]
    fn fractions_add_and_subtract_exactly() {
        let mut a = ResourceSet::new();
        let tenth = ResourceSet::cpus(0.1).unwrap();
        for _ in 0..10 {
            a.add(&tenth);
        }
        assert_eq!(a, ResourceSet::cpus(1.0).unwrap());
        assert_eq!(a.get(CPU), 1.0);
        for _ in 0..10 {
            a.sub(&tenth);
        }
        assert!(a.is_empty());
        assert_eq!(a, ResourceSet::new());
    }

    #[test]
    fn zero_amounts_are_dropped() {
        let a = rs(&[(CPU, 0.0), ("custom", 0.0), (GPU, 1.0)]);
        assert_eq!(a, rs(&[(GPU, 1.0)]));
        assert_eq!(a.iter().count(), 1);
        assert!(rs(&[("x", 0.0)]).is_empty());
    }

    #[test]
    fn malformed_amounts_are_errors() {
        assert_eq!(
            ResourceSet::cpus(-1.0),
            Err(ResourceError::Negative {
                name: CPU.into(),
                value: -1.0
            })
        );
        assert_eq!(
            ResourceSet::cpus(f64::NAN),
            Err(ResourceError::NotFinite { name: CPU.into() })
        );
        assert!(matches!(
            ResourceSet::cpus(f64::INFINITY),
            Err(ResourceError::NotFinite { .. })
        ));
        assert!(matches!(
            ResourceSet::cpus(0.00001),
            Err(ResourceError::TooPrecise { .. })
        ));
        assert!(matches!(
            ResourceSet::cpus(1e15),
            Err(ResourceError::TooLarge { .. })
        ));
        assert_eq!(
            ResourceSet::from_pairs([("", 1.0)]),
            Err(ResourceError::EmptyName)
        );
        assert!(matches!(
            ResourceSet::from_pairs([(CPU, 1.0), (CPU, 2.0)]),
            Err(ResourceError::Duplicate { .. })
        ));
        assert!(matches!(
            ResourceSet::from_pairs([("a", 1.0), ("a", 2.0)]),
            Err(ResourceError::Duplicate { .. })
        ));
        // Errors render to a readable message.
        let msg = ResourceSet::cpus(-2.0).unwrap_err().to_string();
        assert!(msg.contains("negative"), "{msg}");
    }

    #[test]
    fn four_decimal_places_are_accepted() {
        assert_eq!(ResourceSet::cpus(0.0001).unwrap().get_fixed(CPU), 1);
        assert_eq!(ResourceSet::cpus(0.3).unwrap().get_fixed(CPU), 3000);
        assert_eq!(
            ResourceSet::cpus(12345.6789).unwrap().get_fixed(CPU),
            123_456_789
        );
        // Large byte counts are whole and exact.
        let m = rs(&[(MEMORY, 64.0 * 1024.0 * 1024.0 * 1024.0)]);
        assert_eq!(m.get(MEMORY), 68_719_476_736.0);
    }

    #[test]
    fn unit_instance_resources_above_one_must_be_whole() {
        assert!(rs(&[(GPU, 0.5)]).get(GPU) == 0.5);
        assert!(rs(&[(GPU, 2.0)]).get(GPU) == 2.0);
        assert_eq!(
            ResourceSet::from_pairs([(GPU, 1.5)]),
            Err(ResourceError::NotWhole {
                name: GPU.into(),
                value: 1.5
            })
        );
        assert!(matches!(
            ResourceSet::from_pairs([("TPU", 2.25)]),
            Err(ResourceError::NotWhole { .. })
        ));
        // CPU and ordinary custom resources may be fractional above 1.
        assert_eq!(rs(&[(CPU, 1.5)]).get(CPU), 1.5);
        assert_eq!(rs(&[("my_res", 2.5)]).get("my_res"), 2.5);
    }

    #[test]
    fn fits_in_checks_every_resource() {
        let avail = rs(&[(CPU, 4.0), (GPU, 1.0), ("a", 2.0)]);
        assert!(rs(&[(CPU, 4.0)]).fits_in(&avail));
        assert!(rs(&[(CPU, 1.0), ("a", 2.0), (GPU, 0.5)]).fits_in(&avail));
        assert!(!rs(&[(CPU, 4.0001)]).fits_in(&avail));
        assert!(!rs(&[("a", 2.5)]).fits_in(&avail));
        assert!(!rs(&[("b", 0.1)]).fits_in(&avail));
        assert!(!rs(&[(MEMORY, 1.0)]).fits_in(&avail));
        assert!(ResourceSet::new().fits_in(&ResourceSet::new()));
    }

    #[test]
    fn sub_is_exact_and_may_go_negative() {
        let mut a = rs(&[(CPU, 1.0), ("a", 1.0)]);
        a.sub(&rs(&[(CPU, 2.0), ("a", 1.0), ("b", 1.0)]));
        assert_eq!(a.get(CPU), -1.0);
        assert_eq!(a.get("a"), 0.0);
        assert_eq!(a.get("b"), -1.0);
        assert!(!a.is_nonnegative());
        assert!(!rs(&[(CPU, 0.5)]).fits_in(&a));
        a.add(&rs(&[(CPU, 1.0), ("b", 1.0)]));
        assert!(a.is_empty());
    }

    #[test]
    fn iter_and_to_map_list_nonzero_amounts_in_order() {
        let a = rs(&[("zeta", 1.0), (MEMORY, 100.0), (CPU, 2.0), ("alpha", 0.5)]);
        let names: Vec<&str> = a.iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec![CPU, MEMORY, "alpha", "zeta"]);
        let m = a.to_map();
        assert_eq!(m.len(), 4);
        assert_eq!(m["alpha"], 0.5);
        assert_eq!(a.to_string(), "{CPU: 2, memory: 100, alpha: 0.5, zeta: 1}");
    }

    #[test]
    fn allocate_and_release_round_trip() {
        let total = rs(&[(CPU, 4.0), (GPU, 2.0), ("acc", 1.0)]);
        let mut node = NodeResources::new(total.clone());
        let req = rs(&[(CPU, 1.5), (GPU, 1.0), ("acc", 1.0)]);
        node.try_allocate(&req).unwrap();
        assert_eq!(node.available.get(CPU), 2.5);
        assert_eq!(node.available.get("acc"), 0.0);
        let err = node.try_allocate(&req).unwrap_err();
        assert_eq!(err.kind, ShortfallKind::Busy);
        assert_eq!(err.resources.len(), 1);
        assert_eq!(err.resources[0].name, "acc");
        assert_eq!(err.resources[0].missing(), 1.0);
        // A failed allocation leaves the node unchanged.
        assert_eq!(node.available.get(CPU), 2.5);
        node.release(&req);
        assert_eq!(node.available, total);
    }

    #[test]
    fn infeasible_shortfall_names_the_resource_and_gap() {
        let mut node = NodeResources::new(rs(&[(CPU, 2.0)]));
        let req = rs(&[(CPU, 3.0), (GPU, 1.0)]);
        assert!(!node.is_feasible(&req));
        let err = node.try_allocate(&req).unwrap_err();
        assert_eq!(err.kind, ShortfallKind::Infeasible);
        assert_eq!(err.resources.len(), 2);
        assert_eq!(err.resources[0].name, CPU);
        assert_eq!(err.resources[0].missing(), 1.0);
        assert!(err.resources[0].is_infeasible());
        assert_eq!(err.resources[1].name, GPU);
        assert_eq!(err.resources[1].total, 0.0);
        assert!(err.to_string().starts_with("infeasible:"));
    }

    #[test]
    fn release_never_exceeds_total() {
        let total = rs(&[(CPU, 2.0), ("a", 1.0)]);
        let mut node = NodeResources::new(total.clone());
        node.release(&rs(&[(CPU, 5.0), ("a", 3.0), ("b", 1.0)]));
        assert_eq!(node.available, total);
    }

    #[test]
    fn critical_utilization_follows_ray() {
        let mut node = NodeResources::new(rs(&[(CPU, 4.0), (GPU, 1.0), (MEMORY, 100.0)]));
        assert_eq!(node.critical_utilization(), 0.0);
        node.try_allocate(&rs(&[(GPU, 1.0)])).unwrap();
        assert_eq!(node.critical_utilization(), 0.0, "GPU is not counted");
        node.try_allocate(&rs(&[(CPU, 1.0), (MEMORY, 75.0)]))
            .unwrap();
        assert_eq!(node.critical_utilization(), 0.75);
    }
}
