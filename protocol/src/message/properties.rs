//! The message properties string (docs/protocol.md §5.1) and its reserved keys (§5.2).
//!
//! Encoding: `name \x01 value \x02` per property. Java and the Rust client drop the final `\x02`,
//! ali-ons keeps it. Decoding follows Java: split on `\x02`, split each segment at its first
//! `\x01`, keep the pair only if both sides are non-empty; malformed segments are skipped, so the
//! trailing separator is harmless. Reading never allocates: [`Properties`] iterates over the
//! original text.

use std::fmt;

/// Separator between a name and its value.
pub const NAME_VALUE_SEPARATOR: char = '\u{1}';
/// Separator between properties.
pub const PROPERTY_SEPARATOR: char = '\u{2}';
/// Maximum encoded length: the record stores it in an i16.
pub const MAX_PROPERTIES_BYTES: usize = i16::MAX as usize;

/// Reserved property keys (docs/protocol.md §5.2).
pub mod keys {
    /// Business keys, space separated (indexed).
    pub const KEYS: &str = "KEYS";
    /// The message tag.
    pub const TAGS: &str = "TAGS";
    /// `"false"` skips waiting for flush/replication before answering.
    pub const WAIT: &str = "WAIT";
    /// Delay level.
    pub const DELAY: &str = "DELAY";
    /// Original topic of a message in `%RETRY%<group>`.
    pub const RETRY_TOPIC: &str = "RETRY_TOPIC";
    /// Real topic of a delayed or half message.
    pub const REAL_TOPIC: &str = "REAL_TOPIC";
    /// Real queue id of a delayed or half message.
    pub const REAL_QID: &str = "REAL_QID";
    /// `"true"` marks a transaction half message.
    pub const TRAN_MSG: &str = "TRAN_MSG";
    /// Producer group of a transaction.
    pub const PGROUP: &str = "PGROUP";
    /// Set client-side on pulled messages.
    pub const MIN_OFFSET: &str = "MIN_OFFSET";
    /// Set client-side on pulled messages.
    pub const MAX_OFFSET: &str = "MAX_OFFSET";
    /// Legacy.
    pub const BUYER_ID: &str = "BUYER_ID";
    /// Original msgId of a retried message.
    pub const ORIGIN_MESSAGE_ID: &str = "ORIGIN_MESSAGE_ID";
    /// Legacy.
    pub const TRANSFER_FLAG: &str = "TRANSFER_FLAG";
    /// Legacy.
    pub const CORRECTION_FLAG: &str = "CORRECTION_FLAG";
    /// Legacy (4.x only).
    pub const MQ2_FLAG: &str = "MQ2_FLAG";
    /// Used when a client re-sends a failed message itself.
    pub const RECONSUME_TIME: &str = "RECONSUME_TIME";
    /// Region id.
    pub const MSG_REGION: &str = "MSG_REGION";
    /// Trace switch.
    pub const TRACE_ON: &str = "TRACE_ON";
    /// Client-generated unique message id.
    pub const UNIQ_KEY: &str = "UNIQ_KEY";
    /// Per-message maximum retries.
    pub const MAX_RECONSUME_TIMES: &str = "MAX_RECONSUME_TIMES";
    /// Client-side consume start time.
    pub const CONSUME_START_TIME: &str = "CONSUME_START_TIME";
    /// Broker-internal (transactions).
    pub const TRAN_PREPARED_QUEUE_OFFSET: &str = "TRAN_PREPARED_QUEUE_OFFSET";
    /// Broker-internal (transactions).
    pub const TRANSACTION_CHECK_TIMES: &str = "TRANSACTION_CHECK_TIMES";
    /// First transaction check delay override.
    pub const CHECK_IMMUNITY_TIME_IN_SECONDS: &str = "CHECK_IMMUNITY_TIME_IN_SECONDS";
    /// Namespace instance.
    pub const INSTANCE_ID: &str = "INSTANCE_ID";
    /// Request-reply: correlation id.
    pub const CORRELATION_ID: &str = "CORRELATION_ID";
    /// Request-reply: reply-to client.
    pub const REPLY_TO_CLIENT: &str = "REPLY_TO_CLIENT";
    /// Request-reply: time to live.
    pub const TTL: &str = "TTL";
    /// Request-reply: arrive time.
    pub const ARRIVE_TIME: &str = "ARRIVE_TIME";
    /// Request-reply: push reply time.
    pub const PUSH_REPLY_TIME: &str = "PUSH_REPLY_TIME";
    /// Request-reply: message type (`reply`).
    pub const MSG_TYPE: &str = "MSG_TYPE";
    /// Added by the broker on store: cluster name.
    pub const CLUSTER: &str = "CLUSTER";
    /// Light message queue dispatch (4.9.3+).
    pub const INNER_MULTI_DISPATCH: &str = "INNER_MULTI_DISPATCH";
    /// Light message queue offsets (4.9.3+).
    pub const INNER_MULTI_QUEUE_OFFSET: &str = "INNER_MULTI_QUEUE_OFFSET";
    /// Aliyun ONS timed delivery (ignored by open-source brokers).
    pub const START_DELIVER_TIME: &str = "__STARTDELIVERTIME";
}

/// A read-only view of a properties string.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Properties<'a> {
    text: &'a str,
}

impl<'a> Properties<'a> {
    /// Views `text` as a properties string.
    pub const fn new(text: &'a str) -> Self {
        Self { text }
    }

    /// The raw text.
    pub const fn as_str(&self) -> &'a str {
        self.text
    }

    /// The valid (name, value) pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.text.split(PROPERTY_SEPARATOR).filter_map(|segment| {
            let (name, value) = segment.split_once(NAME_VALUE_SEPARATOR)?;
            (!name.is_empty() && !value.is_empty()).then_some((name, value))
        })
    }

    /// The value of `name`; the last occurrence wins, as in Java's map.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.iter()
            .filter(|(key, _)| *key == name)
            .last()
            .map(|(_, value)| value)
    }
}

impl fmt::Debug for Properties<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Builds a properties string into a caller-owned `String` (reuse it across messages).
#[derive(Debug)]
pub struct PropertiesWriter<'a> {
    out: &'a mut String,
}

impl<'a> PropertiesWriter<'a> {
    /// Appends properties to `out`, which may already hold some.
    pub fn new(out: &'a mut String) -> Self {
        Self { out }
    }

    /// Appends one property. Empty names or values are skipped: they would not survive decoding,
    /// and names or values containing a separator character would corrupt the string, so those
    /// are skipped too. Returns whether the property was written.
    pub fn put(&mut self, name: &str, value: &str) -> bool {
        let clean = |text: &str| {
            !text.is_empty() && !text.contains([NAME_VALUE_SEPARATOR, PROPERTY_SEPARATOR])
        };
        if !clean(name) || !clean(value) {
            return false;
        }
        if !self.out.is_empty() && !self.out.ends_with(PROPERTY_SEPARATOR) {
            self.out.push(PROPERTY_SEPARATOR);
        }
        self.out.push_str(name);
        self.out.push(NAME_VALUE_SEPARATOR);
        self.out.push_str(value);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_java_and_ali_ons_forms() {
        let java = Properties::new("TAGS\u{1}TagA\u{2}KEYS\u{1}k1 k2\u{2}WAIT\u{1}true");
        assert_eq!(java.get(keys::TAGS), Some("TagA"));
        assert_eq!(java.get(keys::KEYS), Some("k1 k2"));
        let ali = Properties::new("TAGS\u{1}null\u{2}WAIT\u{1}true\u{2}");
        assert_eq!(ali.iter().count(), 2);
        assert_eq!(ali.get(keys::TAGS), Some("null"));
    }

    #[test]
    fn skips_malformed_segments() {
        let props =
            Properties::new("\u{2}\u{2}A\u{1}\u{2}\u{1}B\u{2}NOVALUE\u{2}K\u{1}V\u{1}W\u{2}");
        let pairs: Vec<_> = props.iter().collect();
        assert_eq!(pairs, vec![("K", "V\u{1}W")]);
    }

    #[test]
    fn writer_joins_without_trailing_separator() {
        let mut text = String::new();
        let mut writer = PropertiesWriter::new(&mut text);
        assert!(writer.put("TAGS", "TagA"));
        assert!(!writer.put("BAD", ""));
        assert!(!writer.put("X\u{1}", "y"));
        assert!(writer.put("KEYS", "k"));
        assert_eq!(text, "TAGS\u{1}TagA\u{2}KEYS\u{1}k");
    }
}
