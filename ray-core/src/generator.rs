//! `ObjectRefGenerator<T>`: what a streaming task gives its caller, the refs of its items in
//! order as the worker makes them: an `Iterator` for sync code, a `Stream` for async code.

use crate::core_worker::CoreWorker;
use crate::memory_store::Stored;
use crate::object_ref::ObjectRef;
use crate::ownership::RefInner;
use crate::Error;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc::UnboundedReceiver;

type EndWait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The refs of a streaming task's items (Ray's `ObjectRefGenerator`), from a remote function
/// or an actor method that returns `impl Iterator<Item = T>`: each ref comes as soon as the
/// worker made the
/// item, in order. `next()` blocks until the next item or the end; as a
/// [`tokio_stream::Stream`] it awaits instead. If the task fails (a panic, an `Err`, its
/// worker dying past its retries) the items made before still come, then one ref whose `get`
/// fails with the error, then the end. Dropping it before the end cancels the task: the
/// worker stops at its next item.
///
/// ```
/// #[ray::remote]
/// fn count_to(n: u32) -> impl Iterator<Item = u32> {
///     1..=n
/// }
///
/// # fn main() -> ray::Result<()> {
/// ray::init(ray::Config::local().num_cpus(1.0))?;
/// let items: Vec<u32> = count_to::remote(3)
///     .map(|r| ray::get(&r))
///     .collect::<ray::Result<_>>()?;
/// assert_eq!(items, vec![1, 2, 3]);
/// ray::shutdown();
/// # Ok(()) }
/// ```
pub struct ObjectRefGenerator<T> {
    /// The core worker that owns the items (`None`: the call failed before it was made).
    cw: Option<Arc<CoreWorker>>,
    /// The task's own return: ready once it ended, or failed with its error.
    end: Option<Arc<RefInner>>,
    items: Option<UnboundedReceiver<Arc<RefInner>>>,
    /// A failure to give once, before the end (the call could not be made).
    failure: Option<Error>,
    /// Waits for the end, for `poll_next`.
    end_wait: Option<EndWait>,
    done: bool,
    _item: PhantomData<fn() -> T>,
}

impl<T> ObjectRefGenerator<T> {
    pub(crate) fn new(cw: Arc<CoreWorker>, end: Arc<RefInner>) -> Self {
        let items = cw.own.take_stream(end.id);
        ObjectRefGenerator {
            cw: Some(cw),
            end: Some(end),
            items,
            failure: None,
            end_wait: None,
            done: false,
            _item: PhantomData,
        }
    }

    pub(crate) fn failed(e: Error) -> Self {
        ObjectRefGenerator {
            cw: None,
            end: None,
            items: None,
            failure: Some(e),
            end_wait: None,
            done: false,
            _item: PhantomData,
        }
    }

    /// The task ended: the items that came before its end, then its error if it failed.
    fn finish(&mut self) -> Option<ObjectRef<T>> {
        if let Some(r) = self.items.as_mut().and_then(|rx| rx.try_recv().ok()) {
            return Some(ObjectRef::from_inner(r));
        }
        self.done = true;
        let (cw, end) = (self.cw.as_ref()?, self.end.as_ref()?);
        match cw.own.store.get(&end.id) {
            // Its error, as the last item: `get` on it fails with it.
            Some(Stored::Failed(_)) => Some(ObjectRef::from_inner(end.clone())),
            _ => None,
        }
    }

    fn end_is_ready(&self) -> bool {
        match (&self.cw, &self.end) {
            (Some(cw), Some(end)) => cw.own.store.is_ready(&end.id),
            _ => true,
        }
    }
}

impl<T> Iterator for ObjectRefGenerator<T> {
    type Item = ObjectRef<T>;

    fn next(&mut self) -> Option<ObjectRef<T>> {
        if let Some(e) = self.failure.take() {
            self.done = true;
            return Some(ObjectRef::failed(e));
        }
        if self.done {
            return None;
        }
        if let Ok(r) = self.items.as_mut()?.try_recv() {
            return Some(ObjectRef::from_inner(r));
        }
        let cw = self.cw.clone()?;
        let end = self.end.clone()?;
        let Some(link) = cw.link().cloned() else {
            // Sync mode: the task ran when it was submitted.
            return self.finish();
        };
        // The next item, or the end (then every item is here: they come before it).
        let mut rx = self.items.take()?;
        let own = cw.own.clone();
        let waited = link.call(async move {
            let got = tokio::select! {
                biased;
                item = rx.recv() => item,
                _ = own.value(&end) => None,
            };
            (rx, got)
        });
        match waited {
            Ok((rx, got)) => {
                self.items = Some(rx);
                match got {
                    Some(r) => Some(ObjectRef::from_inner(r)),
                    None => self.finish(),
                }
            }
            Err(e) => {
                self.done = true;
                Some(ObjectRef::failed(e))
            }
        }
    }
}

impl<T> ObjectRefGenerator<T> {
    /// The same refs as a `Stream`, for async code (a generator is an `Iterator`, whose
    /// blocking `next` an async task must not call).
    ///
    /// ```
    /// use futures_util::StreamExt;
    ///
    /// #[ray::remote]
    /// fn squares(n: u64) -> impl Iterator<Item = u64> {
    ///     (1..=n).map(|i| i * i)
    /// }
    ///
    /// # fn main() -> ray::Result<()> {
    /// # ray::init(ray::Config::local().num_cpus(1.0))?;
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let mut items = squares::remote(3).into_stream();
    /// let mut sum = 0;
    /// while let Some(r) = items.next().await {
    ///     sum += r.await?;
    /// }
    /// assert_eq!(sum, 14);
    /// # Ok::<(), ray::Error>(()) })?;
    /// # ray::shutdown();
    /// # Ok(()) }
    /// ```
    pub fn into_stream(self) -> ObjectRefStream<T> {
        ObjectRefStream(self)
    }
}

/// A streaming task's item refs as a `Stream`: [`ObjectRefGenerator::into_stream`].
pub struct ObjectRefStream<T>(ObjectRefGenerator<T>);

impl<T> tokio_stream::Stream for ObjectRefStream<T> {
    type Item = ObjectRef<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ObjectRef<T>>> {
        let this = &mut self.get_mut().0;
        if let Some(e) = this.failure.take() {
            this.done = true;
            return Poll::Ready(Some(ObjectRef::failed(e)));
        }
        if this.done {
            return Poll::Ready(None);
        }
        let Some(rx) = this.items.as_mut() else {
            this.done = true;
            return Poll::Ready(None);
        };
        match rx.poll_recv(cx) {
            Poll::Ready(Some(r)) => return Poll::Ready(Some(ObjectRef::from_inner(r))),
            Poll::Ready(None) => return Poll::Ready(this.finish()),
            Poll::Pending => {}
        }
        if this.end_wait.is_none() {
            let (Some(cw), Some(end)) = (this.cw.clone(), this.end.clone()) else {
                return Poll::Ready(this.finish());
            };
            let own = cw.own.clone();
            this.end_wait = Some(Box::pin(async move {
                let _ = own.value(&end).await;
            }));
        }
        match this.end_wait.as_mut().map(|w| w.as_mut().poll(cx)) {
            Some(Poll::Pending) => Poll::Pending,
            _ => {
                // Ended: never poll that future again; what is left is in the channel.
                this.end_wait = Some(Box::pin(std::future::ready(())));
                Poll::Ready(this.finish())
            }
        }
    }
}

impl<T> Drop for ObjectRefGenerator<T> {
    fn drop(&mut self) {
        let (Some(cw), Some(end)) = (&self.cw, &self.end) else {
            return;
        };
        if !self.done && !self.end_is_ready() {
            // Nobody reads the rest: the task stops at its next item. Asked off this thread
            // (the worker's answer may take a while; an async caller must not wait for it).
            match cw.link().cloned() {
                Some(link) => {
                    let (cw, end) = (cw.clone(), end.clone());
                    link.handle.spawn_blocking(move || {
                        let _ = cw.cancel(&end, false, true);
                    });
                }
                None => {
                    let _ = cw.cancel(end, false, true);
                }
            }
        }
        // Items still to come are freed as they arrive.
        cw.own.streams.remove(&end.id);
    }
}
