//! `message id` and `message key`.

use clap::Subcommand;
use ringmq_client::admin::Admin;
use ringmq_protocol::message::OffsetMessageId;
use serde_json::json;

use super::output::{Rendered, Table, format_time_ms, message_json, message_text};
use super::{EXIT_FAILED, Failure, Outcome};

/// Message lookups.
#[derive(Debug, Subcommand)]
pub enum MessageCommand {
    /// Print the message with this offset message id (as `send` prints it).
    Id {
        /// Offset message id: 32 (IPv4) or 56 (IPv6) hex characters.
        #[arg(value_parser = parse_offset_id)]
        offset_msg_id: String,
    },
    /// List the messages of a topic carrying a key.
    Key {
        /// Topic.
        #[arg(short = 't', long)]
        topic: String,
        /// Message key.
        #[arg(short = 'k', long)]
        key: String,
        /// Most messages to list.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=2048))]
        max: u32,
        /// Stored at or after this time, ms since the epoch.
        #[arg(long = "begin-ms", default_value_t = 0)]
        begin_ms: i64,
        /// Stored at or before this time, ms since the epoch.
        #[arg(long = "end-ms", default_value_t = i64::MAX)]
        end_ms: i64,
    },
}

/// Accepts only well-formed offset ids, so a typo is a usage error (exit 2).
fn parse_offset_id(text: &str) -> Result<String, String> {
    text.parse::<OffsetMessageId>()
        .map(|_| text.to_owned())
        .map_err(|error| error.to_string())
}

pub fn run(admin: &Admin, command: &MessageCommand) -> Outcome {
    match command {
        MessageCommand::Id { offset_msg_id } => {
            let message = admin.message_by_id(offset_msg_id).wait()?;
            Ok(Rendered::new(
                message_text(&message),
                message_json(&message),
            ))
        }
        MessageCommand::Key {
            topic,
            key,
            max,
            begin_ms,
            end_ms,
        } => {
            let messages = admin
                .messages_by_key(topic, key, *max as usize, *begin_ms, *end_ms)
                .wait()?;
            if messages.is_empty() {
                return Err(Failure::new(
                    EXIT_FAILED,
                    format!("no message of topic {topic} has key {key}"),
                ));
            }
            let mut table = Table::new([
                "MSG ID",
                "OFFSET MSG ID",
                "QUEUE",
                "OFFSET",
                "STORED",
                "TAGS",
            ]);
            for message in &messages {
                table.row(vec![
                    message.msg_id.clone(),
                    message.offset_msg_id.clone(),
                    message.queue_id.to_string(),
                    message.queue_offset.to_string(),
                    format_time_ms(message.store_timestamp_ms),
                    message.tags.clone().unwrap_or_default(),
                ]);
            }
            let json = json!({
                "topic": topic,
                "key": key,
                "messages": messages.iter().map(message_json).collect::<Vec<_>>(),
            });
            Ok(Rendered::new(table.render(), json))
        }
    }
}
