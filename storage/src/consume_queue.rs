//! One consume queue: the index of a (topic, queueId) into the commit log.
//!
//! Entries `[min_offset, next_offset)` exist. The newest ones live in memory (`mem`, from
//! `mem_start`); everything below `flushed` is also in the queue's files, one file per
//! `entries_per_file` entries, named by the queue offset of its first entry. Entries are only
//! ever appended, and their physical offsets grow with the queue offset (a queue belongs to one
//! shard, whose commit log is append-only).

use std::{
    collections::{BTreeMap, VecDeque},
    path::PathBuf,
    rc::Rc,
};

use crate::format::CqEntry;

/// In-memory state of one consume queue.
#[derive(Debug)]
pub(crate) struct ConsumeQueue<F> {
    pub topic: Rc<str>,
    pub queue_id: i32,
    /// `consumequeue/<topic>/<queueId>`.
    pub dir: PathBuf,
    pub entries_per_file: u64,
    /// First entry still readable (retention moves it up).
    pub min_offset: u64,
    /// Entries below this are written to the queue's files.
    pub flushed: u64,
    mem_start: u64,
    mem: VecDeque<CqEntry>,
    /// Files by first queue offset; `None` until first opened.
    pub files: BTreeMap<u64, Option<F>>,
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
