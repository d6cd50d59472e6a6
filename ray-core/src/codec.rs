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

/// The length [`encode`] would give `value`, found without writing it.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<usize, Error> {
    postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .map_err(|e| Error::Serialization(e.to_string()))
}

/// Encodes `value` into `buf`, which must be exactly [`encoded_len`] bytes long.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, buf: &mut [u8]) -> Result<(), Error> {
    let len = buf.len();
    let written = postcard::to_slice(value, buf)
        .map_err(|e| Error::Serialization(e.to_string()))?
        .len();
    if written != len {
        return Err(Error::Serialization(format!(
            "the value encoded to {written} bytes, not the {len} measured"
        )));
    }
    Ok(())
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

/// Decodes a plain array (the raw bytes of `&[E]` where `E` is `elem_size` bytes, written by
/// `ray::put_slice`) as `T`: a sequence whose elements are primitives, or tuples and structs
/// of them, read in native byte order.
pub fn decode_raw<T: DeserializeOwned>(bytes: &[u8], elem_size: usize) -> Result<T, Error> {
    if elem_size == 0 || !bytes.len().is_multiple_of(elem_size) {
        return Err(Error::Serialization(format!(
            "{} bytes are not an array of {elem_size}-byte elements",
            bytes.len()
        )));
    }
    let mut reader = raw::Reader {
        bytes,
        elems: bytes.len() / elem_size,
    };
    let value = T::deserialize(&mut reader).map_err(|e| Error::Serialization(e.0))?;
    if !reader.bytes.is_empty() {
        return Err(Error::Serialization(
            "a plain array was read as a type of another size".into(),
        ));
    }
    Ok(value)
}

mod raw {
    use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};

    #[derive(Debug)]
    pub struct RawError(pub String);
    impl std::fmt::Display for RawError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for RawError {}
    impl de::Error for RawError {
        fn custom<T: std::fmt::Display>(msg: T) -> Self {
            RawError(msg.to_string())
        }
    }

    pub struct Reader<'de> {
        pub bytes: &'de [u8],
        /// Elements left at the top level (the array's length).
        pub elems: usize,
    }

    impl<'de> Reader<'de> {
        fn take<const N: usize>(&mut self) -> Result<[u8; N], RawError> {
            if self.bytes.len() < N {
                return Err(RawError("a plain array ended inside an element".into()));
            }
            let (head, rest) = self.bytes.split_at(N);
            self.bytes = rest;
            Ok(head.try_into().expect("split at N"))
        }
    }

    struct Fields<'a, 'de> {
        reader: &'a mut Reader<'de>,
        left: usize,
    }

    impl<'de> SeqAccess<'de> for Fields<'_, 'de> {
        type Error = RawError;
        fn next_element_seed<S: DeserializeSeed<'de>>(
            &mut self,
            seed: S,
        ) -> Result<Option<S::Value>, RawError> {
            if self.left == 0 {
                return Ok(None);
            }
            self.left -= 1;
            seed.deserialize(&mut *self.reader).map(Some)
        }
        fn size_hint(&self) -> Option<usize> {
            Some(self.left)
        }
    }

    macro_rules! primitive {
        ($($method:ident $visit:ident $t:ty;)*) => {$(
            fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, RawError> {
                v.$visit(<$t>::from_ne_bytes(self.take::<{ std::mem::size_of::<$t>() }>()?))
            }
        )*};
    }

    impl<'de> de::Deserializer<'de> for &mut Reader<'de> {
        type Error = RawError;

        primitive! {
            deserialize_u8 visit_u8 u8; deserialize_i8 visit_i8 i8;
            deserialize_u16 visit_u16 u16; deserialize_i16 visit_i16 i16;
            deserialize_u32 visit_u32 u32; deserialize_i32 visit_i32 i32;
            deserialize_u64 visit_u64 u64; deserialize_i64 visit_i64 i64;
            deserialize_u128 visit_u128 u128; deserialize_i128 visit_i128 i128;
            deserialize_f32 visit_f32 f32; deserialize_f64 visit_f64 f64;
        }

        fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, RawError> {
            let left = std::mem::take(&mut self.elems);
            v.visit_seq(Fields { reader: self, left })
        }

        fn deserialize_tuple<V: Visitor<'de>>(
            self,
            len: usize,
            v: V,
        ) -> Result<V::Value, RawError> {
            v.visit_seq(Fields {
                reader: self,
                left: len,
            })
        }

        fn deserialize_tuple_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            len: usize,
            v: V,
        ) -> Result<V::Value, RawError> {
            self.deserialize_tuple(len, v)
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            v: V,
        ) -> Result<V::Value, RawError> {
            self.deserialize_tuple(fields.len(), v)
        }

        fn deserialize_newtype_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            v: V,
        ) -> Result<V::Value, RawError> {
            v.visit_newtype_struct(self)
        }

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, RawError> {
            Err(RawError(
                "a plain array (ray::put_slice) reads only as a sequence of plain numbers".into(),
            ))
        }

        serde::forward_to_deserialize_any! {
            bool char str string bytes byte_buf option unit unit_struct map enum identifier
            ignored_any
        }
    }
}

/// The bytes that begin the encoding of a sequence of `n` values (a `Vec`, a slice): the
/// encodings of the values follow, one after the other.
pub fn sequence_prefix(n: usize) -> Vec<u8> {
    postcard::to_allocvec(&n).expect("a length always encodes")
}

impl crate::error::ErrorValue {
    /// `value`, encoded; `None` if it cannot be.
    pub(crate) fn of<E: Serialize>(value: &E) -> Option<Self> {
        Some(crate::error::ErrorValue {
            type_name: std::any::type_name::<E>().to_string(),
            bytes: encode(value).ok()?,
        })
    }
}

impl Error {
    /// The value a task returned as `Err`, if this is that task's error and the value was
    /// of type `E` (a type the program can encode: `serde::Serialize` and `Deserialize`);
    /// `None` for a panic, another type, or any other error. The message stays in
    /// [`Error::Task`] either way.
    ///
    /// ```
    /// #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    /// enum Refusal { TooBig(u64), Empty }
    ///
    /// impl std::fmt::Display for Refusal {
    ///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    ///         write!(f, "{self:?}")
    ///     }
    /// }
    ///
    /// #[ray::remote]
    /// fn check(n: u64) -> Result<u64, Refusal> {
    ///     if n > 10 { Err(Refusal::TooBig(n)) } else { Ok(n) }
    /// }
    ///
    /// # fn main() -> ray::Result<()> {
    /// ray::init(ray::Config::local().num_cpus(1.0))?;
    /// let e = ray::get(&check::remote(99)).unwrap_err();
    /// assert_eq!(e.downcast::<Refusal>(), Some(Refusal::TooBig(99)));
    /// assert_eq!(e.downcast::<String>(), None);
    /// ray::shutdown();
    /// # Ok(()) }
    /// ```
    pub fn downcast<E: DeserializeOwned>(&self) -> Option<E> {
        match self {
            Error::Task { value: Some(v), .. } if v.type_name == std::any::type_name::<E>() => {
                decode(&v.bytes).ok()
            }
            _ => None,
        }
    }
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

    #[test]
    fn plain_arrays_decode_as_sequences() {
        let v = vec![1.5f64, -2.0, 1e300];
        let bytes: &[u8] = bytemuck::cast_slice(&v);
        assert_eq!(decode_raw::<Vec<f64>>(bytes, 8).unwrap(), v);
        let pairs = vec![[1u32, 2], [3, 4]];
        let bytes: &[u8] = bytemuck::cast_slice(&pairs);
        assert_eq!(
            decode_raw::<Vec<(u32, u32)>>(bytes, 8).unwrap(),
            vec![(1, 2), (3, 4)]
        );
        assert!(
            decode_raw::<Vec<u64>>(&[0u8; 12], 8).is_err(),
            "not a whole number of elements"
        );
        assert!(
            decode_raw::<Vec<u32>>(&[0u8; 16], 8).is_err(),
            "element size mismatch"
        );
        assert!(decode_raw::<String>(&[0u8; 8], 8).is_err());
    }
}
