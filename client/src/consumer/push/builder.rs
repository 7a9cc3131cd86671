//! The push consumer's builder and the settings it fixes for a running consumer.

use std::path::PathBuf;
use std::time::Duration;

use ringmq_common::now_ms;
use ringmq_protocol::body::{ConsumeType, ConsumerData};

use super::PushConsumer;
use super::start_on;
use crate::config::ClientConfig;
use crate::consumer::{
    ConsumeContext, ConsumeMode, ConsumeOutcome, MAX_RECONSUME_TIMES, StartPosition, Subscription,
    retry_topic, validate_group,
};
use crate::error::{ClientError, Result};
use crate::instance::ClientInstance;
use crate::message::ReceivedMessage;

/// Default [`PushConsumerBuilder::pull_threshold_bytes_per_queue`]: 100 MiB.
pub(super) const DEFAULT_PULL_THRESHOLD_BYTES: u64 = 100 << 20;
/// Default [`PushConsumerBuilder::consume_concurrently_max_span`].
pub(super) const DEFAULT_MAX_SPAN: u64 = 2000;

/// Builds and starts a [`PushConsumer`].
///
/// Defaults: clustering, [`StartPosition::Last`], pulls of 32 messages, handler batches of 1,
/// rebalance every 20 s, offset commits every 5 s, broker long-poll hold 15 s, not orderly,
/// pulls of a queue paused while 1000 of its messages or 100 MiB of their bodies are not done
/// (and, concurrent mode, while the offsets not done span more than 2000), 16 redeliveries
/// before the dead-letter queue (orderly: unlimited local retries).
#[derive(Debug)]
#[must_use = "a builder does nothing until start is called"]
pub struct PushConsumerBuilder {
    namesrv_addrs: String,
    group: String,
    config: Option<ClientConfig>,
    instance: Option<ClientInstance>,
    subscriptions: Vec<(String, String)>,
    mode: ConsumeMode,
    start_position: StartPosition,
    batch_size: usize,
    pull_batch_size: u32,
    pull_threshold: usize,
    pull_threshold_bytes: u64,
    max_span: u64,
    max_reconsume_times: i32,
    rebalance_interval: Duration,
    commit_interval: Duration,
    long_poll_timeout: Duration,
    orderly: bool,
    offset_store_dir: Option<PathBuf>,
    shutdown_timeout: Duration,
}

impl PushConsumerBuilder {
    pub(super) fn new(namesrv_addrs: &str, group: &str) -> Self {
        Self {
            namesrv_addrs: namesrv_addrs.to_owned(),
            group: group.to_owned(),
            config: None,
            instance: None,
            subscriptions: Vec::new(),
            mode: ConsumeMode::Clustering,
            start_position: StartPosition::Last,
            batch_size: 1,
            pull_batch_size: 32,
            pull_threshold: 1000,
            pull_threshold_bytes: DEFAULT_PULL_THRESHOLD_BYTES,
            max_span: DEFAULT_MAX_SPAN,
            max_reconsume_times: -1,
            rebalance_interval: Duration::from_secs(20),
            commit_interval: Duration::from_secs(5),
            long_poll_timeout: Duration::from_secs(15),
            orderly: false,
            offset_store_dir: None,
            shutdown_timeout: Duration::from_secs(30),
        }
    }

    /// Client settings for the consumer's own client instance (ignored with
    /// [`Self::instance`]). Default: [`ClientConfig::new`] of the NameServer addresses.
    pub fn config(mut self, config: ClientConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// Shares an existing client instance (its I/O thread and connections) instead of starting
    /// one. A shared instance is not shut down with the consumer.
    pub fn instance(mut self, instance: ClientInstance) -> Self {
        self.instance = Some(instance);
        self
    }

    /// Subscribes to `topic` with a tag expression: `*` for every message, or tags separated by
    /// `||` (`"paid || refunded"`). Subscribing to a topic again replaces its expression.
    pub fn subscribe(mut self, topic: &str, tag_expression: &str) -> Self {
        self.subscriptions.retain(|(existing, _)| existing != topic);
        self.subscriptions
            .push((topic.to_owned(), tag_expression.to_owned()));
        self
    }

    /// Clustering (queues split between members) or broadcasting (every member reads all).
    pub const fn mode(mut self, mode: ConsumeMode) -> Self {
        self.mode = mode;
        self
    }

    /// Where the group starts a queue it has no committed offset for.
    pub const fn start_position(mut self, position: StartPosition) -> Self {
        self.start_position = position;
        self
    }

    /// Most messages (all of one queue) per handler call.
    pub const fn batch_size(mut self, messages: usize) -> Self {
        self.batch_size = messages;
        self
    }

    /// Most messages per pull (a RingMQ or RocketMQ broker returns at most 32).
    pub const fn pull_batch_size(mut self, messages: u32) -> Self {
        self.pull_batch_size = messages;
        self
    }

    /// Pulls of a queue pause while this many of its messages are pulled and not yet done
    /// (flow control; RocketMQ `pullThresholdForQueue`).
    pub const fn pull_threshold_per_queue(mut self, messages: usize) -> Self {
        self.pull_threshold = messages;
        self
    }

    /// Pulls of a queue also pause while the bodies of its messages pulled and not yet done
    /// take more than this many bytes (RocketMQ `pullThresholdSizeForQueue`, 100 MiB).
    pub const fn pull_threshold_bytes_per_queue(mut self, bytes: u64) -> Self {
        self.pull_threshold_bytes = bytes;
        self
    }

    /// Concurrent consumers: pulls of a queue pause while its oldest message not done is more
    /// than this many offsets behind its newest pulled one (RocketMQ
    /// `consumeConcurrentlyMaxSpan`, 2000), so one stuck message cannot let the uncommitted
    /// range grow without bound. Orderly consumers handle a queue in order and ignore it.
    pub const fn consume_concurrently_max_span(mut self, offsets: u64) -> Self {
        self.max_span = offsets;
        self
    }

    /// How often a failed message is retried before it goes to the group's dead-letter queue
    /// (RocketMQ `maxReconsumeTimes`). -1 (the default) means RocketMQ's defaults: 16 broker
    /// redeliveries for a concurrent consumer, unlimited local retries for an orderly one.
    pub const fn max_reconsume_times(mut self, times: i32) -> Self {
        self.max_reconsume_times = times;
        self
    }

    /// How often queues are re-split even without a membership change notice.
    pub const fn rebalance_interval(mut self, interval: Duration) -> Self {
        self.rebalance_interval = interval;
        self
    }

    /// How often consumed offsets are committed.
    pub const fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    /// How long a broker may hold a pull while the queue has nothing new (long polling).
    pub const fn long_poll_timeout(mut self, timeout: Duration) -> Self {
        self.long_poll_timeout = timeout;
        self
    }

    /// Orderly consumption: queues are locked at the broker before they are pulled, and each
    /// queue's messages reach the handler strictly in order, one batch at a time.
    pub const fn orderly(mut self, orderly: bool) -> Self {
        self.orderly = orderly;
        self
    }

    /// Directory of a broadcasting consumer's offset file (default `~/.ringmq_offsets`); the
    /// file is `<dir>/<instance name or DEFAULT>/<group>/offsets.json`.
    pub fn offset_store_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.offset_store_dir = Some(dir.into());
        self
    }

    /// How long [`PushConsumer::shutdown`] waits for a running handler batch.
    pub const fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    fn validate(&self) -> Result<()> {
        validate_group(&self.group)?;
        if self.subscriptions.is_empty() {
            return Err(ClientError::InvalidArgument(
                "a push consumer needs at least one subscription".into(),
            ));
        }
        if let Some((topic, _)) = self
            .subscriptions
            .iter()
            .find(|(topic, _)| topic.is_empty())
        {
            return Err(ClientError::InvalidArgument(format!(
                "subscription topic {topic:?} is empty"
            )));
        }
        if self.batch_size == 0
            || self.pull_batch_size == 0
            || self.pull_threshold == 0
            || self.pull_threshold_bytes == 0
            || self.max_span == 0
        {
            return Err(ClientError::InvalidArgument(
                "batch_size, pull_batch_size, pull_threshold_per_queue, \
                 pull_threshold_bytes_per_queue and consume_concurrently_max_span must be at least 1"
                    .into(),
            ));
        }
        if self.max_reconsume_times < -1 {
            return Err(ClientError::InvalidArgument(format!(
                "max_reconsume_times {} must be -1 (default) or at least 0",
                self.max_reconsume_times
            )));
        }
        for (name, value) in [
            ("rebalance_interval", self.rebalance_interval),
            ("commit_interval", self.commit_interval),
        ] {
            if value.is_zero() {
                return Err(ClientError::InvalidArgument(format!(
                    "{name} must not be zero"
                )));
            }
        }
        Ok(())
    }

    /// Starts the consumer: joins the group, takes its share of the queues (the first rebalance
    /// runs before this returns) and starts pulling. `handler` runs on the consumer's own
    /// thread with batches of one queue's messages; see [`ConsumeOutcome`] for what its answer
    /// does.
    pub fn start<H>(self, handler: H) -> Result<PushConsumer>
    where
        H: FnMut(&[ReceivedMessage], &ConsumeContext) -> ConsumeOutcome + Send + 'static,
    {
        self.validate()?;
        let settings = PushSettings::from_builder(&self);
        let (instance, owns_instance) = if let Some(instance) = self.instance {
            (instance, false)
        } else {
            let config = self
                .config
                .unwrap_or_else(|| ClientConfig::new(&self.namesrv_addrs));
            (ClientInstance::new(config)?, true)
        };
        let result = start_on(
            &instance,
            settings,
            self.offset_store_dir,
            self.shutdown_timeout,
            handler,
        );
        match result {
            Ok(mut consumer) => {
                consumer.owns_instance = owns_instance;
                Ok(consumer)
            }
            Err(error) => {
                if owns_instance {
                    instance.shutdown();
                }
                Err(error)
            }
        }
    }
}

/// A running consumer's fixed settings, shared by its tasks.
#[derive(Debug)]
pub(super) struct PushSettings {
    pub(super) group: String,
    pub(super) mode: ConsumeMode,
    pub(super) start_position: StartPosition,
    /// The user's subscriptions, plus the group's retry topic in clustering mode.
    pub(super) subscriptions: Vec<Subscription>,
    pub(super) batch_size: usize,
    pub(super) pull_batch_size: u32,
    pub(super) pull_threshold: usize,
    /// Pending body bytes per queue that pause its pulls.
    pub(super) pull_threshold_bytes: u64,
    /// Concurrent: widest offset span of a queue's messages not done before its pulls pause.
    pub(super) max_span: u64,
    /// Resolved `max_reconsume_times` (see the builder; `i32::MAX` = unlimited).
    pub(super) max_reconsume_times: i32,
    pub(super) rebalance_interval: Duration,
    pub(super) commit_interval: Duration,
    pub(super) long_poll_timeout: Duration,
    pub(super) orderly: bool,
}

impl PushSettings {
    pub(super) fn from_builder(builder: &PushConsumerBuilder) -> Self {
        let sub_version = now_ms();
        let group = &builder.group;
        let mut subscriptions: Vec<Subscription> = builder
            .subscriptions
            .iter()
            .map(|(topic, expression)| Subscription::new(topic, expression, sub_version))
            .collect();
        if builder.mode == ConsumeMode::Clustering {
            // Messages the group sends back come back through its retry topic.
            let retry = retry_topic(group);
            if !subscriptions.iter().any(|sub| sub.topic() == retry) {
                subscriptions.push(Subscription::new(&retry, "*", sub_version));
            }
        }
        Self {
            group: group.clone(),
            mode: builder.mode,
            start_position: builder.start_position,
            subscriptions,
            batch_size: builder.batch_size,
            pull_batch_size: builder.pull_batch_size,
            pull_threshold: builder.pull_threshold,
            pull_threshold_bytes: builder.pull_threshold_bytes,
            max_span: builder.max_span,
            max_reconsume_times: match builder.max_reconsume_times {
                -1 if builder.orderly => i32::MAX,
                -1 => MAX_RECONSUME_TIMES,
                times => times,
            },
            rebalance_interval: builder.rebalance_interval,
            commit_interval: builder.commit_interval,
            long_poll_timeout: builder.long_poll_timeout,
            orderly: builder.orderly,
        }
    }

    pub(super) fn consumer_data(&self) -> ConsumerData {
        ConsumerData {
            consume_from_where: self.start_position.consume_from_where(),
            consume_type: ConsumeType::Passively,
            group_name: self.group.clone(),
            message_model: self.mode.message_model(),
            subscription_data_set: self.subscriptions.iter().map(|s| s.data.clone()).collect(),
            unit_mode: false,
        }
    }

    pub(super) fn subscription(&self, topic: &str) -> Option<&Subscription> {
        self.subscriptions.iter().find(|sub| sub.topic() == topic)
    }

    pub(super) const fn clustering(&self) -> bool {
        matches!(self.mode, ConsumeMode::Clustering)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_reconsume_times_defaults_follow_java() {
        let builder = || PushConsumerBuilder::new("127.0.0.1:9876", "g").subscribe("t", "*");
        assert_eq!(
            PushSettings::from_builder(&builder()).max_reconsume_times,
            MAX_RECONSUME_TIMES
        );
        assert_eq!(
            PushSettings::from_builder(&builder().orderly(true)).max_reconsume_times,
            i32::MAX,
            "orderly: unlimited local retries"
        );
        let explicit = builder().orderly(true).max_reconsume_times(3);
        assert_eq!(PushSettings::from_builder(&explicit).max_reconsume_times, 3);
        assert!(builder().max_reconsume_times(-2).validate().is_err());
        assert!(
            builder()
                .pull_threshold_bytes_per_queue(0)
                .validate()
                .is_err()
        );
        assert!(
            builder()
                .consume_concurrently_max_span(0)
                .validate()
                .is_err()
        );
        let settings = PushSettings::from_builder(&builder());
        assert_eq!(settings.pull_threshold_bytes, 100 << 20);
        assert_eq!(settings.max_span, 2000);
    }
}
