//! Remoting commands: the decoded form ([`Command`]) and the encoder that writes a frame straight
//! into a caller's buffer from a [`CommandHead`], any [`EncodeExt`] fields, and a body.
//!
//! Requests and responses share one layout (docs/protocol.md §2.1); the response bit of `flag` tells
//! them apart. Responses mirror the serialize type of their request ([`CommandHead::response_to`]),
//! because ali-ons cannot read binary headers and a JSON request means a JSON-only peer may be
//! listening (docs/protocol.md §2.8).

mod binary;
mod json;

use bytes::{BufMut, Bytes, BytesMut};

use crate::ext::{EncodeExt, ExtFields};
use crate::header::FromExt;
use crate::layout::{HEADER_MARKER_BYTES, LENGTH_PREFIX_BYTES};
use crate::{FieldError, HeaderError, LanguageCode, RequestCode, ResponseCode, SerializeType};

/// `flag` bit 0: the command is a response.
pub const FLAG_RESPONSE: i32 = 0x1;
/// `flag` bit 1: a oneway request; the receiver must not answer.
pub const FLAG_ONEWAY: i32 = 0x2;

/// The `version` this implementation sends: 409 = V4_9_8, which Java clients record as the broker
/// version and which is above every threshold of docs/protocol.md §2.6.
pub const CURRENT_VERSION: i32 = 409;

/// A decoded remoting command. Its `ext` fields and `body` share the receive buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// Request code (requests) or response code (responses), as on the wire.
    pub code: i32,
    /// Sender's language.
    pub language: LanguageCode,
    /// Sender's version ordinal (docs/protocol.md §2.6).
    pub version: i32,
    /// Request id, echoed by the response.
    pub opaque: i32,
    /// [`FLAG_RESPONSE`] and [`FLAG_ONEWAY`] bits.
    pub flag: i32,
    /// Human-readable error text, mostly on responses.
    pub remark: Option<String>,
    /// The custom header fields.
    pub ext: ExtFields,
    /// How the header was (or will be) encoded.
    pub serialize_type: SerializeType,
    /// The body; empty when absent.
    pub body: Bytes,
}

impl Command {
    /// A new request with no fields and no body, in JSON.
    pub fn request(code: RequestCode, opaque: i32) -> Self {
        Self {
            code: code.as_i32(),
            language: LanguageCode::Java,
            version: CURRENT_VERSION,
            opaque,
            flag: 0,
            remark: None,
            ext: ExtFields::new(),
            serialize_type: SerializeType::Json,
            body: Bytes::new(),
        }
    }

    /// Whether this is a response.
    pub const fn is_response(&self) -> bool {
        self.flag & FLAG_RESPONSE != 0
    }

    /// Whether this is a oneway request (no response may be sent).
    pub const fn is_oneway(&self) -> bool {
        self.flag & FLAG_ONEWAY != 0
    }

    /// The code read as a request code.
    pub const fn request_code(&self) -> RequestCode {
        RequestCode::from_i32(self.code)
    }

    /// The code read as a response code.
    pub const fn response_code(&self) -> ResponseCode {
        ResponseCode::from_i32(self.code)
    }

    /// Reads a typed header from the ext fields; the header borrows from `self`.
    pub fn header<'a, H: FromExt<'a>>(&'a self) -> Result<H, FieldError> {
        H::from_ext(&self.ext)
    }

    /// The numeric part of this command's header, for re-encoding it.
    pub fn head(&self) -> CommandHead<'_> {
        CommandHead {
            code: self.code,
            language: self.language,
            version: self.version,
            opaque: self.opaque,
            flag: self.flag,
            remark: self.remark.as_deref(),
            serialize_type: self.serialize_type,
        }
    }

    /// Appends this command as a frame to `out`, in its own serialize type.
    pub fn encode(&self, out: &mut BytesMut) {
        encode_frame(&self.head(), &self.ext, &self.body, out);
    }
}

/// The fixed fields of a command to encode; ext fields and body are passed separately so typed
/// headers and borrowed bodies can be written without building a [`Command`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandHead<'a> {
    /// Request or response code.
    pub code: i32,
    /// Language to announce; servers answer `JAVA` (docs/protocol.md §2.2).
    pub language: LanguageCode,
    /// Version ordinal to announce.
    pub version: i32,
    /// Request id.
    pub opaque: i32,
    /// Flag bits.
    pub flag: i32,
    /// Optional remark.
    pub remark: Option<&'a str>,
    /// Header encoding.
    pub serialize_type: SerializeType,
}

impl<'a> CommandHead<'a> {
    /// A request head in the given encoding.
    pub const fn request(code: RequestCode, opaque: i32, serialize_type: SerializeType) -> Self {
        Self {
            code: code.as_i32(),
            language: LanguageCode::Java,
            version: CURRENT_VERSION,
            opaque,
            flag: 0,
            remark: None,
            serialize_type,
        }
    }

    /// A oneway request head.
    pub const fn oneway(code: RequestCode, opaque: i32, serialize_type: SerializeType) -> Self {
        let mut head = Self::request(code, opaque, serialize_type);
        head.flag = FLAG_ONEWAY;
        head
    }

    /// The head of the response to `request`: same opaque, same serialize type, response bit set.
    pub const fn response_to(request: &Command, code: ResponseCode) -> Self {
        Self {
            code: code.as_i32(),
            language: LanguageCode::Java,
            version: CURRENT_VERSION,
            opaque: request.opaque,
            flag: FLAG_RESPONSE,
            remark: None,
            serialize_type: request.serialize_type,
        }
    }

    /// The same head with a remark.
    #[must_use]
    pub const fn with_remark(mut self, remark: &'a str) -> Self {
        self.remark = Some(remark);
        self
    }
}

/// Appends a whole frame (length prefix, marker, header, body) to `out`.
pub fn encode_frame<E: EncodeExt>(
    head: &CommandHead<'_>,
    ext: &E,
    body: &[u8],
    out: &mut BytesMut,
) {
    encode_frame_head(head, ext, body.len(), out);
    out.extend_from_slice(body);
}

/// Appends the length prefix, marker and header of a frame whose `body_bytes`-byte body the
/// caller sends separately (for example a PULL body handed to a vectored write without copying).
pub fn encode_frame_head<E: EncodeExt>(
    head: &CommandHead<'_>,
    ext: &E,
    body_bytes: usize,
    out: &mut BytesMut,
) {
    let frame_start = out.len();
    out.put_u64(0); // length prefix and marker, patched below
    let header_start = out.len();
    match head.serialize_type {
        SerializeType::Json => json::encode(head, ext, out),
        SerializeType::RocketMq => binary::encode(head, ext, out),
    }
    let header_bytes = out.len() - header_start;
    let total_length = HEADER_MARKER_BYTES + header_bytes + body_bytes;
    let marker =
        (u32::from(head.serialize_type.as_u8()) << 24) | (header_bytes as u32 & 0x00FF_FFFF);
    out[frame_start..frame_start + LENGTH_PREFIX_BYTES]
        .copy_from_slice(&(total_length as u32).to_be_bytes());
    out[frame_start + LENGTH_PREFIX_BYTES..header_start].copy_from_slice(&marker.to_be_bytes());
}

/// The fixed header fields shared by both decoders.
#[derive(Debug, Default)]
struct DecodedFields {
    code: i32,
    language: LanguageCode,
    version: i32,
    opaque: i32,
    flag: i32,
    remark: Option<String>,
}

/// Decodes a header of the given type; `header` and `body` are slices of one received frame.
pub(crate) fn decode_header(
    serialize_type: SerializeType,
    header: BytesMut,
    body: Bytes,
) -> Result<Command, HeaderError> {
    let (fields, ext) = match serialize_type {
        SerializeType::Json => json::decode(header)?,
        SerializeType::RocketMq => binary::decode(header.freeze())?,
    };
    Ok(Command {
        code: fields.code,
        language: fields.language,
        version: fields.version,
        opaque: fields.opaque,
        flag: fields.flag,
        remark: fields.remark,
        ext,
        serialize_type,
        body,
    })
}
