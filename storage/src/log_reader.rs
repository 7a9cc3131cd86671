//! [`LogReader`]: whole commit-log chunks read straight from the segment files, for a thread
//! that is not the store's shard (a master's replication). Chunks are the unit on the wire:
//! each carries its own CRC and a header CRC bound to its position (FORMAT.md), so a slave
//! verifies everything it receives, and a peer whose log diverged is caught at the first
//! chunk header.

use std::{fs::File, os::unix::fs::FileExt, path::PathBuf};

use crate::{
    StoreConfig,
    format::{
        CHUNK_HEADER_BYTES, COMMITLOG_DIR, ChunkHeader, HeaderFault, read_chunk_header,
        segment_name,
    },
};

/// Bytes of log compared by [`LogReader::tail_fingerprint`].
const TAIL_FINGERPRINT_BYTES: u64 = 4096;

/// Why [`LogReader::read_chunks`] could not read.
#[derive(Debug, thiserror::Error)]
pub enum LogReadError {
    /// The segment is gone: retention removed it (a reader behind the log's start).
    #[error("segment {path} is gone (removed by retention?): {source}")]
    SegmentGone {
        /// The segment file.
        path: PathBuf,
        /// The open error.
        source: std::io::Error,
    },
    /// Reading failed.
    #[error("read {path}: {source}")]
    Io {
        /// The segment file.
        path: PathBuf,
        /// The read error.
        source: std::io::Error,
    },
    /// No valid chunk header at the position: it is not a chunk boundary of this log (the
    /// peer's log diverged from this one) or the data is damaged.
    #[error("no chunk starts at physical offset {0} of this log")]
    NotAChunk(u64),
}

/// Where a [`LogReader::read_chunks`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRun {
    /// Physical offset of the first byte read (the `from` asked for).
    pub position: u64,
    /// Bytes appended to the output.
    pub bytes: usize,
    /// Where the next read starts: right after the last chunk, or the next segment's start
    /// once this one ended (end marker, or a tail too short for a header).
    pub next: u64,
}

/// Reads whole commit-log chunks from the segment files with plain `pread`, for a thread that
/// is not the store's shard (replication). It reads only below a [`crate::LogWatch::written`] mark
/// the caller passes: those bytes are complete in the files and never change.
#[derive(Debug)]
pub struct LogReader {
    dir: PathBuf,
    segment_bytes: u64,
    base: u64,
    open: Option<(u64, File)>,
}

impl LogReader {
    /// A reader of the store configured by `config`.
    pub fn new(config: &StoreConfig) -> Self {
        Self {
            dir: config.dir.join(COMMITLOG_DIR),
            segment_bytes: config.segment_bytes,
            base: config.base_offset(),
            open: None,
        }
    }

    /// Start of the segment holding `position`.
    pub fn segment_start(&self, position: u64) -> u64 {
        let local = position.saturating_sub(self.base);
        self.base + local / self.segment_bytes * self.segment_bytes
    }

    /// Appends to `out` the whole chunks from `from` (a chunk boundary) up to `upto` (a written
    /// mark), at most about `max_bytes` (at least one chunk when one is there), never past the
    /// end of `from`'s segment.
    pub fn read_chunks(
        &mut self,
        from: u64,
        upto: u64,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<ChunkRun, LogReadError> {
        let segment_start = self.segment_start(from);
        let segment_end = segment_start + self.segment_bytes;
        let empty = ChunkRun {
            position: from,
            bytes: 0,
            next: from,
        };
        if from >= upto {
            return Ok(empty);
        }
        if segment_end - from < CHUNK_HEADER_BYTES as u64 {
            // Too short for a header: the log continues in the next segment.
            return Ok(ChunkRun {
                next: segment_end,
                ..empty
            });
        }
        // A segment file may be shorter than a segment (not preallocated): past its end the log
        // is zeros, i.e. this segment is done.
        let file_end = segment_start + self.file_len(segment_start)?;
        if file_end.saturating_sub(from) < CHUNK_HEADER_BYTES as u64 {
            return Ok(ChunkRun {
                next: segment_end,
                ..empty
            });
        }
        let limit = upto.min(segment_end).min(file_end);
        let want = ((limit - from) as usize).min(max_bytes.max(CHUNK_HEADER_BYTES));
        let start_len = out.len();
        self.read_at(segment_start, from, want, out)?;
        // `kept`: `out` holds whole chunks from `from` up to here.
        let mut kept = from;
        let mut next = from;
        loop {
            let at = start_len + (kept - from) as usize;
            if out.len() - at < CHUNK_HEADER_BYTES {
                break;
            }
            match read_chunk_header(&out[at..], kept) {
                Ok(ChunkHeader::End) => {
                    kept += CHUNK_HEADER_BYTES as u64;
                    next = segment_end;
                    break;
                }
                Ok(ChunkHeader::Records { payload_bytes, .. }) => {
                    let chunk_end = kept + CHUNK_HEADER_BYTES as u64 + u64::from(payload_bytes);
                    if chunk_end > limit {
                        // Below a written mark every chunk is whole: this one is not a chunk.
                        if kept == from {
                            return Err(LogReadError::NotAChunk(kept));
                        }
                        break;
                    }
                    let have = (out.len() - at) as u64;
                    if chunk_end - kept > have {
                        if kept != from {
                            break;
                        }
                        // The first chunk is larger than the read: read the rest of it.
                        let read_to = from + (out.len() - start_len) as u64;
                        self.read_at(segment_start, read_to, (chunk_end - read_to) as usize, out)?;
                    }
                    kept = chunk_end;
                    next = chunk_end;
                    if kept >= limit {
                        break;
                    }
                }
                Err(HeaderFault::Zeroed | HeaderFault::Invalid) => {
                    return Err(LogReadError::NotAChunk(kept));
                }
            }
        }
        let bytes = (kept - from) as usize;
        out.truncate(start_len + bytes);
        Ok(ChunkRun {
            position: from,
            bytes,
            next,
        })
    }

    /// A fingerprint of the log's last bytes before `end`: (length, CRC32C) of up to 4 KiB
    /// ending at `end`, within the segment holding `end - 1`; `None` when nothing precedes
    /// `end` (the shard's first byte, or a segment start whose predecessor is gone).
    /// Master and slave compare theirs before streaming: equal chunk boundaries alone do not
    /// prove equal logs (a master that lost its tail in a crash and wrote new records in its
    /// place can end a chunk at the same offset), equal bytes do.
    pub fn tail_fingerprint(&mut self, end: u64) -> Result<Option<(u32, u32)>, LogReadError> {
        if end <= self.base {
            return Ok(None);
        }
        let segment_start = self.segment_start(end - 1);
        let from = end
            .saturating_sub(TAIL_FINGERPRINT_BYTES)
            .max(segment_start);
        let mut bytes = Vec::with_capacity((end - from) as usize);
        let file_end = match self.file_len(segment_start) {
            Ok(len) => segment_start + len,
            // At a segment start whose predecessor retention removed there is nothing before
            // `end` to compare: the log begins there.
            Err(LogReadError::SegmentGone { .. }) if self.segment_start(end) == end => {
                return Ok(None);
            }
            Err(err) => return Err(err),
        };
        // Bytes past the file's end are zeros, as a preallocated file would hold.
        let in_file = end.min(file_end).saturating_sub(from) as usize;
        if in_file > 0 {
            self.read_at(segment_start, from, in_file, &mut bytes)?;
        }
        bytes.resize((end - from) as usize, 0);
        Ok(Some((bytes.len() as u32, crc32c::crc32c(&bytes))))
    }

    fn file_len(&mut self, segment_start: u64) -> Result<u64, LogReadError> {
        self.open_segment(segment_start)?;
        let path = self.dir.join(segment_name(segment_start));
        let Some((_, file)) = &self.open else {
            return Ok(0);
        };
        file.metadata()
            .map(|m| m.len())
            .map_err(|source| LogReadError::Io { path, source })
    }

    fn open_segment(&mut self, segment_start: u64) -> Result<(), LogReadError> {
        if self
            .open
            .as_ref()
            .is_none_or(|(start, _)| *start != segment_start)
        {
            let path = self.dir.join(segment_name(segment_start));
            let file = File::open(&path).map_err(|source| LogReadError::SegmentGone {
                path: path.clone(),
                source,
            })?;
            self.open = Some((segment_start, file));
        }
        Ok(())
    }

    fn read_at(
        &mut self,
        segment_start: u64,
        position: u64,
        len: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), LogReadError> {
        let path = self.dir.join(segment_name(segment_start));
        self.open_segment(segment_start)?;
        let Some((_, file)) = &self.open else {
            return Ok(());
        };
        let at = out.len();
        out.resize(at + len, 0);
        file.read_exact_at(&mut out[at..], position - segment_start)
            .map_err(|source| {
                out.truncate(at);
                LogReadError::Io { path, source }
            })
    }
}
