//! Durable Raft storage for the controller: the log (with vote and commit mark) and the state
//! machine, each in one JSON file in the controller's directory.
//!
//! The controller's log is small and slow-moving (a registration per broker start, an election
//! per failover, a sync-state-set change when a slave falls behind or catches up; heartbeats are
//! never logged), so every change rewrites its file whole: write `<file>.tmp`, fsync, rename,
//! fsync the directory. A crash leaves the old or the new file, never a mix. Snapshots are taken
//! every [`SNAPSHOT_EVERY`] entries and saved the same way before the log is purged, so the log
//! file stays bounded and a restart rebuilds the state from the snapshot plus the log.
//!
//! Ordering: openraft serializes log writes; each write is durable before `save_vote` returns and
//! before `append` reports its entries flushed, which is what Raft's safety needs.

use std::{
    collections::BTreeMap,
    fmt::Debug,
    io::{self, Cursor, Write},
    ops::RangeBounds,
    path::{Path, PathBuf},
    sync::Arc,
};

use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership, Vote,
    storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::sync::{Mutex, RwLock};

use super::{Node, NodeId, Reply, TypeConfig};
use crate::state::{ControllerState, Outcome};

/// Entries between snapshots.
pub const SNAPSHOT_EVERY: u64 = 500;

type StoreResult<T> = Result<T, StorageError<NodeId>>;

/// Writes `value` as JSON to `path` so that a crash leaves the previous or the new document.
fn write_durably<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads a JSON document written by [`write_durably`]; `None` when there is none.
fn read_document<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// What the log file holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LogData {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
}

/// The Raft log, shared by openraft's writer and its readers (clones share the data).
#[derive(Debug, Clone)]
pub struct LogStore {
    data: Arc<Mutex<LogData>>,
    path: Arc<PathBuf>,
}

impl LogStore {
    /// Opens `<dir>/raft-log.json`, or starts empty.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let path = dir.join("raft-log.json");
        let data = read_document(&path)?.unwrap_or_default();
        Ok(Self {
            data: Arc::new(Mutex::new(data)),
            path: Arc::new(path),
        })
    }

    /// Writes the whole log file, durably. Called with the log's lock held (writes stay in
    /// order); the fsyncs run without stalling the runtime's other tasks.
    fn save(&self, data: &LogData) -> io::Result<()> {
        tokio::task::block_in_place(|| write_durably(&self.path, data))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry<TypeConfig>>> {
        let data = self.data.lock().await;
        Ok(data
            .entries
            .range(range)
            .map(|(_, entry)| entry.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StoreResult<LogState<TypeConfig>> {
        let data = self.data.lock().await;
        let last = data
            .entries
            .values()
            .next_back()
            .map(|entry| entry.log_id)
            .or(data.last_purged);
        Ok(LogState {
            last_purged_log_id: data.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StoreResult<()> {
        let mut data = self.data.lock().await;
        data.vote = Some(*vote);
        self.save(&data)
            .map_err(|err| StorageIOError::write_vote(&err).into())
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<NodeId>>> {
        Ok(self.data.lock().await.vote)
    }

    /// Kept in memory and saved with the next vote or log write, not fsynced on its own: the
    /// mark only spares a restart re-applying entries the leader will commit again anyway.
    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StoreResult<()> {
        self.data.lock().await.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<NodeId>>> {
        Ok(self.data.lock().await.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut data = self.data.lock().await;
        for entry in entries {
            data.entries.insert(entry.log_id.index, entry);
        }
        // Readable at once; reported flushed only once on disk.
        callback.log_io_completed(self.save(&data));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        let mut data = self.data.lock().await;
        data.entries.split_off(&log_id.index);
        self.save(&data)
            .map_err(|err| StorageIOError::write_logs(&err).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        let mut data = self.data.lock().await;
        data.last_purged = Some(log_id);
        data.entries = data.entries.split_off(&(log_id.index + 1));
        self.save(&data)
            .map_err(|err| StorageIOError::write_logs(&err).into())
    }
}

/// A snapshot as saved: the state and where it stands in the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedSnapshot {
    meta: SnapshotMeta<NodeId, Node>,
    state: ControllerState,
}

/// The state machine's data: the table, how far it applied, and the last snapshot.
#[derive(Debug, Default)]
struct MachineData {
    state: ControllerState,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Node>,
    snapshot: Option<SavedSnapshot>,
}

/// The controller's state machine. Clones share the data: the server reads the table through
/// one (after a linearizable barrier when it must be current).
#[derive(Debug, Clone)]
pub struct StateMachine {
    data: Arc<RwLock<MachineData>>,
    snapshot_path: Arc<PathBuf>,
}

impl StateMachine {
    /// Opens `<dir>/raft-snapshot.json` when there is one; openraft applies the log after it.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let snapshot_path = dir.join("raft-snapshot.json");
        let mut data = MachineData::default();
        if let Some(saved) = read_document::<SavedSnapshot>(&snapshot_path)? {
            data.state = saved.state.clone();
            data.last_applied = saved.meta.last_log_id;
            data.membership = saved.meta.last_membership.clone();
            data.snapshot = Some(saved);
        }
        Ok(Self {
            data: Arc::new(RwLock::new(data)),
            snapshot_path: Arc::new(snapshot_path),
        })
    }

    /// Reads the table without copying it.
    pub async fn with_state<T>(&self, read: impl FnOnce(&ControllerState) -> T) -> T {
        read(&self.data.read().await.state)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StoreResult<Snapshot<TypeConfig>> {
        let mut data = self.data.write().await;
        let meta = SnapshotMeta {
            last_log_id: data.last_applied,
            last_membership: data.membership.clone(),
            snapshot_id: data.last_applied.map_or_else(
                || "empty".to_owned(),
                |id| format!("{}-{}", id.leader_id, id.index),
            ),
        };
        let saved = SavedSnapshot {
            meta: meta.clone(),
            state: data.state.clone(),
        };
        tokio::task::block_in_place(|| write_durably(&self.snapshot_path, &saved))
            .map_err(|err| StorageIOError::write_snapshot(Some(meta.signature()), &err))?;
        let bytes = serde_json::to_vec(&saved.state)
            .map_err(|err| StorageIOError::read_state_machine(&err))?;
        data.snapshot = Some(saved);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StoreResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>)> {
        let data = self.data.read().await;
        Ok((data.last_applied, data.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StoreResult<Vec<Reply>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut data = self.data.write().await;
        let mut replies = Vec::new();
        for entry in entries {
            data.last_applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => Reply(None),
                EntryPayload::Normal(command) => {
                    let outcome: Outcome = data.state.apply(&command);
                    Reply(Some(outcome))
                }
                EntryPayload::Membership(membership) => {
                    data.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Reply(None)
                }
            };
            replies.push(reply);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StoreResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StoreResult<()> {
        let state: ControllerState = serde_json::from_slice(snapshot.get_ref())
            .map_err(|err| StorageIOError::read_snapshot(Some(meta.signature()), &err))?;
        let saved = SavedSnapshot {
            meta: meta.clone(),
            state,
        };
        // The lock first: snapshots are built on another task, and the file must end up with
        // whichever of the two the machine holds last.
        let mut data = self.data.write().await;
        tokio::task::block_in_place(|| write_durably(&self.snapshot_path, &saved))
            .map_err(|err| StorageIOError::write_snapshot(Some(meta.signature()), &err))?;
        data.state = saved.state.clone();
        data.last_applied = meta.last_log_id;
        data.membership = meta.last_membership.clone();
        data.snapshot = Some(saved);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StoreResult<Option<Snapshot<TypeConfig>>> {
        let data = self.data.read().await;
        let Some(saved) = &data.snapshot else {
            return Ok(None);
        };
        let bytes = serde_json::to_vec(&saved.state)
            .map_err(|err| StorageIOError::read_state_machine(&err))?;
        Ok(Some(Snapshot {
            meta: saved.meta.clone(),
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
