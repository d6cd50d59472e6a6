//! A placement group as data: its id, its bundles and its strategy, the `Bundle` builder,
//! and the gate that holds a group's tasks until the group is created.

use crate::error::Error;
use ray_common::PlacementGroupId;
pub use ray_scheduler::PlacementStrategy;
use ray_scheduler::ResourceSet;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The resources of one bundle of a placement group (Ray's `{"CPU": 1, "GPU": 1}`).
///
/// ```
/// let bundle = ray::util::Bundle::new().cpus(2.0).gpus(1.0).resource("disk", 1.0);
/// # let _ = bundle;
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bundle {
    pub(crate) amounts: BTreeMap<String, f64>,
}

impl Bundle {
    /// An empty bundle (a placement group refuses one that stays empty).
    pub fn new() -> Self {
        Self::default()
    }
    /// CPUs the bundle reserves.
    pub fn cpus(self, n: f64) -> Self {
        self.resource(ray_scheduler::CPU, n)
    }
    /// GPUs the bundle reserves.
    pub fn gpus(self, n: f64) -> Self {
        self.resource(ray_scheduler::GPU, n)
    }
    /// Memory the bundle reserves, in bytes.
    pub fn memory(self, bytes: f64) -> Self {
        self.resource(ray_scheduler::MEMORY, bytes)
    }
    /// Any resource the bundle reserves.
    pub fn resource(mut self, name: &str, amount: f64) -> Self {
        self.amounts.insert(name.to_string(), amount);
        self
    }

    pub(crate) fn to_set(&self, index: usize) -> Result<ResourceSet, Error> {
        let set = ResourceSet::from_pairs(self.amounts.clone())
            .map_err(|e| Error::InvalidArgument(format!("bundle {index}: {e}")))?;
        if set.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "bundle {index} reserves nothing: give it resources"
            )));
        }
        Ok(set)
    }
}

/// A handle on a placement group: bundles of resources reserved together, all or none
/// (Ray's `PlacementGroup`). Made by [`crate::util::placement_group`]; tasks and actors run in
/// it through [`crate::SchedulingStrategy::PlacementGroup`]. Cheap to clone; it does not keep
/// the group alive (the group lives until [`crate::util::remove_placement_group`], or until
/// its job ends unless it is detached).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementGroup {
    pub(crate) id: PlacementGroupId,
    pub(crate) bundles: Arc<[ResourceSet]>,
    pub(crate) strategy: PlacementStrategy,
}

impl PlacementGroup {
    /// The group's id (32 hex digits).
    pub fn id(&self) -> String {
        self.id.to_hex()
    }

    /// How many bundles it has.
    pub fn bundle_count(&self) -> usize {
        self.bundles.len()
    }

    /// Its bundles' resources, in order.
    pub fn bundle_specs(&self) -> Vec<BTreeMap<String, f64>> {
        self.bundles.iter().map(ResourceSet::to_map).collect()
    }

    /// Its strategy.
    pub fn strategy(&self) -> PlacementStrategy {
        self.strategy
    }

    /// Why a task or actor of base `shape` cannot run in bundle `index` (`None`: any bundle)
    /// of this group, if it cannot.
    pub(crate) fn misfit(&self, index: Option<usize>, shape: &ResourceSet) -> Option<String> {
        if self.bundles.is_empty() {
            // A captured child's group: its bundles are not known where it is submitted.
            return None;
        }
        match index {
            Some(i) if i >= self.bundles.len() => Some(format!(
                "bundle index {i} is out of range: placement group {} has {} bundles",
                self.id,
                self.bundles.len()
            )),
            Some(i) if !shape.fits_in(&self.bundles[i]) => Some(format!(
                "it asks for {shape}, more than bundle {i} of placement group {} holds ({})",
                self.id, self.bundles[i]
            )),
            None if !self.bundles.iter().any(|b| shape.fits_in(b)) => Some(format!(
                "it asks for {shape}, more than any bundle of placement group {} holds",
                self.id
            )),
            _ => None,
        }
    }

    /// `shape` as a task or actor in bundle `index` (`None`: any bundle) asks for it.
    pub(crate) fn shape_in(&self, index: Option<usize>, shape: &ResourceSet) -> ResourceSet {
        ray_scheduler::bundles::shape_in_bundle(&self.id.to_hex(), index, shape)
    }
}

/// A task's or an actor's place in a placement group: the group, the bundle (`None`: any),
/// and whether the tasks it submits go into the group too.
#[derive(Clone, Debug)]
pub(crate) struct InGroup {
    pub group: PlacementGroup,
    pub index: Option<usize>,
    pub capture: bool,
}

impl InGroup {
    /// The group a captured child runs in: any bundle of its parent's group, capturing in
    /// turn (its bundles are not known here: a child no bundle holds waits as infeasible).
    pub fn captured(id: PlacementGroupId) -> Self {
        InGroup {
            group: PlacementGroup {
                id,
                bundles: Arc::from(Vec::new()),
                strategy: PlacementStrategy::default(),
            },
            index: None,
            capture: true,
        }
    }
}

/// Where a placement group stands, as a process that submits to it knows.
#[derive(Clone, Debug)]
pub(crate) enum GroupGate {
    /// Not created yet: its tasks wait.
    Pending,
    /// Created: its tasks go.
    Ready,
    /// Removed, or unknown to the GCS: its tasks fail, saying this.
    Failed(String),
}

/// Where a placement group stands ([`crate::util::placement_group_table`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlacementGroupState {
    /// Not every bundle is reserved yet (the cluster cannot hold it now).
    Pending,
    /// Every bundle is reserved.
    Created,
    /// Removed: its bundles were given back.
    Removed,
}

/// One placement group as the GCS knows it (Ray's `placement_group_table()` entry).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct PlacementGroupInfo {
    /// Its id (32 hex digits).
    pub id: String,
    /// Its name (empty: anonymous) and namespace.
    pub name: String,
    /// The namespace of its name.
    pub namespace: String,
    /// How its bundles are laid out.
    pub strategy: PlacementStrategy,
    /// Where it stands.
    pub state: PlacementGroupState,
    /// Its bundles' resources, in order.
    pub bundles: Vec<BTreeMap<String, f64>>,
    /// The node of each bundle (32 hex digits), once created.
    pub bundle_nodes: Vec<String>,
    /// Why it is not created yet (while pending).
    pub pending_reason: String,
}
