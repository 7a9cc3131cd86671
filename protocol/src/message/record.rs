//! The stored-message record (docs/protocol.md §5.4): the unit of the commit log and of every PULL,
//! QUERY_MESSAGE and VIEW_MESSAGE_BY_ID body.
//!
//! ```text
//! offset      size   field
//!  0           4     TOTALSIZE            i32, whole record including this field
//!  4           4     MAGICCODE            0xDAA320A7 (v1) | 0xDAA320AB (v2)
//!  8           4     BODYCRC              body_crc(body)
//! 12           4     QUEUEID              i32
//! 16           4     FLAG                 i32
//! 20           8     QUEUEOFFSET          i64   (store-assigned)
//! 28           8     PHYSICALOFFSET       i64   (store-assigned)
//! 36           4     SYSFLAG              i32
//! 40           8     BORNTIMESTAMP        i64 ms
//! 48           B     BORNHOST             IPv4: 4 + i32 port (B = 8); IPv6: 16 + 4 (B = 20)
//! 48+B         8     STORETIMESTAMP       i64 ms (store-assigned)
//! 56+B         S     STOREHOSTADDRESS     as BORNHOST (S = 8 or 20)
//! 56+B+S       4     RECONSUMETIMES       i32
//! 60+B+S       8     PREPARED TX OFFSET   i64
//! 68+B+S       4+n   BODY                 i32 length, bytes
//!  ...         1+t   TOPIC                v1: i8 length; v2: i16 length (2+t)
//!  ...         2+p   PROPERTIES           i16 length, UTF-8
//! ```
//!
//! The IPv6 bits of SYSFLAG say which host sizes apply; the encoder sets them from the actual
//! addresses so a record can never disagree with itself. Decoding borrows body, topic and
//! properties from the input, and checks TOTALSIZE against the variable lengths, so a record that
//! decodes is exactly as long as it claims.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::BufMut;

use super::crc::body_crc;
use super::properties::MAX_PROPERTIES_BYTES;
use super::sys_flag::{BORN_HOST_V6, STORE_HOST_V6};
use crate::RecordError;

/// Magic of a v1 record (1-byte topic length); the only one Java 4.x and ali-ons read.
pub const MAGIC_V1: u32 = 0xDAA3_20A7;
/// Magic of a v2 record (2-byte topic length), used by 5.x for topics over 127 bytes.
pub const MAGIC_V2: u32 = 0xDAA3_20AB;
/// Magic of the blank marker that ends a Java commit-log segment.
pub const MAGIC_BLANK: u32 = 0xCBD4_3194;

/// Offset of QUEUEOFFSET within a record.
pub const QUEUE_OFFSET_AT: usize = 20;
/// Offset of PHYSICALOFFSET within a record.
pub const PHYSICAL_OFFSET_AT: usize = 28;
/// Offset of SYSFLAG within a record.
pub const SYS_FLAG_AT: usize = 36;
/// Offset of the BORNHOST field.
pub const BORN_HOST_AT: usize = 48;
/// Smallest possible record: IPv4 hosts, v1, empty body, topic and properties.
pub const MIN_RECORD_BYTES: usize = 84 + 4 + 1 + 2;

/// The record format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageMagic {
    /// 1-byte topic length (topics up to 127 bytes).
    #[default]
    V1,
    /// 2-byte topic length.
    V2,
}

impl MessageMagic {
    /// The magic code.
    pub const fn code(self) -> u32 {
        match self {
            Self::V1 => MAGIC_V1,
            Self::V2 => MAGIC_V2,
        }
    }

    /// v1 when the topic fits its 1-byte length (what 4.x clients need), else v2.
    pub const fn for_topic(topic: &str) -> Self {
        if topic.len() <= i8::MAX as usize {
            Self::V1
        } else {
            Self::V2
        }
    }

    const fn topic_length_bytes(self) -> usize {
        match self {
            Self::V1 => 1,
            Self::V2 => 2,
        }
    }

    const fn max_topic_bytes(self) -> usize {
        match self {
            Self::V1 => i8::MAX as usize,
            Self::V2 => i16::MAX as usize,
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }
}

/// Offsets of the fields that move with the host sizes, for patching store-assigned fields in
/// place without decoding the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLayout {
    born_host_bytes: usize,
    store_host_bytes: usize,
}

impl RecordLayout {
    /// The layout implied by a record's SYSFLAG.
    pub const fn from_sys_flag(sys_flag: i32) -> Self {
        Self {
            born_host_bytes: if sys_flag & BORN_HOST_V6 != 0 { 20 } else { 8 },
            store_host_bytes: if sys_flag & STORE_HOST_V6 != 0 { 20 } else { 8 },
        }
    }

    /// Offset of STORETIMESTAMP.
    pub const fn store_timestamp_at(&self) -> usize {
        BORN_HOST_AT + self.born_host_bytes
    }

    /// Offset of STOREHOSTADDRESS.
    pub const fn store_host_at(&self) -> usize {
        self.store_timestamp_at() + 8
    }

    /// Offset of RECONSUMETIMES.
    pub const fn reconsume_times_at(&self) -> usize {
        self.store_host_at() + self.store_host_bytes
    }

    /// Offset of the BODY length field: the size of the fixed part.
    pub const fn body_length_at(&self) -> usize {
        self.reconsume_times_at() + 4 + 8
    }

    /// Writes the store-assigned fields of an encoded record in place. `record` must start with a
    /// record of this layout.
    pub fn patch_store_fields(
        &self,
        record: &mut [u8],
        queue_offset: i64,
        physical_offset: i64,
        store_timestamp_ms: i64,
    ) {
        record[QUEUE_OFFSET_AT..QUEUE_OFFSET_AT + 8].copy_from_slice(&queue_offset.to_be_bytes());
        record[PHYSICAL_OFFSET_AT..PHYSICAL_OFFSET_AT + 8]
            .copy_from_slice(&physical_offset.to_be_bytes());
        let at = self.store_timestamp_at();
        record[at..at + 8].copy_from_slice(&store_timestamp_ms.to_be_bytes());
    }
}

/// One stored message; text and body borrow from the buffer it was decoded from (or from the
/// caller, when encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredRecord<'a> {
    /// Record format.
    pub magic: MessageMagic,
    /// Masked CRC32 of the body as stored. [`StoredRecord::encode`] writes it as given; use
    /// [`body_crc`] to compute it.
    pub body_crc: i32,
    /// Queue within the topic.
    pub queue_id: i32,
    /// User flag.
    pub flag: i32,
    /// Consume-queue offset.
    pub queue_offset: i64,
    /// Commit-log offset of this record.
    pub physical_offset: i64,
    /// Message sys flag; the IPv6 host bits are derived from the addresses on encode.
    pub sys_flag: i32,
    /// Client timestamp, ms.
    pub born_timestamp_ms: i64,
    /// Producer address.
    pub born_host: SocketAddr,
    /// Broker timestamp, ms.
    pub store_timestamp_ms: i64,
    /// Broker address (`brokerIP1:listenPort`).
    pub store_host: SocketAddr,
    /// Delivery attempts so far.
    pub reconsume_times: i32,
    /// For commit records: the half message's commit-log offset.
    pub prepared_transaction_offset: i64,
    /// Body as stored (compressed if the COMPRESSED bit is set).
    pub body: &'a [u8],
    /// Topic.
    pub topic: &'a str,
    /// Properties string.
    pub properties: &'a str,
}

const fn host_bytes(host: &SocketAddr) -> usize {
    match host {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

impl StoredRecord<'_> {
    /// The SYSFLAG as it will be encoded: the IPv6 bits follow the addresses.
    pub const fn encoded_sys_flag(&self) -> i32 {
        let mut flag = self.sys_flag & !(BORN_HOST_V6 | STORE_HOST_V6);
        if matches!(self.born_host, SocketAddr::V6(_)) {
            flag |= BORN_HOST_V6;
        }
        if matches!(self.store_host, SocketAddr::V6(_)) {
            flag |= STORE_HOST_V6;
        }
        flag
    }

    /// Bytes [`StoredRecord::encode`] will write.
    pub const fn encoded_len(&self) -> usize {
        68 + host_bytes(&self.born_host)
            + host_bytes(&self.store_host)
            + 4
            + self.body.len()
            + self.magic.topic_length_bytes()
            + self.topic.len()
            + 2
            + self.properties.len()
    }

    /// Checks the variable parts against the format's limits.
    pub fn validate(&self) -> Result<(), RecordError> {
        if self.topic.len() > self.magic.max_topic_bytes() {
            return Err(RecordError::TopicTooLong {
                length: self.topic.len(),
                max: self.magic.max_topic_bytes(),
                magic: self.magic.name(),
            });
        }
        if self.properties.len() > MAX_PROPERTIES_BYTES {
            return Err(RecordError::PropertiesTooLong {
                length: self.properties.len(),
            });
        }
        if i32::try_from(self.encoded_len()).is_err() {
            return Err(RecordError::BodyTooLong {
                length: self.body.len(),
            });
        }
        Ok(())
    }

    /// Appends the encoded record to `out`; nothing is written if a limit is exceeded.
    pub fn encode<B: BufMut>(&self, out: &mut B) -> Result<(), RecordError> {
        self.validate()?;
        let total = self.encoded_len();
        out.put_i32(total as i32);
        out.put_u32(self.magic.code());
        out.put_i32(self.body_crc);
        out.put_i32(self.queue_id);
        out.put_i32(self.flag);
        out.put_i64(self.queue_offset);
        out.put_i64(self.physical_offset);
        out.put_i32(self.encoded_sys_flag());
        out.put_i64(self.born_timestamp_ms);
        put_host(out, &self.born_host);
        out.put_i64(self.store_timestamp_ms);
        put_host(out, &self.store_host);
        out.put_i32(self.reconsume_times);
        out.put_i64(self.prepared_transaction_offset);
        out.put_i32(self.body.len() as i32);
        out.put_slice(self.body);
        match self.magic {
            MessageMagic::V1 => out.put_i8(self.topic.len() as i8),
            MessageMagic::V2 => out.put_i16(self.topic.len() as i16),
        }
        out.put_slice(self.topic.as_bytes());
        out.put_i16(self.properties.len() as i16);
        out.put_slice(self.properties.as_bytes());
        Ok(())
    }

    /// Recomputes the body CRC and compares it with the stored one.
    pub fn verify_body_crc(&self) -> Result<(), RecordError> {
        let computed = body_crc(self.body);
        if computed == self.body_crc {
            Ok(())
        } else {
            Err(RecordError::BodyCrcMismatch {
                stored: self.body_crc,
                computed,
            })
        }
    }
}

fn put_host<B: BufMut>(out: &mut B, host: &SocketAddr) {
    match host.ip() {
        IpAddr::V4(ip) => out.put_slice(&ip.octets()),
        IpAddr::V6(ip) => out.put_slice(&ip.octets()),
    }
    out.put_i32(i32::from(host.port()));
}

/// A length field as `usize`; a negative length is an error, never a huge slice.
fn length(raw: i64, field: &'static str) -> Result<usize, RecordError> {
    usize::try_from(raw).map_err(|_| RecordError::BadLength { field, length: raw })
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], RecordError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len());
        let end = end.ok_or(RecordError::Truncated {
            need: self.pos.saturating_add(len),
            have: self.bytes.len(),
        })?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn i32(&mut self) -> Result<i32, RecordError> {
        self.array().map(i32::from_be_bytes)
    }

    fn i64(&mut self) -> Result<i64, RecordError> {
        self.array().map(i64::from_be_bytes)
    }

    fn host(&mut self, ipv6: bool, field: &'static str) -> Result<SocketAddr, RecordError> {
        let ip = if ipv6 {
            IpAddr::V6(Ipv6Addr::from(self.array::<16>()?))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.array::<4>()?))
        };
        let port = self.i32()?;
        let port = u16::try_from(port).map_err(|_| RecordError::BadPort { field, port })?;
        Ok(SocketAddr::new(ip, port))
    }

    fn text(&mut self, len: usize, field: &'static str) -> Result<&'a str, RecordError> {
        std::str::from_utf8(self.take(len)?).map_err(|_| RecordError::InvalidUtf8 { field })
    }
}

impl<'a> StoredRecord<'a> {
    /// Decodes the record at the start of `bytes`; returns it and its length.
    pub fn decode(bytes: &'a [u8]) -> Result<(Self, usize), RecordError> {
        let mut reader = Reader { bytes, pos: 0 };
        let total_size = reader.i32()?;
        let magic_code = u32::from_be_bytes(reader.array()?);
        let magic = match magic_code {
            MAGIC_V1 => MessageMagic::V1,
            MAGIC_V2 => MessageMagic::V2,
            MAGIC_BLANK => {
                return Err(RecordError::BlankMarker {
                    remaining: total_size,
                });
            }
            other => return Err(RecordError::BadMagic { magic: other }),
        };
        let declared = length(i64::from(total_size), "total size")?;
        if declared > bytes.len() {
            return Err(RecordError::Truncated {
                need: declared,
                have: bytes.len(),
            });
        }
        // Read only within the declared record, so a lying body length cannot reach the next one.
        let mut reader = Reader {
            bytes: &bytes[..declared],
            pos: 8,
        };
        let body_crc = reader.i32()?;
        let queue_id = reader.i32()?;
        let flag = reader.i32()?;
        let queue_offset = reader.i64()?;
        let physical_offset = reader.i64()?;
        let sys_flag = reader.i32()?;
        let born_timestamp_ms = reader.i64()?;
        let born_host = reader.host(sys_flag & BORN_HOST_V6 != 0, "born host port")?;
        let store_timestamp_ms = reader.i64()?;
        let store_host = reader.host(sys_flag & STORE_HOST_V6 != 0, "store host port")?;
        let reconsume_times = reader.i32()?;
        let prepared_transaction_offset = reader.i64()?;
        let body_raw = reader.i32()?;
        let body_len = length(i64::from(body_raw), "body length")?;
        let body = reader.take(body_len)?;
        let topic_raw = match magic {
            MessageMagic::V1 => i64::from(i8::from_be_bytes(reader.array()?)),
            MessageMagic::V2 => i64::from(i16::from_be_bytes(reader.array()?)),
        };
        let topic_len = length(topic_raw, "topic length")?;
        let topic = reader.text(topic_len, "topic")?;
        let properties_raw = i16::from_be_bytes(reader.array()?);
        let properties_len = length(i64::from(properties_raw), "properties length")?;
        let properties = reader.text(properties_len, "properties")?;
        if reader.pos != declared {
            return Err(RecordError::SizeMismatch {
                declared: i64::from(total_size),
                computed: reader.pos as i64,
            });
        }
        let record = Self {
            magic,
            body_crc,
            queue_id,
            flag,
            queue_offset,
            physical_offset,
            sys_flag,
            born_timestamp_ms,
            born_host,
            store_timestamp_ms,
            store_host,
            reconsume_times,
            prepared_transaction_offset,
            body,
            topic,
            properties,
        };
        Ok((record, declared))
    }

    /// The properties as a map view.
    pub const fn properties(&self) -> super::Properties<'a> {
        super::Properties::new(self.properties)
    }
}

/// Iterates over concatenated records (a PULL body). Stops after the first error, as clients
/// stop at the first undecodable record.
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    rest: &'a [u8],
}

impl<'a> RecordIter<'a> {
    /// Iterates over the records of `bytes`.
    pub const fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<StoredRecord<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match StoredRecord::decode(self.rest) {
            Ok((record, len)) => {
                self.rest = &self.rest[len..];
                Some(Ok(record))
            }
            Err(error) => {
                self.rest = &[];
                Some(Err(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(body: &[u8]) -> StoredRecord<'_> {
        StoredRecord {
            magic: MessageMagic::V1,
            body_crc: body_crc(body),
            queue_id: 3,
            flag: 0,
            queue_offset: 17,
            physical_offset: 8000,
            sys_flag: 0,
            born_timestamp_ms: 1_700_000_000_000,
            born_host: "10.0.0.5:50000".parse().unwrap(),
            store_timestamp_ms: 1_700_000_000_001,
            store_host: "192.168.0.10:10911".parse().unwrap(),
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body,
            topic: "TopicTest",
            properties: "TAGS\u{1}TagA",
        }
    }

    #[test]
    fn ipv4_v1_layout_matches_the_table() {
        let record = sample(b"hello");
        let mut out = Vec::new();
        record.encode(&mut out).unwrap();
        assert_eq!(out.len(), 84 + 4 + 5 + 1 + 9 + 2 + 9);
        assert_eq!(out.len(), record.encoded_len());
        assert_eq!(&out[0..4], &(out.len() as i32).to_be_bytes());
        assert_eq!(&out[4..8], &[0xDA, 0xA3, 0x20, 0xA7]);
        assert_eq!(&out[8..12], &907_060_870i32.to_be_bytes());
        assert_eq!(&out[28..36], &8000i64.to_be_bytes());
        assert_eq!(&out[48..56], &[10, 0, 0, 5, 0, 0, 0xC3, 0x50]);
        assert_eq!(&out[64..72], &[192, 168, 0, 10, 0, 0, 0x2A, 0x9F]);
        assert_eq!(&out[84..88], &5i32.to_be_bytes());
        let (decoded, len) = StoredRecord::decode(&out).unwrap();
        assert_eq!((decoded, len), (record, out.len()));
        decoded.verify_body_crc().unwrap();
    }

    #[test]
    fn ipv6_hosts_set_their_flags_and_patch_offsets_follow() {
        let mut record = sample(b"x");
        record.store_host = "[::1]:10911".parse().unwrap();
        let mut out = Vec::new();
        record.encode(&mut out).unwrap();
        let (decoded, _) = StoredRecord::decode(&out).unwrap();
        assert_eq!(decoded.sys_flag, STORE_HOST_V6);
        assert_eq!(decoded.store_host, record.store_host);
        let layout = RecordLayout::from_sys_flag(decoded.sys_flag);
        layout.patch_store_fields(&mut out, 99, 123_456, 42);
        let (patched, _) = StoredRecord::decode(&out).unwrap();
        assert_eq!(
            (
                patched.queue_offset,
                patched.physical_offset,
                patched.store_timestamp_ms
            ),
            (99, 123_456, 42)
        );
    }

    #[test]
    fn long_topics_need_v2() {
        let topic = "t".repeat(200);
        let mut record = sample(b"");
        record.topic = &topic;
        assert!(matches!(
            record.encode(&mut Vec::new()),
            Err(RecordError::TopicTooLong {
                length: 200,
                max: 127,
                ..
            })
        ));
        record.magic = MessageMagic::for_topic(&topic);
        let mut out = Vec::new();
        record.encode(&mut out).unwrap();
        assert_eq!(StoredRecord::decode(&out).unwrap().0.topic, topic);
    }

    #[test]
    fn blank_marker_and_bad_magic_are_reported() {
        let mut blank = 4096i32.to_be_bytes().to_vec();
        blank.extend_from_slice(&MAGIC_BLANK.to_be_bytes());
        assert_eq!(
            StoredRecord::decode(&blank),
            Err(RecordError::BlankMarker { remaining: 4096 })
        );
        let mut bad = 100i32.to_be_bytes().to_vec();
        bad.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        assert_eq!(
            StoredRecord::decode(&bad),
            Err(RecordError::BadMagic { magic: 0x1234_5678 })
        );
    }

    #[test]
    fn iterator_stops_at_the_first_bad_record() {
        let mut out = Vec::new();
        sample(b"a").encode(&mut out).unwrap();
        sample(b"bb").encode(&mut out).unwrap();
        out.extend_from_slice(&[0, 0, 0]);
        let results: Vec<_> = RecordIter::new(&out).collect();
        assert_eq!(results.len(), 3);
        assert_eq!(results[1].as_ref().unwrap().body, b"bb");
        assert!(matches!(results[2], Err(RecordError::Truncated { .. })));
    }
}
