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
            match HeaderKey::of(scanner.slice(key)) {
                HeaderKey::Code => fields.code = scanner.int_field("code")?,
                HeaderKey::Version => fields.version = scanner.int_field("version")?,
                HeaderKey::Opaque => fields.opaque = scanner.int_field("opaque")?,
                HeaderKey::Flag => fields.flag = scanner.int_field("flag")?,
                HeaderKey::Language => {
                    if let Some(name) = scanner.nullable_string()? {
                        fields.language = LanguageCode::from_name(scanner.text(name));
                    }
                }
                HeaderKey::Remark => {
                    if let Some(remark) = scanner.nullable_string()? {
                        fields.remark = Some(scanner.text(remark).to_owned());
                    }
                }
                HeaderKey::ExtFields => scanner.ext_fields(&mut ext)?,
                // `serializeTypeCurrentRPC` is informational only: the frame marker is
                // authoritative (docs/protocol.md §2.1).
                HeaderKey::Other => scanner.skip_value(0)?,
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

/// The top-level keys the decoder reads, matched on the key's (unescaped) bytes so that no key
/// needs a UTF-8 check of its own.
#[derive(Debug, Clone, Copy)]
enum HeaderKey {
    Code,
    Version,
    Opaque,
    Flag,
    Language,
    Remark,
    ExtFields,
    Other,
}

impl HeaderKey {
    fn of(key: &[u8]) -> Self {
        match key {
            b"code" => Self::Code,
            b"version" => Self::Version,
            b"opaque" => Self::Opaque,
            b"flag" => Self::Flag,
            b"language" => Self::Language,
            b"remark" => Self::Remark,
            b"extFields" => Self::ExtFields,
            _ => Self::Other,
        }
    }
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
        std::str::from_utf8(self.slice(span)).unwrap_or_default()
    }

    fn slice(&self, span: Span) -> &[u8] {
        &self.bytes[span.start..span.end]
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
    ///
    /// Until the first escape the text already is where its span says, so the scanner only
    /// looks for the end of the plain run ([`plain_run`], eight bytes at a time) and writes
    /// nothing. Most strings (keys, topics, numbers sent as strings) end there; this part is
    /// inlined into the loops that read keys and values, so the span stays in registers.
    #[inline]
    fn string(&mut self) -> Result<Span, HeaderError> {
        self.expect(b'"', "expected string")?;
        let start = self.pos;
        let end = start + plain_run(&self.bytes[start..]);
        if self.bytes.get(end) == Some(&b'"') {
            self.pos = end + 1;
            return Ok(Span { start, end });
        }
        self.pos = end;
        self.escaped_string(start)
    }

    /// The rest of [`Scanner::string`] once the plain run ends at something other than the
    /// closing quote: an escape, a control character or the end of the header. After an escape
    /// the unescaped text lags behind the read position, and each following plain run is moved
    /// down with one `copy_within`.
    #[inline(never)]
    fn escaped_string(&mut self, start: usize) -> Result<Span, HeaderError> {
        let mut write = self.pos;
        loop {
            // `plain_run` stopped at a quote, a backslash, a control character or the end.
            match self.next_byte() {
                Some(b'"') => return Ok(Span { start, end: write }),
                Some(b'\\') => write = self.unescape(write)?,
                Some(_) => return Err(self.error_before("control character in string")),
                None => return Err(self.error("unterminated string")),
            }
            let run_start = self.pos;
            let run = plain_run(&self.bytes[run_start..]);
            self.bytes.copy_within(run_start..run_start + run, write);
            write += run;
            self.pos += run;
        }
    }

    /// Resolves the escape after a backslash, writing its text at `write` (which is at or
    /// before the backslash); returns the write position after it.
    fn unescape(&mut self, write: usize) -> Result<usize, HeaderError> {
        let byte = match self.next_byte() {
            Some(b'"') => b'"',
            Some(b'\\') => b'\\',
            Some(b'/') => b'/',
            Some(b'b') => 0x08,
            Some(b'f') => 0x0C,
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'u') => {
                let decoded = self.unicode_escape()?;
                if decoded.is_ascii() {
                    // The common case (`\u0001`, `\u0002` in every properties string).
                    decoded as u8
                } else {
                    let mut encoded = [0u8; 4];
                    let text = decoded.encode_utf8(&mut encoded).as_bytes();
                    self.bytes[write..write + text.len()].copy_from_slice(text);
                    return Ok(write + text.len());
                }
            }
            _ => return Err(self.error_before("invalid escape sequence")),
        };
        self.bytes[write] = byte;
        Ok(write + 1)
    }

    fn hex4(&mut self) -> Result<u32, HeaderError> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.error("truncated \\u escape"))?;
        let mut value = 0;
        for &digit in digits {
            let nibble = hex_digit(digit).ok_or_else(|| self.error("invalid \\u escape"))?;
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
        if let Some(value) = small_int(self.slice(span)) {
            return Ok(value);
        }
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
            self.pos += plain_run(&self.bytes[self.pos..]);
            match self.next_byte() {
                Some(b'"') => return Ok(()),
                Some(b'\\') => match self.next_byte() {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
                    Some(b'u') => drop(self.unicode_escape()?),
                    _ => return Err(self.error_before("invalid escape sequence")),
                },
                // `plain_run` stops only at a quote, a backslash or a control character.
                Some(_) => return Err(self.error_before("control character in string")),
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

/// The value of an ASCII hex digit.
fn hex_digit(byte: u8) -> Option<u32> {
    let value = match byte {
        b'0'..=b'9' => byte - b'0',
        b'a'..=b'f' => byte - b'a' + 10,
        b'A'..=b'F' => byte - b'A' + 10,
        _ => return None,
    };
    Some(u32::from(value))
}

/// Parses one to nine ASCII digits after an optional `-` without going through `str`: such text
/// cannot overflow an `i32`, and this gives exactly what `str::parse::<i32>` gives for it.
/// Anything else (a sign of `+`, padding, ten digits, a fraction) is `None`, and the caller takes
/// the general path.
fn small_int(text: &[u8]) -> Option<i32> {
    let (negative, digits) = match text {
        [b'-', digits @ ..] => (true, digits),
        digits => (false, digits),
    };
    if digits.is_empty() || digits.len() > 9 {
        return None;
    }
    let mut value = 0i32;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i32::from(digit - b'0');
    }
    Some(if negative { -value } else { value })
}

/// Bytes that end a run of literal text inside a JSON string: the closing quote, the start of
/// an escape, and the control characters, which must be escaped (RFC 8259 §7). The encoder
/// escapes exactly these bytes too.
const fn is_special(byte: u8) -> bool {
    matches!(byte, b'"' | b'\\' | 0x00..=0x1F)
}

const LOW_BITS: u64 = u64::from_le_bytes([0x01; 8]);
const HIGH_BITS: u64 = u64::from_le_bytes([0x80; 8]);

/// Marks, with its high bit, each byte of `word` (eight bytes read little-endian) that
/// [`is_special`]; zero when there is none.
///
/// The usual SWAR tests: `x - 0x01..01 & !x & 0x80..80` marks the zero bytes of `x` (a quote or
/// backslash after XOR with that byte), `x - 0x20..20 & !x & 0x80..80` the bytes below 0x20. A
/// borrow can also mark a byte *above* a true match, never one below the lowest match, so the
/// lowest mark is exact, which is all [`plain_run`] uses. Bytes of 0x80 and up (UTF-8) never
/// match.
const fn special_bytes(word: u64) -> u64 {
    let quote = word ^ (LOW_BITS * b'"' as u64);
    let backslash = word ^ (LOW_BITS * b'\\' as u64);
    let quote_zero = quote.wrapping_sub(LOW_BITS) & !quote;
    let backslash_zero = backslash.wrapping_sub(LOW_BITS) & !backslash;
    let control = word.wrapping_sub(LOW_BITS * 0x20) & !word;
    (quote_zero | backslash_zero | control) & HIGH_BITS
}

/// The length of the literal run at the start of `bytes`: the index of the first byte that
/// [`is_special`], or the length when there is none. Tests eight bytes per step, which matters
/// because every byte of every header string goes through here.
#[inline]
fn plain_run(bytes: &[u8]) -> usize {
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let special = special_bytes(u64::from_le_bytes(word));
        if special != 0 {
            return offset + (special.trailing_zeros() / 8) as usize;
        }
        offset += 8;
    }
    let tail = chunks.remainder();
    offset
        + tail
            .iter()
            .position(|&byte| is_special(byte))
            .unwrap_or(tail.len())
}

/// Room reserved up front: the fixed text of a header is about 110 bytes and a typical response's
/// ext fields (SEND: msgId, queueId, queueOffset, MSG_REGION, TRACE_ON) about 110 more, so one
/// reservation covers the whole header and the writes below only check capacity.
const TYPICAL_HEADER_BYTES: usize = 256;

pub(super) fn encode<E: EncodeExt>(head: &CommandHead<'_>, ext: &E, out: &mut BytesMut) {
    out.reserve(TYPICAL_HEADER_BYTES + head.remark.map_or(0, str::len));
    out.extend_from_slice(b"{\"code\":");
    put_int(out, head.code);
    let ext_start = out.len();
    out.extend_from_slice(b",\"extFields\":{");
    let fields_start = out.len();
    ext.encode_ext(&mut JsonExtWriter { out, first: true });
    if out.len() == fields_start {
        out.truncate(ext_start);
    } else {
        out.put_u8(b'}');
    }
    out.extend_from_slice(b",\"flag\":");
    put_int(out, head.flag);
    out.extend_from_slice(b",\"language\":\"");
    out.extend_from_slice(head.language.name().as_bytes());
    out.extend_from_slice(b"\",\"opaque\":");
    put_int(out, head.opaque);
    if let Some(remark) = head.remark {
        out.extend_from_slice(b",\"remark\":");
        put_string(out, remark);
    }
    out.extend_from_slice(b",\"serializeTypeCurrentRPC\":\"JSON\",\"version\":");
    put_int(out, head.version);
    out.put_u8(b'}');
}

/// Writes ext fields as members of the `extFields` object, which the caller opened.
struct JsonExtWriter<'a> {
    out: &'a mut BytesMut,
    first: bool,
}

impl JsonExtWriter<'_> {
    /// Writes `"key":"` (with the separating comma unless it is the first member), leaving the
    /// value's string open.
    fn open_member(&mut self, key: &str) {
        if self.first {
            self.first = false;
            self.out.put_u8(b'"');
        } else {
            self.out.extend_from_slice(b",\"");
        }
        put_string_contents(self.out, key);
        self.out.extend_from_slice(b"\":\"");
    }
}

impl ExtWriter for JsonExtWriter<'_> {
    fn put_str(&mut self, key: &str, value: &str) {
        self.open_member(key);
        put_string_contents(self.out, value);
        self.out.put_u8(b'"');
    }

    /// Formats the digits straight into the output: they never need escaping.
    fn put_i64(&mut self, key: &str, value: i64) {
        self.open_member(key);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self.out.put_u8(b'"');
    }

    fn put_bool(&mut self, key: &str, value: bool) {
        self.open_member(key);
        self.out
            .extend_from_slice(if value { b"true\"" } else { b"false\"" });
    }
}

fn put_int(out: &mut BytesMut, value: i32) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Writes `text` as a JSON string, escaping quotes, backslashes and control characters.
pub(crate) fn put_string(out: &mut BytesMut, text: &str) {
    out.put_u8(b'"');
    put_string_contents(out, text);
    out.put_u8(b'"');
}

/// Writes `text` escaped, without the quotes. Text without special bytes (nearly all header text)
/// is found with [`plain_run`] and copied in one piece; otherwise each plain run is copied whole
/// and each special byte escaped.
fn put_string_contents(out: &mut BytesMut, text: &str) {
    let mut rest = text.as_bytes();
    loop {
        let run = plain_run(rest);
        out.extend_from_slice(&rest[..run]);
        let Some((&byte, after)) = rest[run..].split_first() else {
            return;
        };
        put_escape(out, byte);
        rest = after;
    }
}

/// Writes the escape of one [`is_special`] byte: the short form where JSON has one, `\u00XX`
/// otherwise.
fn put_escape(out: &mut BytesMut, byte: u8) {
    let escape: &[u8] = match byte {
        b'"' => b"\\\"",
        b'\\' => b"\\\\",
        b'\n' => b"\\n",
        b'\r' => b"\\r",
        b'\t' => b"\\t",
        0x08 => b"\\b",
        0x0C => b"\\f",
        _ => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xF)],
            ]);
            return;
        }
    };
    out.extend_from_slice(escape);
}
