//! The tags hash code stored in consume-queue entries and subscription code sets (docs/protocol.md §5.7).

/// Java's `String.hashCode()` of `tags`, sign-extended to `i64`; 0 for no tags.
///
/// The hash runs over UTF-16 code units, not bytes or chars, so non-ASCII tags hash exactly as
/// the Java broker and clients hash them.
pub fn tags_hash(tags: &str) -> i64 {
    i64::from(java_string_hash(tags))
}

/// Java's `String.hashCode()`: `h = 31 * h + c` over UTF-16 code units with 32-bit wrap-around.
pub fn java_string_hash(text: &str) -> i32 {
    text.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_java() {
        assert_eq!(tags_hash("TagA"), 2_598_919);
        assert_eq!(tags_hash(""), 0);
        // "null" is what ali-ons stores for a message without tags.
        assert_eq!(java_string_hash("null"), 3_392_903);
        // Values computed with Java's String.hashCode: overflow wraps, and a character outside the
        // BMP counts as two UTF-16 units.
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(java_string_hash("\u{1F600}"), 1_772_899);
    }
}
