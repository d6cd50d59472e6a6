//! Asking again: the one loop that repeats a call while it fails for a reason that may pass
//! (its [`RpcErrorKind`](super::RpcErrorKind) says so), until a deadline on the caller's clock.

use super::RpcError;
use crate::Clock;
use std::future::Future;
use std::time::Duration;

/// The first pause between tries; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(20);
/// The longest pause between tries.
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// `call`'s first answer that is not a transient failure, or the last failure once asking
/// again would end past `patience` (measured on `clock` from the first try). The pauses
/// between tries are real time (see [`crate::clock`]). Each try must name the same request
/// (a request id, an object id): a try whose answer was lost may have been done.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use ray_common::rpc::{with_retries, RpcError, RpcErrorKind};
/// use ray_common::Clock;
/// use std::time::Duration;
/// let mut tries = 0;
/// let answer = with_retries(&Clock::Real, Duration::from_secs(5), || {
///     tries += 1;
///     let lost = tries < 3;
///     async move {
///         if lost {
///             Err(RpcError::new(RpcErrorKind::Unreachable, "Ping", &"peer".into(), "lost"))
///         } else {
///             Ok("pong")
///         }
///     }
/// })
/// .await;
/// assert_eq!(answer.unwrap(), "pong");
/// assert_eq!(tries, 3);
/// # }
/// ```
pub async fn with_retries<T, Fut>(
    clock: &Clock,
    patience: Duration,
    mut call: impl FnMut() -> Fut,
) -> Result<T, RpcError>
where
    Fut: Future<Output = Result<T, RpcError>>,
{
    let deadline = clock.now() + patience;
    let mut pause = FIRST_PAUSE;
    loop {
        match call().await {
            Err(e) if e.is_transient() && clock.now() + pause < deadline => {
                tracing::debug!(method = e.method, to = %e.to, error = %e.message, "asking again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
            answer => return answer,
        }
    }
}
