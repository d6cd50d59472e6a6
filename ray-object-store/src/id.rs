//! Object identifiers.

use std::fmt;
use std::str::FromStr;

/// The 16-byte identifier of an object in the store.
///
/// `Debug` and `Display` both print 32 lowercase hex digits; [`ObjectId::from_hex`] parses
/// them back (upper- or lowercase).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ObjectId(pub [u8; 16]);

impl ObjectId {
    /// The number of bytes in an id.
    pub const SIZE: usize = 16;

    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        ObjectId(bytes)
    }

    /// The id's raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses exactly 32 hex digits; `None` for any other input.
    pub fn from_hex(s: &str) -> Option<Self> {
        let s = s.as_bytes();
        if s.len() != 2 * Self::SIZE {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            out[i] = (hex_val(pair[0])? << 4) | hex_val(pair[1])?;
        }
        Some(ObjectId(out))
    }

    /// The id as 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<[u8; 16]> for ObjectId {
    fn from(bytes: [u8; 16]) -> Self {
        ObjectId(bytes)
    }
}

/// The error of parsing an [`ObjectId`] from a string that is not 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid object id {0:?}: expected 32 hex digits")]
pub struct ParseObjectIdError(pub String);

impl FromStr for ObjectId {
    type Err = ParseObjectIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ObjectId::from_hex(s).ok_or_else(|| ParseObjectIdError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let mut b = [0u8; 16];
        for (i, x) in b.iter_mut().enumerate() {
            *x = (i as u8).wrapping_mul(37).wrapping_add(0xa0);
        }
        let id = ObjectId(b);
        let s = id.to_string();
        assert_eq!(s.len(), 32);
        assert_eq!(s, s.to_lowercase());
        assert_eq!(format!("{id:?}"), s);
        assert_eq!(ObjectId::from_hex(&s), Some(id));
        assert_eq!(ObjectId::from_hex(&s.to_uppercase()), Some(id));
        assert_eq!(s.parse::<ObjectId>(), Ok(id));
        assert_eq!(id.as_bytes(), &b);
    }

    #[test]
    fn bad_hex_rejected() {
        assert_eq!(ObjectId::from_hex(""), None);
        assert_eq!(ObjectId::from_hex(&"0".repeat(31)), None);
        assert_eq!(ObjectId::from_hex(&"0".repeat(33)), None);
        assert_eq!(ObjectId::from_hex(&format!("{}g", "0".repeat(31))), None);
        // Multi-byte characters must not panic.
        assert_eq!(ObjectId::from_hex(&format!("{}é", "0".repeat(30))), None);
        assert!("xyz".parse::<ObjectId>().is_err());
    }
}
