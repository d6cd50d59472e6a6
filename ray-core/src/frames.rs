//! Length-prefixed protobuf frames on a byte stream: the data plane between a core worker and
//! a leased worker. A frame is a little-endian `u32` length and that many bytes of message.
//! Readers refuse frames above [`ray_proto::MAX_MESSAGE_BYTES`] and malformed messages with an
//! error, never a panic.

use prost::Message;
use std::io;
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
