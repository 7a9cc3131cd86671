//! A blocking remoting client for tests ([`RemotingClient`]), on
//! [`ringmq_protocol::blocking::Connection`], and one-shot lookups ([`cluster_info`],
//! [`topic_route`], [`create_topic`], [`max_offset`], [`committed_offset`]) for probes that must
//! not panic while a server is still coming up.
//!
//! The client matches responses to requests by opaque, keeps several requests in flight
//! ([`RemotingClient::pipeline`]), queues the requests a server sends on its own
//! (NOTIFY_CONSUMER_IDS_CHANGED) for [`RemotingClient::next_server_request`], records responses
//! to nothing it is waiting for (an answer to a oneway request) in
//! [`RemotingClient::unexpected_responses`], and checks that every response mirrors its
//! request's header encoding. Its plain methods panic with context, for tests; the `try_` ones
//! return the error, for probes and for tests about failures.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ringmq_protocol::blocking::{Connection, ConnectionError};
use ringmq_protocol::body::{self, ClusterInfo, TopicRouteData, perm};
use ringmq_protocol::header::{
    CreateTopicRequestHeader, GetRouteInfoRequestHeader, OffsetResponseHeader,
    QueryConsumerOffsetRequestHeader, QueueRequestHeader,
};
use ringmq_protocol::topic::AUTO_CREATE_TEMPLATE;
use ringmq_protocol::{Command, EncodeExt, ExtFields, RequestCode, ResponseCode, SerializeType};

use crate::{DEADLINE, POLL_PERIOD};

/// Limit for connecting and for each answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The template topic brokers create new topics from (TBW102).
pub const DEFAULT_TOPIC: &str = AUTO_CREATE_TEMPLATE;

/// One request of a [`RemotingClient::pipeline`].
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub code: RequestCode,
    pub header: ExtFields,
    pub body: Vec<u8>,
}

/// A blocking remoting connection for tests. See the [module documentation](self).
pub struct RemotingClient {
    connection: Connection,
    peer: SocketAddr,
    /// The store host the server stamps into records and msgIds (`127.0.0.1:P` even on a
    /// broker's fast port `P - 2`).
    store_host: SocketAddr,
    /// Requests awaiting a response, with the serialize type the response must mirror.
    pending: HashMap<i32, SerializeType>,
    /// Responses that arrived while the client waited for another one.
    responses: HashMap<i32, Command>,
    server_requests: VecDeque<Command>,
    /// Responses to no pending request.
    unexpected: Vec<Command>,
}

impl fmt::Debug for RemotingClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemotingClient")
            .field("connection", &self.connection)
            .field("store_host", &self.store_host)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl RemotingClient {
    /// Connects to `addr` (one attempt within [`REQUEST_TIMEOUT`]); requests carry JSON
    /// headers.
    pub fn try_connect(addr: impl ToSocketAddrs) -> Result<Self, ConnectionError> {
        Self::from_connection(Connection::connect(addr, REQUEST_TIMEOUT)?)
    }

    /// Connects to `addr`, retrying a refused connection until [`DEADLINE`] (a broker's shard
    /// may still be binding its listener right after the startup line); panics on failure.
    pub fn connect(addr: impl ToSocketAddrs + fmt::Debug) -> Self {
        let start = Instant::now();
        loop {
            match Self::try_connect(&addr) {
                Ok(client) => return client,
                Err(ConnectionError::Connect { source, .. })
                    if source.kind() == io::ErrorKind::ConnectionRefused
                        && start.elapsed() < DEADLINE =>
                {
                    std::thread::sleep(POLL_PERIOD);
                }
                Err(error) => panic!("cannot connect to {addr:?}: {error}"),
            }
        }
    }

    /// A client on an established connection (an accepted one, or one set up by hand).
    pub fn from_connection(connection: Connection) -> Result<Self, ConnectionError> {
        let peer = connection.peer_addr()?;
        Ok(Self {
            connection,
            peer,
            store_host: peer,
            pending: HashMap::new(),
            responses: HashMap::new(),
            server_requests: VecDeque::new(),
            unexpected: Vec::new(),
        })
    }

    /// Sends binary (ROCKETMQ) or JSON headers from now on.
    #[must_use]
    pub fn with_serialize_type(mut self, serialize_type: SerializeType) -> Self {
        self.set_serialize_type(serialize_type);
        self
    }

    /// Sets the store host expected in msgIds and records (the peer's address by default).
    #[must_use]
    pub const fn with_store_host(mut self, store_host: SocketAddr) -> Self {
        self.store_host = store_host;
        self
    }

    pub const fn store_host(&self) -> SocketAddr {
        self.store_host
    }

    pub const fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.connection.local_addr().unwrap_or_else(|error| {
            panic!("local address of the connection to {}: {error}", self.peer)
        })
    }

    pub const fn serialize_type(&self) -> SerializeType {
        self.connection.serialize_type()
    }

    pub const fn set_serialize_type(&mut self, serialize_type: SerializeType) {
        self.connection.set_serialize_type(serialize_type);
    }

    /// Responses that matched no pending request, so far.
    pub fn unexpected_responses(&self) -> &[Command] {
        &self.unexpected
    }

    // --------------------------------------------------------------------------------------------
    // Sending

    /// Writes a request without waiting; returns its opaque.
    pub fn try_send_request(
        &mut self,
        code: RequestCode,
        header: impl EncodeExt,
        body: &[u8],
    ) -> Result<i32, ConnectionError> {
        let opaque = self.connection.send_request(code, &header, body)?;
        self.pending
            .insert(opaque, self.connection.serialize_type());
        Ok(opaque)
    }

    /// Writes a request without waiting; returns its opaque.
    pub fn send_request(&mut self, code: RequestCode, header: impl EncodeExt, body: &[u8]) -> i32 {
        self.try_send_request(code, header, body)
            .unwrap_or_else(|error| panic!("writing {code} to {}: {error}", self.peer))
    }

    /// Writes a oneway request (flag bit 1): the server must not answer it. Returns its opaque.
    pub fn send_oneway(&mut self, code: RequestCode, header: impl EncodeExt, body: &[u8]) -> i32 {
        self.connection
            .send_oneway(code, &header, body)
            .unwrap_or_else(|error| panic!("writing oneway {code} to {}: {error}", self.peer))
    }

    /// Writes raw bytes (malformed-input tests).
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ConnectionError> {
        self.connection.write_raw(bytes)
    }

    /// Closes the writing half (errors ignored: the peer may be gone already).
    pub fn shutdown_write(&mut self) {
        let _ignored = self.connection.shutdown_write();
    }

    // --------------------------------------------------------------------------------------------
    // Receiving

    /// Files one received frame: a response where it is awaited, a server request in its queue.
    fn file(&mut self, command: Command) {
        if !command.is_response() {
            self.server_requests.push_back(command);
        } else if self.pending.contains_key(&command.opaque) {
            let opaque = command.opaque;
            let previous = self.responses.insert(opaque, command);
            assert!(
                previous.is_none(),
                "{} sent two responses with opaque {opaque}",
                self.peer
            );
        } else {
            self.unexpected.push(command);
        }
    }

    /// Reads and files one frame, waiting at most until `deadline`.
    fn fill(&mut self, deadline: Instant) -> Result<(), ConnectionError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let command = self.connection.read_frame(remaining)?;
        self.file(command);
        Ok(())
    }

    /// Files whatever has already arrived, without blocking.
    fn pump(&mut self) -> Result<(), ConnectionError> {
        while let Some(command) = self.connection.poll_frame()? {
            self.file(command);
        }
        Ok(())
    }

    /// Waits for the response to `opaque`. Responses to other requests and server requests that
    /// arrive meanwhile are kept. Panics if the response's serialize type does not mirror the
    /// request's.
    pub fn try_wait_response(
        &mut self,
        opaque: i32,
        timeout: Duration,
    ) -> Result<Command, ConnectionError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(response) = self.responses.remove(&opaque) {
                let sent_as = self.pending.remove(&opaque);
                assert_eq!(
                    Some(response.serialize_type),
                    sent_as,
                    "the response to opaque {opaque} (code {}) does not mirror the request's \
                     serialize type",
                    response.code
                );
                return Ok(response);
            }
            self.fill(deadline)?;
        }
    }

    pub fn wait_response(&mut self, opaque: i32, timeout: Duration) -> Command {
        self.try_wait_response(opaque, timeout)
            .unwrap_or_else(|error| {
                panic!(
                    "waiting for the response to opaque {opaque} from {}: {error}",
                    self.peer
                )
            })
    }

    /// Whether the response to `opaque` has arrived (reads what is available, never blocks).
    pub fn has_response(&mut self, opaque: i32) -> bool {
        if let Err(error) = self.pump() {
            panic!("connection failed while checking for opaque {opaque}: {error}");
        }
        self.responses.contains_key(&opaque)
    }

    /// Sends a request and waits up to [`REQUEST_TIMEOUT`] for its response.
    pub fn try_request(
        &mut self,
        code: RequestCode,
        header: impl EncodeExt,
        body: &[u8],
    ) -> Result<Command, ConnectionError> {
        let opaque = self.try_send_request(code, header, body)?;
        self.try_wait_response(opaque, REQUEST_TIMEOUT)
    }

    /// Sends a request and returns its response (whatever its code); panics on I/O errors and
    /// timeouts.
    pub fn request(&mut self, code: RequestCode, header: impl EncodeExt, body: &[u8]) -> Command {
        self.try_request(code, header, body)
            .unwrap_or_else(|error| panic!("{code} to {}: {error}", self.peer))
    }

    /// As [`RemotingClient::try_request`], failing unless the answer is SUCCESS.
    pub fn try_request_ok(
        &mut self,
        code: RequestCode,
        header: impl EncodeExt,
        body: &[u8],
    ) -> Result<Command> {
        let answer = self
            .try_request(code, header, body)
            .with_context(|| format!("{code} to {}", self.peer))?;
        if answer.response_code() != ResponseCode::Success {
            bail!(
                "{} refused {code}: {} ({})",
                self.peer,
                answer.response_code(),
                answer.remark.as_deref().unwrap_or_default()
            );
        }
        Ok(answer)
    }

    /// As [`RemotingClient::request`], panicking unless the answer is SUCCESS.
    pub fn request_ok(
        &mut self,
        code: RequestCode,
        header: impl EncodeExt,
        body: &[u8],
    ) -> Command {
        self.try_request_ok(code, header, body)
            .unwrap_or_else(|error| panic!("{error:#}"))
    }

    /// The next request the server sent on this connection, waiting up to `timeout`.
    pub fn next_server_request(&mut self, timeout: Duration) -> Option<Command> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(request) = self.server_requests.pop_front() {
                return Some(request);
            }
            match self.fill(deadline) {
                Ok(()) => {}
                Err(ConnectionError::Timeout) => return None,
                Err(error) => panic!("waiting for a request from {}: {error}", self.peer),
            }
        }
    }

    /// Every request the server sent so far, without blocking.
    pub fn drain_server_requests(&mut self) -> Vec<Command> {
        if let Err(error) = self.pump() {
            panic!("connection failed while draining server requests: {error}");
        }
        self.server_requests.drain(..).collect()
    }

    /// Waits until the server closes the connection; false if it is still open after `timeout`.
    /// Whatever the server sends before closing is discarded.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        self.connection.wait_closed(timeout)
    }

    /// Sends `count` requests built by `make`, keeping up to `window` in flight, and hands each
    /// response to `on_response` in request order. `on_response` returns whether to keep
    /// issuing new requests (in-flight ones are still collected). Stops at the first failure.
    pub fn pipeline(
        &mut self,
        count: usize,
        window: usize,
        mut make: impl FnMut(usize) -> Outgoing,
        mut on_response: impl FnMut(usize, Command) -> bool,
    ) -> Result<(), ConnectionError> {
        let mut in_flight: VecDeque<(usize, i32)> = VecDeque::with_capacity(window);
        let mut next = 0;
        let mut issuing = true;
        while (issuing && next < count) || !in_flight.is_empty() {
            while issuing && next < count && in_flight.len() < window {
                let outgoing = make(next);
                let opaque =
                    self.try_send_request(outgoing.code, &outgoing.header, &outgoing.body)?;
                in_flight.push_back((next, opaque));
                next += 1;
            }
            let Some((index, opaque)) = in_flight.pop_front() else {
                break;
            };
            let response = self.try_wait_response(opaque, REQUEST_TIMEOUT)?;
            issuing &= on_response(index, response);
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------------
// One-shot lookups: a connection each, errors returned

/// GET_BROKER_CLUSTER_INFO from the NameServer at `namesrv`.
pub fn cluster_info(namesrv: &str) -> Result<ClusterInfo> {
    let answer = RemotingClient::try_connect(namesrv)
        .with_context(|| format!("connect to {namesrv}"))?
        .try_request_ok(RequestCode::GetBrokerClusterInfo, (), &[])?;
    body::decode(&answer.body, "ClusterInfo").with_context(|| format!("cluster info of {namesrv}"))
}

/// GET_ROUTEINFO_BY_TOPIC from the NameServer at `namesrv`; `None` when it does not know the
/// topic.
pub fn topic_route(namesrv: &str, topic: &str) -> Result<Option<TopicRouteData>> {
    let header = GetRouteInfoRequestHeader {
        topic,
        accept_standard_json_only: None,
    };
    let answer = RemotingClient::try_connect(namesrv)
        .with_context(|| format!("connect to {namesrv}"))?
        .try_request(RequestCode::GetRouteinfoByTopic, header, &[])
        .with_context(|| format!("route of {topic} from {namesrv}"))?;
    match answer.response_code() {
        ResponseCode::Success => body::decode(&answer.body, "TopicRouteData")
            .map(Some)
            .with_context(|| format!("route of {topic} from {namesrv}")),
        ResponseCode::TopicNotExist => Ok(None),
        other => bail!(
            "{namesrv} refused the route of {topic}: {other} ({})",
            answer.remark.as_deref().unwrap_or_default()
        ),
    }
}

/// UPDATE_AND_CREATE_TOPIC on the broker at `broker`: a read-write topic with `queues` read and
/// write queues.
pub fn create_topic(broker: &str, topic: &str, queues: i32) -> Result<()> {
    let header = CreateTopicRequestHeader {
        topic,
        default_topic: DEFAULT_TOPIC,
        read_queue_nums: queues,
        write_queue_nums: queues,
        perm: perm::READ | perm::WRITE,
        topic_filter_type: "SINGLE_TAG",
        topic_sys_flag: Some(0),
        order: false,
    };
    RemotingClient::try_connect(broker)
        .with_context(|| format!("connect to {broker}"))?
        .try_request_ok(RequestCode::UpdateAndCreateTopic, header, &[])?;
    Ok(())
}

/// GET_MAX_OFFSET on the broker at `broker`: the offset the next message of the queue gets.
pub fn max_offset(broker: &str, topic: &str, queue_id: i32) -> Result<i64> {
    let answer = RemotingClient::try_connect(broker)
        .with_context(|| format!("connect to {broker}"))?
        .try_request_ok(
            RequestCode::GetMaxOffset,
            QueueRequestHeader { topic, queue_id },
            &[],
        )?;
    let header: OffsetResponseHeader = answer
        .header()
        .with_context(|| format!("GET_MAX_OFFSET answer of {broker}"))?;
    Ok(header.offset)
}

/// QUERY_CONSUMER_OFFSET on the broker at `broker`: the offset `group` committed for the queue,
/// `None` on QUERY_NOT_FOUND. (A broker answers 0 for a group that never committed on a queue
/// that still holds its first message, as RocketMQ does.)
pub fn committed_offset(
    broker: &str,
    group: &str,
    topic: &str,
    queue_id: i32,
) -> Result<Option<i64>> {
    let header = QueryConsumerOffsetRequestHeader {
        consumer_group: group,
        topic,
        queue_id,
        set_zero_if_not_found: None,
    };
    let answer = RemotingClient::try_connect(broker)
        .with_context(|| format!("connect to {broker}"))?
        .try_request(RequestCode::QueryConsumerOffset, header, &[])
        .with_context(|| format!("QUERY_CONSUMER_OFFSET to {broker}"))?;
    match answer.response_code() {
        ResponseCode::Success => {
            let header: OffsetResponseHeader = answer
                .header()
                .with_context(|| format!("QUERY_CONSUMER_OFFSET answer of {broker}"))?;
            Ok(Some(header.offset))
        }
        ResponseCode::QueryNotFound => Ok(None),
        other => bail!(
            "{broker} refused QUERY_CONSUMER_OFFSET: {other} ({})",
            answer.remark.as_deref().unwrap_or_default()
        ),
    }
}
