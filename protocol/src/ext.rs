//! `extFields`: the string map every typed header travels in (docs/protocol.md §2.1), stored without
//! copying, and the writer interface that encodes typed headers without building a map at all.
//!
//! # Why spans instead of a `HashMap<String, String>`
//!
//! A SEND_MESSAGE_V2 header carries a dozen fields. Allocating two strings per field would cost
//! more than the rest of the decode together, on the hottest path of the broker. [`ExtFields`]
//! instead keeps the frame's header bytes (a cheap `Bytes` handle) and a small inline vector of
//! (key, value) spans into them. Only a JSON string with escape sequences needs new bytes; those go
//! into a side buffer owned by the map. A typical decode therefore allocates nothing.
//!
//! Lookups are a linear scan: with at most a few dozen keys that beats hashing, and it lets a
//! later duplicate key win, as it does in Java's `HashMap`.

#![allow(unsafe_code)]

use bytes::Bytes;
use smallvec::SmallVec;

/// Inline capacity of the span vector: enough for every standard header without spilling.
const INLINE_FIELDS: usize = 16;

/// Upper bound on the number of ext fields a decoded header may carry. The header itself is
/// bounded by the frame limit; this bounds the span vector a peer can make us allocate.
pub const MAX_EXT_FIELDS: usize = 4096;

/// Where a piece of text lives: in the shared header bytes or in the map's own side buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TextSpan {
    start: u32,
    len: u32,
    in_owned: bool,
}

impl TextSpan {
    pub(crate) fn shared(start: usize, len: usize) -> Self {
        Self {
            start: start as u32,
            len: len as u32,
            in_owned: false,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct FieldSpan {
    key: TextSpan,
    value: TextSpan,
}

/// The `extFields` string map of a command.
///
/// Invariant: `shared` and `owned` are valid UTF-8 for every span stored in `entries`, and every
/// span starts and ends on a character boundary. The decoders establish this (JSON headers are
/// validated as a whole and spans are delimited by ASCII quotes; binary header strings are
/// validated one by one), and [`ExtFields::insert`] only appends `&str` data.
#[derive(Clone, Default)]
pub struct ExtFields {
    shared: Bytes,
    owned: String,
    entries: SmallVec<[FieldSpan; INLINE_FIELDS]>,
}

impl ExtFields {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attaches the bytes that the spans pushed so far point into (a JSON header is scanned while
    /// still mutable and frozen only at the end).
    pub(crate) fn set_shared(&mut self, shared: Bytes) {
        self.shared = shared;
    }

    /// Stores `text` in the side buffer and returns its span (used for unescaped JSON strings).
    pub(crate) fn push_owned(&mut self, text: &str) -> TextSpan {
        let start = self.owned.len();
        self.owned.push_str(text);
        TextSpan {
            start: start as u32,
            len: text.len() as u32,
            in_owned: true,
        }
    }

    /// Appends a decoded (key, value) pair. The caller guarantees the span invariant.
    ///
    /// Inlined: called once per field on the decode path, and as a call the two spans went
    /// through memory in pieces, which stalled on store-to-load forwarding (a profile put 14%
    /// of a send-header decode here).
    #[inline]
    pub(crate) fn push_span(
        &mut self,
        key: TextSpan,
        value: TextSpan,
    ) -> Result<(), crate::HeaderError> {
        if self.entries.len() >= MAX_EXT_FIELDS {
            return Err(crate::HeaderError::TooManyFields {
                max: MAX_EXT_FIELDS,
            });
        }
        self.entries.push(FieldSpan { key, value });
        Ok(())
    }

    fn text(&self, span: TextSpan) -> &str {
        let (start, end) = (span.start as usize, span.start as usize + span.len as usize);
        if span.in_owned {
            &self.owned[start..end]
        } else {
            let bytes = &self.shared[start..end];
            debug_assert!(std::str::from_utf8(bytes).is_ok(), "ext span is not UTF-8");
            // SAFETY: the type invariant: every shared span was validated as UTF-8 and lies on
            // character boundaries before it was stored (see the decoders), and `shared` is
            // immutable `Bytes`, so the bytes cannot have changed since.
            unsafe { std::str::from_utf8_unchecked(bytes) }
        }
    }

    /// The value of `key`; with duplicate keys the last one wins, as with Java's `HashMap`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|entry| entry.key.len as usize == key.len() && self.text(entry.key) == key)
            .map(|entry| self.text(entry.value))
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`, replacing any earlier value.
    pub fn insert(&mut self, key: &str, value: &str) {
        self.remove(key);
        let key = self.push_owned(key);
        let value = self.push_owned(value);
        self.entries.push(FieldSpan { key, value });
    }

    /// Removes every entry for `key` (the text stays in the buffers until the map is dropped).
    pub fn remove(&mut self, key: &str) {
        let mut index = 0;
        while index < self.entries.len() {
            if self.text(self.entries[index].key) == key {
                self.entries.remove(index);
            } else {
                index += 1;
            }
        }
    }

    /// Number of entries (duplicates counted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.entries
            .iter()
            .map(|entry| (self.text(entry.key), self.text(entry.value)))
    }
}

impl std::fmt::Debug for ExtFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl PartialEq for ExtFields {
    /// Two maps are equal when they resolve every key to the same value.
    fn eq(&self, other: &Self) -> bool {
        self.iter().all(|(key, _)| self.get(key) == other.get(key))
            && other.iter().all(|(key, _)| self.get(key) == other.get(key))
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for ExtFields {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(iter: I) -> Self {
        let mut fields = Self::new();
        for (key, value) in iter {
            fields.insert(key, value);
        }
        fields
    }
}

/// A sink for ext fields: implemented by the JSON and binary header encoders, so a typed header
/// writes itself straight into the output buffer.
pub trait ExtWriter {
    /// Writes a string-valued field.
    fn put_str(&mut self, key: &str, value: &str);

    /// Writes an integer field as decimal text.
    fn put_i64(&mut self, key: &str, value: i64) {
        let mut buffer = itoa::Buffer::new();
        self.put_str(key, buffer.format(value));
    }

    /// Writes a boolean field as `true`/`false`.
    fn put_bool(&mut self, key: &str, value: bool) {
        self.put_str(key, if value { "true" } else { "false" });
    }
}

/// Something that can write itself as ext fields: every typed header, and [`ExtFields`] itself.
pub trait EncodeExt {
    /// Writes every field to `writer`.
    fn encode_ext<W: ExtWriter>(&self, writer: &mut W);
}

impl EncodeExt for ExtFields {
    fn encode_ext<W: ExtWriter>(&self, writer: &mut W) {
        for (key, value) in self.iter() {
            writer.put_str(key, value);
        }
    }
}

/// No ext fields at all (commands such as HEART_BEAT carry none).
impl EncodeExt for () {
    fn encode_ext<W: ExtWriter>(&self, _writer: &mut W) {}
}

impl<T: EncodeExt> EncodeExt for &T {
    fn encode_ext<W: ExtWriter>(&self, writer: &mut W) {
        (*self).encode_ext(writer);
    }
}

/// Two sets of fields written one after the other (a typed header plus extras).
impl<A: EncodeExt, B: EncodeExt> EncodeExt for (A, B) {
    fn encode_ext<W: ExtWriter>(&self, writer: &mut W) {
        self.0.encode_ext(writer);
        self.1.encode_ext(writer);
    }
}

/// Collects fields into an [`ExtFields`] (used to build a map from a typed header).
impl ExtWriter for ExtFields {
    fn put_str(&mut self, key: &str, value: &str) {
        self.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_and_last_duplicate_wins() {
        let mut fields = ExtFields::new();
        fields.insert("topic", "a");
        fields.insert("queueId", "1");
        fields.insert("topic", "b");
        assert_eq!(fields.get("topic"), Some("b"));
        assert_eq!(fields.len(), 2);
        fields.remove("topic");
        assert_eq!(fields.get("topic"), None);
        assert!(fields.contains("queueId"));
    }

    #[test]
    fn equality_ignores_order() {
        let left: ExtFields = [("a", "1"), ("b", "2")].into_iter().collect();
        let right: ExtFields = [("b", "2"), ("a", "1")].into_iter().collect();
        assert_eq!(left, right);
        let other: ExtFields = [("a", "1")].into_iter().collect();
        assert_ne!(left, other);
    }
}
