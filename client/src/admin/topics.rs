//! Topic operations: create/update, delete, list, route and per-queue status.

use ringmq_protocol::body::{ClusterInfo, TopicFilterType, TopicRouteData};
use ringmq_protocol::header::CreateTopicRequestHeader;

use super::{QueueStatus, TopicSpec, TopicTarget};
use crate::error::{ClientError, Result};
use crate::instance::IoContext;
use crate::message::MessageQueue;
use crate::route::{AUTO_CREATE_TOPIC, TopicRoute, any_addr};
use crate::rpc;

/// Group named in the admin's own pulls (they carry their subscription and commit nothing).
pub(super) const ADMIN_GROUP: &str = "RINGMQ_ADMIN";

pub(super) async fn create(
    ctx: &IoContext,
    spec: &TopicSpec,
    target: &TopicTarget,
) -> Result<Vec<String>> {
    if spec.name.trim().is_empty() {
        return Err(ClientError::InvalidArgument(
            "the topic name is empty".into(),
        ));
    }
    let brokers = match target {
        TopicTarget::Broker(addr) => vec![addr.clone()],
        TopicTarget::Cluster(cluster) => {
            masters_of(&rpc::cluster_info(ctx, ctx.timeout()).await?, cluster)?
        }
    };
    let header = CreateTopicRequestHeader {
        topic: &spec.name,
        default_topic: AUTO_CREATE_TOPIC,
        read_queue_nums: spec.read_queues,
        write_queue_nums: spec.write_queues,
        perm: spec.perm,
        topic_filter_type: TopicFilterType::SingleTag.name(),
        topic_sys_flag: Some(0),
        order: spec.order,
    };
    for addr in &brokers {
        rpc::create_topic(ctx, addr, &header, ctx.timeout()).await?;
    }
    Ok(brokers)
}

pub(super) async fn delete(ctx: &IoContext, topic: &str, cluster: &str) -> Result<()> {
    if topic.trim().is_empty() {
        return Err(ClientError::InvalidArgument(
            "the topic name is empty".into(),
        ));
    }
    for addr in masters_of(&rpc::cluster_info(ctx, ctx.timeout()).await?, cluster)? {
        rpc::delete_topic_in_broker(ctx, &addr, topic, ctx.timeout()).await?;
    }
    // Every NameServer, not just one: they do not share state. Brokers no longer announce the
    // topic, so a NameServer that restarts later does not learn it again.
    for addr in ctx.routes.namesrv_addrs() {
        rpc::delete_topic_in_namesrv(ctx, addr, topic, Some(cluster), ctx.timeout()).await?;
    }
    Ok(())
}

pub(super) async fn list(ctx: &IoContext) -> Result<Vec<String>> {
    rpc::topic_list(ctx, ctx.timeout()).await
}

pub(super) async fn route(ctx: &IoContext, topic: &str) -> Result<TopicRouteData> {
    ctx.routes
        .fetch(&ctx.pool, topic, std::time::Instant::now() + ctx.timeout())
        .await?
        .ok_or_else(|| ClientError::TopicNotFound {
            topic: topic.to_owned(),
        })
}

pub(super) async fn status(ctx: &IoContext, topic: &str) -> Result<Vec<QueueStatus>> {
    let route = TopicRoute::new(topic, route(ctx, topic).await?);
    let mut status = Vec::new();
    for (queue, addr) in queues_of(&route, |data| {
        data.read_queue_nums.max(data.write_queue_nums)
    }) {
        let min_offset = rpc::min_offset(ctx, &addr, topic, queue.queue_id, ctx.timeout()).await?;
        let max_offset = rpc::max_offset(ctx, &addr, topic, queue.queue_id, ctx.timeout()).await?;
        let last_store_timestamp_ms = if max_offset > min_offset {
            last_store_time(ctx, &addr, &queue, max_offset - 1).await
        } else {
            None
        };
        status.push(QueueStatus {
            queue,
            broker_addr: addr,
            min_offset,
            max_offset,
            last_store_timestamp_ms,
        });
    }
    Ok(status)
}

/// The store time of the message at `offset`, read with a one-message pull (brokers have no
/// request that answers it directly: Java's GET_TOPIC_STATS_INFO is not implemented by RingMQ).
/// `None` when the pull is refused (a write-only topic) or finds nothing.
async fn last_store_time(
    ctx: &IoContext,
    addr: &str,
    queue: &MessageQueue,
    offset: i64,
) -> Option<i64> {
    match rpc::pull_now(ctx, addr, ADMIN_GROUP, queue, offset, 1, ctx.timeout()).await {
        Ok(messages) => messages.first().map(|message| message.store_timestamp_ms),
        Err(error) => {
            tracing::debug!(%error, queue = queue.queue_id, "no last store time");
            None
        }
    }
}

/// The queues of every broker group of a route with the address to ask about them (see
/// [`any_addr`]), by broker name then queue id; `count` says how many queues a group's
/// `QueueData` stands for. Groups with no registered address are left out.
pub(super) fn queues_of(
    route: &TopicRoute,
    count: impl Fn(&ringmq_protocol::body::QueueData) -> i32,
) -> Vec<(MessageQueue, String)> {
    route
        .queues_by(count)
        .into_iter()
        .filter_map(|queue| {
            let addr = route.broker(&queue.broker_name).and_then(any_addr);
            if addr.is_none() {
                tracing::debug!(broker = %queue.broker_name, "broker group without an address");
            }
            Some((queue, addr?.to_owned()))
        })
        .collect()
}

/// The master addresses of `cluster`'s broker groups.
fn masters_of(info: &ClusterInfo, cluster: &str) -> Result<Vec<String>> {
    let Some(names) = info.cluster_addr_table.get(cluster) else {
        let known: Vec<&str> = info.cluster_addr_table.keys().map(String::as_str).collect();
        return Err(ClientError::InvalidArgument(format!(
            "cluster {cluster} is unknown to the NameServers (known: {})",
            known.join(", ")
        )));
    };
    let masters: Vec<String> = names
        .iter()
        .filter_map(|name| info.broker_addr_table.get(name))
        .filter_map(|broker| broker.master_addr().map(str::to_owned))
        .collect();
    if masters.is_empty() {
        return Err(ClientError::InvalidArgument(format!(
            "cluster {cluster} has no registered master"
        )));
    }
    Ok(masters)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq_protocol::body::{BrokerData, QueueData};

    fn broker(name: &str, addrs: &[(i64, &str)]) -> BrokerData {
        BrokerData {
            broker_name: name.into(),
            cluster: "c".into(),
            broker_addrs: addrs.iter().map(|(id, a)| (*id, (*a).to_owned())).collect(),
            ..BrokerData::default()
        }
    }

    #[test]
    fn masters_of_a_cluster_skip_groups_without_one() {
        let mut info = ClusterInfo::default();
        info.cluster_addr_table
            .insert("c".into(), ["a".into(), "b".into()].into());
        info.broker_addr_table
            .insert("a".into(), broker("a", &[(0, "a:1"), (1, "a:2")]));
        info.broker_addr_table
            .insert("b".into(), broker("b", &[(1, "b:2")]));
        assert_eq!(masters_of(&info, "c").unwrap(), ["a:1"]);
        let unknown = masters_of(&info, "x").unwrap_err().to_string();
        assert!(unknown.contains("known: c"), "{unknown}");
        info.broker_addr_table.remove("a");
        assert!(masters_of(&info, "c").is_err());
    }

    #[test]
    fn queues_are_listed_per_group_with_the_address_to_ask() {
        let data = TopicRouteData {
            broker_datas: vec![
                broker("b", &[(1, "b:2")]),
                broker("a", &[(0, "a:1"), (1, "a:2")]),
            ],
            queue_datas: vec![
                QueueData {
                    broker_name: "b".into(),
                    perm: 6,
                    read_queue_nums: 1,
                    write_queue_nums: 2,
                    topic_sys_flag: 0,
                },
                QueueData {
                    broker_name: "a".into(),
                    perm: 6,
                    read_queue_nums: 2,
                    write_queue_nums: 2,
                    topic_sys_flag: 0,
                },
                QueueData {
                    broker_name: "gone".into(),
                    perm: 6,
                    read_queue_nums: 1,
                    write_queue_nums: 1,
                    topic_sys_flag: 0,
                },
            ],
            ..TopicRouteData::default()
        };
        let route = TopicRoute::new("t", data);
        let queues: Vec<_> = queues_of(&route, |d| d.read_queue_nums.max(d.write_queue_nums))
            .into_iter()
            .map(|(q, addr)| (q.broker_name, q.queue_id, addr))
            .collect();
        assert_eq!(
            queues,
            [
                ("a".into(), 0, "a:1".into()),
                ("a".into(), 1, "a:1".into()),
                ("b".into(), 0, "b:2".into()),
                ("b".into(), 1, "b:2".into()),
            ]
        );
    }
}
