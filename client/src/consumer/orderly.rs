//! Queue locks of orderly consumers (docs/protocol.md §3.10).
//!
//! A queue's messages stay in order only if one client consumes it at a time, including while a
//! rebalance moves it: the old owner may still be handling a batch when the new owner's
//! allocation already lists the queue. So an orderly consumer pulls a queue only while the broker
//! says it holds the queue's lock (LOCK_BATCH_MQ), renews its locks every 20 s (the broker's lease
//! is 60 s), and releases them (UNLOCK_BATCH_MQ) once it has committed the queue's offset when the
//! queue leaves it.

use std::collections::{BTreeMap, BTreeSet};

use ringmq_protocol::RequestCode;
use ringmq_protocol::body::{self, LockBatchRequestBody, LockBatchResponseBody};

use super::master_addr;
use crate::error::{ClientError, Result};
use crate::instance::IoContext;
use crate::message::MessageQueue;
use crate::remoting::expect_success;

/// Groups queues by broker name (one lock request per broker).
fn by_broker<'a, I>(queues: I) -> BTreeMap<&'a str, Vec<MessageQueue>>
where
    I: IntoIterator<Item = &'a MessageQueue>,
{
    let mut brokers: BTreeMap<&str, Vec<MessageQueue>> = BTreeMap::new();
    for queue in queues {
        brokers
            .entry(queue.broker_name.as_str())
            .or_default()
            .push(queue.clone());
    }
    brokers
}

fn request_body(ctx: &IoContext, group: &str, queues: Vec<MessageQueue>) -> Vec<u8> {
    body::to_vec(&LockBatchRequestBody {
        client_id: ctx.client_id.clone(),
        consumer_group: group.to_owned(),
        mq_set: queues,
        only_this_broker: None,
    })
}

/// Locks `queues` (any brokers) for this client. Returns the queues the brokers granted and the
/// names of the brokers that answered; a broker that did not answer grants nothing (its failure
/// is logged).
pub(crate) async fn lock<'a, I>(
    ctx: &IoContext,
    group: &str,
    queues: I,
) -> (BTreeSet<MessageQueue>, BTreeSet<String>)
where
    I: IntoIterator<Item = &'a MessageQueue>,
{
    let mut granted = BTreeSet::new();
    let mut answered = BTreeSet::new();
    for (broker_name, batch) in by_broker(queues) {
        let Some(first) = batch.first().cloned() else {
            continue;
        };
        match lock_on_broker(ctx, group, &first, batch).await {
            Ok(locked) => {
                granted.extend(locked);
                answered.insert(broker_name.to_owned());
            }
            Err(error) => {
                tracing::warn!(group, broker = broker_name, %error, "queue lock failed");
            }
        }
    }
    (granted, answered)
}

async fn lock_on_broker(
    ctx: &IoContext,
    group: &str,
    first: &MessageQueue,
    batch: Vec<MessageQueue>,
) -> Result<Vec<MessageQueue>> {
    let addr = master_addr(ctx, first).await?;
    let body = request_body(ctx, group, batch);
    let answer = ctx
        .pool
        .request(&addr, RequestCode::LockBatchMq, &(), &body, ctx.timeout())
        .await?;
    let answer = expect_success(answer, &addr, RequestCode::LockBatchMq)?;
    let locked: LockBatchResponseBody = body::decode(&answer.body, "LockBatchResponseBody")
        .map_err(|error| ClientError::bad_body(&addr, RequestCode::LockBatchMq, &error))?;
    Ok(locked.lock_ok_mq_set)
}

/// Releases this client's locks on `queues` (best effort: a lock not released expires at the
/// broker after its lease).
pub(crate) async fn unlock<'a, I>(ctx: &IoContext, group: &str, queues: I)
where
    I: IntoIterator<Item = &'a MessageQueue>,
{
    for (_, batch) in by_broker(queues) {
        let Some(first) = batch.first().cloned() else {
            continue;
        };
        let result = async {
            let addr = master_addr(ctx, &first).await?;
            let body = request_body(ctx, group, batch);
            let answer = ctx
                .pool
                .request(&addr, RequestCode::UnlockBatchMq, &(), &body, ctx.timeout())
                .await?;
            expect_success(answer, &addr, RequestCode::UnlockBatchMq).map(drop)
        }
        .await;
        if let Err(error) = result {
            tracing::debug!(group, broker = %first.broker_name, %error, "queue unlock failed");
        }
    }
}
