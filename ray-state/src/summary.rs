//! `summarize_tasks`: how many tasks of each function are in each state (Ray's
//! `ray summary tasks`), counted by the GCS over every task it keeps.

use crate::rows::TaskState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The tasks of one function (or actor method), counted by state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    /// The function, or `Class.method`, without its module path.
    pub name: String,
    /// The same with its module path (tasks are counted by it).
    pub func_or_class_name: String,
    /// Its tasks in all.
    pub total: u64,
    /// By state, in the order tasks go through them.
    pub by_state: BTreeMap<TaskState, u64>,
}

/// The summaries of the GCS's counts, names in order.
pub fn summarize_tasks(counts: &[ray_proto::TaskCount]) -> Vec<TaskSummary> {
    let mut by_name: BTreeMap<&str, TaskSummary> = BTreeMap::new();
    for c in counts {
        let s = by_name.entry(&c.name).or_insert_with(|| TaskSummary {
            name: crate::rows::short_name(&c.name).to_string(),
            func_or_class_name: c.name.clone(),
            ..Default::default()
        });
        s.total += c.count;
        if let Some(state) = TaskState::from_wire(c.status) {
            *s.by_state.entry(state).or_default() += c.count;
        }
    }
    by_name.into_values().collect()
}

/// Counts per name and state of `rows` (what the GCS answers a summary with).
pub fn count_tasks<'a>(
    rows: impl Iterator<Item = &'a ray_proto::TaskRow>,
) -> Vec<ray_proto::TaskCount> {
    let mut counts: BTreeMap<(&str, i32), u64> = BTreeMap::new();
    for r in rows {
        *counts.entry((&r.name, r.status)).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((name, status), count)| ray_proto::TaskCount {
            name: name.to_string(),
            status,
            count,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_come_per_name_and_state() {
        let row = |name: &str, status: ray_proto::TaskStatus| ray_proto::TaskRow {
            name: name.into(),
            status: status as i32,
            ..Default::default()
        };
        let rows = [
            row("f", ray_proto::TaskStatus::Running),
            row("f", ray_proto::TaskStatus::Finished),
            row("f", ray_proto::TaskStatus::Finished),
            row("g", ray_proto::TaskStatus::Failed),
        ];
        let s = summarize_tasks(&count_tasks(rows.iter()));
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].name.as_str(), s[0].total), ("f", 3));
        assert_eq!(s[0].by_state[&TaskState::Finished], 2);
        assert_eq!(s[1].by_state[&TaskState::Failed], 1);
    }
}
