//! The core worker: one driver's or worker's part of a session, built as a value
//! ([`CoreWorker::new`]) from its identity, its link (clients and clock) and the functions it
//! runs, with the mechanics of get, put,
//! wait, submit and actors that the public API wraps.
//!
//! Knows no global: the facade holds the process's current core worker; several can live
//! in one process.

use crate::args::{ArgKind, ArgSpec};
use crate::codec;
use crate::error::{Error, Result};
use crate::group::GroupGate;
use crate::ids::ObjectId;
use crate::link::{FetchRequest, Link};
use crate::memory_store::{Stored, Subscribed, Waiter};
use crate::options::{ActorOptions, TaskOptions};
use crate::ownership::{
    collect_serialized_refs, Identity, Ownership, RefInner, SyncActor, INLINE_MAX,
};
use crate::registry::{ArgReader, Functions, MethodCall};
use crate::submitter::{self, ActorCall};
use crate::task_manager::{SpecArg, TaskSpec};
use ray_common::rpc::{with_retries, RpcErrorKind, CONTROL_DEADLINE};
use ray_common::{ActorId, PlacementGroupId};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How often a task waiting in `get` or `wait` looks whether it was cancelled.
const CANCEL_CHECK: Duration = Duration::from_millis(50);

/// One process's (or, in a test harness, one simulated process's) core worker.
pub(crate) struct CoreWorker {
    /// Its identity and tables (what refs point back to).
    pub own: Arc<Ownership>,
    /// The way into its submitter (local and cluster mode).
    submitter: Option<submitter::Handle>,
    /// This node's resources as configured (sync mode reports these).
    pub node_total: ray_scheduler::ResourceSet,
    pub shut_down: AtomicBool,
    /// The placement groups this process submitted to: where each stands, as a watcher of
    /// the GCS last heard (their tasks wait at the gate until the group is created).
    groups: dashmap::DashMap<PlacementGroupId, tokio::sync::watch::Sender<GroupGate>>,
}

/// The untyped part of an actor handle.
#[derive(Clone, Debug)]
pub struct ActorCore {
    pub(crate) actor_id: ActorId,
    pub(crate) class: Arc<str>,
    pub(crate) max_task_retries: i32,
    /// Keeps an owner-scoped actor alive (a ref the reference table counts); `None` for
    /// detached actors and handles from `get_actor`.
    pub(crate) lifetime: Option<Arc<RefInner>>,
    /// Set when creation failed before the actor existed (e.g. its name is taken).
    pub(crate) failed: Option<Error>,
}

impl ActorCore {
    /// The actor's id, 32 hex digits.
    pub fn id(&self) -> String {
        self.actor_id.to_hex()
    }
}

/// Marks the calling thread blocked in `get` for its whole life, if it is a worker's task
/// thread: the node manager lends its CPU to other work meanwhile (as Ray does).
struct BlockedGuard<'a> {
    hook: Option<&'a (dyn Fn(bool) + Send + Sync)>,
    submitter: Option<&'a submitter::Handle>,
}

impl<'a> BlockedGuard<'a> {
    fn enter(cw: &'a CoreWorker) -> Self {
        let hook = cw
            .own
            .link
            .as_ref()
            .and_then(|l| l.blocked_hook.as_deref())
            .filter(|_| crate::task_context::in_task());
        if let Some(h) = hook {
            if let Some(s) = &cw.submitter {
                s.blocked(true);
            }
            h(true);
        }
        BlockedGuard {
            hook,
            submitter: cw.submitter.as_ref(),
        }
    }
}

impl Drop for BlockedGuard<'_> {
    fn drop(&mut self) {
        if let Some(h) = self.hook {
            h(false);
            if let Some(s) = self.submitter {
                s.blocked(false);
            }
        }
    }
}

/// Sends what `own` buffered of task events to the GCS (the state API's task list).
async fn flush_task_events(own: &Ownership) -> std::result::Result<(), ray_common::rpc::RpcError> {
    let Some(link) = &own.link else {
        return Ok(());
    };
    let from = crate::task_events::Reporter {
        job_id: own.me.job_id,
        worker_id: own.me.worker_id.to_vec().into(),
        node_id: own.me.node_id.to_vec().into(),
        address: own.me.address.to_string(),
    };
    // A batch an earlier report failed to send goes first; while it cannot go, events wait
    // in the buffer (bounded).
    let events = &own.task_events;
    let send = |batch: ray_proto::AddTaskEventsRequest| async move {
        let sent = link.gcs.add_task_events(batch.clone()).await;
        if sent.is_err() {
            events.keep_unsent(batch);
        }
        sent.map(drop)
    };
    if let Some(unsent) = events.take_unsent() {
        send(unsent).await?;
    }
    match events.batch(&from) {
        Some(batch) => send(batch).await,
        None => Ok(()),
    }
}

impl CoreWorker {
    /// A core worker named `me`. With a link (local and cluster mode) its submitter, its
    /// fetcher of borrowed objects and its table housekeeping start on the link's runtime;
    /// without one (sync mode) tasks run in the caller's thread.
    pub fn new(
        me: Identity,
        link: Option<(Link, mpsc::UnboundedReceiver<FetchRequest>)>,
        functions: Functions,
        node_total: ray_scheduler::ResourceSet,
    ) -> Arc<Self> {
        let (link, fetches) = match link {
            Some((link, fetches)) => (Some(Arc::new(link)), Some(fetches)),
            None => (None, None),
        };
        let own = Arc::new(Ownership {
            ids: crate::ids::IdGen::new(&me.worker_id),
            me,
            link,
            functions,
            ..Default::default()
        });
        let submitter = match (&own.link, fetches) {
            (Some(link), Some(fetches)) => {
                let weak = Arc::downgrade(&own);
                link.handle
                    .spawn(crate::fetch::run_fetcher(weak.clone(), fetches));
                link.handle.spawn(crate::tables::housekeeping(weak.clone()));
                link.handle.spawn(crate::borrowers::watch(weak.clone()));
                let events = weak.clone();
                link.handle.spawn(crate::task_events::report(move || {
                    let own = events.upgrade()?;
                    Some(async move { flush_task_events(&own).await })
                }));
                Some(submitter::Handle::start(weak, &link.handle))
            }
            _ => {
                // Sync mode: no GCS to report to.
                own.task_events.set_enabled(false);
                None
            }
        };
        Arc::new(CoreWorker {
            own,
            submitter,
            node_total,
            shut_down: AtomicBool::new(false),
            groups: Default::default(),
        })
    }

    /// The gate of placement group `id`'s tasks (`None` in sync mode, where groups are
    /// created at once). The first asking starts a watcher that long-polls the GCS until the
    /// group is created or removed.
    pub(crate) fn group_gate(
        &self,
        id: PlacementGroupId,
    ) -> Option<tokio::sync::watch::Receiver<GroupGate>> {
        let link = self.own.link.as_ref()?;
        if let Some(tx) = self.groups.get(&id) {
            return Some(tx.subscribe());
        }
        let tx = self
            .groups
            .entry(id)
            .or_insert_with(|| {
                let (tx, _) = tokio::sync::watch::channel(GroupGate::Pending);
                let gcs = link.gcs.clone();
                let clock = link.clock.clone();
                let watch = tx.clone();
                link.handle.spawn(async move {
                    let gate = loop {
                        let req = ray_proto::GetPlacementGroupRequest {
                            group_id: id.to_vec().into(),
                            wait_ms: 3_000,
                        };
                        let call = gcs.get_placement_group(req);
                        match clock.timeout(Duration::from_secs(10), call).await {
                            Ok(Ok(info)) if info.state == "CREATED" => break GroupGate::Ready,
                            Ok(Ok(info)) if info.state == "REMOVED" => {
                                break GroupGate::Failed(format!(
                                    "its placement group {id} was removed"
                                ))
                            }
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) if e.kind == RpcErrorKind::NotFound => {
                                break GroupGate::Failed(format!(
                                    "its placement group {id} does not exist"
                                ))
                            }
                            // The GCS is away: ask again (its tasks keep waiting).
                            Ok(Err(_)) | Err(_) => {
                                tokio::time::sleep(Duration::from_millis(200)).await
                            }
                        }
                    };
                    watch.send_if_modified(|g| match g {
                        // Removed here meanwhile: that stands.
                        GroupGate::Failed(_) => false,
                        g => {
                            *g = gate;
                            true
                        }
                    });
                });
                tx
            })
            .clone();
        Some(tx.subscribe())
    }

    /// Placement group `id` was removed by this process: its tasks waiting or to come fail.
    pub(crate) fn group_removed(&self, id: PlacementGroupId) {
        if let Some(tx) = self.groups.get(&id) {
            tx.send_replace(GroupGate::Failed(format!(
                "its placement group {id} was removed"
            )));
        } else {
            let (tx, _) = tokio::sync::watch::channel(GroupGate::Failed(format!(
                "its placement group {id} was removed"
            )));
            self.groups.insert(id, tx);
        }
    }

    pub fn me(&self) -> &Identity {
        &self.own.me
    }

    pub fn link(&self) -> Option<&Arc<Link>> {
        self.own.link.as_ref()
    }

    /// Stops submitting: everything queued or in flight, and every ref still pending here,
    /// fails with `NotInitialized`.
    pub async fn stop(&self) {
        self.shut_down.store(true, Ordering::SeqCst);
        if let Some(s) = &self.submitter {
            s.shutdown().await;
        }
        // The last second's task events: a short program's whole list.
        let last = flush_task_events(&self.own);
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(2), last).await {
            tracing::debug!(error = %e, "the last task events were not reported");
        }
    }

    /// Fails every ref still pending here (after the loops that could complete them ended).
    pub fn fail_pending(&self) {
        self.own.store.fail_all_pending(&Error::NotInitialized);
    }

    /// Decodes `r`'s value. The owners of refs it holds that this process did not hold
    /// before hear of the borrow before this returns: no release of them can overtake that.
    pub fn decode<T: DeserializeOwned>(&self, r: &Arc<RefInner>, stored: &Stored) -> Result<T> {
        let (value, borrows) = self.own.decode(stored);
        if !borrows.is_empty() {
            let _held = r; // The value keeps them alive at their owners meanwhile.
            self.own
                .register_borrows_now(borrows, self.own.me.address.clone());
        }
        value
    }

    /// Waits until `num` of `refs` are ready here, or the timeout passes. Returns which are.
    pub fn wait_ready(
        &self,
        refs: &[&RefInner],
        num: usize,
        timeout: Option<Duration>,
    ) -> Result<Vec<bool>> {
        // A cancelled task's next ray call ends it.
        self.own.cancelled.check_current()?;
        // Fast path: what is ready already, registering nothing.
        let mut ready = Vec::with_capacity(refs.len());
        for r in refs {
            if let Some(e) = &r.failed {
                return Err(e.clone());
            }
            ready.push(self.own.store.is_ready(&r.id));
        }
        let mut count = ready.iter().filter(|r| **r).count();
        let zero = timeout == Some(Duration::ZERO);
        if count >= num || (zero && refs.iter().all(|r| r.owner.is_none())) {
            // (A zero timeout still subscribes to borrowed refs below: that starts their fetch.)
            return Ok(ready);
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        // Where each pending id sits in `refs` (an id may appear more than once): a wake-up
        // finds its refs at once, so waiting on n refs costs O(n), not O(n²).
        let mut pending: HashMap<ObjectId, Vec<usize>> = HashMap::new();
        for (i, r) in refs.iter().enumerate() {
            if ready[i] {
                continue;
            }
            match self.own.watch(r, Waiter::Blocking(tx.clone())) {
                Subscribed::Ready(_) => {
                    ready[i] = true;
                    count += 1;
                    if count >= num {
                        return Ok(ready);
                    }
                }
                Subscribed::Pending { .. } => pending.entry(r.id).or_default().push(i),
                Subscribed::Unknown => return Err(Error::ObjectLost(r.id.to_hex())),
            }
        }
        drop(tx);
        if count >= num {
            return Ok(ready);
        }
        if zero {
            return Ok(ready);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        // A task of this worker waiting in `get` for its own queued children runs them
        // itself, one at a time, before it blocks (and lends its CPU): no lease, no other
        // process. Never from `wait` (which may return before the child would finish) nor
        // with a timeout (which the child's run could overstay).
        let helping = if timeout.is_none() && num == refs.len() && crate::task_context::in_task() {
            let owned: HashSet<ObjectId> = pending
                .iter()
                .filter(|(_, at)| refs[at[0]].owner.is_none())
                .map(|(id, _)| *id)
                .collect();
            match crate::task_context::can_help() {
                Some(fits) if !owned.is_empty() => Some((Arc::new(owned), fits)),
                _ => None,
            }
        } else {
            None
        };
        let mut blocked = None;
        while count < num {
            if blocked.is_none() {
                let stolen = match (&helping, &self.submitter) {
                    (Some((wanted, fits)), Some(s)) => s.steal(wanted, fits),
                    _ => None,
                };
                if let Some(task) = stolen {
                    crate::executor::run_inline(&self.own, task);
                    while let Ok(id) = rx.try_recv() {
                        count += mark_ready(&mut pending, &mut ready, id);
                    }
                    continue;
                }
                // (Blocked before polling for the reply: a task that waits for many results
                // lends its CPU at once. Polling first took `n:n actor calls async` from
                // ~350k to ~70k per second.)
                blocked = Some(BlockedGuard::enter(self));
            }
            let Some(got) = self.next_ready(&rx, deadline)? else {
                break;
            };
            count += mark_ready(&mut pending, &mut ready, got);
        }
        Ok(ready)
    }

    /// The next message of `rx` (an object that became ready); `None` at `deadline` or when
    /// the channel closes. A task's wait looks every [`CANCEL_CHECK`] whether its task was
    /// cancelled meanwhile, and then fails with `TaskCancelled`.
    fn next_ready<T>(
        &self,
        rx: &crossbeam_channel::Receiver<T>,
        deadline: Option<Instant>,
    ) -> Result<Option<T>> {
        use crossbeam_channel::RecvTimeoutError;
        if crate::task_context::current_task().is_none() {
            return Ok(match deadline {
                Some(d) => rx.recv_deadline(d).ok(),
                None => crate::spin::recv(rx).ok(),
            });
        }
        if deadline.is_none() {
            if let Some(got) = crate::spin::poll(rx) {
                return Ok(got.ok());
            }
        }
        loop {
            let slice = Instant::now() + CANCEL_CHECK;
            let until = deadline.map_or(slice, |d| d.min(slice));
            match rx.recv_deadline(until) {
                Ok(got) => return Ok(Some(got)),
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
                Err(RecvTimeoutError::Timeout) => {
                    self.own.cancelled.check_current()?;
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(None);
                    }
                }
            }
        }
    }

    pub fn get_stored(&self, r: &RefInner, timeout: Option<Duration>) -> Result<Stored> {
        if let Some(e) = &r.failed {
            return Err(e.clone());
        }
        if let Some(v) = self.own.store.get(&r.id) {
            return Ok(v);
        }
        let ready = self.wait_ready(&[r], 1, timeout)?;
        if !ready[0] {
            if self.shut_down.load(Ordering::Relaxed) {
                return Err(Error::NotInitialized);
            }
            return Err(match timeout {
                Some(t) => Error::GetTimeout(t),
                None => Error::ObjectLost(r.id.to_hex()),
            });
        }
        self.own
            .store
            .get(&r.id)
            .ok_or_else(|| Error::ObjectLost(r.id.to_hex()))
    }

    /// Submits a task; its result is owned by this process.
    pub fn submit(
        self: &Arc<Self>,
        function: &'static str,
        opts: &TaskOptions,
        args: Vec<ArgSpec>,
    ) -> Arc<RefInner> {
        self.submit_returns(function, opts, args, 1).0
    }

    /// Submits a task with `num_returns` results (each an object of its own, owned by this
    /// process): the first one's ref, and the others'.
    pub fn submit_returns(
        self: &Arc<Self>,
        function: &'static str,
        opts: &TaskOptions,
        args: Vec<ArgSpec>,
        num_returns: u32,
    ) -> (Arc<RefInner>, Vec<Arc<RefInner>>) {
        let num_returns = num_returns.max(1);
        // A task that captures its children puts this one in its placement group.
        let captured = opts.captured();
        let opts = captured.as_ref().unwrap_or(opts);
        let return_id = self.own.ids.next_n(num_returns);
        // The task manager's record, kept with the result while refs to it live.
        let spec = TaskSpec {
            function,
            args: args.iter().map(SpecArg::from).collect(),
            shape_key: opts.shape_key.clone(),
            max_retries: opts.max_retries,
        };
        self.own.store.expect_task(return_id, spec);
        let out = self.own.new_ref(return_id);
        if opts.streaming {
            // Open before the task can send an item.
            self.own.open_stream(return_id);
        }
        let more: Vec<Arc<RefInner>> = crate::ids::return_ids(return_id, num_returns)
            .skip(1)
            .map(|id| {
                self.own.store.expect(id);
                self.own.new_ref(id)
            })
            .collect();
        let fail = |e: Error| {
            let e = Arc::new(e);
            for id in crate::ids::return_ids(return_id, num_returns) {
                self.own.store.put(id, Stored::Failed(e.clone()));
            }
        };
        let unencodable = args.iter().find_map(|a| match &a.0 {
            ArgKind::Unencodable(e) => Some(e.clone()),
            _ => None,
        });
        // A cancelled task submits nothing more.
        if let Some(e) = unencodable.or_else(|| self.own.cancelled.check_current().err()) {
            fail(e);
            return (out, more);
        }
        if let Some(reason) = opts.group_misfit() {
            fail(Error::Unschedulable {
                function: function.to_string(),
                reason,
            });
            return (out, more);
        }
        match &self.submitter {
            // As a node would refuse it: sync mode must not run what local mode cannot.
            None => match ray_scheduler::resources::never_fits(&opts.base, &self.node_total) {
                Some(reason) => fail(Error::Unschedulable {
                    function: function.to_string(),
                    reason,
                }),
                None => self.run_inline(function, opts, args, return_id, num_returns),
            },
            Some(s) => s.submit(submitter::PendingTask {
                function,
                shape: opts.shape.clone(),
                shape_key: opts.shape_key.clone(),
                strategy: opts.strategy.clone(),
                env: opts.env.clone(),
                args,
                return_id,
                num_returns,
                retries_left: opts.max_retries,
                attempt: 0,
                tracked: false,
                retry_exceptions: opts.retry_exceptions,
                parent: crate::task_context::current_task(),
                capture: opts.group.as_ref().is_some_and(|g| g.capture),
                streaming: opts.streaming,
                gate: opts
                    .group
                    .as_ref()
                    .and_then(|g| self.group_gate(g.group.id)),
                resolved: Vec::new(),
            }),
        }
        (out, more)
    }

    /// Sync mode: the values of `args`, all of which are ready (tasks ran when submitted).
    fn resolve_inline(&self, function: &str, args: &[ArgSpec]) -> Result<Vec<Stored>> {
        crate::args::resolve(
            function,
            args,
            |r| self.get_stored(r, None),
            |s| self.own.stored_bytes(s),
        )
    }

    /// Sync mode: runs the task now, in this thread (again, as `retry_exceptions` asks).
    fn run_inline(
        self: &Arc<Self>,
        function: &'static str,
        opts: &TaskOptions,
        args: Vec<ArgSpec>,
        return_id: ObjectId,
        num_returns: u32,
    ) {
        let mut retries_left = opts.max_retries;
        let (result, inner) = loop {
            let (result, inner) = collect_serialized_refs(|| {
                self.resolve_inline(function, &args).and_then(|values| {
                    let slices = inline_slices(&values);
                    let run = || {
                        self.own
                            .functions
                            .execute(function, &slices, &self.own.me.location)
                    };
                    if !opts.streaming {
                        return run();
                    }
                    // A generator's items go straight to its stream.
                    crate::task_context::streaming(self.sync_item_sink(return_id), run)
                })
            });
            let user_error = matches!(&result, Err(Error::Task { .. }));
            if !(user_error && opts.retry_exceptions && retries_left != 0) {
                break (result, inner);
            }
            retries_left -= i32::from(retries_left > 0);
        };
        let stored = crate::executor::returns_to_stored(&self.own, return_id, num_returns, result);
        self.own.contain_all(return_id, num_returns, inner);
        for (id, value) in crate::ids::return_ids(return_id, num_returns).zip(stored) {
            self.own.store.put(id, value);
        }
        drop(args);
    }

    /// Creates an actor: registered with the GCS (which places and constructs it), or, in
    /// sync mode, constructed here.
    pub fn create_actor(
        self: &Arc<Self>,
        class: &'static str,
        opts: ActorOptions,
        args: Vec<ArgSpec>,
    ) -> Result<ActorCore> {
        let entry = self.own.functions.actor_class(class).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "actor class {class} is not registered in this binary"
            ))
        })?;
        let mut shape = ray_scheduler::ResourceSet::from_pairs(opts.resources.clone())
            .map_err(|e| Error::InvalidArgument(format!("actor resources: {e}")))?;
        if let Some(e) = crate::options::gpu_request_error(shape.get(ray_scheduler::GPU)) {
            return Err(e);
        }
        // Its group: the one it is told, or the one the task creating it captures.
        let group = opts.strategy.group().or_else(|| {
            matches!(opts.strategy, crate::SchedulingStrategy::Default)
                .then(crate::task_context::captured_group)
                .flatten()
                .map(crate::group::InGroup::captured)
        });
        if opts.share_process {
            let held = [ray_scheduler::CPU, ray_scheduler::GPU]
                .into_iter()
                .find(|r| shape.get(r) > 0.0);
            let why = match held {
                Some(r) => Some(format!("it holds {r}")),
                None => group
                    .is_some()
                    .then(|| "it runs in a placement group".to_string()),
            };
            if let Some(why) = why {
                return Err(Error::InvalidArgument(format!(
                    "actor {class}: share_process(true) is only for an actor that holds no CPU, \
                     no GPU and no placement group's bundle, and {why}"
                )));
            }
        }
        if let Some(g) = &group {
            if let Some(reason) = g.group.misfit(g.index, &shape) {
                return Err(Error::Unschedulable {
                    function: class.to_string(),
                    reason,
                });
            }
            // Sync mode has no bundles: the actor is simply made here.
            if self.own.link.is_some() {
                shape = g.group.shape_in(g.index, &shape);
            }
        }
        let strategy = opts.strategy.to_proto()?;
        let namespace = opts
            .namespace
            .clone()
            .unwrap_or_else(|| self.own.me.namespace.clone());
        let actor_id = ActorId::random();
        let mut core = ActorCore {
            actor_id,
            class: class.into(),
            max_task_retries: opts.max_task_retries,
            lifetime: None,
            failed: None,
        };
        let Some(c) = &self.own.link else {
            if let Some(name) = &opts.name {
                let key = (namespace.clone(), name.clone());
                if let Some(existing) = self.own.sync_names.get(&key).map(|e| *e) {
                    let alive = self
                        .own
                        .sync_actors
                        .get(&existing)
                        .is_some_and(|a| a.instance.is_ok());
                    if alive && opts.get_if_exists {
                        core.actor_id = existing;
                        return Ok(core);
                    }
                    if alive {
                        return Err(name_taken(name, &namespace));
                    }
                }
                self.own.sync_names.insert(key, actor_id);
            }
            let instance = self.resolve_inline(class, &args).and_then(|values| {
                let slices = inline_slices(&values);
                crate::registry::run_guarded(class, &self.own.me.location, || {
                    (entry.construct)(&mut ArgReader::new(&slices))
                })
            });
            let instance = instance.map_err(|e| Error::ActorDied {
                class: class.to_string(),
                cause: format!("the constructor failed: {e}"),
            });
            self.own.sync_actors.insert(
                actor_id,
                SyncActor {
                    class: class.into(),
                    instance,
                },
            );
            if !opts.detached {
                core.lifetime = Some(self.own.track_actor_lifetime(actor_id));
            }
            return Ok(core);
        };
        // Constructor arguments are resolved here (waiting for refs if need be).
        let values: Vec<_> = crate::args::resolve(
            class,
            &args,
            |r| self.get_stored(r, None),
            |s| self.own.stored_bytes(s),
        )?
        .iter()
        .map(Stored::to_proto)
        .collect();
        let max_concurrency = opts
            .max_concurrency
            .unwrap_or(if entry.is_async { 1000 } else { 1 });
        let spec = ray_proto::ActorSpec {
            actor_id: actor_id.to_vec().into(),
            class_name: class.to_string(),
            args: values,
            name: opts.name.clone().unwrap_or_default(),
            namespace: namespace.clone(),
            max_restarts: opts.max_restarts,
            max_concurrency: max_concurrency.max(1),
            max_task_retries: opts.max_task_retries,
            detached: opts.detached,
            shape: Some(ray_common::resources::to_resources(&shape)),
            owner_address: self.own.me.address.to_string(),
            owner_worker_id: if self.own.me.is_worker {
                self.own.me.worker_id.to_vec().into()
            } else {
                Default::default()
            },
            get_if_exists: opts.get_if_exists,
            job_id: self.own.me.job_id,
            env: opts.env.clone(),
            strategy,
            owner_node: c
                .store
                .local_node()
                .map(|n| n.to_vec().into())
                .unwrap_or_default(),
            placement_group_id: group
                .map(|g| g.group.id.to_vec().into())
                .unwrap_or_default(),
            share_process: opts.share_process,
        };
        let gcs = c.gcs.clone();
        let clock = c.clock.clone();
        // Asked again under the same actor id if the answer is lost: the GCS registers it once.
        let reply = c.call(async move {
            with_retries(&clock, CONTROL_DEADLINE, || {
                gcs.register_actor(spec.clone())
            })
            .await
        })?;
        let reply = match reply {
            Ok(r) => r,
            Err(e) if e.kind == RpcErrorKind::AlreadyExists => {
                return Err(Error::InvalidArgument(e.message))
            }
            Err(e) => {
                return Err(Error::Runtime(format!(
                    "registering an actor: {}",
                    e.message
                )))
            }
        };
        if reply.existed {
            core.actor_id = ActorId::from_wire(&reply.actor_id).map_err(Error::runtime)?;
            core.max_task_retries = reply.max_task_retries;
            return Ok(core);
        }
        if !opts.detached {
            core.lifetime = Some(self.own.track_actor_lifetime(actor_id));
        }
        let held = args.iter().flat_map(|a| a.refs().cloned()).collect();
        self.own.actor_args.insert(actor_id, held);
        Ok(core)
    }

    /// Submits a method call.
    pub fn call_actor(
        self: &Arc<Self>,
        core: &ActorCore,
        method: &'static str,
        args: Vec<ArgSpec>,
    ) -> Arc<RefInner> {
        self.call_actor_returns(core, method, args, 1, false, false)
            .0
    }

    /// Submits a method call with `num_returns` results: the first one's ref, and the
    /// others' (as [`CoreWorker::submit_returns`]). A `streaming` call (a generator method)
    /// has its stream open before it is sent: its one return is its end.
    pub fn call_actor_returns(
        self: &Arc<Self>,
        core: &ActorCore,
        method: &'static str,
        args: Vec<ArgSpec>,
        num_returns: u32,
        retry_exceptions: bool,
        streaming: bool,
    ) -> (Arc<RefInner>, Vec<Arc<RefInner>>) {
        let num_returns = num_returns.max(1);
        let return_id = self.own.ids.next_n(num_returns);
        let mut refs = crate::ids::return_ids(return_id, num_returns).map(|id| {
            self.own.store.expect(id);
            self.own.new_ref(id)
        });
        let out = refs.next().expect("one return at least");
        let more: Vec<Arc<RefInner>> = refs.collect();
        if streaming {
            self.own.open_stream(return_id);
        }
        let Some(s) = &self.submitter else {
            let label = format!("{}.{method}", core.class);
            let mut retries_left = core.max_task_retries;
            let (result, inner) = loop {
                let run = || self.run_sync_method(core, method, &label, &args);
                let (result, inner) = collect_serialized_refs(|| match streaming {
                    // Sync mode: a generator's items go straight to its stream.
                    true => crate::task_context::streaming(self.sync_item_sink(return_id), run),
                    false => run(),
                });
                let user_error = matches!(&result, Err(Error::Task { .. }));
                if !(user_error && retry_exceptions && retries_left != 0) {
                    break (result, inner);
                }
                retries_left -= i32::from(retries_left > 0);
            };
            let stored =
                crate::executor::returns_to_stored(&self.own, return_id, num_returns, result);
            self.own.contain_all(return_id, num_returns, inner);
            for (id, value) in crate::ids::return_ids(return_id, num_returns).zip(stored) {
                self.own.store.put(id, value);
            }
            return (out, more);
        };
        s.call_actor(
            ActorCall {
                actor_id: core.actor_id,
                class: core.class.clone(),
                method,
                args,
                return_id,
                num_returns,
                retry_exceptions,
                retries_left: core.max_task_retries,
                attempt: 0,
                tracked: false,
                resolved: None,
                lifetime: core.lifetime.clone(),
                waited: false,
                parent: crate::task_context::current_task(),
                streaming,
            },
            &self.own,
        );
        (out, more)
    }

    /// Sync mode: where the items of generator `return_id` go as it runs here (again from
    /// the first on a retry: those seen are dropped).
    fn sync_item_sink(&self, return_id: ObjectId) -> crate::task_context::ItemSink {
        let own = self.own.clone();
        let mut index = 0;
        Box::new(move |bytes: Vec<u8>| {
            let item = own.ids.next();
            own.stream_item(return_id, index, item, Stored::Inline(bytes.into()));
            index += 1;
            Ok(())
        })
    }

    /// Cancels the task or actor call that makes `r` (see [`crate::cancel`]): only the
    /// process that submitted it (the ref's owner) can; in sync mode it has run already.
    pub fn cancel(&self, r: &RefInner, force: bool, recursive: bool) -> Result<()> {
        if r.failed.is_some() {
            return Ok(());
        }
        if r.owner.is_some() {
            return Err(Error::InvalidArgument(format!(
                "only the process that submitted the task of object {} can cancel it",
                r.id.to_hex()
            )));
        }
        match &self.submitter {
            Some(s) => s.cancel(r.id, force, recursive),
            None => Ok(()),
        }
    }

    /// What this process knows of its task whose first return is `id`, not run yet ("why
    /// pending"; `UNKNOWN` if it is not pending here).
    pub fn explain(&self, id: ObjectId) -> ray_proto::TaskExplanation {
        match &self.submitter {
            Some(s) => s.explain(id),
            None => ray_proto::TaskExplanation {
                phase: "UNKNOWN".into(),
                ..Default::default()
            },
        }
    }

    /// Cancels what this process submitted from within its task `parent` (which its owner
    /// cancelled, `recursive`).
    pub fn cancel_children(&self, parent: ray_common::TaskId) {
        if let Some(s) = &self.submitter {
            s.cancel_children(parent);
        }
    }

    fn run_sync_method(
        &self,
        core: &ActorCore,
        method: &'static str,
        label: &str,
        args: &[ArgSpec],
    ) -> Result<Vec<u8>> {
        let values = self.resolve_inline(label, args)?;
        let actor = self
            .own
            .sync_actors
            .get(&core.actor_id)
            .ok_or_else(|| Error::ActorDied {
                class: core.class.to_string(),
                cause: "killed".into(),
            })?;
        let instance = actor.instance.as_ref().map_err(Clone::clone)?;
        let slices = inline_slices(&values);
        let location = &self.own.me.location;
        let call = crate::registry::run_guarded(label, location, || {
            instance.call(method, &mut ArgReader::new(&slices))
        })?;
        match call {
            MethodCall::Done(r) => crate::registry::outcome_to_result(label, location, Ok(r)),
            MethodCall::Future(f) => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(Error::runtime)?;
                let outcome = rt.block_on(crate::registry::CatchUnwind(f));
                crate::registry::outcome_to_result(label, location, outcome)
            }
        }
    }

    /// Kills an actor for good and returns once its process is dead.
    pub fn kill_actor(&self, actor_id: ActorId, cause: &str, no_restart: bool) -> Result<()> {
        let Some(c) = &self.own.link else {
            // Sync mode: the actor lives here, and a restart would rebuild the same state.
            self.own.end_actor(actor_id, cause);
            return Ok(());
        };
        let gcs = c.gcs.clone();
        let req = ray_proto::KillActorRequest {
            actor_id: actor_id.to_vec().into(),
            no_restart,
            cause: cause.to_string(),
        };
        let killed = async move {
            if let Err(e) = gcs.kill_actor(req).await {
                tracing::warn!(error = %e, "could not kill an actor");
            }
        };
        c.call(killed)?;
        // Calls made from here on fail at once, whatever is still in flight (a restarting
        // actor takes them as after a crash).
        if let (true, Some(s)) = (no_restart, &self.submitter) {
            s.actor_killed(actor_id, cause.to_string());
        }
        Ok(())
    }

    /// The id and class of the live actor named `name`.
    pub fn lookup_named_actor(
        &self,
        name: &str,
        namespace: &str,
    ) -> Result<(ActorId, String, i32)> {
        let not_found = || {
            Error::InvalidArgument(format!(
                "no actor named '{name}' in namespace '{namespace}'"
            ))
        };
        let Some(c) = &self.own.link else {
            let id = *self
                .own
                .sync_names
                .get(&(namespace.to_string(), name.to_string()))
                .ok_or_else(not_found)?;
            let a = self.own.sync_actors.get(&id).ok_or_else(not_found)?;
            if a.instance.is_err() {
                return Err(not_found());
            }
            return Ok((id, a.class.to_string(), 0));
        };
        let gcs = c.gcs.clone();
        let req = ray_proto::GetNamedActorRequest {
            name: name.to_string(),
            namespace: namespace.to_string(),
        };
        match c.call(async move { gcs.get_named_actor(req).await })? {
            Ok(info) => Ok((
                ActorId::from_wire(&info.actor_id).map_err(Error::runtime)?,
                info.class_name,
                info.max_task_retries,
            )),
            Err(e) if e.kind == RpcErrorKind::NotFound => Err(not_found()),
            Err(e) => Err(Error::Runtime(e.message)),
        }
    }

    /// Stores a plain array: raw bytes written once into shared memory (if large), readable
    /// in place by [`crate::get_slice`].
    pub fn put_slice<T: bytemuck::Pod + Serialize>(
        self: &Arc<Self>,
        data: &[T],
    ) -> Result<Arc<RefInner>> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        match &self.own.link {
            Some(c) if bytes.len() > INLINE_MAX && std::mem::size_of::<T>() > 0 => {
                let id = self.own.ids.next();
                let stored = c
                    .store
                    .put_plasma(id, bytes, std::mem::size_of::<T>() as u32)?;
                self.own.store.put(id, stored);
                Ok(self.own.new_ref(id))
            }
            _ => self.put(&data),
        }
    }

    pub fn put<T: Serialize>(self: &Arc<Self>, value: &T) -> Result<Arc<RefInner>> {
        self.own.cancelled.check_current()?;
        let id = self.own.ids.next();
        let inner = self.store_value(id, value)?;
        let r = self.own.new_ref(id);
        // Refs inside the value are held with it, not pinned (see `Ownership::contain`).
        self.own.contain(id, inner);
        Ok(r)
    }

    /// Stores `value` as object `id`; the refs found inside it.
    fn store_value<T: Serialize>(&self, id: ObjectId, value: &T) -> Result<Vec<Arc<RefInner>>> {
        if let Some(c) = &self.own.link {
            // Measured first: a large value is encoded straight into shared memory, so a put
            // costs the value plus its one copy there. The measuring pass also says whether
            // the value holds refs at all (most do not: then nothing needs collecting).
            let (len, found) = collect_serialized_refs(|| codec::encoded_len(value));
            let (len, has_refs) = (len?, !found.is_empty());
            if len > INLINE_MAX {
                let (stored, inner) = collect_serialized_refs(|| {
                    c.store
                        .put_plasma_with(id, len as u64, 0, |buf| codec::encode_into(value, buf))
                });
                self.own.store.put(id, stored?);
                return Ok(inner);
            }
            if !has_refs {
                self.own.store_owned_bytes(id, codec::encode(value)?)?;
                return Ok(Vec::new());
            }
        }
        let (bytes, inner) = collect_serialized_refs(|| codec::encode(value));
        self.own.store_owned_bytes(id, bytes?)?;
        Ok(inner)
    }
}

fn name_taken(name: &str, namespace: &str) -> Error {
    Error::InvalidArgument(format!(
        "an actor named '{name}' already exists in namespace '{namespace}'"
    ))
}

/// Byte views of inline values (sync mode holds nothing else).
fn inline_slices(values: &[Stored]) -> Vec<crate::registry::ArgBytes<'_>> {
    values
        .iter()
        .map(|v| match v {
            Stored::Inline(b) => crate::registry::ArgBytes::encoded(b),
            _ => crate::registry::ArgBytes::encoded(&[]),
        })
        .collect()
}

impl CoreWorker {
    /// `r`'s value, for async callers: never blocks the calling thread.
    pub async fn get_async<T: DeserializeOwned>(&self, r: &Arc<RefInner>) -> Result<T> {
        if let Some(e) = &r.failed {
            return Err(e.clone());
        }
        let value = self.own.value(r).await?;
        let (value, borrows) = self.own.decode(&value);
        // Held meanwhile: `r`, whose value keeps them alive at their owners.
        self.own
            .register_borrows_async(borrows, self.own.me.address.clone())
            .await;
        value
    }
}

/// Marks the refs waiting for object `id` ready; how many were not ready before.
fn mark_ready(
    pending: &mut HashMap<ObjectId, Vec<usize>>,
    ready: &mut [bool],
    id: ObjectId,
) -> usize {
    let mut newly = 0;
    for i in pending.remove(&id).unwrap_or_default() {
        if !ready[i] {
            ready[i] = true;
            newly += 1;
        }
    }
    newly
}
