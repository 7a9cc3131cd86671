//! `send` and `consume`: one message, for smoke tests, through the client library's
//! [`Producer`] and [`PullConsumer`] on the admin handle's client instance (one I/O thread,
//! one connection per server).

use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use ringmq_client::admin::Admin;
use ringmq_client::{
    ClientError, Message, MessageQueue, Producer, PullConsumer, ReceivedMessage, SendResult,
    SendStatus, StartPosition,
};
use serde_json::json;

use super::output::{Rendered, key_values, message_json, message_text};
use super::{EXIT_UNREACHABLE, Failure, Outcome};

/// Producer group of `send`.
const PRODUCER_GROUP: &str = "ringmq-admin";
/// Consumer group of `consume` without `-g`: RocketMQ's tools group
/// (`MixAll.TOOLS_CONSUMER_GROUP`). Its committed offsets are neither used nor advanced.
const TOOLS_GROUP: &str = "TOOLS_CONSUMER";

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
    /// Without it every queue starts at `--from` and nothing is committed.
    #[arg(short = 'g', long)]
    group: Option<String>,
    /// Where to start in queues without a committed offset. With a group, RocketMQ's rule
    /// applies: a queue still holding its first message is read from there.
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

pub fn send(admin: &Admin, args: &SendArgs, timeout: Duration) -> Outcome {
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
    // The NameServers come from the shared instance.
    let producer = Producer::builder("")
        .instance(admin.instance().clone())
        .group(PRODUCER_GROUP)
        .send_timeout(timeout)
        .build()?;
    let sent = producer.send(message).wait();
    producer.shutdown();
    Ok(send_result(&sent?))
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
    let deadline = Instant::now() + wait;
    let start_position = match args.from {
        From::First => StartPosition::First,
        From::Last => StartPosition::Last,
    };
    let group = args.group.as_deref().unwrap_or(TOOLS_GROUP);
    // The NameServers come from the shared instance.
    let consumer = PullConsumer::builder("", group)
        .instance(admin.instance().clone())
        .start_position(start_position)
        .pull_batch_size(1)
        .build()?;
    let consumed = consume_one(admin, &consumer, args, deadline);
    consumer.shutdown();
    match consumed? {
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

/// Polls every readable queue of the topic until one message arrives or `deadline` passes;
/// with a group, stores its offset past that message (and for no other queue).
fn consume_one(
    admin: &Admin,
    consumer: &PullConsumer,
    args: &ConsumeArgs,
    deadline: Instant,
) -> Result<Option<ReceivedMessage>, ClientError> {
    let queues = consumer.queues(&args.topic).wait()?;
    consumer.assign(queues.clone()).wait()?;
    if args.group.is_none() {
        // The tools group's offsets are not ours, and a broker answers 0 for a group that never
        // committed on a queue still holding its first message: place every queue ourselves.
        for status in admin.topic_status(&args.topic).wait()? {
            if queues.contains(&status.queue) {
                let offset = match args.from {
                    From::First => status.min_offset,
                    From::Last => status.max_offset,
                };
                consumer.seek(&status.queue, offset).wait()?;
            }
        }
    }
    // Bounded by the deadline: each poll returns by the time left.
    let (message, before) = loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Ok(None);
        }
        let before: Vec<Option<i64>> = queues.iter().map(|q| consumer.position(q)).collect();
        // A poll may return one message from each of several queues: the first is printed and
        // the others stay unconsumed (nothing commits their positions).
        if let Some(message) = consumer.poll(remaining).wait()?.into_iter().next() {
            break (message, before);
        }
    };
    if args.group.is_some() {
        let queue = queue_of(admin, consumer, &queues, &before, &message)?;
        // Only the message's queue stays assigned, so the commit leaves the others untouched.
        consumer.assign(vec![queue.clone()]).wait()?;
        consumer.seek(&queue, message.queue_offset + 1).wait()?;
        consumer.commit().wait()?;
    }
    Ok(Some(message))
}

/// The queue `message` was read from. A received message names its topic and queue id but not
/// its broker group: the queue is the one with that id whose position the poll moved across
/// the message's offset, or (when several broker groups qualify) the one whose broker stored
/// it.
fn queue_of(
    admin: &Admin,
    consumer: &PullConsumer,
    queues: &[MessageQueue],
    before: &[Option<i64>],
    message: &ReceivedMessage,
) -> Result<MessageQueue, ClientError> {
    let offset = message.queue_offset;
    let candidates: Vec<&MessageQueue> = queues
        .iter()
        .zip(before)
        .filter(|(queue, before)| {
            queue.topic == message.topic
                && queue.queue_id == message.queue_id
                && before.is_some_and(|from| from <= offset)
                && consumer.position(queue).is_some_and(|to| to > offset)
        })
        .map(|(queue, _)| queue)
        .collect();
    if let [queue] = candidates[..] {
        return Ok(queue.clone());
    }
    let store_host = message.store_host.to_string();
    let route = admin.topic_route(&message.topic).wait()?;
    candidates
        .into_iter()
        .find(|queue| {
            route.broker_datas.iter().any(|broker| {
                broker.broker_name == queue.broker_name
                    && broker.broker_addrs.values().any(|addr| *addr == store_host)
            })
        })
        .cloned()
        .ok_or_else(|| {
            ClientError::InvalidArgument(format!(
                "cannot tell which broker group's queue {} of topic {} holds the message \
                 stored by {store_host}: nothing committed",
                message.queue_id, message.topic
            ))
        })
}
