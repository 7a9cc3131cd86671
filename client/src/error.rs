//! The one error type of the client library.
//!
//! Every failure a caller can see is a [`ClientError`]: transport failures name the address and
//! what happened to the connection, broker refusals carry the broker's response code and remark
//! unchanged, and undecodable answers say which part was wrong. The type is `Clone` (one lost
//! connection fails every request waiting on it) and non-exhaustive (new failure kinds are not a
//! breaking change).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use ringmq_protocol::{BodyError, DecodeError, FieldError, RecordError, RequestCode, ResponseCode};
use thiserror::Error;

/// Result of every fallible client call.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Why a client operation failed.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A TCP connection could not be opened (refused, unreachable, connect timeout), or the
    /// address is still in its reconnect backoff after such a failure.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// `host:port` the client tried.
        addr: String,
        /// What the connect attempt reported.
        reason: String,
    },
    /// An established connection failed (reset, closed by the peer, write error) while the
    /// request was outstanding or being written.
    #[error("connection to {addr} lost: {reason}")]
    ConnectionLost {
        /// `host:port` of the peer.
        addr: String,
        /// What ended the connection.
        reason: String,
    },
    /// The peer sent bytes that are not a remoting frame (bad length, unknown header type,
    /// undecodable header). The connection was closed.
    #[error("{addr} sent an invalid frame: {source}")]
    Protocol {
        /// `host:port` of the peer.
        addr: String,
        /// The codec's description.
        #[source]
        source: Arc<DecodeError>,
    },
    /// More than [`MAX_QUEUED_OUT_BYTES`](crate::remoting::MAX_QUEUED_OUT_BYTES) wait to be
    /// written to the peer (it stopped reading): the request was refused, not sent.
    #[error("{addr} is not reading: {queued_bytes} bytes already wait to be written")]
    Overloaded {
        /// `host:port` of the peer.
        addr: String,
        /// Bytes queued when the request was refused.
        queued_bytes: usize,
    },
    /// A producer already has its `max_outstanding_sends` sends in flight: this one was
    /// refused, nothing sent. Back off, or await some pending sends first.
    #[error("producer {group} already has {limit} sends in flight")]
    TooManyOutstandingSends {
        /// The producer group.
        group: String,
        /// The producer's `max_outstanding_sends`.
        limit: usize,
    },
    /// No response arrived in time. The request may or may not have taken effect.
    #[error("{addr} did not answer {code} within {timeout:?}")]
    Timeout {
        /// `host:port` of the peer.
        addr: String,
        /// The request that went unanswered.
        code: RequestCode,
        /// The limit that expired.
        timeout: Duration,
    },
    /// The broker or NameServer answered with an error code.
    #[error("{addr} refused {request}: {code} ({remark})")]
    Broker {
        /// `host:port` of the server that answered.
        addr: String,
        /// The request it refused.
        request: RequestCode,
        /// Its response code, as sent.
        code: ResponseCode,
        /// Its remark, empty when it sent none.
        remark: String,
    },
    /// A response arrived but a header field or body could not be read.
    #[error("undecodable answer from {addr} to {request}: {reason}")]
    BadResponse {
        /// `host:port` of the peer.
        addr: String,
        /// The request whose answer was bad.
        request: RequestCode,
        /// What was wrong with it.
        reason: String,
    },
    /// A topic has no route on any reachable NameServer.
    #[error("topic {topic} does not exist (no NameServer has a route for it)")]
    TopicNotFound {
        /// The topic asked for.
        topic: String,
    },
    /// A topic's route lists no queue the operation can use (no writable queue for a send, no
    /// readable queue for a consumer, or its brokers have no registered master).
    #[error("topic {topic} has no {what} queue on a live broker")]
    NoQueue {
        /// The topic.
        topic: String,
        /// "writable" or "readable".
        what: &'static str,
    },
    /// No NameServer answered and nothing usable was cached.
    #[error("no NameServer answered ({tried}): {last_error}")]
    NameServersUnreachable {
        /// The addresses tried, `;`-separated.
        tried: String,
        /// The last failure seen.
        last_error: Box<ClientError>,
    },
    /// Every attempt of a send failed; `last` is the final attempt's error.
    #[error("send to topic {topic} failed after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// The topic.
        topic: String,
        /// Attempts made (1 + retries).
        attempts: u32,
        /// The last attempt's error.
        last: Box<ClientError>,
    },
    /// The caller passed something the client cannot use (empty topic, bad address, a message
    /// too large, a batch across topics, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The client (or the producer / consumer) was shut down.
    #[error("the client has been shut down")]
    Shutdown,
}

impl ClientError {
    /// The broker's response code, when the broker refused the request.
    pub fn response_code(&self) -> Option<ResponseCode> {
        match self {
            Self::Broker { code, .. } => Some(*code),
            Self::RetriesExhausted { last, .. } => last.response_code(),
            _ => None,
        }
    }

    /// The broker's remark, when the broker refused the request.
    pub fn remark(&self) -> Option<&str> {
        match self {
            Self::Broker { remark, .. } => Some(remark),
            Self::RetriesExhausted { last, .. } => last.remark(),
            _ => None,
        }
    }

    /// Whether the failure is about reaching the server (connect, lost connection, timeout,
    /// garbage) rather than an answer: such a server is worth avoiding for a while.
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. }
                | Self::ConnectionLost { .. }
                | Self::Overloaded { .. }
                | Self::Protocol { .. }
                | Self::Timeout { .. }
        )
    }

    pub(crate) fn connect(addr: &str, error: &io::Error) -> Self {
        Self::Connect {
            addr: addr.to_owned(),
            reason: error.to_string(),
        }
    }

    pub(crate) fn lost(addr: &str, reason: impl Into<String>) -> Self {
        Self::ConnectionLost {
            addr: addr.to_owned(),
            reason: reason.into(),
        }
    }

    /// A refusal built from a response command.
    pub(crate) fn broker(
        addr: &str,
        request: RequestCode,
        code: ResponseCode,
        remark: Option<&str>,
    ) -> Self {
        Self::Broker {
            addr: addr.to_owned(),
            request,
            code,
            remark: remark.unwrap_or_default().to_owned(),
        }
    }

    pub(crate) fn bad_field(addr: &str, request: RequestCode, error: &FieldError) -> Self {
        Self::bad_response(addr, request, error.to_string())
    }

    pub(crate) fn bad_body(addr: &str, request: RequestCode, error: &BodyError) -> Self {
        Self::bad_response(addr, request, error.to_string())
    }

    #[allow(dead_code)] // for the consumers' record decoding
    pub(crate) fn bad_record(addr: &str, request: RequestCode, error: &RecordError) -> Self {
        Self::bad_response(addr, request, error.to_string())
    }

    pub(crate) fn bad_response(
        addr: &str,
        request: RequestCode,
        reason: impl Into<String>,
    ) -> Self {
        Self::BadResponse {
            addr: addr.to_owned(),
            request,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_code_and_remark_survive_retries() {
        let refused = ClientError::broker(
            "127.0.0.1:10911",
            RequestCode::SendMessageV2,
            ResponseCode::from_i32(17),
            Some("topic missing"),
        );
        let exhausted = ClientError::RetriesExhausted {
            topic: "t".into(),
            attempts: 3,
            last: Box::new(refused.clone()),
        };
        assert_eq!(exhausted.response_code(), Some(ResponseCode::from_i32(17)));
        assert_eq!(exhausted.remark(), Some("topic missing"));
        assert!(!refused.is_transport());
        assert!(ClientError::lost("a:1", "reset").is_transport());
        assert!(refused.to_string().contains("topic missing"));
    }
}
