//! Bodies of the controller requests (docs/protocol.md §10).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A broker group's in-sync replicas (controller ids) and the epoch of that set: the body of
/// CONTROLLER_ALTER_SYNC_STATE_SET requests and answers and of the replica-info answers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SyncStateSet {
    pub sync_state_set: Vec<i64>,
    pub sync_state_set_epoch: i32,
}

/// One replica in a CONTROLLER_GET_SYNC_STATE_DATA answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReplicaIdentity {
    pub alive: bool,
    pub broker_address: String,
    pub broker_id: i64,
    pub broker_name: String,
}

/// One broker group in a CONTROLLER_GET_SYNC_STATE_DATA answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReplicasInfo {
    pub in_sync_replicas: Vec<ReplicaIdentity>,
    pub master_address: Option<String>,
    pub master_broker_id: Option<i64>,
    pub master_epoch: i32,
    pub not_in_sync_replicas: Vec<ReplicaIdentity>,
    pub sync_state_set_epoch: i32,
}

/// CONTROLLER_GET_SYNC_STATE_DATA answer (the request body is a JSON array of broker names).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BrokerReplicasInfo {
    pub replicas_info_table: BTreeMap<String, ReplicasInfo>,
}
