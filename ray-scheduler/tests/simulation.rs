//! Simulation: 1,000,000 queued tasks of mixed shapes through 250 simulated nodes.
//!
//! Event driven, with simulated time: every task is queued at time 0 in the queue of its
//! scheduling class (its shape and strategy, as in Ray's raylet); a granted task holds its
//! resources until its simulated duration has passed. Like a raylet, the driver does not
//! retry a class that the scheduler answered "busy" until resources come back on a node
//! where that class fits (only that node changed, so only there can it fit).
//!
//! Checked: every decision lands on an alive node with the resources free (the allocation
//! succeeds), a class known to fit somewhere is never refused, every task runs exactly once,
//! and at the end every node's availability is back to its totals.

mod sim;

#[test]
fn million_tasks_through_250_nodes() {
    let stats = sim::simulate(1_000_000, 2024);
    assert!(stats.decisions >= 1_000_000);
    assert!(stats.makespan > 0);
    assert!(stats.refusals < stats.decisions / 100, "{stats:?}");
}
