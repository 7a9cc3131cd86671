//! The HA connection's bytes (docs/protocol.md §8.2-§8.3, plus a handshake).
//!
//! RocketMQ's HA stream is raw: the slave sends its 8-byte offset, the master answers with
//! frames of `offset i64 | size i32 | commit-log bytes`. RingMQ keeps exactly that stream, one
//! TCP connection per shard, and puts a handshake in front of it: each shard has its own log
//! (physical offsets carry the shard number), so the master must know which shard a
//! connection is for, and it must be able to refuse a peer of another broker group, another
//! shard layout or another segment size before a single byte is copied. (A Java slave could
//! not follow a sharded master anyway.)
//!
//! ```text
//! slave -> master  HELLO    "RMQH" ver:u16 shard:u16 shards:u16 cluster_len:u16 name_len:u16
//!                           flags:u16 segment_bytes:u64 broker_id:i64 offset:i64
//!                           tail_len:u32 tail_crc:u32 cluster name
//! master -> slave  WELCOME  "RMQH" ver:u16 status:u8 start:i64 reason_len:u16 reason
//! then             master -> slave frames: offset:i64 size:i32 bytes (size 0: heartbeat)
//!                  slave -> master reports: offset:i64 (what the slave holds)
//! ```
//!
//! All integers big-endian. `offset` in HELLO is where the slave's log ends; `flags` bit 0 says
//! the slave's store is empty; `tail_len`/`tail_crc` fingerprint the slave's last bytes before
//! `offset` (CRC32C of up to 4 KiB, `ringmq_storage::LogReader::tail_fingerprint`; 0/0 for
//! none), which the master compares with its own before accepting. `start` in WELCOME is where
//! the master streams from (the slave's end, or the master's oldest segment for an empty slave).

use std::io::{self, Read, Write};

pub(crate) const MAGIC: [u8; 4] = *b"RMQH";
pub(crate) const VERSION: u16 = 2;
/// Longest cluster or broker name accepted in a HELLO.
const MAX_NAME_BYTES: usize = 255;
/// Longest refusal reason sent.
const MAX_REASON_BYTES: usize = 1024;
/// Bytes of a frame header.
pub(crate) const FRAME_HEADER_BYTES: usize = 12;
const HELLO_FIXED_BYTES: usize = 4 + 2 * 6 + 8 * 3 + 4 * 2;
/// `flags` bit: the slave's store holds nothing.
const FLAG_EMPTY: u16 = 1;

/// A slave's greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hello {
    pub shard: u16,
    pub shard_count: u16,
    pub segment_bytes: u64,
    pub broker_id: i64,
    /// Where the slave's log for this shard ends.
    pub offset: u64,
    /// The slave's store holds nothing: start it wherever the master's log starts.
    pub empty: bool,
    /// (length, CRC32C) of the slave's last bytes before `offset`, if it has any.
    pub tail: Option<(u32, u32)>,
    pub cluster: String,
    pub broker_name: String,
}

/// Why bytes on the HA port are not a valid HELLO.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HelloError {
    #[error("not a RingMQ HA handshake (first bytes {0:02x?})")]
    Garbage([u8; 4]),
    #[error("HA protocol version {0} (this broker speaks {VERSION})")]
    Version(u16),
    #[error("name of {0} bytes (at most {MAX_NAME_BYTES})")]
    NameTooLong(usize),
    #[error("a name is not UTF-8")]
    NotUtf8,
    #[error("offset {0} is negative")]
    NegativeOffset(i64),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Hello {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(HELLO_FIXED_BYTES + self.cluster.len() + self.broker_name.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&self.shard.to_be_bytes());
        out.extend_from_slice(&self.shard_count.to_be_bytes());
        out.extend_from_slice(&(self.cluster.len() as u16).to_be_bytes());
        out.extend_from_slice(&(self.broker_name.len() as u16).to_be_bytes());
        out.extend_from_slice(&(if self.empty { FLAG_EMPTY } else { 0 }).to_be_bytes());
        out.extend_from_slice(&self.segment_bytes.to_be_bytes());
        out.extend_from_slice(&self.broker_id.to_be_bytes());
        out.extend_from_slice(&(self.offset as i64).to_be_bytes());
        let (tail_len, tail_crc) = self.tail.unwrap_or((0, 0));
        out.extend_from_slice(&tail_len.to_be_bytes());
        out.extend_from_slice(&tail_crc.to_be_bytes());
        out.extend_from_slice(self.cluster.as_bytes());
        out.extend_from_slice(self.broker_name.as_bytes());
        out
    }

    /// Reads one HELLO; the magic is checked first so garbage is refused after 4 bytes.
    pub(crate) fn read(input: &mut impl Read) -> Result<Self, HelloError> {
        let mut magic = [0u8; 4];
        input.read_exact(&mut magic)?;
        if magic != MAGIC {
            return Err(HelloError::Garbage(magic));
        }
        let mut fixed = [0u8; HELLO_FIXED_BYTES - 4];
        input.read_exact(&mut fixed)?;
        let u16_at = |at: usize| u16::from_be_bytes([fixed[at], fixed[at + 1]]);
        let u64_at = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&fixed[at..at + 8]);
            u64::from_be_bytes(bytes)
        };
        let u32_at = |at: usize| {
            u32::from_be_bytes([fixed[at], fixed[at + 1], fixed[at + 2], fixed[at + 3]])
        };
        let version = u16_at(0);
        if version != VERSION {
            return Err(HelloError::Version(version));
        }
        let (cluster_len, name_len) = (usize::from(u16_at(6)), usize::from(u16_at(8)));
        for len in [cluster_len, name_len] {
            if len > MAX_NAME_BYTES {
                return Err(HelloError::NameTooLong(len));
            }
        }
        let offset = u64_at(28) as i64;
        if offset < 0 {
            return Err(HelloError::NegativeOffset(offset));
        }
        let mut names = vec![0u8; cluster_len + name_len];
        input.read_exact(&mut names)?;
        let broker_name =
            String::from_utf8(names.split_off(cluster_len)).map_err(|_| HelloError::NotUtf8)?;
        let cluster = String::from_utf8(names).map_err(|_| HelloError::NotUtf8)?;
        let (tail_len, tail_crc) = (u32_at(36), u32_at(40));
        Ok(Self {
            shard: u16_at(2),
            shard_count: u16_at(4),
            segment_bytes: u64_at(12),
            broker_id: u64_at(20) as i64,
            offset: offset as u64,
            empty: u16_at(10) & FLAG_EMPTY != 0,
            tail: (tail_len > 0).then_some((tail_len, tail_crc)),
            cluster,
            broker_name,
        })
    }
}

/// The master's answer to a HELLO: where it streams from, or why it will not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Welcome {
    Accepted { start: u64 },
    Refused { reason: String },
}

impl Welcome {
    pub(crate) fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let (status, start, reason) = match self {
            Self::Accepted { start } => (0u8, *start, ""),
            Self::Refused { reason } => (1u8, 0, reason.as_str()),
        };
        let mut reason_end = reason.len().min(MAX_REASON_BYTES);
        while !reason.is_char_boundary(reason_end) {
            reason_end -= 1;
        }
        let reason = &reason.as_bytes()[..reason_end];
        let mut bytes = Vec::with_capacity(17 + reason.len());
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&VERSION.to_be_bytes());
        bytes.push(status);
        bytes.extend_from_slice(&start.to_be_bytes());
        bytes.extend_from_slice(&(reason.len() as u16).to_be_bytes());
        bytes.extend_from_slice(reason);
        out.write_all(&bytes)
    }

    pub(crate) fn read(input: &mut impl Read) -> io::Result<Self> {
        let mut fixed = [0u8; 17];
        input.read_exact(&mut fixed)?;
        if fixed[..4] != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the HA peer is not a RingMQ master",
            ));
        }
        let version = u16::from_be_bytes([fixed[4], fixed[5]]);
        if version != VERSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the master speaks HA protocol version {version}"),
            ));
        }
        let mut start = [0u8; 8];
        start.copy_from_slice(&fixed[7..15]);
        let reason_len = usize::from(u16::from_be_bytes([fixed[15], fixed[16]]));
        let mut reason = vec![0u8; reason_len.min(MAX_REASON_BYTES)];
        input.read_exact(&mut reason)?;
        Ok(match fixed[6] {
            0 => Self::Accepted {
                start: u64::from_be_bytes(start),
            },
            _ => Self::Refused {
                reason: String::from_utf8_lossy(&reason).into_owned(),
            },
        })
    }
}

/// A frame header: the commit-log offset of the first body byte and the body's length.
pub(crate) fn frame_header(offset: u64, size: usize) -> [u8; FRAME_HEADER_BYTES] {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    header[..8].copy_from_slice(&offset.to_be_bytes());
    header[8..].copy_from_slice(&(size as u32).to_be_bytes());
    header
}

/// Decodes a frame header: (offset, size). Negative values are refused by the caller's
/// checks on the returned numbers (offset against its log, size against its limit).
pub(crate) fn parse_frame_header(header: &[u8; FRAME_HEADER_BYTES]) -> (i64, i32) {
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&header[..8]);
    (
        i64::from_be_bytes(offset),
        i32::from_be_bytes([header[8], header[9], header[10], header[11]]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            shard: 1,
            shard_count: 2,
            segment_bytes: 1 << 30,
            broker_id: 1,
            offset: (1 << 48) + 4096,
            empty: false,
            tail: Some((4096, 0xDEAD_BEEF)),
            cluster: "DefaultCluster".into(),
            broker_name: "broker-a".into(),
        }
    }

    #[test]
    fn hello_round_trips_and_refuses_garbage() {
        let bytes = hello().encode();
        assert_eq!(Hello::read(&mut bytes.as_slice()).unwrap(), hello());
        let err = Hello::read(&mut &b"GET / HTTP/1.1\r\n"[..]).unwrap_err();
        assert!(matches!(err, HelloError::Garbage(_)), "{err}");
        let mut bad = bytes.clone();
        bad[5] = 9;
        assert!(matches!(
            Hello::read(&mut bad.as_slice()),
            Err(HelloError::Version(_))
        ));
        let mut long = bytes.clone();
        long[10..12].copy_from_slice(&4000u16.to_be_bytes());
        assert!(matches!(
            Hello::read(&mut long.as_slice()),
            Err(HelloError::NameTooLong(4000))
        ));
        // Cut short: an I/O error, not a panic.
        assert!(matches!(
            Hello::read(&mut &bytes[..20]),
            Err(HelloError::Io(_))
        ));
    }

    #[test]
    fn welcome_round_trips() {
        for welcome in [
            Welcome::Accepted { start: 77 },
            Welcome::Refused {
                reason: "another broker group".into(),
            },
        ] {
            let mut bytes = Vec::new();
            welcome.write(&mut bytes).unwrap();
            assert_eq!(Welcome::read(&mut bytes.as_slice()).unwrap(), welcome);
        }
        let (offset, size) = parse_frame_header(&frame_header(1 << 48, 300));
        assert_eq!((offset, size), (1 << 48, 300));
    }
}
