//! The body checksum of stored records and the REGISTER_BROKER `bodyCrc32` (docs/protocol.md §5.5).

/// Java's `UtilAll.crc32`: CRC-32/ISO-HDLC (zlib's `crc32`) masked to 31 bits, so it is never
/// negative. An empty body gives 0.
pub fn body_crc(bytes: &[u8]) -> i32 {
    (crc32fast::hash(bytes) & 0x7FFF_FFFF) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_documented_example() {
        assert_eq!(body_crc(b"hello"), 907_060_870);
        assert_eq!(body_crc(b""), 0);
    }
}
