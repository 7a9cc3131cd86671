//! Attempts and failover: the route of a send (with the auto-creation fallback), one attempt
//! on one broker, and the retry loop over broker groups, all within the send's budget.
//!
//! Budget rules: a send ends by `send_timeout` whatever happens (route lookup and connects
//! included); an attempt gets at most the client's `request_timeout`, and while retries are
//! left at most half of what remains, so a blackholed broker (connect or answer never coming)
//! still leaves time to retry on another broker group.

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use ringmq_protocol::CommandHead;

use super::encode::{Payload, read_answer};
use super::fault::Outcome;
use super::state::ProducerState;
use crate::error::{ClientError, Result};
use crate::instance::IoContext;
use crate::message::{MessageQueue, SendResult};
use crate::remoting::Connection;
use crate::route::{AUTO_CREATE_TOPIC, DEFAULT_TOPIC_QUEUE_NUMS, TopicRoute};

/// Whether a failed attempt is worth another broker: transport failures, and the refusals Java's
/// producer retries (TOPIC_NOT_EXIST, SERVICE_NOT_AVAILABLE, SYSTEM_ERROR, NO_PERMISSION,
/// NO_BUYER_ID, NOT_IN_CURRENT_UNIT) plus SYSTEM_BUSY. An undecodable success answer is not: the
/// message was stored, and a retry would duplicate it.
pub(crate) fn is_retryable(error: &ClientError) -> bool {
    error.is_transport()
        || matches!(error, ClientError::Broker { code, .. } if code.is_retryable_send_error())
}

/// `topic`'s route for sending. A topic no NameServer knows is sent on the brokers of the
/// auto-creation template TBW102, with at most 4 queues per broker, which then create it (Java's
/// `DefaultMQProducerImpl.tryToFindTopicPublishInfo`). The derived route is cached under the
/// topic until a NameServer knows the real one.
///
/// A cached route is the hot path; the lookup is boxed so its (large) future is not part of
/// every send's future, which is moved a few times on each spawn.
pub(crate) async fn publish_route(
    ctx: &IoContext,
    topic: &str,
    deadline: Instant,
) -> Result<Rc<TopicRoute>> {
    if let Some(route) = ctx.routes.cached(topic) {
        return Ok(route);
    }
    Box::pin(lookup_route(ctx, topic, deadline)).await
}

/// [`publish_route`] when nothing is cached.
async fn lookup_route(ctx: &IoContext, topic: &str, deadline: Instant) -> Result<Rc<TopicRoute>> {
    let left = deadline.saturating_duration_since(Instant::now());
    match ctx.routes.route(&ctx.pool, topic, left).await {
        Err(ClientError::TopicNotFound { .. }) => {}
        found => return found,
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let template = match ctx.routes.route(&ctx.pool, AUTO_CREATE_TOPIC, left).await {
        Ok(template) => template,
        Err(ClientError::TopicNotFound { .. }) => {
            return Err(ClientError::TopicNotFound {
                topic: topic.to_owned(),
            });
        }
        Err(error) => return Err(error),
    };
    let mut data = template.data.clone();
    for queues in &mut data.queue_datas {
        let count = DEFAULT_TOPIC_QUEUE_NUMS.min(queues.read_queue_nums);
        queues.read_queue_nums = count;
        queues.write_queue_nums = count;
    }
    tracing::debug!(
        topic,
        "no route; sending on the brokers of {AUTO_CREATE_TOPIC}"
    );
    Ok(ctx.routes.store(topic, data))
}

/// One attempt: connect (or reuse the connection), write the request, wait for the answer,
/// all within `timeout` from `began`. A payload that cannot be encoded fails at once, nothing
/// sent.
async fn attempt(
    ctx: &IoContext,
    state: &ProducerState,
    payload: &Payload,
    queue: &MessageQueue,
    addr: &str,
    began: Instant,
    timeout: Duration,
) -> Result<SendResult> {
    let code = payload.code();
    // The clock is read only when connecting took a wait (vDSO clock reads show in profiles).
    let (connection, left) = if let Some(connection) = state.connection(addr) {
        (connection, timeout)
    } else {
        let connection = compio::time::timeout(timeout, connection(ctx, state, addr))
            .await
            .map_err(|_| ClientError::Timeout {
                addr: addr.to_owned(),
                code,
                timeout,
            })??;
        let left = (began + timeout).saturating_duration_since(Instant::now());
        (connection, left)
    };
    let serialize_type = connection.serialize_type();
    let refused: Cell<Option<ClientError>> = Cell::new(None);
    let request = connection.request_with(code, left, |opaque, out| {
        let head = CommandHead::request(code, opaque, serialize_type);
        if let Err(error) = payload.encode(state, queue.queue_id, &head, out) {
            refused.set(Some(error));
        }
    });
    let mut request = std::pin::pin!(request);
    // The encode runs in the first poll; when it refused, nothing was written and the request
    // is dropped (its slot freed) instead of waiting out its timeout.
    let answer = std::future::poll_fn(|cx| {
        let polled = request.as_mut().poll(cx);
        match refused.take() {
            Some(error) => Poll::Ready(Err(error)),
            None => polled,
        }
    })
    .await?;
    read_answer(&answer, addr, code, queue)
}

/// The connection to `addr`: the producer's last one while it is open (no await, no
/// allocation), else the pool's. The pool lookup is boxed: it may connect, and its large future
/// would otherwise be part of every send's future (moved a few times on each spawn).
pub(crate) async fn connection(
    ctx: &IoContext,
    state: &ProducerState,
    addr: &str,
) -> Result<Rc<Connection>> {
    if let Some(connection) = state.connection(addr) {
        return Ok(connection);
    }
    let connection = Box::pin(ctx.pool.get(addr)).await?;
    state.keep_connection(addr, &connection);
    Ok(connection)
}

/// Sends with failover: up to `1 + retries` attempts within `send_timeout`, each on a queue
/// chosen by [`ProducerState::select`] (another broker group than the last failure when there is one).
pub(crate) async fn send_with_failover(
    ctx: &Rc<IoContext>,
    state: &Rc<ProducerState>,
    payload: Payload,
) -> Result<SendResult> {
    let settings = state.settings();
    let mut now = Instant::now();
    let deadline = now + settings.send_timeout;
    let topic = payload.topic();
    let mut failed_broker: Option<String> = None;
    let mut last_error = None;
    let mut attempts = 0;
    for _ in 0..=settings.retries {
        if deadline <= now {
            break;
        }
        let route = if let Some(route) = ctx.routes.cached(topic) {
            Ok(route)
        } else {
            let route = publish_route(ctx, topic, deadline).await;
            now = Instant::now();
            route
        };
        let route = match route {
            Ok(route) => route,
            Err(error) if attempts == 0 => return Err(error),
            Err(error) => {
                last_error = Some(error);
                break;
            }
        };
        let cursor = state.on_route(ctx, topic, &route);
        let queue = state
            .select(&route, cursor, failed_broker.as_deref(), now)
            .ok_or_else(|| no_writable_queue(topic))?;
        let addr = route
            .publish_addr(&queue.broker_name)
            .ok_or_else(|| no_writable_queue(topic))?;
        attempts += 1;
        let left = deadline.saturating_duration_since(now);
        let mut timeout = left.min(ctx.config.request_timeout);
        if attempts <= settings.retries {
            // A retry is left: keep half the budget for it, so a blackholed broker (its
            // connect or answer never coming) cannot use it all up.
            timeout = timeout.min(left / 2);
        }
        let began = now;
        let result = attempt(ctx, state, &payload, queue, addr, began, timeout).await;
        now = Instant::now();
        let latency = now.saturating_duration_since(began);
        match result {
            Ok(mut result) => {
                state.record(&queue.broker_name, latency, Outcome::Answered, now);
                result.msg_id = payload.into_msg_id();
                return Ok(result);
            }
            Err(error) => {
                let retryable = is_retryable(&error);
                let outcome = if retryable {
                    Outcome::Isolate
                } else {
                    Outcome::Answered
                };
                state.record(&queue.broker_name, latency, outcome, now);
                state.schedule_refresh(ctx, topic);
                if !retryable {
                    return Err(error);
                }
                tracing::debug!(
                    topic,
                    broker = %queue.broker_name,
                    attempt = attempts,
                    %error,
                    "send attempt failed"
                );
                failed_broker = Some(queue.broker_name.clone());
                last_error = Some(error);
            }
        }
    }
    let last = last_error.unwrap_or_else(|| ClientError::Timeout {
        addr: String::new(),
        code: payload.code(),
        timeout: settings.send_timeout,
    });
    Err(ClientError::RetriesExhausted {
        topic: topic.to_owned(),
        attempts,
        last: Box::new(last),
    })
}

pub(crate) fn no_writable_queue(topic: &str) -> ClientError {
    ClientError::NoQueue {
        topic: topic.to_owned(),
        what: "writable",
    }
}

/// One attempt on a given queue (no failover), ending by `deadline`.
pub(crate) async fn send_once(
    ctx: &Rc<IoContext>,
    state: &Rc<ProducerState>,
    route: &TopicRoute,
    payload: Payload,
    queue: &MessageQueue,
    deadline: Instant,
) -> Result<SendResult> {
    let topic = payload.topic();
    let addr = route
        .publish_addr(&queue.broker_name)
        .map(str::to_owned)
        .or_else(|| ctx.routes.publish_addr(&queue.broker_name))
        .ok_or_else(|| no_writable_queue(topic))?;
    let now = Instant::now();
    let left = deadline.saturating_duration_since(now);
    match attempt(ctx, state, &payload, queue, &addr, now, left).await {
        Ok(mut result) => {
            result.msg_id = payload.into_msg_id();
            Ok(result)
        }
        Err(error) => {
            state.schedule_refresh(ctx, topic);
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq_protocol::{RequestCode, ResponseCode};

    #[test]
    fn retryable_codes_are_javas_plus_system_busy() {
        let retryable = [1, 2, 14, 16, 17, 204, 205];
        for code in (0..=300).chain([-1, 1000]) {
            let error = ClientError::broker(
                "b:1",
                RequestCode::SendMessageV2,
                ResponseCode::from_i32(code),
                None,
            );
            assert_eq!(
                is_retryable(&error),
                retryable.contains(&code),
                "code {code}"
            );
        }
        assert!(is_retryable(&ClientError::lost("b:1", "reset")));
        assert!(is_retryable(&ClientError::Timeout {
            addr: "b:1".into(),
            code: RequestCode::SendMessageV2,
            timeout: Duration::from_secs(1),
        }));
        assert!(!is_retryable(&ClientError::bad_response(
            "b:1",
            RequestCode::SendMessageV2,
            "no queueId"
        )));
    }
}
