//! Topic names: the one rule every component applies, and the names RocketMQ reserves.
//!
//! The rule is Apache RocketMQ 4.9.8's `TopicValidator`: not blank, only `[%|a-zA-Z0-9_-]`, at
//! most [`TOPIC_MAX_BYTES`] bytes. Clients check it before sending, the broker before creating
//! or storing a topic, the store before a name becomes a directory: all through
//! [`validate_topic`], so they never disagree. The alphabet has no `.` or `/`, so a valid name is
//! always a safe single path component.

use std::fmt;

/// Longest topic name. A v1 stored record keeps the topic length in one signed byte
/// (docs/protocol.md §5.4), and RocketMQ 4.9.8 refuses longer names with the same limit.
pub const TOPIC_MAX_BYTES: usize = 127;

/// The template topic that automatic topic creation copies (RocketMQ `TBW102`).
pub const AUTO_CREATE_TEMPLATE: &str = "TBW102";
/// Prefix of a consumer group's retry topic (`%RETRY%group`).
pub const RETRY_PREFIX: &str = "%RETRY%";
/// Prefix of a consumer group's dead-letter topic (`%DLQ%group`).
pub const DLQ_PREFIX: &str = "%DLQ%";

/// The schedule topic delayed messages wait in.
pub const SCHEDULE_TOPIC: &str = "SCHEDULE_TOPIC_XXXX";
/// The topic transactional half messages wait in.
pub const TRANS_HALF_TOPIC: &str = "RMQ_SYS_TRANS_HALF_TOPIC";
/// The topic recording commit/rollback decisions for half messages.
pub const TRANS_OP_HALF_TOPIC: &str = "RMQ_SYS_TRANS_OP_HALF_TOPIC";
/// The default message-trace topic: Java clients with tracing on send their trace records here.
pub const TRACE_TOPIC: &str = "RMQ_SYS_TRACE_TOPIC";
/// Prefix RocketMQ reserves for system topics.
pub const SYSTEM_TOPIC_PREFIX: &str = "rmq_sys_";

/// RocketMQ's system topics: the broker's own, plus any name starting with
/// [`SYSTEM_TOPIC_PREFIX`]. Admin tools refuse to create or delete them as ordinary topics.
pub const SYSTEM_TOPICS: [&str; 10] = [
    AUTO_CREATE_TEMPLATE,
    SCHEDULE_TOPIC,
    "BenchmarkTest",
    TRANS_HALF_TOPIC,
    TRACE_TOPIC,
    TRANS_OP_HALF_TOPIC,
    "TRANS_CHECK_MAX_TIME_TOPIC",
    "SELF_TEST_TOPIC",
    "OFFSET_MOVED_EVENT",
    "SCHEDULE_TOPIC_XXXX_V2",
];

/// Topics producers may not send to: internal queues only the broker writes. This is Apache
/// RocketMQ's list plus the auto-creation template [`AUTO_CREATE_TEMPLATE`], which RingMQ also
/// refuses since nothing ever consumes it. The trace topic is not on it: tracing clients write
/// there.
pub const SEND_FORBIDDEN_TOPICS: [&str; 8] = [
    AUTO_CREATE_TEMPLATE,
    SCHEDULE_TOPIC,
    TRANS_HALF_TOPIC,
    TRANS_OP_HALF_TOPIC,
    "TRANS_CHECK_MAX_TIME_TOPIC",
    "SELF_TEST_TOPIC",
    "OFFSET_MOVED_EVENT",
    "SCHEDULE_TOPIC_XXXX_V2",
];

/// Whether `topic` is one of RocketMQ's system topics.
pub fn is_system_topic(topic: &str) -> bool {
    SYSTEM_TOPICS.contains(&topic) || topic.starts_with(SYSTEM_TOPIC_PREFIX)
}

/// Whether producers may send to `topic` (see [`SEND_FORBIDDEN_TOPICS`]).
pub fn is_send_allowed(topic: &str) -> bool {
    !SEND_FORBIDDEN_TOPICS.contains(&topic)
}

/// Why a topic name was refused. The messages are Apache RocketMQ's, so tools that match on
/// them keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameError {
    /// Empty or only whitespace.
    #[error("The specified topic is blank.")]
    Blank,
    /// Longer than [`TOPIC_MAX_BYTES`].
    #[error("The specified topic is longer than topic max length.")]
    TooLong {
        /// The name's length in bytes.
        len: usize,
    },
    /// A byte outside `[%|a-zA-Z0-9_-]`.
    #[error("The specified topic contains illegal characters, allowing only ^[%|a-zA-Z0-9_-]+$")]
    IllegalCharacters,
}

/// Checks `topic` against RocketMQ's topic rule.
pub fn validate_topic(topic: &str) -> Result<(), TopicNameError> {
    if topic.trim().is_empty() {
        return Err(TopicNameError::Blank);
    }
    if !topic.bytes().all(is_topic_byte) {
        return Err(TopicNameError::IllegalCharacters);
    }
    if topic.len() > TOPIC_MAX_BYTES {
        return Err(TopicNameError::TooLong { len: topic.len() });
    }
    Ok(())
}

/// Whether `topic` passes [`validate_topic`].
pub fn is_valid_topic(topic: &str) -> bool {
    validate_topic(topic).is_ok()
}

/// One byte of RocketMQ's topic alphabet.
const fn is_topic_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'%' | b'|' | b'_' | b'-')
}

/// A topic name quoted for an error message, cut at 64 characters so a hostile name cannot
/// flood a log line.
#[derive(Debug, Clone, Copy)]
pub struct ShownTopic<'a>(pub &'a str);

impl fmt::Display for ShownTopic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN_CHARS_MAX: usize = 64;
        match self.0.char_indices().nth(SHOWN_CHARS_MAX) {
            Some((cut, _)) => write!(f, "{:?}...", &self.0[..cut]),
            None => write!(f, "{:?}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_rocketmq_alphabet() {
        for name in ["TopicTest", "%RETRY%group_1", "%DLQ%g", "a|b", "x-y_z", "9"] {
            assert_eq!(validate_topic(name), Ok(()), "{name}");
        }
        assert_eq!(validate_topic(&"t".repeat(TOPIC_MAX_BYTES)), Ok(()));
    }

    #[test]
    fn refuses_what_rocketmq_refuses() {
        assert_eq!(validate_topic(""), Err(TopicNameError::Blank));
        assert_eq!(validate_topic("  "), Err(TopicNameError::Blank));
        for name in [
            "a.b",
            ".",
            "..",
            "a/b",
            "bad topic",
            "tópico",
            "a\0b",
            "a:b",
        ] {
            assert_eq!(
                validate_topic(name),
                Err(TopicNameError::IllegalCharacters),
                "{name:?}"
            );
        }
        assert_eq!(
            validate_topic(&"t".repeat(TOPIC_MAX_BYTES + 1)),
            Err(TopicNameError::TooLong { len: 128 })
        );
    }

    #[test]
    fn reserved_topics() {
        assert!(is_system_topic("rmq_sys_anything"));
        assert!(is_system_topic(TRACE_TOPIC));
        assert!(is_send_allowed(TRACE_TOPIC));
        assert!(!is_send_allowed(SCHEDULE_TOPIC));
        assert!(!is_send_allowed(AUTO_CREATE_TEMPLATE));
        assert!(is_send_allowed("TopicTest"));
    }

    #[test]
    fn shown_topic_is_bounded() {
        assert_eq!(ShownTopic("abc").to_string(), "\"abc\"");
        let long = "x".repeat(1000);
        assert!(ShownTopic(&long).to_string().len() < 80);
    }
}
