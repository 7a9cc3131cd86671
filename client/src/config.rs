//! Settings shared by every producer, consumer and admin handle of one client instance.

use std::time::Duration;

use ringmq_protocol::SerializeType;

use crate::error::{ClientError, Result};
use crate::remoting::Backoff;

/// Client settings. Every timer is configurable so tests can run fast.
///
/// ```
/// use std::time::Duration;
/// use ringmq_client::ClientConfig;
///
/// let config = ClientConfig::new("127.0.0.1:9876;127.0.0.1:9877")
///     .with_request_timeout(Duration::from_secs(5))
///     .with_json_headers();
/// assert_eq!(config.namesrv_addrs.len(), 2);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// NameServer addresses (`host:port`).
    pub namesrv_addrs: Vec<String>,
    /// Distinguishes client instances of one process in the client id (`ip@instance`);
    /// defaults to the process id plus a per-process counter.
    pub instance_name: Option<String>,
    /// Default limit for one request's answer.
    pub request_timeout: Duration,
    /// Limit for opening a TCP connection.
    pub connect_timeout: Duration,
    /// How often cached routes are re-fetched (RocketMQ: 30 s).
    pub route_refresh_interval: Duration,
    /// How often the client heartbeats every broker it knows (RocketMQ: 30 s).
    pub heartbeat_interval: Duration,
    /// Request header encoding: binary by default, JSON for peers that need it.
    pub serialize_type: SerializeType,
    /// Reconnect backoff after a failed connect.
    pub reconnect_backoff: Backoff,
    /// Largest frame accepted from a server.
    pub max_frame_bytes: usize,
}

impl ClientConfig {
    /// Settings for the given NameServers (`host:port`, several separated by `;`).
    pub fn new(namesrv_addrs: &str) -> Self {
        Self {
            namesrv_addrs: namesrv_addrs
                .split(';')
                .map(str::trim)
                .filter(|addr| !addr.is_empty())
                .map(str::to_owned)
                .collect(),
            instance_name: None,
            request_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(3),
            route_refresh_interval: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(30),
            serialize_type: SerializeType::RocketMq,
            reconnect_backoff: Backoff::default(),
            max_frame_bytes: crate::remoting::DEFAULT_MAX_FRAME_BYTES,
        }
    }

    /// Sets the instance name of the client id.
    #[must_use]
    pub fn with_instance_name(mut self, name: impl Into<String>) -> Self {
        self.instance_name = Some(name.into());
        self
    }

    /// Sets the default request timeout.
    #[must_use]
    pub const fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the connect timeout.
    #[must_use]
    pub const fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the route refresh interval.
    #[must_use]
    pub const fn with_route_refresh_interval(mut self, interval: Duration) -> Self {
        self.route_refresh_interval = interval;
        self
    }

    /// Sets the heartbeat interval.
    #[must_use]
    pub const fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// Sends JSON request headers instead of binary ones.
    #[must_use]
    pub const fn with_json_headers(mut self) -> Self {
        self.serialize_type = SerializeType::Json;
        self
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.namesrv_addrs.is_empty() {
            return Err(ClientError::InvalidArgument(
                "no NameServer address given".into(),
            ));
        }
        for addr in &self.namesrv_addrs {
            let valid = addr
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(ClientError::InvalidArgument(format!(
                    "NameServer address {addr:?} is not host:port"
                )));
            }
        }
        for (name, value) in [
            ("request_timeout", self.request_timeout),
            ("connect_timeout", self.connect_timeout),
            ("route_refresh_interval", self.route_refresh_interval),
            ("heartbeat_interval", self.heartbeat_interval),
        ] {
            if value.is_zero() {
                return Err(ClientError::InvalidArgument(format!(
                    "{name} must not be zero"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_split_and_checked() {
        let config = ClientConfig::new(" 127.0.0.1:9876 ; localhost:9877;");
        assert_eq!(config.namesrv_addrs, ["127.0.0.1:9876", "localhost:9877"]);
        assert!(config.validate().is_ok());
        assert!(ClientConfig::new("").validate().is_err());
        assert!(ClientConfig::new("nohost").validate().is_err());
        assert!(ClientConfig::new("h:99999").validate().is_err());
        assert!(
            ClientConfig::new("h:1")
                .with_request_timeout(Duration::ZERO)
                .validate()
                .is_err()
        );
    }
}
