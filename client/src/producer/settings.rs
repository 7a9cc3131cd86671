//! What a producer needs on every send, fixed when it is built. A leaf: the builder fills it in,
//! the send state, encoder and validation read it.

use std::time::Duration;

/// Java's `maxMessageSize`: 4 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 << 20;
/// Java's async-send permits (`semaphoreAsyncSendNum`): 65 535.
pub const DEFAULT_MAX_OUTSTANDING_SENDS: usize = 65_535;

/// What a producer needs on every send; fixed at build time.
#[derive(Debug, Clone)]
pub(crate) struct ProducerSettings {
    /// Producer group, announced in heartbeats and sent with every message.
    pub group: String,
    /// Budget of one send, retries included.
    pub send_timeout: Duration,
    /// Extra attempts after the first failed one (sends with failover only).
    pub retries: u32,
    /// Whether slow or failed brokers are avoided for a while.
    pub fault_avoidance: bool,
    /// Latency tiers of the fault tracker: (latency at least, then unavailable for).
    pub fault_tiers: Vec<(Duration, Duration)>,
    /// Largest body (or encoded batch body) accepted.
    pub max_message_bytes: usize,
    /// Most sends of this producer handed to the I/O thread and not finished yet.
    pub max_outstanding_sends: usize,
}
