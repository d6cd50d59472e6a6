//! Distributed helpers built on the core API.

pub use crate::actor_pool::ActorPool;
pub use crate::group::{
    Bundle, PlacementGroup, PlacementGroupInfo, PlacementGroupState, PlacementStrategy,
};
pub use crate::placement_group::{
    get_placement_group, placement_group, placement_group_table, remove_placement_group,
    PlacementGroupOptions,
};
pub use crate::queue::Queue;
use crate::{get_all, ObjectRef, Result};
use serde::de::DeserializeOwned;

/// Submits `f(item)` for every item and returns the results in order.
///
/// ```
/// #[ray::remote]
/// fn square(x: u64) -> u64 { x * x }
///
/// fn main() {
///     ray::init(ray::Config::sync()).unwrap();
///     assert_eq!(ray::util::parallel_map(1..=3, square::remote).unwrap(), vec![1, 4, 9]);
///     ray::shutdown();
/// }
/// ```
pub fn parallel_map<I, T, F>(items: impl IntoIterator<Item = I>, f: F) -> Result<Vec<T>>
where
    T: DeserializeOwned,
    F: FnMut(I) -> ObjectRef<T>,
{
    let refs: Vec<ObjectRef<T>> = items.into_iter().map(f).collect();
    get_all(&refs)
}

/// [`parallel_map`] over pairs, each unpacked into the two arguments of `f`.
pub fn parallel_starmap<A, B, T, F>(
    items: impl IntoIterator<Item = (A, B)>,
    mut f: F,
) -> Result<Vec<T>>
where
    T: DeserializeOwned,
    F: FnMut(A, B) -> ObjectRef<T>,
{
    parallel_map(items, move |(a, b)| f(a, b))
}

/// Refs of different types, gathered in one call: a tuple of `&ObjectRef`s.
pub trait Gather {
    /// The tuple of values.
    type Output;
    /// Waits for every ref and returns the values.
    fn gather(self) -> Result<Self::Output>;
}

macro_rules! gather_tuple {
    ($($t:ident $v:ident),+) => {
        impl<'a, $($t: DeserializeOwned),+> Gather for ($(&'a ObjectRef<$t>,)+) {
            type Output = ($($t,)+);
            fn gather(self) -> Result<Self::Output> {
                let ($($v,)+) = self;
                let rt = crate::current::current()?;
                let all = [$(&*$v.inner),+];
                rt.wait_ready(&all, all.len(), None)?;
                Ok(($(crate::get($v)?,)+))
            }
        }
    };
}
gather_tuple!(A a);
gather_tuple!(A a, B b);
gather_tuple!(A a, B b, C c);
gather_tuple!(A a, B b, C c, D d);
gather_tuple!(A a, B b, C c, D d, E e);
gather_tuple!(A a, B b, C c, D d, E e, F f);

/// Scatters work (the refs are already submitted) and gathers results of different types at
/// once: `let (n, s): (i64, String) = scatter_gather((&a, &b))?`.
pub fn scatter_gather<G: Gather>(refs: G) -> Result<G::Output> {
    refs.gather()
}

/// Number of worker processes alive in the cluster (0 in sync mode).
pub fn num_workers() -> Result<usize> {
    Ok(crate::node_views()?
        .iter()
        .map(|n| n.num_workers as usize)
        .sum())
}
