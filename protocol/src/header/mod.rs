//! Typed request and response headers (docs/protocol.md §3), read from and written to ext fields.
//!
//! Each header is a plain struct whose string fields borrow from the command they were decoded
//! from, so reading a SEND or PULL header allocates nothing. Reading a header checks every
//! required key and reports the first missing or malformed one by its wire name
//! ([`FieldError`]); optional keys are `Option`s; unknown keys are ignored, as Java does.
//!
//! Parsing follows Java's rules: integers as `Integer.parseInt`/`Long.parseLong` (an optional sign
//! and digits), booleans as `Boolean.parseBoolean` (`"true"` in any case is true, anything else
//! false, never an error).
//!
//! Rust field names carry units where the wire name hides them (`suspend_timeout_ms` for
//! `suspendTimeoutMillis`, `born_timestamp_ms` for `bornTimestamp`).

mod admin;
mod client;
mod controller;
mod namesrv;
mod offset;
mod pull;
mod send;
mod transaction;

pub use admin::*;
pub use client::*;
pub use controller::*;
pub use namesrv::*;
pub use offset::*;
pub use pull::*;
pub use send::*;
pub use transaction::*;

use crate::FieldError;
use crate::ext::{ExtFields, ExtWriter};

/// A typed header that can be read from a command's ext fields, borrowing from them.
pub trait FromExt<'a>: Sized {
    /// Reads the header, failing on the first missing required field or malformed value.
    fn from_ext(ext: &'a ExtFields) -> Result<Self, FieldError>;
}

/// Commands without header fields.
impl FromExt<'_> for () {
    fn from_ext(_ext: &ExtFields) -> Result<Self, FieldError> {
        Ok(())
    }
}

/// A value type a header field can hold, with Java's text conversions.
pub trait FieldValue<'a>: Sized {
    /// What the field expects, for error messages.
    const EXPECTED: &'static str;
    /// Parses the wire text; `None` when it does not parse.
    fn parse(text: &'a str) -> Option<Self>;
    /// Writes the value under `key`.
    fn write<W: ExtWriter>(&self, key: &str, writer: &mut W);
}

impl<'a> FieldValue<'a> for &'a str {
    const EXPECTED: &'static str = "a string";
    fn parse(text: &'a str) -> Option<Self> {
        Some(text)
    }
    fn write<W: ExtWriter>(&self, key: &str, writer: &mut W) {
        writer.put_str(key, self);
    }
}

impl FieldValue<'_> for i32 {
    const EXPECTED: &'static str = "a 32-bit integer";
    fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }
    fn write<W: ExtWriter>(&self, key: &str, writer: &mut W) {
        writer.put_i64(key, i64::from(*self));
    }
}

impl FieldValue<'_> for i64 {
    const EXPECTED: &'static str = "a 64-bit integer";
    fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }
    fn write<W: ExtWriter>(&self, key: &str, writer: &mut W) {
        writer.put_i64(key, *self);
    }
}

impl FieldValue<'_> for bool {
    const EXPECTED: &'static str = "a boolean";
    fn parse(text: &str) -> Option<Self> {
        Some(text.eq_ignore_ascii_case("true"))
    }
    fn write<W: ExtWriter>(&self, key: &str, writer: &mut W) {
        writer.put_bool(key, *self);
    }
}

/// A header field: a required value, or an `Option` of one.
pub trait HeaderField<'a>: Sized {
    /// Converts the raw text of `key` (absent = `None`).
    fn decode(raw: Option<&'a str>, key: &'static str) -> Result<Self, FieldError>;
    /// Writes the field (an absent optional writes nothing).
    fn encode<W: ExtWriter>(&self, key: &str, writer: &mut W);
}

fn parse_value<'a, T: FieldValue<'a>>(text: &'a str, key: &'static str) -> Result<T, FieldError> {
    T::parse(text).ok_or_else(|| FieldError::Invalid {
        field: key,
        value: text.to_owned(),
        expected: T::EXPECTED,
    })
}

impl<'a, T: FieldValue<'a>> HeaderField<'a> for T {
    fn decode(raw: Option<&'a str>, key: &'static str) -> Result<Self, FieldError> {
        parse_value(raw.ok_or(FieldError::Missing { field: key })?, key)
    }
    fn encode<W: ExtWriter>(&self, key: &str, writer: &mut W) {
        self.write(key, writer);
    }
}

impl<'a, T: FieldValue<'a>> HeaderField<'a> for Option<T> {
    fn decode(raw: Option<&'a str>, key: &'static str) -> Result<Self, FieldError> {
        raw.map(|text| parse_value(text, key)).transpose()
    }
    fn encode<W: ExtWriter>(&self, key: &str, writer: &mut W) {
        if let Some(value) = self {
            value.write(key, writer);
        }
    }
}

/// Declares a header struct whose fields map one-to-one to ext keys, with its [`FromExt`] and
/// [`crate::EncodeExt`] implementations. A header with borrowed fields must name its lifetime `'a`.
macro_rules! ext_header {
    (
        $(#[$meta:meta])*
        pub struct $name:ident $(<$lt:lifetime>)? {
            $( $(#[$field_meta:meta])* $field:ident : $ty:ty = $key:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub struct $name $(<$lt>)? {
            $( $(#[$field_meta])* pub $field: $ty, )*
        }

        impl<'a> $crate::header::FromExt<'a> for $name $(<$lt>)? {
            /// One pass over the entries (a later duplicate wins), then one conversion per field.
            fn from_ext(ext: &'a $crate::ExtFields) -> Result<Self, $crate::FieldError> {
                $( let mut $field: Option<&'a str> = None; )*
                for (key, value) in ext.iter() {
                    match key {
                        $( $key => $field = Some(value), )*
                        _ => {}
                    }
                }
                Ok(Self {
                    $( $field: $crate::header::HeaderField::decode($field, $key)?, )*
                })
            }
        }

        impl $(<$lt>)? $crate::EncodeExt for $name $(<$lt>)? {
            fn encode_ext<W: $crate::ExtWriter>(&self, writer: &mut W) {
                $( $crate::header::HeaderField::encode(&self.$field, $key, writer); )*
            }
        }
    };
}
pub(crate) use ext_header;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EncodeExt;

    ext_header! {
        /// A header exercising every field type.
        pub struct Sample<'a> {
            name: &'a str = "name",
            count: i32 = "count",
            offset: i64 = "offset",
            flag: bool = "flag",
            note: Option<&'a str> = "note",
        }
    }

    #[test]
    fn round_trips_through_ext_fields() {
        let sample = Sample {
            name: "t",
            count: -3,
            offset: 1 << 40,
            flag: true,
            note: None,
        };
        let mut ext = ExtFields::new();
        sample.encode_ext(&mut ext);
        assert_eq!(ext.len(), 4, "absent optional fields are not written");
        assert_eq!(Sample::from_ext(&ext), Ok(sample));
    }

    #[test]
    fn missing_and_invalid_fields_are_named() {
        let ext: ExtFields = [
            ("name", "t"),
            ("count", "x"),
            ("offset", "1"),
            ("flag", "yes"),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            Sample::from_ext(&ext),
            Err(FieldError::Invalid {
                field: "count",
                value: "x".into(),
                expected: "a 32-bit integer"
            })
        );
        let ext: ExtFields = [("name", "t"), ("count", "1"), ("flag", "TRUE")]
            .into_iter()
            .collect();
        assert_eq!(
            Sample::from_ext(&ext),
            Err(FieldError::Missing { field: "offset" })
        );
    }

    #[test]
    fn booleans_and_integers_follow_java() {
        assert_eq!(bool::parse("TrUe"), Some(true));
        assert_eq!(bool::parse("1"), Some(false));
        assert_eq!(i32::parse("+7"), Some(7));
        assert_eq!(i32::parse(" 7"), None);
        assert_eq!(i32::parse("2147483648"), None);
        assert_eq!(i64::parse("-9223372036854775808"), Some(i64::MIN));
    }
}
