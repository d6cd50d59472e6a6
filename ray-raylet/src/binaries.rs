//! Shipped job binaries on this node: a job whose driver shipped its executable
//! (`JobConfig.binary_sha256`) runs its workers from this node's copy, downloaded from the
//! GCS the first time a worker of the job is needed, checked against its SHA-256 before it
//! is used (a copy that does not match is refused and fetched again), executable, and kept
//! under its hash, so a second job with the same binary transfers nothing.

use crate::pool::{LeaseError, NodeManager};
use ray_proto::JobConfig;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;

/// A download whose next chunk does not come within this long fails.
const CHUNK_DEADLINE: Duration = Duration::from_secs(30);

impl NodeManager {
    /// `job` as this node runs it: with its program replaced by this node's checked copy if
    /// the job's binary is shipped.
    pub(crate) async fn with_local_program(
        &self,
        job: Arc<JobConfig>,
    ) -> Result<Arc<JobConfig>, LeaseError> {
        if self.inner.config.binary_cache.is_none() || job.binary_sha256.is_empty() {
            return Ok(job);
        }
        let path = self.local_binary(&job.binary_sha256).await?;
        let mut local = (*job).clone();
        local.program = path.display().to_string();
        Ok(Arc::new(local))
    }

    /// This node's checked, executable copy of the shipped binary `sha` (fetched from the
    /// GCS if it has none): what a job's workers, or a submitted job's driver, run.
    pub async fn local_binary(&self, sha: &str) -> Result<PathBuf, LeaseError> {
        let Some(cache) = self.inner.config.binary_cache.clone() else {
            return Err(LeaseError::Spawn("this node keeps no binaries".into()));
        };
        let sha = sha.to_string();
        if !ray_common::sha256::is_hash(&sha) {
            return Err(LeaseError::Spawn(format!("`{sha}` is not a binary's hash")));
        }
        // One download at a time: two jobs of one binary fetch it once.
        let _one = self.inner.downloads.lock().await;
        let path = cache.join(&sha);
        let checked = {
            let (path, sha) = (path.clone(), sha.clone());
            tokio::task::spawn_blocking(move || matches_hash(&path, &sha))
                .await
                .unwrap_or(false)
        };
        if !checked {
            if tokio::fs::try_exists(&path).await.unwrap_or(false) {
                tracing::warn!(path = %path.display(), "a cached binary does not match its hash; fetching it again");
                let _ = tokio::fs::remove_file(&path).await;
            }
            self.download(&sha, &cache, &path).await?;
        }
        Ok(path)
    }

    async fn download(&self, sha: &str, cache: &Path, path: &Path) -> Result<(), LeaseError> {
        let fail =
            |why: String| LeaseError::Spawn(format!("fetching the job's binary {sha}: {why}"));
        let gcs = self
            .gcs()
            .ok_or_else(|| fail("no client of the GCS".into()))?;
        tokio::fs::create_dir_all(cache)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut stream = gcs
            .download_binary(ray_proto::BinaryRequest {
                sha256: sha.to_string(),
            })
            .await
            .map_err(|e| fail(e.to_string()))?;
        let partial: PathBuf = cache.join(format!(
            ".{sha}.partial-{}",
            ray_common::ids::hex(&ray_common::ids::random_bytes())
        ));
        let clock = self.inner.connect.clock();
        // File I/O through tokio's blocking pool: a large binary must not hold a runtime
        // thread that lease requests and pulls share.
        let written = async {
            let mut file = tokio::fs::File::create(&partial)
                .await
                .map_err(|e| fail(e.to_string()))?;
            let mut hasher = ray_common::sha256::Hasher::default();
            loop {
                let next = clock.timeout(CHUNK_DEADLINE, stream.next()).await;
                let chunk = match next {
                    Ok(Some(chunk)) => chunk.map_err(|e| fail(e.to_string()))?,
                    Ok(None) => break,
                    Err(_) => return Err(fail(format!("no chunk came within {CHUNK_DEADLINE:?}"))),
                };
                hasher.update(&chunk.data);
                file.write_all(&chunk.data)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
            }
            let hash = hasher.finish();
            if hash != sha {
                return Err(fail(format!("the bytes received hash to {hash}")));
            }
            file.set_permissions(std::fs::Permissions::from_mode(0o755))
                .await
                .map_err(|e| fail(e.to_string()))?;
            file.sync_all().await.map_err(|e| fail(e.to_string()))?;
            drop(file);
            tokio::fs::rename(&partial, path)
                .await
                .map_err(|e| fail(e.to_string()))
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        if written.is_ok() {
            self.inner
                .binaries_fetched
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(sha256 = %sha, path = %path.display(), "job binary fetched");
        }
        written
    }

    /// Binaries this node downloaded so far.
    pub fn binaries_fetched(&self) -> u64 {
        self.inner
            .binaries_fetched
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Whether the file at `path` exists and hashes to `sha`.
fn matches_hash(path: &Path, sha: &str) -> bool {
    ray_common::sha256::file(path).is_ok_and(|h| h == sha)
}
