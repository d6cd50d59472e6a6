//! The wire of a pull's bulk path: one byte range of an object per plain TCP connection to the
//! node manager's port (beside gRPC, told apart by its first bytes), asked with the session
//! token, answered, then sent raw: the source writes the arena into the socket and the puller
//! reads the socket into its arena, with no framing or buffer copy between.
//!
//! Invariant: no byte of an object is sent before the asker's token has been checked.

use prost::Message;
use ray_common::rpc::server::BULK_MAGIC;
use ray_common::Clock;
use ray_proto::{BulkAnswer, BulkAsk};
use std::io::{Error, ErrorKind};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest ask or answer accepted (they hold a token, an id and a few numbers).
const MAX_MESSAGE: u32 = 8 << 10;
/// How long an ask, or its answer, may take to arrive.
pub(crate) const ASK_DEADLINE: Duration = Duration::from_secs(10);
/// How long connecting to the source may take.
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);
/// Bytes written (or read) between two checks of the deadline.
const PIECE: usize = 4 << 20;

/// Reads one length-prefixed message.
async fn read_message<M: Message + Default>(
    stream: &mut (impl AsyncRead + Unpin),
) -> std::io::Result<M> {
    let len = stream.read_u32_le().await?;
    if len > MAX_MESSAGE {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("a {len}-byte message (at most {MAX_MESSAGE})"),
        ));
    }
    let mut buf = vec![0; len as usize];
    stream.read_exact(&mut buf).await?;
    M::decode(&buf[..]).map_err(|e| Error::new(ErrorKind::InvalidData, e))
}

/// Writes one length-prefixed message, after `prefix`.
async fn write_message(
    stream: &mut (impl AsyncWrite + Unpin),
    prefix: &[u8],
    message: &impl Message,
) -> std::io::Result<()> {
    let body = message.encode_to_vec();
    let mut buf = Vec::with_capacity(prefix.len() + 4 + body.len());
    buf.extend_from_slice(prefix);
    buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
    buf.extend_from_slice(&body);
    stream.write_all(&buf).await
}

/// The ask on a connection the server handed over (its magic still unread).
pub(crate) async fn read_ask(stream: &mut (impl AsyncRead + Unpin)) -> std::io::Result<BulkAsk> {
    let mut magic = [0u8; BULK_MAGIC.len()];
    stream.read_exact(&mut magic).await?;
    if &magic != BULK_MAGIC {
        return Err(Error::new(ErrorKind::InvalidData, "not a bulk connection"));
    }
    read_message(stream).await
}

/// Answers an ask, within [`ASK_DEADLINE`]: `code` (OK, or why not), the object's size.
pub(crate) async fn answer(
    stream: &mut (impl AsyncWrite + Unpin),
    code: tonic::Code,
    object_size: u64,
    message: String,
    clock: &Clock,
) -> std::io::Result<()> {
    let answer = BulkAnswer {
        code: code as i32,
        object_size,
        message,
    };
    clock
        .timeout(ASK_DEADLINE, write_message(stream, &[], &answer))
        .await
        .map_err(|_| Error::new(ErrorKind::TimedOut, "the asker stopped reading"))?
}

/// Writes `bytes` raw, each piece within `deadline`.
pub(crate) async fn send(
    stream: &mut (impl AsyncWrite + Unpin),
    bytes: &[u8],
    clock: &Clock,
    deadline: Duration,
) -> std::io::Result<()> {
    for piece in bytes.chunks(PIECE) {
        clock
            .timeout(deadline, stream.write_all(piece))
            .await
            .map_err(|_| Error::new(ErrorKind::TimedOut, "the puller stopped reading"))??;
    }
    clock
        .timeout(deadline, stream.flush())
        .await
        .map_err(|_| Error::new(ErrorKind::TimedOut, "the puller stopped reading"))?
}

/// Connects to the node manager at `address` and asks for `ask`'s range; returns the
/// connection, positioned at the range's first byte, and the object's size. A refusal is an
/// error carrying the source's reason.
pub(crate) async fn open(
    address: &str,
    ask: &BulkAsk,
    clock: &Clock,
) -> std::io::Result<(tokio::net::TcpStream, u64)> {
    let mut stream = clock
        .timeout(CONNECT_DEADLINE, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| Error::new(ErrorKind::TimedOut, format!("connecting to {address}")))??;
    let answer = clock
        .timeout(ASK_DEADLINE, async {
            write_message(&mut stream, BULK_MAGIC, ask).await?;
            read_message::<BulkAnswer>(&mut stream).await
        })
        .await
        .map_err(|_| Error::new(ErrorKind::TimedOut, format!("no answer from {address}")))??;
    if answer.code != tonic::Code::Ok as i32 {
        let code = tonic::Code::from_i32(answer.code);
        return Err(Error::other(format!(
            "{address} refused the range ({code:?}): {}",
            answer.message
        )));
    }
    Ok((stream, answer.object_size))
}

/// Fills `into` from `stream`, each piece within `deadline`; an error if the stream ends
/// first.
pub(crate) async fn receive(
    stream: &mut (impl AsyncRead + Unpin),
    into: &mut [u8],
    clock: &Clock,
    deadline: Duration,
) -> std::io::Result<()> {
    for piece in into.chunks_mut(PIECE) {
        clock
            .timeout(deadline, stream.read_exact(piece))
            .await
            .map_err(|_| Error::new(ErrorKind::TimedOut, "the source stopped sending"))??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_ask_and_its_answer_cross_a_stream() {
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        let ask = BulkAsk {
            token: "t".into(),
            object_id: vec![1; 16].into(),
            offset: 5,
            length: 7,
        };
        write_message(&mut client, BULK_MAGIC, &ask).await.unwrap();
        assert_eq!(read_ask(&mut server).await.unwrap(), ask);
        answer(
            &mut server,
            tonic::Code::NotFound,
            3,
            "gone".into(),
            &Clock::Real,
        )
        .await
        .unwrap();
        let got: BulkAnswer = read_message(&mut client).await.unwrap();
        assert_eq!(got.code, tonic::Code::NotFound as i32);
        assert_eq!(got.message, "gone");
    }

    #[tokio::test]
    async fn an_oversized_ask_is_refused_before_it_is_read() {
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        client.write_all(BULK_MAGIC).await.unwrap();
        client.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
        let e = read_ask(&mut server).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn a_range_that_stops_short_is_an_error() {
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        let clock = Clock::Real;
        send(&mut server, &[9; 100], &clock, Duration::from_secs(5))
            .await
            .unwrap();
        drop(server);
        let mut into = [0u8; 101];
        let e = receive(&mut client, &mut into, &clock, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
    }
}
