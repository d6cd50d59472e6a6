//! The cluster's auth token: every server of every node refuses a call without it.
//!
//! Found, as Ray finds its own, in `RAY_AUTH_TOKEN`, else in the file `~/.rayrs/auth_token`
//! (mode 0600), which `rayrs start --head` creates when there is none. A token is printable
//! ASCII without spaces, at least 16 characters.

use crate::NodeError;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

/// The environment variable that holds the token (it wins over the file).
pub const TOKEN_ENV: &str = "RAY_AUTH_TOKEN";

/// Shortest token accepted: one a peer cannot guess.
const MIN_LEN: usize = 16;

/// `~/.rayrs/auth_token`, or `None` without a home directory.
pub fn token_path() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".rayrs").join("auth_token"))
}

/// The token from `RAY_AUTH_TOKEN` or the token file; `Ok(None)` if there is neither. A
/// token that is set but unusable (empty, too short, unreadable file) is an error, never
/// silently replaced.
pub fn find() -> Result<Option<String>, NodeError> {
    if let Some(value) = std::env::var_os(TOKEN_ENV) {
        let value = value
            .into_string()
            .map_err(|_| NodeError::Token(format!("{TOKEN_ENV} is not valid text")))?;
        return check(value.trim(), TOKEN_ENV).map(Some);
    }
    let Some(path) = token_path() else {
        return Ok(None);
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => check(text.trim(), &path.display().to_string()).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NodeError::Token(format!(
            "reading the auth token from {}: {e}",
            path.display()
        ))),
    }
}

/// The token, which a node or driver joining a cluster must have.
pub fn required() -> Result<String, NodeError> {
    find()?.ok_or_else(|| {
        let file =
            token_path().map_or_else(|| "~/.rayrs/auth_token".into(), |p| p.display().to_string());
        NodeError::Token(format!(
            "no auth token: set {TOKEN_ENV} or write the head's token to {file} \
             (`rayrs get-auth-token` on the head prints it)"
        ))
    })
}

/// The token, creating the token file with a fresh one if there is none (what the head
/// does). Returns the token and whether it was created.
pub fn find_or_create() -> Result<(String, bool), NodeError> {
    if let Some(token) = find()? {
        return Ok((token, false));
    }
    let path = token_path().ok_or_else(|| {
        NodeError::Token(format!(
            "no home directory to keep the auth token in: set {TOKEN_ENV}"
        ))
    })?;
    let token = generate();
    let written = (|| {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        // create_new: two heads started at once must not overwrite each other's token.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(format!("{token}\n").as_bytes())
    })();
    match written {
        Ok(()) => Ok((token, true)),
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => required().map(|t| (t, false)),
        Err(e) => Err(NodeError::Token(format!(
            "writing the auth token to {}: {e}",
            path.display()
        ))),
    }
}

/// A fresh token: 256 random bits in hex.
pub fn generate() -> String {
    let a = ray_common::ids::random_bytes();
    let b = ray_common::ids::random_bytes();
    format!("{}{}", ray_common::ids::hex(&a), ray_common::ids::hex(&b))
}

fn check(token: &str, from: &str) -> Result<String, NodeError> {
    if token.len() < MIN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(NodeError::Token(format!(
            "the auth token in {from} is not usable: it must be at least {MIN_LEN} printable \
             characters without spaces"
        )));
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_usable_and_distinct() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert_eq!(check(&a, "test").unwrap(), a);
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn short_or_spaced_tokens_are_refused() {
        assert!(check("short", "test").is_err());
        assert!(check("has a space in it, sadly", "test").is_err());
        assert!(check("", "test").is_err());
    }
}
