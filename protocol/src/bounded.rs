//! Collections whose maximum length is part of their type.
//!
//! Trusts: nothing about a decoded length. Does not trust: a peer's length prefix.
//! `BoundedVec`'s `Deserialize` reads the declared length itself and refuses one above
//! `MAX` before it reads or allocates any element; `BoundedBytes` and `BoundedString`
//! check the length of the borrowed input before copying it.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Serialize, Serializer};

use crate::codec::reject_length;

/// A collection longer than its type allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{what} longer than its limit of {max}")]
pub struct LengthError {
    /// "list", "byte string" or "string".
    pub what: &'static str,
    pub max: usize,
}

/// A `Vec<T>` of at most `MAX` elements.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BoundedVec<T, const MAX: usize>(Vec<T>);

impl<T, const MAX: usize> BoundedVec<T, MAX> {
    const TOO_LONG: LengthError = LengthError {
        what: "list",
        max: MAX,
    };

    pub const fn new() -> Self {
        BoundedVec(Vec::new())
    }

    /// Appends `item`, or gives it back with the error when the list is full.
    pub fn push(&mut self, item: T) -> Result<(), (T, LengthError)> {
        if self.0.len() >= MAX {
            return Err((item, Self::TOO_LONG));
        }
        self.0.push(item);
        Ok(())
    }

    pub fn as_slice(&self) -> &[T] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<T> {
        self.0
    }
}

impl<T, const MAX: usize> Default for BoundedVec<T, MAX> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const MAX: usize> Deref for BoundedVec<T, MAX> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T, const MAX: usize> TryFrom<Vec<T>> for BoundedVec<T, MAX> {
    type Error = LengthError;
    fn try_from(items: Vec<T>) -> Result<Self, LengthError> {
        if items.len() > MAX {
            return Err(Self::TOO_LONG);
        }
        Ok(BoundedVec(items))
    }
}

impl<T, const MAX: usize> From<BoundedVec<T, MAX>> for Vec<T> {
    fn from(v: BoundedVec<T, MAX>) -> Vec<T> {
        v.0
    }
}

impl<T, const MAX: usize> IntoIterator for BoundedVec<T, MAX> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a, T, const MAX: usize> IntoIterator for &'a BoundedVec<T, MAX> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

// The length travels as the first element of a tuple rather than as a sequence's
// length prefix, so that `Deserialize` can read it and refuse it before any element.
// Postcard writes a tuple as its bare elements and a sequence as a varint length and
// its elements, so the bytes are exactly those of a `Vec<T>`.
impl<T: Serialize, const MAX: usize> Serialize for BoundedVec<T, MAX> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut tuple = s.serialize_tuple(self.0.len() + 1)?;
        tuple.serialize_element(&self.0.len())?;
        for item in &self.0 {
            tuple.serialize_element(item)?;
        }
        tuple.end()
    }
}

/// Slots reserved before elements arrive; beyond this the list grows only as
/// elements are actually decoded, so a short input cannot make a large allocation.
const PREALLOCATE_MAX: usize = 64;

impl<'de, T: Deserialize<'de>, const MAX: usize> Deserialize<'de> for BoundedVec<T, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Elements<T, const MAX: usize>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for Elements<T, MAX> {
            type Value = BoundedVec<T, MAX>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a length of at most {MAX} and that many elements")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let declared: usize = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                if declared > MAX {
                    return Err(reject_length(BoundedVec::<T, MAX>::TOO_LONG));
                }
                let mut items = Vec::with_capacity(declared.min(PREALLOCATE_MAX));
                for read in 0..declared {
                    let item = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(read + 1, &self))?;
                    items.push(item);
                }
                Ok(BoundedVec(items))
            }
        }

        d.deserialize_tuple(MAX.saturating_add(1), Elements::<T, MAX>(PhantomData))
    }
}

/// A byte string of at most `MAX` octets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct BoundedBytes<const MAX: usize>(Vec<u8>);

impl<const MAX: usize> BoundedBytes<MAX> {
    const TOO_LONG: LengthError = LengthError {
        what: "byte string",
        max: MAX,
    };

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

impl<const MAX: usize> Deref for BoundedBytes<MAX> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl<const MAX: usize> TryFrom<Vec<u8>> for BoundedBytes<MAX> {
    type Error = LengthError;
    fn try_from(bytes: Vec<u8>) -> Result<Self, LengthError> {
        if bytes.len() > MAX {
            return Err(Self::TOO_LONG);
        }
        Ok(BoundedBytes(bytes))
    }
}

impl<const MAX: usize> TryFrom<&[u8]> for BoundedBytes<MAX> {
    type Error = LengthError;
    fn try_from(bytes: &[u8]) -> Result<Self, LengthError> {
        if bytes.len() > MAX {
            return Err(Self::TOO_LONG);
        }
        Ok(BoundedBytes(bytes.to_vec()))
    }
}

impl<const MAX: usize> Serialize for BoundedBytes<MAX> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for BoundedBytes<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Octets<const MAX: usize>;

        impl<const MAX: usize> Visitor<'_> for Octets<MAX> {
            type Value = BoundedBytes<MAX>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a byte string of at most {MAX} octets")
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                BoundedBytes::try_from(v).map_err(reject_length)
            }
        }

        d.deserialize_bytes(Octets::<MAX>)
    }
}

/// A UTF-8 string of at most `MAX` octets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BoundedString<const MAX: usize>(String);

impl<const MAX: usize> BoundedString<MAX> {
    const TOO_LONG: LengthError = LengthError {
        what: "string",
        max: MAX,
    };

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl<const MAX: usize> Deref for BoundedString<MAX> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> fmt::Display for BoundedString<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<const MAX: usize> TryFrom<String> for BoundedString<MAX> {
    type Error = LengthError;
    fn try_from(s: String) -> Result<Self, LengthError> {
        if s.len() > MAX {
            return Err(Self::TOO_LONG);
        }
        Ok(BoundedString(s))
    }
}

impl<const MAX: usize> TryFrom<&str> for BoundedString<MAX> {
    type Error = LengthError;
    fn try_from(s: &str) -> Result<Self, LengthError> {
        if s.len() > MAX {
            return Err(Self::TOO_LONG);
        }
        Ok(BoundedString(s.to_owned()))
    }
}

impl<const MAX: usize> Serialize for BoundedString<MAX> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for BoundedString<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text<const MAX: usize>;

        impl<const MAX: usize> Visitor<'_> for Text<MAX> {
            type Value = BoundedString<MAX>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a string of at most {MAX} octets")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                BoundedString::try_from(v).map_err(reject_length)
            }
        }

        d.deserialize_str(Text::<MAX>)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn round_trip<T: Serialize + serde::de::DeserializeOwned>(v: &T) -> T {
        let bytes = postcard::to_allocvec(v).unwrap();
        postcard::from_bytes(&bytes).unwrap()
    }

    #[test]
    fn constructors_enforce_the_bound() {
        assert!(BoundedVec::<u8, 2>::try_from(vec![1, 2]).is_ok());
        assert_eq!(
            BoundedVec::<u8, 2>::try_from(vec![1, 2, 3]),
            Err(LengthError {
                what: "list",
                max: 2
            })
        );
        assert!(BoundedBytes::<2>::try_from(&b"abc"[..]).is_err());
        assert!(BoundedString::<2>::try_from("abc").is_err());
        // The bound counts octets, not characters.
        assert!(BoundedString::<2>::try_from("é").is_ok());
        assert!(BoundedString::<2>::try_from("éa").is_err());
    }

    #[test]
    fn push_stops_at_the_bound() {
        let mut v = BoundedVec::<u8, 2>::new();
        assert!(v.push(1).is_ok());
        assert!(v.push(2).is_ok());
        assert_eq!(v.push(3).map_err(|(item, _)| item), Err(3));
        assert_eq!(v.as_slice(), &[1, 2]);
    }

    #[test]
    fn no_element_is_read_when_the_length_is_over_the_bound() {
        use std::cell::Cell;
        thread_local! {
            static READ: Cell<usize> = const { Cell::new(0) };
        }
        struct Counted;
        impl<'de> Deserialize<'de> for Counted {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                READ.with(|n| n.set(n.get() + 1));
                u8::deserialize(d).map(|_| Counted)
            }
        }
        let bytes = [5, 0, 0, 0, 0, 0];
        assert!(postcard::from_bytes::<BoundedVec<Counted, 4>>(&bytes).is_err());
        assert_eq!(READ.with(Cell::get), 0);
        assert!(postcard::from_bytes::<BoundedVec<Counted, 5>>(&bytes).is_ok());
        assert_eq!(READ.with(Cell::get), 5);
    }

    #[test]
    fn wire_form_is_that_of_a_plain_vec() {
        let items = vec![1u32, 300, 70000];
        let bounded = BoundedVec::<u32, 8>::try_from(items.clone()).unwrap();
        let plain = postcard::to_allocvec(&items).unwrap();
        assert_eq!(postcard::to_allocvec(&bounded).unwrap(), plain);
        assert_eq!(
            postcard::from_bytes::<BoundedVec<u32, 8>>(&plain).unwrap(),
            bounded
        );
        let empty = postcard::to_allocvec(&Vec::<u32>::new()).unwrap();
        assert_eq!(
            postcard::to_allocvec(&BoundedVec::<u32, 8>::new()).unwrap(),
            empty
        );
    }

    #[test]
    fn decoding_over_the_bound_fails() {
        let bytes = postcard::to_allocvec(&vec![1u8, 2, 3]).unwrap();
        assert!(postcard::from_bytes::<BoundedVec<u8, 2>>(&bytes).is_err());
        assert!(postcard::from_bytes::<BoundedVec<u8, 3>>(&bytes).is_ok());
        let bytes = postcard::to_allocvec(&"abc").unwrap();
        assert!(postcard::from_bytes::<BoundedString<2>>(&bytes).is_err());
        assert!(postcard::from_bytes::<BoundedBytes<2>>(&bytes).is_err());
        assert!(postcard::from_bytes::<BoundedBytes<3>>(&bytes).is_ok());
    }

    proptest! {
        #[test]
        fn vec_round_trips(items in proptest::collection::vec(any::<u32>(), 0..=8)) {
            let v = BoundedVec::<u32, 8>::try_from(items).unwrap();
            prop_assert_eq!(round_trip(&v), v);
        }

        #[test]
        fn bytes_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..=32)) {
            let v = BoundedBytes::<32>::try_from(bytes).unwrap();
            prop_assert_eq!(round_trip(&v), v);
        }

        #[test]
        fn string_round_trips(s in "\\PC{0,8}") {
            let v = BoundedString::<32>::try_from(s).unwrap();
            prop_assert_eq!(round_trip(&v), v);
        }
    }
}
