//! Queue selection for sends with failover: round-robin over a topic's writable queues (ordered
//! by broker name then queue id, so successive sends walk every queue of every broker group),
//! steering away from the broker group whose attempt just failed and from brokers the fault
//! tracker marks unavailable.

use crate::message::MessageQueue;

/// Picks a queue, walking `queues` from `start` (the topic's round-robin cursor). Preference, first
/// match wins:
/// 1. a queue of another broker than `avoid` (the last failure) that is available;
/// 2. a queue of another broker than `avoid` (a retry must not go back to the broker that just
///    failed while there is any other);
/// 3. an available queue;
/// 4. the queue at the cursor (everything is avoided: trying beats failing without trying).
///
/// `None` only when `queues` is empty.
pub(crate) fn select_queue<'a>(
    queues: &'a [MessageQueue],
    start: usize,
    avoid: Option<&str>,
    is_available: impl Fn(&str) -> bool,
) -> Option<&'a MessageQueue> {
    if queues.is_empty() {
        return None;
    }
    let walk = || (0..queues.len()).map(|step| &queues[start.wrapping_add(step) % queues.len()]);
    let other = |queue: &&MessageQueue| avoid.is_none_or(|broker| queue.broker_name != broker);
    walk()
        .find(|queue| other(queue) && is_available(&queue.broker_name))
        .or_else(|| walk().find(other))
        .or_else(|| walk().find(|queue| is_available(&queue.broker_name)))
        .or_else(|| walk().next())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues() -> Vec<MessageQueue> {
        ["a", "a", "b", "b"]
            .iter()
            .enumerate()
            .map(|(index, broker)| MessageQueue {
                broker_name: (*broker).into(),
                queue_id: (index % 2) as i32,
                topic: "t".into(),
            })
            .collect()
    }

    fn pick(start: usize, avoid: Option<&str>, down: &[&str]) -> (String, i32) {
        let queues = queues();
        let queue = select_queue(&queues, start, avoid, |broker| !down.contains(&broker)).unwrap();
        (queue.broker_name.clone(), queue.queue_id)
    }

    #[test]
    fn round_robin_walks_every_queue_of_every_group() {
        let picked: Vec<_> = (0..5).map(|start| pick(start, None, &[])).collect();
        assert_eq!(
            picked,
            [
                ("a".into(), 0),
                ("a".into(), 1),
                ("b".into(), 0),
                ("b".into(), 1),
                ("a".into(), 0)
            ]
        );
        assert_eq!(pick(usize::MAX, None, &[]).0, "b", "the cursor may wrap");
    }

    #[test]
    fn retries_go_to_another_group_and_skip_unavailable_brokers() {
        assert_eq!(pick(0, Some("a"), &[]), ("b".into(), 0));
        assert_eq!(pick(2, Some("b"), &[]), ("a".into(), 0));
        assert_eq!(pick(0, None, &["a"]), ("b".into(), 0));
        // Another group beats availability: never straight back to the broker that failed.
        assert_eq!(pick(0, Some("a"), &["b"]), ("b".into(), 0));
        // Only the failed group is left: it is used.
        let only_a: Vec<_> = queues().into_iter().take(2).collect();
        let queue = select_queue(&only_a, 1, Some("a"), |_| false).unwrap();
        assert_eq!((queue.broker_name.as_str(), queue.queue_id), ("a", 1));
        // Everything unavailable: the cursor's queue.
        assert_eq!(pick(3, None, &["a", "b"]), ("b".into(), 1));
        assert!(select_queue(&[], 0, None, |_| true).is_none());
    }
}
