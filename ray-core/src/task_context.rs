//! What the calling thread is running: whether a worker's task runs on it, which task, with
//! what resources, and how deep tasks run inline one inside the other.
//!
//! Thread-locals set and restored by whoever runs a task (the executor): call-scoped
//! context, not process state. Two core workers in one process each run tasks on their own
//! threads, so each sees its own.

use ray_common::{PlacementGroupId, TaskId};
use ray_scheduler::ResourceSet;
use std::cell::{Cell, RefCell};

thread_local! {
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
    static CURRENT_TASK: Cell<Option<TaskId>> = const { Cell::new(None) };
    /// Resources of the task running on this thread (normal tasks only).
    static CURRENT_SHAPE: RefCell<Option<Shape>> = const { RefCell::new(None) };
    /// Tasks run inline on this thread, one inside the other.
    static INLINE_DEPTH: Cell<u32> = const { Cell::new(0) };
    /// The tasks the current inline one runs inside, outermost first.
    static OUTER_TASKS: RefCell<Vec<TaskId>> = const { RefCell::new(Vec::new()) };
    /// A task's arguments are being decoded (not yet its body running).
    static DECODING_ARGS: Cell<bool> = const { Cell::new(false) };
    /// The placement group the running task's own tasks run in.
    static CAPTURE: Cell<Option<PlacementGroupId>> = const { Cell::new(None) };
    /// Where the running streaming task's items go.
    static ITEMS: RefCell<Option<ItemSink>> = const { RefCell::new(None) };
    /// The actor whose calls this thread runs, and its incarnation (a shared host's actor
    /// thread or event loop; a dedicated worker's actor is the process's).
    static CURRENT_ACTOR: Cell<Option<(ray_common::ActorId, u64)>> = const { Cell::new(None) };
}

/// The actor whose calls this thread runs (on a process that may host several), if any.
pub(crate) fn current_actor() -> Option<(ray_common::ActorId, u64)> {
    CURRENT_ACTOR.with(|a| a.get())
}

/// Makes this thread the actor's (`None`: nobody's), for the rest of the thread's life or
/// until set again.
pub(crate) fn set_actor(actor: Option<(ray_common::ActorId, u64)>) {
    CURRENT_ACTOR.with(|a| a.set(actor));
}

/// Runs `f` (an actor's constructor) as the actor's.
pub(crate) fn as_actor<R>(actor: (ray_common::ActorId, u64), f: impl FnOnce() -> R) -> R {
    let old = CURRENT_ACTOR.with(|a| a.replace(Some(actor)));
    let out = f();
    CURRENT_ACTOR.with(|a| a.set(old));
    out
}

/// Takes a streaming task's items, encoded, in order: `Err` stops the task (its stream is
/// cancelled, or the item could not be stored).
pub(crate) type ItemSink = Box<dyn FnMut(Vec<u8>) -> Result<(), String> + Send>;

/// Runs `f` (a streaming task) with its items going to `sink`.
pub(crate) fn streaming<R>(sink: ItemSink, f: impl FnOnce() -> R) -> R {
    let old = ITEMS.with(|i| i.replace(Some(sink)));
    let out = f();
    ITEMS.with(|i| *i.borrow_mut() = old);
    out
}

/// Makes `sink` (or none) where this thread's items go; the one it replaces. (A generator
/// method of an async actor runs in polls: its sink is set around each.)
pub(crate) fn swap_items(sink: Option<ItemSink>) -> Option<ItemSink> {
    ITEMS.with(|i| std::mem::replace(&mut *i.borrow_mut(), sink))
}

/// Sends an item of the streaming task running on this thread.
pub(crate) fn emit_item(bytes: Vec<u8>) -> Result<(), String> {
    ITEMS.with(|i| match i.borrow_mut().as_mut() {
        Some(sink) => sink(bytes),
        None => Err("an item was yielded outside a streaming task".into()),
    })
}

/// The placement group the running task captures its own tasks in, if any.
pub(crate) fn captured_group() -> Option<PlacementGroupId> {
    CAPTURE.with(|c| c.get())
}

/// Runs `f` with the tasks it submits captured in `group` (`None`: not captured).
pub(crate) fn capturing<R>(group: Option<PlacementGroupId>, f: impl FnOnce() -> R) -> R {
    let old = CAPTURE.with(|c| c.replace(group));
    let out = f();
    CAPTURE.with(|c| c.set(old));
    out
}

/// Marks the decoding of a task's arguments begun (`true`) or over; returns the old mark.
pub(crate) fn set_decoding_args(on: bool) -> bool {
    DECODING_ARGS.with(|d| d.replace(on))
}

/// True while a task's arguments are decoded: refs met then are reported in its reply.
pub(crate) fn decoding_args() -> bool {
    DECODING_ARGS.with(|d| d.get())
}

/// Most tasks run inline one inside the other (each is a few stack frames deep; the task
/// thread's stack is big enough for this many).
const MAX_INLINE_DEPTH: u32 = 256;

/// A task's resources: as its frame carried them (decoded only if needed), or known.
pub(crate) enum Shape {
    Wire(bytes::Bytes),
    Known(ResourceSet),
}

/// True on a worker's task thread while a task runs.
pub(crate) fn in_task() -> bool {
    IN_TASK.with(|t| t.get())
}

/// The id of the task running on this thread, if any.
pub(crate) fn current_task() -> Option<TaskId> {
    CURRENT_TASK.with(|t| t.get())
}

/// Whether `f` holds for the task running on this thread or any task it runs inline inside
/// (a task run inline inside a cancelled one is cancelled with it).
pub(crate) fn any_running_task(mut f: impl FnMut(&TaskId) -> bool) -> bool {
    current_task().is_some_and(|t| f(&t)) || OUTER_TASKS.with(|o| o.borrow().iter().any(f))
}

/// If the calling thread runs a worker's task that may run one of its own queued tasks
/// inline while it waits, the resources such a task must fit in.
pub(crate) fn can_help() -> Option<ResourceSet> {
    if !in_task() || INLINE_DEPTH.with(|d| d.get()) >= MAX_INLINE_DEPTH {
        return None;
    }
    CURRENT_SHAPE.with(|s| match &*s.borrow() {
        Some(Shape::Known(set)) => Some(set.clone()),
        Some(Shape::Wire(bytes)) => {
            let wire = <ray_proto::Resources as prost::Message>::decode(&bytes[..]).ok()?;
            ray_common::resources::to_resource_set(Some(wire)).ok()
        }
        None => None,
    })
}

/// Runs `f` as the worker's task `task` with resources `shape` (a task taken from a frame).
pub(crate) fn as_task<R>(task: Option<TaskId>, shape: Option<Shape>, f: impl FnOnce() -> R) -> R {
    CURRENT_TASK.with(|t| t.set(task));
    CURRENT_SHAPE.with(|s| s.replace(shape));
    IN_TASK.with(|t| t.set(true));
    let r = f();
    IN_TASK.with(|t| t.set(false));
    CURRENT_SHAPE.with(|s| s.replace(None));
    CURRENT_TASK.with(|t| t.set(None));
    r
}

/// Runs `f` as task `task` inline inside the task already running on this thread, which
/// stays current around it.
pub(crate) fn as_inline_task<R>(task: TaskId, shape: ResourceSet, f: impl FnOnce() -> R) -> R {
    let outer_task = CURRENT_TASK.with(|t| t.replace(Some(task)));
    let outer_shape = CURRENT_SHAPE.with(|s| s.replace(Some(Shape::Known(shape))));
    INLINE_DEPTH.with(|d| d.set(d.get() + 1));
    if let Some(outer) = outer_task {
        OUTER_TASKS.with(|o| o.borrow_mut().push(outer));
    }
    let r = f();
    if outer_task.is_some() {
        OUTER_TASKS.with(|o| o.borrow_mut().pop());
    }
    INLINE_DEPTH.with(|d| d.set(d.get() - 1));
    CURRENT_SHAPE.with(|s| s.replace(outer_shape));
    CURRENT_TASK.with(|t| t.set(outer_task));
    r
}
