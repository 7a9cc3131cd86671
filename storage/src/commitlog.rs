//! The commit log's in-memory state: segments, the chunk being filled, writes waiting for the
//! writer task, the written/durable marks and the cache of recently written chunks.
//!
//! This module does no I/O itself: the store's writer and flusher tasks take work from it and
//! report back. That keeps every state change synchronous (no `RefCell` borrow is ever held
//! across an `.await`) and makes the rules easy to state:
//!
//! - `durable <= written <= write_pos`; all three only grow (recovery and retention aside).
//! - Bytes in `[written, write_pos)` are in the open chunk or in `sealed`, in position order.
//! - A record never spans two chunks and a chunk never spans two segments.

use std::{collections::VecDeque, path::PathBuf, rc::Rc};

use bytes::{BufMut, Bytes, BytesMut};

use crate::format::{CHUNK_HEADER_BYTES, ChunkHeader, END_MAGIC, write_chunk_header};

/// One segment file of the commit log.
#[derive(Debug)]
pub(crate) struct Segment<F> {
    /// Physical offset of the segment's first byte (its file name).
    pub start: u64,
    /// The open file.
    pub file: F,
    /// Its path, for errors and removal.
    pub path: PathBuf,
}

/// Bytes ready to be written at `position` of `segment`.
#[derive(Debug)]
pub(crate) struct PendingWrite<F> {
    pub segment: Rc<Segment<F>>,
    pub position: u64,
    pub bytes: Bytes,
}

impl<F> PendingWrite<F> {
    pub fn end(&self) -> u64 {
        self.position + self.bytes.len() as u64
    }
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
    pub segments: VecDeque<Rc<Segment<F>>>,
    /// The next segment, created ahead of time so a roll does not wait for the filesystem.
    pub spare_segment: Option<Rc<Segment<F>>>,
    /// A task is creating the spare segment.
    pub preparing_segment: bool,
    /// Next physical offset to hand out.
    pub write_pos: u64,
    open: Option<OpenChunk<F>>,
    sealed: VecDeque<PendingWrite<F>>,
    /// Bytes appended and not yet written.
    pub pending_bytes: usize,
    /// A replicated end marker closed the active segment: the next bytes go to the next one.
    pub segment_ended: bool,
    /// Everything below is in the files (page cache).
    pub written: u64,
    /// Everything below is on disk (an fdatasync covered it).
    pub durable: u64,
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

    /// Starts an empty log over in `segment` at `position` (its start).
    pub fn restart_at(&mut self, segment: Rc<Segment<F>>, position: u64) {
        debug_assert!(self.open.is_none() && self.sealed.is_empty() && self.in_flight.is_empty());
        self.segments.clear();
        self.segments.push_back(segment);
        self.spare_segment = None;
        self.write_pos = position;
        self.written = position;
        self.durable = position;
        self.cache.clear();
        self.cache_bytes = 0;
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
        let is_end_marker =
            write.bytes.len() == CHUNK_HEADER_BYTES && write.bytes[..4] == END_MAGIC.to_be_bytes();
        self.written = if is_end_marker || segment_end - write.end() < CHUNK_HEADER_BYTES as u64 {
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
