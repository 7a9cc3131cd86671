//! REGISTER_BROKER bodies and topic configs (docs/protocol.md §4.4).

use std::collections::BTreeMap;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::BodyError;

/// Upper bound on a decompressed register body: bounds what a peer can make us inflate.
pub const MAX_DECOMPRESSED_REGISTER_BYTES: u64 = 64 * 1024 * 1024;

/// A version of a broker's topic table; the broker bumps it on every change and the NameServer
/// compares it for equality only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DataVersion {
    pub counter: i64,
    /// ms since the epoch.
    pub timestamp: i64,
}

impl DataVersion {
    /// The next version: counter + 1, stamped `now_ms`.
    #[must_use]
    pub const fn next(self, now_ms: i64) -> Self {
        Self {
            counter: self.counter + 1,
            timestamp: now_ms,
        }
    }
}

/// How a topic's tags are filtered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TopicFilterType {
    #[default]
    #[serde(rename = "SINGLE_TAG")]
    SingleTag,
    #[serde(rename = "MULTI_TAG")]
    MultiTag,
}

impl TopicFilterType {
    /// The wire name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::SingleTag => "SINGLE_TAG",
            Self::MultiTag => "MULTI_TAG",
        }
    }

    /// Parses the wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "SINGLE_TAG" => Some(Self::SingleTag),
            "MULTI_TAG" => Some(Self::MultiTag),
            _ => None,
        }
    }
}

/// A topic's configuration on one broker.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicConfig {
    pub order: bool,
    /// Permission bits (`perm`).
    pub perm: i32,
    pub read_queue_nums: i32,
    pub topic_filter_type: TopicFilterType,
    pub topic_name: String,
    pub topic_sys_flag: i32,
    pub write_queue_nums: i32,
}

/// A broker's whole topic table with its version (also the `topics.json` format).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicConfigSerializeWrapper {
    pub data_version: DataVersion,
    pub topic_config_table: BTreeMap<String, TopicConfig>,
}

/// The REGISTER_BROKER body for request versions ≥ 37.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RegisterBrokerBody {
    pub filter_server_list: Vec<String>,
    pub topic_config_serialize_wrapper: TopicConfigSerializeWrapper,
}

impl RegisterBrokerBody {
    /// Decodes a REGISTER_BROKER body as the NameServer must: compressed or JSON, and for requests
    /// older than version 37 a bare `TopicConfigSerializeWrapper`. An empty body is an empty
    /// registration (data version 0/0).
    pub fn decode_request(body: &[u8], compressed: bool, version: i32) -> Result<Self, BodyError> {
        if body.is_empty() {
            return Ok(Self::default());
        }
        if compressed {
            return Self::decode_compressed(body);
        }
        if version >= 37 {
            super::decode(body, "RegisterBrokerBody")
        } else {
            let wrapper = super::decode(body, "TopicConfigSerializeWrapper")?;
            Ok(Self {
                filter_server_list: Vec::new(),
                topic_config_serialize_wrapper: wrapper,
            })
        }
    }

    /// Encodes the compressed form: zlib over length-prefixed parts, topic configs as
    /// `name readQ writeQ perm filterType` text (which loses `topicSysFlag` and `order`).
    pub fn encode_compressed(&self) -> Vec<u8> {
        let mut raw = Vec::new();
        let put_part = |raw: &mut Vec<u8>, bytes: &[u8]| {
            raw.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
            raw.extend_from_slice(bytes);
        };
        let wrapper = &self.topic_config_serialize_wrapper;
        put_part(&mut raw, &super::to_vec(&wrapper.data_version));
        raw.extend_from_slice(&(wrapper.topic_config_table.len() as i32).to_be_bytes());
        for config in wrapper.topic_config_table.values() {
            let text = format!(
                "{} {} {} {} {}",
                config.topic_name,
                config.read_queue_nums,
                config.write_queue_nums,
                config.perm,
                config.topic_filter_type.name()
            );
            put_part(&mut raw, text.as_bytes());
        }
        put_part(&mut raw, &super::to_vec(&self.filter_server_list));
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        // Writing to a Vec cannot fail.
        if encoder.write_all(&raw).is_err() {
            unreachable!("zlib into memory failed");
        }
        encoder.finish().unwrap_or_default()
    }

    /// Decodes the compressed form, inflating at most [`MAX_DECOMPRESSED_REGISTER_BYTES`].
    pub fn decode_compressed(body: &[u8]) -> Result<Self, BodyError> {
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(body)
            .take(MAX_DECOMPRESSED_REGISTER_BYTES + 1)
            .read_to_end(&mut raw)
            .map_err(|io| BodyError::Compressed {
                reason: io.to_string(),
            })?;
        if raw.len() as u64 > MAX_DECOMPRESSED_REGISTER_BYTES {
            return Err(compressed_error("decompressed body exceeds the size limit"));
        }
        let mut rest = raw.as_slice();
        let data_version: DataVersion = super::decode(take_part(&mut rest)?, "DataVersion")?;
        let topic_count = take_i32(&mut rest)?;
        let mut topic_config_table = BTreeMap::new();
        for _ in 0..topic_count.max(0) {
            let text = std::str::from_utf8(take_part(&mut rest)?)
                .map_err(|_| compressed_error("topic config is not UTF-8"))?;
            let config = parse_compact_topic_config(text)
                .ok_or_else(|| compressed_error("malformed topic config text"))?;
            topic_config_table.insert(config.topic_name.clone(), config);
        }
        let filter_server_list = super::decode(take_part(&mut rest)?, "filterServerList")?;
        Ok(Self {
            filter_server_list,
            topic_config_serialize_wrapper: TopicConfigSerializeWrapper {
                data_version,
                topic_config_table,
            },
        })
    }
}

fn compressed_error(reason: &str) -> BodyError {
    BodyError::Compressed {
        reason: reason.to_owned(),
    }
}

fn take_i32(rest: &mut &[u8]) -> Result<i32, BodyError> {
    let (head, tail) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| compressed_error("truncated length"))?;
    *rest = tail;
    Ok(i32::from_be_bytes(*head))
}

fn take_part<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], BodyError> {
    let len = usize::try_from(take_i32(rest)?).map_err(|_| compressed_error("negative length"))?;
    let (head, tail) = rest
        .split_at_checked(len)
        .ok_or_else(|| compressed_error("truncated part"))?;
    *rest = tail;
    Ok(head)
}

/// Parses `name readQ writeQ perm filterType`.
fn parse_compact_topic_config(text: &str) -> Option<TopicConfig> {
    let mut parts = text.split(' ');
    let config = TopicConfig {
        topic_name: parts.next()?.to_owned(),
        read_queue_nums: parts.next()?.parse().ok()?,
        write_queue_nums: parts.next()?.parse().ok()?,
        perm: parts.next()?.parse().ok()?,
        topic_filter_type: TopicFilterType::from_name(parts.next()?)?,
        ..TopicConfig::default()
    };
    parts.next().is_none().then_some(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body;

    const EXAMPLE: &str = r#"{"filterServerList":[],
 "topicConfigSerializeWrapper":{
   "dataVersion":{"counter":3,"timestamp":1700000000000},
   "topicConfigTable":{
     "TopicTest":{"order":false,"perm":6,"readQueueNums":4,"topicFilterType":"SINGLE_TAG",
                  "topicName":"TopicTest","topicSysFlag":0,"writeQueueNums":4},
     "TBW102":{"order":false,"perm":7,"readQueueNums":8,"topicFilterType":"SINGLE_TAG",
               "topicName":"TBW102","topicSysFlag":0,"writeQueueNums":8}}}}"#;

    #[test]
    fn documented_example_decodes_and_re_encodes_canonically() {
        let body = RegisterBrokerBody::decode_request(EXAMPLE.as_bytes(), false, 409).unwrap();
        let wrapper = &body.topic_config_serialize_wrapper;
        assert_eq!(
            wrapper.data_version,
            DataVersion {
                counter: 3,
                timestamp: 1_700_000_000_000
            }
        );
        assert_eq!(wrapper.topic_config_table["TBW102"].perm, 7);
        let expected = concat!(
            r#"{"filterServerList":[],"topicConfigSerializeWrapper":{"dataVersion":{"counter":3,"timestamp":1700000000000},"#,
            r#""topicConfigTable":{"TBW102":{"order":false,"perm":7,"readQueueNums":8,"topicFilterType":"SINGLE_TAG","#,
            r#""topicName":"TBW102","topicSysFlag":0,"writeQueueNums":8},"TopicTest":{"order":false,"perm":6,"#,
            r#""readQueueNums":4,"topicFilterType":"SINGLE_TAG","topicName":"TopicTest","topicSysFlag":0,"writeQueueNums":4}}}}"#
        );
        assert_eq!(String::from_utf8(body::to_vec(&body)).unwrap(), expected);
    }

    #[test]
    fn old_versions_send_a_bare_wrapper_and_empty_bodies_are_empty() {
        let body = RegisterBrokerBody::decode_request(EXAMPLE.as_bytes(), false, 409).unwrap();
        let wrapper = body::to_vec(&body.topic_config_serialize_wrapper);
        let old = RegisterBrokerBody::decode_request(&wrapper, false, 36).unwrap();
        assert_eq!(old, body);
        assert_eq!(
            RegisterBrokerBody::decode_request(&[], false, 409).unwrap(),
            RegisterBrokerBody::default()
        );
    }

    #[test]
    fn compressed_form_round_trips_what_it_can_carry() {
        let body = RegisterBrokerBody::decode_request(EXAMPLE.as_bytes(), false, 409).unwrap();
        let compressed = body.encode_compressed();
        assert_eq!(&compressed[..1], &[0x78], "zlib stream header");
        assert_eq!(
            RegisterBrokerBody::decode_request(&compressed, true, 409).unwrap(),
            body
        );
        assert!(matches!(
            RegisterBrokerBody::decode_compressed(b"not zlib"),
            Err(BodyError::Compressed { .. })
        ));
    }
}
