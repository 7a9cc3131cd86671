//! [`ProducerBuilder`]: the producer's settings and its start-up (client instance, group
//! registration).

use std::sync::Arc;
use std::time::Duration;

use super::Producer;
use super::fault;
use super::settings::{DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_OUTSTANDING_SENDS, ProducerSettings};
use super::state::{self, ProducerShared};
use crate::config::ClientConfig;
use crate::error::{ClientError, Result};
use crate::instance::ClientInstance;

/// Java's producer group length limit.
const MAX_GROUP_BYTES: usize = 255;

/// Builds a [`Producer`]. Defaults: group `DEFAULT_PRODUCER`, send timeout 3 s, 2 retries,
/// latency fault avoidance on (Java's tiers), 4 MiB message limit, and a client instance of its
/// own unless [`ProducerBuilder::instance`] shares one.
///
/// ```
/// use std::time::Duration;
/// use ringmq_client::Producer;
///
/// # fn main() -> ringmq_client::Result<()> {
/// // Building needs no broker: routes are fetched on the first send.
/// let producer = Producer::builder("127.0.0.1:9876")
///     .group("order-service")
///     .send_timeout(Duration::from_secs(5))
///     .retries(3)
///     .build()?;
/// assert_eq!(producer.group(), "order-service");
/// producer.shutdown();
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[must_use = "a builder does nothing until build() is called"]
pub struct ProducerBuilder {
    config: ClientConfig,
    instance: Option<ClientInstance>,
    settings: ProducerSettings,
}

impl ProducerBuilder {
    pub(crate) fn new(namesrv_addrs: &str) -> Self {
        Self {
            config: ClientConfig::new(namesrv_addrs),
            instance: None,
            settings: ProducerSettings {
                group: "DEFAULT_PRODUCER".into(),
                send_timeout: Duration::from_secs(3),
                retries: 2,
                fault_avoidance: true,
                fault_tiers: fault::default_tiers(),
                max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
                max_outstanding_sends: DEFAULT_MAX_OUTSTANDING_SENDS,
            },
        }
    }

    /// Client settings for the instance this producer starts (its NameServer list replaces
    /// the one given to [`Producer::builder`]). Ignored when [`ProducerBuilder::instance`] is set.
    pub fn config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }

    /// Shares an existing client instance (one I/O thread and one connection per broker for
    /// every producer and consumer on it) instead of starting one.
    pub fn instance(mut self, instance: ClientInstance) -> Self {
        self.instance = Some(instance);
        self
    }

    /// The producer group. One instance holds a group once; brokers see it in heartbeats.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.settings.group = group.into();
        self
    }

    /// Budget for a whole send, retries included. Each attempt gets what is left of it, at most
    /// the client's `request_timeout` (so a silent broker leaves time to retry elsewhere).
    pub const fn send_timeout(mut self, timeout: Duration) -> Self {
        self.settings.send_timeout = timeout;
        self
    }

    /// Attempts after the first, each on another broker group when there is one (Java's
    /// `retryTimesWhenSendFailed`). Sends to a given queue or through a selector never retry.
    pub const fn retries(mut self, retries: u32) -> Self {
        self.settings.retries = retries;
        self
    }

    /// Whether brokers that failed or answered slowly are left out of queue selection for a
    /// while (see [`ProducerBuilder::latency_fault_tiers`]). Off, retries still avoid the
    /// broker group that just failed.
    pub const fn latency_fault_avoidance(mut self, enabled: bool) -> Self {
        self.settings.fault_avoidance = enabled;
        self
    }

    /// Replaces the latency tiers: an attempt that took at least `.0` makes its broker
    /// unavailable for `.1`; a failed attempt counts as 30 s. Java's (and the default) tiers
    /// are 50/100/550 ms, 1/2/3/15 s → 0/0/30/60/120/180/600 s.
    pub fn latency_fault_tiers(mut self, tiers: &[(Duration, Duration)]) -> Self {
        self.settings.fault_tiers = tiers.to_vec();
        self
    }

    /// Largest message body (for a batch: its encoded body) accepted; larger sends fail with
    /// [`ClientError::InvalidArgument`] before anything is sent. Default 4 MiB, the broker's
    /// default limit.
    pub const fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.settings.max_message_bytes = bytes;
        self
    }

    /// Most sends (of every kind) this producer may have in flight: handed to the I/O thread
    /// and not finished. One more fails at once with
    /// [`ClientError::TooManyOutstandingSends`] instead of queueing without bound (memory and
    /// latency would grow while the brokers fall behind); the caller backs off or awaits some
    /// of its pending sends. Default 65 535, Java's async-send permits.
    pub const fn max_outstanding_sends(mut self, sends: usize) -> Self {
        self.settings.max_outstanding_sends = sends;
        self
    }

    /// Checks the settings, starts the client instance if none was given, and registers the
    /// group on it (it is in every heartbeat from then on).
    pub fn build(self) -> Result<Producer> {
        let settings = self.settings;
        validate_group(&settings.group)?;
        if settings.send_timeout.is_zero() {
            return Err(ClientError::InvalidArgument(
                "send_timeout must not be zero".into(),
            ));
        }
        if settings.max_message_bytes == 0 || settings.max_message_bytes > i32::MAX as usize {
            return Err(ClientError::InvalidArgument(format!(
                "max_message_bytes must be in 1..={}",
                i32::MAX
            )));
        }
        if settings.max_outstanding_sends == 0 {
            return Err(ClientError::InvalidArgument(
                "max_outstanding_sends must not be zero".into(),
            ));
        }
        let instance = match self.instance {
            Some(instance) => instance,
            None => ClientInstance::new(self.config)?,
        };
        let shared = Arc::new(ProducerShared::new(settings));
        let group = shared.settings.group.clone();
        instance
            .run(move |ctx| async move { state::register(&ctx, group) })
            .wait()?;
        Ok(Producer::new(instance, shared))
    }
}

/// Java's `Validators.checkGroup`: non-blank, at most 255 bytes, `^[%|a-zA-Z0-9_-]+$`.
fn validate_group(group: &str) -> Result<()> {
    let valid_chars = group
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'%' | b'|' | b'_' | b'-'));
    if group.is_empty() || group.len() > MAX_GROUP_BYTES || !valid_chars {
        return Err(ClientError::InvalidArgument(format!(
            "producer group {group:?} must be 1..={MAX_GROUP_BYTES} characters of [%|a-zA-Z0-9_-]"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_checked_like_java() {
        assert!(validate_group("please_rename_unique_group_name-1").is_ok());
        assert!(validate_group("%RETRY%g").is_ok());
        assert!(validate_group("").is_err());
        assert!(validate_group("a b").is_err());
        assert!(validate_group(&"g".repeat(256)).is_err());
    }

    #[test]
    fn bad_settings_are_refused_before_anything_starts() {
        let error = ProducerBuilder::new("127.0.0.1:9876")
            .send_timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(matches!(error, ClientError::InvalidArgument(_)), "{error}");
        let error = ProducerBuilder::new("").build().unwrap_err();
        assert!(matches!(error, ClientError::InvalidArgument(_)), "{error}");
    }
}
