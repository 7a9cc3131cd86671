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

use ringmq_protocol::body::{self, BrokerData, TopicRouteData, perm};
use ringmq_protocol::header::GetRouteInfoRequestHeader;
use ringmq_protocol::{Command, EncodeExt, RequestCode, ResponseCode};

use crate::error::{ClientError, Result};
use crate::message::MessageQueue;
use crate::remoting::ConnectionPool;

/// Most queues per broker group a route may declare; larger counts come from a broken or
/// hostile NameServer and are clamped rather than allocated.
pub const MAX_QUEUES_PER_BROKER: i32 = 65_536;

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
        let mut queue_datas = data.queue_datas.clone();
        queue_datas.sort_by(|a, b| a.broker_name.cmp(&b.broker_name));
        let mut writable = Vec::new();
        let mut readable = Vec::new();
        for queues in &queue_datas {
            let broker = data
                .broker_datas
                .iter()
                .find(|broker| broker.broker_name == queues.broker_name);
            let has_master = broker.is_some_and(|broker| broker.master_addr().is_some());
            if perm::is_writeable(queues.perm) && has_master {
                writable.extend(
                    (0..queues.write_queue_nums.clamp(0, MAX_QUEUES_PER_BROKER)).map(|queue_id| {
                        MessageQueue {
                            broker_name: queues.broker_name.clone(),
                            queue_id,
                            topic: topic.to_owned(),
                        }
                    }),
                );
            }
            if perm::is_readable(queues.perm) && broker.is_some() {
                readable.extend(
                    (0..queues.read_queue_nums.clamp(0, MAX_QUEUES_PER_BROKER)).map(|queue_id| {
                        MessageQueue {
                            broker_name: queues.broker_name.clone(),
                            queue_id,
                            topic: topic.to_owned(),
                        }
                    }),
                );
            }
        }
        Self {
            topic: topic.to_owned(),
            data,
            writable,
            readable,
        }
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

    /// The master address of `broker_name`.
    pub fn master_addr(&self, broker_name: &str) -> Option<&str> {
        self.broker(broker_name).and_then(BrokerData::master_addr)
    }
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
    /// until one answers (whatever its answer). Transport failures move on to the next.
    pub async fn namesrv_request<E: EncodeExt>(
        &self,
        pool: &ConnectionPool,
        code: RequestCode,
        header: &E,
        request_body: &[u8],
        timeout: std::time::Duration,
    ) -> Result<(String, Command)> {
        let count = self.namesrv_addrs.len();
        let mut last_error = None;
        for step in 0..count {
            let index = (self.preferred.get() + step) % count;
            let addr = &self.namesrv_addrs[index];
            match pool
                .request(addr, code, header, request_body, timeout)
                .await
            {
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
            last_error: Box::new(last_error.unwrap_or(ClientError::InvalidArgument(
                "no NameServer address configured".into(),
            ))),
        })
    }

    /// Asks the NameServers for `topic`'s route: `None` when they do not know it.
    pub async fn fetch(
        &self,
        pool: &ConnectionPool,
        topic: &str,
        timeout: std::time::Duration,
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
                timeout,
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

    /// The cached route of `topic`, fetched first when none is cached.
    pub async fn route(
        &self,
        pool: &ConnectionPool,
        topic: &str,
        timeout: std::time::Duration,
    ) -> Result<Rc<TopicRoute>> {
        if let Some(route) = self.cached(topic) {
            return Ok(route);
        }
        self.refresh(pool, topic, timeout).await
    }

    /// Fetches `topic`'s route now. When the NameServers are unreachable or do not know the
    /// topic, the cached route (if any) is returned instead.
    pub async fn refresh(
        &self,
        pool: &ConnectionPool,
        topic: &str,
        timeout: std::time::Duration,
    ) -> Result<Rc<TopicRoute>> {
        match self.fetch(pool, topic, timeout).await {
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
    pub async fn refresh_all(&self, pool: &ConnectionPool, timeout: std::time::Duration) {
        let topics: Vec<String> = self.routes.borrow().keys().cloned().collect();
        for topic in topics {
            match self.fetch(pool, &topic, timeout).await {
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

    /// The master address of `broker_name`, from any route seen.
    pub fn master_addr(&self, broker_name: &str) -> Option<String> {
        self.brokers
            .borrow()
            .get(broker_name)
            .and_then(|broker| broker.master_addr().map(str::to_owned))
    }

    /// Where to read `broker_name`'s queues: the broker id the last pull answer suggested
    /// (`suggestWhichBrokerId`, PROTOCOL.md §8.5) when it is registered, else the master, else
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
    use ringmq_protocol::body::QueueData;

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
