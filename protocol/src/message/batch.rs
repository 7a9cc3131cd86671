//! The SEND_BATCH_MESSAGE body (docs/protocol.md §3.4): per-message records concatenated, no count.
//!
//! ```text
//! TOTALSIZE i32 | MAGICCODE i32 (0) | BODYCRC i32 (0) | FLAG i32 | BODY len i32, bytes | PROPERTIES len i16, bytes
//! ```
//!
//! Clients write MAGICCODE and BODYCRC as 0 and the broker ignores them. The iterator borrows
//! body and properties from the request body, so a batch of N messages is decoded without
//! copying; the broker copies each body once, into the commit log.

use bytes::BufMut;

use super::properties::MAX_PROPERTIES_BYTES;
use crate::RecordError;

/// Bytes of one entry's fixed fields.
pub const BATCH_ENTRY_FIXED_BYTES: usize = 4 + 4 + 4 + 4 + 4 + 2;

/// One message of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMessage<'a> {
    /// User flag.
    pub flag: i32,
    /// Body.
    pub body: &'a [u8],
    /// This message's properties (its own UNIQ_KEY, TAGS, KEYS...).
    pub properties: &'a str,
}

impl BatchMessage<'_> {
    /// Bytes [`BatchMessage::encode`] writes.
    pub const fn encoded_len(&self) -> usize {
        BATCH_ENTRY_FIXED_BYTES + self.body.len() + self.properties.len()
    }

    /// Appends the entry to `out`; nothing is written if a limit is exceeded.
    pub fn encode<B: BufMut>(&self, out: &mut B) -> Result<(), RecordError> {
        if self.properties.len() > MAX_PROPERTIES_BYTES {
            return Err(RecordError::PropertiesTooLong {
                length: self.properties.len(),
            });
        }
        let total = i32::try_from(self.encoded_len()).map_err(|_| RecordError::BodyTooLong {
            length: self.body.len(),
        })?;
        out.put_i32(total);
        out.put_i32(0);
        out.put_i32(0);
        out.put_i32(self.flag);
        out.put_i32(self.body.len() as i32);
        out.put_slice(self.body);
        out.put_i16(self.properties.len() as i16);
        out.put_slice(self.properties.as_bytes());
        Ok(())
    }
}

/// Iterates over the messages of a batch body; stops after the first error.
#[derive(Debug, Clone)]
pub struct BatchIter<'a> {
    rest: &'a [u8],
}

impl<'a> BatchIter<'a> {
    /// Iterates over `body`.
    pub const fn new(body: &'a [u8]) -> Self {
        Self { rest: body }
    }

    fn decode_one(bytes: &'a [u8]) -> Result<(BatchMessage<'a>, usize), RecordError> {
        let read_i32 = |at: usize| -> Result<i32, RecordError> {
            let slice = bytes.get(at..at + 4).ok_or(RecordError::Truncated {
                need: at + 4,
                have: bytes.len(),
            })?;
            Ok(i32::from_be_bytes([slice[0], slice[1], slice[2], slice[3]]))
        };
        let total_raw = read_i32(0)?;
        let total = usize::try_from(total_raw)
            .ok()
            .filter(|total| *total >= BATCH_ENTRY_FIXED_BYTES)
            .ok_or(RecordError::BadLength {
                field: "batch total size",
                length: i64::from(total_raw),
            })?;
        let entry = bytes.get(..total).ok_or(RecordError::Truncated {
            need: total,
            have: bytes.len(),
        })?;
        let flag = read_i32(12)?;
        let body_raw = read_i32(16)?;
        let body_len = usize::try_from(body_raw)
            .ok()
            .filter(|len| BATCH_ENTRY_FIXED_BYTES + len <= total)
            .ok_or(RecordError::BadLength {
                field: "batch body length",
                length: i64::from(body_raw),
            })?;
        let body = &entry[20..20 + body_len];
        let at = 20 + body_len;
        let properties_raw = i16::from_be_bytes([entry[at], entry[at + 1]]);
        let properties_len = usize::try_from(properties_raw)
            .ok()
            .filter(|len| at + 2 + len == total)
            .ok_or(RecordError::SizeMismatch {
                declared: i64::from(total_raw),
                computed: (at + 2) as i64 + i64::from(properties_raw),
            })?;
        let properties =
            std::str::from_utf8(&entry[at + 2..at + 2 + properties_len]).map_err(|_| {
                RecordError::InvalidUtf8 {
                    field: "batch properties",
                }
            })?;
        Ok((
            BatchMessage {
                flag,
                body,
                properties,
            },
            total,
        ))
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<BatchMessage<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match Self::decode_one(self.rest) {
            Ok((message, len)) => {
                self.rest = &self.rest[len..];
                Some(Ok(message))
            }
            Err(error) => {
                self.rest = &[];
                Some(Err(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_lying_lengths() {
        let messages = [
            BatchMessage {
                flag: 1,
                body: b"first",
                properties: "UNIQ_KEY\u{1}A",
            },
            BatchMessage {
                flag: 0,
                body: b"",
                properties: "",
            },
        ];
        let mut body = Vec::new();
        for message in &messages {
            message.encode(&mut body).unwrap();
        }
        let decoded: Vec<_> = BatchIter::new(&body).collect::<Result<_, _>>().unwrap();
        assert_eq!(decoded, messages);

        let mut lying = body.clone();
        lying[16..20].copy_from_slice(&1000i32.to_be_bytes());
        assert!(matches!(
            BatchIter::new(&lying).next(),
            Some(Err(RecordError::BadLength { .. }))
        ));
        assert!(matches!(
            BatchIter::new(&body[..10]).next(),
            Some(Err(RecordError::Truncated { .. }))
        ));
        assert!(matches!(
            BatchIter::new(&[0, 0, 0, 5]).next(),
            Some(Err(RecordError::BadLength { .. }))
        ));
    }
}
