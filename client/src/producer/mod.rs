//! The producer: sends messages to the brokers of a topic's route, spreading them round-robin
//! over every writable queue of every broker group, and on failure retrying on another broker
//! group while keeping brokers that failed or were slow out of rotation for a while (latency
//! fault avoidance, as RocketMQ's Java producer).
//!
//! A [`Producer`] is a cheap handle (`Clone + Send + Sync`); the sends run on its client
//! instance's I/O thread and each call returns a [`Pending`]: `.await` it on any runtime or
//! `.wait()` for it.
//!
//! ```no_run
//! use ringmq_client::{Message, Producer};
//!
//! # fn main() -> ringmq_client::Result<()> {
//! let producer = Producer::builder("127.0.0.1:9876").group("orders").build()?;
//! let result = producer
//!     .send(Message::new("orders", "order 42 paid").with_tags("paid").with_keys(["42"]))
//!     .wait()?;
//! println!("{} stored at {:?} offset {}", result.msg_id, result.queue, result.queue_offset);
//! producer.shutdown();
//! # Ok(())
//! # }
//! ```
//!
//! What a send does: validate the message (topic name, reserved property names, size), give it
//! a unique id (`UNIQ_KEY`, Java's layout), find the topic's route (a topic no NameServer knows
//! yet goes to the brokers of the auto-creation template `TBW102`, which create it), pick a
//! queue, and write a SEND_MESSAGE_V2 request. A transport failure or a refusal Java retries
//! (TOPIC_NOT_EXIST, SERVICE_NOT_AVAILABLE, SYSTEM_ERROR, SYSTEM_BUSY, NO_PERMISSION, ...) is
//! retried on another broker group while retries and the send timeout last; any other refusal
//! comes back at once as [`ClientError::Broker`] with the broker's code and remark.
//!
//! Not done (unlike Java): body compression and transactional messages.

mod builder;
mod encode;
mod failover;
mod fault;
mod select;
mod send;
mod settings;
mod state;
mod unique_id;
mod validate;

use std::sync::Arc;
use std::sync::atomic::Ordering;

pub use builder::ProducerBuilder;
pub use settings::{DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_OUTSTANDING_SENDS};

#[cfg(doc)]
use crate::error::ClientError;
use crate::instance::{ClientInstance, Pending};
use crate::message::{Message, MessageQueue, SendResult};
use state::{ProducerShared, SendPermit};

/// A message producer. Clones share the producer (and its group registration); the client
/// instance it was built on lives at least as long as the producer.
///
/// Sends made after [`Producer::shutdown`] fail with [`ClientError::Shutdown`].
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

struct Inner {
    instance: ClientInstance,
    shared: Arc<ProducerShared>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("group", &self.inner.shared.settings.group)
            .field("client_id", &self.inner.instance.client_id())
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    /// A producer dropped without `shutdown` still leaves its group (without waiting).
    fn drop(&mut self) {
        if !self.shared.shut_down.swap(true, Ordering::AcqRel) {
            let shared = Arc::clone(&self.shared);
            drop(self.instance.run(move |ctx| state::release(ctx, shared)));
        }
    }
}

impl Producer {
    /// A builder for a producer using the given NameServers (`host:port`, several separated by
    /// `;`).
    pub fn builder(namesrv_addrs: &str) -> ProducerBuilder {
        ProducerBuilder::new(namesrv_addrs)
    }

    pub(crate) fn new(instance: ClientInstance, shared: Arc<ProducerShared>) -> Self {
        Self {
            inner: Arc::new(Inner { instance, shared }),
        }
    }

    /// The producer group.
    pub fn group(&self) -> &str {
        &self.inner.shared.settings.group
    }

    /// Sends `message` to a queue chosen round-robin across the topic's broker groups,
    /// retrying on another broker group on transport failures and retryable refusals, within
    /// the builder's `send_timeout` and `retries`.
    ///
    /// Errors: [`ClientError::InvalidArgument`] for a message that cannot be sent (checked
    /// before anything goes out), [`ClientError::TopicNotFound`] /
    /// [`ClientError::NameServersUnreachable`] when no route can be found,
    /// [`ClientError::Broker`] for a refusal that is not retried,
    /// [`ClientError::RetriesExhausted`] (with the last attempt's error) when every attempt
    /// failed, and [`ClientError::TooManyOutstandingSends`] at once when the producer already
    /// has `max_outstanding_sends` sends (of any kind) in flight.
    ///
    /// ```no_run
    /// # use ringmq_client::{Message, Producer};
    /// # async fn demo(producer: Producer) -> ringmq_client::Result<()> {
    /// // Await it on any runtime, or call `.wait()` from synchronous code.
    /// let result = producer.send(Message::new("orders", "paid")).await?;
    /// assert!(!result.msg_id.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub fn send(&self, message: Message) -> Pending<SendResult> {
        let permit = match SendPermit::acquire(&self.inner.shared) {
            Ok(permit) => permit,
            Err(error) => return Pending::failed(error),
        };
        let shared = Arc::clone(&self.inner.shared);
        self.inner.instance.run(move |ctx| async move {
            let _permit = permit;
            send::send(ctx, shared, message).await
        })
    }

    /// Sends `message` to `queue` (of the message's topic), in one attempt: no failover, since
    /// the caller chose the queue. A failed attempt still refreshes the topic's route.
    ///
    /// ```no_run
    /// # use ringmq_client::{Message, MessageQueue, Producer};
    /// # fn demo(producer: Producer) -> ringmq_client::Result<()> {
    /// let queue = MessageQueue { topic: "orders".into(), broker_name: "broker-a".into(), queue_id: 1 };
    /// let result = producer.send_to_queue(Message::new("orders", "x"), queue).wait()?;
    /// assert_eq!(result.queue.queue_id, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_to_queue(&self, message: Message, queue: MessageQueue) -> Pending<SendResult> {
        let permit = match SendPermit::acquire(&self.inner.shared) {
            Ok(permit) => permit,
            Err(error) => return Pending::failed(error),
        };
        let shared = Arc::clone(&self.inner.shared);
        self.inner.instance.run(move |ctx| async move {
            let _permit = permit;
            send::send_to_queue(ctx, shared, message, queue).await
        })
    }

    /// Sends `message` to the queue `selector` picks: it gets the topic's writable queues
    /// (ordered by broker name, then queue id) and returns an index, taken modulo their count.
    /// Messages that must stay in order (same order id) go to one queue this way. As in Java,
    /// there is no failover to another queue (it would break the order); a failure is returned
    /// as is.
    ///
    /// The selector runs on the calling thread when the producer already knows the topic's
    /// queues, and on the client's I/O thread for the first send to a topic: keep it short.
    ///
    /// ```no_run
    /// # use ringmq_client::{Message, Producer};
    /// # fn demo(producer: Producer) -> ringmq_client::Result<()> {
    /// let order_id: usize = 42;
    /// let result = producer
    ///     .send_with_selector(Message::new("orders", "created"), move |queues, _message| order_id % queues.len())
    ///     .wait()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_with_selector<S>(&self, message: Message, selector: S) -> Pending<SendResult>
    where
        S: FnOnce(&[MessageQueue], &Message) -> usize + Send + 'static,
    {
        if let Some(queues) = self.inner.shared.writable_queues(message.topic()) {
            let queue = queues[selector(&queues, &message) % queues.len()].clone();
            return self.send_to_queue(message, queue);
        }
        let permit = match SendPermit::acquire(&self.inner.shared) {
            Ok(permit) => permit,
            Err(error) => return Pending::failed(error),
        };
        let shared = Arc::clone(&self.inner.shared);
        self.inner.instance.run(move |ctx| async move {
            let _permit = permit;
            send::send_selected(ctx, shared, message, selector).await
        })
    }

    /// Sends `message` without waiting for the broker (FLAG_ONEWAY: the broker does not
    /// answer). Completes once the request is queued on the connection; one attempt, so a
    /// message may be lost without an error. For logs and metrics, not for business data.
    ///
    /// ```no_run
    /// # use ringmq_client::{Message, Producer};
    /// # fn demo(producer: Producer) -> ringmq_client::Result<()> {
    /// producer.send_oneway(Message::new("access-log", "GET /")).wait()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_oneway(&self, message: Message) -> Pending<()> {
        let permit = match SendPermit::acquire(&self.inner.shared) {
            Ok(permit) => permit,
            Err(error) => return Pending::failed(error),
        };
        let shared = Arc::clone(&self.inner.shared);
        self.inner.instance.run(move |ctx| async move {
            let _permit = permit;
            send::send_oneway(ctx, shared, message).await
        })
    }

    /// Sends several messages of one topic in one request (SEND_BATCH_MESSAGE), to one queue,
    /// with the same failover as [`Producer::send`]. The result's `msg_id` holds every message's
    /// id and `offset_msg_id` the broker's ids, both `,`-separated in message order;
    /// `queue_offset` is the first message's.
    ///
    /// Refused ([`ClientError::InvalidArgument`]): an empty batch, messages of several topics,
    /// delay levels, retry topics, mixed `wait_store_ok`, or an encoded batch over the
    /// producer's `max_message_bytes`.
    ///
    /// ```no_run
    /// # use ringmq_client::{Message, Producer};
    /// # fn demo(producer: Producer) -> ringmq_client::Result<()> {
    /// let batch = (0..10).map(|i| Message::new("metrics", format!("sample {i}"))).collect();
    /// let result = producer.send_batch(batch).wait()?;
    /// assert_eq!(result.msg_id.split(',').count(), 10);
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_batch(&self, messages: Vec<Message>) -> Pending<SendResult> {
        let permit = match SendPermit::acquire(&self.inner.shared) {
            Ok(permit) => permit,
            Err(error) => return Pending::failed(error),
        };
        let shared = Arc::clone(&self.inner.shared);
        self.inner.instance.run(move |ctx| async move {
            let _permit = permit;
            send::send_batch(ctx, shared, messages).await
        })
    }

    /// The client instance the producer runs on (share it with consumers or an admin handle).
    pub fn instance(&self) -> &ClientInstance {
        &self.inner.instance
    }

    /// Unregisters the producer group from the instance and tells the known brokers
    /// (UNREGISTER_CLIENT, best effort); waits for that. Idempotent, and a no-op on clones of a
    /// producer already shut down. The client instance keeps running until its last handle is
    /// dropped (it may serve consumers too).
    pub fn shutdown(&self) {
        if self.inner.shared.shut_down.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = Arc::clone(&self.inner.shared);
        let released = self
            .inner
            .instance
            .run(move |ctx| state::release(ctx, shared))
            .wait();
        if let Err(error) = released {
            tracing::debug!(%error, "producer shutdown could not reach the I/O thread");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ClientError;

    #[test]
    fn producer_is_send_sync_and_shuts_down_once() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Producer>();
        assert_send_sync::<ProducerBuilder>();

        let producer = Producer::builder("127.0.0.1:1")
            .group("g1")
            .build()
            .unwrap();
        let clone = producer.clone();
        // One group per instance, as in Java.
        let duplicate = Producer::builder("127.0.0.1:1")
            .instance(producer.instance().clone())
            .group("g1")
            .build()
            .unwrap_err();
        assert!(
            matches!(duplicate, ClientError::InvalidArgument(_)),
            "{duplicate}"
        );
        producer.shutdown();
        clone.shutdown();
        let after = producer.send(Message::new("t", "b")).wait().unwrap_err();
        assert!(matches!(after, ClientError::Shutdown), "{after}");
        // The group is free again.
        let again = Producer::builder("127.0.0.1:1")
            .instance(producer.instance().clone())
            .group("g1")
            .build()
            .unwrap();
        again.shutdown();
    }

    #[test]
    fn invalid_messages_fail_without_a_broker() {
        let producer = Producer::builder("127.0.0.1:1").build().unwrap();
        let error = producer.send(Message::new("", "b")).wait().unwrap_err();
        assert!(matches!(error, ClientError::InvalidArgument(_)), "{error}");
        let error = producer.send_batch(Vec::new()).wait().unwrap_err();
        assert!(matches!(error, ClientError::InvalidArgument(_)), "{error}");
        let error = producer
            .send_oneway(Message::new("t", "b").with_property("TAGS", "x"))
            .wait()
            .unwrap_err();
        assert!(matches!(error, ClientError::InvalidArgument(_)), "{error}");
    }
}
