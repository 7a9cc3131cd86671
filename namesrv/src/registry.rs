//! The route registry: RocketMQ's RouteInfoManager tables and the rules that change them
//! (docs/protocol.md §3.3, §7.1-7.2). Pure data, no I/O and no clock: callers pass `now`.
//!
//! Tables:
//! - clusters: cluster name -> broker names;
//! - brokers: broker name -> [`BrokerData`] (cluster and id -> address, 0 = master);
//! - topics: topic -> broker name -> [`QueueData`] (only masters register queues);
//! - live: broker address -> when it last registered, its data version and connection.
//!
//! Every change returns the topics whose route it changed, so the server republishes only those.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    time::{Duration, Instant},
};

use ringmq_protocol::body::{
    BrokerData, ClusterInfo, DataVersion, QueueData, TopicConfigSerializeWrapper, TopicList,
    TopicRouteData,
};

/// Identifies the connection a broker registered over, so closing it removes the broker.
pub type ConnectionId = u64;

/// A broker's registration, as REGISTER_BROKER carries it.
#[derive(Debug, Clone, Copy)]
pub struct Registration<'a> {
    pub cluster: &'a str,
    pub broker_name: &'a str,
    pub broker_addr: &'a str,
    pub broker_id: i64,
    pub ha_server_addr: &'a str,
    /// The broker's topics; `None` for an empty body (data version 0/0, no topics).
    pub topics: Option<&'a TopicConfigSerializeWrapper>,
    pub connection: ConnectionId,
}

/// What a registration answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterOutcome {
    /// For a slave whose master is alive: the master's address and HA address.
    pub master_addr: Option<String>,
    pub ha_server_addr: Option<String>,
}

#[derive(Debug, Clone)]
struct LiveBroker {
    broker_name: String,
    broker_id: i64,
    last_update: Instant,
    data_version: DataVersion,
    ha_server_addr: String,
    connection: ConnectionId,
}

/// The registry. Not synchronized: the server wraps it in one mutex (writes are rare: one
/// registration per broker every 30 s) and publishes read-only route snapshots.
#[derive(Debug, Default)]
pub struct Registry {
    clusters: BTreeMap<String, BTreeSet<String>>,
    brokers: BTreeMap<String, BrokerData>,
    topics: HashMap<String, BTreeMap<String, QueueData>>,
    live: HashMap<String, LiveBroker>,
    kv: BTreeMap<String, BTreeMap<String, String>>,
}

/// Topics whose route changed.
pub type Changed = HashSet<String>;

impl Registry {
    /// REGISTER_BROKER. Returns the outcome and the topics whose routes changed.
    pub fn register(&mut self, reg: &Registration<'_>, now: Instant) -> (RegisterOutcome, Changed) {
        let mut changed = Changed::new();
        self.clusters
            .entry(reg.cluster.to_owned())
            .or_default()
            .insert(reg.broker_name.to_owned());

        let broker = self
            .brokers
            .entry(reg.broker_name.to_owned())
            .or_insert_with(|| BrokerData {
                cluster: reg.cluster.to_owned(),
                broker_name: reg.broker_name.to_owned(),
                ..BrokerData::default()
            });
        // One address per broker id; an address that moved to another id (slave promoted)
        // leaves its old id.
        let before = broker.broker_addrs.clone();
        broker
            .broker_addrs
            .retain(|id, addr| *id == reg.broker_id || addr != reg.broker_addr);
        broker
            .broker_addrs
            .insert(reg.broker_id, reg.broker_addr.to_owned());
        reg.cluster.clone_into(&mut broker.cluster);
        let addrs_changed = before != broker.broker_addrs;
        if addrs_changed {
            changed.extend(self.topics_of(reg.broker_name));
        }

        let version = reg
            .topics
            .map(|wrapper| wrapper.data_version)
            .unwrap_or_default();
        let first = !self.live.contains_key(reg.broker_addr);
        let version_changed = self
            .live
            .get(reg.broker_addr)
            .is_none_or(|live| live.data_version != version);
        if reg.broker_id == 0
            && (first || version_changed)
            && let Some(wrapper) = reg.topics
        {
            for (topic, config) in &wrapper.topic_config_table {
                let queue = QueueData {
                    broker_name: reg.broker_name.to_owned(),
                    perm: config.perm,
                    read_queue_nums: config.read_queue_nums,
                    topic_sys_flag: config.topic_sys_flag,
                    write_queue_nums: config.write_queue_nums,
                };
                let queues = self.topics.entry(topic.clone()).or_default();
                if queues.get(reg.broker_name) != Some(&queue) {
                    queues.insert(reg.broker_name.to_owned(), queue);
                    changed.insert(topic.clone());
                }
            }
        }
        self.live.insert(
            reg.broker_addr.to_owned(),
            LiveBroker {
                broker_name: reg.broker_name.to_owned(),
                broker_id: reg.broker_id,
                last_update: now,
                data_version: version,
                ha_server_addr: reg.ha_server_addr.to_owned(),
                connection: reg.connection,
            },
        );

        let mut outcome = RegisterOutcome::default();
        if reg.broker_id != 0
            && let Some(master) = self
                .brokers
                .get(reg.broker_name)
                .and_then(|b| b.broker_addrs.get(&0))
            && let Some(live) = self.live.get(master)
        {
            outcome.master_addr = Some(master.clone());
            outcome.ha_server_addr = Some(live.ha_server_addr.clone());
        }
        (outcome, changed)
    }

    /// UNREGISTER_BROKER, and the removal of an expired or disconnected broker.
    ///
    /// A broker name keeps its queues while any of its addresses is left, as in RocketMQ: when
    /// the master goes, routes still show the queues with the slave's address, which is how
    /// consumers keep reading from the slave (docs/protocol.md §8.5). A broker name with no address
    /// left loses its queues and leaves its cluster.
    pub fn unregister(&mut self, broker_name: &str, broker_addr: &str, broker_id: i64) -> Changed {
        let mut changed = Changed::new();
        if self
            .live
            .get(broker_addr)
            .is_some_and(|live| live.broker_name == broker_name && live.broker_id == broker_id)
        {
            self.live.remove(broker_addr);
        }
        let Some(broker) = self.brokers.get_mut(broker_name) else {
            return changed;
        };
        if broker.broker_addrs.get(&broker_id).map(String::as_str) != Some(broker_addr) {
            return changed;
        }
        broker.broker_addrs.remove(&broker_id);
        let cluster = broker.cluster.clone();
        let now_empty = broker.broker_addrs.is_empty();
        changed.extend(self.topics_of(broker_name));
        if now_empty {
            self.remove_queues_of(broker_name);
            self.brokers.remove(broker_name);
            if let Some(names) = self.clusters.get_mut(&cluster) {
                names.remove(broker_name);
                if names.is_empty() {
                    self.clusters.remove(&cluster);
                }
            }
        }
        changed
    }

    /// Removes every broker registered over `connection` (its connection closed).
    pub fn connection_closed(&mut self, connection: ConnectionId) -> (Vec<String>, Changed) {
        let gone: Vec<(String, String, i64)> = self
            .live
            .iter()
            .filter(|(_, live)| live.connection == connection)
            .map(|(addr, live)| (live.broker_name.clone(), addr.clone(), live.broker_id))
            .collect();
        self.remove_all(gone)
    }

    /// Removes brokers whose last registration is older than `expiry`.
    pub fn expire(&mut self, now: Instant, expiry: Duration) -> (Vec<String>, Changed) {
        let gone: Vec<(String, String, i64)> = self
            .live
            .iter()
            .filter(|(_, live)| now.saturating_duration_since(live.last_update) > expiry)
            .map(|(addr, live)| (live.broker_name.clone(), addr.clone(), live.broker_id))
            .collect();
        self.remove_all(gone)
    }

    fn remove_all(&mut self, gone: Vec<(String, String, i64)>) -> (Vec<String>, Changed) {
        let mut changed = Changed::new();
        let mut addrs = Vec::with_capacity(gone.len());
        for (name, addr, id) in gone {
            changed.extend(self.unregister(&name, &addr, id));
            self.live.remove(&addr);
            addrs.push(addr);
        }
        (addrs, changed)
    }

    /// QUERY_DATA_VERSION: whether `version` differs from what `broker_addr` last registered,
    /// and the version held. An unchanged answer refreshes the broker's liveness.
    pub fn query_data_version(
        &mut self,
        broker_addr: &str,
        version: DataVersion,
        now: Instant,
    ) -> (bool, Option<DataVersion>) {
        match self.live.get_mut(broker_addr) {
            Some(live) if live.data_version == version => {
                live.last_update = now;
                (false, Some(live.data_version))
            }
            Some(live) => (true, Some(live.data_version)),
            None => (true, None),
        }
    }

    /// DELETE_TOPIC_IN_NAMESRV: all queue data of `topic`, or only that of `cluster`'s brokers.
    pub fn delete_topic(&mut self, topic: &str, cluster: Option<&str>) -> Changed {
        let mut changed = Changed::new();
        match cluster {
            None => {
                if self.topics.remove(topic).is_some() {
                    changed.insert(topic.to_owned());
                }
            }
            Some(cluster) => {
                let names = self.clusters.get(cluster).cloned().unwrap_or_default();
                if let Some(queues) = self.topics.get_mut(topic) {
                    let before = queues.len();
                    queues.retain(|name, _| !names.contains(name));
                    if queues.len() != before {
                        changed.insert(topic.to_owned());
                    }
                    if queues.is_empty() {
                        self.topics.remove(topic);
                    }
                }
            }
        }
        changed
    }

    /// The route of `topic`: its queue data and the broker data of those brokers. `None` when
    /// no queue data or none of its brokers is known (TOPIC_NOT_EXIST).
    pub fn route(&self, topic: &str) -> Option<TopicRouteData> {
        let queues = self.topics.get(topic)?;
        let broker_datas: Vec<BrokerData> = queues
            .keys()
            .filter_map(|name| self.brokers.get(name).cloned())
            .collect();
        if broker_datas.is_empty() {
            return None;
        }
        Some(TopicRouteData {
            broker_datas,
            queue_datas: queues.values().cloned().collect(),
            ..TopicRouteData::default()
        })
    }

    /// Every topic that has queue data.
    pub fn topic_names(&self) -> impl Iterator<Item = &String> {
        self.topics.keys()
    }

    /// GET_BROKER_CLUSTER_INFO.
    pub fn cluster_info(&self) -> ClusterInfo {
        ClusterInfo {
            broker_addr_table: self.brokers.clone(),
            cluster_addr_table: self.clusters.clone(),
        }
    }

    /// GET_ALL_TOPIC_LIST_FROM_NAMESERVER.
    pub fn topic_list(&self) -> TopicList {
        let mut topics: Vec<String> = self.topics.keys().cloned().collect();
        topics.sort();
        TopicList {
            topic_list: topics.into_iter().collect(),
            ..TopicList::default()
        }
    }

    /// Registered broker addresses (live table).
    pub fn live_brokers(&self) -> usize {
        self.live.len()
    }

    pub fn put_kv(&mut self, namespace: &str, key: &str, value: &str) {
        self.kv
            .entry(namespace.to_owned())
            .or_default()
            .insert(key.to_owned(), value.to_owned());
    }

    pub fn get_kv(&self, namespace: &str, key: &str) -> Option<&str> {
        self.kv.get(namespace)?.get(key).map(String::as_str)
    }

    pub fn delete_kv(&mut self, namespace: &str, key: &str) {
        if let Some(table) = self.kv.get_mut(namespace) {
            table.remove(key);
            if table.is_empty() {
                self.kv.remove(namespace);
            }
        }
    }

    pub fn kv_namespace(&self, namespace: &str) -> Option<&BTreeMap<String, String>> {
        self.kv.get(namespace)
    }

    /// Topics that have queue data on `broker_name`.
    fn topics_of(&self, broker_name: &str) -> Vec<String> {
        self.topics
            .iter()
            .filter(|(_, queues)| queues.contains_key(broker_name))
            .map(|(topic, _)| topic.clone())
            .collect()
    }

    fn remove_queues_of(&mut self, broker_name: &str) {
        self.topics.retain(|_, queues| {
            queues.remove(broker_name);
            !queues.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ringmq_protocol::body::TopicConfig;

    use super::*;

    fn wrapper(counter: i64, topics: &[(&str, i32)]) -> TopicConfigSerializeWrapper {
        TopicConfigSerializeWrapper {
            data_version: DataVersion {
                counter,
                timestamp: 1,
            },
            topic_config_table: topics
                .iter()
                .map(|(name, queues)| {
                    (
                        (*name).to_owned(),
                        TopicConfig {
                            topic_name: (*name).to_owned(),
                            read_queue_nums: *queues,
                            write_queue_nums: *queues,
                            perm: 6,
                            ..TopicConfig::default()
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn registration<'a>(
        name: &'a str,
        addr: &'a str,
        id: i64,
        topics: Option<&'a TopicConfigSerializeWrapper>,
    ) -> Registration<'a> {
        Registration {
            cluster: "C",
            broker_name: name,
            broker_addr: addr,
            broker_id: id,
            ha_server_addr: "ha",
            topics,
            connection: 7,
        }
    }

    #[test]
    fn topics_change_only_with_the_data_version_and_only_from_masters() {
        let mut registry = Registry::default();
        let now = Instant::now();
        let v1 = wrapper(1, &[("T", 4)]);
        let (_, changed) = registry.register(&registration("b", "a:1", 0, Some(&v1)), now);
        assert!(changed.contains("T"));
        // Same version again (a heartbeat): no route change even if the body differs.
        let same_version_other_body = wrapper(1, &[("T", 8)]);
        let (_, changed) = registry.register(
            &registration("b", "a:1", 0, Some(&same_version_other_body)),
            now,
        );
        assert!(changed.is_empty());
        assert_eq!(
            registry.route("T").unwrap().queue_datas[0].write_queue_nums,
            4
        );
        // A new version applies.
        let v2 = wrapper(2, &[("T", 8)]);
        let (_, changed) = registry.register(&registration("b", "a:1", 0, Some(&v2)), now);
        assert!(changed.contains("T"));
        assert_eq!(
            registry.route("T").unwrap().queue_datas[0].write_queue_nums,
            8
        );
        // A slave's topics are not registered as queue data.
        let slave_topics = wrapper(5, &[("SlaveOnly", 4)]);
        registry.register(&registration("b", "a:2", 1, Some(&slave_topics)), now);
        assert!(registry.route("SlaveOnly").is_none());
    }

    #[test]
    fn an_address_moving_to_another_id_leaves_the_old_one() {
        let mut registry = Registry::default();
        let now = Instant::now();
        let topics = wrapper(1, &[("T", 4)]);
        registry.register(&registration("b", "a:1", 0, Some(&topics)), now);
        registry.register(&registration("b", "a:2", 1, None), now);
        // The slave is promoted: it now registers as id 0 with the same address.
        registry.register(&registration("b", "a:2", 0, Some(&topics)), now);
        let addrs = &registry.route("T").unwrap().broker_datas[0].broker_addrs;
        assert_eq!(addrs.len(), 1);
        assert_eq!(addrs[&0], "a:2");
    }

    #[test]
    fn expiry_and_connection_close_remove_brokers() {
        let mut registry = Registry::default();
        let start = Instant::now();
        let topics = wrapper(1, &[("T", 4)]);
        registry.register(&registration("b", "a:1", 0, Some(&topics)), start);
        let (removed, changed) =
            registry.expire(start + Duration::from_secs(1), Duration::from_secs(2));
        assert!(removed.is_empty() && changed.is_empty());
        let (removed, changed) =
            registry.expire(start + Duration::from_secs(3), Duration::from_secs(2));
        assert_eq!(removed, ["a:1"]);
        assert!(changed.contains("T"));
        assert!(registry.route("T").is_none());
        assert!(registry.cluster_info().cluster_addr_table.is_empty());

        registry.register(&registration("b", "a:1", 0, Some(&topics)), start);
        let (removed, _) = registry.connection_closed(8);
        assert!(
            removed.is_empty(),
            "another connection's close removes nothing"
        );
        let (removed, _) = registry.connection_closed(7);
        assert_eq!(removed, ["a:1"]);
        assert_eq!(registry.live_brokers(), 0);
    }

    #[test]
    fn query_data_version_refreshes_liveness_only_when_unchanged() {
        let mut registry = Registry::default();
        let start = Instant::now();
        let topics = wrapper(3, &[("T", 4)]);
        registry.register(&registration("b", "a:1", 0, Some(&topics)), start);
        let later = start + Duration::from_secs(100);
        let (changed, held) = registry.query_data_version("a:1", topics.data_version, later);
        assert!(!changed);
        assert_eq!(held, Some(topics.data_version));
        // Refreshed at `later`: not expired 100 s after `start` with a 120 s expiry + 50 s.
        let (removed, _) =
            registry.expire(start + Duration::from_secs(170), Duration::from_secs(120));
        assert!(removed.is_empty());
        let (changed, _) = registry.query_data_version("a:1", DataVersion::default(), later);
        assert!(changed);
        let (changed, held) =
            registry.query_data_version("unknown:1", DataVersion::default(), later);
        assert!(changed && held.is_none());
    }
}
