//! MessageSysFlag bits of stored records and send requests (docs/protocol.md §5.3).

/// The body is compressed (algorithm in [`COMPRESSION_TYPE_MASK`]; 0 means zlib).
pub const COMPRESSED: i32 = 0x1;
/// Set by the broker when the topic's filter type is MULTI_TAG.
pub const MULTI_TAGS: i32 = 0x2;
/// Mask of the transaction type bits.
pub const TRANSACTION_TYPE_MASK: i32 = 0xC;
/// Not a transactional message.
pub const TRANSACTION_NOT_TYPE: i32 = 0x0;
/// A half (prepared) transaction message.
pub const TRANSACTION_PREPARED: i32 = 0x4;
/// A committed transaction message.
pub const TRANSACTION_COMMIT: i32 = 0x8;
/// A rolled-back transaction message.
pub const TRANSACTION_ROLLBACK: i32 = 0xC;
/// The born host is IPv6 (16-byte address).
pub const BORN_HOST_V6: i32 = 0x10;
/// The store host is IPv6.
pub const STORE_HOST_V6: i32 = 0x20;
/// Inner batch: needs unwrapping (unused by the target clients).
pub const NEED_UNWRAP: i32 = 0x40;
/// Inner batch (unused by the target clients).
pub const INNER_BATCH: i32 = 0x80;
/// Mask of the compression algorithm bits.
pub const COMPRESSION_TYPE_MASK: i32 = 0x700;
/// LZ4 compression.
pub const COMPRESSION_LZ4: i32 = 0x100;
/// Zstandard compression.
pub const COMPRESSION_ZSTD: i32 = 0x200;
/// zlib compression (4.9.4+ writes it explicitly; 0 also means zlib).
pub const COMPRESSION_ZLIB: i32 = 0x300;

/// The transaction type bits of `sys_flag`.
pub const fn transaction_type(sys_flag: i32) -> i32 {
    sys_flag & TRANSACTION_TYPE_MASK
}

/// `sys_flag` with its transaction type replaced.
pub const fn with_transaction_type(sys_flag: i32, transaction: i32) -> i32 {
    (sys_flag & !TRANSACTION_TYPE_MASK) | (transaction & TRANSACTION_TYPE_MASK)
}
