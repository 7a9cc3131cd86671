//! One assigned queue's pull task.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::builder::PushSettings;
use crate::consumer::consume::Signal;
use crate::consumer::process_queue::ProcessQueue;
use crate::consumer::pull_api::{self, PullRequest, PullStatus};
use crate::consumer::{BrokerRole, broker_addr};
use crate::instance::IoContext;
use crate::message::ReceivedMessage;

/// Pause of a queue's pulls while its backlog is over the threshold (RocketMQ
/// `PULL_TIME_DELAY_MILLS_WHEN_FLOW_CONTROL`).
const FLOW_CONTROL_PAUSE: Duration = Duration::from_millis(50);
/// Pause after a failed pull.
const PULL_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// How often an orderly queue without its lock checks again before pulling.
const LOCK_WAIT: Duration = Duration::from_millis(500);

/// Pulls one queue until it is dropped: long polls, hands what it finds to the consume thread,
/// and pauses while the queue's backlog is over the threshold (or, orderly, while its lock is
/// not held).
pub(super) async fn pull_loop(
    ctx: Rc<IoContext>,
    settings: Arc<PushSettings>,
    queue: Arc<ProcessQueue>,
    signals: flume::Sender<Signal>,
) {
    let Some(subscription) = settings.subscription(&queue.queue().topic).cloned() else {
        return;
    };
    let mut failing = false;
    // The broker id the last pull answer suggested (`None` after a failure: back to the master,
    // else any slave).
    let mut suggested: Option<i64> = None;
    // Bounded by the queue's life: every iteration awaits a pull or a pause, and the task is
    // cancelled when the queue is dropped.
    loop {
        if queue.is_dropped() || ctx.stopped.get() {
            return;
        }
        if flow_controlled(&settings, &queue) {
            if !ctx.tick(FLOW_CONTROL_PAUSE).await {
                return;
            }
            continue;
        }
        if settings.orderly && !queue.is_locked(Instant::now()) {
            if !ctx.tick(LOCK_WAIT).await {
                return;
            }
            continue;
        }
        let offset = queue.next_offset();
        let result = async {
            let addr = broker_addr(&ctx, queue.queue(), BrokerRole::Read(suggested)).await?;
            let request = PullRequest {
                group: &settings.group,
                queue: queue.queue(),
                offset,
                max_messages: settings.pull_batch_size,
                commit_offset: settings.clustering().then(|| queue.committable()),
                suspend: Some(settings.long_poll_timeout),
                expression: subscription.expression(),
                sub_version: subscription.data.sub_version,
            };
            pull_api::pull(&ctx, &addr, &request).await
        }
        .await;
        match result {
            Ok(result) => {
                suggested = Some(result.suggested_broker_id);
                if failing {
                    tracing::info!(group = %settings.group, queue = ?queue.queue(), "pulls work again");
                    failing = false;
                }
                match result.status {
                    PullStatus::Found(messages) => {
                        let kept: Vec<ReceivedMessage> = messages
                            .into_iter()
                            .filter(|message| subscription.matches(message.tags.as_deref()))
                            .collect();
                        if queue.put(kept, result.next_begin_offset)
                            && signals.send(Signal::Work(Arc::clone(&queue))).is_err()
                        {
                            return;
                        }
                    }
                    PullStatus::NoNewMessage | PullStatus::NoMatchedMessage => {
                        queue.advance(result.next_begin_offset);
                    }
                    PullStatus::OffsetMoved => {
                        tracing::warn!(
                            group = %settings.group,
                            queue = ?queue.queue(),
                            offset,
                            next = result.next_begin_offset,
                            min = result.min_offset,
                            max = result.max_offset,
                            "pull offset is outside the queue; continuing at the broker's offset"
                        );
                        queue.advance(result.next_begin_offset);
                    }
                }
            }
            Err(error) => {
                if !failing && !error.is_transport() {
                    tracing::warn!(group = %settings.group, queue = ?queue.queue(), %error, "pull failed");
                } else {
                    tracing::debug!(group = %settings.group, queue = ?queue.queue(), %error, "pull failed");
                }
                failing = true;
                suggested = None;
                if !ctx.tick(PULL_ERROR_PAUSE).await {
                    return;
                }
            }
        }
    }
}

/// Whether `queue`'s pulls must pause: too many messages or bytes not done, or (concurrent) too
/// wide a span between its oldest and newest offsets not done.
pub(super) fn flow_controlled(settings: &PushSettings, queue: &ProcessQueue) -> bool {
    queue.backlog() >= settings.pull_threshold
        || queue.backlog_bytes() >= settings.pull_threshold_bytes
        || (!settings.orderly && queue.span() > settings.max_span)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::consumer::push::PushConsumerBuilder;
    use crate::message::MessageQueue;

    fn message(offset: i64, bytes: usize) -> ReceivedMessage {
        ReceivedMessage::for_test(offset, bytes)
    }

    fn queue() -> ProcessQueue {
        ProcessQueue::new(
            MessageQueue {
                broker_name: "b".into(),
                queue_id: 0,
                topic: "t".into(),
            },
            0,
        )
    }

    #[test]
    fn pulls_pause_on_bytes_and_span() {
        let builder = || {
            PushConsumerBuilder::new("127.0.0.1:9876", "g")
                .subscribe("t", "*")
                .pull_threshold_bytes_per_queue(1000)
                .consume_concurrently_max_span(10)
        };
        let settings = PushSettings::from_builder(&builder());
        let pq = queue();
        pq.put(vec![message(0, 600)], 1);
        assert!(!flow_controlled(&settings, &pq));
        pq.put(vec![message(1, 400)], 2);
        assert!(flow_controlled(&settings, &pq), "1000 bytes pending");
        pq.done([0, 1]);
        assert!(!flow_controlled(&settings, &pq));
        pq.put(vec![message(2, 1), message(13, 1)], 14);
        assert!(flow_controlled(&settings, &pq), "span 11 > 10");
        let orderly = PushSettings::from_builder(&builder().orderly(true));
        assert!(!flow_controlled(&orderly, &pq), "orderly ignores the span");
    }
}
