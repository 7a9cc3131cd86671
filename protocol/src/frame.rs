//! Framing (docs/protocol.md §1.2): find where a frame ends before decoding anything.
//!
//! ```text
//!  0               4               8
//!  +---------------+---------------+----------------------+-------------------+
//!  | totalLength   | headerMarker  | header (H bytes)     | body (B bytes)    |
//!  | i32 BE        | i32 BE        | JSON or ROCKETMQ     | opaque bytes      |
//!  +---------------+---------------+----------------------+-------------------+
//!  totalLength  = 4 + H + B          (does NOT count its own 4 bytes)
//!  headerMarker = (serializeType << 24) | (H & 0x00FFFFFF)
//! ```
//!
//! [`FrameCodec::check`] is the cheap first step of every read: it looks only at the first eight
//! bytes, so a partial frame costs nothing, and it rejects an impossible length as soon as the
//! prefix arrives, before anything of the claimed size is buffered or allocated.

use bytes::{Buf, BytesMut};

use crate::command::{self, Command};
use crate::{DecodeError, FrameError, SerializeType};

/// Default frame limit: 16 MiB including the 4-byte length prefix, as the Java servers enforce.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

pub use crate::layout::{HEADER_MARKER_BYTES, LENGTH_PREFIX_BYTES, MIN_FRAME_BYTES};

/// Where the parts of a complete, buffered frame lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLayout {
    /// Whole frame on the wire, length prefix included.
    pub frame_bytes: usize,
    /// Header encoding from the marker.
    pub serialize_type: SerializeType,
    /// Header length from the marker.
    pub header_bytes: usize,
    /// Body length: what remains of the frame after the header.
    pub body_bytes: usize,
}

impl FrameLayout {
    /// Offset of the first header byte within the frame.
    pub const HEADER_OFFSET: usize = MIN_FRAME_BYTES;

    /// Offset of the first body byte within the frame.
    pub const fn body_offset(&self) -> usize {
        Self::HEADER_OFFSET + self.header_bytes
    }
}

/// Splits a byte stream into frames and decodes them, under a configurable size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCodec {
    max_frame_bytes: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl FrameCodec {
    /// A codec accepting frames of at most `max_frame_bytes` (length prefix included). Values below
    /// the minimum frame size are raised to it.
    pub const fn new(max_frame_bytes: usize) -> Self {
        let max_frame_bytes = if max_frame_bytes < MIN_FRAME_BYTES {
            MIN_FRAME_BYTES
        } else {
            max_frame_bytes
        };
        Self { max_frame_bytes }
    }

    /// The configured limit.
    pub const fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Reports whether `buf` starts with a whole frame.
    ///
    /// Returns `Ok(None)` when more bytes are needed, `Ok(Some(layout))` when the first
    /// `layout.frame_bytes` bytes are a complete frame, and an error as soon as the prefix or the
    /// marker is impossible, even if the rest of the frame has not arrived.
    pub fn check(&self, buf: &[u8]) -> Result<Option<FrameLayout>, FrameError> {
        let Some(prefix) = buf.get(..LENGTH_PREFIX_BYTES) else {
            return Ok(None);
        };
        let length = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        if length < 0 {
            return Err(FrameError::NegativeLength { length });
        }
        if (length as usize) < HEADER_MARKER_BYTES {
            return Err(FrameError::LengthTooSmall { length });
        }
        let frame_bytes = length as usize + LENGTH_PREFIX_BYTES;
        if frame_bytes > self.max_frame_bytes {
            return Err(FrameError::FrameTooLarge {
                frame_bytes: frame_bytes as u64,
                max_frame_bytes: self.max_frame_bytes,
            });
        }
        let Some(marker) = buf.get(LENGTH_PREFIX_BYTES..MIN_FRAME_BYTES) else {
            return Ok(None);
        };
        let type_byte = marker[0];
        let serialize_type = SerializeType::from_u8(type_byte)
            .ok_or(FrameError::UnknownSerializeType { type_byte })?;
        let header_bytes = u32::from_be_bytes([0, marker[1], marker[2], marker[3]]);
        let available = (length as u32) - HEADER_MARKER_BYTES as u32;
        if header_bytes > available {
            return Err(FrameError::HeaderLengthExceedsFrame {
                header_bytes,
                available,
            });
        }
        if buf.len() < frame_bytes {
            return Ok(None);
        }
        Ok(Some(FrameLayout {
            frame_bytes,
            serialize_type,
            header_bytes: header_bytes as usize,
            body_bytes: (available - header_bytes) as usize,
        }))
    }

    /// Takes the first whole frame off `buf` and decodes it.
    ///
    /// `Ok(None)`: more bytes are needed and `buf` is untouched. A [`DecodeError::Header`] means
    /// the frame was consumed but its header was bad; the stream stays usable. A
    /// [`DecodeError::Frame`] leaves `buf` as it was; the stream must be abandoned.
    ///
    /// The returned command's body and ext fields share `buf`'s allocation: nothing is copied.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Command>, DecodeError> {
        let Some(layout) = self.check(buf)? else {
            return Ok(None);
        };
        let mut header = buf.split_to(layout.frame_bytes);
        header.advance(FrameLayout::HEADER_OFFSET);
        let body = header.split_off(layout.header_bytes).freeze();
        let command = command::decode_header(layout.serialize_type, header, body)?;
        Ok(Some(command))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(length: i32, marker: u32) -> Vec<u8> {
        let mut bytes = length.to_be_bytes().to_vec();
        bytes.extend_from_slice(&marker.to_be_bytes());
        bytes
    }

    #[test]
    fn partial_prefix_needs_more() {
        let codec = FrameCodec::default();
        assert_eq!(codec.check(&[]), Ok(None));
        assert_eq!(codec.check(&[0, 0, 0]), Ok(None));
        assert_eq!(codec.check(&[0, 0, 0, 10, 0]), Ok(None));
    }

    #[test]
    fn impossible_lengths_fail_before_the_frame_arrives() {
        let codec = FrameCodec::new(1024);
        assert_eq!(
            codec.check(&(-1i32).to_be_bytes()),
            Err(FrameError::NegativeLength { length: -1 })
        );
        assert_eq!(
            codec.check(&3i32.to_be_bytes()),
            Err(FrameError::LengthTooSmall { length: 3 })
        );
        assert_eq!(
            codec.check(&1021i32.to_be_bytes()),
            Err(FrameError::FrameTooLarge {
                frame_bytes: 1025,
                max_frame_bytes: 1024
            })
        );
        assert_eq!(
            codec.check(&prefix(100, 0x0200_0000)),
            Err(FrameError::UnknownSerializeType { type_byte: 2 })
        );
        assert_eq!(
            codec.check(&prefix(10, 7)),
            Err(FrameError::HeaderLengthExceedsFrame {
                header_bytes: 7,
                available: 6
            })
        );
    }

    #[test]
    fn limit_counts_the_length_prefix() {
        let codec = FrameCodec::new(16);
        let mut frame = prefix(12, 0);
        frame.resize(16, 0);
        let layout = codec.check(&frame).unwrap().unwrap();
        assert_eq!(
            layout,
            FrameLayout {
                frame_bytes: 16,
                serialize_type: SerializeType::Json,
                header_bytes: 0,
                body_bytes: 8
            }
        );
        assert!(codec.check(&prefix(13, 0)).is_err());
    }

    #[test]
    fn complete_frame_is_reported_only_when_buffered() {
        let codec = FrameCodec::default();
        let mut frame = prefix(6, 0x0100_0002);
        assert_eq!(codec.check(&frame), Ok(None));
        frame.extend_from_slice(&[1, 2]);
        let layout = codec.check(&frame).unwrap().unwrap();
        assert_eq!(layout.serialize_type, SerializeType::RocketMq);
        assert_eq!(
            (layout.header_bytes, layout.body_bytes, layout.body_offset()),
            (2, 0, 10)
        );
    }
}
