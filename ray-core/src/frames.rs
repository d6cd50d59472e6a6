//! Length-prefixed protobuf frames on a byte stream: the data plane between a core worker and
//! a leased worker. A frame is a little-endian `u32` length and that many bytes of message.
//! Readers refuse frames above [`ray_proto::MAX_MESSAGE_BYTES`] and malformed messages with an
//! error, never a panic.
//!
//! Also the sockets that carry them ([`Socket`]: read half registered with the runtime for
//! reading only) and [`FrameSink`], where a connection's frames are sent: written by the
//! sender at once, or batched by the connection's flusher task.

use parking_lot::Mutex;
use prost::Message;
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Appends `msg` as one frame to `buf`.
pub(crate) fn encode_frame<M: Message>(msg: &M, buf: &mut Vec<u8>) {
    let len = msg.encoded_len();
    buf.reserve(4 + len);
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    // Encoding into a Vec cannot fail: it grows as needed.
    let _ = msg.encode(buf);
}

/// Writes every message sent on `rx` to `w` as frames until `rx` closes. Everything queued
/// goes out in one write (up to 1 MiB): under load one syscall moves many messages.
pub(crate) async fn write_frames<M: Message, W: tokio::io::AsyncWrite + Unpin>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<M>,
    mut w: W,
) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        buf.clear();
        encode_frame(&first, &mut buf);
        while buf.len() < 1 << 20 {
            match rx.try_recv() {
                Ok(m) => encode_frame(&m, &mut buf),
                Err(_) => break,
            }
        }
        w.write_all(&buf).await?;
    }
    Ok(())
}

/// The sending end of one connection's frames of type `M`, cheap to clone: the connection's
/// writer ends once every clone is gone and what was sent is written.
///
/// Over a socket ([`FrameSink::direct`]) frames are appended to the connection's buffer.
/// Sent with [`Flush::Now`], the sending thread writes the buffer itself (a non-blocking
/// write: a synchronous call's frame leaves without waking another thread); with
/// [`Flush::Soon`] the connection's flusher task writes it, with whatever else was sent
/// meanwhile (under load one write carries many frames). The flusher also writes what the
/// socket did not take at once, as it becomes writable. Bytes leave in the order they were
/// sent either way. Over anything else ([`FrameSink::queued`]) frames go through a writer
/// task that batches them.
pub(crate) enum FrameSink<M> {
    Queued(tokio::sync::mpsc::UnboundedSender<M>),
    Direct(Arc<SinkGuard>),
}

impl<M> Clone for FrameSink<M> {
    fn clone(&self) -> Self {
        match self {
            FrameSink::Queued(tx) => FrameSink::Queued(tx.clone()),
            FrameSink::Direct(guard) => FrameSink::Direct(guard.clone()),
        }
    }
}

/// Who writes a frame sent on a [`FrameSink::Direct`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Flush {
    /// The sending thread, at once: nothing else is coming that it could go with, and
    /// someone waits for its answer.
    Now,
    /// The connection's flusher task, with whatever else is sent meanwhile.
    Soon,
}

/// The connection is closed (or broke): the frame was not sent.
#[derive(Debug)]
pub(crate) struct Closed;

impl<M: Message + Send + 'static> FrameSink<M> {
    /// Frames written by [`write_frames`] on a task of its own; `on_error` is told if a write
    /// fails.
    pub fn queued<W>(w: W, on_error: impl FnOnce(io::Error) + Send + 'static) -> Self
    where
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            if let Err(e) = write_frames(rx, w).await {
                on_error(e);
            }
        });
        FrameSink::Queued(tx)
    }

    /// Frames written straight to the socket `w` by the sender when it can (see the type's
    /// doc), the rest by a flusher task spawned here; `on_error` is told if a write fails.
    pub fn direct(w: WriteHalf, on_error: impl FnOnce(io::Error) + Send + 'static) -> Self {
        let direct = Arc::new(Direct {
            half: w,
            state: Mutex::new(DirectState {
                buf: Vec::new(),
                open: true,
                failed: None,
            }),
            flush: tokio::sync::Notify::new(),
        });
        let flusher = direct.clone();
        tokio::spawn(async move {
            if let Err(e) = flusher.flusher().await {
                on_error(e);
            }
        });
        FrameSink::Direct(Arc::new(SinkGuard(direct)))
    }

    /// Sends one frame, written as `flush` says; an error if the connection is closed or
    /// broke.
    pub fn send(&self, msg: M, flush: Flush) -> Result<(), Closed> {
        match self {
            FrameSink::Queued(tx) => tx.send(msg).map_err(|_| Closed),
            FrameSink::Direct(guard) => guard.0.send(&msg, flush),
        }
    }
}

/// A task connection's socket: an abstract Unix socket on this node, or TCP to another.
pub(crate) enum Socket {
    Unix(std::os::unix::net::UnixStream),
    Tcp(std::net::TcpStream),
}

impl std::os::fd::AsRawFd for Socket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Socket::Unix(s) => s.as_raw_fd(),
            Socket::Tcp(s) => s.as_raw_fd(),
        }
    }
}

impl Socket {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        use std::io::Read;
        match self {
            Socket::Unix(s) => (&*s).read(buf),
            Socket::Tcp(s) => (&*s).read(buf),
        }
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        use std::io::Write;
        match self {
            Socket::Unix(s) => (&*s).write(buf),
            Socket::Tcp(s) => (&*s).write(buf),
        }
    }

    fn try_clone(&self) -> io::Result<Socket> {
        Ok(match self {
            Socket::Unix(s) => Socket::Unix(s.try_clone()?),
            Socket::Tcp(s) => Socket::Tcp(s.try_clone()?),
        })
    }

    fn shutdown_write(&self) {
        let _ = match self {
            Socket::Unix(s) => s.shutdown(std::net::Shutdown::Write),
            Socket::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
        };
    }

    /// Splits the socket (made non-blocking) into its halves, on the current runtime.
    ///
    /// Only the read half is registered with the runtime's poller, and for reading only: a
    /// socket registered for writing too wakes its process's I/O thread each time the peer
    /// reads (the kernel signals room to write), which on a synchronous call is a wasted
    /// thread switch at each end. The write half is written without waiting (see
    /// [`FrameSink::direct`]) and registers for writing only while a write waits for room.
    pub fn split(self) -> io::Result<(ReadHalf, WriteHalf)> {
        match &self {
            Socket::Unix(s) => s.set_nonblocking(true)?,
            Socket::Tcp(s) => s.set_nonblocking(true)?,
        }
        let socket = Arc::new(self);
        let read = register(socket.clone(), tokio::io::Interest::READABLE)?;
        Ok((ReadHalf(read), WriteHalf(socket)))
    }
}

/// Registers `socket` with the current runtime's poller for `interest` only.
fn register<S: std::os::fd::AsRawFd>(
    socket: S,
    interest: tokio::io::Interest,
) -> io::Result<tokio::io::unix::AsyncFd<S>> {
    // SAFETY: `S` is a `Socket` or an `Arc` of one, which owns its descriptor: it stays open
    // and the same for as long as the `AsyncFd` holds it.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(socket, interest) }
        .map_err(|e| e.into_parts().1)
}

/// The read half of a [`Socket`], registered with the runtime for reading only.
pub(crate) struct ReadHalf(tokio::io::unix::AsyncFd<Arc<Socket>>);

impl tokio::io::AsyncRead for ReadHalf {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        loop {
            let mut ready = std::task::ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match ready.try_io(|socket| socket.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return std::task::Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return std::task::Poll::Ready(Err(e)),
                Err(_would_block) => {}
            }
        }
    }
}

/// The write half of a [`Socket`]: written without waiting; not registered with the runtime
/// except while a write waits for room.
pub(crate) struct WriteHalf(Arc<Socket>);

impl WriteHalf {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    /// Waits until the socket has room to write. Registers a duplicate of its descriptor for
    /// writing meanwhile (the read half holds the socket's own registration).
    async fn writable(&self) -> io::Result<()> {
        let dup = register(self.0.try_clone()?, tokio::io::Interest::WRITABLE)?;
        let _ready = dup.writable().await?;
        Ok(())
    }

    /// Writes all of `buf`, waiting for room as needed (the greeting, before any frame).
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.try_write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable().await?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A socket written by its senders and, for what they could not write at once, by its
/// flusher task.
pub(crate) struct Direct {
    half: WriteHalf,
    /// Held only around non-blocking writes, never across an await.
    state: Mutex<DirectState>,
    /// Wakes the flusher: bytes are left to write, or the senders are gone.
    flush: tokio::sync::Notify,
}

struct DirectState {
    /// Encoded frames not yet written, in order. Whoever writes takes the lock and writes
    /// from the front, so bytes never leave out of order. Non-empty means the flusher was
    /// told to write (or a sender with [`Flush::Now`] is writing).
    buf: Vec<u8>,
    /// Some sender is alive.
    open: bool,
    /// A write failed: the connection is broken.
    failed: Option<io::ErrorKind>,
}

/// Held by every clone of a [`FrameSink::Direct`]: when the last goes, the flusher writes
/// what is left and ends, closing the socket's write half.
pub(crate) struct SinkGuard(Arc<Direct>);

impl Drop for SinkGuard {
    fn drop(&mut self) {
        self.0.state.lock().open = false;
        self.0.flush.notify_one();
    }
}

impl Direct {
    fn send<M: Message>(&self, msg: &M, flush: Flush) -> Result<(), Closed> {
        let mut st = self.state.lock();
        if st.failed.is_some() {
            return Err(Closed);
        }
        let idle = st.buf.is_empty();
        encode_frame(msg, &mut st.buf);
        if flush == Flush::Soon {
            if idle {
                self.flush.notify_one();
            } // Else the flusher was told already, and writes it after what is ahead of it.
            return Ok(());
        }
        match self.write_some(&mut st) {
            Ok(()) if st.buf.is_empty() => {}
            Ok(()) => self.flush.notify_one(),
            Err(e) => {
                // The frame is lost with the connection: the flusher reports the error.
                st.failed = Some(e.kind());
                st.buf.clear();
                self.flush.notify_one();
            }
        }
        Ok(())
    }

    /// Writes as much of `st.buf` as the socket takes without blocking.
    fn write_some(&self, st: &mut DirectState) -> io::Result<()> {
        let mut written = 0;
        let result = loop {
            if written == st.buf.len() {
                break Ok(());
            }
            match self.half.try_write(&st.buf[written..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        st.buf.drain(..written);
        if st.buf.is_empty() && st.buf.capacity() > 1 << 20 {
            st.buf = Vec::new(); // A burst went out: do not keep its buffer.
        }
        result
    }

    /// Writes what senders left, as the socket becomes writable, until they are all gone
    /// and everything is written (`Ok`) or a write fails.
    async fn flusher(&self) -> io::Result<()> {
        loop {
            let blocked = {
                let mut st = self.state.lock();
                if let Some(kind) = st.failed {
                    return Err(kind.into());
                }
                if st.buf.is_empty() {
                    if !st.open {
                        // Every sender is gone: the peer reads the end of the stream.
                        self.half.0.shutdown_write();
                        return Ok(());
                    }
                    false
                } else {
                    if let Err(e) = self.write_some(&mut st) {
                        st.failed = Some(e.kind());
                        st.buf.clear();
                        return Err(e);
                    }
                    !st.buf.is_empty()
                }
            };
            if blocked {
                self.half.writable().await?;
            } else {
                self.flush.notified().await;
            }
        }
    }
}

/// Reads one frame of at most `max_len` bytes; `Ok(None)` at a clean end of stream. The
/// buffer grows as bytes arrive, so a peer's claimed length costs nothing until it is sent.
pub(crate) async fn read_frame<M: Message + Default, R: AsyncRead + Unpin>(
    r: &mut R,
    scratch: &mut Vec<u8>,
    max_len: usize,
) -> io::Result<Option<M>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > max_len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {max_len}"),
        ));
    }
    scratch.clear();
    let read = r.take(len as u64).read_to_end(scratch).await?;
    if read != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    M::decode(&scratch[..])
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads frames of at most [`ray_proto::MAX_MESSAGE_BYTES`] and hands each to `deliver`
/// until the stream ends cleanly (`Ok`) or `deliver` returns `false` (`Ok`: the receiver is
/// gone); a broken or malformed stream is an error. Both ends of a task connection read with
/// it.
pub(crate) async fn read_frames<M: Message + Default, R: AsyncRead + Unpin>(
    r: &mut R,
    scratch: &mut Vec<u8>,
    mut deliver: impl FnMut(M) -> bool,
) -> io::Result<()> {
    while let Some(frame) = read_frame::<M, R>(r, scratch, ray_proto::MAX_MESSAGE_BYTES).await? {
        if !deliver(frame) {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_direct_sink_keeps_order_through_a_full_socket_and_ends_the_stream() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (_, write) = Socket::Unix(a).split().unwrap();
        let (read, _keep) = Socket::Unix(b).split().unwrap();
        let sink = FrameSink::<ray_proto::Hello>::direct(write, |e| panic!("write failed: {e}"));
        // Frames larger than the socket's buffer, sent from another thread both ways: many
        // writes find the socket full and leave the rest to the flusher.
        let sender = sink.clone();
        let sending = std::thread::spawn(move || {
            for i in 0..200u32 {
                let token = format!("{i:06}").repeat(20_000);
                let flush = if i % 3 == 0 { Flush::Soon } else { Flush::Now };
                sender.send(ray_proto::Hello { token }, flush).unwrap();
            }
        });
        let mut r = tokio::io::BufReader::new(read);
        let mut scratch = Vec::new();
        let mut seen = 0u32;
        let reading = tokio::spawn(async move {
            read_frames(&mut r, &mut scratch, |h: ray_proto::Hello| {
                assert_eq!(&h.token[..6], format!("{seen:06}"));
                assert_eq!(h.token.len(), 120_000);
                seen += 1;
                true
            })
            .await
            .unwrap();
            seen
        });
        sending.join().unwrap();
        drop(sink); // The last sender: the flusher writes what is left and ends the stream.
        assert_eq!(reading.await.unwrap(), 200);
    }

    #[tokio::test]
    async fn frames_round_trip_and_bad_frames_are_errors() {
        let mut buf = Vec::new();
        encode_frame(&ray_proto::Hello { token: "t".into() }, &mut buf);
        encode_frame(&ray_proto::Hello { token: "u".into() }, &mut buf);
        let mut r = &buf[..];
        let mut scratch = Vec::new();
        let a: ray_proto::Hello = read_frame(&mut r, &mut scratch, 1 << 20)
            .await
            .unwrap()
            .unwrap();
        let b: ray_proto::Hello = read_frame(&mut r, &mut scratch, 1 << 20)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((a.token.as_str(), b.token.as_str()), ("t", "u"));
        assert!(
            read_frame::<ray_proto::Hello, _>(&mut r, &mut scratch, 1 << 20)
                .await
                .unwrap()
                .is_none()
        );
        let huge = (u32::MAX).to_le_bytes();
        assert!(
            read_frame::<ray_proto::Hello, _>(&mut &huge[..], &mut scratch, 1 << 20)
                .await
                .is_err()
        );
        let garbage = [3u8, 0, 0, 0, 0xff, 0xff, 0xff];
        assert!(
            read_frame::<ray_proto::Hello, _>(&mut &garbage[..], &mut scratch, 1 << 20)
                .await
                .is_err()
        );
    }
}
