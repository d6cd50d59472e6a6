//! The one place values are encoded and decoded: postcard, a maintained, compact serde format.
//!
//! Every argument, return value and `put` goes through [`encode`] once; every `get` through
//! [`decode`]. Decoding malformed bytes is a typed error, never a panic, and never allocates
//! more than the input can justify (serde's sequence size hints are capped).

use crate::error::Error;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Encodes `value` into a fresh buffer.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    postcard::to_allocvec(value).map_err(|e| Error::Serialization(e.to_string()))
}

/// Decodes a whole buffer; trailing bytes are an error (they mean a type mismatch).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| Error::Serialization(e.to_string()))?;
    if !rest.is_empty() {
        return Err(Error::Serialization(format!(
            "{} trailing bytes: the value was not encoded as this type",
            rest.len()
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_malformed_input() {
        let v = (1u64, "two".to_string(), vec![3.0f64, 4.0]);
        let bytes = encode(&v).unwrap();
        assert_eq!(decode::<(u64, String, Vec<f64>)>(&bytes).unwrap(), v);
        assert!(matches!(
            decode::<String>(&[0xff, 0xff, 0xff]),
            Err(Error::Serialization(_))
        ));
        assert!(matches!(decode::<u8>(&bytes), Err(Error::Serialization(_))));
        // A length prefix claiming far more elements than the input holds.
        assert!(decode::<Vec<u64>>(&[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }
}
