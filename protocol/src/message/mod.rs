//! Message encoding (docs/protocol.md §5): properties, sys-flag bits, the stored-message record that is
//! both the commit-log entry and the PULL body unit, the SEND_BATCH_MESSAGE body, message ids, the
//! tags hash and the body CRC.

pub mod batch;
pub mod crc;
pub mod msgid;
pub mod properties;
pub mod record;
pub mod sys_flag;
pub mod tags;

pub use batch::{BatchIter, BatchMessage};
pub use crc::body_crc;
pub use msgid::OffsetMessageId;
pub use properties::{Properties, PropertiesWriter};
pub use record::{MessageMagic, RecordIter, RecordLayout, StoredRecord};
pub use tags::tags_hash;
