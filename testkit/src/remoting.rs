//! A tiny blocking remoting client (one request at a time over a `std::net::TcpStream`) for
//! looking at NameServers and brokers from tests without the client library under test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::BytesMut;
use ringmq_protocol::body::{self, ClusterInfo, TopicRouteData, perm};
use ringmq_protocol::header::{
    CreateTopicRequestHeader, GetRouteInfoRequestHeader, OffsetResponseHeader,
    QueryConsumerOffsetRequestHeader, QueueRequestHeader,
};
use ringmq_protocol::{
    Command, CommandHead, EncodeExt, FrameCodec, RequestCode, ResponseCode, SerializeType,
    encode_frame,
};

/// Limit for connecting and for each answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The template topic brokers create new topics from.
pub const DEFAULT_TOPIC: &str = "TBW102";

/// One blocking connection; requests carry JSON headers (every server accepts them).
#[derive(Debug)]
pub struct RemotingClient {
    addr: String,
    stream: TcpStream,
    codec: FrameCodec,
    input: BytesMut,
    next_opaque: i32,
}

impl RemotingClient {
    /// Connects to `addr` (`host:port`) within [`REQUEST_TIMEOUT`].
    pub fn connect(addr: &str) -> Result<Self> {
        let peer: SocketAddr = addr
            .to_socket_addrs()
            .with_context(|| format!("resolve {addr}"))?
            .next()
            .ok_or_else(|| anyhow!("{addr} resolves to no address"))?;
        let stream = TcpStream::connect_timeout(&peer, REQUEST_TIMEOUT)
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        Ok(Self {
            addr: addr.to_owned(),
            stream,
            codec: FrameCodec::default(),
            input: BytesMut::new(),
            next_opaque: 0,
        })
    }

    /// Sends one request and returns its answer (whatever its code). Requests the server sends
    /// meanwhile are skipped.
    pub fn request(
        &mut self,
        code: RequestCode,
        header: &impl EncodeExt,
        request_body: &[u8],
    ) -> Result<Command> {
        self.next_opaque = self.next_opaque.wrapping_add(1);
        let opaque = self.next_opaque;
        let mut frame = BytesMut::new();
        encode_frame(
            &CommandHead::request(code, opaque, SerializeType::Json),
            header,
            request_body,
            &mut frame,
        );
        self.stream
            .write_all(&frame)
            .with_context(|| format!("send {code} to {}", self.addr))?;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            while let Some(command) = self
                .codec
                .decode(&mut self.input)
                .with_context(|| format!("undecodable frame from {}", self.addr))?
            {
                if command.is_response() && command.opaque == opaque {
                    return Ok(command);
                }
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                bail!(
                    "{} did not answer {code} within {REQUEST_TIMEOUT:?}",
                    self.addr
                );
            }
            self.stream.set_read_timeout(Some(remaining))?;
            let read = self
                .stream
                .read(&mut chunk)
                .with_context(|| format!("read the answer to {code} from {}", self.addr))?;
            if read == 0 {
                bail!(
                    "{} closed the connection before answering {code}",
                    self.addr
                );
            }
            self.input.extend_from_slice(&chunk[..read]);
        }
    }

    /// As [`RemotingClient::request`], failing unless the answer is SUCCESS.
    pub fn request_ok(
        &mut self,
        code: RequestCode,
        header: &impl EncodeExt,
        request_body: &[u8],
    ) -> Result<Command> {
        let answer = self.request(code, header, request_body)?;
        if answer.response_code() != ResponseCode::Success {
            bail!(
                "{} refused {code}: {} ({})",
                self.addr,
                answer.response_code(),
                answer.remark.as_deref().unwrap_or_default()
            );
        }
        Ok(answer)
    }
}

/// GET_BROKER_CLUSTER_INFO from the NameServer at `namesrv`.
pub fn cluster_info(namesrv: &str) -> Result<ClusterInfo> {
    let answer = RemotingClient::connect(namesrv)?.request_ok(
        RequestCode::GetBrokerClusterInfo,
        &(),
        &[],
    )?;
    body::decode(&answer.body, "ClusterInfo").with_context(|| format!("cluster info of {namesrv}"))
}

/// GET_ROUTEINFO_BY_TOPIC from the NameServer at `namesrv`; `None` when it does not know the
/// topic.
pub fn topic_route(namesrv: &str, topic: &str) -> Result<Option<TopicRouteData>> {
    let header = GetRouteInfoRequestHeader {
        topic,
        accept_standard_json_only: None,
    };
    let answer = RemotingClient::connect(namesrv)?.request(
        RequestCode::GetRouteinfoByTopic,
        &header,
        &[],
    )?;
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
    RemotingClient::connect(broker)?.request_ok(RequestCode::UpdateAndCreateTopic, &header, &[])?;
    Ok(())
}

/// GET_MAX_OFFSET on the broker at `broker`: the offset the next message of the queue gets.
pub fn max_offset(broker: &str, topic: &str, queue_id: i32) -> Result<i64> {
    let answer = RemotingClient::connect(broker)?.request_ok(
        RequestCode::GetMaxOffset,
        &QueueRequestHeader { topic, queue_id },
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
    let answer =
        RemotingClient::connect(broker)?.request(RequestCode::QueryConsumerOffset, &header, &[])?;
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
