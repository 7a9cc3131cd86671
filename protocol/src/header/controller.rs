//! Headers between brokers, tools and the controller (RocketMQ 5's controller mode,
//! docs/protocol.md §10). Broker ids are the controller's (1, 2, ...), Java `Long`s on the wire.

use super::ext_header;

ext_header! {
    /// BROKER_HEARTBEAT (904) request: a broker's liveness and how far its log reaches.
    pub struct BrokerHeartbeatRequestHeader<'a> {
        cluster_name: &'a str = "clusterName",
        broker_addr: &'a str = "brokerAddr",
        broker_name: &'a str = "brokerName",
        broker_id: Option<i64> = "brokerId",
        /// The last epoch the broker's log holds.
        epoch: Option<i32> = "epoch",
        max_offset: Option<i64> = "maxOffset",
        confirm_offset: Option<i64> = "confirmOffset",
        /// How long the controller may go without a heartbeat before it counts the broker gone.
        heartbeat_timeout_millis: Option<i64> = "heartbeatTimeoutMills",
        /// Lower is preferred in elections.
        election_priority: Option<i32> = "electionPriority",
    }
}

ext_header! {
    /// CONTROLLER_REGISTER_BROKER (1003) request. RingMQ: without `brokerId` the controller
    /// assigns one (the same one again for an address it knows) and answers it.
    pub struct ControllerRegisterBrokerRequestHeader<'a> {
        cluster_name: &'a str = "clusterName",
        broker_name: &'a str = "brokerName",
        broker_address: &'a str = "brokerAddress",
        broker_id: Option<i64> = "brokerId",
    }
}

ext_header! {
    /// CONTROLLER_GET_REPLICA_INFO (1004) request.
    pub struct GetReplicaInfoRequestHeader<'a> {
        broker_name: &'a str = "brokerName",
    }
}

ext_header! {
    /// A broker group's master as the controller knows it: the answer of
    /// CONTROLLER_GET_REPLICA_INFO (1004), CONTROLLER_REGISTER_BROKER (1003, with the broker's
    /// `brokerId`), CONTROLLER_ELECT_MASTER (1002) and, RingMQ, BROKER_HEARTBEAT (904). No
    /// master: both master fields absent.
    pub struct ReplicaInfoResponseHeader<'a> {
        master_broker_id: Option<i64> = "masterBrokerId",
        master_address: Option<&'a str> = "masterAddress",
        master_epoch: i32 = "masterEpoch",
        sync_state_set_epoch: i32 = "syncStateSetEpoch",
        broker_id: Option<i64> = "brokerId",
    }
}

ext_header! {
    /// CONTROLLER_ALTER_SYNC_STATE_SET (1001) request; the body is the new set with the set
    /// epoch it replaces.
    pub struct AlterSyncStateSetRequestHeader<'a> {
        broker_name: &'a str = "brokerName",
        master_broker_id: i64 = "masterBrokerId",
        master_epoch: i32 = "masterEpoch",
    }
}

ext_header! {
    /// CONTROLLER_ALTER_SYNC_STATE_SET (1001) answer.
    pub struct AlterSyncStateSetResponseHeader {
        new_sync_state_set_epoch: i32 = "newSyncStateSetEpoch",
    }
}

ext_header! {
    /// CONTROLLER_ELECT_MASTER (1002) request: from a broker (its own id), or from an operator
    /// (`designateElect`: elect exactly this broker, if it is eligible).
    pub struct ElectMasterRequestHeader<'a> {
        cluster_name: Option<&'a str> = "clusterName",
        broker_name: &'a str = "brokerName",
        broker_id: Option<i64> = "brokerId",
        designate_elect: Option<bool> = "designateElect",
    }
}

ext_header! {
    /// CONTROLLER_GET_METADATA_INFO (1005) answer (any controller answers it), and the header
    /// of a CONTROLLER_NOT_LEADER answer, which names the leader when one is known.
    pub struct ControllerMetadataResponseHeader<'a> {
        group: Option<&'a str> = "group",
        controller_leader_id: Option<i64> = "controllerLeaderId",
        controller_leader_address: Option<&'a str> = "controllerLeaderAddress",
        is_leader: bool = "isLeader",
        /// `id:addr;id:addr;`
        peers: Option<&'a str> = "peers",
    }
}
