//! Replication work that must run on a shard, because the shard owns the store: a slave
//! shard's replica task (it writes what the HA thread received), and a SYNC_MASTER send
//! waiting for a slave to hold its bytes.

use std::{rc::Rc, task::Poll, time::Duration};

use ringmq_protocol::ResponseCode;

use super::slave::ReplicaCommand;
use crate::shard::context::ShardCtx;

/// A slave shard's replica task: applies the HA thread's commands in order. Frames are taken
/// one after another (each `replicate` returns once its chunks are queued for writing, so
/// writes still overlap).
pub(crate) async fn serve_replica(ctx: Rc<ShardCtx>, commands: flume::Receiver<ReplicaCommand>) {
    let _pull_waker = compio::runtime::spawn(wake_pulls_on_progress(Rc::clone(&ctx)));
    while let Ok(command) = commands.recv_async().await {
        match command {
            ReplicaCommand::Position { reply } => {
                let _ = reply.send((ctx.store.log_end(), ctx.store.is_pristine()));
            }
            ReplicaCommand::StartAt { position, reply } => {
                let result = ctx.store.start_at(position).await;
                let _ = reply.send(result);
            }
            ReplicaCommand::Data {
                position,
                bytes,
                refused,
            } => match ctx.store.replicate(position, bytes).await {
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(shard = ctx.id, position, %err, "replicated data refused");
                    let _ = refused.try_send(err);
                }
            },
        }
    }
}

/// SYNC_MASTER: waits until a slave holds everything below `end`. `Err` carries the code
/// the producer gets (docs/protocol.md §8.4); the message is stored on the master either way.
pub(crate) async fn wait_for_slave(ctx: &ShardCtx, end: u64) -> Result<(), ResponseCode> {
    let config = &ctx.shared.config;
    let replicas = &ctx.shared.replicas[ctx.id];
    if replicas.connected() == 0 {
        return Err(ResponseCode::SlaveNotAvailable);
    }
    if replicas.acked() >= end {
        return Ok(());
    }
    let written = ctx.store.watch().written();
    if replicas.any_reported()
        && written.saturating_sub(replicas.acked()) > config.ha_slave_fallbehind_max_bytes
    {
        return Err(ResponseCode::SlaveNotAvailable);
    }
    replicas.start_waiting();
    // Registered again only when woken (the wake removed the entry), so a send leaves at most
    // one entry behind. Wakes that get lost (a full inbox) are made up by `recheck_waiters`.
    let wait = std::future::poll_fn(|cx| {
        // `start_waiting` came first: an acknowledgement after this check queues a wake.
        if replicas.acked() >= end {
            return Poll::Ready(Ok(()));
        }
        if replicas.connected() == 0 {
            return Poll::Ready(Err(ResponseCode::SlaveNotAvailable));
        }
        ctx.slave_waiters.register(end, cx.waker().clone());
        Poll::Pending
    });
    let outcome = compio::time::timeout(Duration::from_millis(config.slave_timeout_ms), wait)
        .await
        .unwrap_or(Err(ResponseCode::FlushSlaveTimeout));
    replicas.stop_waiting();
    outcome
}

/// How often a master shard re-checks its waiting SYNC_MASTER sends without being woken.
const RECHECK: Duration = Duration::from_millis(50);

/// A master shard's safety net for SYNC_MASTER waits: the HA threads' wake message can be
/// dropped when the shard's inbox is full, so while sends wait, the shard looks at the slaves'
/// mark itself every [`RECHECK`].
pub(crate) async fn recheck_waiters(ctx: Rc<ShardCtx>) {
    loop {
        compio::time::sleep(RECHECK).await;
        if ctx.shared.replicas[ctx.id].waiting() > 0 {
            replica_acked(&ctx);
        }
    }
}

/// A slave shard's watch over what readers can see: parked pulls are woken whenever replicated
/// bytes become readable (the replica task cannot tell which queues a frame touched without
/// parsing it again, and a pull may park between a frame's queuing and its write).
pub(crate) async fn wake_pulls_on_progress(ctx: Rc<ShardCtx>) {
    let mut visible = ctx.store.physical_range().1;
    loop {
        if ctx.store.wait_acknowledged(visible + 1).await.is_err() {
            return;
        }
        visible = ctx.store.physical_range().1;
        ctx.longpoll.arrived_anywhere();
    }
}

/// The HA threads say a slave holds more: wake the sends it covers.
pub(crate) fn replica_acked(ctx: &ShardCtx) {
    let replicas = &ctx.shared.replicas[ctx.id];
    replicas.wake_taken();
    if replicas.connected() == 0 {
        ctx.slave_waiters.wake_all();
    } else {
        ctx.slave_waiters.wake_up_to(replicas.acked());
    }
}
