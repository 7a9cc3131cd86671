//! Topic routes: fetched from any NameServer that answers, cached, refreshed on a timer, and kept
//! when every NameServer is down.
//!
//! NameServers are independent and equivalent, so a lookup asks the last one that answered and
//! moves on to the next on a transport failure. A topic a NameServer does not know (yet) is an
//! error only when nothing is cached for it: a NameServer that just restarted knows no topic
//! until brokers re-register, and dropping good routes then would stop every producer.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringmq_protocol::body::{self, BrokerData, QueueData, TopicRouteData, perm};
use ringmq_protocol::header::GetRouteInfoRequestHeader;
use ringmq_protocol::{Command, EncodeExt, RequestCode, ResponseCode};

use crate::error::{ClientError, Result};
use crate::message::MessageQueue;
use crate::remoting::ConnectionPool;

/// Most queues per broker group a route may declare; larger counts come from a broken or
/// hostile NameServer and are clamped rather than allocated.
pub const MAX_QUEUES_PER_BROKER: i32 = 65_536;

/// The auto-creation template topic (Java's `TopicValidator.AUTO_CREATE_TOPIC_KEY_TOPIC`): a
/// producer sends to a topic no NameServer knows on the brokers of this topic's route, and
/// brokers create new topics from its configuration (`defaultTopic` in requests).
pub const AUTO_CREATE_TOPIC: &str = ringmq_protocol::topic::AUTO_CREATE_TEMPLATE;
/// Queues of a topic the broker auto-creates (Java's `defaultTopicQueueNums`).
pub const DEFAULT_TOPIC_QUEUE_NUMS: i32 = 4;

/// A topic's route, with the queue lists producers and consumers use derived once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRoute {
    /// The topic.
    pub topic: String,
    /// The route as the NameServer sent it.
    pub data: TopicRouteData,
    writable: Vec<MessageQueue>,
    readable: Vec<MessageQueue>,
}

impl TopicRoute {
    /// Derives the queue lists: writable queues of brokers with a master, readable queues of
    /// every broker, both ordered by broker name then queue id.
    pub fn new(topic: &str, data: TopicRouteData) -> Self {
        let writable = queue_list(topic, &data, |queues, broker| {
            if perm::is_writeable(queues.perm) && broker.master_addr().is_some() {
                queues.write_queue_nums
            } else {
                0
            }
        });
        let readable = queue_list(topic, &data, |queues, _| {
            if perm::is_readable(queues.perm) {
                queues.read_queue_nums
            } else {
                0
            }
        });
        Self {
            topic: topic.to_owned(),
            data,
            writable,
            readable,
        }
    }

    /// Every queue of the route's broker groups, `count` of them per group (whatever the
    /// permissions), by broker name then queue id; groups with no `BrokerData` are left out.
    /// For tools that inspect every queue (admin status), not for sending or reading.
    pub fn queues_by(&self, count: impl Fn(&QueueData) -> i32) -> Vec<MessageQueue> {
        queue_list(&self.topic, &self.data, |queues, _| count(queues))
    }

    /// Queues a producer may send to.
    pub fn writable_queues(&self) -> &[MessageQueue] {
        &self.writable
    }

    /// Queues a consumer may read.
    pub fn readable_queues(&self) -> &[MessageQueue] {
        &self.readable
    }

    /// The broker group named `broker_name`.
    pub fn broker(&self, broker_name: &str) -> Option<&BrokerData> {
        self.data
            .broker_datas
            .iter()
            .find(|broker| broker.broker_name == broker_name)
    }

    /// Where to send `broker_name`'s messages: its master (only masters take writes).
    pub fn publish_addr(&self, broker_name: &str) -> Option<&str> {
        self.broker(broker_name).and_then(BrokerData::master_addr)
    }

    /// The master address of `broker_name`; the same as [`TopicRoute::publish_addr`].
    pub fn master_addr(&self, broker_name: &str) -> Option<&str> {
        self.publish_addr(broker_name)
    }
}

/// An address to ask about a broker group (offsets, status, queries): its master, else its
/// lowest-id slave. `broker_addrs` is ordered by broker id and the master is id 0.
pub fn any_addr(broker: &BrokerData) -> Option<&str> {
    broker.broker_addrs.values().next().map(String::as_str)
}

/// The queues of `data`, `count(queue data, its broker)` per broker group (clamped to
/// `0..=MAX_QUEUES_PER_BROKER`), by broker name then queue id. Groups without a `BrokerData`
/// are skipped: nobody could be asked about their queues.
fn queue_list(
    topic: &str,
    data: &TopicRouteData,
    count: impl Fn(&QueueData, &BrokerData) -> i32,
) -> Vec<MessageQueue> {
    let mut queue_datas: Vec<&QueueData> = data.queue_datas.iter().collect();
    queue_datas.sort_by(|a, b| a.broker_name.cmp(&b.broker_name));
    let mut list = Vec::new();
    for queues in queue_datas {
        let Some(broker) = data
            .broker_datas
            .iter()
            .find(|broker| broker.broker_name == queues.broker_name)
        else {
            continue;
        };
        let count = count(queues, broker).clamp(0, MAX_QUEUES_PER_BROKER);
        list.extend((0..count).map(|queue_id| MessageQueue {
            broker_name: queues.broker_name.clone(),
            queue_id,
            topic: topic.to_owned(),
        }));
    }
    list
}

/// The NameServer list, the route cache and the broker addresses learned from routes.
#[derive(Debug)]
pub struct RouteTable {
    namesrv_addrs: Vec<String>,
    /// Index of the NameServer to ask first (the last one that answered).
    preferred: Cell<usize>,
    routes: RefCell<HashMap<String, Rc<TopicRoute>>>,
    /// Broker name to its addresses by broker id, from every route seen.
    brokers: RefCell<BTreeMap<String, BrokerData>>,
    /// Whether the last refresh found every NameServer down (logged once per outage).
    namesrv_down: Cell<bool>,
}

impl RouteTable {
    /// A table over the given NameServers.
    pub fn new(namesrv_addrs: Vec<String>) -> Self {
        Self {
            namesrv_addrs,
            preferred: Cell::new(0),
            routes: RefCell::new(HashMap::new()),
            brokers: RefCell::new(BTreeMap::new()),
            namesrv_down: Cell::new(false),
        }
    }

    /// The NameServer addresses.
    pub fn namesrv_addrs(&self) -> &[String] {
        &self.namesrv_addrs
    }

    /// Sends a request to the NameServers in turn, starting with the last one that answered,
    /// until one answers (whatever its answer) or `deadline` passes. Transport failures move on
    /// to the next.
    ///
    /// The whole lookup, connects included, ends by `deadline`: each attempt gets an equal share
    /// of what is left over the NameServers not yet tried (the last one gets all of it), so a
    /// blackholed first NameServer leaves time to ask the next one, and a send's budget covers
    /// its route lookup.
    pub async fn namesrv_request<E: EncodeExt>(
        &self,
        pool: &ConnectionPool,
        code: RequestCode,
        header: &E,
        request_body: &[u8],
        deadline: Instant,
    ) -> Result<(String, Command)> {
        let count = self.namesrv_addrs.len();
        let mut last_error = None;
        for step in 0..count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let share = left / u32::try_from(count - step).unwrap_or(u32::MAX);
            let index = (self.preferred.get() + step) % count;
            let addr = &self.namesrv_addrs[index];
            let attempt = pool.request(addr, code, header, request_body, share);
            let result = match compio::time::timeout(share, attempt).await {
                Ok(result) => result,
                Err(_) => Err(ClientError::Timeout {
                    addr: addr.clone(),
                    code,
                    timeout: share,
                }),
            };
            match result {
                Ok(answer) => {
                    self.preferred.set(index);
                    return Ok((addr.clone(), answer));
                }
                Err(error) => {
                    tracing::debug!(namesrv = %addr, %error, "NameServer request failed");
                    last_error = Some(error);
                }
            }
        }
        Err(ClientError::NameServersUnreachable {
            tried: self.namesrv_addrs.join(";"),
            last_error: Box::new(last_error.unwrap_or_else(|| {
                if count == 0 {
                    ClientError::InvalidArgument("no NameServer address configured".into())
                } else {
                    ClientError::Timeout {
                        addr: self.namesrv_addrs.join(";"),
                        code,
                        timeout: Duration::ZERO,
                    }
                }
            })),
        })
    }

    /// Asks the NameServers for `topic`'s route: `None` when they do not know it.
    pub async fn fetch(
        &self,
        pool: &ConnectionPool,
        topic: &str,
        deadline: Instant,
    ) -> Result<Option<TopicRouteData>> {
        let header = GetRouteInfoRequestHeader {
            topic,
            accept_standard_json_only: Some(true),
        };
        let (addr, answer) = self
            .namesrv_request(
                pool,
                RequestCode::GetRouteinfoByTopic,
                &header,
                &[],
                deadline,
            )
            .await?;
        match answer.response_code() {
            ResponseCode::Success => body::decode(&answer.body, "TopicRouteData")
                .map(Some)
                .map_err(|error| {
                    ClientError::bad_body(&addr, RequestCode::GetRouteinfoByTopic, &error)
                }),
            ResponseCode::TopicNotExist => Ok(None),
            code => Err(ClientError::broker(
                &addr,
                RequestCode::GetRouteinfoByTopic,
                code,
                answer.remark.as_deref(),
            )),
        }
    }

    /// The cached route of `topic`, fetched first (within `timeout`, every NameServer
    /// included) when none is cached.
    pub async fn route(
        &self,
        pool: &ConnectionPool,
        topic: &str,
        timeout: Duration,
    ) -> Result<Rc<TopicRoute>> {
        if let Some(route) = self.cached(topic) {
            return Ok(route);
        }
        self.refresh(pool, topic, timeout).await
    }

    /// Fetches `topic`'s route now, within `timeout` (every NameServer included). When the
    /// NameServers are unreachable or do not know the topic, the cached route (if any) is
    /// returned instead.
    pub async fn refresh(
        &self,
        pool: &ConnectionPool,
        topic: &str,
        timeout: Duration,
    ) -> Result<Rc<TopicRoute>> {
        match self.fetch(pool, topic, Instant::now() + timeout).await {
            Ok(Some(data)) => {
                self.mark_namesrv_up();
                Ok(self.store(topic, data))
            }
            Ok(None) => {
                self.mark_namesrv_up();
                self.cached(topic)
                    .ok_or_else(|| ClientError::TopicNotFound {
                        topic: topic.to_owned(),
                    })
            }
            Err(error) => {
                if matches!(error, ClientError::NameServersUnreachable { .. }) {
                    self.mark_namesrv_down();
                }
                self.cached(topic).ok_or(error)
            }
        }
    }

    /// Re-fetches every cached route (the periodic refresh).
    /// Each topic's lookup gets `timeout`.
    pub async fn refresh_all(&self, pool: &ConnectionPool, timeout: Duration) {
        let topics: Vec<String> = self.routes.borrow().keys().cloned().collect();
        for topic in topics {
            match self.fetch(pool, &topic, Instant::now() + timeout).await {
                Ok(Some(data)) => {
                    self.mark_namesrv_up();
                    self.store(&topic, data);
                }
                Ok(None) => {
                    self.mark_namesrv_up();
                    tracing::debug!(
                        topic,
                        "NameServer does not know the topic; keeping its cached route"
                    );
                }
                Err(error @ ClientError::NameServersUnreachable { .. }) => {
                    tracing::debug!(%error, "route refresh failed");
                    self.mark_namesrv_down();
                    // Every NameServer just failed: the other topics would fail the same way.
                    return;
                }
                Err(error) => tracing::warn!(topic, %error, "route refresh failed"),
            }
        }
    }

    /// The cached route of `topic`.
    pub fn cached(&self, topic: &str) -> Option<Rc<TopicRoute>> {
        self.routes.borrow().get(topic).cloned()
    }

    /// Every broker group seen in a route.
    pub fn brokers(&self) -> Vec<BrokerData> {
        self.brokers.borrow().values().cloned().collect()
    }

    /// Where to send `broker_name`'s messages (its master), from any route seen.
    pub fn publish_addr(&self, broker_name: &str) -> Option<String> {
        self.brokers
            .borrow()
            .get(broker_name)
            .and_then(|broker| broker.master_addr().map(str::to_owned))
    }

    /// The master address of `broker_name`; the same as [`RouteTable::publish_addr`] (the
    /// consumer's call sites still use this name).
    pub fn master_addr(&self, broker_name: &str) -> Option<String> {
        self.publish_addr(broker_name)
    }

    /// An address to ask about `broker_name` (see [`any_addr`]), from any route seen.
    pub fn any_addr(&self, broker_name: &str) -> Option<String> {
        self.brokers
            .borrow()
            .get(broker_name)
            .and_then(|broker| any_addr(broker).map(str::to_owned))
    }

    /// Where to read `broker_name`'s queues: the broker id the last pull answer suggested
    /// (`suggestWhichBrokerId`, docs/protocol.md §8.5) when it is registered, else the master, else
    /// any slave — so consumers keep reading from a slave while the master is down, as Java's
    /// `findBrokerAddressInSubscribe` does.
    pub fn subscribe_addr(&self, broker_name: &str, suggested_id: Option<i64>) -> Option<String> {
        let brokers = self.brokers.borrow();
        let addrs = &brokers.get(broker_name)?.broker_addrs;
        suggested_id
            .and_then(|id| addrs.get(&id))
            .or_else(|| addrs.get(&0))
            .or_else(|| addrs.values().next())
            .cloned()
    }

    /// Caches a fetched route and re-learns the brokers' addresses from every cached route, so a
    /// broker group that left every route stops getting heartbeats.
    pub fn store(&self, topic: &str, data: TopicRouteData) -> Rc<TopicRoute> {
        let route = Rc::new(TopicRoute::new(topic, data));
        let mut routes = self.routes.borrow_mut();
        let changed = routes.get(topic).is_none_or(|old| old.data != route.data);
        if changed {
            tracing::debug!(topic, queues = route.writable.len(), "route updated");
        }
        routes.insert(topic.to_owned(), Rc::clone(&route));
        if changed {
            let mut brokers = self.brokers.borrow_mut();
            brokers.clear();
            for cached in routes.values() {
                for broker in &cached.data.broker_datas {
                    brokers.insert(broker.broker_name.clone(), broker.clone());
                }
            }
        }
        route
    }

    fn mark_namesrv_down(&self) {
        if !self.namesrv_down.replace(true) {
            tracing::warn!(
                namesrv = %self.namesrv_addrs.join(";"),
                cached_routes = self.routes.borrow().len(),
                "every NameServer is unreachable; working on the cached routes"
            );
        }
    }

    fn mark_namesrv_up(&self) {
        if self.namesrv_down.replace(false) {
            tracing::info!("a NameServer answers again; routes are refreshed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(name: &str, master: Option<&str>) -> BrokerData {
        let mut broker = BrokerData {
            broker_name: name.into(),
            cluster: "c".into(),
            ..BrokerData::default()
        };
        if let Some(addr) = master {
            broker.broker_addrs.insert(0, addr.into());
        }
        broker.broker_addrs.insert(1, format!("{name}-slave:1"));
        broker
    }

    #[test]
    fn queue_lists_follow_permissions_and_masters() {
        let data = TopicRouteData {
            broker_datas: vec![
                broker("b", Some("b:1")),
                broker("a", Some("a:1")),
                broker("c", None),
            ],
            queue_datas: vec![
                QueueData {
                    broker_name: "b".into(),
                    perm: perm::READ | perm::WRITE,
                    read_queue_nums: 2,
                    write_queue_nums: 2,
                    topic_sys_flag: 0,
                },
                QueueData {
                    broker_name: "a".into(),
                    perm: perm::READ,
                    read_queue_nums: 1,
                    write_queue_nums: 1,
                    topic_sys_flag: 0,
                },
                QueueData {
                    broker_name: "c".into(),
                    perm: perm::READ | perm::WRITE,
                    read_queue_nums: 1,
                    write_queue_nums: 1,
                    topic_sys_flag: 0,
                },
            ],
            ..TopicRouteData::default()
        };
        let route = TopicRoute::new("t", data);
        let writable: Vec<_> = route
            .writable_queues()
            .iter()
            .map(|q| (q.broker_name.as_str(), q.queue_id))
            .collect();
        assert_eq!(
            writable,
            [("b", 0), ("b", 1)],
            "read-only a and masterless c are not writable"
        );
        let readable: Vec<_> = route
            .readable_queues()
            .iter()
            .map(|q| (q.broker_name.as_str(), q.queue_id))
            .collect();
        assert_eq!(readable, [("a", 0), ("b", 0), ("b", 1), ("c", 0)]);
        assert_eq!(route.master_addr("b"), Some("b:1"));
        assert_eq!(route.master_addr("c"), None);

        let table = RouteTable::new(vec!["ns:1".into()]);
        table.store("t", route.data.clone());
        assert_eq!(table.subscribe_addr("b", None).as_deref(), Some("b:1"));
        assert_eq!(
            table.subscribe_addr("b", Some(1)).as_deref(),
            Some("b-slave:1"),
            "suggested"
        );
        assert_eq!(
            table.subscribe_addr("b", Some(7)).as_deref(),
            Some("b:1"),
            "unknown id: master"
        );
        assert_eq!(
            table.subscribe_addr("c", None).as_deref(),
            Some("c-slave:1"),
            "no master: a slave"
        );
        assert_eq!(table.subscribe_addr("x", None), None);
        // A broker group no cached route names any more is forgotten.
        table.store("t", TopicRouteData::default());
        assert!(table.brokers().is_empty());
    }

    #[test]
    fn hostile_queue_counts_are_clamped() {
        let data = TopicRouteData {
            broker_datas: vec![broker("a", Some("a:1"))],
            queue_datas: vec![QueueData {
                broker_name: "a".into(),
                perm: perm::READ | perm::WRITE,
                read_queue_nums: i32::MAX,
                write_queue_nums: -5,
                topic_sys_flag: 0,
            }],
            ..TopicRouteData::default()
        };
        let route = TopicRoute::new("t", data);
        assert!(route.writable_queues().is_empty());
        assert_eq!(
            route.readable_queues().len(),
            MAX_QUEUES_PER_BROKER as usize
        );
    }
}
