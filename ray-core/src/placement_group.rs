//! Placement groups for users (Ray's `ray.util.placement_group`): create one, wait for it,
//! run tasks and actors in its bundles, look it up by name, remove it.

use crate::current::current;
use crate::error::Result;
use crate::group::{Bundle, PlacementGroup, PlacementGroupInfo, PlacementStrategy};
use crate::object_ref::ObjectRef;
use crate::placement::GroupOptions;
use std::time::Duration;

/// Reserves `bundles` together, all or none, laid out as `strategy` says, and returns the
/// group's handle at once: the group is created in the background, as soon as the cluster
/// can hold it ([`PlacementGroup::wait`] tells when). Tasks and actors run in its bundles
/// with [`crate::SchedulingStrategy::PlacementGroup`]; what they ask for comes out of the
/// bundle, which nothing outside the group can use. The group lives until
/// [`remove_placement_group`], or until its job ends.
///
/// ```
/// use ray::util::{placement_group, remove_placement_group, Bundle, PlacementStrategy};
/// use ray::SchedulingStrategy;
///
/// #[ray::remote]
/// fn work(x: u32) -> u32 { x + 1 }
///
/// # fn main() -> ray::Result<()> {
/// ray::init(ray::Config::local().num_cpus(2.0))?;
/// let pg = placement_group(vec![Bundle::new().cpus(1.0); 2], PlacementStrategy::Pack)?;
/// assert!(pg.wait(std::time::Duration::from_secs(30))?);
/// let in_bundle = work::options()
///     .scheduling_strategy(SchedulingStrategy::placement_group(&pg, Some(0)))
///     .remote(1);
/// assert_eq!(ray::get(&in_bundle)?, 2);
/// remove_placement_group(&pg)?;
/// ray::shutdown();
/// # Ok(()) }
/// ```
pub fn placement_group(
    bundles: impl IntoIterator<Item = Bundle>,
    strategy: PlacementStrategy,
) -> Result<PlacementGroup> {
    PlacementGroupOptions::new().create(bundles, strategy)
}

/// A placement group's name and lifetime (Ray's `name`, `namespace` and `lifetime`
/// arguments): `PlacementGroupOptions::new().name("trainers").create(bundles, strategy)`.
#[derive(Clone, Debug, Default)]
pub struct PlacementGroupOptions {
    inner: GroupOptions,
}

impl PlacementGroupOptions {
    /// No name, the job's lifetime.
    pub fn new() -> Self {
        Self::default()
    }

    /// A name, unique among the groups of its namespace; find it with
    /// [`get_placement_group`].
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.inner.name = Some(name.into());
        self
    }

    /// The namespace of the name (default: the job's).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.inner.namespace = Some(namespace.into());
        self
    }

    /// The group outlives its job, until [`remove_placement_group`].
    pub fn lifetime_detached(mut self) -> Self {
        self.inner.detached = true;
        self
    }

    /// Creates the group: see [`placement_group`].
    pub fn create(
        self,
        bundles: impl IntoIterator<Item = Bundle>,
        strategy: PlacementStrategy,
    ) -> Result<PlacementGroup> {
        let bundles: Vec<Bundle> = bundles.into_iter().collect();
        current()?.create_group(&bundles, strategy, self.inner)
    }
}

impl PlacementGroup {
    /// Waits at most `timeout` for the group to be created (every bundle reserved): whether
    /// it is (Ray's `pg.wait`). Fails if the group was removed.
    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        current()?.wait_group(self, timeout)
    }

    /// A ref that is ready once the group is created (Ray's `pg.ready()`): `get` it, or
    /// `wait` on it beside other refs. It fails with [`crate::Error::InvalidArgument`] if
    /// the group is removed before.
    ///
    /// ```
    /// # fn main() -> ray::Result<()> {
    /// # ray::init(ray::Config::local().num_cpus(1.0))?;
    /// use ray::util::{placement_group, Bundle, PlacementStrategy};
    /// let pg = placement_group([Bundle::new().cpus(1.0)], PlacementStrategy::StrictPack)?;
    /// ray::get(&pg.ready()?)?;
    /// # ray::shutdown();
    /// # Ok(()) }
    /// ```
    pub fn ready(&self) -> Result<ObjectRef<()>> {
        current()?.group_ready_ref(self).map(ObjectRef::from_inner)
    }
}

/// Every placement group of the cluster, removed ones too, with where each stands and why a
/// pending one waits (Ray's `placement_group_table()`).
pub fn placement_group_table() -> Result<Vec<PlacementGroupInfo>> {
    current()?.group_table()
}

/// Removes a placement group (Ray's `remove_placement_group`): its bundles are given back,
/// its actors die and the tasks running in it are killed; its tasks still waiting fail with
/// [`crate::Error::Unschedulable`]. Removing a group that is still pending, or removing it
/// twice, is fine.
pub fn remove_placement_group(group: &PlacementGroup) -> Result<()> {
    current()?.remove_group(group)
}

/// The placement group named `name` in the job's namespace (Ray's `get_placement_group`);
/// [`crate::Error::InvalidArgument`] if there is none.
pub fn get_placement_group(name: &str) -> Result<PlacementGroup> {
    current()?.named_group(name, None)
}
