//! The broker's durable metadata: topic configs and consumer-group offsets.
//!
//! Both live in small JSON documents (RocketMQ's `topics.json` and `consumerOffset.json` shapes)
//! that are rewritten whole on every save. They are tiny next to the commit log and change
//! rarely (topics) or are saved on a timer (offsets, every 5 s and at shutdown), so a whole-file
//! rewrite is simpler and safer than any in-place update.
//!
//! # File format
//!
//! ```text
//! 0        8                12               16
//! +--------+----------------+----------------+---------------------------+
//! | magic  | payload length | CRC32C(payload)| payload: JSON, `length`   |
//! |RMQMETA1| u32 big-endian | u32 big-endian | bytes, nothing after it   |
//! +--------+----------------+----------------+---------------------------+
//! ```
//!
//! The file is exactly `16 + length` bytes. The JSON itself is what RocketMQ 4.x writes, so the
//! payload can be compared with (or hand-migrated from) a Java broker's store; a Java file
//! without the header is refused as corrupt rather than guessed at.
//!
//! # Atomic replacement
//!
//! A save writes `<path>.tmp` (create, truncate to 0, write, `fdatasync`), renames it over
//! `<path>` and syncs the parent directory. A crash at any point leaves either the previous
//! document or the new one at `<path>`, never a mix: the rename is the commit point, and it only
//! happens after the new bytes are durable. A leftover `<path>.tmp` is an unfinished save; loading
//! ignores and removes it.
//!
//! [`MetadataFile::store`] is the store's one implementation of that sequence (the checkpoint is a
//! metadata file too). It goes through the I/O seam so crash tests can inject faults at every
//! step; `ringmq_common::fs::write_atomically` is the same sequence for files outside the store,
//! and the temporary's name comes from the same rule (`ringmq_common::fs::temp_path`).
//!
//! Every check a load makes (length, magic, CRC, JSON) fails loudly as
//! [`MetadataError::Corrupt`]: a damaged metadata file is never half-read and never treated as
//! empty, because an empty offset table would silently rewind every consumer group.

use std::{
    cell::Cell,
    collections::{BTreeMap, HashMap},
    fmt, io,
    path::{Path, PathBuf},
};

use bytes::{Bytes, BytesMut};
use ringmq_common::Clock;
use ringmq_protocol::body::{
    ConsumerOffsetTable as ConsumerOffsetBody, DataVersion, TopicConfig,
    TopicConfigSerializeWrapper,
};
use serde::{Serialize, de::DeserializeOwned};

pub use crate::format::{METADATA_HEADER_BYTES, METADATA_MAGIC, METADATA_PAYLOAD_BYTES_MAX};
use crate::{
    format::{METADATA_MAGIC_AT, METADATA_PAYLOAD_BYTES_AT, METADATA_PAYLOAD_CRC_AT, be_u32},
    io::{Storage, StorageFile},
};

/// Why a metadata file could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The filesystem failed. After a failed save the file holds either the previous or the new
    /// document (never a mix); the next successful save rewrites it from memory.
    #[error("metadata I/O on {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// The file exists but is not a document this broker wrote whole: torn, bit-flipped, wrong
    /// magic, oversized, or JSON of the wrong shape. The broker must not start on it silently.
    #[error("metadata file {} is corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// The value could not be encoded as JSON, or its encoding exceeds
    /// [`METADATA_PAYLOAD_BYTES_MAX`].
    #[error("encoding metadata: {0}")]
    Encode(#[source] serde_json::Error),
}

/// One JSON document at a path, replaced atomically (see the module docs).
///
/// Both [`load`](Self::load) and [`store`](Self::store) take `&mut self` because they touch the
/// shared `<path>.tmp`: two overlapping saves could rename each other's half-written temporary
/// into place, and a load removing the temporary could break a save in flight. The exclusive
/// borrow makes such overlap a compile error. There must be at most one `MetadataFile` per path.
pub struct MetadataFile<S: Storage> {
    storage: S,
    path: PathBuf,
    /// `<path>.tmp`: the full file name with `.tmp` appended.
    tmp_path: PathBuf,
    /// The directory whose entry the rename changes; synced after it.
    dir_path: PathBuf,
}

impl<S: Storage> fmt::Debug for MetadataFile<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetadataFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<S: Storage> MetadataFile<S> {
    /// A handle on `path`; no I/O happens until [`load`](Self::load) or [`store`](Self::store).
    /// The parent directory must exist (the store creates its root before opening metadata).
    pub fn new(storage: S, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        // The temporary's name is the workspace's one rule (`name.tmp` beside the target).
        let tmp_path = ringmq_common::fs::temp_path(&path);
        let dir_path = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Self {
            storage,
            path,
            tmp_path,
            dir_path,
        }
    }

    /// The document's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and verifies the document: `Ok(None)` when the file does not exist.
    ///
    /// A leftover `<path>.tmp` (a save that crashed before its rename) is removed first; it is
    /// never read, since it may be incomplete. The file is read with one `len` and one
    /// `read_exact_at` of the whole file.
    pub async fn load<T: DeserializeOwned>(&mut self) -> Result<Option<T>, MetadataError> {
        match self.storage.remove(&self.tmp_path).await {
            Ok(()) => tracing::info!(
                path = %self.tmp_path.display(),
                "removed a metadata temporary left by an unfinished save"
            ),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(io_error(&self.tmp_path, source)),
        }
        let file = match self.storage.open(&self.path, false).await {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(io_error(&self.path, source)),
        };
        let file_bytes = file
            .len()
            .await
            .map_err(|source| io_error(&self.path, source))?;
        if file_bytes < METADATA_HEADER_BYTES as u64 {
            return Err(self.corrupt(format!(
                "file is {file_bytes} bytes, shorter than the {METADATA_HEADER_BYTES}-byte header"
            )));
        }
        let payload_bytes_on_disk = file_bytes - METADATA_HEADER_BYTES as u64;
        if payload_bytes_on_disk > METADATA_PAYLOAD_BYTES_MAX as u64 {
            return Err(self.corrupt(format!(
                "file is {file_bytes} bytes, over the {METADATA_PAYLOAD_BYTES_MAX}-byte payload cap"
            )));
        }
        // Bounded by the cap just checked, so this fits in usize.
        let buffer = BytesMut::with_capacity(file_bytes as usize);
        let (result, buffer) = file.read_exact_at(buffer, 0).await;
        result.map_err(|source| io_error(&self.path, source))?;
        let payload = self.verify(&buffer)?;
        match serde_json::from_slice(payload) {
            Ok(value) => Ok(Some(value)),
            Err(error) => Err(self.corrupt(format!("payload does not decode: {error}"))),
        }
    }

    /// Checks header and CRC of a whole file image and returns its payload.
    fn verify<'a>(&self, image: &'a [u8]) -> Result<&'a [u8], MetadataError> {
        let Some((header, payload)) = image.split_first_chunk::<METADATA_HEADER_BYTES>() else {
            return Err(self.corrupt(format!(
                "file is {} bytes, shorter than the {METADATA_HEADER_BYTES}-byte header",
                image.len()
            )));
        };
        let magic = &header[METADATA_MAGIC_AT..METADATA_MAGIC_AT + METADATA_MAGIC.len()];
        if magic != METADATA_MAGIC {
            return Err(self.corrupt(format!(
                "bad magic {magic:02x?}, expected {METADATA_MAGIC:02x?} (\"RMQMETA1\")"
            )));
        }
        // The header is METADATA_HEADER_BYTES long, so both fields are in range.
        let payload_bytes = be_u32(header, METADATA_PAYLOAD_BYTES_AT).unwrap_or_default() as usize;
        let crc_stored = be_u32(header, METADATA_PAYLOAD_CRC_AT).unwrap_or_default();
        if payload_bytes > METADATA_PAYLOAD_BYTES_MAX {
            return Err(self.corrupt(format!(
                "header claims a {payload_bytes}-byte payload, over the \
                 {METADATA_PAYLOAD_BYTES_MAX}-byte cap"
            )));
        }
        if payload.len() < payload_bytes {
            return Err(self.corrupt(format!(
                "torn: header says {payload_bytes} payload bytes, file holds {}",
                payload.len()
            )));
        }
        if payload.len() > payload_bytes {
            // A save writes exactly header + payload into a truncated file, so extra bytes mean
            // the length field itself is damaged.
            return Err(self.corrupt(format!(
                "header says {payload_bytes} payload bytes, file holds {} (trailing bytes)",
                payload.len()
            )));
        }
        let crc_computed = crc32c::crc32c(payload);
        if crc_computed != crc_stored {
            return Err(self.corrupt(format!(
                "payload CRC32C is {crc_computed:#010x}, header says {crc_stored:#010x}"
            )));
        }
        Ok(payload)
    }

    /// Replaces the document with `value`, durably, before returning `Ok`.
    ///
    /// On error the file at the path holds the previous or the new document, never a mix; a
    /// failed `fdatasync` on the temporary is never followed by the rename, so a save whose data
    /// may not be on disk never becomes the document.
    pub async fn store<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), MetadataError> {
        let image = encode_image(value)?;
        let file = self
            .storage
            .open(&self.tmp_path, true)
            .await
            .map_err(|source| io_error(&self.tmp_path, source))?;
        // A crashed earlier save may have left a longer temporary behind.
        file.truncate(0)
            .await
            .map_err(|source| io_error(&self.tmp_path, source))?;
        let (result, _image) = file.write_all_at(image, 0).await;
        result.map_err(|source| io_error(&self.tmp_path, source))?;
        file.sync_data()
            .await
            .map_err(|source| io_error(&self.tmp_path, source))?;
        drop(file);
        self.storage
            .rename(&self.tmp_path, &self.path)
            .await
            .map_err(|source| io_error(&self.path, source))?;
        self.storage
            .sync_dir(&self.dir_path)
            .await
            .map_err(|source| io_error(&self.dir_path, source))
    }

    fn corrupt(&self, reason: String) -> MetadataError {
        MetadataError::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }
}

/// An I/O error naming the file (or directory) it happened on.
fn io_error(path: &Path, source: io::Error) -> MetadataError {
    MetadataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Header and JSON payload of `value`, as one buffer written with one write. The JSON is encoded
/// straight after a reserved header so the payload is never copied.
fn encode_image<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, MetadataError> {
    let mut image = vec![0_u8; METADATA_HEADER_BYTES];
    serde_json::to_writer(&mut image, value).map_err(MetadataError::Encode)?;
    let payload_bytes = image.len() - METADATA_HEADER_BYTES;
    if payload_bytes > METADATA_PAYLOAD_BYTES_MAX {
        return Err(MetadataError::Encode(serde::ser::Error::custom(format!(
            "{payload_bytes}-byte document exceeds the {METADATA_PAYLOAD_BYTES_MAX}-byte cap"
        ))));
    }
    let crc = crc32c::crc32c(&image[METADATA_HEADER_BYTES..]);
    image[METADATA_MAGIC_AT..METADATA_MAGIC_AT + METADATA_MAGIC.len()]
        .copy_from_slice(&METADATA_MAGIC);
    // Bounded by the cap, which fits in u32 (asserted at compile time).
    image[METADATA_PAYLOAD_BYTES_AT..METADATA_PAYLOAD_BYTES_AT + 4]
        .copy_from_slice(&(payload_bytes as u32).to_be_bytes());
    image[METADATA_PAYLOAD_CRC_AT..METADATA_PAYLOAD_CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(Bytes::from(image))
}

/// Serializes exactly like [`TopicConfigSerializeWrapper`] without cloning the table; the field
/// order (alphabetical, as fastjson writes it) must match that type's.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TopicConfigWrapperRef<'a> {
    data_version: DataVersion,
    topic_config_table: &'a BTreeMap<String, TopicConfig>,
}

/// The broker's topic configs (`topics.json`), with the data version REGISTER_BROKER reports.
///
/// Invariants: every key equals its config's `topic_name`; the file holds the table as of the
/// last successful change; the data version moves forward on every change that reaches disk.
#[derive(Debug)]
pub struct TopicConfigTable<S: Storage> {
    file: MetadataFile<S>,
    topics: BTreeMap<String, TopicConfig>,
    data_version: DataVersion,
    /// Stamps each new data version. The NameServer compares data versions for equality only,
    /// so a clock step backwards is harmless.
    clock: Clock,
}

impl<S: Storage> TopicConfigTable<S> {
    /// Loads the table at `path`, or starts empty (data version 0/0) when there is no file.
    /// Data versions are stamped with the system clock.
    pub async fn open(storage: S, path: impl Into<PathBuf>) -> Result<Self, MetadataError> {
        Self::open_with_clock(storage, path, Clock::system()).await
    }

    /// [`open`](Self::open), stamping data versions with `clock` (a test's manual clock, or
    /// the store's [`StoreConfig::clock`](crate::StoreConfig::clock)).
    pub async fn open_with_clock(
        storage: S,
        path: impl Into<PathBuf>,
        clock: Clock,
    ) -> Result<Self, MetadataError> {
        let mut file = MetadataFile::new(storage, path);
        let wrapper: TopicConfigSerializeWrapper = file.load().await?.unwrap_or_default();
        if let Some((key, config)) = wrapper
            .topic_config_table
            .iter()
            .find(|(key, config)| **key != config.topic_name)
        {
            return Err(file.corrupt(format!(
                "topic table key {key:?} holds the config of topic {:?}",
                config.topic_name
            )));
        }
        Ok(Self {
            file,
            topics: wrapper.topic_config_table,
            data_version: wrapper.data_version,
            clock,
        })
    }

    /// The config of `topic`.
    pub fn get(&self, topic: &str) -> Option<&TopicConfig> {
        self.topics.get(topic)
    }

    /// All configs in topic-name order.
    pub fn iter(&self) -> std::collections::btree_map::Values<'_, String, TopicConfig> {
        self.topics.values()
    }

    /// Number of topics.
    pub fn len(&self) -> usize {
        self.topics.len()
    }

    /// Whether there are no topics.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// The version REGISTER_BROKER and QUERY_DATA_VERSION report.
    pub fn data_version(&self) -> DataVersion {
        self.data_version
    }

    /// Creates or replaces the config of `config.topic_name` and saves the table before
    /// returning. Writing an identical config is a no-op (no version bump, no I/O).
    ///
    /// On error the in-memory table is rolled back, so a failed change is never served; the file
    /// may hold either version until the next successful save rewrites it. If the future is
    /// dropped mid-save, the change stays in memory and the file holds either version.
    pub async fn upsert(&mut self, config: TopicConfig) -> Result<(), MetadataError> {
        if self.topics.get(&config.topic_name) == Some(&config) {
            return Ok(());
        }
        let version_before = self.data_version;
        let topic = config.topic_name.clone();
        let config_before = self.topics.insert(topic.clone(), config);
        self.data_version = version_before.next(self.clock.now_ms());
        if let Err(error) = self.save().await {
            self.data_version = version_before;
            match config_before {
                Some(config) => self.topics.insert(topic, config),
                None => self.topics.remove(&topic),
            };
            return Err(error);
        }
        Ok(())
    }

    /// Removes `topic` and saves the table before returning its config; `Ok(None)` (and no I/O)
    /// when there was no such topic. Rolled back on error, like [`upsert`](Self::upsert).
    pub async fn remove(&mut self, topic: &str) -> Result<Option<TopicConfig>, MetadataError> {
        let Some((key, config)) = self.topics.remove_entry(topic) else {
            return Ok(None);
        };
        let version_before = self.data_version;
        self.data_version = version_before.next(self.clock.now_ms());
        if let Err(error) = self.save().await {
            self.data_version = version_before;
            self.topics.insert(key, config);
            return Err(error);
        }
        Ok(Some(config))
    }

    /// Makes the table exactly `configs` (keyed by their names; of two configs with one name the
    /// later wins) and saves it before returning whether anything changed. An identical table is
    /// a no-op (no version bump, no I/O).
    ///
    /// A slave copies its master's table this way: one save and one version step per sync
    /// rather than one per changed topic, so the file and the NameServer never see a half-copied
    /// table. Rolled back on error, like [`upsert`](Self::upsert).
    pub async fn replace_all(
        &mut self,
        configs: impl IntoIterator<Item = TopicConfig>,
    ) -> Result<bool, MetadataError> {
        let topics: BTreeMap<String, TopicConfig> = configs
            .into_iter()
            .map(|config| (config.topic_name.clone(), config))
            .collect();
        if topics == self.topics {
            return Ok(false);
        }
        let version_before = self.data_version;
        let topics_before = std::mem::replace(&mut self.topics, topics);
        self.data_version = version_before.next(self.clock.now_ms());
        if let Err(error) = self.save().await {
            self.data_version = version_before;
            self.topics = topics_before;
            return Err(error);
        }
        Ok(true)
    }

    /// A copy of the table for the REGISTER_BROKER body.
    pub fn to_wrapper(&self) -> TopicConfigSerializeWrapper {
        TopicConfigSerializeWrapper {
            data_version: self.data_version,
            topic_config_table: self.topics.clone(),
        }
    }

    async fn save(&mut self) -> Result<(), MetadataError> {
        let document = TopicConfigWrapperRef {
            data_version: self.data_version,
            topic_config_table: &self.topics,
        };
        self.file.store(&document).await
    }
}

impl<'a, S: Storage> IntoIterator for &'a TopicConfigTable<S> {
    type Item = &'a TopicConfig;
    type IntoIter = std::collections::btree_map::Values<'a, String, TopicConfig>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Serializes like [`ConsumerOffsetBody`] (`{"offsetTable":{...}}`) without cloning the offsets;
/// keys sorted so equal tables give byte-identical files.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConsumerOffsetRef<'a> {
    offset_table: BTreeMap<&'a str, &'a BTreeMap<i32, i64>>,
}

/// Committed consume offsets per (consumer group, topic, queue id) (`consumerOffset.json`).
///
/// Keyed in memory as on disk, by RocketMQ's `"topic@group"`, so any names round-trip exactly.
/// [`commit`](Self::commit) and [`query`](Self::query) build that key in a reusable buffer
/// instead of allocating; a two-level group → topic map would avoid the buffer but would have to
/// split keys on load, which is ambiguous for a name containing `@`. The per-group operations
/// ([`remove_group`](Self::remove_group), [`groups_of_topic`](Self::groups_of_topic)) scan all
/// keys: they are admin and rebalance paths, not per-message ones.
///
/// Commits are in memory only; [`persist`](Self::persist) saves them when anything changed. A
/// crash loses at most the commits since the last persist, which consumers re-consume (RocketMQ's
/// at-least-once contract).
pub struct ConsumerOffsetTable<S: Storage> {
    file: MetadataFile<S>,
    /// `"topic@group"` → queue id → next offset to consume.
    offsets: HashMap<String, BTreeMap<i32, i64>>,
    /// Scratch for building `"topic@group"` lookup keys; it keeps its capacity between calls, so
    /// after warm-up lookups do not allocate. A `Cell` (taken and put back, never borrowed) so
    /// [`query`](Self::query) can use it through `&self`.
    key_buffer: Cell<String>,
    /// Whether memory holds commits the file does not. Cleared only by a successful save.
    dirty: bool,
}

impl<S: Storage> fmt::Debug for ConsumerOffsetTable<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerOffsetTable")
            .field("file", &self.file)
            .field("keys", &self.offsets.len())
            .field("dirty", &self.dirty)
            .finish_non_exhaustive()
    }
}

impl<S: Storage> ConsumerOffsetTable<S> {
    /// Loads the offsets at `path`, or starts empty when there is no file.
    pub async fn open(storage: S, path: impl Into<PathBuf>) -> Result<Self, MetadataError> {
        let mut file = MetadataFile::new(storage, path);
        let body: ConsumerOffsetBody = file.load().await?.unwrap_or_default();
        Ok(Self {
            file,
            offsets: body.offset_table.into_iter().collect(),
            key_buffer: Cell::new(String::new()),
            dirty: false,
        })
    }

    /// Records `offset` as the next offset `group` consumes from `topic`'s queue `queue_id`.
    /// Memory only: no allocation when the entry exists (a new key or queue id allocates once).
    /// Marks the table dirty only when the stored offset changes.
    pub fn commit(&mut self, group: &str, topic: &str, queue_id: i32, offset: i64) {
        let mut key = self.key_buffer.take();
        build_key(&mut key, topic, group);
        if let Some(queues) = self.offsets.get_mut(key.as_str()) {
            if queues.insert(queue_id, offset) != Some(offset) {
                self.dirty = true;
            }
            self.key_buffer.set(key);
        } else {
            // The buffer becomes the map's key; the next lookup grows a fresh one.
            self.offsets
                .insert(key, BTreeMap::from([(queue_id, offset)]));
            self.dirty = true;
        }
    }

    /// The committed offset of `group` on `topic`'s queue `queue_id`.
    pub fn query(&self, group: &str, topic: &str, queue_id: i32) -> Option<i64> {
        let mut key = self.key_buffer.take();
        build_key(&mut key, topic, group);
        let offset = self
            .offsets
            .get(key.as_str())
            .and_then(|queues| queues.get(&queue_id).copied());
        self.key_buffer.set(key);
        offset
    }

    /// Forgets the entry of `group` on `topic`'s queue `queue_id` if it still holds `offset`;
    /// returns whether it did. A slave forgets an offset it handed to its master this way, and
    /// keeps one committed again since it took the value.
    pub fn forget(&mut self, group: &str, topic: &str, queue_id: i32, offset: i64) -> bool {
        let mut key = self.key_buffer.take();
        build_key(&mut key, topic, group);
        let mut forgotten = false;
        if let Some(queues) = self.offsets.get_mut(key.as_str())
            && queues.get(&queue_id) == Some(&offset)
        {
            queues.remove(&queue_id);
            if queues.is_empty() {
                self.offsets.remove(key.as_str());
            }
            self.dirty = true;
            forgotten = true;
        }
        self.key_buffer.set(key);
        forgotten
    }

    /// Whether the table holds no offset at all.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Forgets every offset of `group` (DELETE_SUBSCRIPTIONGROUP); returns how many topics it had.
    pub fn remove_group(&mut self, group: &str) -> usize {
        let before = self.offsets.len();
        self.offsets
            .retain(|key, _| split_key(key).is_none_or(|(_, key_group)| key_group != group));
        let removed = before - self.offsets.len();
        if removed > 0 {
            self.dirty = true;
        }
        removed
    }

    /// The groups with offsets on `topic`, sorted (so callers and tests see a stable order).
    pub fn groups_of_topic(&self, topic: &str) -> Vec<&str> {
        let mut groups: Vec<&str> = self
            .offsets
            .keys()
            .filter_map(|key| split_key(key))
            .filter(|(key_topic, _)| *key_topic == topic)
            .map(|(_, group)| group)
            .collect();
        groups.sort_unstable();
        groups
    }

    /// A copy of all offsets, for the GET_ALL_CONSUMER_OFFSET body.
    pub fn to_body(&self) -> ConsumerOffsetBody {
        ConsumerOffsetBody {
            offset_table: self
                .offsets
                .iter()
                .map(|(key, queues)| (key.clone(), queues.clone()))
                .collect(),
        }
    }

    /// Whether there are commits the file does not hold yet.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Saves the offsets if anything changed since the last successful save (the broker calls
    /// this every 5 s and at shutdown). The table stays dirty when the save fails, so the next
    /// call retries.
    pub async fn persist(&mut self) -> Result<(), MetadataError> {
        if !self.dirty {
            return Ok(());
        }
        let document = ConsumerOffsetRef {
            offset_table: self
                .offsets
                .iter()
                .map(|(key, queues)| (key.as_str(), queues))
                .collect(),
        };
        self.file.store(&document).await?;
        self.dirty = false;
        Ok(())
    }
}

/// Writes RocketMQ's `"topic@group"` key into `key`, reusing its capacity.
fn build_key(key: &mut String, topic: &str, group: &str) {
    key.clear();
    key.reserve(topic.len() + 1 + group.len());
    key.push_str(topic);
    key.push('@');
    key.push_str(group);
}

/// Splits `"topic@group"` at the first `@`. RocketMQ's name rules (`[%|a-zA-Z0-9_-]`) exclude
/// `@`, so for valid names the split is unambiguous.
fn split_key(key: &str) -> Option<(&str, &str)> {
    key.split_once('@')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{CrashMode, FaultPlan, MemStorage, UringStorage};

    fn run<F: Future>(future: F) -> F::Output {
        compio::runtime::Runtime::new().unwrap().block_on(future)
    }

    fn topic(name: &str, queues: i32) -> TopicConfig {
        TopicConfig {
            perm: 6,
            read_queue_nums: queues,
            write_queue_nums: queues,
            topic_name: name.to_owned(),
            ..TopicConfig::default()
        }
    }

    /// A file image with a valid header over `payload`.
    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut image = METADATA_MAGIC.to_vec();
        image.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        image.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
        image.extend_from_slice(payload);
        image
    }

    fn assert_corrupt(
        result: Result<impl fmt::Debug, MetadataError>,
        expected: &Path,
        needle: &str,
    ) {
        match result {
            Err(MetadataError::Corrupt { path, reason }) => {
                assert_eq!(path, expected);
                assert!(
                    reason.contains(needle),
                    "reason {reason:?} lacks {needle:?}"
                );
            }
            other => panic!(
                "expected Corrupt naming {}, got {other:?}",
                expected.display()
            ),
        }
    }

    #[test]
    fn topic_table_round_trips_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topics.json");
        run(async {
            let mut table = TopicConfigTable::open(UringStorage::new(), &path)
                .await
                .unwrap();
            assert!(table.is_empty());
            assert_eq!(table.data_version(), DataVersion::default());
            table.upsert(topic("TopicTest", 4)).await.unwrap();
            table.upsert(topic("TBW102", 8)).await.unwrap();
            table.upsert(topic("Gone", 1)).await.unwrap();
            assert_eq!(table.remove("Gone").await.unwrap(), Some(topic("Gone", 1)));
            assert_eq!(table.remove("Gone").await.unwrap(), None);
            assert_eq!(table.data_version().counter, 4);
            // Rewriting an identical config changes nothing.
            table.upsert(topic("TBW102", 8)).await.unwrap();
            assert_eq!(table.data_version().counter, 4);
            let wrapper = table.to_wrapper();
            drop(table);

            let table = TopicConfigTable::open(UringStorage::new(), &path)
                .await
                .unwrap();
            assert_eq!(table.to_wrapper(), wrapper);
            assert_eq!(table.len(), 2);
            assert_eq!(table.get("TopicTest"), Some(&topic("TopicTest", 4)));
            let names: Vec<&str> = table
                .iter()
                .map(|config| config.topic_name.as_str())
                .collect();
            assert_eq!(names, ["TBW102", "TopicTest"]);
        });
        // The payload is exactly the wrapper's JSON (the topics.json shape).
        let image = std::fs::read(&path).unwrap();
        let payload: TopicConfigSerializeWrapper =
            serde_json::from_slice(&image[METADATA_HEADER_BYTES..]).unwrap();
        assert_eq!(payload.topic_config_table.len(), 2);
        assert!(
            std::str::from_utf8(&image[METADATA_HEADER_BYTES..])
                .unwrap()
                .starts_with(r#"{"dataVersion":{"counter":4,"#)
        );
    }

    #[test]
    fn offset_table_round_trips_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consumerOffset.json");
        run(async {
            let mut table = ConsumerOffsetTable::open(UringStorage::new(), &path)
                .await
                .unwrap();
            assert!(!table.is_dirty());
            table.commit("g1", "t1", 0, 12);
            table.commit("g1", "t1", 1, 7);
            table.commit("g2", "t1", 0, 3);
            table.commit("g1", "t2", 3, 99);
            table.commit("g1", "t1", 0, 13);
            assert!(table.is_dirty());
            assert_eq!(table.query("g1", "t1", 0), Some(13));
            assert_eq!(table.query("g1", "t1", 2), None);
            assert_eq!(table.query("g3", "t1", 0), None);
            assert_eq!(table.groups_of_topic("t1"), ["g1", "g2"]);
            table.persist().await.unwrap();
            assert!(!table.is_dirty());
            // Committing the same offset again is not a change.
            table.commit("g1", "t1", 0, 13);
            assert!(!table.is_dirty());
            let body = table.to_body();
            drop(table);

            let mut table = ConsumerOffsetTable::open(UringStorage::new(), &path)
                .await
                .unwrap();
            assert_eq!(table.to_body(), body);
            assert_eq!(table.query("g1", "t2", 3), Some(99));
            assert_eq!(table.remove_group("g1"), 2);
            assert_eq!(table.remove_group("g1"), 0);
            assert!(table.is_dirty());
            table.persist().await.unwrap();
            drop(table);

            let table = ConsumerOffsetTable::open(UringStorage::new(), &path)
                .await
                .unwrap();
            assert_eq!(table.groups_of_topic("t1"), ["g2"]);
            assert_eq!(table.query("g1", "t1", 0), None);
            assert_eq!(table.query("g2", "t1", 0), Some(3));
        });
        let image = std::fs::read(&path).unwrap();
        assert_eq!(
            &image[METADATA_HEADER_BYTES..],
            br#"{"offsetTable":{"t1@g2":{"0":3}}}"#
        );
    }

    #[test]
    fn forget_removes_an_offset_only_while_it_holds_the_value() {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let mut table =
                ConsumerOffsetTable::open(UringStorage::new(), dir.path().join("pending.json"))
                    .await
                    .unwrap();
            table.commit("g", "t", 0, 5);
            table.commit("g", "t", 1, 8);
            table.persist().await.unwrap();
            assert!(!table.forget("g", "t", 0, 4), "committed again since");
            assert!(!table.forget("g", "t", 2, 5), "no such queue");
            assert!(!table.forget("h", "t", 0, 5), "no such group");
            assert!(!table.is_dirty());
            assert!(table.forget("g", "t", 0, 5));
            assert_eq!(table.query("g", "t", 0), None);
            assert_eq!(table.query("g", "t", 1), Some(8));
            assert!(table.is_dirty());
            assert!(table.forget("g", "t", 1, 8));
            assert!(table.is_empty());
            assert_eq!(table.groups_of_topic("t"), Vec::<&str>::new());
        });
    }

    #[test]
    fn missing_file_is_an_empty_table() {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let topics =
                TopicConfigTable::open(UringStorage::new(), dir.path().join("topics.json"))
                    .await
                    .unwrap();
            assert!(topics.is_empty());
            let mut offsets = ConsumerOffsetTable::open(
                UringStorage::new(),
                dir.path().join("consumerOffset.json"),
            )
            .await
            .unwrap();
            assert_eq!(offsets.query("g", "t", 0), None);
            // Nothing changed, so nothing is written.
            offsets.persist().await.unwrap();
        });
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn damaged_files_are_corrupt_and_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topics.json");
        let good = run(async {
            let mut table = TopicConfigTable::open(UringStorage::new(), &path)
                .await
                .unwrap();
            table.upsert(topic("TopicTest", 4)).await.unwrap();
            std::fs::read(&path).unwrap()
        });
        let payload_bytes = good.len() - METADATA_HEADER_BYTES;

        let torn = &good[..METADATA_HEADER_BYTES + payload_bytes / 2];
        let mut flipped = good.clone();
        flipped[METADATA_HEADER_BYTES + payload_bytes / 2] ^= 0x01;
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        let garbage_json = framed(b"{\"dataVersion\": nope}");
        let wrong_shape = framed(br#"{"topicConfigTable":[1,2]}"#);
        let mut trailing = good.clone();
        trailing.push(0);
        let mislabelled = framed(br#"{"topicConfigTable":{"A":{"topicName":"B","perm":6}}}"#);
        let oversized = {
            let mut image = good.clone();
            image[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
            image
        };
        let cases: [(&str, &[u8], &str); 9] = [
            ("empty", &[], "shorter than the 16-byte header"),
            (
                "short header",
                &good[..10],
                "shorter than the 16-byte header",
            ),
            ("torn payload", torn, "torn"),
            ("flipped payload byte", &flipped, "CRC32C"),
            ("bad magic", &bad_magic, "bad magic"),
            (
                "garbage JSON with a valid CRC",
                &garbage_json,
                "does not decode",
            ),
            ("JSON of the wrong shape", &wrong_shape, "does not decode"),
            ("trailing bytes", &trailing, "trailing"),
            (
                "key and topic name differ",
                &mislabelled,
                "holds the config of topic",
            ),
        ];
        for (name, image, needle) in cases {
            std::fs::write(&path, image).unwrap();
            let result = run(TopicConfigTable::open(UringStorage::new(), &path));
            eprintln!("case: {name}");
            assert_corrupt(result, &path, needle);
        }
        std::fs::write(&path, &oversized).unwrap();
        assert_corrupt(
            run(TopicConfigTable::open(UringStorage::new(), &path)),
            &path,
            "cap",
        );

        // The offsets file goes through the same checks.
        let offsets_path = dir.path().join("consumerOffset.json");
        std::fs::write(&offsets_path, framed(br#"{"offsetTable":5}"#)).unwrap();
        assert_corrupt(
            run(ConsumerOffsetTable::open(
                UringStorage::new(),
                &offsets_path,
            )),
            &offsets_path,
            "does not decode",
        );
    }

    #[test]
    fn leftover_tmp_is_ignored_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consumerOffset.json");
        let tmp_path = dir.path().join("consumerOffset.json.tmp");
        run(async {
            let mut table = ConsumerOffsetTable::open(UringStorage::new(), &path)
                .await
                .unwrap();
            table.commit("g", "t", 0, 5);
            table.persist().await.unwrap();
        });
        // An unfinished save: half a document, and a longer one than the next save writes.
        std::fs::write(&tmp_path, vec![b'x'; 4096]).unwrap();
        run(async {
            let mut table = ConsumerOffsetTable::open(UringStorage::new(), &path)
                .await
                .unwrap();
            assert_eq!(table.query("g", "t", 0), Some(5));
            assert!(!tmp_path.exists());
            // A stale temporary longer than the new document is truncated, not overlaid.
            std::fs::write(&tmp_path, vec![b'x'; 4096]).unwrap();
            table.commit("g", "t", 0, 6);
            table.persist().await.unwrap();
        });
        assert!(!tmp_path.exists());
        let table = run(ConsumerOffsetTable::open(UringStorage::new(), &path)).unwrap();
        assert_eq!(table.query("g", "t", 0), Some(6));
    }

    /// Every crash point of a save, in both crash modes, leaves a loadable document that is
    /// either the previous or the new one; the crash between writing the temporary and the
    /// rename leaves the previous one intact.
    #[test]
    fn crash_at_any_step_of_a_save_leaves_a_whole_document() {
        let path = Path::new("/store/config/topics.json");
        let tmp_path = Path::new("/store/config/topics.json.tmp");
        // A clock that stands still: every run stamps the same data versions.
        let clock = Clock::manual(1_700_000_000_000);
        let before = run(async {
            let storage = MemStorage::new();
            let mut table = TopicConfigTable::open_with_clock(storage, path, clock.clone())
                .await
                .unwrap();
            table.upsert(topic("Old", 4)).await.unwrap();
            table.to_wrapper()
        });
        let same_as_before = |wrapper: &TopicConfigSerializeWrapper| *wrapper == before;
        let mut saw_previous_after_tmp_written = false;
        let mut saw_new = false;
        for seed in 0..8_u64 {
            for crash_after_ops in 1..=16_u64 {
                for mode in [CrashMode::LoseUnsynced, CrashMode::TornPrefix] {
                    let recovered = run(async {
                        let storage = MemStorage::with_faults(FaultPlan {
                            seed,
                            ..FaultPlan::default()
                        });
                        let mut table =
                            TopicConfigTable::open_with_clock(storage.clone(), path, clock.clone())
                                .await
                                .unwrap();
                        table.upsert(topic("Old", 4)).await.unwrap();
                        let ops_before_save = storage.ops();
                        storage.set_faults(FaultPlan {
                            seed,
                            crash_after_ops: Some(ops_before_save + crash_after_ops),
                            ..FaultPlan::default()
                        });
                        let saved = table.upsert(topic("New", 8)).await;
                        assert_eq!(saved.is_ok(), !storage.has_crashed());
                        if saved.is_err() {
                            // Rolled back: a failed change is not served.
                            assert!(same_as_before(&table.to_wrapper()));
                        }
                        let tmp_written = storage
                            .file_contents(tmp_path)
                            .is_some_and(|contents| !contents.is_empty());
                        let image = storage.crash_image(mode);
                        let recovered = TopicConfigTable::open(image.clone(), path).await.unwrap();
                        assert!(image.file_contents(tmp_path).is_none(), "tmp not removed");
                        (recovered.to_wrapper(), tmp_written)
                    });
                    let (wrapper, tmp_written) = recovered;
                    if same_as_before(&wrapper) {
                        saw_previous_after_tmp_written |= tmp_written;
                    } else {
                        assert!(wrapper.topic_config_table.contains_key("New"));
                        assert_eq!(
                            wrapper.data_version,
                            before.data_version.next(clock.now_ms())
                        );
                        saw_new = true;
                    }
                }
            }
        }
        assert!(
            saw_previous_after_tmp_written,
            "no crash fell between tmp write and rename"
        );
        assert!(saw_new, "no crash fell after the rename");
    }

    /// A whole-table replacement is one save and one version step, a no-op when nothing
    /// differs, and rolled back (memory and file) when its save fails.
    #[test]
    fn replace_all_saves_once_and_rolls_back_on_failure() {
        let path = Path::new("/store/config/topics.json");
        run(async {
            let storage = MemStorage::new();
            let mut table = TopicConfigTable::open(storage.clone(), path).await.unwrap();
            table.upsert(topic("Kept", 4)).await.unwrap();
            table.upsert(topic("Gone", 1)).await.unwrap();
            let counter = table.data_version().counter;

            let changed = table
                .replace_all([topic("Kept", 8), topic("New", 2)])
                .await
                .unwrap();
            assert!(changed);
            assert_eq!(table.data_version().counter, counter + 1);
            let names: Vec<&str> = table.iter().map(|c| c.topic_name.as_str()).collect();
            assert_eq!(names, ["Kept", "New"]);
            assert_eq!(table.get("Kept"), Some(&topic("Kept", 8)));

            // The same table again: nothing written, no version step.
            let ops = storage.ops();
            let changed = table
                .replace_all([topic("New", 2), topic("Kept", 8)])
                .await
                .unwrap();
            assert!(!changed);
            assert_eq!(storage.ops(), ops);
            assert_eq!(table.data_version().counter, counter + 1);

            let before = table.to_wrapper();
            let file_before = storage.file_contents(path).unwrap();
            storage.set_faults(FaultPlan {
                fail_sync_at: Some(storage.sync_calls() + 1),
                ..FaultPlan::default()
            });
            assert!(table.replace_all([topic("Other", 1)]).await.is_err());
            assert_eq!(table.to_wrapper(), before);
            assert_eq!(storage.file_contents(path).unwrap(), file_before);

            let reopened =
                TopicConfigTable::open(storage.crash_image(CrashMode::LoseUnsynced), path)
                    .await
                    .unwrap();
            assert_eq!(reopened.to_wrapper(), before);
        });
    }

    #[test]
    fn failed_sync_never_renames_and_offsets_stay_dirty() {
        let path = Path::new("/store/config/consumerOffset.json");
        run(async {
            let storage = MemStorage::new();
            let mut table = ConsumerOffsetTable::open(storage.clone(), path)
                .await
                .unwrap();
            table.commit("g", "t", 0, 1);
            table.persist().await.unwrap();
            let previous = storage.file_contents(path).unwrap();

            table.commit("g", "t", 0, 2);
            storage.set_faults(FaultPlan {
                fail_sync_at: Some(2),
                ..FaultPlan::default()
            });
            let error = table.persist().await.unwrap_err();
            assert!(
                matches!(&error, MetadataError::Io { path: failed, .. } if failed.ends_with("consumerOffset.json.tmp")),
                "{error:?}"
            );
            assert!(table.is_dirty());
            assert_eq!(storage.file_contents(path).unwrap(), previous);

            // The next persist retries and succeeds.
            table.persist().await.unwrap();
            assert!(!table.is_dirty());
            let reopened =
                ConsumerOffsetTable::open(storage.crash_image(CrashMode::LoseUnsynced), path)
                    .await
                    .unwrap();
            assert_eq!(reopened.query("g", "t", 0), Some(2));
        });
    }

    #[test]
    fn bit_rot_under_mem_storage_is_corrupt() {
        let path = Path::new("/store/config/consumerOffset.json");
        run(async {
            let storage = MemStorage::new();
            let mut table = ConsumerOffsetTable::open(storage.clone(), path)
                .await
                .unwrap();
            table.commit("g", "t", 0, 1);
            table.persist().await.unwrap();
            storage.corrupt(path, METADATA_HEADER_BYTES as u64 + 3, b"X");
            assert_corrupt(
                ConsumerOffsetTable::open(storage.clone(), path).await,
                path,
                "CRC32C",
            );
        });
    }

    #[test]
    fn tmp_path_appends_to_the_file_name() {
        let file = MetadataFile::new(UringStorage::new(), "/store/config/topics.json");
        assert_eq!(file.tmp_path, Path::new("/store/config/topics.json.tmp"));
        assert_eq!(file.dir_path, Path::new("/store/config"));
        let bare = MetadataFile::new(UringStorage::new(), "topics.json");
        assert_eq!(bare.dir_path, Path::new("."));
    }

    #[test]
    fn image_matches_the_documented_layout() {
        let image = encode_image(&serde_json::json!({"a": 1})).unwrap();
        assert_eq!(&image[..8], b"RMQMETA1");
        assert_eq!(&image[8..12], &7_u32.to_be_bytes());
        assert_eq!(&image[12..16], &crc32c::crc32c(br#"{"a":1}"#).to_be_bytes());
        assert_eq!(&image[16..], br#"{"a":1}"#);
        assert_eq!(&image[..], &framed(br#"{"a":1}"#)[..]);
    }
}
