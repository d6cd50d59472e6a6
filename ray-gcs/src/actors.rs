//! The actor directory: registration, placement on a leased worker, the lifecycle, restarts.

use crate::GcsError;
use crate::{GcsService, Refusal};
use parking_lot::Mutex;
use ray_actor::{ActorState, Names, RestartBudget};
use ray_common::rpc::{CoreWorkerApi, NodeManagerApi, RpcError};
use ray_proto::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How often an actor waiting for a node that can hold it looks again without a new view.
const FIT_POLL: Duration = Duration::from_secs(2);

struct Record {
    spec: ActorSpec,
    state: ActorState,
    budget: RestartBudget,
    incarnation: u64,
    killed: bool,
    death_cause: String,
    creation_error: Option<TaskError>,
    task_socket: String,
    task_address: String,
    node_id: Vec<u8>,
    core_worker_address: String,
    worker_id: Vec<u8>,
    lease: Option<(String, u64)>,
    /// The core-worker address of the worker leased (set with `lease`, before the actor is
    /// alive: a kill while it is built must reach that worker).
    leased_worker: String,
    /// While it waits for a node that can hold it: why none can.
    waiting: String,
    /// Woken when it becomes alive or dead (callers wait on their actor alone: one wake-up
    /// for all actors made thousands of wake-ups for each of thousands of actors).
    changed: Arc<Notify>,
    /// Its worker's process (0 until leased).
    pid: u32,
    /// Its place in the order actors were registered (the state API lists them so).
    seq: u64,
}

impl Record {
    /// Its process (or its instance on a shared host) is gone: restarting if its budget
    /// allows (true), else left for the caller to mark dead.
    fn lost(&mut self) -> bool {
        self.lease = None;
        let restarting = self.budget.on_death(self.killed) == ActorState::Restarting;
        if restarting {
            self.state = ActorState::Restarting;
        }
        restarting
    }

    fn info(&self) -> ActorInfo {
        ActorInfo {
            actor_id: self.spec.actor_id.clone(),
            state: self.state.as_str().into(),
            task_socket: self.task_socket.clone(),
            task_address: self.task_address.clone(),
            node_id: self.node_id.clone().into(),
            core_worker_address: self.core_worker_address.clone(),
            death_cause: self.death_cause.clone(),
            num_restarts: self.budget.used(),
            incarnation: self.incarnation,
            class_name: self.spec.class_name.clone(),
            creation_failed: self.creation_error.is_some(),
            creation_error: self.creation_error.clone(),
            detached: self.spec.detached,
            max_task_retries: self.spec.max_task_retries,
            pending_reason: self.waiting.clone(),
        }
    }
}

#[derive(Default)]
pub(crate) struct Actors {
    table: Mutex<Table>,
    /// One channel per node manager, shared by every placement and kill. A connection per
    /// call meant a burst of ~1000 TCP connects when ~1000 actors were created at once: the
    /// node manager's listen queue overflowed and some connections were reset.
    node_managers: Mutex<HashMap<String, Arc<dyn NodeManagerApi>>>,
    /// Clients of the workers that host actors, by core-worker address: a shared host takes
    /// hundreds of creations and kills, each of which was a TCP connect of its own.
    workers: Mutex<HashMap<String, Arc<dyn CoreWorkerApi>>>,
}

/// Worker clients kept at most (the map is emptied when full: clients of dead workers go).
const WORKER_CLIENTS: usize = 4096;

/// What a living actor holds: its lease and, for a shared host, where to end it alone.
struct Held {
    node: String,
    lease_id: u64,
    /// Its worker's core-worker address.
    worker: String,
    /// It may share its process (`ActorSpec::share_process`).
    shared: bool,
}

/// How long a placement keeps retrying transient (transport) failures of its lease request.
const PLACEMENT_RETRY_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Table {
    records: HashMap<Vec<u8>, Record>,
    names: Names,
    /// Workers reported dead: a creation that "succeeds" on one of them did not.
    dead_workers: std::collections::HashSet<Vec<u8>>,
    /// The next record's `seq`.
    next_seq: u64,
}

impl GcsService {
    pub(crate) fn register(&self, spec: ActorSpec) -> Result<RegisterActorReply, GcsError> {
        if spec.actor_id.len() != 16 {
            return Err(GcsError::InvalidArgument(
                "actor id must be 16 bytes".into(),
            ));
        }
        let actors = &self.inner.actors;
        let mut t = actors.table.lock();
        if let Some(r) = t.records.get(&spec.actor_id[..]) {
            if r.spec.owner_address != spec.owner_address || r.spec.class_name != spec.class_name {
                return Err(GcsError::AlreadyExists(format!(
                    "actor id {} is registered already, by another owner or class",
                    ray_common::ids::hex(&spec.actor_id)
                )));
            }
            // Asked again (the first answer was lost): the same registration, not a second
            // actor and not a name conflict with itself.
            return Ok(RegisterActorReply {
                actor_id: spec.actor_id.clone(),
                existed: false,
                max_task_retries: r.spec.max_task_retries,
            });
        }
        if !spec.name.is_empty() {
            if let Some(holder) = t.names.lookup(&spec.namespace, &spec.name) {
                let live = t
                    .records
                    .get(holder)
                    .filter(|r| r.state != ActorState::Dead);
                if let Some(holder_record) = live {
                    if spec.get_if_exists && holder_record.spec.class_name == spec.class_name {
                        return Ok(RegisterActorReply {
                            actor_id: holder.to_vec().into(),
                            existed: true,
                            max_task_retries: holder_record.spec.max_task_retries,
                        });
                    }
                    if spec.get_if_exists {
                        return Err(GcsError::AlreadyExists(format!(
                            "the actor named '{}' in namespace '{}' is a {}, not a {}",
                            spec.name,
                            spec.namespace,
                            holder_record.spec.class_name,
                            spec.class_name
                        )));
                    }
                    return Err(GcsError::AlreadyExists(format!(
                        "an actor named '{}' already exists in namespace '{}'",
                        spec.name, spec.namespace
                    )));
                }
            }
            let Table { records, names, .. } = &mut *t;
            let _ = names.claim(&spec.namespace, &spec.name, &spec.actor_id, |id| {
                records.get(id).is_some_and(|r| r.state != ActorState::Dead)
            });
        }
        let id = spec.actor_id.to_vec();
        let seq = t.next_seq;
        t.next_seq += 1;
        t.records.insert(
            id.clone(),
            Record {
                budget: RestartBudget::new(spec.max_restarts),
                spec,
                state: ActorState::Pending,
                incarnation: 0,
                killed: false,
                death_cause: String::new(),
                creation_error: None,
                task_socket: String::new(),
                task_address: String::new(),
                node_id: Vec::new(),
                core_worker_address: String::new(),
                worker_id: Vec::new(),
                lease: None,
                leased_worker: String::new(),
                waiting: String::new(),
                changed: Arc::default(),
                pid: 0,
                seq,
            },
        );
        drop(t);
        self.spawn_schedule(id.clone());
        Ok(RegisterActorReply {
            actor_id: id.into(),
            existed: false,
            max_task_retries: 0,
        })
    }

    /// The client for the node manager at `address`, shared by all calls to it.
    pub(crate) fn node_manager(&self, address: &str) -> Result<Arc<dyn NodeManagerApi>, RpcError> {
        let mut cache = self.inner.actors.node_managers.lock();
        if let Some(nm) = cache.get(address) {
            return Ok(nm.clone());
        }
        let nm = self.inner.connect.node_manager(address)?;
        cache.insert(address.to_string(), nm.clone());
        Ok(nm)
    }

    /// The client of the worker at `address`, shared by the calls to it.
    fn core_worker(&self, address: &str) -> Result<Arc<dyn CoreWorkerApi>, RpcError> {
        let mut cache = self.inner.actors.workers.lock();
        if let Some(w) = cache.get(address) {
            return Ok(w.clone());
        }
        let w = self.inner.connect.core_worker(address)?;
        if cache.len() >= WORKER_CLIENTS {
            cache.clear();
        }
        cache.insert(address.to_string(), w.clone());
        Ok(w)
    }

    fn spawn_schedule(&self, id: Vec<u8>) {
        let me = self.clone();
        let clock = self.inner.connect.clock();
        tokio::spawn(async move {
            let mut deadline = clock.now() + PLACEMENT_RETRY_DEADLINE;
            let mut delay = Duration::from_millis(50);
            let mut attempts = 1u32;
            // One name for the lease request across transient retries: a node manager that
            // granted it already gives the same lease back.
            let request_id = ray_common::ids::request_id();
            loop {
                match me.schedule(&id, request_id).await {
                    Ok(()) => return,
                    // No alive node can hold it: it waits (listed as a demand, and in its
                    // info for the driver's warning) until one that can joins.
                    Err(e @ (GcsError::NoFit(_) | GcsError::GroupPending)) => {
                        // Waiting for its group is expected: no warning for that.
                        let warn = matches!(e, GcsError::NoFit(_));
                        let why = match e {
                            GcsError::NoFit(why) => why,
                            other => other.to_string(),
                        };
                        if !me.wait_for_fit(&id, why, warn).await {
                            return;
                        }
                        // A fresh start for transient errors: the node that fits may have
                        // only just joined.
                        deadline = clock.now() + PLACEMENT_RETRY_DEADLINE;
                        delay = Duration::from_millis(50);
                        attempts = 1;
                    }
                    Err(e) if e.is_transient() && clock.now() + delay < deadline => {
                        tracing::info!(cause = %e, attempts, "actor placement met a transient error; trying again");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(2));
                        attempts += 1;
                    }
                    Err(e) => {
                        let tries = if e.is_transient() {
                            format!(" ({attempts} attempts)")
                        } else {
                            String::new()
                        };
                        me.placement_failed(id, format!("could not place the actor: {e}{tries}"));
                        return;
                    }
                }
            }
        });
    }

    /// Marks actor `id` as waiting for a node that can hold it, for `why`, and waits for the
    /// cluster's view to move (a node joining or reporting). `false` if it was killed or
    /// died meanwhile (nothing left to place).
    async fn wait_for_fit(&self, id: &[u8], why: String, warn: bool) -> bool {
        let changed = self.inner.view_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        {
            let mut t = self.inner.actors.table.lock();
            match t.records.get_mut(id) {
                Some(r) if r.state != ActorState::Dead => {
                    if r.waiting.is_empty() && warn {
                        tracing::warn!(class = %r.spec.class_name, "an actor waits for a node that can hold it: {why}");
                    }
                    r.waiting = why;
                }
                _ => return false,
            }
        }
        // A new view, or a look again now and then (a missed wake).
        let _ = self.inner.connect.clock().timeout(FIT_POLL, changed).await;
        // Still listed as waiting while it is placed again (cleared once it is leased).
        let t = self.inner.actors.table.lock();
        t.records
            .get(id)
            .is_some_and(|r| r.state != ActorState::Dead)
    }

    /// Actors waiting for a node that can hold them, counted by shape (what `rayrs status`
    /// lists beside the nodes' own demands).
    pub(crate) fn actor_demands(&self) -> Vec<Demand> {
        let t = self.inner.actors.table.lock();
        let mut out: Vec<Demand> = Vec::new();
        for r in t.records.values() {
            if r.waiting.is_empty() || r.state == ActorState::Dead {
                continue;
            }
            match out.iter_mut().find(|d| d.shape == r.spec.shape) {
                Some(d) => d.count += 1,
                None => out.push(Demand {
                    shape: r.spec.shape.clone(),
                    count: 1,
                    reason: r.waiting.clone(),
                    busy: false,
                }),
            }
        }
        out
    }

    /// Placing or constructing failed for a reason other than the constructor's own error
    /// (its process died, a lease failed): that spends a restart like any death.
    fn placement_failed(&self, id: Vec<u8>, cause: String) {
        let retry = {
            let mut t = self.inner.actors.table.lock();
            let Some(r) = t.records.get_mut(&id) else {
                return;
            };
            if r.state == ActorState::Dead {
                return;
            }
            r.lost()
        };
        if !retry {
            self.mark_dead(&id, &cause, None);
            return;
        }
        tracing::info!(cause, "actor placement failed; trying again");
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            me.spawn_schedule(id);
        });
    }

    /// Leases a dedicated worker, then asks it to construct the actor.
    async fn schedule(&self, id: &[u8], request_id: u64) -> Result<(), GcsError> {
        let spec = match self.inner.actors.table.lock().records.get(id) {
            Some(r) if r.state != ActorState::Dead => r.spec.clone(),
            _ => return Ok(()),
        };
        let shape = ray_common::resources::to_resource_set(spec.shape.clone())
            .map_err(|e| GcsError::InvalidArgument(format!("actor resources: {e}")))?;
        if !spec.placement_group_id.is_empty() {
            match self.group_ready(&spec.placement_group_id) {
                Ok(true) => {}
                // Waits (as for a node that fits) until the group is created.
                Ok(false) => return Err(GcsError::GroupPending),
                Err(cause) => {
                    self.mark_dead(id, &cause, None);
                    return Ok(());
                }
            }
        }
        let node = match self.place(&shape, spec.strategy.as_ref()) {
            Ok(Some(node)) => node,
            Ok(None) => return Err(GcsError::NoNode),
            Err(Refusal::Infeasible(why)) if self.inner.infeasible_waits => {
                return Err(GcsError::NoFit(why))
            }
            Err(Refusal::Unschedulable(why) | Refusal::Infeasible(why)) => {
                self.mark_dead(id, &format!("unschedulable: {why}"), None);
                return Ok(());
            }
        };
        let step = || format!("leasing a worker from node manager {node}");
        let nm = self
            .node_manager(&node)
            .map_err(|e| GcsError::call(step(), e))?;
        let reply = nm
            .request_worker_lease(LeaseRequest {
                shape: spec.shape.clone(),
                requester_id: Default::default(),
                for_actor: true,
                job_id: spec.job_id,
                // Named per node too: a retry that goes to another node asks afresh.
                request_id: per_node(request_id, &node),
                // The GCS placed it: the node grants or refuses, never spills.
                grant_or_reject: true,
                strategy: None,
                env: spec.env.clone(),
                locality: Vec::new(),
                requester_node: Default::default(),
                share_process: spec.share_process,
            })
            .await
            .map_err(|e| GcsError::call(step(), e))?;
        let lease = match reply.result {
            Some(lease_reply::Result::Granted(l)) => l,
            // The node cannot hold it after all (the GCS's view of it was stale): placed
            // again once the view moves.
            Some(lease_reply::Result::Infeasible(why)) if self.inner.infeasible_waits => {
                return Err(GcsError::NoFit(why))
            }
            Some(lease_reply::Result::Infeasible(why)) => {
                self.mark_dead(id, &format!("unschedulable: {why}"), None);
                return Ok(());
            }
            Some(lease_reply::Result::Spillback(_)) | None => {
                return Err(GcsError::BadReply(
                    "a lease reply neither granted nor refused".into(),
                ))
            }
        };
        let incarnation = {
            // Killed while waiting for the lease: do not run the constructor at all.
            let mut t = self.inner.actors.table.lock();
            match t.records.get_mut(id) {
                Some(r) if r.state != ActorState::Dead => {
                    r.worker_id = lease.worker_id.to_vec();
                    r.pid = lease.pid;
                    r.lease = Some((node.clone(), lease.lease_id));
                    r.leased_worker = lease.core_worker_address.clone();
                    r.waiting.clear();
                    r.incarnation
                }
                _ => {
                    drop(t);
                    return_worker(&nm, lease.lease_id);
                    return Ok(());
                }
            }
        };
        let created = match self.core_worker(&lease.core_worker_address) {
            Ok(worker) => {
                worker
                    .create_actor(CreateActorRequest {
                        spec: Some(spec.clone()),
                        incarnation,
                    })
                    .await
            }
            Err(e) => Err(e),
        };
        // A shared host goes on: an instance left there by an attempt that does not stand
        // (the call failed after it was built, the actor was killed meanwhile) is ended.
        let shared = spec.share_process;
        let created = match created {
            Ok(r) => r,
            Err(e) => {
                if shared {
                    self.destroy_on(id, &lease.core_worker_address).await;
                }
                return_worker(&nm, lease.lease_id);
                // The lease is given back, so this attempt is over whatever the kind: a
                // constructor cut off by a dead worker spends a restart.
                let step = format!(
                    "constructing the actor on worker {}",
                    lease.core_worker_address
                );
                return Err(GcsError::last_call(step, e));
            }
        };
        if !created.ok {
            return_worker(&nm, lease.lease_id);
            let err = created.error.unwrap_or_default();
            self.mark_dead(
                id,
                &format!("the constructor failed: {}", err.message),
                Some(err),
            );
            return Ok(());
        }
        let killed = match self.inner.actors.table.lock().records.get(id) {
            Some(r) => r.state == ActorState::Dead,
            None => return Ok(()),
        };
        if killed {
            // Killed while being constructed.
            if shared {
                self.destroy_on(id, &lease.core_worker_address).await;
            }
            return_worker(&nm, lease.lease_id);
            return Ok(());
        }
        let mut t = self.inner.actors.table.lock();
        if t.dead_workers.contains(&lease.worker_id.to_vec()) {
            drop(t);
            return Err(GcsError::DiedStarting);
        }
        let Some(r) = t.records.get_mut(id) else {
            return Ok(());
        };
        r.state = ActorState::Alive;
        r.incarnation += 1;
        r.task_socket = lease.task_socket;
        r.task_address = lease.task_address;
        r.node_id = lease.node_id.to_vec();
        r.core_worker_address = lease.core_worker_address;
        r.worker_id = lease.worker_id.to_vec();
        r.lease = Some((node, lease.lease_id));
        r.changed.notify_waiters();
        Ok(())
    }

    fn mark_dead(&self, id: &[u8], cause: &str, creation_error: Option<TaskError>) {
        let mut t = self.inner.actors.table.lock();
        if let Some(r) = t.records.get_mut(id) {
            if r.state != ActorState::Dead {
                tracing::info!(class = %r.spec.class_name, cause, "actor died");
                r.state = ActorState::Dead;
                r.death_cause = cause.to_string();
                r.creation_error = creation_error;
                r.waiting.clear();
                r.changed.notify_waiters();
                t.names.release(id);
            }
        }
    }

    pub(crate) async fn wait_info(
        &self,
        id: &[u8],
        min_incarnation: u64,
    ) -> Result<ActorInfo, GcsError> {
        loop {
            let changed = match self.inner.actors.table.lock().records.get(id) {
                Some(r) => r.changed.clone(),
                None => return Err(GcsError::NotFound("no such actor".into())),
            };
            let notified = changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let t = self.inner.actors.table.lock();
                let r = t
                    .records
                    .get(id)
                    .ok_or_else(|| GcsError::NotFound("no such actor".into()))?;
                let ready = r.state == ActorState::Dead
                    || (r.state == ActorState::Alive && r.incarnation >= min_incarnation);
                if ready {
                    return Ok(r.info());
                }
            }
            notified.await;
        }
    }

    /// The actors as the state API lists them: those passing `filters`, in the order they
    /// were registered, at most `limit`; and how many passed.
    pub(crate) fn actor_rows(
        &self,
        filters: &[ray_state::Filter],
        limit: usize,
    ) -> (Vec<ray_proto::ActorRow>, u64) {
        // Copied under the lock; sorted and filtered after it, off the actor table's path.
        let mut rows: Vec<(u64, ray_proto::ActorRow)> = {
            let t = self.inner.actors.table.lock();
            t.records
                .values()
                .map(|r| {
                    let row = ray_proto::ActorRow {
                        actor_id: r.spec.actor_id.clone(),
                        class_name: r.spec.class_name.clone(),
                        name: r.spec.name.clone(),
                        namespace: r.spec.namespace.clone(),
                        state: r.state.as_str().into(),
                        num_restarts: r.budget.used(),
                        node_id: r.node_id.clone().into(),
                        pid: r.pid,
                        job_id: r.spec.job_id,
                        death_cause: r.death_cause.clone(),
                        pending_reason: r.waiting.clone(),
                        worker_id: r.worker_id.clone().into(),
                    };
                    (r.seq, row)
                })
                .collect()
        };
        rows.sort_by_key(|(seq, _)| *seq);
        let mut total = 0;
        let mut listed = Vec::new();
        for (_, row) in rows {
            if ray_state::filter::matches(&row, filters) {
                total += 1;
                if listed.len() < limit {
                    listed.push(row);
                }
            }
        }
        (listed, total)
    }

    pub(crate) fn current_info(&self, id: &[u8]) -> Result<ActorInfo, GcsError> {
        let t = self.inner.actors.table.lock();
        t.records
            .get(id)
            .map(Record::info)
            .ok_or_else(|| GcsError::NotFound("no such actor".into()))
    }

    pub(crate) fn named(&self, namespace: &str, name: &str) -> Result<ActorInfo, GcsError> {
        let t = self.inner.actors.table.lock();
        t.names
            .lookup(namespace, name)
            .and_then(|id| t.records.get(id))
            .filter(|r| r.state != ActorState::Dead)
            .map(Record::info)
            .ok_or_else(|| {
                GcsError::NotFound(format!(
                    "no actor named '{name}' in namespace '{namespace}'"
                ))
            })
    }

    /// `ray::kill`: with `no_restart` the actor is dead at once; otherwise its process is
    /// killed and the restart rules apply.
    pub(crate) fn kill(&self, id: &[u8], no_restart: bool, cause: &str) {
        if let Some(held) = self.mark_killed(id, no_restart, cause) {
            let me = self.clone();
            let id = id.to_vec();
            tokio::spawn(async move { me.end_lease(&id, held, no_restart).await });
        }
    }

    /// [`Self::kill`] that returns once the actor's process has been killed (or, on a
    /// shared host, once the actor is gone from it).
    pub(crate) async fn kill_now(&self, id: &[u8], no_restart: bool, cause: &str) {
        if let Some(held) = self.mark_killed(id, no_restart, cause) {
            self.end_lease(id, held, no_restart).await;
        }
    }

    /// Ends what a killed actor held: its process, or on a process it may share with other
    /// actors (`share_process`), that actor alone (`DestroyActor`), then its lease (the node
    /// manager ends a shared host with its last actor). A shared actor killed with restarts
    /// left is restarted here, since no process death will say so.
    async fn end_lease(&self, id: &[u8], held: Held, no_restart: bool) {
        let Held {
            node,
            lease_id,
            worker,
            shared,
        } = held;
        if shared {
            self.destroy_on(id, &worker).await;
        }
        if let Ok(nm) = self.node_manager(&node) {
            let _ = nm
                .return_worker(ReturnWorkerRequest {
                    lease_id,
                    worker_failed: true,
                })
                .await;
        }
        if shared && !no_restart {
            self.actor_lost(id, lease_id, "killed by ray::kill");
        }
    }

    /// Ends actor `id` on the shared host at `worker`, asking a few times: a host that does
    /// not answer is dead or stuck (its death, reported by its node manager, ends what it
    /// hosts; a restart elsewhere meanwhile is Ray's risk of a partitioned actor too).
    async fn destroy_on(&self, id: &[u8], worker: &str) {
        let mut last = String::new();
        for attempt in 0..3u32 {
            if attempt > 0 {
                let backoff = Duration::from_millis(100 << attempt);
                self.inner.connect.clock().sleep(backoff).await;
            }
            let destroyed = match self.core_worker(worker) {
                Ok(w) => w
                    .destroy_actor(DestroyActorRequest {
                        actor_id: id.to_vec().into(),
                    })
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match destroyed {
                Ok(_) => return,
                Err(e) => last = e,
            }
        }
        tracing::debug!(error = %last, worker, "ending an actor on a shared worker failed");
    }

    /// A shared actor's instance is gone while its host lives on (killed with restarts
    /// left): it restarts or dies as if its process had died, unless something else
    /// already moved it on (its lease is no longer `lease_id`).
    fn actor_lost(&self, id: &[u8], lease_id: u64, cause: &str) {
        let restart = {
            let mut t = self.inner.actors.table.lock();
            let Some(r) = t.records.get_mut(id) else {
                return;
            };
            if r.state != ActorState::Alive || r.lease.as_ref().map(|l| l.1) != Some(lease_id) {
                return;
            }
            r.lost()
        };
        if restart {
            self.spawn_schedule(id.to_vec());
        } else {
            self.kill(id, true, cause);
        }
    }

    fn mark_killed(&self, id: &[u8], no_restart: bool, cause: &str) -> Option<Held> {
        let lease = {
            let mut t = self.inner.actors.table.lock();
            let r = t.records.get_mut(id)?;
            if no_restart {
                r.killed = true;
            } else if r.spec.share_process && r.state != ActorState::Alive {
                // Being built (or rebuilt): what the kill would restart is on its way.
                return None;
            }
            r.lease.clone().map(|(node, lease_id)| Held {
                node,
                lease_id,
                worker: r.leased_worker.clone(),
                shared: r.spec.share_process,
            })
        };
        if no_restart {
            let cause = if cause.is_empty() {
                "killed by ray::kill"
            } else {
                cause
            };
            self.mark_dead(id, cause, None);
        }
        lease
    }

    /// A job's driver left: its actors die for good, except detached ones, whose workers
    /// are returned (to be kept alive).
    pub(crate) fn job_finished(&self, job_id: u32) -> Vec<Vec<u8>> {
        let (ending, detached): (Vec<_>, Vec<_>) = {
            let t = self.inner.actors.table.lock();
            t.records
                .iter()
                .filter(|(_, r)| r.spec.job_id == job_id && r.state != ActorState::Dead)
                .map(|(id, r)| (id.clone(), r.spec.detached, r.worker_id.clone()))
                .partition(|(_, detached, _)| !detached)
        };
        for (id, _, _) in ending {
            // The node managers end the job's processes; an actor on a shared host kept
            // for a detached one is ended on its own.
            if let Some(held) = self.mark_killed(&id, true, "its job's driver exited") {
                if held.shared {
                    let me = self.clone();
                    tokio::spawn(async move { me.end_lease(&id, held, true).await });
                }
            }
        }
        detached.into_iter().map(|(_, _, worker)| worker).collect()
    }

    /// Node manager `address` is gone with its node: its actors restart elsewhere or die
    /// (as if their workers had died), and so do actors owned by them.
    pub(crate) fn actors_lost_with_node(&self, address: &str, node_id: &[u8]) {
        let (workers, orphans): (Vec<Vec<u8>>, Vec<Vec<u8>>) = {
            let t = self.inner.actors.table.lock();
            let alive = || {
                t.records
                    .iter()
                    .filter(|(_, r)| r.state != ActorState::Dead)
            };
            (
                alive()
                    .filter(|(_, r)| r.lease.as_ref().is_some_and(|(node, _)| node == address))
                    .map(|(_, r)| r.worker_id.clone())
                    .collect(),
                // Owned by a process of that node: the owner died with it.
                alive()
                    .filter(|(_, r)| !r.spec.detached && r.spec.owner_node[..] == *node_id)
                    .map(|(id, _)| id.clone())
                    .collect(),
            )
        };
        for worker in workers {
            self.worker_failed(&worker);
        }
        for id in orphans {
            self.kill(&id, true, "its owner died with its node");
        }
    }

    /// The actors (not dead) that run in placement group `group`'s bundles.
    pub(crate) fn actors_in_group(&self, group: &[u8]) -> Vec<Vec<u8>> {
        let t = self.inner.actors.table.lock();
        t.records
            .iter()
            .filter(|(_, r)| r.spec.placement_group_id == group && r.state != ActorState::Dead)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// A worker process died: its actor restarts or dies, and actors it owned (not detached)
    /// die with it.
    pub(crate) fn worker_failed(&self, worker_id: &[u8]) {
        let mut restart = Vec::new();
        let mut owned = Vec::new();
        let mut gone = Vec::new();
        {
            let mut t = self.inner.actors.table.lock();
            if t.dead_workers.len() > 100_000 {
                t.dead_workers.clear();
            }
            t.dead_workers.insert(worker_id.to_vec());
            for (id, r) in t.records.iter_mut() {
                if r.state == ActorState::Dead {
                    continue;
                }
                if r.worker_id == worker_id && r.state == ActorState::Alive {
                    gone.push(r.core_worker_address.clone());
                    r.lease = None;
                    match r.budget.on_death(r.killed) {
                        ActorState::Restarting => {
                            tracing::info!(class = %r.spec.class_name, "actor process died; restarting");
                            r.state = ActorState::Restarting;
                            restart.push(id.clone());
                        }
                        _ => {
                            owned.push((id.clone(), "the actor's worker process died".to_string()))
                        }
                    }
                } else if !r.spec.detached && r.spec.owner_worker_id == worker_id {
                    owned.push((id.clone(), "its owner died".to_string()));
                }
            }
        }
        {
            let mut clients = self.inner.actors.workers.lock();
            for address in gone {
                clients.remove(&address);
            }
        }
        for (id, cause) in owned {
            self.kill(&id, true, &cause);
        }
        for id in restart {
            self.spawn_schedule(id);
        }
    }
}

/// Gives a leased worker back to its node manager, killing it (it may hold a half-built actor).
/// `request_id` made distinct per node: a node manager remembers the requests it granted.
fn per_node(request_id: u64, node: &str) -> u64 {
    // FNV-1a: stable, and plenty to tell a few node addresses apart.
    let hash = node.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (request_id ^ hash).max(1)
}

fn return_worker(nm: &Arc<dyn NodeManagerApi>, lease_id: u64) {
    let nm = nm.clone();
    tokio::spawn(async move {
        let _ = nm
            .return_worker(ReturnWorkerRequest {
                lease_id,
                worker_failed: true,
            })
            .await;
    });
}
