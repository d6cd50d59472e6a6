//! Jobs' binaries, content-addressed: a driver uploads its executable once (`UploadBinary`,
//! checked against the SHA-256 it names before it is kept), nodes on other machines download
//! it (`DownloadBinary`) to run the job's workers. Kept under the head's temp dir as
//! `binaries/<sha256>`; a second job with the same binary uploads nothing.
//!
//! Invariant: a file under its hash's name holds bytes with that hash (written to a partial
//! file, hashed as it arrives, renamed only when the hash matches).

use crate::GcsService;
use ray_proto::{BinaryChunk, BinaryRequest, Empty, HasBinaryReply};
use std::io::Write;
use std::path::PathBuf;
use tokio_stream::StreamExt;
use tonic::{Status, Streaming};

/// Bytes per chunk of a download.
const CHUNK: usize = 4 << 20;

impl GcsService {
    fn binary_dir(&self) -> Result<&PathBuf, Status> {
        self.inner
            .binaries
            .as_ref()
            .ok_or_else(|| Status::failed_precondition("this GCS keeps no binaries"))
    }

    fn binary_path(&self, sha256: &str) -> Result<PathBuf, Status> {
        if !ray_common::sha256::is_hash(sha256) {
            return Err(Status::invalid_argument(format!(
                "`{sha256}` is not a SHA-256 in lowercase hex"
            )));
        }
        Ok(self.binary_dir()?.join(sha256))
    }

    pub(crate) fn has_binary(&self, req: BinaryRequest) -> Result<HasBinaryReply, Status> {
        Ok(HasBinaryReply {
            present: self.binary_path(&req.sha256)?.exists(),
        })
    }

    pub(crate) async fn upload_binary(
        &self,
        mut chunks: Streaming<BinaryChunk>,
    ) -> Result<Empty, Status> {
        let first = chunks
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("an upload without chunks"))??;
        let path = self.binary_path(&first.sha256)?;
        if path.exists() {
            return Ok(Empty {});
        }
        let dir = self.binary_dir()?.clone();
        std::fs::create_dir_all(&dir).map_err(|e| Status::internal(e.to_string()))?;
        let partial = dir.join(format!(
            ".{}.partial-{}",
            first.sha256,
            ray_common::ids::hex(&ray_common::ids::random_bytes())
        ));
        let written = async {
            let mut file =
                std::fs::File::create(&partial).map_err(|e| Status::internal(e.to_string()))?;
            let mut hasher = ray_common::sha256::Hasher::default();
            let mut received = 0u64;
            let mut chunk = Some(first.clone());
            while let Some(c) = chunk {
                hasher.update(&c.data);
                file.write_all(&c.data)
                    .map_err(|e| Status::internal(e.to_string()))?;
                received += c.data.len() as u64;
                if received > first.size {
                    return Err(Status::invalid_argument("more bytes than the size given"));
                }
                chunk = chunks.next().await.transpose()?;
            }
            let hash = hasher.finish();
            if received != first.size || hash != first.sha256 {
                return Err(Status::invalid_argument(format!(
                    "the upload does not match: {received} bytes hashing to {hash}, announced \
                     {} bytes hashing to {}",
                    first.size, first.sha256
                )));
            }
            std::fs::rename(&partial, &path).map_err(|e| Status::internal(e.to_string()))
        }
        .await;
        if written.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        written?;
        tracing::info!(sha256 = %first.sha256, size = first.size, "binary uploaded");
        Ok(Empty {})
    }

    pub(crate) fn download_binary(
        &self,
        req: BinaryRequest,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<BinaryChunk, Status>>, Status> {
        let path = self.binary_path(&req.sha256)?;
        let mut file = std::fs::File::open(&path)
            .map_err(|_| Status::not_found(format!("no binary {}", req.sha256)))?;
        let size = file
            .metadata()
            .map_err(|e| Status::internal(e.to_string()))?
            .len();
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let sha256 = req.sha256;
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = match file.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::internal(e.to_string())));
                        return;
                    }
                };
                if n == 0 {
                    return;
                }
                let chunk = BinaryChunk {
                    sha256: sha256.clone(),
                    size,
                    data: buf[..n].to_vec().into(),
                };
                if tx.blocking_send(Ok(chunk)).is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }
}
