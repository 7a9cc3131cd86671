//! The client instance: one I/O thread that owns every connection, the route cache, the
//! heartbeat and the consumers' background work, shared by the producers, consumers and admin
//! handles built on it.
//!
//! Why a thread of its own: the connection layer is `!Send` (compio, thread-per-core), while the
//! handles users hold must work from any thread and any async runtime. A handle's call is
//! shipped to the I/O thread as a job, runs there as a task, and its result comes back through a
//! channel whose receiving end is both a `Send` future ([`Pending`]) and a blocking wait
//! ([`Pending::wait`]).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringmq_protocol::body::{self, ConsumerData, HeartbeatData, ProducerData};
use ringmq_protocol::header::{
    CheckTransactionStateRequestHeader, EndTransactionRequestHeader,
    NotifyConsumerIdsChangedRequestHeader, UnregisterClientRequestHeader, transaction_state,
};
use ringmq_protocol::{Command, RequestCode, ResponseCode};

use crate::config::ClientConfig;
use crate::error::{ClientError, Result};
use crate::notify::Notify;
use crate::remoting::{
    Connection, ConnectionOptions, ConnectionPool, InboundHandler, expect_success,
};
use crate::route::RouteTable;

/// Jobs the I/O thread takes from its queue in one go before the runtime runs other tasks.
const MAX_JOBS_PER_WAKEUP: usize = 256;

/// A unit of work for the I/O thread.
type Job = Box<dyn FnOnce(&Rc<IoContext>) + Send>;

thread_local! {
    /// Set on client I/O threads: blocking on a [`Pending`] there would deadlock.
    static ON_IO_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// On an I/O thread: its instance's id and context, so a call made there (from a task of
    /// [`ClientInstance::spawn`] or a consumer) runs directly instead of through the job channel.
    static LOCAL_CONTEXT: RefCell<Option<(u64, Rc<IoContext>)>> = const { RefCell::new(None) };
}

/// Distinguishes instances of one process in their client ids.
static INSTANCE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A handle to a client instance; clones share it. The I/O thread stops when the last handle
/// (and every producer or consumer built on it) is dropped, or at [`ClientInstance::shutdown`].
#[derive(Clone)]
pub struct ClientInstance {
    inner: Arc<Inner>,
}

struct Inner {
    /// Tells this instance's I/O thread apart from other instances' ([`LOCAL_CONTEXT`]).
    id: u64,
    config: ClientConfig,
    client_id: String,
    jobs: Mutex<Option<flume::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for ClientInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientInstance")
            .field("client_id", &self.inner.client_id)
            .field("namesrv_addrs", &self.inner.config.namesrv_addrs)
            .finish_non_exhaustive()
    }
}

impl ClientInstance {
    /// Starts a client instance: validates `config` and starts its I/O thread.
    pub fn new(config: ClientConfig) -> Result<Self> {
        config.validate()?;
        let id = INSTANCE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let instance = match &config.instance_name {
            Some(name) => name.clone(),
            None => format!("{}#{id}", std::process::id()),
        };
        let client_id = format!("{}@{instance}", local_ip(&config.namesrv_addrs[0]));
        let (jobs_tx, jobs_rx) = flume::unbounded::<Job>();
        let (ready_tx, ready_rx) = flume::bounded::<Result<()>>(1);
        let thread_config = config.clone();
        let thread_client_id = client_id.clone();
        let thread = std::thread::Builder::new()
            .name("ringmq-client-io".into())
            .spawn(move || io_thread(id, thread_config, thread_client_id, &jobs_rx, &ready_tx))
            .map_err(|error| {
                ClientError::InvalidArgument(format!("cannot start the client I/O thread: {error}"))
            })?;
        ready_rx.recv().map_err(|_| ClientError::Shutdown)??;
        Ok(Self {
            inner: Arc::new(Inner {
                id,
                config,
                client_id,
                jobs: Mutex::new(Some(jobs_tx)),
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// This client's id (`ip@instance`), as brokers see it in consumer groups.
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// The settings it was started with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Runs `task` on the I/O thread; its result arrives through the returned [`Pending`].
    pub(crate) fn run<T, F, Fut>(&self, task: F) -> Pending<T>
    where
        T: Send + 'static,
        F: FnOnce(Rc<IoContext>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + 'static,
    {
        let (tx, rx) = flume::bounded(1);
        // Already on this instance's I/O thread: run it here, no hand-off and no wake-up.
        let local = LOCAL_CONTEXT.with(|local| {
            local
                .borrow()
                .as_ref()
                .filter(|(id, _)| *id == self.inner.id)
                .map(|(_, ctx)| Rc::clone(ctx))
        });
        if let Some(ctx) = local {
            if ctx.stopped.get() {
                return Pending::failed(ClientError::Shutdown);
            }
            let future = task(ctx);
            compio::runtime::spawn(async move {
                let _ = tx.send(future.await);
            })
            .detach();
            return Pending::new(rx);
        }
        let job: Job = Box::new(move |ctx| {
            let future = task(Rc::clone(ctx));
            compio::runtime::spawn(async move {
                // The caller may have stopped waiting; nothing to do then.
                let _ = tx.send(future.await);
            })
            .detach();
        });
        let jobs = self
            .inner
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let sent = match jobs {
            // Sending wakes the I/O thread's runtime, and compio aborts the process when a
            // waker runs on an unwinding thread (a handle dropped during a panic): hand the
            // send to another thread.
            Some(jobs) if std::thread::panicking() => std::thread::Builder::new()
                .name("ringmq-client-job".into())
                .spawn(move || drop(jobs.send(job)))
                .is_ok(),
            Some(jobs) => jobs.send(job).is_ok(),
            None => false,
        };
        if !sent {
            return Pending::failed(ClientError::Shutdown);
        }
        Pending::new(rx)
    }

    /// Runs `task` on this instance's I/O thread; its result arrives through the returned
    /// [`Pending`].
    ///
    /// Why: a call on a handle (`producer.send(..)`) made from another thread is shipped to the
    /// I/O thread and its result shipped back, two thread wake-ups per call. Calls made from
    /// inside `task` run on the I/O thread directly. An application that keeps thousands of
    /// sends in flight gets the connection layer's full rate this way (see the client
    /// library benchmark in docs/benchmarks.md). `task` shares the thread with every connection of the instance: it
    /// must never block (no [`Pending::wait`], which is refused there, no blocking I/O).
    ///
    /// ```no_run
    /// use ringmq_client::{Message, Producer};
    ///
    /// # fn main() -> ringmq_client::Result<()> {
    /// let producer = Producer::builder("127.0.0.1:9876").build()?;
    /// let sender = producer.clone();
    /// let sent = producer
    ///     .instance()
    ///     .spawn(move || async move {
    ///         let mut sent = 0;
    ///         for i in 0..1000 {
    ///             sender.send(Message::new("metrics", format!("sample {i}"))).await?;
    ///             sent += 1;
    ///         }
    ///         Ok(sent)
    ///     })
    ///     .wait()?;
    /// assert_eq!(sent, 1000);
    /// # Ok(())
    /// # }
    /// ```
    pub fn spawn<T, F, Fut>(&self, task: F) -> Pending<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + 'static,
    {
        self.run(move |_| task())
    }

    /// Stops the I/O thread: tells brokers that the groups still registered are gone
    /// (UNREGISTER_CLIENT, best effort) and closes every connection. Idempotent; later calls
    /// on handles fail with [`ClientError::Shutdown`].
    ///
    /// Shut producers and consumers down first: a push consumer commits its final offsets in
    /// its own `shutdown`, which needs the I/O thread; stopping the instance under a running
    /// consumer leaves the offsets of its last few seconds uncommitted (they are delivered
    /// again, never lost).
    pub fn shutdown(&self) {
        self.inner.stop();
    }
}

impl Inner {
    fn stop(&self) {
        drop(
            self.jobs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread
            && !ON_IO_THREAD.with(std::cell::Cell::get)
        {
            let _ = thread.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Closing the job channel wakes the I/O thread's runtime, and compio aborts the
            // process when a waker runs on a thread that is unwinding: stop from another thread.
            let jobs = self
                .jobs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            let thread = self
                .thread
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            let _ = std::thread::Builder::new()
                .name("ringmq-client-stop".into())
                .spawn(move || {
                    drop(jobs);
                    if let Some(thread) = thread {
                        let _ = thread.join();
                    }
                });
            return;
        }
        self.stop();
    }
}

/// The result of a call that runs on the client's I/O thread: await it (the future is `Send`
/// and works on any runtime) or block on it with [`Pending::wait`].
#[must_use = "a Pending does nothing unless awaited or waited on"]
pub struct Pending<T: 'static> {
    rx: flume::Receiver<Result<T>>,
    future: Option<flume::r#async::RecvFut<'static, Result<T>>>,
}

impl<T: 'static> std::fmt::Debug for Pending<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

impl<T: 'static> Pending<T> {
    const fn new(rx: flume::Receiver<Result<T>>) -> Self {
        Self { rx, future: None }
    }

    /// A call that failed before reaching the I/O thread.
    pub(crate) fn failed(error: ClientError) -> Self {
        let (tx, rx) = flume::bounded(1);
        let _ = tx.send(Err(error));
        Self::new(rx)
    }

    /// Blocks the calling thread until the result arrives. Refused on the client's own I/O
    /// thread (for example inside a consumer's async callback), where it would deadlock.
    pub fn wait(self) -> Result<T> {
        if ON_IO_THREAD.with(std::cell::Cell::get) {
            return Err(ClientError::InvalidArgument(
                "blocking wait on the client I/O thread would deadlock; await instead".into(),
            ));
        }
        self.rx.recv().unwrap_or(Err(ClientError::Shutdown))
    }
}

impl<T: 'static> Future for Pending<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let rx = &this.rx;
        let future = this
            .future
            .get_or_insert_with(|| rx.clone().into_recv_async());
        Pin::new(future)
            .poll(cx)
            .map(|received| received.unwrap_or(Err(ClientError::Shutdown)))
    }
}

impl<T: 'static> Unpin for Pending<T> {}

/// What the client announces in heartbeats, and how the I/O thread reaches its consumers.
#[derive(Debug, Default)]
pub(crate) struct Groups {
    /// Producer groups.
    pub producers: BTreeSet<String>,
    /// Consumer groups and their subscriptions.
    pub consumers: BTreeMap<String, ConsumerData>,
    /// Per consumer group: woken when a broker says the group's membership changed.
    pub rebalance: HashMap<String, Rc<Notify>>,
}

/// The I/O thread's state: everything the client's tasks share. Lives on that thread only.
#[derive(Debug)]
pub(crate) struct IoContext {
    pub config: ClientConfig,
    pub client_id: String,
    pub pool: ConnectionPool,
    pub routes: RouteTable,
    pub groups: RefCell<Groups>,
    /// Notified when the instance stops, so background loops end.
    pub stopping: Notify,
    pub stopped: std::cell::Cell<bool>,
}

impl IoContext {
    /// The default request timeout.
    pub fn timeout(&self) -> Duration {
        self.config.request_timeout
    }

    /// Sends a heartbeat with every group of this client to every broker it knows (masters
    /// and slaves: consumers may read from slaves). Failures are logged; the next round retries.
    pub async fn heartbeat_all(&self) {
        let data = {
            let groups = self.groups.borrow();
            if groups.producers.is_empty() && groups.consumers.is_empty() {
                return;
            }
            HeartbeatData {
                client_id: self.client_id.clone(),
                producer_data_set: groups
                    .producers
                    .iter()
                    .map(|group| ProducerData {
                        group_name: group.clone(),
                    })
                    .collect(),
                consumer_data_set: groups.consumers.values().cloned().collect(),
                ..HeartbeatData::default()
            }
        };
        let body = body::to_vec(&data);
        for broker in self.routes.brokers() {
            for addr in broker.broker_addrs.values() {
                let answer = self
                    .pool
                    .request(addr, RequestCode::HeartBeat, &(), &body, self.timeout())
                    .await
                    .and_then(|answer| expect_success(answer, addr, RequestCode::HeartBeat));
                if let Err(error) = answer {
                    tracing::debug!(broker = %addr, %error, "heartbeat failed");
                }
            }
        }
    }

    /// Tells every known broker that `group` of this client is gone (best effort).
    pub async fn unregister(&self, producer_group: Option<&str>, consumer_group: Option<&str>) {
        let header = UnregisterClientRequestHeader {
            client_id: &self.client_id,
            producer_group,
            consumer_group,
        };
        for broker in self.routes.brokers() {
            for addr in broker.broker_addrs.values() {
                let result = self
                    .pool
                    .request(
                        addr,
                        RequestCode::UnregisterClient,
                        &header,
                        &[],
                        self.timeout(),
                    )
                    .await;
                if let Err(error) = result {
                    tracing::debug!(broker = %addr, %error, "unregister failed");
                }
            }
        }
    }

    /// Sleeps `period` or until the instance stops; false once stopping.
    pub async fn tick(&self, period: Duration) -> bool {
        if self.stopped.get() {
            return false;
        }
        self.stopping.wait_until(Instant::now() + period).await;
        if self.stopped.get() {
            // Let the other loops see it too.
            self.stopping.notify();
            return false;
        }
        true
    }
}

/// Answers requests brokers send to the client.
struct Inbound {
    ctx: RefCell<Weak<IoContext>>,
}

impl InboundHandler for Inbound {
    fn on_request(&self, connection: &Rc<Connection>, request: Command) {
        let Some(ctx) = self.ctx.borrow().upgrade() else {
            return;
        };
        match request.request_code() {
            RequestCode::NotifyConsumerIdsChanged => {
                match request.header::<NotifyConsumerIdsChangedRequestHeader<'_>>() {
                    Ok(header) => {
                        tracing::debug!(group = header.consumer_group, "consumer ids changed");
                        if let Some(notify) =
                            ctx.groups.borrow().rebalance.get(header.consumer_group)
                        {
                            notify.notify();
                        }
                    }
                    Err(error) => {
                        tracing::warn!(broker = %connection.addr(), %error, "bad NOTIFY_CONSUMER_IDS_CHANGED");
                    }
                }
            }
            RequestCode::CheckTransactionState => check_transaction_state(connection, &request),
            code if request.is_oneway() => {
                tracing::debug!(broker = %connection.addr(), %code, "oneway request ignored");
            }
            code => {
                let remark = format!(
                    "request code {} is not supported by ringmq-client",
                    code.as_i32()
                );
                connection.respond(
                    &request,
                    ResponseCode::RequestCodeNotSupported,
                    Some(&remark),
                    &(),
                    &[],
                );
            }
        }
    }
}

/// This client has no transactional producer (the broker stores no half messages), so it
/// answers every check with state "unknown" (TRANSACTION_NOT_TYPE), which leaves the broker to
/// decide, and logs the check.
fn check_transaction_state(connection: &Rc<Connection>, request: &Command) {
    let header = match request.header::<CheckTransactionStateRequestHeader<'_>>() {
        Ok(header) => header,
        Err(error) => {
            tracing::warn!(broker = %connection.addr(), %error, "bad CHECK_TRANSACTION_STATE");
            return;
        }
    };
    tracing::warn!(
        broker = %connection.addr(),
        msg_id = header.msg_id.unwrap_or_default(),
        "transaction state check for a client without a transaction listener; answering unknown"
    );
    let end = EndTransactionRequestHeader {
        producer_group: "",
        tran_state_table_offset: header.tran_state_table_offset,
        commit_log_offset: header.commit_log_offset,
        commit_or_rollback: transaction_state::UNKNOWN,
        from_transaction_check: Some(true),
        msg_id: header.msg_id.unwrap_or_default(),
        transaction_id: header.transaction_id,
    };
    if let Err(error) = connection.oneway(RequestCode::EndTransaction, &end, &[]) {
        tracing::debug!(%error, "END_TRANSACTION not sent");
    }
}

/// The I/O thread: a compio runtime that runs jobs until every handle is gone.
fn io_thread(
    id: u64,
    config: ClientConfig,
    client_id: String,
    jobs: &flume::Receiver<Job>,
    ready: &flume::Sender<Result<()>>,
) {
    ON_IO_THREAD.with(|flag| flag.set(true));
    let runtime = match compio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = ready.send(Err(ClientError::InvalidArgument(format!(
                "cannot start the client runtime: {error}"
            ))));
            return;
        }
    };
    runtime.block_on(async {
        let inbound = Rc::new(Inbound {
            ctx: RefCell::new(Weak::new()),
        });
        let options = ConnectionOptions {
            connect_timeout: config.connect_timeout,
            max_frame_bytes: config.max_frame_bytes,
            serialize_type: config.serialize_type,
            inbound: Some(Rc::clone(&inbound) as Rc<dyn InboundHandler>),
        };
        let ctx = Rc::new(IoContext {
            pool: ConnectionPool::new(options, config.reconnect_backoff),
            routes: RouteTable::new(config.namesrv_addrs.clone()),
            config,
            client_id,
            groups: RefCell::new(Groups::default()),
            stopping: Notify::default(),
            stopped: std::cell::Cell::new(false),
        });
        *inbound.ctx.borrow_mut() = Rc::downgrade(&ctx);
        LOCAL_CONTEXT.with(|local| *local.borrow_mut() = Some((id, Rc::clone(&ctx))));
        let _ = ready.send(Ok(()));

        let refresher = compio::runtime::spawn(refresh_loop(Rc::clone(&ctx)));
        let heartbeater = compio::runtime::spawn(heartbeat_loop(Rc::clone(&ctx)));
        while let Ok(job) = jobs.recv_async().await {
            job(&ctx);
            // Run the jobs already queued without a wake-up each (a burst of sends arrives
            // faster than the runtime parks); bounded so the tasks they spawn get to run.
            for _ in 0..MAX_JOBS_PER_WAKEUP {
                let Ok(job) = jobs.try_recv() else { break };
                job(&ctx);
            }
        }
        ctx.stopped.set(true);
        ctx.stopping.notify();
        drop((refresher, heartbeater));
        let (producers, consumers) = {
            let groups = ctx.groups.borrow();
            let consumers: Vec<String> = groups.consumers.keys().cloned().collect();
            (
                groups.producers.iter().cloned().collect::<Vec<_>>(),
                consumers,
            )
        };
        for group in &producers {
            ctx.unregister(Some(group), None).await;
        }
        for group in &consumers {
            ctx.unregister(None, Some(group)).await;
        }
        ctx.pool.close_all("client shut down");
        LOCAL_CONTEXT.with(|local| local.borrow_mut().take());
    });
}

/// Re-fetches cached routes every `route_refresh_interval`.
async fn refresh_loop(ctx: Rc<IoContext>) {
    while ctx.tick(ctx.config.route_refresh_interval).await {
        ctx.routes.refresh_all(&ctx.pool, ctx.timeout()).await;
    }
}

/// Heartbeats every known broker every `heartbeat_interval`.
async fn heartbeat_loop(ctx: Rc<IoContext>) {
    while ctx.tick(ctx.config.heartbeat_interval).await {
        ctx.heartbeat_all().await;
    }
}

/// The address this host uses to reach `namesrv` (no packet is sent: a UDP "connect" only
/// picks the route), for the client id. Falls back to loopback.
fn local_ip(namesrv: &str) -> String {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|socket| {
            socket.connect(namesrv)?;
            socket.local_addr()
        })
        .map_or_else(|_| "127.0.0.1".to_owned(), |addr| addr.ip().to_string())
}
