//! Setup requests, one at a time, before the load starts: finding the broker through a NameServer,
//! creating the topic, and reading queue offsets. Every call is bounded by [`CALL_TIMEOUT`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use std::rc::Rc;

use anyhow::{Context, Result, anyhow, bail};
use ringmq_client::remoting::{Connection, ConnectionOptions};
use ringmq_protocol::body::{self, ClusterInfo, TopicRouteData, perm};
use ringmq_protocol::header::{
    CreateTopicRequestHeader, GetRouteInfoRequestHeader, OffsetResponseHeader, QueueRequestHeader,
};
use ringmq_protocol::{Command, EncodeExt, RequestCode, ResponseCode};

use super::wire::DEFAULT_TOPIC;

/// Longest wait for a connection or a response during setup.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait for a new topic to appear in the NameServer's routes.
const ROUTE_WAIT: Duration = Duration::from_secs(5);

/// Resolves `host:port` to its first address.
pub fn resolve(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("cannot resolve {addr}"))?
        .next()
        .ok_or_else(|| anyhow!("{addr} resolves to no address"))
}

/// Opens a client-library connection (multiplexed, binary headers, Nagle off) to `addr` on the
/// current thread's runtime, with [`CALL_TIMEOUT`] to connect.
pub async fn connect(addr: SocketAddr) -> Result<Rc<Connection>> {
    let options = ConnectionOptions {
        connect_timeout: CALL_TIMEOUT,
        ..ConnectionOptions::default()
    };
    Ok(Connection::connect(&addr.to_string(), &options).await?)
}

/// A request/response connection for setup; `what` ("broker", "NameServer") appears in errors.
#[derive(Debug)]
pub struct RpcClient {
    connection: Rc<Connection>,
    what: &'static str,
}

impl RpcClient {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr, what: &'static str) -> Result<Self> {
        let connection = connect(addr)
            .await
            .with_context(|| format!("connecting to {what} {addr}"))?;
        Ok(Self { connection, what })
    }

    /// Sends one request and waits up to [`CALL_TIMEOUT`] for its response.
    pub async fn call<E: EncodeExt>(
        &mut self,
        code: RequestCode,
        header: &E,
        body: &[u8],
    ) -> Result<Command> {
        self.connection
            .request(code, header, body, CALL_TIMEOUT)
            .await
            .with_context(|| format!("{code} to {} {}", self.what, self.connection.addr()))
    }
}

/// A response's code and remark for error messages.
fn describe(response: &Command) -> String {
    match &response.remark {
        Some(remark) => format!("{} ({remark})", response.response_code()),
        None => response.response_code().to_string(),
    }
}

/// The master address of the first broker in a route.
fn master_of_route(route: &TopicRouteData, topic: &str) -> Result<String> {
    let broker = route
        .broker_datas
        .first()
        .ok_or_else(|| anyhow!("the route of topic {topic} lists no broker"))?;
    broker.master_addr().map(str::to_owned).ok_or_else(|| {
        anyhow!(
            "broker {} of topic {topic} has no master (brokerAddrs key 0) registered",
            broker.broker_name
        )
    })
}

/// Asks the NameServer for the topic's route: `Some(master address)` of its first broker, `None`
/// when the topic does not exist.
async fn query_route(namesrv: &mut RpcClient, topic: &str) -> Result<Option<String>> {
    let header = GetRouteInfoRequestHeader {
        topic,
        accept_standard_json_only: Some(true),
    };
    let response = namesrv
        .call(RequestCode::GetRouteinfoByTopic, &header, &[])
        .await?;
    match response.response_code() {
        ResponseCode::Success => {
            let route: TopicRouteData = body::decode(&response.body, "TopicRouteData")
                .context("decoding the topic route")?;
            master_of_route(&route, topic).map(Some)
        }
        ResponseCode::TopicNotExist => Ok(None),
        _ => bail!(
            "the NameServer answered GET_ROUTEINFO_BY_TOPIC for {topic} with {}",
            describe(&response)
        ),
    }
}

/// The first broker master the NameServer knows.
async fn first_broker(namesrv: &mut RpcClient) -> Result<String> {
    let response = namesrv
        .call(RequestCode::GetBrokerClusterInfo, &(), &[])
        .await?;
    if response.response_code() != ResponseCode::Success {
        bail!(
            "the NameServer answered GET_BROKER_CLUSTER_INFO with {}",
            describe(&response)
        );
    }
    let info: ClusterInfo =
        body::decode(&response.body, "ClusterInfo").context("decoding the cluster info")?;
    info.broker_addr_table
        .values()
        .find_map(|broker| broker.master_addr().map(str::to_owned))
        .ok_or_else(|| anyhow!("the NameServer knows no broker master: is a broker registered?"))
}

/// Finds the broker to benchmark through a NameServer, creating the topic on the first broker
/// when it does not exist yet (then waits for the new route), and ensures the topic has
/// `queues` queues. Returns the broker address.
pub async fn broker_via_namesrv(namesrv: &str, topic: &str, queues: u32) -> Result<SocketAddr> {
    let namesrv_addr = resolve(namesrv)?;
    let mut client = RpcClient::connect(namesrv_addr, "NameServer").await?;
    if let Some(master) = query_route(&mut client, topic).await? {
        let broker = resolve(&master)?;
        create_topic(broker, topic, queues).await?;
        return Ok(broker);
    }
    let first = first_broker(&mut client).await?;
    let broker = resolve(&first)?;
    create_topic(broker, topic, queues).await?;
    // The broker re-registers right after creating a topic; wait briefly for the route.
    let deadline = std::time::Instant::now() + ROUTE_WAIT;
    loop {
        if let Some(master) = query_route(&mut client, topic).await? {
            return resolve(&master);
        }
        if std::time::Instant::now() >= deadline {
            eprintln!(
                "note: topic {topic} created on {first} but not yet in the NameServer's routes \
                 after {ROUTE_WAIT:?}; benchmarking {first}"
            );
            return Ok(broker);
        }
        compio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates (or updates) the topic on a broker with `queues` read and write queues.
pub async fn create_topic(broker: SocketAddr, topic: &str, queues: u32) -> Result<()> {
    let mut client = RpcClient::connect(broker, "broker").await?;
    let queues = queues as i32;
    let header = CreateTopicRequestHeader {
        topic,
        default_topic: DEFAULT_TOPIC,
        read_queue_nums: queues,
        write_queue_nums: queues,
        perm: perm::READ | perm::WRITE,
        topic_filter_type: "SINGLE_TAG",
        topic_sys_flag: None,
        order: false,
    };
    let response = client
        .call(RequestCode::UpdateAndCreateTopic, &header, &[])
        .await?;
    if response.response_code() != ResponseCode::Success {
        bail!(
            "broker {broker} refused to create topic {topic} with {queues} queues: {}",
            describe(&response)
        );
    }
    Ok(())
}

/// Which end of a queue to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueEnd {
    /// GET_MIN_OFFSET: the oldest message still stored.
    Min,
    /// GET_MAX_OFFSET: the next offset to be written.
    Max,
}

/// The min or max offset of every queue `0..queues` of `topic`.
pub async fn queue_offsets(
    broker: SocketAddr,
    topic: &str,
    queues: u32,
    end: QueueEnd,
) -> Result<Vec<i64>> {
    let mut client = RpcClient::connect(broker, "broker").await?;
    let code = match end {
        QueueEnd::Min => RequestCode::GetMinOffset,
        QueueEnd::Max => RequestCode::GetMaxOffset,
    };
    let mut offsets = Vec::with_capacity(queues as usize);
    for queue_id in 0..queues as i32 {
        let header = QueueRequestHeader { topic, queue_id };
        let response = client.call(code, &header, &[]).await?;
        if response.response_code() != ResponseCode::Success {
            bail!(
                "broker {broker} answered {code} for {topic} queue {queue_id} with {}",
                describe(&response)
            );
        }
        let offset: OffsetResponseHeader = response
            .header()
            .with_context(|| format!("reading the {code} answer for queue {queue_id}"))?;
        offsets.push(offset.offset);
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq_protocol::body::BrokerData;

    #[test]
    fn route_master_is_broker_id_zero_of_the_first_broker() {
        let mut route = TopicRouteData::default();
        assert!(master_of_route(&route, "T").is_err());
        let mut broker = BrokerData {
            broker_name: "broker-a".into(),
            ..BrokerData::default()
        };
        broker.broker_addrs.insert(1, "10.0.0.2:10911".into());
        route.broker_datas.push(broker.clone());
        let error = master_of_route(&route, "T").unwrap_err().to_string();
        assert!(error.contains("no master"), "{error}");
        broker.broker_addrs.insert(0, "10.0.0.1:10911".into());
        route.broker_datas[0] = broker;
        assert_eq!(master_of_route(&route, "T").unwrap(), "10.0.0.1:10911");
    }

    #[test]
    fn resolve_accepts_ip_literals() {
        assert_eq!(
            resolve("127.0.0.1:10911").unwrap(),
            "127.0.0.1:10911".parse().unwrap()
        );
        assert_eq!(
            resolve("[::1]:9876").unwrap(),
            "[::1]:9876".parse().unwrap()
        );
    }
}
