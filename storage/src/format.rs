//! On-disk framing: the store directory's names, chunk headers of the commit log, the fields of
//! a stored record the store reads itself, consume-queue entries and the metadata-file header.
//! `storage/FORMAT.md` draws the same thing with byte diagrams; keep both in step.
//!
//! Every offset of every layout is a named constant here, and the `const _: () = assert!(..)`
//! items below check at compile time that each layout's fields are where the diagrams put them:
//! they tile the layout without gap or overlap, and the sizes add up. Code elsewhere reads and
//! writes those layouts only through these names.

use std::ops::Range;

use ringmq_protocol::message::record::{MIN_RECORD_BYTES, PHYSICAL_OFFSET_AT};

use crate::config::{MAX_SHARD, SHARD_SHIFT};

// ---------------------------------------------------------------------------------------------
// The store directory
// ---------------------------------------------------------------------------------------------

/// Directory of the commit-log segments, under the store directory.
pub const COMMITLOG_DIR: &str = "commitlog";
/// Directory of the consume queues (`consumequeue/<topic>/<queueId>/`), under the store directory.
pub const CONSUMEQUEUE_DIR: &str = "consumequeue";
/// The checkpoint (a metadata file), in the store directory.
pub const CHECKPOINT_FILE: &str = "checkpoint";
/// Digits of a segment or consume-queue file name (a zero-padded decimal offset).
pub const FILE_NAME_DIGITS: usize = 20;

// `u64::MAX` has 20 decimal digits: every offset has a name of exactly that width.
const _: () = assert!(u64::MAX.ilog10() as usize + 1 == FILE_NAME_DIGITS);

// Physical offsets: bit 63 is 0, bits 48..63 hold the shard, bits 0..48 the offset within the
// shard's log. The largest shard's last offset must stay a positive `i64` (a record stores its
// physical offset as one).
const _: () = assert!(SHARD_SHIFT == 48);
const _: () = assert!((((MAX_SHARD as u64) + 1) << SHARD_SHIFT) - 1 <= i64::MAX as u64);

// ---------------------------------------------------------------------------------------------
// Commit-log chunk header (16 bytes)
// ---------------------------------------------------------------------------------------------

/// Size of a chunk header.
pub const CHUNK_HEADER_BYTES: usize = 16;
/// Chunk header: the magic, [`CHUNK_MAGIC`] or [`END_MAGIC`] (u32).
pub const CHUNK_MAGIC_AT: usize = 0;
/// Chunk header: bytes of records after the header (u32).
pub const CHUNK_PAYLOAD_BYTES_AT: usize = 4;
/// Chunk header: CRC32C of the payload (u32).
pub const CHUNK_PAYLOAD_CRC_AT: usize = 8;
/// Chunk header: CRC32C of the bytes before it, then the chunk's physical offset (u32).
pub const CHUNK_HEADER_CRC_AT: usize = 12;
/// Magic of a chunk of records ("RMQC").
pub const CHUNK_MAGIC: u32 = 0x524D_5143;
/// Magic of the end-of-segment marker ("RMQE"): the rest of the segment is unused.
pub const END_MAGIC: u32 = 0x524D_5145;

const _: () = assert!(tiles(
    &[
        (CHUNK_MAGIC_AT, 4),
        (CHUNK_PAYLOAD_BYTES_AT, 4),
        (CHUNK_PAYLOAD_CRC_AT, 4),
        (CHUNK_HEADER_CRC_AT, 4),
    ],
    CHUNK_HEADER_BYTES
));
// The header CRC covers exactly the fields before it (and is the last field).
const _: () = assert!(CHUNK_HEADER_CRC_AT + 4 == CHUNK_HEADER_BYTES);
// A valid header is never sixteen zero bytes (zeros mean "never written", HeaderFault::Zeroed):
// neither magic is zero. And the two magics differ.
const _: () = assert!(CHUNK_MAGIC != END_MAGIC && CHUNK_MAGIC != 0 && END_MAGIC != 0);

// ---------------------------------------------------------------------------------------------
// Stored record (docs/protocol.md §5.4): the fields the store reads itself
// ---------------------------------------------------------------------------------------------

/// Record: TOTALSIZE, the whole record's length including this field (i32).
pub const RECORD_TOTAL_SIZE_AT: usize = 0;
/// Record: MAGICCODE, v1 or v2 (u32).
pub const RECORD_MAGIC_AT: usize = 4;
/// Record: PHYSICALOFFSET, where the record itself starts in the log (i64).
pub const RECORD_PHYSICAL_OFFSET_AT: usize = PHYSICAL_OFFSET_AT;
/// Bytes a reader needs to learn a record's size and magic before reading it whole.
pub const RECORD_PREFIX_BYTES: usize = 8;

const _: () = assert!(tiles(
    &[(RECORD_TOTAL_SIZE_AT, 4), (RECORD_MAGIC_AT, 4)],
    RECORD_PREFIX_BYTES
));
const _: () = assert!(RECORD_PHYSICAL_OFFSET_AT == 28);
const _: () = assert!(RECORD_PREFIX_BYTES <= RECORD_PHYSICAL_OFFSET_AT);
// Every field the store checks lies within the smallest record, so a record of at least
// MIN_RECORD_BYTES can be checked without a bounds failure.
const _: () = assert!(RECORD_PHYSICAL_OFFSET_AT + 8 <= MIN_RECORD_BYTES);

// ---------------------------------------------------------------------------------------------
// Consume-queue entry (20 bytes)
// ---------------------------------------------------------------------------------------------

/// Size of a consume-queue entry.
pub const CQ_ENTRY_BYTES: usize = 20;
/// Consume-queue entry: physical offset of the record (u64).
pub const CQ_PHYSICAL_OFFSET_AT: usize = 0;
/// Consume-queue entry: size of the record (u32; 0 marks a never-written entry).
pub const CQ_SIZE_AT: usize = 8;
/// Consume-queue entry: hash of the record's TAGS (i64).
pub const CQ_TAGS_HASH_AT: usize = 12;

const _: () = assert!(tiles(
    &[
        (CQ_PHYSICAL_OFFSET_AT, 8),
        (CQ_SIZE_AT, 4),
        (CQ_TAGS_HASH_AT, 8),
    ],
    CQ_ENTRY_BYTES
));
// RocketMQ's CQ_STORE_UNIT_SIZE: Java tools read these files.
const _: () = assert!(CQ_ENTRY_BYTES == 20);
// No field of any layout here is assumed aligned in memory (the tags hash, an i64, sits at 12):
// fields are always decoded from bytes with `from_be_bytes`, never through a pointer cast.

// ---------------------------------------------------------------------------------------------
// Metadata-file header (checkpoint, topics, consumer offsets)
// ---------------------------------------------------------------------------------------------

/// First 8 bytes of every metadata file; the trailing `1` is the format version.
pub const METADATA_MAGIC: [u8; 8] = *b"RMQMETA1";
/// Magic, payload length and payload CRC32C.
pub const METADATA_HEADER_BYTES: usize = 16;
/// Metadata header: the magic (8 bytes).
pub const METADATA_MAGIC_AT: usize = 0;
/// Metadata header: bytes of JSON payload after the header (u32).
pub const METADATA_PAYLOAD_BYTES_AT: usize = 8;
/// Metadata header: CRC32C of the payload (u32).
pub const METADATA_PAYLOAD_CRC_AT: usize = 12;
/// Largest payload a metadata file may carry, on write and on read. It bounds the buffer a load
/// allocates from a length it has not verified yet, and is far above any real table (a million
/// offset entries is ~40 MiB of JSON).
pub const METADATA_PAYLOAD_BYTES_MAX: usize = 256 * 1024 * 1024;

const _: () = assert!(tiles(
    &[
        (METADATA_MAGIC_AT, METADATA_MAGIC.len()),
        (METADATA_PAYLOAD_BYTES_AT, 4),
        (METADATA_PAYLOAD_CRC_AT, 4),
    ],
    METADATA_HEADER_BYTES
));
// The length field is a u32.
const _: () = assert!(METADATA_PAYLOAD_BYTES_MAX <= u32::MAX as usize);

/// Whether `fields` (start, length), in order, cover `0..total` exactly: the first starts at 0,
/// each starts where the previous ends (no gap, no overlap) and the last ends at `total`.
const fn tiles(fields: &[(usize, usize)], total: usize) -> bool {
    let mut end = 0;
    let mut i = 0;
    while i < fields.len() {
        if fields[i].0 != end || fields[i].1 == 0 {
            return false;
        }
        end = fields[i].0 + fields[i].1;
        i += 1;
    }
    end == total
}

/// The bytes of a `len`-byte field at `at`.
const fn field(at: usize, len: usize) -> Range<usize> {
    at..at + len
}

/// The big-endian u32 at `at` of `bytes`, if `bytes` reaches that far.
pub(crate) fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw = bytes.get(at..)?.first_chunk::<4>()?;
    Some(u32::from_be_bytes(*raw))
}

/// The big-endian u64 at `at` of `bytes`, if `bytes` reaches that far.
pub(crate) fn be_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let raw = bytes.get(at..)?.first_chunk::<8>()?;
    Some(u64::from_be_bytes(*raw))
}

// ---------------------------------------------------------------------------------------------
// Chunk headers
// ---------------------------------------------------------------------------------------------

/// A decoded chunk header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkHeader {
    /// `payload_bytes` of records follow, with CRC32C `payload_crc`.
    Records {
        /// Bytes of records after the header.
        payload_bytes: u32,
        /// CRC32C of those bytes.
        payload_crc: u32,
    },
    /// The segment ends here.
    End,
}

/// Why bytes at a chunk position are not a valid header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderFault {
    /// Sixteen zero bytes: nothing was ever written here (preallocated space).
    Zeroed,
    /// Anything else: a torn or corrupt write.
    Invalid,
}

/// CRC32C of the header's fields before the header CRC, followed by the chunk's physical
/// offset: binding the header to its position means a stale chunk left at another offset never
/// validates.
fn header_crc(covered: &[u8], position: u64) -> u32 {
    let crc = crc32c::crc32c(covered);
    crc32c::crc32c_append(crc, &position.to_be_bytes())
}

/// Writes a chunk header for a chunk at `position` into `out` (at least
/// [`CHUNK_HEADER_BYTES`]; only those are written).
///
/// # Panics
///
/// If `out` is shorter than a header: callers always pass a header-sized buffer.
pub fn write_chunk_header(out: &mut [u8], position: u64, header: ChunkHeader) {
    let (magic, len, crc) = match header {
        ChunkHeader::Records {
            payload_bytes,
            payload_crc,
        } => (CHUNK_MAGIC, payload_bytes, payload_crc),
        ChunkHeader::End => (END_MAGIC, 0, 0),
    };
    let head = &mut out[..CHUNK_HEADER_BYTES];
    head[field(CHUNK_MAGIC_AT, 4)].copy_from_slice(&magic.to_be_bytes());
    head[field(CHUNK_PAYLOAD_BYTES_AT, 4)].copy_from_slice(&len.to_be_bytes());
    head[field(CHUNK_PAYLOAD_CRC_AT, 4)].copy_from_slice(&crc.to_be_bytes());
    let check = header_crc(&head[..CHUNK_HEADER_CRC_AT], position);
    head[field(CHUNK_HEADER_CRC_AT, 4)].copy_from_slice(&check.to_be_bytes());
}

/// Reads the chunk header at `position` from `bytes` (at least [`CHUNK_HEADER_BYTES`]; fewer
/// is [`HeaderFault::Invalid`]).
pub fn read_chunk_header(bytes: &[u8], position: u64) -> Result<ChunkHeader, HeaderFault> {
    let Some(head) = bytes.first_chunk::<CHUNK_HEADER_BYTES>() else {
        return Err(HeaderFault::Invalid);
    };
    if head.iter().all(|&b| b == 0) {
        return Err(HeaderFault::Zeroed);
    }
    // The header is 16 bytes, so every field read below is in range.
    let word = |at: usize| be_u32(head, at).unwrap_or_default();
    if word(CHUNK_HEADER_CRC_AT) != header_crc(&head[..CHUNK_HEADER_CRC_AT], position) {
        return Err(HeaderFault::Invalid);
    }
    match word(CHUNK_MAGIC_AT) {
        CHUNK_MAGIC => Ok(ChunkHeader::Records {
            payload_bytes: word(CHUNK_PAYLOAD_BYTES_AT),
            payload_crc: word(CHUNK_PAYLOAD_CRC_AT),
        }),
        END_MAGIC => Ok(ChunkHeader::End),
        _ => Err(HeaderFault::Invalid),
    }
}

/// Whether `bytes` (one write) is exactly an end-of-segment marker. Checks the size and magic
/// only: the writer calls it on bytes it built itself.
pub(crate) fn is_end_marker(bytes: &[u8]) -> bool {
    bytes.len() == CHUNK_HEADER_BYTES && be_u32(bytes, CHUNK_MAGIC_AT) == Some(END_MAGIC)
}

// ---------------------------------------------------------------------------------------------
// Stored records
// ---------------------------------------------------------------------------------------------

/// TOTALSIZE and MAGICCODE of the record starting `bytes` (at least [`RECORD_PREFIX_BYTES`]).
pub(crate) fn record_prefix(bytes: &[u8]) -> Option<(i32, u32)> {
    let size = be_u32(bytes, RECORD_TOTAL_SIZE_AT)?;
    let magic = be_u32(bytes, RECORD_MAGIC_AT)?;
    Some((size as i32, magic))
}

/// PHYSICALOFFSET of the record starting `bytes`.
pub(crate) fn record_physical_offset(bytes: &[u8]) -> Option<i64> {
    be_u64(bytes, RECORD_PHYSICAL_OFFSET_AT).map(|offset| offset as i64)
}

// ---------------------------------------------------------------------------------------------
// Consume-queue entries
// ---------------------------------------------------------------------------------------------

/// One consume-queue entry: where a message of the queue is in the commit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CqEntry {
    /// Physical offset of the record.
    pub physical_offset: u64,
    /// Record size in bytes.
    pub size: u32,
    /// Hash of the message's TAGS property (0 without tags).
    pub tags_hash: i64,
}

impl CqEntry {
    /// End of the record in the commit log.
    pub const fn end(&self) -> u64 {
        self.physical_offset + self.size as u64
    }

    /// Big-endian encoding, as RocketMQ lays it out.
    pub fn encode(&self) -> [u8; CQ_ENTRY_BYTES] {
        let mut out = [0u8; CQ_ENTRY_BYTES];
        out[field(CQ_PHYSICAL_OFFSET_AT, 8)].copy_from_slice(&self.physical_offset.to_be_bytes());
        out[field(CQ_SIZE_AT, 4)].copy_from_slice(&self.size.to_be_bytes());
        out[field(CQ_TAGS_HASH_AT, 8)].copy_from_slice(&self.tags_hash.to_be_bytes());
        out
    }

    /// Decodes one entry; `None` for a zeroed (never written) entry.
    pub fn decode(bytes: &[u8; CQ_ENTRY_BYTES]) -> Option<Self> {
        let entry = Self {
            physical_offset: be_u64(bytes, CQ_PHYSICAL_OFFSET_AT)?,
            size: be_u32(bytes, CQ_SIZE_AT)?,
            tags_hash: be_u64(bytes, CQ_TAGS_HASH_AT)? as i64,
        };
        (entry.size != 0).then_some(entry)
    }
}

// ---------------------------------------------------------------------------------------------
// File names
// ---------------------------------------------------------------------------------------------

/// The file name of a segment starting at `offset`: 20 zero-padded digits, as RocketMQ names them.
pub fn segment_name(offset: u64) -> String {
    format!("{offset:0FILE_NAME_DIGITS$}")
}

/// Parses a segment file name; `None` for anything else (temporary files, stray names).
pub fn parse_segment_name(name: &str) -> Option<u64> {
    if name.len() == FILE_NAME_DIGITS && name.bytes().all(|b| b.is_ascii_digit()) {
        name.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_header_round_trip_and_position_binding() {
        let mut buf = [0u8; 16];
        let header = ChunkHeader::Records {
            payload_bytes: 1234,
            payload_crc: 0xDEAD_BEEF,
        };
        write_chunk_header(&mut buf, 4096, header);
        assert_eq!(read_chunk_header(&buf, 4096), Ok(header));
        assert_eq!(read_chunk_header(&buf, 8192), Err(HeaderFault::Invalid));
        buf[5] ^= 1;
        assert_eq!(read_chunk_header(&buf, 4096), Err(HeaderFault::Invalid));
        assert_eq!(read_chunk_header(&[0u8; 16], 0), Err(HeaderFault::Zeroed));
        assert_eq!(read_chunk_header(&[0u8; 15], 0), Err(HeaderFault::Invalid));
        write_chunk_header(&mut buf, 7, ChunkHeader::End);
        assert_eq!(read_chunk_header(&buf, 7), Ok(ChunkHeader::End));
        assert!(is_end_marker(&buf));
    }

    #[test]
    fn chunk_header_matches_the_documented_layout() {
        let mut buf = [0u8; 16];
        write_chunk_header(
            &mut buf,
            0x0102,
            ChunkHeader::Records {
                payload_bytes: 0x0A0B_0C0D,
                payload_crc: 0x1122_3344,
            },
        );
        assert_eq!(&buf[..4], b"RMQC");
        assert_eq!(buf[4..8], [0x0A, 0x0B, 0x0C, 0x0D]);
        assert_eq!(buf[8..12], [0x11, 0x22, 0x33, 0x44]);
        let expected = crc32c::crc32c_append(crc32c::crc32c(&buf[..12]), &0x0102u64.to_be_bytes());
        assert_eq!(buf[12..16], expected.to_be_bytes());
    }

    #[test]
    fn cq_entry_round_trip() {
        let entry = CqEntry {
            physical_offset: (3 << 48) + 77,
            size: 1100,
            tags_hash: -5,
        };
        assert_eq!(CqEntry::decode(&entry.encode()), Some(entry));
        assert_eq!(CqEntry::decode(&[0u8; 20]), None);
        let bytes = entry.encode();
        assert_eq!(bytes[..8], ((3u64 << 48) + 77).to_be_bytes());
        assert_eq!(bytes[8..12], 1100u32.to_be_bytes());
        assert_eq!(bytes[12..], (-5i64).to_be_bytes());
    }

    #[test]
    fn record_fields() {
        let mut record = [0u8; 40];
        record[..4].copy_from_slice(&40i32.to_be_bytes());
        record[4..8].copy_from_slice(&0xDAA3_20A7u32.to_be_bytes());
        record[28..36].copy_from_slice(&77i64.to_be_bytes());
        assert_eq!(record_prefix(&record), Some((40, 0xDAA3_20A7)));
        assert_eq!(record_physical_offset(&record), Some(77));
        assert_eq!(record_prefix(&record[..7]), None);
        assert_eq!(record_physical_offset(&record[..35]), None);
    }

    #[test]
    fn segment_names() {
        assert_eq!(segment_name(1 << 30), "00000000001073741824");
        assert_eq!(parse_segment_name("00000000001073741824"), Some(1 << 30));
        assert_eq!(parse_segment_name("00000000001073741824.tmp"), None);
        assert_eq!(parse_segment_name("checkpoint"), None);
    }
}
