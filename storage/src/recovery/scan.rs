//! The scan of the commit-log tail: reads each chunk position, finds its
//! [`ChunkVerdict`], and carries out what [`decide`] says.

use std::{collections::VecDeque, rc::Rc};

use bytes::BytesMut;

use super::table::{Action, CheckpointState, ChunkVerdict, SegmentPlace, decide};
use crate::{
    StoreConfig, StoreError,
    commitlog::Segment,
    format::{CHUNK_HEADER_BYTES, ChunkHeader, HeaderFault, read_chunk_header},
    io::StorageFile,
    queues::{CheckedChunk, Queues},
};

/// Bytes read at a time while scanning the tail.
const SCAN_BLOCK_BYTES: usize = 8 << 20;

/// Where the scan found the log's end, and what becomes of the bytes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LogEnd {
    /// The bytes after the end stay: zeros after a clean shutdown, or the end is a segment's end.
    Keep(u64),
    /// The segment holding the end is truncated there.
    Truncate(u64),
}

impl LogEnd {
    /// The end's physical offset.
    pub(super) const fn offset(self) -> u64 {
        match self {
            Self::Keep(offset) | Self::Truncate(offset) => offset,
        }
    }
}

/// Scans chunks from `from` to the end of the log, dispatching the records of every chunk kept
/// to `queues`. Returns where the log ends.
pub(super) async fn scan_tail<F: StorageFile>(
    config: &StoreConfig,
    segments: &VecDeque<Rc<Segment<F>>>,
    from: u64,
    queues: &mut Queues<F>,
    checkpoint: CheckpointState,
) -> Result<LogEnd, StoreError> {
    let Some(first) = segments
        .iter()
        .position(|s| from < s.start() + config.segment_bytes)
    else {
        // `from` is the end of the last segment (or there is none): nothing to read.
        return Ok(LogEnd::Keep(from));
    };
    let mut position = from.max(segments[first].start());
    let mut scanned_bytes = 0u64;
    let mut end = LogEnd::Keep(position);
    'segments: for (index, segment) in segments.iter().enumerate().skip(first) {
        if index > first {
            position = segment.start();
        }
        let place = if index + 1 == segments.len() {
            SegmentPlace::Last
        } else {
            SegmentPlace::NotLast
        };
        let file_len = segment
            .file()
            .len()
            .await
            .map_err(|e| StoreError::io("stat", segment.path(), e))?;
        let mut reader = BlockReader {
            segment,
            end: segment.start() + config.segment_bytes.min(file_len),
            block: BytesMut::new(),
            block_start: position,
        };
        loop {
            let (verdict, chunk) = reader.examine(position, queues).await?;
            match decide(checkpoint, verdict, place) {
                Action::Index => {
                    let Some((checked, chunk_end)) = chunk else {
                        // decide indexes only a Valid chunk, which examine returns checked.
                        return Err(StoreError::Corrupt {
                            path: segment.path().to_path_buf(),
                            reason: format!("chunk at {position} indexed without being checked"),
                        });
                    };
                    queues.index_chunk(checked);
                    scanned_bytes += chunk_end - position;
                    position = chunk_end;
                }
                Action::NextSegment => continue 'segments,
                Action::EndAtSegmentEnd => {
                    end = LogEnd::Keep(segment.start() + config.segment_bytes);
                    break 'segments;
                }
                Action::EndKeepTail => {
                    end = LogEnd::Keep(position);
                    break 'segments;
                }
                Action::EndTruncate => {
                    end = LogEnd::Truncate(position);
                    break 'segments;
                }
                Action::TruncateDamaged => {
                    tracing::warn!(path = %segment.path().display(), position, ?verdict,
                        "torn or corrupt commit-log tail; truncating it");
                    end = LogEnd::Truncate(position);
                    break 'segments;
                }
            }
        }
    }
    tracing::info!(
        from,
        to = end.offset(),
        scanned_bytes,
        "commit-log tail recovered"
    );
    Ok(end)
}

/// Reads one segment in large blocks and judges the chunk at each position.
struct BlockReader<'s, F> {
    segment: &'s Segment<F>,
    /// End of the readable part: the segment's end, or its file's when that is shorter.
    end: u64,
    block: BytesMut,
    /// Physical offset of `block`'s first byte.
    block_start: u64,
}

impl<F: StorageFile> BlockReader<'_, F> {
    /// The verdict on the chunk at `position`; for a valid one also the checked records (for
    /// [`Queues::index_chunk`]) and the chunk's end.
    async fn examine<'b>(
        &'b mut self,
        position: u64,
        queues: &Queues<F>,
    ) -> Result<(ChunkVerdict, Option<(CheckedChunk<'b>, u64)>), StoreError> {
        let header_end = position + CHUNK_HEADER_BYTES as u64;
        if header_end > self.end {
            return Ok((ChunkVerdict::SegmentTail, None));
        }
        self.cover(position, header_end).await?;
        let header = match read_chunk_header(self.bytes(position, header_end), position) {
            Ok(header) => header,
            Err(HeaderFault::Zeroed) => return Ok((ChunkVerdict::Zeroed, None)),
            Err(HeaderFault::Invalid) => return Ok((ChunkVerdict::TornHeader, None)),
        };
        let (payload_bytes, payload_crc) = match header {
            ChunkHeader::End => return Ok((ChunkVerdict::EndMarker, None)),
            ChunkHeader::Records {
                payload_bytes,
                payload_crc,
            } => (u64::from(payload_bytes), payload_crc),
        };
        let chunk_end = header_end + payload_bytes;
        if chunk_end > self.end {
            return Ok((ChunkVerdict::Overrun, None));
        }
        self.cover(position, chunk_end).await?;
        let payload = self.bytes(header_end, chunk_end);
        if crc32c::crc32c(payload) != payload_crc {
            return Ok((ChunkVerdict::PayloadCrcMismatch, None));
        }
        Ok(match queues.check_chunk(payload, header_end) {
            Ok(checked) => (ChunkVerdict::Valid, Some((checked, chunk_end))),
            Err(_) => (ChunkVerdict::RecordMismatch, None),
        })
    }

    /// Makes the block hold `[position, upto)`, reading from `position` (at least
    /// [`SCAN_BLOCK_BYTES`], at most to the readable end) when it does not.
    async fn cover(&mut self, position: u64, upto: u64) -> Result<(), StoreError> {
        if upto <= self.block_start + self.block.len() as u64 {
            return Ok(());
        }
        let len = ((upto - position) as usize)
            .max(SCAN_BLOCK_BYTES)
            .min((self.end - position) as usize);
        let buf = BytesMut::with_capacity(len);
        let (result, buf) = self
            .segment
            .file()
            .read_exact_at(buf, position - self.segment.start())
            .await;
        result.map_err(|e| StoreError::io("read commit log", self.segment.path(), e))?;
        self.block = buf;
        self.block_start = position;
        Ok(())
    }

    /// Bytes `[from, to)` of the block (which holds them: see [`BlockReader::cover`]).
    fn bytes(&self, from: u64, to: u64) -> &[u8] {
        &self.block[(from - self.block_start) as usize..(to - self.block_start) as usize]
    }
}
