//! On-disk framing: chunk headers of the commit log, consume-queue entries, file names.
//! `storage/FORMAT.md` draws the same thing with byte diagrams; keep both in step.

use bytes::BufMut;

/// Size of a chunk header.
pub const CHUNK_HEADER_BYTES: usize = 16;
/// Magic of a chunk of records ("RMQC").
pub const CHUNK_MAGIC: u32 = 0x524D_5143;
/// Magic of the end-of-segment marker ("RMQE"): the rest of the segment is unused.
pub const END_MAGIC: u32 = 0x524D_5145;
/// Size of a consume-queue entry.
pub const CQ_ENTRY_BYTES: usize = 20;

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

/// CRC32C of the header's first 12 bytes followed by the chunk's physical offset: binding the
/// header to its position means a stale chunk left at another offset never validates.
fn header_crc(first12: &[u8], position: u64) -> u32 {
    let crc = crc32c::crc32c(first12);
    crc32c::crc32c_append(crc, &position.to_be_bytes())
}

/// Writes a chunk header for a chunk at `position` into `out` (exactly 16 bytes).
pub fn write_chunk_header(out: &mut [u8], position: u64, header: ChunkHeader) {
    let (magic, len, crc) = match header {
        ChunkHeader::Records {
            payload_bytes,
            payload_crc,
        } => (CHUNK_MAGIC, payload_bytes, payload_crc),
        ChunkHeader::End => (END_MAGIC, 0, 0),
    };
    let mut head = &mut out[..CHUNK_HEADER_BYTES];
    head.put_u32(magic);
    head.put_u32(len);
    head.put_u32(crc);
    let check = header_crc(&out[..12], position);
    out[12..16].copy_from_slice(&check.to_be_bytes());
}

/// Reads the chunk header at `position` from `bytes` (at least 16 bytes).
pub fn read_chunk_header(bytes: &[u8], position: u64) -> Result<ChunkHeader, HeaderFault> {
    let Some(head) = bytes.get(..CHUNK_HEADER_BYTES) else {
        return Err(HeaderFault::Invalid);
    };
    if head.iter().all(|&b| b == 0) {
        return Err(HeaderFault::Zeroed);
    }
    let word = |at: usize| u32::from_be_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    if word(12) != header_crc(&head[..12], position) {
        return Err(HeaderFault::Invalid);
    }
    match word(0) {
        CHUNK_MAGIC => Ok(ChunkHeader::Records {
            payload_bytes: word(4),
            payload_crc: word(8),
        }),
        END_MAGIC => Ok(ChunkHeader::End),
        _ => Err(HeaderFault::Invalid),
    }
}

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
        out[..8].copy_from_slice(&self.physical_offset.to_be_bytes());
        out[8..12].copy_from_slice(&self.size.to_be_bytes());
        out[12..].copy_from_slice(&self.tags_hash.to_be_bytes());
        out
    }

    /// Decodes one entry; `None` for a zeroed (never written) entry.
    pub fn decode(bytes: &[u8; CQ_ENTRY_BYTES]) -> Option<Self> {
        let mut phys = [0u8; 8];
        phys.copy_from_slice(&bytes[..8]);
        let mut size = [0u8; 4];
        size.copy_from_slice(&bytes[8..12]);
        let mut tags = [0u8; 8];
        tags.copy_from_slice(&bytes[12..]);
        let entry = Self {
            physical_offset: u64::from_be_bytes(phys),
            size: u32::from_be_bytes(size),
            tags_hash: i64::from_be_bytes(tags),
        };
        (entry.size != 0).then_some(entry)
    }
}

/// The file name of a segment starting at `offset`: 20 zero-padded digits, as RocketMQ names them.
pub fn segment_name(offset: u64) -> String {
    format!("{offset:020}")
}

/// Parses a segment file name; `None` for anything else (temporary files, stray names).
pub fn parse_segment_name(name: &str) -> Option<u64> {
    if name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()) {
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
        write_chunk_header(&mut buf, 7, ChunkHeader::End);
        assert_eq!(read_chunk_header(&buf, 7), Ok(ChunkHeader::End));
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
    }

    #[test]
    fn segment_names() {
        assert_eq!(segment_name(1 << 30), "00000000001073741824");
        assert_eq!(parse_segment_name("00000000001073741824"), Some(1 << 30));
        assert_eq!(parse_segment_name("00000000001073741824.tmp"), None);
        assert_eq!(parse_segment_name("checkpoint"), None);
    }
}
