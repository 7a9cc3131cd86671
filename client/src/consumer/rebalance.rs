//! Splitting a topic's queues between the members of a consumer group (docs/protocol.md §7.6).
//!
//! Every member computes the split on its own, from the same inputs: the topic's readable queues
//! sorted by (topic, broker, queue id) and the group's client ids sorted as strings. As long as
//! the members see the same inputs they agree, so each queue has exactly one owner; while they
//! briefly disagree (a member just joined or left) a queue may have two owners or none, which
//! the next rebalance repairs. The allocation is RocketMQ's `AllocateMessageQueueAveragely`, so
//! RingMQ consumers and Java consumers of one group split a topic the same way.

use ringmq_protocol::RequestCode;
use ringmq_protocol::body::{self, ConsumerListBody};
use ringmq_protocol::header::GetConsumerListByGroupRequestHeader;

use crate::error::{ClientError, Result};
use crate::instance::IoContext;
use crate::message::MessageQueue;
use crate::remoting::expect_success;
use crate::route::TopicRoute;

/// The queues `client_id` takes out of `queues` (sorted) when shared by `client_ids` (sorted):
/// contiguous blocks, the first `n mod m` members taking one queue more than the others. A
/// client not in the list gets nothing.
pub(crate) fn allocate_averagely<'a>(
    queues: &'a [MessageQueue],
    client_ids: &[String],
    client_id: &str,
) -> Vec<&'a MessageQueue> {
    let Some(index) = client_ids.iter().position(|id| id == client_id) else {
        return Vec::new();
    };
    let (n, m) = (queues.len(), client_ids.len());
    if n == 0 {
        return Vec::new();
    }
    let remainder = n % m;
    let bigger = remainder > 0 && index < remainder;
    let block = if n <= m {
        1
    } else if bigger {
        n / m + 1
    } else {
        n / m
    };
    let start = if bigger {
        index * block
    } else {
        index * block + remainder
    };
    let count = block.min(n.saturating_sub(start));
    (0..count).map(|i| &queues[(start + i) % n]).collect()
}

/// The group's client ids, sorted, from a broker of `route` (GET_CONSUMER_LIST_BY_GROUP). Each
/// broker knows the members that heartbeat it; the brokers are tried in turn until one answers.
pub(crate) async fn consumer_ids(
    ctx: &IoContext,
    group: &str,
    route: &TopicRoute,
) -> Result<Vec<String>> {
    let header = GetConsumerListByGroupRequestHeader {
        consumer_group: group,
    };
    let mut last_error = None;
    for broker in &route.data.broker_datas {
        let Some(addr) = broker
            .master_addr()
            .or_else(|| broker.broker_addrs.values().next().map(String::as_str))
        else {
            continue;
        };
        let answer = ctx
            .pool
            .request(
                addr,
                RequestCode::GetConsumerListByGroup,
                &header,
                &[],
                ctx.timeout(),
            )
            .await
            .and_then(|answer| expect_success(answer, addr, RequestCode::GetConsumerListByGroup));
        match answer {
            Ok(answer) => {
                let list: ConsumerListBody = body::decode(&answer.body, "ConsumerListBody")
                    .map_err(|error| {
                        ClientError::bad_body(addr, RequestCode::GetConsumerListByGroup, &error)
                    })?;
                let mut ids = list.consumer_id_list;
                ids.sort();
                ids.dedup();
                return Ok(ids);
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| ClientError::NoQueue {
        topic: route.topic.clone(),
        what: "readable",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues(n: usize) -> Vec<MessageQueue> {
        (0..n)
            .map(|id| MessageQueue {
                broker_name: "b".into(),
                queue_id: id as i32,
                topic: "t".into(),
            })
            .collect()
    }

    /// `AllocateMessageQueueAveragely.allocate` of the Java client, transcribed line for line
    /// as the reference the allocation is compared with.
    fn java_reference(n: usize, m: usize, index: usize) -> Vec<usize> {
        let (n, m, index) = (n as i64, m as i64, index as i64);
        let modulo = n % m;
        let average_size = if n <= m {
            1
        } else if modulo > 0 && index < modulo {
            n / m + 1
        } else {
            n / m
        };
        let start_index = if modulo > 0 && index < modulo {
            index * average_size
        } else {
            index * average_size + modulo
        };
        let range = average_size.min(n - start_index);
        (0..range.max(0))
            .map(|i| ((start_index + i) % n) as usize)
            .collect()
    }

    #[test]
    fn allocation_matches_java_for_every_small_group() {
        for n in 0..=20 {
            let all = queues(n);
            for m in 1..=12 {
                let ids: Vec<String> = (0..m).map(|i| format!("10.0.0.{i:02}@1")).collect();
                let mut owners = vec![0; n];
                for (index, id) in ids.iter().enumerate() {
                    let mine: Vec<usize> = allocate_averagely(&all, &ids, id)
                        .into_iter()
                        .map(|queue| queue.queue_id as usize)
                        .collect();
                    let expected = if n == 0 {
                        Vec::new()
                    } else {
                        java_reference(n, m, index)
                    };
                    assert_eq!(mine, expected, "n={n} m={m} index={index}");
                    for id in mine {
                        owners[id] += 1;
                    }
                }
                assert!(
                    owners.iter().all(|&count| count == 1),
                    "n={n} m={m}: every queue has exactly one owner: {owners:?}"
                );
            }
        }
    }

    #[test]
    fn examples_and_strangers() {
        let all = queues(8);
        let ids: Vec<String> = ["a", "b", "c"].iter().map(|s| (*s).to_owned()).collect();
        let ids_of = |id: &str| -> Vec<i32> {
            allocate_averagely(&all, &ids, id)
                .iter()
                .map(|q| q.queue_id)
                .collect()
        };
        assert_eq!(ids_of("a"), [0, 1, 2]);
        assert_eq!(ids_of("b"), [3, 4, 5]);
        assert_eq!(ids_of("c"), [6, 7]);
        assert!(ids_of("stranger").is_empty());
        let two = queues(2);
        let many: Vec<String> = (0..4).map(|i| i.to_string()).collect();
        assert_eq!(allocate_averagely(&two, &many, "3").len(), 0);
        assert_eq!(allocate_averagely(&two, &many, "1")[0].queue_id, 1);
    }
}
