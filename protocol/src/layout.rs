//! The fixed prefix of every frame (docs/protocol.md §1.2): a 4-byte total length, then a 4-byte
//! marker holding the serialize type and the header length. A leaf shared by the frame splitter
//! ([`crate::frame`]) and the command encoder ([`crate::command`]); reached through `frame`.

/// Bytes of the total-length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Bytes of the header marker that follows the length prefix.
pub const HEADER_MARKER_BYTES: usize = 4;

/// The smallest possible frame: a length prefix and a marker with an empty header.
pub const MIN_FRAME_BYTES: usize = LENGTH_PREFIX_BYTES + HEADER_MARKER_BYTES;
