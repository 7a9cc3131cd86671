//! What can be checked before anything is sent: topic names, reserved properties, sizes, batch
//! rules, and the properties' length (an i16 in the record).

use ringmq_protocol::message::properties::{MAX_PROPERTIES_BYTES, keys};
use ringmq_protocol::topic::{self, ShownTopic};

use super::encode::Single;
use super::settings::ProducerSettings;
use super::state::ProducerState;
use crate::error::{ClientError, Result};
use crate::message::Message;
use crate::route::AUTO_CREATE_TOPIC;

/// Prefix of consumer retry topics, which batches may not target.
use ringmq_protocol::topic::RETRY_PREFIX as RETRY_TOPIC_PREFIX;

/// A topic name the broker would accept (checked here so a bad name fails at once instead of
/// being retried on every broker as the SYSTEM_ERROR the broker answers).
fn validate_topic(topic: &str) -> Result<()> {
    if let Err(error) = topic::validate_topic(topic) {
        return Err(ClientError::InvalidArgument(format!(
            "topic {}: {error}",
            ShownTopic(topic)
        )));
    }
    if topic == AUTO_CREATE_TOPIC {
        return Err(ClientError::InvalidArgument(format!(
            "topic {topic:?} is the auto-creation template"
        )));
    }
    Ok(())
}

/// Checks what can be checked without the broker: topic, reserved property names, body size.
pub(crate) fn validate_message(message: &Message, settings: &ProducerSettings) -> Result<()> {
    validate_topic(message.topic())?;
    if let Some(name) = message.reserved_property() {
        return Err(ClientError::InvalidArgument(format!(
            "property {name} is reserved; set it through its own Message method"
        )));
    }
    if message.body().len() > settings.max_message_bytes {
        return Err(ClientError::InvalidArgument(format!(
            "message body of {} bytes is over the {} byte limit",
            message.body().len(),
            settings.max_message_bytes
        )));
    }
    Ok(())
}

/// Java's batch rules: not empty, one topic, no delay level, not a retry topic, one WAIT value.
pub(crate) fn validate_batch(messages: &[Message], settings: &ProducerSettings) -> Result<()> {
    let Some(first) = messages.first() else {
        return Err(ClientError::InvalidArgument(
            "a batch needs a message".into(),
        ));
    };
    for message in messages {
        validate_message(message, settings)?;
        let problem = if message.topic() != first.topic() {
            "messages of one batch must share a topic"
        } else if message.delay_level() > 0 {
            "delay levels are not supported in batches"
        } else if message.topic().starts_with(RETRY_TOPIC_PREFIX) {
            "retry topics are not supported in batches"
        } else if message.wait_store_ok() != first.wait_store_ok() {
            "messages of one batch must share wait_store_ok"
        } else {
            continue;
        };
        return Err(ClientError::InvalidArgument(problem.into()));
    }
    Ok(())
}

/// Checks a single message and gives it its id.
pub(crate) fn prepare(state: &ProducerState, message: Message) -> Result<Single> {
    validate_message(&message, state.settings())?;
    identify(state, message)
}

/// Gives a checked message its id; its properties must fit a record. Writing them is the exact
/// check, done only when a cheap upper bound does not already prove they fit.
pub(crate) fn identify(state: &ProducerState, message: Message) -> Result<Single> {
    let unique_id = state.ids.next_id();
    if properties_len_bound(&message, &unique_id) > MAX_PROPERTIES_BYTES {
        state.check_properties(&message, &unique_id)?;
    }
    Ok(Single { message, unique_id })
}

/// At least the length of the properties string [`Message::write_properties`] writes: every
/// entry it may write, at its longest, plus its two separator characters.
fn properties_len_bound(message: &Message, unique_id: &str) -> usize {
    let entry = |name: &str, value_len: usize| name.len() + value_len + 2;
    let keys_len = message.keys().iter().map(|key| key.len() + 1).sum();
    let user: usize = message
        .properties()
        .iter()
        .map(|(name, value)| entry(name, value.len()))
        .sum();
    entry(keys::TAGS, message.tags().map_or(0, str::len))
        + entry(keys::KEYS, keys_len)
        + entry(keys::DELAY, 10)
        + entry(keys::WAIT, 5)
        + entry(keys::UNIQ_KEY, unique_id.len())
        + user
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::state::tests::{settings, state};

    #[test]
    fn invalid_messages_are_refused_before_sending() {
        let settings = settings();
        let refused = |message: Message| {
            matches!(
                validate_message(&message, &settings),
                Err(ClientError::InvalidArgument(_))
            )
        };
        assert!(refused(Message::new("", "b")));
        assert!(refused(Message::new("a b", "b")));
        assert!(refused(Message::new("t".repeat(128), "b")));
        assert!(refused(Message::new("TBW102", "b")));
        assert!(refused(
            Message::new("t", "b").with_property("UNIQ_KEY", "x")
        ));
        assert!(refused(Message::new("t", vec![0u8; 65])));
        assert!(!refused(Message::new("t", vec![0u8; 64])));

        let batch_refused = |messages: &[Message]| validate_batch(messages, &settings).is_err();
        assert!(batch_refused(&[]));
        assert!(batch_refused(&[
            Message::new("a", "1"),
            Message::new("b", "2")
        ]));
        assert!(batch_refused(&[Message::new("a", "1").with_delay_level(2)]));
        assert!(batch_refused(&[Message::new("%RETRY%g", "1")]));
        assert!(batch_refused(&[
            Message::new("a", "1"),
            Message::new("a", "2").with_wait_store_ok(false)
        ]));
        assert!(!batch_refused(&[
            Message::new("a", "1"),
            Message::new("a", "2")
        ]));

        let state = state();
        let huge = Message::new("t", "b").with_property("big", "v".repeat(MAX_PROPERTIES_BYTES));
        assert!(state.check_properties(&huge, "id").is_err());
    }

    #[test]
    fn properties_bound_is_never_below_the_written_length() {
        let state = state();
        let messages = [
            Message::new("t", "b"),
            Message::new("t", "b")
                .with_tags("tag")
                .with_keys(["a", "bb", "ccc"])
                .with_delay_level(18)
                .with_wait_store_ok(false)
                .with_property("x", "y")
                .with_property("long", "v".repeat(1000)),
        ];
        for message in messages {
            let id = state.ids.next_id();
            let written = state.check_properties(&message, &id).unwrap();
            assert!(properties_len_bound(&message, &id) >= written);
        }
        // Too long: refused by the exact check the bound triggers.
        let huge = Message::new("t", "b").with_property("big", "v".repeat(MAX_PROPERTIES_BYTES));
        assert!(matches!(
            identify(&state, huge),
            Err(ClientError::InvalidArgument(_))
        ));
    }
}
