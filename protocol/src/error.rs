//! Typed errors of the codec, one enum per layer, each carrying the field, offset or value that
//! made the input bad so a log line is enough to find the problem.
//!
//! The split matters to a server: a [`FrameError`] means the byte stream can no longer be delimited
//! (close the connection), while a [`HeaderError`] or [`FieldError`] concerns one frame that has
//! already been consumed, so the connection can keep serving.

use thiserror::Error;

/// The length prefix or header marker of a frame is unusable. The stream is out of sync after
/// this; the only safe reaction is to close the connection.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The 4-byte total length is negative.
    #[error("frame length {length} is negative")]
    NegativeLength { length: i32 },
    /// The total length cannot even hold the 4-byte header marker.
    #[error("frame length {length} is smaller than the 4-byte header marker")]
    LengthTooSmall { length: i32 },
    /// The frame (including its 4-byte length prefix) is larger than the configured limit.
    #[error("frame of {frame_bytes} bytes exceeds the limit of {max_frame_bytes} bytes")]
    FrameTooLarge {
        frame_bytes: u64,
        max_frame_bytes: usize,
    },
    /// The top byte of the header marker is neither 0 (JSON) nor 1 (ROCKETMQ).
    #[error("unknown header serialize type {type_byte}")]
    UnknownSerializeType { type_byte: u8 },
    /// The header length in the marker is larger than what the frame length leaves for it.
    #[error("header length {header_bytes} exceeds the {available} bytes left in the frame")]
    HeaderLengthExceedsFrame { header_bytes: u32, available: u32 },
}

/// A frame was delimited correctly but its command header could not be decoded. The frame has
/// been consumed from the buffer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HeaderError {
    /// A binary header ended before `field` could be read.
    #[error(
        "binary header truncated reading {field}: need {need} bytes at offset {offset}, have {have}"
    )]
    Truncated {
        field: &'static str,
        offset: usize,
        need: usize,
        have: usize,
    },
    /// A length field of a binary header is negative.
    #[error("binary header field {field} has negative length {length}")]
    NegativeLength { field: &'static str, length: i32 },
    /// A binary header has bytes after its ext-fields block.
    #[error("binary header has {count} trailing bytes after its ext fields")]
    TrailingBytes { count: usize },
    /// A string in the header is not UTF-8.
    #[error("header field {field} is not valid UTF-8")]
    InvalidUtf8 { field: &'static str },
    /// A JSON header is not a valid JSON object.
    #[error("invalid JSON header at byte {offset}: {reason}")]
    InvalidJson { offset: usize, reason: &'static str },
    /// A standard header key has a value of the wrong type or range.
    #[error("header key {field} has an invalid value: {reason}")]
    InvalidValue {
        field: &'static str,
        reason: &'static str,
    },
    /// The header has more ext fields than the codec accepts (a peer-driven allocation bound).
    #[error("header has more than {max} ext fields")]
    TooManyFields { max: usize },
}

/// A typed request or response header could not be read from a command's ext fields.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FieldError {
    /// A required key is absent.
    #[error("missing required header field {field}")]
    Missing { field: &'static str },
    /// A key is present but its text does not parse as the field's type.
    #[error("header field {field} has invalid value {value:?} (expected {expected})")]
    Invalid {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// Either a framing or a header error, as returned by [`crate::FrameCodec::decode`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The stream cannot be delimited any more; close the connection.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// One frame's header is bad; the frame has been consumed and the stream is intact.
    #[error(transparent)]
    Header(#[from] HeaderError),
}

impl DecodeError {
    /// Whether the connection must be closed (the stream can no longer be delimited).
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Frame(_))
    }
}

/// A stored-message record (docs/protocol.md §5.4) or batch entry is malformed, or a record cannot be
/// encoded within the format's limits.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    /// The buffer ends before the record does.
    #[error("record truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    /// The magic code is neither v1 nor v2 (the blank end-of-file marker is reported separately).
    #[error("unknown record magic code {magic:#010x}")]
    BadMagic { magic: u32 },
    /// The commit-log end-of-file blank marker, with the number of bytes it says to skip.
    #[error("blank end-of-segment marker covering {remaining} bytes")]
    BlankMarker { remaining: i32 },
    /// The TOTALSIZE field disagrees with the lengths of the variable parts.
    #[error("record total size {declared} disagrees with its contents ({computed} bytes)")]
    SizeMismatch { declared: i64, computed: i64 },
    /// A length field is negative or larger than the format allows.
    #[error("record field {field} has invalid length {length}")]
    BadLength { field: &'static str, length: i64 },
    /// A host port is outside 0..=65535.
    #[error("record field {field} has invalid port {port}")]
    BadPort { field: &'static str, port: i32 },
    /// A text field is not UTF-8.
    #[error("record field {field} is not valid UTF-8")]
    InvalidUtf8 { field: &'static str },
    /// The topic does not fit the length prefix of the chosen magic (127 bytes for v1).
    #[error("topic of {length} bytes does not fit a {magic} record (max {max})")]
    TopicTooLong {
        length: usize,
        max: usize,
        magic: &'static str,
    },
    /// The properties string is longer than 32767 bytes.
    #[error("properties of {length} bytes exceed the 32767-byte limit")]
    PropertiesTooLong { length: usize },
    /// The body is longer than an i32 length can describe.
    #[error("body of {length} bytes is too large for a record")]
    BodyTooLong { length: usize },
    /// The recomputed body CRC differs from the stored one.
    #[error("body CRC mismatch: stored {stored}, computed {computed}")]
    BodyCrcMismatch { stored: i32, computed: i32 },
}

/// A message id string (docs/protocol.md §5.6) is malformed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MessageIdError {
    /// Neither 32 (IPv4) nor 56 (IPv6) hex characters.
    #[error("message id has {length} characters, expected 32 (IPv4) or 56 (IPv6)")]
    BadLength { length: usize },
    /// A character is not a hex digit.
    #[error("message id has a non-hex character at position {position}")]
    BadHex { position: usize },
}

/// A JSON body (docs/protocol.md §4) could not be decoded.
#[derive(Debug, Error)]
pub enum BodyError {
    /// The JSON does not match the expected shape.
    #[error("invalid {body} JSON body: {source}")]
    Json {
        body: &'static str,
        source: serde_json::Error,
    },
    /// A compressed REGISTER_BROKER body is malformed.
    #[error("invalid compressed register body: {reason}")]
    Compressed { reason: String },
}
