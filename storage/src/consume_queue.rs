//! One consume queue: the index of a (topic, queueId) into the commit log.
//!
//! Entries `[min_offset, next_offset)` exist. The newest ones live in memory (`mem`, from
//! `mem_start`); everything below `flushed` is also in the queue's files, one file per
//! `entries_per_file` entries, named by the queue offset of its first entry. Entries are only
//! ever appended, and their physical offsets grow with the queue offset (a queue belongs to one
//! shard, whose commit log is append-only).

use std::{
    collections::{BTreeMap, VecDeque},
    path::{Path, PathBuf},
    rc::Rc,
};

use ringmq_protocol::message::tags_hash;

use crate::format::CqEntry;

/// In-memory state of one consume queue.
///
/// Invariants: `mem_start <= flushed <= next_offset()` and `min_offset <= next_offset()`;
/// entries below `mem_start` are only in the files, and `files` has a key for every file of
/// the queue on disk that a read may still need.
#[derive(Debug)]
pub(crate) struct ConsumeQueue<F> {
    topic: Rc<str>,
    queue_id: i32,
    /// `consumequeue/<topic>/<queueId>`.
    dir: PathBuf,
    entries_per_file: u64,
    /// First entry still readable (retention moves it up).
    min_offset: u64,
    /// Entries below this are written to the queue's files.
    flushed: u64,
    mem_start: u64,
    mem: VecDeque<CqEntry>,
    /// Files by first queue offset; `None` until first opened.
    files: BTreeMap<u64, Option<F>>,
}

impl<F: Clone> ConsumeQueue<F> {
    /// An empty queue whose next entry gets queue offset `next_offset`.
    pub fn new(
        topic: Rc<str>,
        queue_id: i32,
        dir: PathBuf,
        entries_per_file: u64,
        min_offset: u64,
        next_offset: u64,
    ) -> Self {
        Self {
            topic,
            queue_id,
            dir,
            entries_per_file,
            min_offset: min_offset.min(next_offset),
            flushed: next_offset,
            mem_start: next_offset,
            mem: VecDeque::new(),
            files: BTreeMap::new(),
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The queue id.
    pub fn queue_id(&self) -> i32 {
        self.queue_id
    }

    /// The queue's directory, `consumequeue/<topic>/<queueId>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Entries per queue file.
    pub fn entries_per_file(&self) -> u64 {
        self.entries_per_file
    }

    /// First entry still readable.
    pub fn min_offset(&self) -> u64 {
        self.min_offset
    }

    /// Moves the first readable entry up to `offset` (retention); never down.
    pub fn advance_min(&mut self, offset: u64) {
        self.min_offset = self.min_offset.max(offset);
    }

    /// Whether the queue never held anything: no entry and no file. Such a queue starts
    /// wherever its first record says (its older entries were removed by retention).
    pub fn is_untouched(&self) -> bool {
        self.next_offset() == self.min_offset && self.files.is_empty()
    }

    /// The open handle of the file starting at `file_start`, if it was opened.
    pub fn open_file(&self, file_start: u64) -> Option<F> {
        self.files.get(&file_start).cloned().flatten()
    }

    /// Records the queue file starting at `file_start`: open (`Some`) or only known to exist.
    pub fn set_file(&mut self, file_start: u64, file: Option<F>) {
        self.files.insert(file_start, file);
    }

    /// Forgets the files whose entries all lie below `offset`; returns their starts, for the
    /// caller to remove from disk.
    pub fn forget_files_below(&mut self, offset: u64) -> Vec<u64> {
        let per_file = self.entries_per_file;
        let doomed: Vec<u64> = self
            .files
            .keys()
            .copied()
            .filter(|start| start + per_file <= offset)
            .collect();
        for start in &doomed {
            self.files.remove(start);
        }
        doomed
    }

    /// Queue offset the next entry gets.
    pub fn next_offset(&self) -> u64 {
        self.mem_start + self.mem.len() as u64
    }

    /// Appends an entry.
    pub fn push(&mut self, entry: CqEntry) {
        self.mem.push_back(entry);
    }

    /// Starts the queue at `offset` when it has no entries (recovery of a queue whose older
    /// entries were deleted by retention).
    pub fn restart_at(&mut self, offset: u64) {
        debug_assert!(self.mem.is_empty());
        self.min_offset = offset;
        self.flushed = offset;
        self.mem_start = offset;
    }

    /// The entry at `offset` if it is held in memory.
    pub fn in_memory(&self, offset: u64) -> Option<CqEntry> {
        let index = offset.checked_sub(self.mem_start)?;
        self.mem.get(index as usize).copied()
    }

    /// First offset held in memory.
    pub fn mem_start(&self) -> u64 {
        self.mem_start
    }

    /// The offset one past the newest entry whose record ends at or below `confirmed`: the
    /// queue's max offset as readers see it.
    pub fn visible_next(&self, confirmed: u64) -> u64 {
        let unconfirmed = self
            .mem
            .iter()
            .rev()
            .take_while(|entry| entry.end() > confirmed)
            .count();
        self.next_offset() - unconfirmed as u64
    }

    /// Encoded entries `[flushed, upto)` grouped by file: `(file start, first offset, bytes)`.
    pub fn unflushed(&self, upto: u64) -> Vec<(u64, u64, Vec<u8>)> {
        let mut out: Vec<(u64, u64, Vec<u8>)> = Vec::new();
        for offset in self.flushed..upto.min(self.next_offset()) {
            let Some(entry) = self.in_memory(offset) else {
                continue;
            };
            let file_start = offset - offset % self.entries_per_file;
            match out.last_mut() {
                Some((start, _, bytes)) if *start == file_start => {
                    bytes.extend_from_slice(&entry.encode());
                }
                _ => out.push((file_start, offset, entry.encode().to_vec())),
            }
        }
        out
    }

    /// Records that entries below `upto` are in files, and drops from memory what exceeds
    /// `keep_entries` among the flushed ones.
    pub fn mark_flushed(&mut self, upto: u64, keep_entries: usize) {
        self.flushed = self.flushed.max(upto.min(self.next_offset()));
        while self.mem.len() > keep_entries && self.mem_start < self.flushed {
            self.mem.pop_front();
            self.mem_start += 1;
        }
    }

    /// First queue offset of the file holding `offset`.
    pub fn file_start(&self, offset: u64) -> u64 {
        offset - offset % self.entries_per_file
    }
}

/// The tags hash of a record's properties (0 without TAGS), as the consume queue stores it.
///
/// A byte scan for `TAGS\u{1}` at a field start (the hot path runs this once per append); the
/// last occurrence wins, as in Java's map. Agrees with `Properties::get(TAGS)` (tested).
pub(crate) fn record_tags_hash(properties: &str) -> i64 {
    const NAME: &[u8] = b"TAGS\x01";
    let bytes = properties.as_bytes();
    let mut found: Option<&str> = None;
    let mut field_start = 0;
    while field_start < bytes.len() {
        let field_end = bytes[field_start..]
            .iter()
            .position(|&b| b == 2)
            .map_or(bytes.len(), |at| field_start + at);
        let field = &bytes[field_start..field_end];
        if field.len() > NAME.len() && field.starts_with(NAME) {
            // Both ends are ASCII separators, so the slice is on char boundaries.
            found = properties.get(field_start + NAME.len()..field_end);
        }
        field_start = field_end + 1;
    }
    found.map_or(0, tags_hash)
}

#[cfg(test)]
mod tests {
    use ringmq_protocol::message::properties::{Properties, keys};

    use super::record_tags_hash;

    #[test]
    fn tags_hash_scan_agrees_with_the_properties_parser() {
        for text in [
            "",
            "TAGS\u{1}TagA",
            "KEYS\u{1}k\u{2}TAGS\u{1}TagA\u{2}WAIT\u{1}true\u{2}",
            "TAGS\u{1}first\u{2}TAGS\u{1}second",
            "XTAGS\u{1}no\u{2}",
            "TAGS\u{1}\u{2}",
            "TAGS",
            "KEYS\u{1}TAGS\u{1}x",
            "TAGS\u{1}标签\u{2}",
        ] {
            let expected = Properties::new(text)
                .get(keys::TAGS)
                .map_or(0, ringmq_protocol::message::tags_hash);
            assert_eq!(record_tags_hash(text), expected, "{text:?}");
        }
    }
}
