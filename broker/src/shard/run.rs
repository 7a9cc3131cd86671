//! A shard's thread: builds its runtime, opens its store, starts its tasks (accept, offset
//! persister, client scan, gauges, HA), then serves its inbox until the broker closes it
//! (docs/architecture.md §3). The state those tasks share is `super::context::ShardCtx`.

use std::{
    collections::HashSet,
    net::TcpListener as StdListener,
    path::{Path, PathBuf},
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use compio::net::TcpListener;
use ringmq_storage::{
    LogWatch, MessageStore, StoreConfig,
    io::UringStorage,
    metadata::{ConsumerOffsetTable, MetadataFile},
};

use super::{connection_io, context::ShardCtx};
use crate::{
    config::{BrokerRole, IoDriver},
    error::ShardStartError,
    ha::{shard_side, slave::ReplicaCommand},
    handler,
    messages::{ShardMessage, TopicChange},
    metadata,
    shared::BrokerShared,
};

/// How often consumer offsets are saved (RocketMQ `flushConsumerOffsetInterval`: 5 s).
const OFFSET_PERSIST_INTERVAL: Duration = Duration::from_secs(5);
/// A shard's commits made while it serves as a slave, kept until the master takes them: the
/// shape of `consumerOffset.json`.
const SLAVE_COMMITS_FILE: &str = "slaveCommits.json";
/// How often silent clients are looked for (RocketMQ: 10 s).
const CLIENT_SCAN_INTERVAL: Duration = Duration::from_secs(10);
/// How long a graceful stop waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What a shard thread is started with.
pub(crate) struct ShardSetup {
    pub id: usize,
    pub shared: Arc<BrokerShared>,
    pub inbox: flume::Receiver<ShardMessage>,
    pub listeners: Vec<StdListener>,
    /// Shard 0 only: the topic table's change queue (it is the table's one writer).
    pub topic_changes: Option<flume::Receiver<TopicChange>>,
    pub core: Option<usize>,
    /// Slaves: the replica commands of this shard's HA thread.
    pub replica_commands: Option<flume::Receiver<ReplicaCommand>>,
    /// Where the shard reports it serves, with its log's marks (for the HA threads).
    pub ready: std::sync::mpsc::Sender<Result<Arc<LogWatch>, ShardStartError>>,
    /// Where the shard reports that its connections drained after [`ShardMessage::Stop`].
    pub drained: std::sync::mpsc::Sender<usize>,
}

/// The shard thread's body: builds the runtime, opens the store, serves until told to stop.
pub(crate) fn run(setup: ShardSetup) {
    let ready = setup.ready.clone();
    let id = setup.id;
    let runtime = match build_runtime(setup.shared.config.io_driver, setup.core) {
        Ok(runtime) => runtime,
        Err(err) => {
            let _ = ready.send(Err(ShardStartError::Runtime(err)));
            return;
        }
    };
    if id == 0 {
        tracing::info!(driver = ?runtime.driver_type(), "I/O driver");
    }
    runtime.block_on(async move {
        if let Err(reason) = serve(setup).await {
            let _ = ready.send(Err(reason));
        }
    });
}

fn build_runtime(
    driver: IoDriver,
    core: Option<usize>,
) -> std::io::Result<compio::runtime::Runtime> {
    let mut proactor = compio::driver::ProactorBuilder::new();
    match driver {
        IoDriver::Auto => {}
        IoDriver::IoUring => {
            proactor.driver_type(compio::driver::DriverType::IoUring);
        }
        IoDriver::Poll => {
            proactor.driver_type(compio::driver::DriverType::Poll);
        }
    }
    let mut builder = compio::runtime::RuntimeBuilder::new();
    builder.with_proactor(proactor);
    if let Some(core) = core {
        builder.thread_affinity(HashSet::from([core]));
    }
    builder.build()
}

pub(crate) fn store_config(shared: &BrokerShared, id: usize) -> StoreConfig {
    let config = &shared.config;
    let mut store = StoreConfig::new(shard_dir(&config.store_dir, id));
    store.shard = id as u16;
    store.segment_bytes = config.segment_bytes;
    store.flush_mode = config.flush_mode;
    store.flush_interval = Duration::from_millis(config.flush_interval_ms);
    store.retention = Duration::from_secs(config.retention_hours * 3600);
    store.high_watermark_percent = config.high_watermark_percent;
    store.hard_watermark_percent = store
        .hard_watermark_percent
        .max(config.high_watermark_percent);
    store
}

/// Directory of shard `id`'s store.
pub(crate) fn shard_dir(store_dir: &Path, id: usize) -> PathBuf {
    store_dir.join(format!("shard-{id}"))
}

#[allow(clippy::too_many_lines)] // start, serve, drain, stop: one sequence read top to bottom
async fn serve(setup: ShardSetup) -> Result<(), ShardStartError> {
    let ShardSetup {
        id,
        shared,
        inbox,
        listeners,
        topic_changes,
        core: _,
        replica_commands,
        ready,
        drained,
    } = setup;
    let storage = if shared.config.inline_writes {
        UringStorage::inline_writes()
    } else {
        UringStorage::new()
    };
    let store = MessageStore::open(storage, store_config(&shared, id))
        .await
        .map_err(ShardStartError::OpenStore)?;
    let offsets_path = shard_dir(&shared.config.store_dir, id).join("consumerOffset.json");
    let offsets = ConsumerOffsetTable::open(UringStorage::new(), &offsets_path)
        .await
        .map_err(ShardStartError::LoadOffsets)?;
    let slave_commits_path = shard_dir(&shared.config.store_dir, id).join(SLAVE_COMMITS_FILE);
    let slave_commits = ConsumerOffsetTable::open(UringStorage::new(), &slave_commits_path)
        .await
        .map_err(ShardStartError::LoadOffsets)?;
    let mut metadata_task = None;
    if let Some(changes) = topic_changes {
        let table = metadata::open_topics(&shared).await?;
        metadata_task = Some(compio::runtime::spawn(metadata::serve_topic_changes(
            Arc::clone(&shared),
            table,
            changes,
        )));
    }
    let mut tasks = Vec::new();
    let ctx = Rc::new(ShardCtx::new(id, shared, store, offsets, slave_commits));
    if let Some(commands) = replica_commands {
        tasks.push(compio::runtime::spawn(shard_side::serve_replica(
            Rc::clone(&ctx),
            commands,
        )));
    }
    if ctx.shared.config.broker_role == BrokerRole::SyncMaster {
        tasks.push(compio::runtime::spawn(shard_side::recheck_waiters(
            Rc::clone(&ctx),
        )));
    }
    for listener in listeners {
        let listener = TcpListener::from_std(listener).map_err(ShardStartError::Listener)?;
        tasks.push(compio::runtime::spawn(accept_loop(
            Rc::clone(&ctx),
            listener,
        )));
    }
    let persister = compio::runtime::spawn(persist_offsets_loop(
        Rc::clone(&ctx),
        offsets_path.clone(),
        slave_commits_path.clone(),
    ));
    // Runs until Close (not in `tasks`, which Stop drops): draining needs the hand-offs.
    let handoff = {
        let ctx = Rc::clone(&ctx);
        compio::runtime::spawn(async move { ctx.handoff.run(&ctx.shared.inboxes).await })
    };
    if id == 0 {
        tasks.push(compio::runtime::spawn(client_scan_loop(Rc::clone(&ctx))));
    }
    tasks.push(compio::runtime::spawn(gauges_loop(Rc::clone(&ctx))));
    let _ = ready.send(Ok(ctx.store.watch()));

    // Serve the inbox until Close. Stop only quiesces: this shard stops accepting and reading,
    // but keeps answering requests other shards forward until every shard has drained.
    let mut drain_watch = None;
    while let Ok(message) = inbox.recv_async().await {
        match message {
            ShardMessage::Handoff(batch) => {
                for (connection, frame) in batch.deliveries {
                    ctx.deliver_local(connection, frame);
                }
                for (command, origin) in batch.requests {
                    handler::spawn_request(&ctx, command, origin);
                }
            }
            ShardMessage::Notify { connection, group } => {
                ctx.notify_consumer_ids_changed(connection, &group);
            }
            ShardMessage::Append { record, reply } => {
                compio::runtime::spawn(handler::append_owned(Rc::clone(&ctx), record, reply))
                    .detach();
            }
            ShardMessage::QueryKey { query, reply } => {
                compio::runtime::spawn(handler::query_key_here(Rc::clone(&ctx), query, reply))
                    .detach();
            }
            ShardMessage::ReplicaAcked => shard_side::replica_acked(&ctx),
            ShardMessage::CollectOffsets { reply } => {
                let _ = reply.send(ctx.offsets.borrow().to_body());
            }
            ShardMessage::CollectSlaveCommits { reply } => {
                let _ = reply.send(ctx.slave_commits.borrow().to_body());
            }
            ShardMessage::ApplyMasterOffsets {
                offsets,
                handed,
                reply,
            } => {
                let _ = reply.send(ctx.apply_master_offsets(&offsets, &handed));
            }
            ShardMessage::Stop => {
                ctx.begin_stop();
                tasks.clear();
                drain_watch = Some(compio::runtime::spawn(report_drained(
                    Rc::clone(&ctx),
                    drained.clone(),
                )));
            }
            ShardMessage::Close => break,
        }
    }
    drop(drain_watch);
    drop(persister);
    drop(handoff);
    if let Some(task) = metadata_task {
        drop(task);
    }
    let mut file = MetadataFile::new(UringStorage::new(), &offsets_path);
    let body = ctx.offsets.borrow().to_body();
    if let Err(err) = file.store(&body).await {
        tracing::error!(shard = id, %err, "cannot save consumer offsets at shutdown");
    }
    if ctx.take_slave_commits_dirty() {
        let mut file = MetadataFile::new(UringStorage::new(), &slave_commits_path);
        let body = ctx.slave_commits.borrow().to_body();
        if let Err(err) = file.store(&body).await {
            tracing::error!(shard = id, %err, "cannot save slave commits at shutdown");
        }
    }
    if let Err(err) = ctx.store.clone().close().await {
        tracing::error!(shard = id, %err, "store did not close cleanly");
    }
    Ok(())
}

/// Reports (once) when this shard's connections have nothing in flight, or at the deadline.
async fn report_drained(ctx: Rc<ShardCtx>, drained: std::sync::mpsc::Sender<usize>) {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while Instant::now() < deadline && ctx.connections.borrow().values().any(|c| c.inflight() > 0) {
        compio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = drained.send(ctx.id);
}

async fn accept_loop(ctx: Rc<ShardCtx>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if ctx.stopping() {
                    return;
                }
                compio::runtime::spawn(connection_io::serve(Rc::clone(&ctx), stream, peer))
                    .detach();
            }
            Err(err) => {
                // EMFILE and friends: keep serving the connections we have.
                tracing::warn!(%err, "accept failed");
                compio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Saves the consumer offsets (and a slave's commits for its master) every 5 s when they
/// changed. The file handles belong to this task alone (the tables' own handles are never used
/// to save), and a table is only borrowed to snapshot it, never across the write.
async fn persist_offsets_loop(
    ctx: Rc<ShardCtx>,
    offsets_path: PathBuf,
    slave_commits_path: PathBuf,
) {
    let mut offsets_file = MetadataFile::new(UringStorage::new(), offsets_path);
    let mut slave_commits_file = MetadataFile::new(UringStorage::new(), slave_commits_path);
    loop {
        compio::time::sleep(OFFSET_PERSIST_INTERVAL).await;
        if ctx.take_offsets_dirty() {
            let body = ctx.offsets.borrow().to_body();
            if let Err(err) = offsets_file.store(&body).await {
                ctx.mark_offsets_dirty();
                tracing::error!(shard = ctx.id, %err, "cannot save consumer offsets; will retry");
            }
        }
        if ctx.take_slave_commits_dirty() {
            let body = ctx.slave_commits.borrow().to_body();
            if let Err(err) = slave_commits_file.store(&body).await {
                ctx.mark_slave_commits_dirty();
                tracing::error!(shard = ctx.id, %err, "cannot save slave commits; will retry");
            }
        }
    }
}

/// Drops producer and consumer connections silent past `channelExpiredTimeout` (shard 0 only).
async fn client_scan_loop(ctx: Rc<ShardCtx>) {
    let expiry = Duration::from_millis(ctx.shared.config.client_expiry_ms);
    let interval = CLIENT_SCAN_INTERVAL.min(expiry);
    loop {
        compio::time::sleep(interval).await;
        let expired = ctx
            .shared
            .with_clients(|clients| clients.expire(Instant::now(), expiry));
        for channel in expired {
            tracing::info!(
                shard = channel.shard,
                connection = channel.connection,
                "client silent past expiry; unregistered"
            );
        }
    }
}

/// Samples gauges that are cheaper to read than to maintain.
async fn gauges_loop(ctx: Rc<ShardCtx>) {
    loop {
        compio::time::sleep(Duration::from_millis(500)).await;
        let metrics = ctx.metrics();
        metrics.parked_pulls.set(ctx.longpoll.parked() as i64);
        ctx.store
            .drain_sync_latencies_us(|us| metrics.flush_latency.record_us(us));
        metrics
            .cross_shard_queue_depth
            .set(ctx.shared.inboxes[ctx.id].len() as i64);
        let lag = ctx.shared.replica_lag(ctx.id, ctx.store.watch().written());
        metrics.replica_slaves.set(lag.slaves as i64);
        metrics.replica_lag_bytes.set(lag.bytes as i64);
        metrics.replica_lag_ms.set(lag.ms as i64);
    }
}
