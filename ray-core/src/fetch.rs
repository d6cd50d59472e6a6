//! Borrowed objects fetched from their owners: one streamed `GetObjects` call per owner for
//! everything asked for meanwhile, transient failures retried, and `OwnerDied` only for an
//! owner that stays unreachable.
//!
//! A borrower that needs 10,000 refs makes one call, not 10,000 (which overran the owner's
//! connection and turned any refusal into a permanent `OwnerDied`).

use crate::error::Error;
use crate::ids::ObjectId;
use crate::link::FetchRequest;
use crate::memory_store::Stored;
use crate::ownership::Ownership;
use ray_common::rpc::{RpcError, RpcErrorKind};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

/// Ids per `GetObjects` call.
const IDS_PER_CALL: usize = 10_000;
/// Deadline to open a `GetObjects` stream.
const OPEN_DEADLINE: Duration = Duration::from_secs(10);
/// An open stream that sends nothing (not even its keepalive) for this long has failed.
const SILENCE_DEADLINE: Duration = Duration::from_secs(3 * GET_OBJECTS_KEEPALIVE.as_secs());
/// A `GetObjects` stream sends an empty message this often while it waits: the borrower
/// tells a slow object from a dead owner by these.
pub(crate) const GET_OBJECTS_KEEPALIVE: Duration = Duration::from_secs(5);
/// An owner that fails every attempt for this long is taken for dead.
const OWNER_UNREACHABLE: Duration = Duration::from_secs(10);

/// Runs until the core worker is gone: groups the requests queued meanwhile by owner and fetches
/// each group with one call.
pub(crate) async fn run_fetcher(
    rt: Weak<Ownership>,
    mut queue: mpsc::UnboundedReceiver<FetchRequest>,
) {
    while let Some(first) = queue.recv().await {
        let mut by_owner: HashMap<Arc<str>, Vec<ObjectId>> = HashMap::new();
        let (owner, id) = first;
        by_owner.entry(owner).or_default().push(id);
        while let Ok((owner, id)) = queue.try_recv() {
            by_owner.entry(owner).or_default().push(id);
        }
        for (owner, ids) in by_owner {
            for chunk in ids.chunks(IDS_PER_CALL) {
                tokio::spawn(fetch(rt.clone(), owner.clone(), chunk.to_vec()));
            }
        }
    }
}

/// How one attempt ended.
enum Attempt {
    /// The stream ended (every object came, or the owner stopped early: ask again).
    Ended,
    /// It failed; `progress`: some objects came first.
    Failed { error: RpcError, progress: bool },
}

/// Fetches `ids` from `owner` into this process's store, retrying failures until every
/// object came or the owner has been unreachable for [`OWNER_UNREACHABLE`].
async fn fetch(rt: Weak<Ownership>, owner: Arc<str>, ids: Vec<ObjectId>) {
    let mut left: HashSet<ObjectId> = ids.into_iter().collect();
    let Some(clock) = rt
        .upgrade()
        .and_then(|o| Some(o.link.as_ref()?.clock.clone()))
    else {
        return;
    };
    let mut failing_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(20);
    while !left.is_empty() {
        let failure = match attempt(&rt, &clock, &owner, &mut left).await {
            None => return, // The runtime is gone.
            // Every object came.
            Some(Attempt::Ended) if left.is_empty() => return,
            // The owner ended the stream with objects missing: a failure like any other.
            Some(Attempt::Ended) => failed(
                RpcErrorKind::Unreachable,
                &owner,
                "the owner ended the stream early",
            ),
            Some(Attempt::Failed { error, progress }) => {
                if progress {
                    failing_since = None;
                }
                error
            }
        };
        // Refused: asking again gets the same answer.
        let permanent = matches!(
            failure.kind,
            RpcErrorKind::Unauthenticated | RpcErrorKind::InvalidArgument
        );
        let since = *failing_since.get_or_insert_with(|| clock.now());
        if permanent || clock.now() - since >= OWNER_UNREACHABLE {
            let error = if failure.kind == RpcErrorKind::Unreachable {
                tracing::warn!(%owner, error = %failure.message, "owner unreachable; its objects are lost");
                None
            } else {
                Some(Error::Runtime(format!(
                    "fetching objects from their owner at {owner}: {}",
                    failure.message
                )))
            };
            let Some(rt) = rt.upgrade() else { return };
            for id in left.drain() {
                let e = error
                    .clone()
                    .unwrap_or_else(|| Error::OwnerDied(id.to_hex()));
                rt.store.put_if_present(id, Stored::Failed(Arc::new(e)));
            }
            return;
        }
        tracing::debug!(%owner, kind = ?failure.kind, error = %failure.message, "fetch from owner failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// One `GetObjects` call for everything in `left`, storing what comes and removing it from
/// `left`. `None` if the runtime is gone.
async fn attempt(
    rt: &Weak<Ownership>,
    clock: &ray_common::Clock,
    owner: &Arc<str>,
    left: &mut HashSet<ObjectId>,
) -> Option<Attempt> {
    let peer = {
        let rt = rt.upgrade()?;
        rt.link.as_ref()?.peer(owner)
    };
    let peer = match peer {
        Ok(p) => p,
        Err(e) => {
            let error = failed(RpcErrorKind::InvalidArgument, owner, e.to_string());
            return Some(Attempt::Failed {
                error,
                progress: false,
            });
        }
    };
    let req = ray_proto::GetObjectsRequest {
        object_ids: left.iter().map(|id| id.0.to_vec().into()).collect(),
    };
    let mut stream = match clock.timeout(OPEN_DEADLINE, peer.get_objects(req)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            return Some(Attempt::Failed {
                error,
                progress: false,
            })
        }
        Err(_) => {
            let error = failed(
                RpcErrorKind::DeadlineExceeded,
                owner,
                "the owner did not answer",
            );
            return Some(Attempt::Failed {
                error,
                progress: false,
            });
        }
    };
    let mut progress = false;
    loop {
        let message = match clock.timeout(SILENCE_DEADLINE, stream.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(None) => return Some(Attempt::Ended),
            Ok(Some(Err(error))) => return Some(Attempt::Failed { error, progress }),
            Err(_) => {
                let error = failed(
                    RpcErrorKind::DeadlineExceeded,
                    owner,
                    "the owner went silent",
                );
                return Some(Attempt::Failed { error, progress });
            }
        };
        let rt = rt.upgrade()?;
        for object in message.objects {
            let Ok(id) = crate::ids::id16(&object.object_id, "object id").map(ObjectId) else {
                continue;
            };
            if !left.remove(&id) {
                continue;
            }
            progress = true;
            let value = object
                .value
                .map(Stored::from_proto)
                .unwrap_or_else(|| Stored::Failed(Arc::new(Error::ObjectLost(id.to_hex()))));
            // A borrower that dropped the ref meanwhile has no slot left: nothing to keep.
            rt.store.put_if_present(id, value);
        }
    }
}

/// A failure of the `GetObjects` call that this process noticed itself.
fn failed(kind: RpcErrorKind, owner: &Arc<str>, why: impl Into<String>) -> RpcError {
    RpcError::new(kind, "GetObjects", owner, why)
}
