//! JSON bodies (docs/protocol.md §4), as serde types.
//!
//! Output is what the strictest client needs: standard JSON with quoted map keys, object keys in
//! alphabetical order (fields are declared alphabetically, matching fastjson), and every key the
//! Rust client requires present. Input is what Java sends: missing keys take defaults, unknown
//! keys are ignored, and fastjson's unquoted numeric map keys (`{0:"ip:port"}`) are accepted by
//! quoting them and parsing again ([`decode`]).

mod cluster;
mod controller;
mod heartbeat;
mod lenient;
mod misc;
mod register;
mod route;

pub use cluster::ClusterInfo;
pub use controller::{BrokerReplicasInfo, ReplicaIdentity, ReplicasInfo, SyncStateSet};
pub use heartbeat::{
    ConsumeFromWhere, ConsumeType, ConsumerData, HeartbeatData, MessageModel, ProducerData,
    SubscriptionData,
};
pub use lenient::quote_numeric_keys;
pub use misc::{
    CheckClientRequestBody, ConsumerListBody, ConsumerOffsetTable, KvTable, LockBatchRequestBody,
    LockBatchResponseBody, MessageQueue, SubscriptionGroupConfig, SubscriptionGroupWrapper,
    TopicList, UnlockBatchRequestBody,
};
pub use register::{
    DataVersion, RegisterBrokerBody, TopicConfig, TopicConfigSerializeWrapper, TopicFilterType,
};
pub use route::{BrokerData, QueueData, TopicRouteData, perm};

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::BodyError;

/// Decodes a JSON body, accepting fastjson's unquoted numeric map keys. `body` names the type in
/// the error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], body: &'static str) -> Result<T, BodyError> {
    match serde_json::from_slice(bytes) {
        Ok(value) => Ok(value),
        Err(first) => match quote_numeric_keys(bytes) {
            Some(quoted) => {
                serde_json::from_slice(&quoted).map_err(|source| BodyError::Json { body, source })
            }
            None => Err(BodyError::Json {
                body,
                source: first,
            }),
        },
    }
}

/// Appends `value` as standard JSON to `out`.
pub fn encode<T: Serialize>(value: &T, out: &mut BytesMut) {
    // Serializing these plain data types into memory cannot fail: every map key is a string or
    // an integer and no type has a fallible `Serialize`.
    if let Err(error) = serde_json::to_writer(out.writer(), value) {
        unreachable!("serializing a protocol body failed: {error}");
    }
}

/// `value` as standard JSON bytes.
pub fn to_vec<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(value, &mut out);
    out.to_vec()
}
