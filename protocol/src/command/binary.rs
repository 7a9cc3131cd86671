//! Binary ("ROCKETMQ") command headers (docs/protocol.md §2.3).
//!
//! ```text
//! offset size field
//!  0      2   code            i16 BE
//!  2      1   language        u8
//!  3      2   version         i16 BE
//!  5      4   opaque          i32 BE
//!  9      4   flag            i32 BE
//! 13      4   remark length R i32 BE, 0 = null
//! 17      R   remark          UTF-8
//! 17+R    4   ext length E    i32 BE = bytes of the entries, 0 = no map
//! 21+R    E   entries         (key length i16 BE, key, value length i32 BE, value)*
//! ```
//!
//! Every length is checked against what is left of the header before anything is sliced, so a
//! hostile length can neither panic nor allocate. Like Java, a zero-length string means null: an
//! entry with an empty key or value is dropped on decode.

use bytes::{BufMut, Bytes, BytesMut};

use super::{CommandHead, DecodedFields};
use crate::ext::{EncodeExt, ExtFields, ExtWriter, TextSpan};
use crate::{HeaderError, LanguageCode};

/// Size of the fixed part: everything but the remark and entry bytes.
const FIXED_BYTES: usize = 21;

/// A length field as `usize`; negative lengths are an error, never a huge allocation.
fn length(field: &'static str, raw: i32) -> Result<usize, HeaderError> {
    usize::try_from(raw).map_err(|_| HeaderError::NegativeLength { field, length: raw })
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], HeaderError> {
        let have = self.bytes.len() - self.pos;
        if len > have {
            return Err(HeaderError::Truncated {
                field,
                offset: self.pos,
                need: len,
                have,
            });
        }
        let slice = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], HeaderError> {
        let slice = self.take(N, field)?;
        let mut array = [0; N];
        array.copy_from_slice(slice);
        Ok(array)
    }

    fn i16(&mut self, field: &'static str) -> Result<i16, HeaderError> {
        self.array(field).map(i16::from_be_bytes)
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, HeaderError> {
        self.array(field).map(i32::from_be_bytes)
    }

    /// Takes `len` bytes of UTF-8 text and returns their span within the header.
    fn text(&mut self, len: usize, field: &'static str) -> Result<TextSpan, HeaderError> {
        let start = self.pos;
        let slice = self.take(len, field)?;
        if std::str::from_utf8(slice).is_err() {
            return Err(HeaderError::InvalidUtf8 { field });
        }
        Ok(TextSpan::shared(start, len))
    }
}

pub(super) fn decode(header: Bytes) -> Result<(DecodedFields, ExtFields), HeaderError> {
    let mut cursor = Cursor {
        bytes: &header,
        pos: 0,
    };
    let mut fields = DecodedFields {
        code: i32::from(cursor.i16("code")?),
        language: LanguageCode::from_u8(cursor.array::<1>("language")?[0]),
        version: i32::from(cursor.i16("version")?),
        opaque: cursor.i32("opaque")?,
        flag: cursor.i32("flag")?,
        remark: None,
    };
    let remark_raw = cursor.i32("remark length")?;
    let remark_bytes = length("remark", remark_raw)?;
    if remark_bytes > 0 {
        let remark = cursor.take(remark_bytes, "remark")?;
        let remark = std::str::from_utf8(remark)
            .map_err(|_| HeaderError::InvalidUtf8 { field: "remark" })?;
        fields.remark = Some(remark.to_owned());
    }
    let ext_raw = cursor.i32("extFields length")?;
    let ext_bytes = length("extFields", ext_raw)?;
    let ext_end = cursor
        .pos
        .checked_add(ext_bytes)
        .filter(|end| *end <= header.len())
        .ok_or(HeaderError::Truncated {
            field: "extFields",
            offset: cursor.pos,
            need: ext_bytes,
            have: header.len() - cursor.pos,
        })?;
    let mut ext = ExtFields::new();
    let mut entries = Cursor {
        bytes: &header[..ext_end],
        pos: cursor.pos,
    };
    while entries.pos < ext_end {
        let key_raw = i32::from(entries.i16("ext key length")?);
        let key_bytes = length("ext key", key_raw)?;
        let key = entries.text(key_bytes, "ext key")?;
        let value_raw = entries.i32("ext value length")?;
        let value_bytes = length("ext value", value_raw)?;
        let value = entries.text(value_bytes, "ext value")?;
        if key_bytes > 0 && value_bytes > 0 {
            ext.push_span(key, value)?;
        }
    }
    if ext_end != header.len() {
        return Err(HeaderError::TrailingBytes {
            count: header.len() - ext_end,
        });
    }
    ext.set_shared(header);
    Ok((fields, ext))
}

pub(super) fn encode<E: EncodeExt>(head: &CommandHead<'_>, ext: &E, out: &mut BytesMut) {
    out.reserve(FIXED_BYTES);
    out.put_i16(head.code as i16);
    out.put_u8(head.language.as_u8());
    out.put_i16(head.version as i16);
    out.put_i32(head.opaque);
    out.put_i32(head.flag);
    let remark = head.remark.unwrap_or_default();
    out.put_i32(remark.len() as i32);
    out.put_slice(remark.as_bytes());
    let length_at = out.len();
    out.put_i32(0);
    ext.encode_ext(&mut BinaryExtWriter { out });
    let ext_bytes = out.len() - length_at - 4;
    out[length_at..length_at + 4].copy_from_slice(&(ext_bytes as i32).to_be_bytes());
}

struct BinaryExtWriter<'a> {
    out: &'a mut BytesMut,
}

impl ExtWriter for BinaryExtWriter<'_> {
    fn put_str(&mut self, key: &str, value: &str) {
        // Keys are short names; a key over i16::MAX bytes cannot be represented and is skipped
        // rather than written with a wrapped length that would corrupt the frame.
        let Ok(key_len) = i16::try_from(key.len()) else {
            return;
        };
        self.out.reserve(6 + key.len() + value.len());
        self.out.put_i16(key_len);
        self.out.put_slice(key.as_bytes());
        self.out.put_i32(value.len() as i32);
        self.out.put_slice(value.as_bytes());
    }
}
