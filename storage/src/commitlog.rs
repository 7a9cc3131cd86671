//! The commit log's in-memory state: segments, the chunk being filled, writes waiting for the
//! writer task, the written/durable marks and the cache of recently written chunks.
//!
//! This module does no I/O itself: the store's writer and flusher tasks take work from it and
//! report back. That keeps every state change synchronous (no `RefCell` borrow is ever held
//! across an `.await`) and makes the rules easy to state:
//!
//! - `durable <= written <= write_pos`; all three only grow (recovery, retention and
//!   [`LogState::restart_at`] aside).
//! - Bytes in `[written, write_pos)` are in the open chunk or in `sealed`, in position order.
//! - A record never spans two chunks and a chunk never spans two segments.
//! - `segments` is a contiguous run in position order and never empty once the store is open;
//!   the last one is the active segment.

use std::{collections::VecDeque, path::PathBuf, rc::Rc};

use bytes::{BufMut, Bytes, BytesMut};

use crate::format::{CHUNK_HEADER_BYTES, ChunkHeader, is_end_marker, write_chunk_header};

/// One segment file of the commit log. Immutable once made: shared (`Rc`) by the log, pending
/// writes and readers, and removed from disk only after the log forgot it.
#[derive(Debug)]
pub(crate) struct Segment<F> {
    /// Physical offset of the segment's first byte (its file name).
    start: u64,
    /// The open file.
    file: F,
    /// Its path, for errors and removal.
    path: PathBuf,
}

impl<F> Segment<F> {
    /// The segment starting at physical offset `start`, open as `file` at `path`.
    pub fn new(start: u64, file: F, path: PathBuf) -> Self {
        Self { start, file, path }
    }

    /// Physical offset of the segment's first byte.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The open file.
    pub fn file(&self) -> &F {
        &self.file
    }

    /// The file's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

/// Bytes ready to be written at `position` of `segment`.
///
/// The writer lends the bytes to the kernel ([`PendingWrite::take_bytes`]) and puts them back
/// when the write completes ([`PendingWrite::restore_bytes`]), so the cache of recent chunks
/// keeps the very buffer that was written: no copy.
#[derive(Debug)]
pub(crate) struct PendingWrite<F> {
    segment: Rc<Segment<F>>,
    position: u64,
    bytes: Bytes,
}

impl<F> PendingWrite<F> {
    /// Physical offset of the first byte.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The segment written to.
    pub fn segment(&self) -> &Segment<F> {
        &self.segment
    }

    /// Where the bytes go in the segment's file.
    pub fn file_offset(&self) -> u64 {
        self.position - self.segment.start
    }

    /// Takes the bytes out (for the write), leaving none.
    pub fn take_bytes(&mut self) -> Bytes {
        std::mem::take(&mut self.bytes)
    }

    /// Puts back the bytes a completed write returned.
    pub fn restore_bytes(&mut self, bytes: Bytes) {
        self.bytes = bytes;
    }

    fn end(&self) -> u64 {
        self.position + self.bytes.len() as u64
    }
}

/// What [`LogState::claim_spare`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpareClaim {
    /// A spare segment is ready.
    Ready,
    /// Another task is creating it.
    Busy,
    /// The caller must create the segment starting here and report with
    /// [`LogState::spare_created`].
    Create(u64),
}

#[derive(Debug)]
struct OpenChunk<F> {
    segment: Rc<Segment<F>>,
    position: u64,
    buf: BytesMut,
}

/// The append path needs a new segment before it can go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NeedSegment;

/// State of one shard's commit log.
#[derive(Debug)]
pub(crate) struct LogState<F> {
    segment_bytes: u64,
    max_chunk_bytes: usize,
    /// Segments in position order; the last one is being appended to.
    segments: VecDeque<Rc<Segment<F>>>,
    /// The next segment, created ahead of time so a roll does not wait for the filesystem.
    spare_segment: Option<Rc<Segment<F>>>,
    /// A task is creating the spare segment.
    preparing_segment: bool,
    /// Next physical offset to hand out.
    write_pos: u64,
    open: Option<OpenChunk<F>>,
    sealed: VecDeque<PendingWrite<F>>,
    /// Bytes appended and not yet written.
    pending_bytes: usize,
    /// A replicated end marker closed the active segment: the next bytes go to the next one.
    segment_ended: bool,
    /// Everything below is in the files (page cache).
    written: u64,
    /// Everything below is on disk (an fdatasync covered it).
    durable: u64,
    /// Segments written since the last fdatasync.
    dirty: Vec<Rc<Segment<F>>>,
    /// Writes issued to the files, in position order; `Some` once completed. `written` only
    /// moves over a completed prefix, so writes may complete in any order.
    in_flight: VecDeque<(u64, Option<PendingWrite<F>>)>,
    cache: VecDeque<(u64, Bytes)>,
    cache_bytes: usize,
    cache_limit_bytes: usize,
    pool: Vec<BytesMut>,
}

impl<F> LogState<F> {
    /// A log whose last segment is `segments.back()` and whose end is `end`.
    pub fn new(
        segment_bytes: u64,
        max_chunk_bytes: usize,
        cache_limit_bytes: usize,
        segments: VecDeque<Rc<Segment<F>>>,
        end: u64,
    ) -> Self {
        Self {
            segment_bytes,
            max_chunk_bytes,
            segments,
            spare_segment: None,
            preparing_segment: false,
            write_pos: end,
            open: None,
            sealed: VecDeque::new(),
            pending_bytes: 0,
            segment_ended: false,
            written: end,
            durable: end,
            dirty: Vec::new(),
            in_flight: VecDeque::new(),
            cache: VecDeque::new(),
            cache_bytes: 0,
            cache_limit_bytes,
            pool: Vec::new(),
        }
    }

    /// Next physical offset to hand out (the end of everything accepted, written or not).
    pub fn write_pos(&self) -> u64 {
        self.write_pos
    }

    /// Everything below is in the segment files (page cache).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Everything below is on disk.
    pub fn durable(&self) -> u64 {
        self.durable
    }

    /// Records that an fdatasync covered everything below `target` (a `written` value read
    /// before the sync started); returns the new durable mark.
    pub fn mark_durable(&mut self, target: u64) -> u64 {
        self.durable = self.durable.max(target);
        self.durable
    }

    /// Bytes accepted and not yet written (the backpressure measure).
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Starts of the oldest segment and of the one after it, when there are two: retention may
    /// remove the oldest (never the active one).
    pub fn oldest_removable(&self) -> Option<(u64, u64)> {
        match (self.segments.front(), self.segments.get(1)) {
            (Some(oldest), Some(next)) => Some((oldest.start, next.start)),
            _ => None,
        }
    }

    /// Whether a spare segment is ready, being made, or must be made (and then by the caller).
    pub fn claim_spare(&mut self) -> SpareClaim {
        if self.spare_segment.is_some() {
            SpareClaim::Ready
        } else if self.preparing_segment {
            SpareClaim::Busy
        } else {
            self.preparing_segment = true;
            SpareClaim::Create(self.next_segment_start())
        }
    }

    /// Ends a [`SpareClaim::Create`]: `segment` is the new spare, `None` when creating failed.
    pub fn spare_created(&mut self, segment: Option<Rc<Segment<F>>>) {
        self.preparing_segment = false;
        if segment.is_some() {
            self.spare_segment = segment;
        }
    }

    /// Whether the active segment takes no more bytes: closed by a replicated end marker, or
    /// with less room left than a chunk header. The log then continues at
    /// [`LogState::next_segment_start`].
    pub fn active_segment_done(&self) -> bool {
        self.segment_ended || self.next_segment_start() - self.write_pos < CHUNK_HEADER_BYTES as u64
    }

    /// One past the last byte accepted, or the next segment's start once the active one is
    /// done: where the log continues (and where a slave asks its master to continue).
    pub fn end(&self) -> u64 {
        if self.active_segment_done() {
            self.next_segment_start()
        } else {
            self.write_pos
        }
    }

    /// Records that a replicated end marker closed the active segment.
    pub fn end_segment(&mut self) {
        self.segment_ended = true;
    }

    /// Largest record that fits in an empty segment.
    pub fn max_record_bytes(&self) -> usize {
        (self.segment_bytes as usize).saturating_sub(2 * CHUNK_HEADER_BYTES)
    }

    /// Start of the segment after the active one.
    pub fn next_segment_start(&self) -> u64 {
        self.segments
            .back()
            .map_or(0, |segment| segment.start + self.segment_bytes)
    }

    /// The first physical offset still stored.
    pub fn min_offset(&self) -> u64 {
        self.segments.front().map_or(self.write_pos, |s| s.start)
    }

    /// Whether the active segment is past half full with no spare prepared: time to create one.
    pub fn wants_spare(&self) -> bool {
        self.spare_segment.is_none()
            && !self.preparing_segment
            && self.segments.back().is_some_and(|active| {
                self.write_pos.saturating_sub(active.start) > self.segment_bytes / 2
            })
    }

    /// Reserves `len` bytes of records in the open chunk, rolling to the spare segment when the
    /// active one is full. Returns the physical offset of the first reserved byte; the caller
    /// must then put exactly `len` bytes into [`LogState::chunk_buf`].
    pub fn reserve(&mut self, len: usize) -> Result<u64, NeedSegment> {
        if self
            .open
            .as_ref()
            .is_some_and(|open| open.buf.len() + len > self.max_chunk_bytes)
        {
            self.seal();
        }
        let header = if self.open.is_none() {
            CHUNK_HEADER_BYTES as u64
        } else {
            0
        };
        let active = self.segments.back().ok_or(NeedSegment)?;
        let segment_end = active.start + self.segment_bytes;
        if self.write_pos + header + len as u64 > segment_end {
            self.roll()?;
        }
        if self.open.is_none() {
            let Some(segment) = self.segments.back().cloned() else {
                return Err(NeedSegment);
            };
            let mut buf = self.pool.pop().unwrap_or_default();
            buf.clear();
            buf.reserve(self.max_chunk_bytes.min(len.max(64 << 10)) + CHUNK_HEADER_BYTES);
            buf.put_bytes(0, CHUNK_HEADER_BYTES);
            self.open = Some(OpenChunk {
                segment,
                position: self.write_pos,
                buf,
            });
            self.write_pos += CHUNK_HEADER_BYTES as u64;
            self.pending_bytes += CHUNK_HEADER_BYTES;
        }
        let position = self.write_pos;
        self.write_pos += len as u64;
        self.pending_bytes += len;
        Ok(position)
    }

    /// The open chunk's buffer, to encode reserved records into.
    pub fn chunk_buf(&mut self) -> Option<&mut BytesMut> {
        self.open.as_mut().map(|open| &mut open.buf)
    }

    /// Ends the active segment with an end marker and continues in the spare one.
    fn roll(&mut self) -> Result<(), NeedSegment> {
        let next = self.spare_segment.take().ok_or(NeedSegment)?;
        self.seal();
        let active_end = self.next_segment_start();
        if let Some(active) = self.segments.back().cloned()
            && active_end - self.write_pos >= CHUNK_HEADER_BYTES as u64
        {
            let mut marker = [0u8; CHUNK_HEADER_BYTES];
            write_chunk_header(&mut marker, self.write_pos, ChunkHeader::End);
            self.sealed.push_back(PendingWrite {
                segment: active,
                position: self.write_pos,
                bytes: Bytes::copy_from_slice(&marker),
            });
            self.pending_bytes += CHUNK_HEADER_BYTES;
        }
        debug_assert_eq!(next.start, active_end);
        self.write_pos = next.start;
        self.segments.push_back(next);
        Ok(())
    }

    /// Closes the open chunk: fills in its header, so the next append starts a new chunk.
    pub fn seal(&mut self) {
        if let Some(OpenChunk {
            segment,
            position,
            mut buf,
        }) = self.open.take()
        {
            let payload_crc = crc32c::crc32c(&buf[CHUNK_HEADER_BYTES..]);
            let payload_bytes = (buf.len() - CHUNK_HEADER_BYTES) as u32;
            write_chunk_header(
                &mut buf[..CHUNK_HEADER_BYTES],
                position,
                ChunkHeader::Records {
                    payload_bytes,
                    payload_crc,
                },
            );
            self.sealed.push_back(PendingWrite {
                segment,
                position,
                bytes: buf.freeze(),
            });
        }
    }

    /// Whether local appends are being collected in an open chunk.
    pub fn has_open_chunk(&self) -> bool {
        self.open.is_some()
    }

    /// Queues bytes that are already whole chunks (replicated from a master) for writing at
    /// the log's end. The caller checked they fit in the active segment.
    pub fn push_raw(&mut self, bytes: Bytes) {
        debug_assert!(self.open.is_none());
        let Some(segment) = self.segments.back().cloned() else {
            return;
        };
        let position = self.write_pos;
        self.write_pos += bytes.len() as u64;
        self.pending_bytes += bytes.len();
        self.sealed.push_back(PendingWrite {
            segment,
            position,
            bytes,
        });
    }

    /// Continues in the spare segment without writing an end marker (a replicated log gets its
    /// marker, if any, from the master's bytes).
    pub fn roll_replica(&mut self) -> Result<(), NeedSegment> {
        let next = self.spare_segment.take().ok_or(NeedSegment)?;
        self.segment_ended = false;
        debug_assert_eq!(next.start, self.next_segment_start());
        self.write_pos = next.start;
        self.segments.push_back(next);
        Ok(())
    }

    /// Starts an empty log over in `segment` at `position` (its start). Returns the segments
    /// it held before (the spare one included), for the caller to remove.
    pub fn restart_at(&mut self, segment: Rc<Segment<F>>, position: u64) -> Vec<Rc<Segment<F>>> {
        debug_assert!(self.open.is_none() && self.sealed.is_empty() && self.in_flight.is_empty());
        let mut old: Vec<_> = self.segments.drain(..).collect();
        old.extend(self.spare_segment.take());
        self.segments.push_back(segment);
        self.write_pos = position;
        self.written = position;
        self.durable = position;
        self.cache.clear();
        self.cache_bytes = 0;
        old
    }

    /// Whether anything waits to be written.
    pub fn has_pending(&self) -> bool {
        self.open.is_some() || !self.sealed.is_empty()
    }

    /// Seals the open chunk and moves every pending write into `out`.
    pub fn take_writes(&mut self, out: &mut Vec<PendingWrite<F>>) {
        self.seal();
        out.extend(self.sealed.drain(..));
    }

    /// Writes issued and not yet applied.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Records that a write at `position` was issued (call in position order).
    pub fn start_write(&mut self, position: u64) {
        self.in_flight.push_back((position, None));
    }

    /// Records that a write completed; applies every completed write at the front, in order.
    /// Returns whether `written` advanced.
    pub fn complete_write(&mut self, write: PendingWrite<F>) -> bool {
        if let Some(slot) = self
            .in_flight
            .iter_mut()
            .find(|(position, _)| *position == write.position)
        {
            slot.1 = Some(write);
        }
        let mut advanced = false;
        while self
            .in_flight
            .front()
            .is_some_and(|(_, done)| done.is_some())
        {
            if let Some((_, Some(done))) = self.in_flight.pop_front() {
                self.wrote(done);
                advanced = true;
            }
        }
        advanced
    }

    /// Records that `write` reached its file: advances `written` and keeps the bytes for tail
    /// reads.
    fn wrote(&mut self, write: PendingWrite<F>) {
        // A segment's last write (its end marker, or a chunk leaving less room than a header)
        // completes the segment: `written` moves to the next segment's start, so the marks
        // agree with what recovery finds and with where the log continues (a replica's end).
        let segment_end = write.segment.start + self.segment_bytes;
        self.written = if is_end_marker(&write.bytes)
            || segment_end - write.end() < CHUNK_HEADER_BYTES as u64
        {
            segment_end
        } else {
            write.end()
        };
        self.pending_bytes = self.pending_bytes.saturating_sub(write.bytes.len());
        if !self.dirty.iter().any(|s| Rc::ptr_eq(s, &write.segment)) {
            self.dirty.push(write.segment);
        }
        self.cache_bytes += write.bytes.len();
        self.cache.push_back((write.position, write.bytes));
        while self.cache_bytes > self.cache_limit_bytes && self.cache.len() > 1 {
            if let Some((_, bytes)) = self.cache.pop_front() {
                self.cache_bytes -= bytes.len();
                self.recycle(bytes);
            }
        }
    }

    /// Returns a chunk buffer to the pool if no reader still holds a slice of it.
    fn recycle(&mut self, bytes: Bytes) {
        if self.pool.len() < 8
            && let Ok(mut buf) = bytes.try_into_mut()
            && buf.capacity() <= 2 * self.max_chunk_bytes
        {
            buf.clear();
            self.pool.push(buf);
        }
    }

    /// The segments to fdatasync so that everything written so far is durable; clears the list.
    pub fn take_dirty(&mut self) -> Vec<Rc<Segment<F>>> {
        std::mem::take(&mut self.dirty)
    }

    /// `len` bytes at `position` from the cache of recent chunks, without copying.
    pub fn cached(&self, position: u64, len: usize) -> Option<Bytes> {
        let index = self.cache.partition_point(|(start, _)| *start <= position);
        let (start, bytes) = self.cache.get(index.checked_sub(1)?)?;
        let from = (position - start) as usize;
        let to = from.checked_add(len)?;
        (to <= bytes.len()).then(|| bytes.slice(from..to))
    }

    /// The segment holding `position`.
    pub fn segment_of(&self, position: u64) -> Option<Rc<Segment<F>>> {
        let index = self.segments.partition_point(|s| s.start <= position);
        let segment = self.segments.get(index.checked_sub(1)?)?;
        (position < segment.start + self.segment_bytes).then(|| Rc::clone(segment))
    }

    /// Forgets the oldest segment (retention); the caller removes the file.
    pub fn pop_oldest(&mut self) -> Option<Rc<Segment<F>>> {
        if self.segments.len() <= 1 {
            return None;
        }
        let segment = self.segments.pop_front()?;
        let end = segment.start + self.segment_bytes;
        while self.cache.front().is_some_and(|(start, _)| *start < end) {
            if let Some((_, bytes)) = self.cache.pop_front() {
                self.cache_bytes -= bytes.len();
            }
        }
        Some(segment)
    }
}
