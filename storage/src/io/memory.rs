//! The in-memory, fault-injecting twin of [`UringStorage`](super::UringStorage), for
//! crash-consistency tests of everything above the seam.
//!
//! # Model
//!
//! Every file keeps two images and the log that leads from one to the other:
//!
//! - `durable`: what a power loss at this instant is guaranteed to leave, i.e. the contents as of
//!   the last successful [`StorageFile::sync_data`];
//! - `current`: what reads see (the page cache);
//! - `pending`: the ordered write / truncate / allocate operations issued since then.
//!
//! Invariant: replaying `pending` over `durable` gives `current`, except after a failed sync,
//! which (like Linux since the 2018 "fsyncgate" discussion) drops the failed operations from
//! `pending` without making them durable: the data stays readable but is lost at the next crash
//! even if a later sync succeeds. The test helpers [`MemStorage::corrupt`] and
//! [`MemStorage::truncate_raw`] edit both images directly and can break the invariant too when
//! the file has unsynced operations.
//!
//! The namespace (create, rename, remove, directories) behaves like a metadata-journaling
//! filesystem that commits every change at once: it is durable as soon as the call returns, and
//! [`Storage::sync_dir`] only counts as an operation.
//!
//! # Faults
//!
//! Every call of a seam method is one operation on a global counter; [`FaultPlan`] turns chosen
//! operations into failures (a crash, a failed sync, a full disk, sporadic read or write errors),
//! and [`MemStorage::crash_image`] produces the files a power loss would leave. All randomness
//! comes from the plan's seed, so a failing test reproduces from its seed alone.
//!
//! Each async operation also yields to the executor once with probability 1/2 before it takes
//! effect, so concurrent tasks interleave the way they would on a real completion queue. Faults
//! are decided when the operation is called; its effect is applied when it completes, and an
//! operation that was in flight when the storage crashed fails without effect.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    fmt,
    future::Future,
    io,
    path::{Path, PathBuf},
    pin::Pin,
    rc::Rc,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};

use super::{DiskUsage, Storage, StorageFile};

/// `EIO` on Linux, spelled out so this file needs no libc.
const EIO: i32 = 5;
/// `ENOSPC` on Linux.
const ENOSPC: i32 = 28;
/// What [`Storage::disk_usage`] reports as the size of a filesystem without a capacity limit.
const UNLIMITED_CAPACITY_BYTES: u64 = 1 << 40;
/// Mixed into the seed for crash images so they do not replay the yield decisions' stream.
const CRASH_STREAM: u64 = 0x6372_6173_685f_696d;

/// Which faults a [`MemStorage`] injects. The default injects none.
///
/// Counts are 1-based and never reset: [`MemStorage::set_faults`] replaces the plan but the
/// operation, sync, read and write counters keep going. A period of `Some(0)` means never.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// Seeds the yield decisions and the torn-write choices of [`MemStorage::crash_image`].
    pub seed: u64,
    /// The operation with this number (and every later one) fails with "simulated crash" and
    /// changes nothing; the storage then reports [`MemStorage::has_crashed`].
    pub crash_after_ops: Option<u64>,
    /// The sync_data call with this number (counted across files) fails with `EIO` and the
    /// operations it covered never become durable.
    pub fail_sync_at: Option<u64>,
    /// Upper bound on the sum of all file lengths; growth beyond it fails with `ENOSPC`.
    pub capacity_bytes: Option<u64>,
    /// Every k-th write_all_at fails with `EIO` and writes nothing.
    pub write_error_every: Option<u64>,
    /// Every k-th read_exact_at fails with `EIO` and reads nothing.
    pub read_error_every: Option<u64>,
}

/// What a power loss does to the data that was not yet synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Every unsynced operation is lost: each file is exactly its durable image.
    LoseUnsynced,
    /// Each file keeps a seeded-random prefix of its unsynced operations: some whole operations,
    /// then possibly the first bytes of the next write (a torn write).
    TornPrefix,
}

/// splitmix64: tiny, fast and good enough to pick interleavings and tear points.
#[derive(Debug, Clone, Copy)]
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..bound` (`bound > 0`); the modulo bias is irrelevant at test sizes.
    fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
}

/// A mutating file operation that has not been synced yet.
#[derive(Debug, Clone)]
enum PendingOp {
    Write { pos: usize, data: Bytes },
    Truncate { len: usize },
    Allocate { len: usize },
}

impl PendingOp {
    fn apply(&self, contents: &mut Vec<u8>) {
        match self {
            Self::Write { pos, data } => write_into(contents, *pos, data),
            Self::Truncate { len } => contents.resize(*len, 0),
            Self::Allocate { len } => {
                if contents.len() < *len {
                    contents.resize(*len, 0);
                }
            }
        }
    }
}

/// Writes `data` at `pos`, filling any gap past the end with zeros (a sparse hole reads as zeros).
/// The caller has checked that `pos + data.len()` does not overflow.
fn write_into(contents: &mut Vec<u8>, pos: usize, data: &[u8]) {
    let end = pos + data.len();
    if contents.len() < end {
        contents.resize(end, 0);
    }
    contents[pos..end].copy_from_slice(data);
}

/// One file (an inode): shared by the namespace entry and every open handle, so a handle keeps
/// working after a rename or a remove, like a file descriptor.
struct FileNode {
    /// Contents as of the last successful sync.
    durable: Vec<u8>,
    /// Contents that reads see.
    current: Vec<u8>,
    /// Unsynced operations, oldest first.
    pending: Vec<PendingOp>,
    /// How many operations have ever left the front of `pending` (synced or lost), so that a
    /// sync can name the operations issued before it even when another sync finished meanwhile.
    retired_ops: u64,
}

impl FileNode {
    fn with_contents(contents: Vec<u8>) -> Self {
        Self {
            durable: contents.clone(),
            current: contents,
            pending: Vec::new(),
            retired_ops: 0,
        }
    }

    /// The sequence number one past the newest pending operation.
    fn issued_ops(&self) -> u64 {
        self.retired_ops + self.pending.len() as u64
    }

    /// The durable image plus a random prefix of the unsynced operations.
    fn torn_image(&self, rng: &mut SplitMix64) -> Vec<u8> {
        let mut contents = self.durable.clone();
        let whole_ops = rng.below(self.pending.len() as u64 + 1) as usize;
        for op in &self.pending[..whole_ops] {
            op.apply(&mut contents);
        }
        if let Some(PendingOp::Write { pos, data }) = self.pending.get(whole_ops) {
            if !data.is_empty() {
                let kept_bytes = rng.below(data.len() as u64) as usize;
                if kept_bytes > 0 {
                    write_into(&mut contents, *pos, &data[..kept_bytes]);
                }
            }
        }
        contents
    }
}

impl fmt::Debug for FileNode {
    // File contents can be megabytes; show their sizes only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileNode")
            .field("durable_len", &self.durable.len())
            .field("current_len", &self.current.len())
            .field("pending_ops", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// Which fault counter an operation advances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Read,
    Write,
    Sync,
    Other,
}

/// The verdict on an operation at the moment it is called.
#[derive(Debug, Clone, Copy)]
struct Admission {
    /// Yield to the executor once before taking effect.
    yield_first: bool,
    /// The plan makes this operation fail with `EIO`.
    injected_eio: bool,
}

/// State shared by all clones of a [`MemStorage`] and all its open files.
struct Shared {
    plan: FaultPlan,
    /// Seam calls so far, including failed ones.
    ops: u64,
    /// Sticky: set by the operation numbered `crash_after_ops`.
    crashed: bool,
    sync_calls: u64,
    write_calls: u64,
    read_calls: u64,
    yield_rng: SplitMix64,
    files: BTreeMap<PathBuf, Rc<RefCell<FileNode>>>,
    dirs: BTreeSet<PathBuf>,
}

impl Shared {
    fn new(
        plan: FaultPlan,
        files: BTreeMap<PathBuf, Rc<RefCell<FileNode>>>,
        dirs: BTreeSet<PathBuf>,
    ) -> Self {
        Self {
            plan,
            ops: 0,
            crashed: false,
            sync_calls: 0,
            write_calls: 0,
            read_calls: 0,
            yield_rng: SplitMix64::new(plan.seed),
            files,
            dirs,
        }
    }

    /// Counts one operation and decides its faults. `Err` when the storage has crashed.
    fn admit(&mut self, kind: OpKind) -> io::Result<Admission> {
        self.ops += 1;
        if self
            .plan
            .crash_after_ops
            .is_some_and(|limit| self.ops >= limit)
        {
            self.crashed = true;
        }
        if self.crashed {
            return Err(crash_error());
        }
        let injected_eio = match kind {
            OpKind::Sync => {
                self.sync_calls += 1;
                self.plan.fail_sync_at == Some(self.sync_calls)
            }
            OpKind::Write => {
                self.write_calls += 1;
                hits_period(self.plan.write_error_every, self.write_calls)
            }
            OpKind::Read => {
                self.read_calls += 1;
                hits_period(self.plan.read_error_every, self.read_calls)
            }
            OpKind::Other => false,
        };
        Ok(Admission {
            yield_first: self.yield_rng.coin(),
            injected_eio,
        })
    }

    /// Sum of the lengths of all files in the namespace. Removed files that are still open do
    /// not count (a simplification: Linux frees their blocks only at the last close).
    /// Borrows every node, so no node may be mutably borrowed while this runs.
    fn used_bytes(&self) -> u64 {
        self.files
            .values()
            .map(|node| node.borrow().current.len() as u64)
            .sum()
    }

    fn capacity_bytes(&self) -> u64 {
        self.plan.capacity_bytes.unwrap_or(UNLIMITED_CAPACITY_BYTES)
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("plan", &self.plan)
            .field("ops", &self.ops)
            .field("crashed", &self.crashed)
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .field("dirs", &self.dirs)
            .finish_non_exhaustive()
    }
}

fn hits_period(period: Option<u64>, count: u64) -> bool {
    period.is_some_and(|every| every != 0 && count % every == 0)
}

fn crash_error() -> io::Error {
    io::Error::other("simulated crash")
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(EIO)
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(ENOSPC)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file or directory", path.display()),
    )
}

fn file_offset(value: u64) -> io::Result<usize> {
    usize::try_from(value).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "file offset does not fit in memory",
        )
    })
}

/// Returns `Pending` exactly once, after waking its own waker, so the executor runs other ready
/// tasks before the caller continues. Runtime-agnostic on purpose.
#[derive(Debug, Default)]
struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// An in-memory filesystem that injects the faults of its [`FaultPlan`].
///
/// Clones share the same files and counters. Single-threaded (`Rc<RefCell<..>>`), like the shard
/// that uses it; no `RefCell` borrow is ever held across an `.await`.
#[derive(Debug, Clone)]
pub struct MemStorage {
    shared: Rc<RefCell<Shared>>,
}

impl Default for MemStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStorage {
    /// An empty filesystem without faults.
    pub fn new() -> Self {
        Self::with_faults(FaultPlan::default())
    }

    /// An empty filesystem that injects the faults of `plan`.
    pub fn with_faults(plan: FaultPlan) -> Self {
        Self::from_shared(Shared::new(plan, BTreeMap::new(), BTreeSet::new()))
    }

    fn from_shared(shared: Shared) -> Self {
        Self {
            shared: Rc::new(RefCell::new(shared)),
        }
    }

    /// Replaces the fault plan. Counters keep going and a crash stays a crash; the yield
    /// decisions restart from the new seed.
    pub fn set_faults(&self, plan: FaultPlan) {
        let mut shared = self.shared.borrow_mut();
        shared.plan = plan;
        shared.yield_rng = SplitMix64::new(plan.seed);
    }

    /// The current fault plan.
    pub fn faults(&self) -> FaultPlan {
        self.shared.borrow().plan
    }

    /// Changes only the capacity limit. Lowering it below the current usage makes every growth
    /// fail but does not shrink anything.
    pub fn set_capacity(&self, capacity_bytes: Option<u64>) {
        self.shared.borrow_mut().plan.capacity_bytes = capacity_bytes;
    }

    /// Whether the operation numbered `crash_after_ops` has happened.
    pub fn has_crashed(&self) -> bool {
        self.shared.borrow().crashed
    }

    /// Seam calls so far, failed ones included (the number `crash_after_ops` is compared with).
    pub fn ops(&self) -> u64 {
        self.shared.borrow().ops
    }

    /// sync_data calls so far (the number `fail_sync_at` is compared with).
    pub fn sync_calls(&self) -> u64 {
        self.shared.borrow().sync_calls
    }

    /// A new storage holding what a power loss right now would leave on disk: every file and
    /// directory in the namespace, with contents chosen by `mode` (random choices are seeded by
    /// the plan's seed, so the same seed gives the same image). The new storage has no faults,
    /// fresh counters, and every file fully synced. Works whether or not this one has crashed.
    #[must_use = "the crash image is a new storage; the original is left as it was"]
    pub fn crash_image(&self, mode: CrashMode) -> MemStorage {
        let shared = self.shared.borrow();
        let mut rng = SplitMix64::new(shared.plan.seed ^ CRASH_STREAM);
        let files = shared
            .files
            .iter()
            .map(|(path, node)| {
                let node = node.borrow();
                let contents = match mode {
                    CrashMode::LoseUnsynced => node.durable.clone(),
                    CrashMode::TornPrefix => node.torn_image(&mut rng),
                };
                (
                    path.clone(),
                    Rc::new(RefCell::new(FileNode::with_contents(contents))),
                )
            })
            .collect();
        Self::from_shared(Shared::new(
            FaultPlan::default(),
            files,
            shared.dirs.clone(),
        ))
    }

    /// What reads of `path` would see now; `None` when there is no such file. Not an operation.
    pub fn file_contents(&self, path: &Path) -> Option<Vec<u8>> {
        let shared = self.shared.borrow();
        shared
            .files
            .get(path)
            .map(|node| node.borrow().current.clone())
    }

    /// Overwrites `bytes` at `pos` in both the current and the durable image (zero-extending
    /// the file if needed), as bit rot would. Not an operation and never fails by plan.
    ///
    /// # Panics
    ///
    /// When `path` does not exist or `pos` does not fit in memory: a corruption test that
    /// corrupts nothing would pass vacuously.
    pub fn corrupt(&self, path: &Path, pos: u64, bytes: &[u8]) {
        let node = self.node_for_helper(path);
        let Some(pos) = usize::try_from(pos)
            .ok()
            .filter(|pos| pos.checked_add(bytes.len()).is_some())
        else {
            panic!("corrupt: offset {pos} out of range");
        };
        let mut node = node.borrow_mut();
        write_into(&mut node.current, pos, bytes);
        write_into(&mut node.durable, pos, bytes);
    }

    /// Sets the length of both images of `path` (zero-extending if longer). Not an operation.
    ///
    /// # Panics
    ///
    /// When `path` does not exist or `len` does not fit in memory.
    pub fn truncate_raw(&self, path: &Path, len: u64) {
        let node = self.node_for_helper(path);
        let Ok(len) = usize::try_from(len) else {
            panic!("truncate_raw: length {len} out of range");
        };
        let mut node = node.borrow_mut();
        node.current.resize(len, 0);
        node.durable.resize(len, 0);
    }

    /// Paths of all files, sorted.
    pub fn file_names(&self) -> Vec<PathBuf> {
        self.shared.borrow().files.keys().cloned().collect()
    }

    fn node_for_helper(&self, path: &Path) -> Rc<RefCell<FileNode>> {
        match self.shared.borrow().files.get(path) {
            Some(node) => Rc::clone(node),
            None => panic!("{}: no such file in MemStorage", path.display()),
        }
    }

    /// Counts one operation, decides its faults, maybe yields, and fails if the storage crashed
    /// meanwhile. Returns whether the plan injects `EIO` into this operation.
    async fn enter(&self, kind: OpKind) -> io::Result<bool> {
        let admission = self.shared.borrow_mut().admit(kind)?;
        if admission.yield_first {
            YieldNow::default().await;
        }
        if self.shared.borrow().crashed {
            return Err(crash_error());
        }
        Ok(admission.injected_eio)
    }

    /// Fails with `ENOSPC` when a file growing from `old_len` to `new_len` bytes would exceed
    /// the capacity. No file node may be borrowed by the caller.
    fn reserve(&self, old_len: usize, new_len: usize) -> io::Result<()> {
        let growth_bytes = new_len.saturating_sub(old_len) as u64;
        if growth_bytes == 0 {
            return Ok(());
        }
        let shared = self.shared.borrow();
        match shared.plan.capacity_bytes {
            Some(capacity) if shared.used_bytes().saturating_add(growth_bytes) > capacity => {
                Err(enospc())
            }
            _ => Ok(()),
        }
    }
}

impl Storage for MemStorage {
    type File = MemFile;

    async fn open(&self, path: &Path, create: bool) -> io::Result<MemFile> {
        self.enter(OpKind::Other).await?;
        let mut shared = self.shared.borrow_mut();
        let node = match shared.files.get(path) {
            Some(node) => Rc::clone(node),
            None if create => {
                let node = Rc::new(RefCell::new(FileNode::with_contents(Vec::new())));
                shared.files.insert(path.to_path_buf(), Rc::clone(&node));
                node
            }
            None => return Err(not_found(path)),
        };
        Ok(MemFile {
            storage: self.clone(),
            node,
        })
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        self.enter(OpKind::Other).await?;
        match self.shared.borrow_mut().files.remove(path) {
            Some(_) => Ok(()),
            None => Err(not_found(path)),
        }
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.enter(OpKind::Other).await?;
        let mut shared = self.shared.borrow_mut();
        let node = shared.files.remove(from).ok_or_else(|| not_found(from))?;
        shared.files.insert(to.to_path_buf(), node);
        Ok(())
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.enter(OpKind::Other).await?;
        let mut shared = self.shared.borrow_mut();
        for dir in path.ancestors().filter(|dir| !dir.as_os_str().is_empty()) {
            shared.dirs.insert(dir.to_path_buf());
        }
        Ok(())
    }

    async fn sync_dir(&self, _path: &Path) -> io::Result<()> {
        // Namespace changes are durable at once; only the op count and the crash check matter.
        self.enter(OpKind::Other).await?;
        Ok(())
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.enter(OpKind::Other).await?;
        let shared = self.shared.borrow();
        let mut names: Vec<String> = shared
            .files
            .keys()
            .filter(|file| file.parent() == Some(path))
            .filter_map(|file| file.file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .collect();
        if names.is_empty() && !shared.dirs.contains(path) {
            return Err(not_found(path));
        }
        names.sort();
        Ok(names)
    }

    fn disk_usage(&self, _path: &Path) -> io::Result<DiskUsage> {
        // Synchronous, so it cannot yield; it still counts and fails after a crash.
        let mut shared = self.shared.borrow_mut();
        shared.admit(OpKind::Other)?;
        let total_bytes = shared.capacity_bytes();
        let available_bytes = total_bytes.saturating_sub(shared.used_bytes());
        // No blocks reserved for root in memory: free and available are the same.
        Ok(DiskUsage {
            total_bytes,
            free_bytes: available_bytes,
            available_bytes,
        })
    }
}

/// An open [`MemStorage`] file. Refers to the file itself rather than its path, so it keeps
/// working after the file is renamed or removed.
#[derive(Debug, Clone)]
pub struct MemFile {
    storage: MemStorage,
    node: Rc<RefCell<FileNode>>,
}

impl MemFile {
    async fn read_into(&self, buf: &mut BytesMut, pos: u64) -> io::Result<()> {
        if self.storage.enter(OpKind::Read).await? {
            return Err(eio());
        }
        let wanted_bytes = buf.capacity() - buf.len();
        if wanted_bytes == 0 {
            return Ok(());
        }
        let node = self.node.borrow();
        let range = usize::try_from(pos)
            .ok()
            .and_then(|start| Some(start..start.checked_add(wanted_bytes)?))
            .filter(|range| range.end <= node.current.len());
        match range {
            Some(range) => {
                buf.extend_from_slice(&node.current[range]);
                Ok(())
            }
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the file",
            )),
        }
    }

    async fn write_from(&self, data: &Bytes, pos: u64) -> io::Result<()> {
        if self.storage.enter(OpKind::Write).await? {
            return Err(eio());
        }
        let pos = file_offset(pos)?;
        let end = pos.checked_add(data.len()).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "write ends past usize::MAX")
        })?;
        let old_len = self.node.borrow().current.len();
        self.storage.reserve(old_len, end)?;
        let mut node = self.node.borrow_mut();
        write_into(&mut node.current, pos, data);
        node.pending.push(PendingOp::Write {
            pos,
            data: data.clone(),
        });
        Ok(())
    }
}

impl StorageFile for MemFile {
    async fn read_exact_at(&self, mut buf: BytesMut, pos: u64) -> (io::Result<()>, BytesMut) {
        let result = self.read_into(&mut buf, pos).await;
        (result, buf)
    }

    async fn write_all_at(&self, buf: Bytes, pos: u64) -> (io::Result<()>, Bytes) {
        let result = self.write_from(&buf, pos).await;
        (result, buf)
    }

    async fn sync_data(&self) -> io::Result<()> {
        // fdatasync covers what was issued before the call, not what lands while it runs.
        let covered_until = self.node.borrow().issued_ops();
        let failed = self.storage.enter(OpKind::Sync).await?;
        let mut node = self.node.borrow_mut();
        let covered = covered_until.saturating_sub(node.retired_ops);
        let covered = usize::try_from(covered)
            .unwrap_or(usize::MAX)
            .min(node.pending.len());
        let retired: Vec<PendingOp> = node.pending.drain(..covered).collect();
        node.retired_ops += covered as u64;
        if failed {
            // Linux marks the pages clean after a writeback error: readable, never durable.
            return Err(eio());
        }
        for op in &retired {
            op.apply(&mut node.durable);
        }
        Ok(())
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        self.storage.enter(OpKind::Other).await?;
        let len = file_offset(len)?;
        let old_len = self.node.borrow().current.len();
        if len <= old_len {
            return Ok(());
        }
        self.storage.reserve(old_len, len)?;
        let mut node = self.node.borrow_mut();
        node.current.resize(len, 0);
        node.pending.push(PendingOp::Allocate { len });
        Ok(())
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        // Growing by truncate makes a sparse hole on a real filesystem, so it is not checked
        // against the capacity (it still counts toward usage, which saturates).
        self.storage.enter(OpKind::Other).await?;
        let len = file_offset(len)?;
        let mut node = self.node.borrow_mut();
        node.current.resize(len, 0);
        node.pending.push(PendingOp::Truncate { len });
        Ok(())
    }

    async fn len(&self) -> io::Result<u64> {
        self.storage.enter(OpKind::Other).await?;
        Ok(self.node.borrow().current.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    fn run<F: Future>(future: F) -> F::Output {
        compio::runtime::Runtime::new().unwrap().block_on(future)
    }

    async fn write(file: &MemFile, pos: u64, data: &[u8]) -> io::Result<()> {
        file.write_all_at(Bytes::copy_from_slice(data), pos).await.0
    }

    async fn read(file: &MemFile, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let (result, buf) = file.read_exact_at(BytesMut::with_capacity(len), pos).await;
        result.map(|()| buf.to_vec())
    }

    fn is_crash(err: &io::Error) -> bool {
        err.kind() == io::ErrorKind::Other && err.to_string() == "simulated crash"
    }

    #[test]
    fn lose_unsynced_keeps_only_synced_data() {
        run(async {
            let storage = MemStorage::new();
            let path = Path::new("log/0");
            let file = storage.open(path, true).await.unwrap();
            write(&file, 0, b"hello").await.unwrap();
            file.sync_data().await.unwrap();
            write(&file, 5, b" world").await.unwrap();
            file.truncate(8).await.unwrap();
            assert_eq!(read(&file, 0, 8).await.unwrap(), b"hello wo");
            assert_eq!(storage.file_contents(path).unwrap(), b"hello wo");

            let image = storage.crash_image(CrashMode::LoseUnsynced);
            assert_eq!(image.file_contents(path).unwrap(), b"hello");
            assert_eq!(image.ops(), 0);
            let reopened = image.open(path, false).await.unwrap();
            assert_eq!(reopened.len().await.unwrap(), 5);
        });
    }

    #[test]
    fn torn_prefix_keeps_a_prefix_of_unsynced_appends() {
        let synced: &[u8] = b"durable|";
        let appends: [&[u8]; 4] = [b"alpha", b"bravo-bravo", b"c", b"delta-delta-delta"];
        let unsynced: Vec<u8> = appends.concat();
        let mut kept_lengths = BTreeSet::new();
        for seed in 0..300 {
            let storage = MemStorage::with_faults(FaultPlan {
                seed,
                ..FaultPlan::default()
            });
            let path = Path::new("seg");
            run(async {
                let file = storage.open(path, true).await.unwrap();
                write(&file, 0, synced).await.unwrap();
                file.sync_data().await.unwrap();
                let mut pos = synced.len() as u64;
                for append in appends {
                    write(&file, pos, append).await.unwrap();
                    pos += append.len() as u64;
                }
            });
            let image = storage.crash_image(CrashMode::TornPrefix);
            let contents = image.file_contents(path).unwrap();
            assert!(
                contents.len() >= synced.len(),
                "seed {seed}: lost synced data"
            );
            let (head, tail) = contents.split_at(synced.len());
            assert_eq!(head, synced, "seed {seed}");
            assert_eq!(tail, &unsynced[..tail.len()], "seed {seed}: not a prefix");
            // Same seed, same image.
            assert_eq!(
                storage
                    .crash_image(CrashMode::TornPrefix)
                    .file_contents(path)
                    .unwrap(),
                contents
            );
            kept_lengths.insert(tail.len());
        }
        assert!(kept_lengths.contains(&0));
        assert!(kept_lengths.contains(&unsynced.len()));
        let boundaries = [5, 16, 17];
        assert!(
            kept_lengths
                .iter()
                .any(|len| *len != 0 && *len != unsynced.len() && !boundaries.contains(len)),
            "no torn write in 300 seeds: {kept_lengths:?}"
        );
    }

    #[test]
    fn crash_after_ops_fails_that_op_and_all_later_ones() {
        run(async {
            let storage = MemStorage::with_faults(FaultPlan {
                crash_after_ops: Some(4),
                ..FaultPlan::default()
            });
            let path = Path::new("f");
            let file = storage.open(path, true).await.unwrap(); // op 1
            write(&file, 0, b"abc").await.unwrap(); // op 2
            file.sync_data().await.unwrap(); // op 3
            assert!(!storage.has_crashed());
            let err = write(&file, 3, b"def").await.unwrap_err(); // op 4
            assert!(is_crash(&err), "{err}");
            assert!(storage.has_crashed());
            assert!(is_crash(&read(&file, 0, 3).await.unwrap_err()));
            assert!(is_crash(
                &storage.open(Path::new("g"), true).await.unwrap_err()
            ));
            assert!(is_crash(&storage.disk_usage(path).unwrap_err()));
            assert_eq!(storage.file_contents(path).unwrap(), b"abc");
            assert!(storage.file_names() == vec![PathBuf::from("f")]);
            assert_eq!(storage.ops(), 7);

            let image = storage.crash_image(CrashMode::TornPrefix);
            assert!(!image.has_crashed());
            assert_eq!(image.file_contents(path).unwrap(), b"abc");
        });
    }

    #[test]
    fn failed_sync_returns_eio_and_its_writes_never_become_durable() {
        run(async {
            let storage = MemStorage::with_faults(FaultPlan {
                fail_sync_at: Some(2),
                ..FaultPlan::default()
            });
            let path = Path::new("f");
            let file = storage.open(path, true).await.unwrap();
            write(&file, 0, b"one").await.unwrap();
            file.sync_data().await.unwrap(); // sync 1
            write(&file, 3, b"two").await.unwrap();
            let err = file.sync_data().await.unwrap_err(); // sync 2
            assert_eq!(err.raw_os_error(), Some(EIO));
            // Still readable...
            assert_eq!(read(&file, 0, 6).await.unwrap(), b"onetwo");
            assert_eq!(
                storage
                    .crash_image(CrashMode::LoseUnsynced)
                    .file_contents(path)
                    .unwrap(),
                b"one"
            );
            // ...but a later successful sync does not bring it back (Linux writeback-error semantics).
            file.sync_data().await.unwrap(); // sync 3
            assert_eq!(
                storage
                    .crash_image(CrashMode::LoseUnsynced)
                    .file_contents(path)
                    .unwrap(),
                b"one"
            );
            assert_eq!(
                storage
                    .crash_image(CrashMode::TornPrefix)
                    .file_contents(path)
                    .unwrap(),
                b"one"
            );
            // Rewriting and syncing again does.
            write(&file, 3, b"two").await.unwrap();
            file.sync_data().await.unwrap();
            assert_eq!(
                storage
                    .crash_image(CrashMode::LoseUnsynced)
                    .file_contents(path)
                    .unwrap(),
                b"onetwo"
            );
        });
    }

    #[test]
    fn capacity_gives_enospc_and_disk_usage_reports_it() {
        run(async {
            let storage = MemStorage::with_faults(FaultPlan {
                capacity_bytes: Some(10),
                ..FaultPlan::default()
            });
            let a = storage.open(Path::new("a"), true).await.unwrap();
            let b = storage.open(Path::new("b"), true).await.unwrap();
            write(&a, 0, b"12345678").await.unwrap();
            let usage = storage.disk_usage(Path::new("a")).unwrap();
            assert_eq!(
                usage,
                DiskUsage {
                    total_bytes: 10,
                    free_bytes: 2,
                    available_bytes: 2
                }
            );

            let err = write(&b, 0, b"xyz").await.unwrap_err();
            assert_eq!(err.raw_os_error(), Some(ENOSPC));
            assert_eq!(storage.file_contents(Path::new("b")).unwrap(), b"");
            assert_eq!(
                b.allocate(3).await.unwrap_err().raw_os_error(),
                Some(ENOSPC)
            );
            // Overwrites inside the existing extent need no space.
            write(&a, 0, b"ABCDEFGH").await.unwrap();
            b.allocate(2).await.unwrap();
            assert_eq!(b.len().await.unwrap(), 2);
            assert_eq!(
                storage.disk_usage(Path::new("b")).unwrap().available_bytes,
                0
            );
            // Space allocated up front can be written without ENOSPC.
            write(&b, 0, b"ok").await.unwrap();

            storage.remove(Path::new("a")).await.unwrap();
            assert_eq!(
                storage.disk_usage(Path::new("b")).unwrap().available_bytes,
                8
            );
            storage.set_capacity(None);
            let usage = storage.disk_usage(Path::new("b")).unwrap();
            assert_eq!(
                usage,
                DiskUsage {
                    total_bytes: 1 << 40,
                    free_bytes: (1 << 40) - 2,
                    available_bytes: (1 << 40) - 2
                }
            );
        });
    }

    #[test]
    fn rename_keeps_an_open_handle_valid() {
        run(async {
            let storage = MemStorage::new();
            storage
                .create_dir_all(Path::new("store/commitlog"))
                .await
                .unwrap();
            let tmp = Path::new("store/commitlog/meta.tmp");
            let dst = Path::new("store/commitlog/meta");
            let file = storage.open(tmp, true).await.unwrap();
            write(&file, 0, b"v1").await.unwrap();
            storage.rename(tmp, dst).await.unwrap();
            storage
                .sync_dir(Path::new("store/commitlog"))
                .await
                .unwrap();
            write(&file, 2, b"+v2").await.unwrap();
            assert_eq!(storage.file_contents(dst).unwrap(), b"v1+v2");
            assert_eq!(
                storage.open(tmp, false).await.unwrap_err().kind(),
                io::ErrorKind::NotFound
            );
            assert_eq!(
                storage
                    .list_dir(Path::new("store/commitlog"))
                    .await
                    .unwrap(),
                vec!["meta"]
            );
            // Directories, and files in directories never created, are listed; others are not.
            assert_eq!(
                storage.list_dir(Path::new("store")).await.unwrap(),
                Vec::<String>::new()
            );
            storage.open(Path::new("orphan/x"), true).await.unwrap();
            assert_eq!(
                storage.list_dir(Path::new("orphan")).await.unwrap(),
                vec!["x"]
            );
            assert_eq!(
                storage
                    .list_dir(Path::new("nowhere"))
                    .await
                    .unwrap_err()
                    .kind(),
                io::ErrorKind::NotFound
            );
            // The rename is durable without a sync of the data... but the data is not.
            let image = storage.crash_image(CrashMode::LoseUnsynced);
            assert_eq!(
                image.file_names(),
                vec![PathBuf::from("orphan/x"), PathBuf::from(dst)]
            );
            assert_eq!(image.file_contents(dst).unwrap(), b"");
        });
    }

    #[test]
    fn reads_fill_spare_capacity_and_fail_cleanly_at_eof() {
        run(async {
            let storage = MemStorage::new();
            let file = storage.open(Path::new("f"), true).await.unwrap();
            write(&file, 4, b"data").await.unwrap();
            assert_eq!(read(&file, 0, 8).await.unwrap(), b"\0\0\0\0data");
            let mut buf = BytesMut::with_capacity(6);
            buf.extend_from_slice(b"ab");
            let (result, buf) = file.read_exact_at(buf, 4).await;
            result.unwrap();
            assert_eq!(&buf[..], b"abdata");
            let (result, buf) = file.read_exact_at(BytesMut::with_capacity(4), 6).await;
            assert_eq!(result.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
            assert!(buf.is_empty());
        });
    }

    #[test]
    fn periodic_read_and_write_errors() {
        run(async {
            let storage = MemStorage::with_faults(FaultPlan {
                write_error_every: Some(2),
                read_error_every: Some(3),
                ..FaultPlan::default()
            });
            let file = storage.open(Path::new("f"), true).await.unwrap();
            write(&file, 0, b"a").await.unwrap();
            assert_eq!(
                write(&file, 1, b"b").await.unwrap_err().raw_os_error(),
                Some(EIO)
            );
            write(&file, 1, b"c").await.unwrap();
            assert_eq!(storage.file_contents(Path::new("f")).unwrap(), b"ac");
            read(&file, 0, 2).await.unwrap();
            read(&file, 0, 2).await.unwrap();
            assert_eq!(
                read(&file, 0, 2).await.unwrap_err().raw_os_error(),
                Some(EIO)
            );
            read(&file, 0, 2).await.unwrap();
        });
    }

    #[test]
    fn corrupt_and_truncate_raw_edit_both_images() {
        run(async {
            let storage = MemStorage::new();
            let path = Path::new("f");
            let file = storage.open(path, true).await.unwrap();
            write(&file, 0, b"abcdef").await.unwrap();
            file.sync_data().await.unwrap();
            let ops = storage.ops();
            storage.corrupt(path, 1, b"XY");
            storage.truncate_raw(path, 5);
            assert_eq!(storage.ops(), ops);
            assert_eq!(storage.file_contents(path).unwrap(), b"aXYde");
            assert_eq!(
                storage
                    .crash_image(CrashMode::LoseUnsynced)
                    .file_contents(path)
                    .unwrap(),
                b"aXYde"
            );
        });
    }

    #[test]
    fn yield_now_is_pending_exactly_once() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut future = YieldNow::default();
        assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut future).poll(&mut cx).is_ready());
    }

    #[test]
    fn operations_sometimes_yield_and_tasks_interleave() {
        // Deterministic from the seed: some of 32 calls yield before completing, some do not.
        let storage = MemStorage::with_faults(FaultPlan {
            seed: 7,
            ..FaultPlan::default()
        });
        let mut cx = Context::from_waker(Waker::noop());
        let mut yielded = 0;
        for _ in 0..32 {
            let mut future = std::pin::pin!(storage.create_dir_all(Path::new("d")));
            match future.as_mut().poll(&mut cx) {
                Poll::Pending => {
                    yielded += 1;
                    assert!(matches!(future.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
                }
                Poll::Ready(result) => result.unwrap(),
            }
        }
        assert!((1..32).contains(&yielded), "{yielded} of 32 calls yielded");

        run(async {
            let storage = MemStorage::new();
            let file = storage.open(Path::new("f"), true).await.unwrap();
            let completion_order = Rc::new(RefCell::new(Vec::new()));
            let tasks: Vec<_> = (0..4u8)
                .map(|task| {
                    let file = file.clone();
                    let completion_order = Rc::clone(&completion_order);
                    compio::runtime::spawn(async move {
                        for i in 0..8u8 {
                            write(&file, u64::from(task * 8 + i), &[task])
                                .await
                                .unwrap();
                            completion_order.borrow_mut().push(task);
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            let contents = storage.file_contents(Path::new("f")).unwrap();
            let expected: Vec<u8> = (0..4u8).flat_map(|task| [task; 8]).collect();
            assert_eq!(contents, expected);
            let order = completion_order.borrow();
            assert!(!order.is_sorted(), "tasks ran one after another: {order:?}");
        });
    }
}
