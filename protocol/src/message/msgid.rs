//! Offset message ids (docs/protocol.md §5.6): the store host and commit-log offset of a message,
//! rendered as upper-case hex. This is the `msgId` of send responses and what
//! VIEW_MESSAGE_BY_ID and transactions decode.
//!
//! ```text
//! IPv4: ip (4) | port (i32) | offset (i64)  = 16 bytes -> 32 hex characters
//! IPv6: ip (16)| port (i32) | offset (i64)  = 28 bytes -> 56 hex characters
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use crate::MessageIdError;

/// Hex length of an IPv4 offset id.
pub const IPV4_ID_CHARS: usize = 32;
/// Hex length of an IPv6 offset id.
pub const IPV6_ID_CHARS: usize = 56;

/// A message's location: the broker that stored it and its commit-log offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OffsetMessageId {
    /// `brokerIP1:listenPort` of the storing broker.
    pub store_host: SocketAddr,
    /// Commit-log physical offset.
    pub commit_log_offset: i64,
}

impl OffsetMessageId {
    /// The id's bytes (16 or 28).
    fn to_bytes(self) -> ([u8; 28], usize) {
        let mut bytes = [0u8; 28];
        let ip_len = match self.store_host.ip() {
            IpAddr::V4(ip) => {
                bytes[..4].copy_from_slice(&ip.octets());
                4
            }
            IpAddr::V6(ip) => {
                bytes[..16].copy_from_slice(&ip.octets());
                16
            }
        };
        bytes[ip_len..ip_len + 4].copy_from_slice(&i32::from(self.store_host.port()).to_be_bytes());
        bytes[ip_len + 4..ip_len + 12].copy_from_slice(&self.commit_log_offset.to_be_bytes());
        (bytes, ip_len + 12)
    }

    /// Appends the upper-case hex id to `out` without allocating.
    pub fn write_hex(&self, out: &mut String) {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let (bytes, len) = self.to_bytes();
        for byte in &bytes[..len] {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xF)]));
        }
    }
}

impl fmt::Display for OffsetMessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::with_capacity(IPV6_ID_CHARS);
        self.write_hex(&mut text);
        f.write_str(&text)
    }
}

impl FromStr for OffsetMessageId {
    type Err = MessageIdError;

    /// Parses an id of 32 (IPv4) or 56 (IPv6) hex characters, in either case.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let ip_len = match text.len() {
            IPV4_ID_CHARS => 4,
            IPV6_ID_CHARS => 16,
            length => return Err(MessageIdError::BadLength { length }),
        };
        let mut bytes = [0u8; 28];
        for (index, byte) in bytes[..ip_len + 12].iter_mut().enumerate() {
            let nibble = |position: usize| {
                char::from(text.as_bytes()[position])
                    .to_digit(16)
                    .ok_or(MessageIdError::BadHex { position })
            };
            *byte = (nibble(index * 2)? << 4 | nibble(index * 2 + 1)?) as u8;
        }
        let ip = if ip_len == 4 {
            IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
        } else {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&bytes[..16]);
            IpAddr::V6(Ipv6Addr::from(octets))
        };
        let port = i32::from_be_bytes([
            bytes[ip_len],
            bytes[ip_len + 1],
            bytes[ip_len + 2],
            bytes[ip_len + 3],
        ]);
        let mut offset = [0u8; 8];
        offset.copy_from_slice(&bytes[ip_len + 4..ip_len + 12]);
        // Java writes the port as an i32; only the low 16 bits are meaningful.
        Ok(Self {
            store_host: SocketAddr::new(ip, port as u16),
            commit_log_offset: i64::from_be_bytes(offset),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_documented_example() {
        let id: OffsetMessageId = "C0A8000A00002A9F0000000000001F40".parse().unwrap();
        assert_eq!(id.store_host, "192.168.0.10:10911".parse().unwrap());
        assert_eq!(id.commit_log_offset, 8000);
        assert_eq!(id.to_string(), "C0A8000A00002A9F0000000000001F40");
        let lower: OffsetMessageId = "c0a8000a00002a9f0000000000001f40".parse().unwrap();
        assert_eq!(lower, id);
    }

    #[test]
    fn ipv6_and_bad_input() {
        let id = OffsetMessageId {
            store_host: "[2001:db8::1]:10911".parse().unwrap(),
            commit_log_offset: i64::MAX,
        };
        let text = id.to_string();
        assert_eq!(text.len(), 56);
        assert_eq!(text.parse::<OffsetMessageId>(), Ok(id));
        assert_eq!(
            "ABC".parse::<OffsetMessageId>(),
            Err(MessageIdError::BadLength { length: 3 })
        );
        assert_eq!(
            "G0A8000A00002A9F0000000000001F40".parse::<OffsetMessageId>(),
            Err(MessageIdError::BadHex { position: 0 })
        );
    }
}
