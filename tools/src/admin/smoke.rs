//! `send` and `consume`: one message, for smoke tests.
//!
//! Both go through [`Admin::send_one`] and [`Admin::consume_one`] (raw SEND_MESSAGE_V2 and
//! PULL_MESSAGE requests). The two functions here are the only places that would change to use
//! the producer and the pull consumer instead: their arguments and output stay the same.

use std::time::Duration;

use clap::{Args, ValueEnum};
use ringmq_client::admin::{Admin, ConsumeFrom, ConsumeOne};
use ringmq_client::{Message, SendResult, SendStatus};
use serde_json::json;

use super::output::{Rendered, key_values, message_json, message_text};
use super::{EXIT_UNREACHABLE, Failure, Outcome};

/// What to send.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Topic.
    #[arg(short = 't', long)]
    topic: String,
    /// Tag.
    #[arg(long)]
    tags: Option<String>,
    /// Keys, space- or comma-separated.
    #[arg(long)]
    keys: Option<String>,
    /// Message body (UTF-8 text).
    body: String,
}

/// What to consume.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic.
    #[arg(short = 't', long)]
    topic: String,
    /// Consumer group: start at its committed offsets and commit past the message printed.
    /// Without it nothing is committed.
    #[arg(short = 'g', long)]
    group: Option<String>,
    /// Where to start in queues without a committed offset.
    #[arg(long, value_enum, default_value_t = From::First)]
    from: From,
}

/// `--from` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum From {
    /// The oldest message still stored.
    First,
    /// The next message sent after the command starts.
    Last,
}

pub fn send(admin: &Admin, args: &SendArgs) -> Outcome {
    let mut message = Message::new(args.topic.clone(), args.body.clone().into_bytes());
    if let Some(tags) = &args.tags {
        message = message.with_tags(tags.clone());
    }
    if let Some(keys) = &args.keys {
        message = message.with_keys(
            keys.split([' ', ','])
                .filter(|key| !key.is_empty())
                .map(str::to_owned),
        );
    }
    let sent = admin.send_one(message).wait()?;
    Ok(send_result(&sent))
}

fn send_result(sent: &SendResult) -> Rendered {
    let status = match sent.status {
        SendStatus::SendOk => "SEND_OK",
        SendStatus::FlushDiskTimeout => "FLUSH_DISK_TIMEOUT",
        SendStatus::FlushSlaveTimeout => "FLUSH_SLAVE_TIMEOUT",
        SendStatus::SlaveNotAvailable => "SLAVE_NOT_AVAILABLE",
        _ => "UNKNOWN",
    };
    let text = key_values(&[
        ("Status".into(), status.into()),
        ("Msg id".into(), sent.msg_id.clone()),
        ("Offset msg id".into(), sent.offset_msg_id.clone()),
        ("Broker".into(), sent.queue.broker_name.clone()),
        ("Queue".into(), sent.queue.queue_id.to_string()),
        ("Queue offset".into(), sent.queue_offset.to_string()),
    ]);
    let json = json!({
        "status": status,
        "msgId": sent.msg_id,
        "offsetMsgId": sent.offset_msg_id,
        "brokerName": sent.queue.broker_name,
        "topic": sent.queue.topic,
        "queueId": sent.queue.queue_id,
        "queueOffset": sent.queue_offset,
        "regionId": sent.region_id,
    });
    Rendered::new(text, json)
}

pub fn consume(admin: &Admin, args: &ConsumeArgs, wait: Duration) -> Outcome {
    let from = match args.from {
        From::First => ConsumeFrom::First,
        From::Last => ConsumeFrom::Last,
    };
    let mut request = ConsumeOne::new(args.topic.clone(), from, wait);
    if let Some(group) = &args.group {
        request = request.with_group(group.clone());
    }
    match admin.consume_one(request).wait()? {
        Some(message) => Ok(Rendered::new(
            message_text(&message),
            message_json(&message),
        )),
        None => Err(Failure::new(
            EXIT_UNREACHABLE,
            format!(
                "no message of topic {} arrived within {} ms",
                args.topic,
                wait.as_millis()
            ),
        )),
    }
}
