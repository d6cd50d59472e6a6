//! The link-time registry of remote functions, and running one of them.
//!
//! `#[ray::remote]` puts an entry into [`REMOTE_FUNCTIONS`] (a linkme distributed slice: no
//! constructor runs, so the table is complete before `main`), named by the function's module
//! path. A worker is the same binary, so it finds the same entry by the same name.

use crate::codec;
use crate::error::Error;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;

/// One remote function, as registered by `#[ray::remote]`.
pub struct RemoteFunction {
    /// Stable name: module path and function name.
    pub name: &'static str,
    /// Decodes the arguments, runs the function, encodes its return value.
    pub invoke: fn(&mut ArgReader<'_>) -> Result<Vec<u8>, TaskFailure>,
}

/// Every remote function linked into this binary.
#[linkme::distributed_slice]
pub static REMOTE_FUNCTIONS: [RemoteFunction];

/// Why a function did not return a value.
#[derive(Debug)]
pub enum TaskFailure {
    /// The function returned `Err`: its message.
    Returned(String),
    /// The function returned `Err` of a type that can be encoded: its message, and the
    /// value (for [`Error::downcast`]).
    ReturnedValue(String, crate::error::ErrorValue),
    /// An argument did not decode as the declared type.
    BadArgument(String),
    /// The return value could not be encoded.
    BadReturn(String),
}

fn table() -> &'static HashMap<&'static str, &'static RemoteFunction> {
    static TABLE: OnceLock<HashMap<&'static str, &'static RemoteFunction>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = HashMap::new();
        for f in REMOTE_FUNCTIONS.iter() {
            if t.insert(f.name, f).is_some() {
                tracing::error!(name = f.name, "two remote functions share a name");
            }
        }
        // A name two functions share (declared in two function bodies of one module) runs
        // neither: a call fails saying so, rather than run the other one.
        for name in ambiguous() {
            t.remove(name);
        }
        t
    })
}

/// Names that more than one linked remote function has.
fn ambiguous() -> &'static std::collections::HashSet<&'static str> {
    static AMBIGUOUS: OnceLock<std::collections::HashSet<&'static str>> = OnceLock::new();
    AMBIGUOUS.get_or_init(|| {
        let mut seen = std::collections::HashSet::new();
        REMOTE_FUNCTIONS
            .iter()
            .filter(|f| !seen.insert(f.name))
            .map(|f| f.name)
            .collect()
    })
}

/// One argument's bytes: codec-encoded, or (`raw` > 0) a plain array of `raw`-byte elements.
#[derive(Clone, Copy)]
pub struct ArgBytes<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) raw: u32,
}

impl<'a> ArgBytes<'a> {
    pub(crate) fn encoded(bytes: &'a [u8]) -> Self {
        ArgBytes { bytes, raw: 0 }
    }
}

/// Reads a task's arguments in order. Generated code calls [`ArgReader::next_arg`] once per
/// parameter.
pub struct ArgReader<'a> {
    args: &'a [ArgBytes<'a>],
    pos: usize,
}

impl<'a> ArgReader<'a> {
    pub(crate) fn new(args: &'a [ArgBytes<'a>]) -> Self {
        ArgReader { args, pos: 0 }
    }

    /// Decodes the next argument as `T`.
    pub fn next_arg<T: DeserializeOwned>(&mut self) -> Result<T, TaskFailure> {
        let pos = self.pos;
        self.pos += 1;
        let bytes = self.args.get(pos).ok_or_else(|| {
            TaskFailure::BadArgument(format!(
                "expected at least {} arguments, got {}",
                pos + 1,
                self.args.len()
            ))
        })?;
        let decoded = if bytes.raw == 0 {
            codec::decode(bytes.bytes)
        } else {
            codec::decode_raw(bytes.bytes, bytes.raw as usize)
        };
        decoded.map_err(|e| TaskFailure::BadArgument(format!("argument {pos}: {e}")))
    }

    /// Fails if arguments are left over (a caller of another signature).
    pub fn finish(&self) -> Result<(), TaskFailure> {
        // The body runs next: refs it decodes are no longer its arguments'.
        crate::task_context::set_decoding_args(false);
        if self.pos == self.args.len() {
            Ok(())
        } else {
            Err(TaskFailure::BadArgument(format!(
                "expected {} arguments, got {}",
                self.pos,
                self.args.len()
            )))
        }
    }
}

/// Encodes a plain return value.
pub fn encode_return<T: Serialize>(value: &T) -> Result<Vec<u8>, TaskFailure> {
    codec::encode(value).map_err(|e| TaskFailure::BadReturn(e.to_string()))
}

/// Encodes the returns of a function with `num_returns` > 1 as one buffer: each part's
/// length (8 bytes, little-endian) then its bytes. The worker splits it into one object per
/// return ([`split_returns`]).
pub fn join_returns(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 8).sum());
    for p in parts {
        out.extend_from_slice(&(p.len() as u64).to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// The `n` parts of a buffer [`join_returns`] made.
pub(crate) fn split_returns(mut bytes: &[u8], n: usize) -> Result<Vec<&[u8]>, Error> {
    let malformed = || Error::Runtime(format!("malformed results of a task with {n} returns"));
    let mut parts = Vec::with_capacity(n);
    while !bytes.is_empty() {
        let (len, rest) = bytes.split_first_chunk::<8>().ok_or_else(malformed)?;
        let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|_| malformed())?;
        if rest.len() < len {
            return Err(malformed());
        }
        parts.push(&rest[..len]);
        bytes = &rest[len..];
    }
    if parts.len() != n {
        return Err(malformed());
    }
    Ok(parts)
}

thread_local! {
    static PANIC_SITE: RefCell<Option<String>> = const { RefCell::new(None) };
    static IN_TASK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Records where a panic inside a task happened (the message comes from the payload); panics
/// elsewhere go to the previous hook as usual.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_TASK.with(|t| t.get()) {
                let site = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
                PANIC_SITE.with(|s| *s.borrow_mut() = site);
            } else {
                previous(info);
            }
        }));
    });
}

/// One actor class, as registered by `#[ray::actor]` on its `impl` block.
pub struct ActorClassEntry {
    /// Stable name: module path and type name.
    pub name: &'static str,
    /// Runs the constructor on decoded arguments.
    pub construct: fn(&mut ArgReader<'_>) -> Result<Box<dyn ActorInstance>, TaskFailure>,
    /// True if any method is `async`: calls then run on the actor's tokio runtime.
    pub is_async: bool,
    /// Its concurrency groups: each name and its threads (calls at once, if async).
    pub concurrency_groups: &'static [(&'static str, u32)],
    /// The group a method's calls run in (`None`: the default group).
    pub method_group: fn(&str) -> Option<&'static str>,
}

/// A function `#[ray::worker_setup]` registered: run once in every worker process before it
/// takes work (Ray's `worker_process_setup_hook`).
pub struct WorkerSetup {
    /// Its name, for the error if it panics.
    pub name: &'static str,
    /// The function.
    pub run: fn(),
}

/// Every worker setup function linked into this binary.
#[linkme::distributed_slice]
pub static WORKER_SETUP: [WorkerSetup];

/// Runs every worker setup function, in link order; a panic is an error naming it.
pub(crate) fn run_worker_setup() -> Result<(), Error> {
    for hook in WORKER_SETUP.iter() {
        if std::panic::catch_unwind(hook.run).is_err() {
            return Err(Error::Runtime(format!(
                "the worker setup function {} panicked",
                hook.name
            )));
        }
    }
    Ok(())
}

/// Every actor class linked into this binary.
#[linkme::distributed_slice]
pub static ACTOR_CLASSES: [ActorClassEntry];

/// The remote functions and actor classes a core worker runs, by name: handed to it when it
/// is built ([`Functions::linked`] in every process the facade starts; a test may hand a
/// smaller set). The default knows none.
#[derive(Clone, Copy, Default)]
pub(crate) struct Functions {
    tasks: Option<&'static HashMap<&'static str, &'static RemoteFunction>>,
    classes: &'static [ActorClassEntry],
}

impl Functions {
    /// Everything `#[ray::remote]` and `#[ray::actor]` registered in this binary.
    pub fn linked() -> Functions {
        Functions {
            tasks: Some(table()),
            classes: ACTOR_CLASSES.static_slice(),
        }
    }

    /// Only the linked functions named in `names` (and no actor class): a process built
    /// without the others, as a worker of an older binary would be.
    #[cfg(test)]
    pub fn only(names: &[&str]) -> Functions {
        let kept = table()
            .iter()
            .filter(|(name, _)| names.contains(name))
            .map(|(name, f)| (*name, *f))
            .collect();
        Functions {
            tasks: Some(Box::leak(Box::new(kept))),
            classes: &[],
        }
    }

    /// The actor class registered under `name`.
    pub fn actor_class(&self, name: &str) -> Option<&'static ActorClassEntry> {
        self.classes.iter().find(|c| c.name == name)
    }

    /// Runs the function `name` on encoded `args`. A panic becomes [`Error::Task`] with its
    /// message and source location; `where_` says which worker ran it.
    pub fn execute(
        &self,
        name: &str,
        args: &[ArgBytes<'_>],
        where_: &str,
    ) -> Result<Vec<u8>, Error> {
        let Some(f) = self.tasks.and_then(|t| t.get(name).copied()) else {
            let message = if ambiguous().contains(name) {
                "two remote functions of this binary have this name (declared in two function \
                 bodies of one module?): rename one"
            } else {
                "no remote function of this name is registered in this binary"
            };
            return Err(Error::Task {
                function: name.to_string(),
                message: message.into(),
                location: where_.to_string(),
                value: None,
            });
        };
        run_guarded(name, where_, || {
            let mut reader = ArgReader::new(args);
            (f.invoke)(&mut reader)
        })
    }
}

/// A future of a method's encoded result.
pub type MethodFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, TaskFailure>> + Send>>;

/// What calling a method gave: a result now, or a future (async actors).
pub enum MethodCall {
    /// The method ran on the calling thread.
    Done(Result<Vec<u8>, TaskFailure>),
    /// The method runs when this future is polled.
    Future(MethodFuture),
}

/// A constructed actor: dispatches method calls by name.
pub trait ActorInstance: Send + Sync + 'static {
    /// Decodes the arguments of `method` and runs it (or returns its future).
    fn call(&self, method: &str, args: &mut ArgReader<'_>) -> Result<MethodCall, TaskFailure>;
}

/// Runs `f` (a task, a method, a constructor) and turns a panic or a failure into
/// [`Error::Task`] naming `name` and `where_`.
pub(crate) fn run_guarded<T>(
    name: &str,
    where_: &str,
    f: impl FnOnce() -> Result<T, TaskFailure>,
) -> Result<T, Error> {
    install_panic_hook();
    IN_TASK.with(|t| t.set(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    IN_TASK.with(|t| t.set(false));
    outcome_to_result(name, where_, outcome)
}

pub(crate) fn outcome_to_result<T>(
    name: &str,
    where_: &str,
    outcome: std::thread::Result<Result<T, TaskFailure>>,
) -> Result<T, Error> {
    let task_error = |message: String, site: Option<String>| Error::Task {
        function: name.to_string(),
        message,
        location: match site {
            Some(s) => format!("{where_} at {s}"),
            None => where_.to_string(),
        },
        value: None,
    };
    match outcome {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(TaskFailure::Returned(m))) => Err(task_error(m, None)),
        Ok(Err(TaskFailure::ReturnedValue(m, value))) => Err(match task_error(m, None) {
            Error::Task {
                function,
                message,
                location,
                ..
            } => Error::Task {
                function,
                message,
                location,
                value: Some(value),
            },
            other => other,
        }),
        Ok(Err(TaskFailure::BadArgument(m))) => Err(task_error(format!("bad argument: {m}"), None)),
        Ok(Err(TaskFailure::BadReturn(m))) => Err(task_error(
            format!("cannot encode the return value: {m}"),
            None,
        )),
        Err(payload) => {
            let message = panic_message(&*payload);
            let site = PANIC_SITE.with(|s| s.borrow_mut().take());
            Err(task_error(message, site))
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked with a non-string payload".to_string()
    }
}

/// Polls a method's future, turning a panic inside it into a failure.
pub(crate) struct CatchUnwind(pub MethodFuture);

impl std::future::Future for CatchUnwind {
    type Output = std::thread::Result<Result<Vec<u8>, TaskFailure>>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        install_panic_hook();
        IN_TASK.with(|t| t.set(true));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.0.as_mut().poll(cx)));
        IN_TASK.with(|t| t.set(false));
        match r {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Err(p) => std::task::Poll::Ready(Err(p)),
        }
    }
}
