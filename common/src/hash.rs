//! 64-bit FNV-1a.
//!
//! Used where a hash must be stable across runs, builds and machines (which shard owns a queue:
//! the on-disk layout depends on it) and for small maps keyed by names the broker has already
//! validated, where SipHash's flood resistance buys nothing and its cost shows on every append.

use std::hash::{BuildHasherDefault, Hasher};

const OFFSET_BASIS: u64 = 0xCBF2_9CE4_8422_2325;
const PRIME: u64 = 0x0100_0000_01B3;

/// FNV-1a of `bytes`.
pub const fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut hash = OFFSET_BASIS;
    let mut i = 0;
    while i < bytes.len() {
        hash = (hash ^ bytes[i] as u64).wrapping_mul(PRIME);
        i += 1;
    }
    hash
}

/// FNV-1a as a [`Hasher`], for `HashMap`s keyed by validated names.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(OFFSET_BASIS)
    }
}

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(PRIME);
        }
    }
}

/// Builds [`Fnv1a`] hashers: `HashMap<K, V, FnvBuildHasher>`.
pub type FnvBuildHasher = BuildHasherDefault<Fnv1a>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // Published FNV-1a 64-bit test vectors.
        assert_eq!(fnv1a_64(b""), 0xCBF2_9CE4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xAF63_DC4C_8601_EC8C);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_F739_67E8);
    }

    #[test]
    fn hasher_matches_function() {
        let mut hasher = Fnv1a::default();
        hasher.write(b"Topic");
        hasher.write(b"Test");
        assert_eq!(hasher.finish(), fnv1a_64(b"TopicTest"));
    }
}
