//! The push consumer's state on the I/O thread and its control task: rebalances, offset
//! commits, orderly queue locks and shutdown.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use compio::runtime::JoinHandle;

use super::builder::PushSettings;
use super::pull_loop::pull_loop;
use super::{Control, PushShared};
use crate::consumer::consume::Signal;
use crate::consumer::offsets::{self, LocalOffsetStore};
use crate::consumer::process_queue::ProcessQueue;
use crate::consumer::rebalance::{allocate_averagely, consumer_ids};
use crate::consumer::{Either, RETRY_TOPIC_PREFIX, either, join_all, orderly, register_group};
use crate::error::{ClientError, Result};
use crate::instance::IoContext;
use crate::message::MessageQueue;
use crate::notify::Notify;
use crate::route::TopicRoute;

/// Orderly consumers re-lock their queues this often (RocketMQ `lockInterval`).
const LOCK_RENEW_INTERVAL: Duration = Duration::from_secs(20);
/// Next rebalance after one that could not finish (route or member list missing, lock refused).
const REBALANCE_RETRY: Duration = Duration::from_secs(3);
/// How long a dropped orderly queue waits for its running batch before it is unlocked.
const UNLOCK_WAIT: Duration = Duration::from_secs(1);

/// An assigned queue on the I/O side.
#[derive(Debug)]
struct Assigned {
    queue: Arc<ProcessQueue>,
    /// The pull task; dropping it cancels the pull (even one parked at the broker).
    pull: Option<JoinHandle<()>>,
}

/// The consumer's state on the I/O thread.
pub(super) struct PushIo {
    ctx: Rc<IoContext>,
    settings: Arc<PushSettings>,
    shared: Arc<PushShared>,
    signals: flume::Sender<Signal>,
    queues: RefCell<BTreeMap<MessageQueue, Assigned>>,
    local: RefCell<Option<LocalOffsetStore>>,
    rebalance_wake: Rc<Notify>,
    /// Broker names this consumer's group was announced to.
    announced: RefCell<BTreeSet<String>>,
    /// Topics whose last rebalance failed (logged once per failure streak).
    failing_topics: RefCell<BTreeSet<String>>,
    /// Set by the first shutdown step: no new pulls, rebalances or commits.
    pulls_stopped: Cell<bool>,
}

impl PushIo {
    /// Joins the group, runs the first rebalance and starts the control task.
    pub(super) async fn start(
        ctx: Rc<IoContext>,
        settings: Arc<PushSettings>,
        shared: Arc<PushShared>,
        signals: flume::Sender<Signal>,
        control: flume::Receiver<Control>,
        local: Option<LocalOffsetStore>,
    ) -> Result<()> {
        register_group(&ctx, settings.consumer_data())?;
        let rebalance_wake = Rc::new(Notify::default());
        ctx.groups
            .borrow_mut()
            .rebalance
            .insert(settings.group.clone(), Rc::clone(&rebalance_wake));
        let io = Rc::new(Self {
            ctx: Rc::clone(&ctx),
            settings,
            shared,
            signals,
            queues: RefCell::new(BTreeMap::new()),
            local: RefCell::new(local),
            rebalance_wake,
            announced: RefCell::new(BTreeSet::new()),
            failing_topics: RefCell::new(BTreeSet::new()),
            pulls_stopped: Cell::new(false),
        });
        // Learn the brokers first so the heartbeat reaches them; a topic the NameServers do not
        // know yet is retried by the rebalances.
        for subscription in &io.settings.subscriptions {
            if let Err(error) = ctx
                .routes
                .route(&ctx.pool, subscription.topic(), ctx.timeout())
                .await
            {
                tracing::debug!(topic = subscription.topic(), %error, "no route yet");
            }
        }
        io.announce().await;
        let complete = io.rebalance().await;
        compio::runtime::spawn(Rc::clone(&io).control_loop(control, complete)).detach();
        Ok(())
    }

    /// Heartbeats every known broker (the instance's heartbeat carries every group) and notes
    /// which brokers have heard of this group.
    async fn announce(&self) {
        self.ctx.heartbeat_all().await;
        let mut announced = self.announced.borrow_mut();
        for broker in self.ctx.routes.brokers() {
            announced.insert(broker.broker_name);
        }
    }

    /// Heartbeats when `route` names a broker this group was not announced to yet: its member
    /// list must include this client before the allocation asks for it.
    async fn announce_to(&self, route: &TopicRoute) {
        let unknown = {
            let announced = self.announced.borrow();
            route
                .data
                .broker_datas
                .iter()
                .any(|broker| !announced.contains(&broker.broker_name))
        };
        if unknown {
            self.announce().await;
        }
    }

    /// The control task: rebalances, commits, lock renewals, shutdown.
    async fn control_loop(self: Rc<Self>, control: flume::Receiver<Control>, complete: bool) {
        let settings = Arc::clone(&self.settings);
        let now = Instant::now();
        let mut next_rebalance = now
            + if complete {
                settings.rebalance_interval
            } else {
                REBALANCE_RETRY.min(settings.rebalance_interval)
            };
        let mut next_commit = now + settings.commit_interval;
        let mut next_lock = now + LOCK_RENEW_INTERVAL;
        // Bounded by the instance's life: ends on Finish, a dropped handle, or instance stop.
        loop {
            if self.ctx.stopped.get() {
                return;
            }
            let mut deadline = next_rebalance.min(next_commit);
            if settings.orderly {
                deadline = deadline.min(next_lock);
            }
            if self.pulls_stopped.get() {
                // Shutting down: only the next control request matters (timers that are due
                // would otherwise fire again and again).
                deadline = Instant::now() + Duration::from_secs(3600);
            }
            match either(
                control.recv_async(),
                self.rebalance_wake.wait_until(deadline),
            )
            .await
            {
                Either::Left(Ok(Control::StopPulls(reply))) => {
                    self.stop_pulls();
                    let _ = reply.send(());
                }
                Either::Left(Ok(Control::Finish(reply))) => {
                    let result = self.finish().await;
                    let _ = reply.send(result);
                    return;
                }
                Either::Left(Err(_)) => {
                    // The handle is gone without a shutdown (it always shuts down on drop, so
                    // only a leaked handle gets here): leave the group cleanly anyway.
                    self.stop_pulls();
                    let _ = self.finish().await;
                    return;
                }
                Either::Right(notified) => {
                    if self.pulls_stopped.get() {
                        continue;
                    }
                    let now = Instant::now();
                    if notified || now >= next_rebalance {
                        let complete = self.rebalance().await;
                        let wait = if complete {
                            settings.rebalance_interval
                        } else {
                            REBALANCE_RETRY.min(settings.rebalance_interval)
                        };
                        next_rebalance = Instant::now() + wait;
                    }
                    if now >= next_commit {
                        if let Err(error) = self.commit_all().await {
                            tracing::debug!(group = %settings.group, %error, "offset commit incomplete");
                        }
                        next_commit = Instant::now() + settings.commit_interval;
                    }
                    if settings.orderly && now >= next_lock {
                        self.renew_locks().await;
                        next_lock = Instant::now() + LOCK_RENEW_INTERVAL;
                    }
                }
            }
        }
    }

    /// Recomputes this member's queues and applies the difference. True when every topic was
    /// allocated and every new queue started (else the caller retries soon).
    async fn rebalance(&self) -> bool {
        if self.pulls_stopped.get() {
            return true;
        }
        let ctx = &self.ctx;
        let settings = &self.settings;
        let mut wanted: BTreeSet<MessageQueue> = BTreeSet::new();
        let mut failed_topics: BTreeSet<String> = BTreeSet::new();
        for subscription in &settings.subscriptions {
            let topic = subscription.topic();
            match self.allocate(topic).await {
                Ok(queues) => {
                    if self.failing_topics.borrow_mut().remove(topic) {
                        tracing::info!(group = %settings.group, topic, "rebalance recovered");
                    }
                    wanted.extend(queues);
                }
                Err(error) => {
                    let first = self.failing_topics.borrow_mut().insert(topic.to_owned());
                    if first && !topic.starts_with(RETRY_TOPIC_PREFIX) {
                        tracing::warn!(group = %settings.group, topic, %error, "cannot rebalance topic; keeping its queues");
                    } else {
                        tracing::debug!(group = %settings.group, topic, %error, "cannot rebalance topic; keeping its queues");
                    }
                    failed_topics.insert(topic.to_owned());
                }
            }
        }
        let current: Vec<MessageQueue> = self.queues.borrow().keys().cloned().collect();
        let removed: Vec<MessageQueue> = current
            .iter()
            .filter(|queue| !wanted.contains(*queue) && !failed_topics.contains(&queue.topic))
            .cloned()
            .collect();
        let mut added: Vec<MessageQueue> = wanted
            .iter()
            .filter(|queue| !self.queues.borrow().contains_key(*queue))
            .cloned()
            .collect();
        for queue in &removed {
            self.remove_queue(queue).await;
        }
        // A retry topic the brokers do not have yet (created with the group's first send-back)
        // does not make the rebalance incomplete: retrying every few seconds would rebalance
        // everything until then. The regular interval picks it up.
        let mut complete = failed_topics
            .iter()
            .all(|topic| topic.starts_with(RETRY_TOPIC_PREFIX));
        if settings.orderly && !added.is_empty() {
            let (granted, _) = orderly::lock(ctx, &settings.group, added.iter()).await;
            let before = added.len();
            added.retain(|queue| granted.contains(queue));
            if added.len() < before {
                tracing::debug!(group = %settings.group, refused = before - added.len(), "queue locks refused; retrying soon");
                complete = false;
            }
        }
        for queue in added {
            if self.pulls_stopped.get() {
                break;
            }
            match self.initial_offset(&queue).await {
                Ok(offset) => self.add_queue(queue, offset),
                Err(error) => {
                    tracing::warn!(group = %settings.group, ?queue, %error, "cannot read the queue's start offset; retrying soon");
                    complete = false;
                    if settings.orderly {
                        orderly::unlock(ctx, &settings.group, [&queue]).await;
                    }
                }
            }
        }
        self.publish_assignment();
        complete
    }

    /// This member's queues of `topic`.
    async fn allocate(&self, topic: &str) -> Result<Vec<MessageQueue>> {
        let ctx = &self.ctx;
        let route = ctx.routes.route(&ctx.pool, topic, ctx.timeout()).await?;
        let queues = route.readable_queues();
        if !self.settings.clustering() {
            return Ok(queues.to_vec());
        }
        self.announce_to(&route).await;
        let ids = match consumer_ids(ctx, &self.settings.group, &route).await {
            Ok(ids) => ids,
            Err(error) if !error.is_transport() => {
                // The broker does not list the group: it restarted or dropped this client's
                // connection since the last heartbeat. Announce again and ask once more.
                tracing::debug!(group = %self.settings.group, topic, %error, "member list refused; heartbeating");
                self.announce().await;
                consumer_ids(ctx, &self.settings.group, &route).await?
            }
            Err(error) => return Err(error),
        };
        if !ids.contains(&ctx.client_id) {
            tracing::debug!(group = %self.settings.group, topic, "this client is not in the group's member list yet");
        }
        Ok(allocate_averagely(queues, &ids, &ctx.client_id)
            .into_iter()
            .cloned()
            .collect())
    }

    async fn initial_offset(&self, queue: &MessageQueue) -> Result<i64> {
        if self.settings.clustering() {
            return offsets::initial_offset(
                &self.ctx,
                &self.settings.group,
                queue,
                self.settings.start_position,
            )
            .await;
        }
        let stored = self
            .local
            .borrow()
            .as_ref()
            .and_then(|store| store.get(queue));
        match stored {
            Some(offset) => Ok(offset),
            None => offsets::start_offset(&self.ctx, queue, self.settings.start_position).await,
        }
    }

    /// Starts consuming `queue` at `offset`.
    fn add_queue(&self, queue: MessageQueue, offset: i64) {
        let process_queue = Arc::new(ProcessQueue::new(queue.clone(), offset));
        if self.settings.orderly {
            process_queue.set_locked(true, Instant::now());
        }
        let pull = compio::runtime::spawn(pull_loop(
            Rc::clone(&self.ctx),
            Arc::clone(&self.settings),
            Arc::clone(&process_queue),
            self.signals.clone(),
        ));
        tracing::info!(group = %self.settings.group, ?queue, offset, "queue assigned");
        self.queues.borrow_mut().insert(
            queue,
            Assigned {
                queue: process_queue,
                pull: Some(pull),
            },
        );
    }

    /// Stops consuming `queue`: cancels its pull, drops its undelivered messages, commits its
    /// offset and (orderly) releases its lock.
    async fn remove_queue(&self, queue: &MessageQueue) {
        let Some(assigned) = self.queues.borrow_mut().remove(queue) else {
            return;
        };
        drop(assigned.pull);
        let process_queue = assigned.queue;
        process_queue.mark_dropped();
        let mut unlock = self.settings.orderly;
        if self.settings.orderly {
            // The batch in the handler must end before another member may take the queue.
            let deadline = Instant::now() + UNLOCK_WAIT;
            while process_queue.is_consuming() && Instant::now() < deadline {
                compio::time::sleep(Duration::from_millis(10)).await;
            }
            if process_queue.is_consuming() {
                tracing::warn!(group = %self.settings.group, ?queue, "handler still busy; the queue lock is left to expire");
                unlock = false;
            }
        }
        if let Err(error) = self
            .commit_queues(std::slice::from_ref(&process_queue))
            .await
        {
            tracing::warn!(group = %self.settings.group, ?queue, %error, "offset commit of a released queue failed");
        }
        if unlock {
            orderly::unlock(&self.ctx, &self.settings.group, [queue]).await;
        }
        tracing::info!(group = %self.settings.group, ?queue, "queue released");
    }

    fn publish_assignment(&self) {
        let queues: Vec<MessageQueue> = self.queues.borrow().keys().cloned().collect();
        *self
            .shared
            .assigned
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = queues;
    }

    fn process_queues(&self) -> Vec<Arc<ProcessQueue>> {
        self.queues
            .borrow()
            .values()
            .map(|assigned| Arc::clone(&assigned.queue))
            .collect()
    }

    /// Commits the offsets of every assigned queue.
    async fn commit_all(&self) -> Result<()> {
        let queues = self.process_queues();
        self.commit_queues(&queues).await
    }

    /// Commits the committable offsets of `queues` that changed since their last commit: to
    /// their brokers (clustering; all queues at once, each request awaited so a commit counts
    /// only once its broker confirmed it, which keeps the final commit at shutdown durable) or
    /// to the local file (broadcasting). Returns the first failure.
    async fn commit_queues(&self, queues: &[Arc<ProcessQueue>]) -> Result<()> {
        if !self.settings.clustering() {
            return self.commit_local(queues).await;
        }
        let candidates: Vec<(&Arc<ProcessQueue>, i64)> = queues
            .iter()
            .filter_map(|queue| Some((queue, queue.commit_candidate()?)))
            .collect();
        let commits = candidates
            .iter()
            .map(|(queue, offset)| {
                offsets::update(&self.ctx, &self.settings.group, queue.queue(), *offset)
            })
            .collect();
        let results = join_all(commits).await;
        let mut first_error = None;
        for ((process_queue, offset), result) in candidates.into_iter().zip(results) {
            match result {
                Ok(()) => process_queue.mark_committed(offset),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Writes the local offset file (off the I/O thread) with the offsets of `queues`.
    async fn commit_local(&self, queues: &[Arc<ProcessQueue>]) -> Result<()> {
        // Exactly the (queue, offset) pairs written: a queue's offset may move on while the
        // file is written, and only what is in the file counts as committed.
        let snapshot: Vec<(Arc<ProcessQueue>, i64)>;
        let (path, bytes) = {
            let mut local = self.local.borrow_mut();
            let Some(store) = local.as_mut() else {
                return Ok(());
            };
            snapshot = stage_local(store, queues);
            if snapshot.is_empty() {
                return Ok(());
            }
            store.snapshot()
        };
        let written = compio::runtime::spawn_blocking(move || {
            offsets::write_atomically(&path, &bytes).map_err(|error| (path, error))
        })
        .await;
        match written {
            Ok(Ok(())) => {
                for (process_queue, offset) in snapshot {
                    process_queue.mark_committed(offset);
                }
                Ok(())
            }
            Ok(Err((path, error))) => Err(ClientError::InvalidArgument(format!(
                "cannot write local offset file {}: {error}",
                path.display()
            ))),
            Err(_) => Err(ClientError::Shutdown),
        }
    }

    /// Re-locks every assigned queue (orderly). A queue its broker refused is paused until a
    /// later renewal succeeds; a broker that did not answer leaves its locks as they were (they
    /// stay valid for 30 s).
    async fn renew_locks(&self) {
        let queues: Vec<MessageQueue> = self.queues.borrow().keys().cloned().collect();
        let (granted, answered) =
            orderly::lock(&self.ctx, &self.settings.group, queues.iter()).await;
        let now = Instant::now();
        for process_queue in self.process_queues() {
            let queue = process_queue.queue();
            if granted.contains(queue) {
                process_queue.set_locked(true, now);
            } else if answered.contains(&queue.broker_name) {
                if process_queue.is_locked(now) {
                    tracing::warn!(group = %self.settings.group, ?queue, "queue lock lost");
                }
                process_queue.set_locked(false, now);
            }
        }
    }

    /// First shutdown step: cancels every pull; the queues stay so the batch in the handler can
    /// still complete.
    fn stop_pulls(&self) {
        self.pulls_stopped.set(true);
        for assigned in self.queues.borrow_mut().values_mut() {
            drop(assigned.pull.take());
        }
    }

    /// Last shutdown step: commit, unlock, leave the group.
    async fn finish(&self) -> Result<()> {
        self.pulls_stopped.set(true);
        let queues = self.process_queues();
        for process_queue in &queues {
            process_queue.mark_dropped();
        }
        let committed = self.commit_queues(&queues).await;
        if self.settings.orderly {
            let locked: Vec<MessageQueue> = queues
                .iter()
                .filter(|queue| !queue.is_consuming())
                .map(|queue| queue.queue().clone())
                .collect();
            orderly::unlock(&self.ctx, &self.settings.group, locked.iter()).await;
        }
        self.queues.borrow_mut().clear();
        self.publish_assignment();
        // Out of the heartbeat first, so no heartbeat re-announces the group after the
        // unregister below.
        {
            let mut groups = self.ctx.groups.borrow_mut();
            groups.consumers.remove(&self.settings.group);
            groups.rebalance.remove(&self.settings.group);
        }
        self.ctx.unregister(None, Some(&self.settings.group)).await;
        tracing::info!(group = %self.settings.group, "consumer stopped");
        committed
    }
}

/// Puts the changed committable offsets of `queues` into `store` and returns exactly those
/// (queue, offset) pairs: what the next file write commits.
fn stage_local(
    store: &mut LocalOffsetStore,
    queues: &[Arc<ProcessQueue>],
) -> Vec<(Arc<ProcessQueue>, i64)> {
    let staged: Vec<(Arc<ProcessQueue>, i64)> = queues
        .iter()
        .filter_map(|queue| Some((Arc::clone(queue), queue.commit_candidate()?)))
        .collect();
    for (process_queue, offset) in &staged {
        store.set(process_queue.queue(), *offset);
    }
    staged
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::message::ReceivedMessage;

    fn message(offset: i64) -> ReceivedMessage {
        ReceivedMessage::for_test(offset, 0)
    }

    #[test]
    fn broadcast_commit_marks_exactly_the_offsets_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = LocalOffsetStore::path(dir.path(), "I", "g");
        let mut store = LocalOffsetStore::load(path, "g").unwrap();
        let queue = Arc::new(ProcessQueue::new(
            MessageQueue {
                broker_name: "b".into(),
                queue_id: 0,
                topic: "t".into(),
            },
            10,
        ));
        queue.put(vec![message(10), message(11)], 12);
        let staged = stage_local(&mut store, std::slice::from_ref(&queue));
        assert_eq!(staged.len(), 1);
        assert_eq!(staged[0].1, 10);
        assert_eq!(store.get(queue.queue()), Some(10));
        // While the file is written, the consume thread finishes both messages.
        queue.done([10, 11]);
        for (process_queue, offset) in staged {
            process_queue.mark_committed(offset);
        }
        assert_eq!(
            queue.commit_candidate(),
            Some(12),
            "12 was never written: the next round must write it"
        );
        assert!(stage_local(&mut store, std::slice::from_ref(&queue)).len() == 1);
        assert_eq!(store.get(queue.queue()), Some(12));
    }
}
