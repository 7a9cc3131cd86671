//! JSON command headers (docs/protocol.md §2.2).
//!
//! # Decoding
//!
//! The header is one JSON object. The decoder is a small hand-written scanner rather than
//! `serde_json` because it must hand out *spans*: ext values arrive as JSON strings, numbers or
//! booleans (ali-ons sends `"queueId":0`), and with a scanner the text of each is already in the
//! header bytes, so nothing is copied. Strings with escapes are the common case, not the rare one
//! (every properties string carries `\u0001` and `\u0002`), so they are unescaped *in place* in
//! the frame's own bytes; decoding a JSON header allocates nothing. `serde_json` would give us
//! numbers as `i64`/`f64` to be re-formatted and escaped strings only as fresh copies. The scanner
//! accepts exactly RFC 8259 JSON (a property test checks it against `serde_json`).
//!
//! Tolerance follows Java's fastjson: missing keys take defaults, unknown keys are skipped, a
//! duplicate key's last value wins, `null` values are absent, and numeric header values may also
//! come as numeric strings. Ext values that are objects or arrays are kept as their JSON text.
//!
//! # Encoding
//!
//! Keys in alphabetical order as Java writes them, every key the strictest client requires
//! (`code`, `flag`, `language`, `opaque`, `serializeTypeCurrentRPC`, `version`), `remark` and
//! `extFields` only when non-empty, ext values always as strings.

use bytes::{BufMut, BytesMut};

use super::{CommandHead, DecodedFields};
use crate::ext::{EncodeExt, ExtFields, ExtWriter, TextSpan};
use crate::{HeaderError, LanguageCode};

/// Nesting limit when skipping unknown values: bounds recursion on hostile input.
const MAX_DEPTH: usize = 64;

pub(super) fn decode(mut header: BytesMut) -> Result<(DecodedFields, ExtFields), HeaderError> {
    if std::str::from_utf8(&header).is_err() {
        return Err(HeaderError::InvalidUtf8 { field: "header" });
    }
    let mut ext = ExtFields::new();
    let mut fields = DecodedFields::default();
    let mut scanner = Scanner {
        bytes: &mut header,
        pos: 0,
    };
    scanner.skip_whitespace();
    scanner.expect(b'{', "expected '{' at start of header")?;
    scanner.skip_whitespace();
    if scanner.peek() == Some(b'}') {
        scanner.pos += 1;
    } else {
        loop {
            scanner.skip_whitespace();
            let key = scanner.string()?;
            scanner.skip_whitespace();
            scanner.expect(b':', "expected ':' after key")?;
            scanner.skip_whitespace();
            match scanner.text(key) {
                "code" => fields.code = scanner.int_field("code")?,
                "version" => fields.version = scanner.int_field("version")?,
                "opaque" => fields.opaque = scanner.int_field("opaque")?,
                "flag" => fields.flag = scanner.int_field("flag")?,
                "language" => {
                    if let Some(name) = scanner.nullable_string()? {
                        fields.language = LanguageCode::from_name(scanner.text(name));
                    }
                }
                "remark" => {
                    if let Some(remark) = scanner.nullable_string()? {
                        fields.remark = Some(scanner.text(remark).to_owned());
                    }
                }
                "extFields" => scanner.ext_fields(&mut ext)?,
                // Informational only: the frame marker is authoritative (docs/protocol.md §2.1).
                _ => scanner.skip_value(0)?,
            }
            scanner.skip_whitespace();
            match scanner.next_byte() {
                Some(b',') => {}
                Some(b'}') => break,
                _ => return Err(scanner.error_before("expected ',' or '}' in header object")),
            }
        }
    }
    scanner.skip_whitespace();
    if scanner.pos != scanner.bytes.len() {
        return Err(scanner.error("trailing characters after header object"));
    }
    ext.set_shared(header.freeze());
    Ok((fields, ext))
}

/// A decoded string or raw value: a span of the (possibly unescaped-in-place) header bytes.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
}

/// Scans a JSON header and unescapes strings in place.
///
/// Unescaping never makes text longer (`\u0001` is six bytes in, one out; a surrogate pair is
/// twelve in, four out), so the unescaped text is written over the escaped text, starting where
/// the string starts, and never overtakes the read position. The bytes between the end of the
/// unescaped text and the closing quote become garbage nobody refers to. Every span therefore
/// holds valid UTF-8: the header was valid UTF-8, runs are copied whole, and escapes are written
/// as encoded chars.
struct Scanner<'a> {
    bytes: &'a mut [u8],
    pos: usize,
}

impl Scanner<'_> {
    fn text(&self, span: Span) -> &str {
        // Spans are valid UTF-8 (see the type doc); `unwrap_or_default` is unreachable.
        std::str::from_utf8(&self.bytes[span.start..span.end]).unwrap_or_default()
    }

    fn error(&self, reason: &'static str) -> HeaderError {
        HeaderError::InvalidJson {
            offset: self.pos,
            reason,
        }
    }

    fn error_before(&self, reason: &'static str) -> HeaderError {
        HeaderError::InvalidJson {
            offset: self.pos.saturating_sub(1),
            reason,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next_byte(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.pos += 1;
        Some(byte)
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8, reason: &'static str) -> Result<(), HeaderError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(reason))
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), HeaderError> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.error("invalid literal"))
        }
    }

    /// Reads a string starting at its opening quote; escapes are resolved in place.
    fn string(&mut self) -> Result<Span, HeaderError> {
        self.expect(b'"', "expected string")?;
        let start = self.pos;
        let mut write = start;
        loop {
            match self.next_byte() {
                Some(b'"') => return Ok(Span { start, end: write }),
                Some(b'\\') => {
                    let mut encoded = [0u8; 4];
                    let escaped: &[u8] = match self.next_byte() {
                        Some(b'"') => b"\"",
                        Some(b'\\') => b"\\",
                        Some(b'/') => b"/",
                        Some(b'b') => b"\x08",
                        Some(b'f') => b"\x0c",
                        Some(b'n') => b"\n",
                        Some(b'r') => b"\r",
                        Some(b't') => b"\t",
                        Some(b'u') => self.unicode_escape()?.encode_utf8(&mut encoded).as_bytes(),
                        _ => return Err(self.error_before("invalid escape sequence")),
                    };
                    self.bytes[write..write + escaped.len()].copy_from_slice(escaped);
                    write += escaped.len();
                }
                Some(0x00..=0x1F) => return Err(self.error_before("control character in string")),
                Some(byte) => {
                    self.bytes[write] = byte;
                    write += 1;
                }
                None => return Err(self.error("unterminated string")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, HeaderError> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.error("truncated \\u escape"))?;
        let mut value = 0;
        for &digit in digits {
            let nibble = char::from(digit)
                .to_digit(16)
                .ok_or_else(|| self.error("invalid \\u escape"))?;
            value = value * 16 + nibble;
        }
        self.pos += 4;
        Ok(value)
    }

    /// Decodes the `XXXX` of `\uXXXX`, joining a UTF-16 surrogate pair.
    fn unicode_escape(&mut self) -> Result<char, HeaderError> {
        let first = self.hex4()?;
        let code_point = match first {
            0xD800..=0xDBFF => {
                if !self.bytes[self.pos..].starts_with(b"\\u") {
                    return Err(self.error("unpaired surrogate in \\u escape"));
                }
                self.pos += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(self.error("unpaired surrogate in \\u escape"));
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(self.error("unpaired surrogate in \\u escape")),
            other => other,
        };
        char::from_u32(code_point).ok_or_else(|| self.error("invalid \\u escape"))
    }

    fn nullable_string(&mut self) -> Result<Option<Span>, HeaderError> {
        if self.peek() == Some(b'n') {
            self.literal(b"null")?;
            Ok(None)
        } else {
            self.string().map(Some)
        }
    }

    /// Reads a number token and returns its span; validates the RFC 8259 grammar.
    fn number(&mut self) -> Result<Span, HeaderError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.next_byte() {
            Some(b'0') => {}
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error_before("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.required_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.required_digits()?;
        }
        Ok(Span {
            start,
            end: self.pos,
        })
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }

    fn required_digits(&mut self) -> Result<(), HeaderError> {
        if !matches!(self.peek(), Some(b'0'..=b'9')) {
            return Err(self.error("invalid number"));
        }
        self.digits();
        Ok(())
    }

    /// Reads an `i32` header value: a JSON integer, a string holding one, or `null` (= 0).
    fn int_field(&mut self, field: &'static str) -> Result<i32, HeaderError> {
        let span = match self.peek() {
            Some(b'"') => self.string()?,
            Some(b'n') => {
                self.literal(b"null")?;
                return Ok(0);
            }
            _ => self.number()?,
        };
        self.text(span)
            .trim()
            .parse::<i32>()
            .map_err(|_| HeaderError::InvalidValue {
                field,
                reason: "not a 32-bit integer",
            })
    }

    /// Skips any JSON value (used for unknown keys and to find the extent of nested values).
    fn skip_value(&mut self, depth: usize) -> Result<(), HeaderError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nesting too deep"));
        }
        match self.peek() {
            Some(b'"') => self.skip_string(),
            Some(b'{') => self.skip_container(b'}', depth, true),
            Some(b'[') => self.skip_container(b']', depth, false),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number().map(drop),
            _ => Err(self.error("expected a value")),
        }
    }

    /// Validates a string without rewriting it, so skipped nested values keep their JSON text.
    fn skip_string(&mut self) -> Result<(), HeaderError> {
        self.expect(b'"', "expected string")?;
        loop {
            match self.next_byte() {
                Some(b'"') => return Ok(()),
                Some(b'\\') => match self.next_byte() {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
                    Some(b'u') => drop(self.unicode_escape()?),
                    _ => return Err(self.error_before("invalid escape sequence")),
                },
                Some(0x00..=0x1F) => return Err(self.error_before("control character in string")),
                Some(_) => {}
                None => return Err(self.error("unterminated string")),
            }
        }
    }

    fn skip_container(
        &mut self,
        close: u8,
        depth: usize,
        is_object: bool,
    ) -> Result<(), HeaderError> {
        self.pos += 1;
        self.skip_whitespace();
        if self.peek() == Some(close) {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.skip_whitespace();
            if is_object {
                self.skip_string()?;
                self.skip_whitespace();
                self.expect(b':', "expected ':' after key")?;
                self.skip_whitespace();
            }
            self.skip_value(depth + 1)?;
            self.skip_whitespace();
            match self.next_byte() {
                Some(b',') => {}
                Some(byte) if byte == close => return Ok(()),
                _ => return Err(self.error_before("expected ',' or closing bracket")),
            }
        }
    }

    /// Reads the `extFields` object (or `null`) into `ext`.
    fn ext_fields(&mut self, ext: &mut ExtFields) -> Result<(), HeaderError> {
        if self.peek() == Some(b'n') {
            return self.literal(b"null");
        }
        self.expect(b'{', "extFields must be an object")?;
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.skip_whitespace();
            let key = self.string()?;
            self.skip_whitespace();
            self.expect(b':', "expected ':' after key")?;
            self.skip_whitespace();
            let value = match self.peek() {
                Some(b'"') => Some(self.string()?),
                Some(b'n') => {
                    self.literal(b"null")?;
                    None
                }
                // Numbers, booleans and nested values keep their JSON text, which for numbers and
                // booleans is exactly the string Java's fastjson would have produced.
                _ => {
                    let start = self.pos;
                    self.skip_value(1)?;
                    Some(Span {
                        start,
                        end: self.pos,
                    })
                }
            };
            if let Some(value) = value {
                ext.push_span(
                    TextSpan::shared(key.start, key.end - key.start),
                    TextSpan::shared(value.start, value.end - value.start),
                )?;
            }
            self.skip_whitespace();
            match self.next_byte() {
                Some(b',') => {}
                Some(b'}') => return Ok(()),
                _ => return Err(self.error_before("expected ',' or '}' in extFields")),
            }
        }
    }
}

pub(super) fn encode<E: EncodeExt>(head: &CommandHead<'_>, ext: &E, out: &mut BytesMut) {
    out.put_slice(b"{\"code\":");
    put_int(out, i64::from(head.code));
    let ext_start = out.len();
    out.put_slice(b",\"extFields\":{");
    let fields_start = out.len();
    ext.encode_ext(&mut JsonExtWriter { out, first: true });
    if out.len() == fields_start {
        out.truncate(ext_start);
    } else {
        out.put_u8(b'}');
    }
    out.put_slice(b",\"flag\":");
    put_int(out, i64::from(head.flag));
    out.put_slice(b",\"language\":\"");
    out.put_slice(head.language.name().as_bytes());
    out.put_slice(b"\",\"opaque\":");
    put_int(out, i64::from(head.opaque));
    if let Some(remark) = head.remark {
        out.put_slice(b",\"remark\":");
        put_string(out, remark);
    }
    out.put_slice(b",\"serializeTypeCurrentRPC\":\"JSON\",\"version\":");
    put_int(out, i64::from(head.version));
    out.put_u8(b'}');
}

struct JsonExtWriter<'a> {
    out: &'a mut BytesMut,
    first: bool,
}

impl ExtWriter for JsonExtWriter<'_> {
    fn put_str(&mut self, key: &str, value: &str) {
        if !self.first {
            self.out.put_u8(b',');
        }
        self.first = false;
        put_string(self.out, key);
        self.out.put_u8(b':');
        put_string(self.out, value);
    }
}

fn put_int(out: &mut BytesMut, value: i64) {
    out.put_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Writes `text` as a JSON string, escaping quotes, backslashes and control characters.
pub(crate) fn put_string(out: &mut BytesMut, text: &str) {
    out.put_u8(b'"');
    let bytes = text.as_bytes();
    let mut run_start = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0C => b"\\f",
            0x00..=0x1F => b"",
            _ => continue,
        };
        out.put_slice(&bytes[run_start..index]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.put_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xF)],
            ]);
        } else {
            out.put_slice(escape);
        }
        run_start = index + 1;
    }
    out.put_slice(&bytes[run_start..]);
    out.put_u8(b'"');
}
