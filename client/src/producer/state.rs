//! A producer's state: [`ProducerShared`], seen by every thread (settings, shutdown flag,
//! outstanding-send permits, the queues caller-side selectors use), and [`ProducerState`], the
//! I/O thread's part (round-robin cursors, fault tracker, id generator, the reused properties
//! buffer), kept in a thread-local registry keyed by producer id so nothing on the hot path
//! takes a lock.
//!
//! Invariant: `RefCell` borrows of a [`ProducerState`] never cross an `.await`.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ringmq_protocol::message::properties::MAX_PROPERTIES_BYTES;

use super::fault::{FaultTracker, Outcome};
use super::select::select_queue;
use super::settings::ProducerSettings;
use super::unique_id::UniqueIdGenerator;
use crate::error::{ClientError, Result};
use crate::instance::IoContext;
use crate::message::{Message, MessageQueue};
use crate::remoting::Connection;
use crate::route::TopicRoute;

static NEXT_PRODUCER_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The state of every producer whose sends ran on this (I/O) thread, by producer id.
    static STATES: RefCell<HashMap<u64, Rc<ProducerState>>> = RefCell::new(HashMap::new());
}

/// The part of a producer every thread sees.
#[derive(Debug)]
pub(crate) struct ProducerShared {
    /// Key of the producer's [`ProducerState`] on the I/O thread.
    pub id: u64,
    pub settings: ProducerSettings,
    /// Set by `shutdown` (or drop); later sends fail with [`ClientError::Shutdown`].
    pub shut_down: AtomicBool,
    /// Sends handed to the I/O thread and not finished yet (see [`SendPermit`]).
    outstanding: AtomicUsize,
    /// Writable queues per topic, as this producer's sends last saw them: lets a selector run
    /// on the caller's thread instead of the I/O thread. Updated only when a route changes.
    queues: Mutex<HashMap<String, Arc<[MessageQueue]>>>,
}

impl ProducerShared {
    pub fn new(settings: ProducerSettings) -> Self {
        Self {
            id: NEXT_PRODUCER_ID.fetch_add(1, Ordering::Relaxed),
            settings,
            shut_down: AtomicBool::new(false),
            outstanding: AtomicUsize::new(0),
            queues: Mutex::new(HashMap::new()),
        }
    }

    /// The writable queues last seen for `topic`, if there are any.
    pub fn writable_queues(&self, topic: &str) -> Option<Arc<[MessageQueue]>> {
        self.queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
            .filter(|queues| !queues.is_empty())
            .cloned()
    }

    fn publish_queues(&self, topic: &str, queues: &[MessageQueue]) {
        self.queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(topic.to_owned(), queues.into());
    }
}

/// One topic as this producer sends to it.
#[derive(Debug)]
pub(crate) struct TopicState {
    /// Round-robin position; starts at a random queue so producers do not all begin on queue 0.
    cursor: usize,
    /// The route last seen (pointer comparison detects a refreshed route).
    route: Option<Rc<TopicRoute>>,
}

/// A producer's I/O-thread state.
#[derive(Debug)]
pub(crate) struct ProducerState {
    pub shared: Arc<ProducerShared>,
    pub faults: FaultTracker,
    pub ids: UniqueIdGenerator,
    /// Reused for every message's properties string.
    pub properties: RefCell<String>,
    pub topics: RefCell<HashMap<String, TopicState>>,
    /// Topics with a forced route refresh in flight.
    pub refreshing: RefCell<HashSet<String>>,
    /// Broker groups already sent a heartbeat because a route named them.
    pub heartbeated: RefCell<HashSet<String>>,
    /// The connection last used per broker address: a send finds it without the pool's
    /// (async) lookup. A closed one is replaced through the pool.
    pub connections: RefCell<HashMap<String, Rc<Connection>>>,
}

impl ProducerState {
    /// The state of `shared`'s producer, created on first use; `Shutdown` once shut down.
    pub fn get(ctx: &IoContext, shared: &Arc<ProducerShared>) -> Result<Rc<Self>> {
        if shared.shut_down.load(Ordering::Acquire) {
            return Err(ClientError::Shutdown);
        }
        Ok(STATES.with(|states| {
            Rc::clone(
                states
                    .borrow_mut()
                    .entry(shared.id)
                    .or_insert_with(|| Rc::new(Self::new(ctx, shared))),
            )
        }))
    }

    pub fn new(ctx: &IoContext, shared: &Arc<ProducerShared>) -> Self {
        // The client id is `ip@instance`; the id generator wants the ip.
        let ip = ctx
            .client_id
            .split('@')
            .next()
            .and_then(|ip| ip.parse::<IpAddr>().ok())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        Self {
            faults: FaultTracker::new(shared.settings.fault_tiers.clone()),
            ids: UniqueIdGenerator::new(ip),
            shared: Arc::clone(shared),
            properties: RefCell::new(String::with_capacity(256)),
            topics: RefCell::new(HashMap::new()),
            refreshing: RefCell::new(HashSet::new()),
            heartbeated: RefCell::new(HashSet::new()),
            connections: RefCell::new(HashMap::new()),
        }
    }

    /// The open connection last used for `addr`.
    pub fn connection(&self, addr: &str) -> Option<Rc<Connection>> {
        self.connections
            .borrow()
            .get(addr)
            .filter(|connection| !connection.is_closed())
            .cloned()
    }

    /// Remembers the connection used for `addr`.
    pub fn keep_connection(&self, addr: &str, connection: &Rc<Connection>) {
        self.connections
            .borrow_mut()
            .insert(addr.to_owned(), Rc::clone(connection));
    }

    pub fn settings(&self) -> &ProducerSettings {
        &self.shared.settings
    }

    /// Notes the route a send uses and returns the topic's round-robin position. A route not
    /// seen before is published for caller-side selectors, and brokers it names for the first
    /// time get a heartbeat (so they know the producer group before its first message).
    pub fn on_route(&self, ctx: &Rc<IoContext>, topic: &str, route: &Rc<TopicRoute>) -> usize {
        let mut topics = self.topics.borrow_mut();
        if !topics.contains_key(topic) {
            let start = std::collections::hash_map::RandomState::new().hash_one(topic) as usize;
            topics.insert(
                topic.to_owned(),
                TopicState {
                    cursor: start,
                    route: None,
                },
            );
        }
        let Some(entry) = topics.get_mut(topic) else {
            return 0;
        };
        let cursor = entry.cursor;
        entry.cursor = cursor.wrapping_add(1);
        if entry
            .route
            .as_ref()
            .is_some_and(|seen| Rc::ptr_eq(seen, route))
        {
            return cursor;
        }
        entry.route = Some(Rc::clone(route));
        drop(topics);
        self.shared.publish_queues(topic, route.writable_queues());
        let mut heartbeated = self.heartbeated.borrow_mut();
        let mut new_broker = false;
        for broker in &route.data.broker_datas {
            if !heartbeated.contains(&broker.broker_name) {
                heartbeated.insert(broker.broker_name.clone());
                new_broker = true;
            }
        }
        drop(heartbeated);
        if new_broker {
            let ctx = Rc::clone(ctx);
            compio::runtime::spawn(async move { ctx.heartbeat_all().await }).detach();
        }
        cursor
    }

    /// Picks the queue of an attempt.
    pub fn select<'r>(
        &self,
        route: &'r TopicRoute,
        cursor: usize,
        avoid: Option<&str>,
        now: Instant,
    ) -> Option<&'r MessageQueue> {
        let check = self.settings().fault_avoidance && self.faults.any_unavailable(now);
        select_queue(route.writable_queues(), cursor, avoid, |broker| {
            !check || self.faults.is_available(broker, now)
        })
    }

    /// Reports an attempt to the fault tracker (when fault avoidance is on).
    pub fn record(&self, broker: &str, latency: Duration, outcome: Outcome, now: Instant) {
        if self.settings().fault_avoidance {
            self.faults.record(broker, latency, outcome, now);
        }
    }

    /// Re-fetches `topic`'s route in the background after a failed attempt (one refresh per
    /// topic at a time). Not awaited: the retry goes on with the cached route and the fault
    /// tracker, and the next send sees the fresh route.
    pub fn schedule_refresh(self: &Rc<Self>, ctx: &Rc<IoContext>, topic: &str) {
        if self.refreshing.borrow().contains(topic) {
            return;
        }
        self.refreshing.borrow_mut().insert(topic.to_owned());
        let (ctx, state, topic) = (Rc::clone(ctx), Rc::clone(self), topic.to_owned());
        compio::runtime::spawn(async move {
            if let Err(error) = ctx.routes.refresh(&ctx.pool, &topic, ctx.timeout()).await {
                tracing::debug!(topic, %error, "route refresh after a failed send failed");
            }
            state.refreshing.borrow_mut().remove(&topic);
        })
        .detach();
    }

    /// Writes `message`'s properties once to check they fit a record (the length is an i16).
    pub fn check_properties(&self, message: &Message, unique_id: &str) -> Result<usize> {
        let mut properties = self.properties.borrow_mut();
        message.write_properties(unique_id, &mut properties);
        if properties.len() > MAX_PROPERTIES_BYTES {
            return Err(ClientError::InvalidArgument(format!(
                "message properties take {} bytes; at most {MAX_PROPERTIES_BYTES} fit",
                properties.len()
            )));
        }
        Ok(properties.len())
    }
}

/// Registers the producer group on the instance (refused if it already holds it, as Java does).
pub(crate) fn register(ctx: &IoContext, group: String) -> Result<()> {
    let mut groups = ctx.groups.borrow_mut();
    if groups.producers.contains(&group) {
        return Err(ClientError::InvalidArgument(format!(
            "producer group {group} is already registered on this client instance"
        )));
    }
    groups.producers.insert(group);
    Ok(())
}

/// Forgets the producer: drops its state, removes its group, tells the brokers (best effort).
pub(crate) async fn release(ctx: Rc<IoContext>, shared: Arc<ProducerShared>) -> Result<()> {
    STATES.with(|states| states.borrow_mut().remove(&shared.id));
    let group = &shared.settings.group;
    ctx.groups.borrow_mut().producers.remove(group);
    ctx.unregister(Some(group), None).await;
    Ok(())
}

/// A claim on one of a producer's `max_outstanding_sends` slots, released when dropped (when
/// the send's task ends, or with its job if the instance stopped before running it).
#[derive(Debug)]
pub(crate) struct SendPermit {
    shared: Arc<ProducerShared>,
}

impl SendPermit {
    /// Takes a slot, or fails fast with [`ClientError::TooManyOutstandingSends`] when every
    /// slot is taken (the caller is producing faster than the brokers take messages).
    pub fn acquire(shared: &Arc<ProducerShared>) -> Result<Self> {
        let limit = shared.settings.max_outstanding_sends;
        let taken = shared.outstanding.fetch_add(1, Ordering::AcqRel);
        if taken >= limit {
            shared.outstanding.fetch_sub(1, Ordering::AcqRel);
            return Err(ClientError::TooManyOutstandingSends {
                group: shared.settings.group.clone(),
                limit,
            });
        }
        Ok(Self {
            shared: Arc::clone(shared),
        })
    }
}

impl Drop for SendPermit {
    fn drop(&mut self) {
        self.shared.outstanding.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// ProducerSettings of the unit tests: 64-byte message limit.
    pub fn settings() -> ProducerSettings {
        ProducerSettings {
            group: "g".into(),
            send_timeout: Duration::from_secs(3),
            retries: 2,
            fault_avoidance: true,
            fault_tiers: super::super::fault::default_tiers(),
            max_message_bytes: 64,
            max_outstanding_sends: 2,
        }
    }

    /// A producer state off the I/O thread.
    pub fn state() -> ProducerState {
        ProducerState {
            shared: Arc::new(ProducerShared::new(settings())),
            faults: FaultTracker::new(Vec::new()),
            ids: UniqueIdGenerator::new("10.0.0.1".parse().unwrap()),
            properties: RefCell::new(String::new()),
            topics: RefCell::new(HashMap::new()),
            refreshing: RefCell::new(HashSet::new()),
            heartbeated: RefCell::new(HashSet::new()),
            connections: RefCell::new(HashMap::new()),
        }
    }

    #[test]
    fn outstanding_sends_are_capped_and_released() {
        let shared = Arc::new(ProducerShared::new(settings()));
        let first = SendPermit::acquire(&shared).unwrap();
        let second = SendPermit::acquire(&shared).unwrap();
        let refused = SendPermit::acquire(&shared).unwrap_err();
        assert!(
            matches!(
                refused,
                ClientError::TooManyOutstandingSends { limit: 2, .. }
            ),
            "{refused}"
        );
        drop(first);
        let third = SendPermit::acquire(&shared).unwrap();
        drop((second, third));
        assert_eq!(shared.outstanding.load(Ordering::Acquire), 0);
    }
}
