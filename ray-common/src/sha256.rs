//! Content addresses of files (a job's binary): SHA-256 in lowercase hex.

use sha2::{Digest, Sha256};
use std::io::Read;

/// The SHA-256 of a file's bytes, in hex.
pub fn file(path: &std::path::Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(crate::ids::hex(&hasher.finalize()))
}

/// A hash being computed over bytes as they arrive.
#[derive(Default)]
pub struct Hasher(Sha256);

impl Hasher {
    /// Adds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The hash of everything added, in hex.
    pub fn finish(self) -> String {
        crate::ids::hex(&self.0.finalize())
    }
}

/// Whether `text` looks like a SHA-256 in hex (so it may name a file).
pub fn is_hash(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// How much of a binary one `UploadBinary` chunk carries.
pub const UPLOAD_CHUNK: usize = 4 << 20;

/// The chunks that upload `data`, a binary whose hash is `sha256` (each names the hash and
/// the whole size; an empty binary is one empty chunk).
pub fn upload_chunks(sha256: &str, data: tonic::codegen::Bytes) -> Vec<ray_proto::BinaryChunk> {
    let size = data.len() as u64;
    (0..data.len().max(1))
        .step_by(UPLOAD_CHUNK)
        .map(|at| ray_proto::BinaryChunk {
            sha256: sha256.to_string(),
            size,
            data: data.slice(at..(at + UPLOAD_CHUNK).min(data.len())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hashes_match_the_standard_vector() {
        let mut h = super::Hasher::default();
        h.update(b"abc");
        let hex = h.finish();
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(super::is_hash(&hex));
        assert!(!super::is_hash("../etc/passwd"));
    }
}
