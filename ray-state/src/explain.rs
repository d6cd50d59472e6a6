//! "Why is this pending": what a task or an actor waits for, told from what the GCS, the
//! task's owner and the nodes know. Sans-IO: [`explain_task`] and [`explain_actor`] turn
//! those facts into an [`Explanation`]; [`crate::StateClient::explain`] gathers them.

use crate::rows::{short_name, Task, TaskState, Worker};
use ray_common::ids::hex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Tasks named as holding a node's resources, at most.
const HOLDERS_NAMED: usize = 5;

/// What a task or an actor is doing, and if it waits, for what.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// The task's or actor's id (hex).
    pub id: String,
    /// Its function, `Class.method`, or its actor class.
    pub name: String,
    /// Its state as the state API lists it.
    pub state: String,
    pub why: Why,
}

/// The reason, with what it names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Why {
    /// Not waiting: it finished.
    Finished,
    /// Not waiting: it failed.
    Failed { error_type: String, message: String },
    /// Not waiting: it runs (an actor: it is alive there).
    Running { node_id: String, pid: u32 },
    /// Some of its arguments are not ready; each names the task that makes it, if one does.
    WaitingForArgs { args: Vec<ArgWait> },
    /// Its placement group is not created yet.
    WaitingForPlacementGroup,
    /// No node of the cluster could ever hold it: `short` names each resource no alive node
    /// has enough of in all.
    Infeasible {
        shape: BTreeMap<String, f64>,
        short: Vec<String>,
    },
    /// Nodes could hold it, but what it needs is in use: per node that could, what is free
    /// and which tasks hold it. `tasks_ahead` wait before it in its owner's queue.
    WaitingForResources {
        shape: BTreeMap<String, f64>,
        tasks_ahead: u32,
        leases_requested: u32,
        nodes: Vec<NodeWait>,
    },
    /// What it needs is free: a worker process is starting for it (`starting` on its
    /// nodes), or its lease is on its way.
    WaitingForWorker {
        shape: BTreeMap<String, f64>,
        starting: u32,
    },
    /// Sent to its worker, where it waits behind that worker's other tasks or is about to
    /// run.
    QueuedAtWorker { pid: u32, address: String },
    /// An actor call not sent yet: its actor is not reachable now (starting, restarting),
    /// or `calls_ahead` of the caller's calls go first.
    WaitingForActor { calls_ahead: u32, connected: bool },
    /// An actor call sent to its actor, where it waits for the calls before it or runs.
    QueuedAtActor { address: String },
    /// An actor waiting to be placed.
    ActorPending { reason: String },
    /// An actor restarting after its process died (`restarts` so far).
    ActorRestarting { restarts: u32 },
    /// An actor that is dead.
    ActorDead { cause: String },
    /// What is known does not tell (its owner is gone or unreachable, its events were
    /// dropped, ...).
    Unknown { reason: String },
}

/// One argument passed by ref.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArgWait {
    pub object_id: String,
    pub ready: bool,
    /// The task whose result it is, if a task of this cluster makes it.
    pub made_by: Option<TaskBrief>,
}

/// A task, briefly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskBrief {
    pub task_id: String,
    pub name: String,
    pub state: Option<TaskState>,
    pub pid: Option<u32>,
}

/// A node that could hold a waiting task, and why it does not now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeWait {
    pub node_id: String,
    pub available: BTreeMap<String, f64>,
    /// Tasks running there (the first few), which hold what it needs.
    pub held_by: Vec<TaskBrief>,
    pub running: u32,
}

/// What [`explain_task`] is told.
pub struct TaskFacts<'a> {
    pub task: &'a ray_proto::TaskRow,
    /// The owner's answer, or why there is none.
    pub owner: Result<&'a ray_proto::TaskExplanation, String>,
    pub nodes: &'a [ray_proto::NodeInfo],
    /// Rows of tasks running now (holders of resources).
    pub running: &'a [ray_proto::TaskRow],
    /// Rows of the tasks that make its arguments, found so far.
    pub makers: &'a [ray_proto::TaskRow],
    /// The cluster's worker processes (those starting count).
    pub workers: &'a [Worker],
}

/// Why the task `facts.task` has not run (or that it has).
pub fn explain_task(facts: &TaskFacts<'_>) -> Explanation {
    let task = Task::from(facts.task);
    let why = match task.state {
        Some(TaskState::Finished) => Why::Finished,
        Some(TaskState::Failed) => Why::Failed {
            error_type: task.error_type.clone().unwrap_or_default(),
            message: task.error_message.clone().unwrap_or_default(),
        },
        Some(TaskState::Running) => Why::Running {
            node_id: task.node_id.clone().unwrap_or_default(),
            pid: task.worker_pid.unwrap_or_default(),
        },
        _ => match &facts.owner {
            Ok(owner) => pending(facts, owner),
            Err(why) => Why::Unknown {
                reason: format!("its owner did not say: {why}"),
            },
        },
    };
    Explanation {
        id: task.task_id,
        name: task.name,
        state: task.state.map(|s| s.to_string()).unwrap_or_default(),
        why,
    }
}

fn pending(facts: &TaskFacts<'_>, owner: &ray_proto::TaskExplanation) -> Why {
    let shape = shape_of(owner.shape.as_ref());
    match owner.phase.as_str() {
        "WAITING_FOR_ARGS" => Why::WaitingForArgs {
            args: owner
                .args
                .iter()
                .map(|a| ArgWait {
                    object_id: hex(&a.object_id),
                    ready: a.ready,
                    made_by: facts
                        .makers
                        .iter()
                        .find(|m| m.task_id == a.object_id)
                        .map(brief),
                })
                .collect(),
        },
        "WAITING_FOR_GROUP" => Why::WaitingForPlacementGroup,
        "WAITING_FOR_ACTOR" | "WAITING_FOR_EARLIER_CALLS" => Why::WaitingForActor {
            calls_ahead: owner.tasks_ahead,
            connected: owner.phase == "WAITING_FOR_EARLIER_CALLS",
        },
        "SENT_TO_ACTOR" => Why::QueuedAtActor {
            address: owner.worker_address.clone(),
        },
        "SENT_TO_WORKER" => Why::QueuedAtWorker {
            pid: owner.worker_pid,
            address: owner.worker_address.clone(),
        },
        "WAITING_FOR_WORKER" => {
            let alive: Vec<&ray_proto::NodeInfo> = facts.nodes.iter().filter(|n| n.alive).collect();
            let short: Vec<String> = shape
                .iter()
                .filter(|(name, need)| {
                    !alive.iter().any(|n| {
                        shape_of(n.total.as_ref())
                            .get(*name)
                            .copied()
                            .unwrap_or(0.0)
                            >= **need
                    })
                })
                .map(|(name, _)| name.clone())
                .collect();
            let could: Vec<&&ray_proto::NodeInfo> = alive
                .iter()
                .filter(|n| fits(&shape, &shape_of(n.total.as_ref())))
                .collect();
            if !short.is_empty() || could.is_empty() {
                return Why::Infeasible { shape, short };
            }
            let free_somewhere = could
                .iter()
                .any(|n| fits(&shape, &shape_of(n.available.as_ref())));
            if free_somewhere {
                let starting = facts
                    .workers
                    .iter()
                    .filter(|w| w.state == "STARTING" && w.job_id == facts.task.job_id)
                    .count() as u32;
                return Why::WaitingForWorker { shape, starting };
            }
            let nodes = could
                .iter()
                .map(|n| {
                    let here: Vec<&ray_proto::TaskRow> = facts
                        .running
                        .iter()
                        .filter(|t| t.node_id == n.node_id)
                        .collect();
                    NodeWait {
                        node_id: hex(&n.node_id),
                        available: shape_of(n.available.as_ref()),
                        held_by: here.iter().take(HOLDERS_NAMED).map(|t| brief(t)).collect(),
                        running: here.len() as u32,
                    }
                })
                .collect();
            Why::WaitingForResources {
                shape,
                tasks_ahead: owner.tasks_ahead,
                leases_requested: owner.leases_requested,
                nodes,
            }
        }
        _ => Why::Unknown {
            reason: "its owner does not hold it as pending (it may have just run, or its \
                     events were dropped)"
                .into(),
        },
    }
}

/// Why the actor `row` is not alive (or that it is).
pub fn explain_actor(row: &ray_proto::ActorRow) -> Explanation {
    let why = match row.state.as_str() {
        "ALIVE" => Why::Running {
            node_id: hex(&row.node_id),
            pid: row.pid,
        },
        "RESTARTING" => Why::ActorRestarting {
            restarts: row.num_restarts,
        },
        "DEAD" => Why::ActorDead {
            cause: row.death_cause.clone(),
        },
        _ => Why::ActorPending {
            reason: match row.pending_reason.as_str() {
                "" => "waiting for a worker process to start it, or for its constructor's \
                       arguments"
                    .into(),
                reason => reason.to_string(),
            },
        },
    };
    Explanation {
        id: hex(&row.actor_id),
        name: short_name(&row.class_name).to_string(),
        state: row.state.clone(),
        why,
    }
}

fn brief(t: &ray_proto::TaskRow) -> TaskBrief {
    let t = Task::from(t);
    TaskBrief {
        task_id: t.task_id,
        name: t.name,
        state: t.state,
        pid: t.worker_pid,
    }
}

fn shape_of(r: Option<&ray_proto::Resources>) -> BTreeMap<String, f64> {
    r.map(|r| r.amounts.iter().map(|(k, v)| (k.clone(), *v)).collect())
        .unwrap_or_default()
}

/// Whether `have` holds all of `need`.
fn fits(need: &BTreeMap<String, f64>, have: &BTreeMap<String, f64>) -> bool {
    need.iter()
        .all(|(k, v)| have.get(k).copied().unwrap_or(0.0) >= *v - 1e-9)
}

fn amounts(r: &BTreeMap<String, f64>) -> String {
    let parts: Vec<String> = r.iter().map(|(k, v)| format!("{v} {k}")).collect();
    match parts.is_empty() {
        true => "nothing".into(),
        false => parts.join(", "),
    }
}

impl std::fmt::Display for TaskBrief {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "task {} ({}", self.task_id, self.name)?;
        if let Some(s) = self.state {
            write!(f, ", {s}")?;
        }
        if let Some(pid) = self.pid {
            write!(f, ", pid {pid}")?;
        }
        f.write_str(")")
    }
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} {}: {}", self.name, self.id, self.state)?;
        match &self.why {
            Why::Finished => writeln!(f, "  finished: it waits for nothing"),
            Why::Failed {
                error_type,
                message,
            } => writeln!(f, "  failed ({error_type}): {message}"),
            Why::Running { node_id, pid } => {
                writeln!(f, "  running on node {node_id}, worker pid {pid}")
            }
            Why::WaitingForArgs { args } => {
                writeln!(f, "  waiting for its arguments:")?;
                for a in args {
                    let made = a
                        .made_by
                        .as_ref()
                        .map(|t| format!(", made by {t}"))
                        .unwrap_or_default();
                    let ready = if a.ready { "ready" } else { "not ready" };
                    writeln!(f, "    object {}: {ready}{made}", a.object_id)?;
                }
                Ok(())
            }
            Why::WaitingForPlacementGroup => {
                writeln!(f, "  waiting for its placement group to be created")
            }
            Why::Infeasible { shape, short } => writeln!(
                f,
                "  infeasible: it needs {}, and no alive node has enough {} in all (it waits \
                 for a node that has, on a cluster)",
                amounts(shape),
                short.join(", ")
            ),
            Why::WaitingForResources {
                shape,
                tasks_ahead,
                leases_requested,
                nodes,
            } => {
                writeln!(
                    f,
                    "  waiting for resources: it needs {}, in use on every node that has them \
                     ({tasks_ahead} tasks ahead of it, {leases_requested} leases asked for)",
                    amounts(shape)
                )?;
                for n in nodes {
                    writeln!(
                        f,
                        "    node {}: free {}; {} tasks running",
                        n.node_id,
                        amounts(&n.available),
                        n.running
                    )?;
                    for t in &n.held_by {
                        writeln!(f, "      held by {t}")?;
                    }
                }
                Ok(())
            }
            Why::WaitingForWorker { shape, starting } => writeln!(
                f,
                "  waiting for a worker: {} is free; {starting} worker processes of its job \
                 are starting",
                amounts(shape)
            ),
            Why::QueuedAtWorker { pid, address } => writeln!(
                f,
                "  sent to worker pid {pid} ({address}): queued behind its other tasks, or \
                 about to run"
            ),
            Why::WaitingForActor {
                calls_ahead,
                connected: true,
            } => writeln!(f, "  waiting for {calls_ahead} earlier calls to the actor"),
            Why::WaitingForActor { calls_ahead, .. } => writeln!(
                f,
                "  waiting for its actor to be reachable (starting or restarting; \
                 {calls_ahead} calls ahead of it)"
            ),
            Why::QueuedAtActor { address } => writeln!(
                f,
                "  sent to its actor ({address}): queued behind its earlier calls, or about \
                 to run"
            ),
            Why::ActorPending { reason } => writeln!(f, "  not placed yet: {reason}"),
            Why::ActorRestarting { restarts } => writeln!(
                f,
                "  restarting after its process died ({restarts} restarts so far)"
            ),
            Why::ActorDead { cause } => writeln!(f, "  dead: {cause}"),
            Why::Unknown { reason } => writeln!(f, "  unknown: {reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ray_proto::{NodeInfo, Resources, TaskExplanation, TaskRow, TaskStatus};

    fn res(pairs: &[(&str, f64)]) -> Option<Resources> {
        Some(Resources {
            amounts: pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        })
    }

    fn node(id: u8, total: &[(&str, f64)], available: &[(&str, f64)]) -> NodeInfo {
        NodeInfo {
            node_id: vec![id; 16].into(),
            total: res(total),
            available: res(available),
            alive: true,
            ..Default::default()
        }
    }

    fn row(id: u8, name: &str, status: TaskStatus, node: u8) -> TaskRow {
        TaskRow {
            task_id: vec![id; 16].into(),
            name: format!("app::{name}"),
            status: status as i32,
            job_id: 1,
            node_id: if node == 0 {
                Default::default()
            } else {
                vec![node; 16].into()
            },
            pid: if node == 0 { 0 } else { 100 + u32::from(id) },
            ..Default::default()
        }
    }

    fn waiting_for_worker(shape: &[(&str, f64)]) -> TaskExplanation {
        TaskExplanation {
            phase: "WAITING_FOR_WORKER".into(),
            shape: res(shape),
            tasks_ahead: 2,
            leases_requested: 1,
            ..Default::default()
        }
    }

    fn facts<'a>(
        task: &'a TaskRow,
        owner: &'a TaskExplanation,
        nodes: &'a [NodeInfo],
        running: &'a [TaskRow],
        makers: &'a [TaskRow],
    ) -> TaskFacts<'a> {
        TaskFacts {
            task,
            owner: Ok(owner),
            nodes,
            running,
            makers,
            workers: &[],
        }
    }

    #[test]
    fn a_task_behind_busy_cpus_names_the_tasks_holding_them() {
        let task = row(1, "f", TaskStatus::PendingNodeAssignment, 0);
        let owner = waiting_for_worker(&[("CPU", 1.0)]);
        let nodes = [node(7, &[("CPU", 1.0)], &[("CPU", 0.0)])];
        let running = [row(2, "slow", TaskStatus::Running, 7)];
        let e = explain_task(&facts(&task, &owner, &nodes, &running, &[]));
        match &e.why {
            Why::WaitingForResources {
                nodes, tasks_ahead, ..
            } => {
                assert_eq!(*tasks_ahead, 2);
                assert_eq!(nodes.len(), 1);
                assert_eq!(nodes[0].held_by[0].name, "slow");
                assert_eq!(nodes[0].held_by[0].pid, Some(102));
            }
            other => panic!("{other:?}"),
        }
        let text = e.to_string();
        assert!(
            text.contains("waiting for resources: it needs 1 CPU"),
            "{text}"
        );
        assert!(text.contains("held by task 0202"), "{text}");
    }

    #[test]
    fn a_task_no_node_can_hold_is_infeasible_naming_the_short_resource() {
        let task = row(1, "f", TaskStatus::PendingNodeAssignment, 0);
        let owner = waiting_for_worker(&[("CPU", 1.0), ("GPU", 1.0)]);
        let nodes = [node(7, &[("CPU", 4.0)], &[("CPU", 4.0)])];
        let e = explain_task(&facts(&task, &owner, &nodes, &[], &[]));
        assert!(
            matches!(&e.why, Why::Infeasible { short, .. } if short == &["GPU".to_string()]),
            "{e:?}"
        );
    }

    #[test]
    fn a_task_whose_resources_are_free_waits_for_a_worker() {
        let task = row(1, "f", TaskStatus::PendingNodeAssignment, 0);
        let owner = waiting_for_worker(&[("CPU", 1.0)]);
        let nodes = [node(7, &[("CPU", 2.0)], &[("CPU", 2.0)])];
        let e = explain_task(&facts(&task, &owner, &nodes, &[], &[]));
        assert!(matches!(e.why, Why::WaitingForWorker { .. }), "{e:?}");
    }

    #[test]
    fn a_task_waiting_for_arguments_names_the_tasks_that_make_them() {
        let task = row(1, "f", TaskStatus::PendingArgsAvail, 0);
        let owner = TaskExplanation {
            phase: "WAITING_FOR_ARGS".into(),
            args: vec![
                ray_proto::ArgWait {
                    object_id: vec![3; 16].into(),
                    ready: false,
                },
                ray_proto::ArgWait {
                    object_id: vec![4; 16].into(),
                    ready: true,
                },
            ],
            ..Default::default()
        };
        let makers = [row(3, "make", TaskStatus::Running, 7)];
        let e = explain_task(&facts(&task, &owner, &[], &[], &makers));
        let Why::WaitingForArgs { args } = &e.why else {
            panic!("{e:?}");
        };
        assert_eq!(args[0].made_by.as_ref().unwrap().name, "make");
        assert!(!args[0].ready && args[1].ready && args[1].made_by.is_none());
        assert!(
            e.to_string().contains("not ready, made by task 0303"),
            "{e}"
        );
    }

    #[test]
    fn ended_and_running_tasks_wait_for_nothing_whatever_the_owner_says() {
        let mut task = row(1, "f", TaskStatus::Failed, 7);
        task.error = "boom".into();
        let owner = TaskExplanation::default();
        let e = explain_task(&TaskFacts {
            owner: Err("gone".into()),
            ..facts(&task, &owner, &[], &[], &[])
        });
        assert!(matches!(&e.why, Why::Failed { message, .. } if message == "boom"));
        let task = row(1, "f", TaskStatus::PendingNodeAssignment, 0);
        let e = explain_task(&TaskFacts {
            owner: Err("no answer".into()),
            ..facts(&task, &owner, &[], &[], &[])
        });
        assert!(matches!(&e.why, Why::Unknown { reason } if reason.contains("no answer")));
    }

    #[test]
    fn actors_say_why_from_their_row() {
        let row = ray_proto::ActorRow {
            actor_id: vec![9; 16].into(),
            class_name: "app::Big".into(),
            state: "PENDING".into(),
            pending_reason: "no node has 8 GPU".into(),
            ..Default::default()
        };
        let e = explain_actor(&row);
        assert_eq!(e.name, "Big");
        assert!(matches!(&e.why, Why::ActorPending { reason } if reason.contains("8 GPU")));
    }
}
