//! A loopback cluster: N NameServers and one master per broker name, each broker registered with
//! every NameServer.

use std::time::Duration;

use ringmq_protocol::body::perm;

use crate::remoting::{cluster_info, create_topic, topic_route};
use crate::{BrokerOptions, BrokerProcess, DEADLINE, NamesrvProcess, wait_until};

/// The cluster name every broker of a [`Cluster`] registers under.
pub const CLUSTER_NAME: &str = "DefaultCluster";

/// NameServers and brokers started together; everything is SIGKILLed on drop.
#[derive(Debug)]
pub struct Cluster {
    namesrvs: Vec<NamesrvProcess>,
    brokers: Vec<BrokerProcess>,
}

impl Cluster {
    /// Starts `namesrvs` NameServers and one master per name in `brokers`, and waits until every
    /// NameServer routes every broker.
    pub fn start(namesrvs: usize, brokers: &[&str]) -> Self {
        Self::start_with(namesrvs, brokers, |_| {})
    }

    /// As [`Cluster::start`], letting `customize` adjust each broker's options first.
    pub fn start_with(
        namesrvs: usize,
        brokers: &[&str],
        mut customize: impl FnMut(&mut BrokerOptions),
    ) -> Self {
        assert!(namesrvs > 0, "a cluster needs a NameServer");
        let namesrvs: Vec<NamesrvProcess> =
            (0..namesrvs).map(|_| NamesrvProcess::start()).collect();
        let namesrv_addrs = join_addrs(&namesrvs);
        let brokers = brokers
            .iter()
            .map(|name| {
                let mut options = BrokerOptions::master(name, &namesrv_addrs);
                customize(&mut options);
                BrokerProcess::start(options)
            })
            .collect();
        let cluster = Self { namesrvs, brokers };
        cluster.wait_until_registered(DEADLINE);
        cluster
    }

    /// `a;b`: every NameServer, for `ClientConfig::new` or `-n`.
    pub fn namesrv_addrs(&self) -> String {
        join_addrs(&self.namesrvs)
    }

    pub fn namesrvs(&self) -> &[NamesrvProcess] {
        &self.namesrvs
    }

    pub fn namesrv_mut(&mut self, index: usize) -> &mut NamesrvProcess {
        &mut self.namesrvs[index]
    }

    /// The broker named `name`; panics when there is none.
    pub fn broker(&self, name: &str) -> &BrokerProcess {
        self.brokers
            .iter()
            .find(|broker| broker.name() == name)
            .unwrap_or_else(|| panic!("no broker named {name} in the cluster"))
    }

    /// The broker named `name`, to kill or restart it.
    pub fn broker_mut(&mut self, name: &str) -> &mut BrokerProcess {
        self.brokers
            .iter_mut()
            .find(|broker| broker.name() == name)
            .unwrap_or_else(|| panic!("no broker named {name} in the cluster"))
    }

    pub fn brokers(&self) -> &[BrokerProcess] {
        &self.brokers
    }

    /// Names of the brokers, in start order.
    pub fn broker_names(&self) -> Vec<String> {
        self.brokers
            .iter()
            .map(|broker| broker.name().to_owned())
            .collect()
    }

    /// Stops (SIGTERM) every NameServer.
    pub fn stop_namesrvs(&mut self) {
        for namesrv in &mut self.namesrvs {
            namesrv.stop();
        }
    }

    /// Waits until every NameServer lists every broker of the cluster with its address as master
    /// (GET_BROKER_CLUSTER_INFO).
    pub fn wait_until_registered(&self, timeout: Duration) {
        for namesrv in &self.namesrvs {
            let namesrv = namesrv.addr();
            for broker in &self.brokers {
                wait_until(
                    &format!(
                        "NameServer {namesrv} to list {} at {}",
                        broker.name(),
                        broker.addr()
                    ),
                    timeout,
                    || {
                        let info = cluster_info(&namesrv).ok()?;
                        let listed = info.broker_addr_table.get(broker.name())?;
                        let in_cluster = info
                            .cluster_addr_table
                            .get(CLUSTER_NAME)
                            .is_some_and(|names| names.contains(broker.name()));
                        (listed.master_addr() == Some(broker.addr().as_str()) && in_cluster)
                            .then_some(())
                    },
                );
            }
        }
    }

    /// Creates `topic` with `queues` read/write queues on every broker (UPDATE_AND_CREATE_TOPIC)
    /// and waits until every NameServer routes it to every broker.
    pub fn create_topic(&self, topic: &str, queues: i32) {
        for broker in &self.brokers {
            create_topic(&broker.addr(), topic, queues)
                .unwrap_or_else(|error| panic!("create {topic} on {}: {error:#}", broker.name()));
        }
        self.wait_until_routed(topic, queues, DEADLINE);
    }

    /// Waits until every NameServer's route of `topic` has `queues` writable queues on every
    /// broker of the cluster.
    pub fn wait_until_routed(&self, topic: &str, queues: i32, timeout: Duration) {
        for namesrv in &self.namesrvs {
            let namesrv = namesrv.addr();
            wait_until(
                &format!("NameServer {namesrv} to route {topic} to every broker"),
                timeout,
                || {
                    let route = topic_route(&namesrv, topic).ok()??;
                    self.brokers
                        .iter()
                        .all(|broker| {
                            route.queue_datas.iter().any(|queue| {
                                queue.broker_name == broker.name()
                                    && queue.write_queue_nums == queues
                                    && perm::is_writeable(queue.perm)
                            }) && route.broker_datas.iter().any(|data| {
                                data.broker_name == broker.name()
                                    && data.master_addr() == Some(broker.addr().as_str())
                            })
                        })
                        .then_some(())
                },
            );
        }
    }
}

fn join_addrs(namesrvs: &[NamesrvProcess]) -> String {
    namesrvs
        .iter()
        .map(NamesrvProcess::addr)
        .collect::<Vec<_>>()
        .join(";")
}
