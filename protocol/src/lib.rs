//! # ringmq-protocol
//!
//! A complete, allocation-light, panic-free codec for the Apache RocketMQ 4.x *remoting* protocol
//! (docs/protocol.md), shared by the broker, the NameServer and the client. Pure: no I/O, unless
//! the `blocking` feature is on.
//!
//! ## Layout
//!
//! - [`frame`]: where a frame ends ([`FrameCodec::check`]) and splitting it off a receive buffer
//!   ([`FrameCodec::decode`]), under a configurable size limit.
//! - [`command`]: the decoded [`Command`], and encoding a frame from a [`CommandHead`], any
//!   [`EncodeExt`] fields and a body, straight into a caller's buffer. Both header encodings
//!   (JSON and binary "ROCKETMQ") live here.
//! - [`ext`]: [`ExtFields`], the `extFields` string map kept as spans into the frame, and the
//!   [`ExtWriter`]/[`EncodeExt`] pair that writes typed headers without building a map.
//! - [`code`]: request, response and language codes, and the serialize type.
//! - [`header`]: a typed struct for every request and response header, borrowing from the frame.
//! - [`message`]: properties, sys flags, stored-message records, batch bodies, message ids, tags
//!   hash and body CRC.
//! - [`body`]: the JSON bodies (routes, cluster info, registration, heartbeats, ...).
//! - [`topic`]: the topic-name rule every component applies, and RocketMQ's reserved names.
//! - [`error`]: one error enum per layer.
//! - `blocking` (cargo feature `blocking`, off by default): a blocking request/response
//!   connection over a std `TcpStream`, for tests, tools and benchmarks; the only I/O here.
//!
//! ## Costs
//!
//! Decoding a frame copies nothing: the command's body and ext fields are slices of the receive
//! buffer, and typed headers borrow `&str`s from them. Encoding writes into one `BytesMut`; a
//! large body (a PULL response) can be left out and sent beside the header
//! ([`command::encode_frame_head`]).
//!
//! ## Example
//!
//! ```
//! use bytes::BytesMut;
//! use ringmq_protocol::{CommandHead, FrameCodec, RequestCode, SerializeType, encode_frame};
//! use ringmq_protocol::header::GetRouteInfoRequestHeader;
//!
//! let header = GetRouteInfoRequestHeader { topic: "TopicTest", accept_standard_json_only: None };
//! let mut wire = BytesMut::new();
//! let head = CommandHead::request(RequestCode::GetRouteinfoByTopic, 7, SerializeType::RocketMq);
//! encode_frame(&head, &header, &[], &mut wire);
//!
//! let command = FrameCodec::default().decode(&mut wire).unwrap().unwrap();
//! assert_eq!(command.request_code(), RequestCode::GetRouteinfoByTopic);
//! let decoded: GetRouteInfoRequestHeader<'_> = command.header().unwrap();
//! assert_eq!(decoded.topic, "TopicTest");
//! ```

#[cfg(feature = "blocking")]
pub mod blocking;
pub mod body;
pub mod code;
pub mod command;
pub mod error;
pub mod ext;
pub mod frame;
pub mod header;
mod layout;
pub mod message;
pub mod topic;

pub use code::{LanguageCode, RequestCode, ResponseCode, SerializeType};
pub use command::{Command, CommandHead, encode_frame, encode_frame_head};
pub use error::{
    BodyError, DecodeError, FieldError, FrameError, HeaderError, MessageIdError, RecordError,
};
pub use ext::{EncodeExt, ExtFields, ExtWriter};
pub use frame::{DEFAULT_MAX_FRAME_BYTES, FrameCodec, FrameLayout};
