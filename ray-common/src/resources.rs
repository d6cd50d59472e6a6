//! Resource sets on the wire: the checked [`ResourceSet`] of `ray-scheduler` to and from the
//! proto `Resources` map.

use ray_proto::Resources;
use ray_scheduler::{ResourceError, ResourceSet};

/// Converts a wire resource map into a checked resource set (a negative or non-finite amount
/// is refused with the scheduler's reason).
pub fn to_resource_set(r: Option<Resources>) -> Result<ResourceSet, ResourceError> {
    ResourceSet::from_pairs(r.map(|r| r.amounts).unwrap_or_default())
}

/// Converts a resource set to its wire form.
pub fn to_resources(r: &ResourceSet) -> Resources {
    Resources {
        amounts: r.iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}

/// A placement strategy as the wire carries it.
pub fn strategy_to_proto(s: ray_scheduler::PlacementStrategy) -> ray_proto::PlacementStrategy {
    use ray_scheduler::PlacementStrategy as S;
    match s {
        S::Pack => ray_proto::PlacementStrategy::Pack,
        S::Spread => ray_proto::PlacementStrategy::Spread,
        S::StrictPack => ray_proto::PlacementStrategy::StrictPack,
        S::StrictSpread => ray_proto::PlacementStrategy::StrictSpread,
    }
}

/// A placement strategy from its wire value (an unknown one is PACK, proto's default).
pub fn strategy_from_proto(s: i32) -> ray_scheduler::PlacementStrategy {
    use ray_scheduler::PlacementStrategy as S;
    match ray_proto::PlacementStrategy::try_from(s).unwrap_or_default() {
        ray_proto::PlacementStrategy::Pack => S::Pack,
        ray_proto::PlacementStrategy::Spread => S::Spread,
        ray_proto::PlacementStrategy::StrictPack => S::StrictPack,
        ray_proto::PlacementStrategy::StrictSpread => S::StrictSpread,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_round_trip_and_bad_amounts_are_refused() {
        let set = ResourceSet::from_pairs([("CPU".to_string(), 2.0)]).unwrap();
        assert_eq!(to_resource_set(Some(to_resources(&set))).unwrap(), set);
        let bad = Resources {
            amounts: [("CPU".to_string(), -1.0)].into(),
        };
        assert!(to_resource_set(Some(bad)).is_err());
    }
}
