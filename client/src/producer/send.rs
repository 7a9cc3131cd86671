//! The producer's sends as they run on the client I/O thread: each entry point checks the
//! message, finds the route and hands over to [`failover`](super::failover) (or makes its one
//! attempt).

use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use ringmq_protocol::RequestCode;
use ringmq_protocol::message::batch::BATCH_ENTRY_FIXED_BYTES;

use super::encode::{Payload, Single, batch_id, request_header};
use super::failover::{
    connection, no_writable_queue, publish_route, send_once, send_with_failover,
};
use super::fault::Outcome;
use super::state::{ProducerShared, ProducerState};
use super::validate::{identify, prepare, validate_batch, validate_message};
use crate::error::{ClientError, Result};
use crate::instance::IoContext;
use crate::message::{Message, MessageQueue, SendResult};

/// `Producer::send`.
pub(crate) async fn send(
    ctx: Rc<IoContext>,
    shared: Arc<ProducerShared>,
    message: Message,
) -> Result<SendResult> {
    let state = ProducerState::get(&ctx, &shared)?;
    let single = prepare(&state, message)?;
    send_with_failover(&ctx, &state, Payload::Single(single)).await
}

/// `Producer::send_batch`.
pub(crate) async fn send_batch(
    ctx: Rc<IoContext>,
    shared: Arc<ProducerShared>,
    messages: Vec<Message>,
) -> Result<SendResult> {
    let state = ProducerState::get(&ctx, &shared)?;
    validate_batch(&messages, state.settings())?;
    let id_len = state.ids.id_len();
    let mut unique_ids = String::with_capacity(messages.len() * (id_len + 1));
    let mut body_bytes = 0;
    for (index, message) in messages.iter().enumerate() {
        if index > 0 {
            unique_ids.push(',');
        }
        state.ids.append_id(&mut unique_ids);
        let properties = state.check_properties(message, batch_id(&unique_ids, index, id_len))?;
        body_bytes += BATCH_ENTRY_FIXED_BYTES + message.body().len() + properties;
    }
    if body_bytes > state.settings().max_message_bytes {
        return Err(ClientError::InvalidArgument(format!(
            "batch body of {body_bytes} bytes is over the {} byte limit",
            state.settings().max_message_bytes
        )));
    }
    send_with_failover(
        &ctx,
        &state,
        Payload::Batch {
            messages,
            unique_ids,
        },
    )
    .await
}

/// `Producer::send_to_queue`.
pub(crate) async fn send_to_queue(
    ctx: Rc<IoContext>,
    shared: Arc<ProducerShared>,
    message: Message,
    queue: MessageQueue,
) -> Result<SendResult> {
    let state = ProducerState::get(&ctx, &shared)?;
    if queue.topic != message.topic() {
        return Err(ClientError::InvalidArgument(format!(
            "message topic {} differs from the queue's topic {}",
            message.topic(),
            queue.topic
        )));
    }
    let single = prepare(&state, message)?;
    let deadline = Instant::now() + state.settings().send_timeout;
    let route = publish_route(&ctx, &queue.topic, deadline).await?;
    state.on_route(&ctx, &queue.topic, &route);
    send_once(
        &ctx,
        &state,
        &route,
        Payload::Single(single),
        &queue,
        deadline,
    )
    .await
}

/// `Producer::send_with_selector` when the caller could not run the selector (first send to
/// the topic): it runs here, once the route is known.
pub(crate) async fn send_selected<S>(
    ctx: Rc<IoContext>,
    shared: Arc<ProducerShared>,
    message: Message,
    selector: S,
) -> Result<SendResult>
where
    S: FnOnce(&[MessageQueue], &Message) -> usize,
{
    let state = ProducerState::get(&ctx, &shared)?;
    validate_message(&message, state.settings())?;
    let topic = message.topic();
    let deadline = Instant::now() + state.settings().send_timeout;
    let route = publish_route(&ctx, topic, deadline).await?;
    state.on_route(&ctx, topic, &route);
    let queues = route.writable_queues();
    if queues.is_empty() {
        return Err(no_writable_queue(topic));
    }
    // User code on the I/O thread: a panic must not take the thread down.
    let index = std::panic::catch_unwind(AssertUnwindSafe(|| selector(queues, &message)))
        .map_err(|_| ClientError::InvalidArgument("the queue selector panicked".into()))?;
    let queue = queues[index % queues.len()].clone();
    let single = identify(&state, message)?;
    send_once(
        &ctx,
        &state,
        &route,
        Payload::Single(single),
        &queue,
        deadline,
    )
    .await
}

/// `Producer::send_oneway`: one attempt, done once the request is queued on the connection.
pub(crate) async fn send_oneway(
    ctx: Rc<IoContext>,
    shared: Arc<ProducerShared>,
    message: Message,
) -> Result<()> {
    let state = ProducerState::get(&ctx, &shared)?;
    let Single { message, unique_id } = prepare(&state, message)?;
    let topic = message.topic();
    let settings = state.settings();
    let deadline = Instant::now() + settings.send_timeout;
    let route = publish_route(&ctx, topic, deadline).await?;
    let cursor = state.on_route(&ctx, topic, &route);
    let began = Instant::now();
    let queue = state
        .select(&route, cursor, None, began)
        .ok_or_else(|| no_writable_queue(topic))?;
    let addr = route
        .publish_addr(&queue.broker_name)
        .ok_or_else(|| no_writable_queue(topic))?;
    let left = deadline.saturating_duration_since(began);
    let queued = match compio::time::timeout(left, connection(&ctx, &state, addr)).await {
        Ok(Ok(connection)) => {
            // Synchronous from here: the properties borrow ends before any `.await`.
            let mut properties = state.properties.borrow_mut();
            message.write_properties(&unique_id, &mut properties);
            let header =
                request_header(settings, &message, queue.queue_id, Some(&properties), false);
            connection.oneway(RequestCode::SendMessageV2, &header.v2(), message.body())
        }
        Ok(Err(error)) => Err(error),
        Err(_) => Err(ClientError::Timeout {
            addr: addr.to_owned(),
            code: RequestCode::SendMessageV2,
            timeout: left,
        }),
    };
    if queued.is_err() {
        let now = Instant::now();
        let latency = now.saturating_duration_since(began);
        state.record(&queue.broker_name, latency, Outcome::Isolate, now);
        state.schedule_refresh(&ctx, topic);
    }
    queued
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_bytes<A, B, C, Fut, F: Fn(A, B, C) -> Fut>(_: &F) -> usize {
        size_of::<Fut>()
    }

    /// A send's future is moved a few times per send (into its task, onto the heap): the cold
    /// parts (route lookup, connecting) stay boxed so it stays small (it was over 5 KiB).
    #[test]
    fn send_futures_stay_small() {
        for (name, bytes) in [
            ("send", future_bytes(&send)),
            ("send_batch", future_bytes(&send_batch)),
            ("send_oneway", future_bytes(&send_oneway)),
            (
                "send_to_queue",
                future_bytes(&|c, s, m| send_to_queue(c, s, m, MessageQueue::default())),
            ),
        ] {
            assert!(bytes <= 2048, "{name}: {bytes} bytes");
        }
    }
}
