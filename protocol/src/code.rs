//! Numeric codes of the remoting protocol: request codes, response codes, language codes and the
//! header serialize type (docs/protocol.md §1.2, §2.5, §3.1, §3.2).
//!
//! Codes are enums rather than bare integers so a handler `match` is checked for typos, but every
//! enum keeps an `Unknown` variant: a server must be able to answer a code it has never heard of
//! (REQUEST_CODE_NOT_SUPPORTED echoes the number back), and a client must survive a future broker.

use std::fmt;

/// Defines a code enum with a catch-all `Unknown(i32)` variant, `from_i32`/`as_i32`, and `name`
/// returning the Java constant name (used in logs and remarks).
macro_rules! code_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $java:literal, )* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A code this implementation does not know; the number is preserved.
            Unknown(i32),
        }

        impl $name {
            /// Maps a wire number to its variant; unknown numbers are preserved in `Unknown`.
            pub const fn from_i32(value: i32) -> Self {
                match value {
                    $( $value => Self::$variant, )*
                    other => Self::Unknown(other),
                }
            }

            /// The wire number of this code.
            pub const fn as_i32(self) -> i32 {
                match self {
                    $( Self::$variant => $value, )*
                    Self::Unknown(other) => other,
                }
            }

            /// The Java constant name, or `UNKNOWN` for an unknown code.
            pub const fn name(self) -> &'static str {
                match self {
                    $( Self::$variant => $java, )*
                    Self::Unknown(_) => "UNKNOWN",
                }
            }
        }

        impl From<i32> for $name {
            fn from(value: i32) -> Self {
                Self::from_i32(value)
            }
        }

        impl From<$name> for i32 {
            fn from(code: $name) -> i32 {
                code.as_i32()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", self.name(), self.as_i32())
            }
        }
    };
}

code_enum! {
    /// Request codes of docs/protocol.md §3.2.
    pub enum RequestCode {
        SendMessage = 10 => "SEND_MESSAGE",
        PullMessage = 11 => "PULL_MESSAGE",
        QueryMessage = 12 => "QUERY_MESSAGE",
        QueryBrokerOffset = 13 => "QUERY_BROKER_OFFSET",
        QueryConsumerOffset = 14 => "QUERY_CONSUMER_OFFSET",
        UpdateConsumerOffset = 15 => "UPDATE_CONSUMER_OFFSET",
        UpdateAndCreateTopic = 17 => "UPDATE_AND_CREATE_TOPIC",
        GetAllTopicConfig = 21 => "GET_ALL_TOPIC_CONFIG",
        GetTopicConfigList = 22 => "GET_TOPIC_CONFIG_LIST",
        GetTopicNameList = 23 => "GET_TOPIC_NAME_LIST",
        UpdateBrokerConfig = 25 => "UPDATE_BROKER_CONFIG",
        GetBrokerConfig = 26 => "GET_BROKER_CONFIG",
        TriggerDeleteFiles = 27 => "TRIGGER_DELETE_FILES",
        GetBrokerRuntimeInfo = 28 => "GET_BROKER_RUNTIME_INFO",
        SearchOffsetByTimestamp = 29 => "SEARCH_OFFSET_BY_TIMESTAMP",
        GetMaxOffset = 30 => "GET_MAX_OFFSET",
        GetMinOffset = 31 => "GET_MIN_OFFSET",
        GetEarliestMsgStoretime = 32 => "GET_EARLIEST_MSG_STORETIME",
        ViewMessageById = 33 => "VIEW_MESSAGE_BY_ID",
        HeartBeat = 34 => "HEART_BEAT",
        UnregisterClient = 35 => "UNREGISTER_CLIENT",
        ConsumerSendMsgBack = 36 => "CONSUMER_SEND_MSG_BACK",
        EndTransaction = 37 => "END_TRANSACTION",
        GetConsumerListByGroup = 38 => "GET_CONSUMER_LIST_BY_GROUP",
        CheckTransactionState = 39 => "CHECK_TRANSACTION_STATE",
        NotifyConsumerIdsChanged = 40 => "NOTIFY_CONSUMER_IDS_CHANGED",
        LockBatchMq = 41 => "LOCK_BATCH_MQ",
        UnlockBatchMq = 42 => "UNLOCK_BATCH_MQ",
        GetAllConsumerOffset = 43 => "GET_ALL_CONSUMER_OFFSET",
        GetAllDelayOffset = 45 => "GET_ALL_DELAY_OFFSET",
        CheckClientConfig = 46 => "CHECK_CLIENT_CONFIG",
        PutKvConfig = 100 => "PUT_KV_CONFIG",
        GetKvConfig = 101 => "GET_KV_CONFIG",
        DeleteKvConfig = 102 => "DELETE_KV_CONFIG",
        RegisterBroker = 103 => "REGISTER_BROKER",
        UnregisterBroker = 104 => "UNREGISTER_BROKER",
        GetRouteinfoByTopic = 105 => "GET_ROUTEINFO_BY_TOPIC",
        GetBrokerClusterInfo = 106 => "GET_BROKER_CLUSTER_INFO",
        UpdateAndCreateSubscriptionGroup = 200 => "UPDATE_AND_CREATE_SUBSCRIPTIONGROUP",
        GetAllSubscriptionGroupConfig = 201 => "GET_ALL_SUBSCRIPTIONGROUP_CONFIG",
        GetTopicStatsInfo = 202 => "GET_TOPIC_STATS_INFO",
        GetConsumerConnectionList = 203 => "GET_CONSUMER_CONNECTION_LIST",
        GetProducerConnectionList = 204 => "GET_PRODUCER_CONNECTION_LIST",
        WipeWritePermOfBroker = 205 => "WIPE_WRITE_PERM_OF_BROKER",
        GetAllTopicListFromNameserver = 206 => "GET_ALL_TOPIC_LIST_FROM_NAMESERVER",
        DeleteSubscriptionGroup = 207 => "DELETE_SUBSCRIPTIONGROUP",
        GetConsumeStats = 208 => "GET_CONSUME_STATS",
        DeleteTopicInBroker = 215 => "DELETE_TOPIC_IN_BROKER",
        DeleteTopicInNamesrv = 216 => "DELETE_TOPIC_IN_NAMESRV",
        GetKvlistByNamespace = 219 => "GET_KVLIST_BY_NAMESPACE",
        ResetConsumerClientOffset = 220 => "RESET_CONSUMER_CLIENT_OFFSET",
        GetConsumerStatusFromClient = 221 => "GET_CONSUMER_STATUS_FROM_CLIENT",
        InvokeBrokerToResetOffset = 222 => "INVOKE_BROKER_TO_RESET_OFFSET",
        InvokeBrokerToGetConsumerStatus = 223 => "INVOKE_BROKER_TO_GET_CONSUMER_STATUS",
        GetTopicsByCluster = 224 => "GET_TOPICS_BY_CLUSTER",
        GetConsumerRunningInfo = 307 => "GET_CONSUMER_RUNNING_INFO",
        ConsumeMessageDirectly = 309 => "CONSUME_MESSAGE_DIRECTLY",
        SendMessageV2 = 310 => "SEND_MESSAGE_V2",
        UpdateNamesrvConfig = 318 => "UPDATE_NAMESRV_CONFIG",
        GetNamesrvConfig = 319 => "GET_NAMESRV_CONFIG",
        SendBatchMessage = 320 => "SEND_BATCH_MESSAGE",
        QueryConsumeQueue = 321 => "QUERY_CONSUME_QUEUE",
        QueryDataVersion = 322 => "QUERY_DATA_VERSION",
        AddWritePermOfBroker = 327 => "ADD_WRITE_PERM_OF_BROKER",
        BrokerHeartbeat = 904 => "BROKER_HEARTBEAT",
        ControllerAlterSyncStateSet = 1001 => "CONTROLLER_ALTER_SYNC_STATE_SET",
        ControllerElectMaster = 1002 => "CONTROLLER_ELECT_MASTER",
        ControllerRegisterBroker = 1003 => "CONTROLLER_REGISTER_BROKER",
        ControllerGetReplicaInfo = 1004 => "CONTROLLER_GET_REPLICA_INFO",
        ControllerGetMetadataInfo = 1005 => "CONTROLLER_GET_METADATA_INFO",
        ControllerGetSyncStateData = 1006 => "CONTROLLER_GET_SYNC_STATE_DATA",
        GetBrokerEpochCache = 1007 => "GET_BROKER_EPOCH_CACHE",
        NotifyBrokerRoleChanged = 1008 => "NOTIFY_BROKER_ROLE_CHANGED",
    }
}

code_enum! {
    /// Response codes of docs/protocol.md §3.1.
    pub enum ResponseCode {
        Success = 0 => "SUCCESS",
        SystemError = 1 => "SYSTEM_ERROR",
        SystemBusy = 2 => "SYSTEM_BUSY",
        RequestCodeNotSupported = 3 => "REQUEST_CODE_NOT_SUPPORTED",
        TransactionFailed = 4 => "TRANSACTION_FAILED",
        FlushDiskTimeout = 10 => "FLUSH_DISK_TIMEOUT",
        SlaveNotAvailable = 11 => "SLAVE_NOT_AVAILABLE",
        FlushSlaveTimeout = 12 => "FLUSH_SLAVE_TIMEOUT",
        MessageIllegal = 13 => "MESSAGE_ILLEGAL",
        ServiceNotAvailable = 14 => "SERVICE_NOT_AVAILABLE",
        VersionNotSupported = 15 => "VERSION_NOT_SUPPORTED",
        NoPermission = 16 => "NO_PERMISSION",
        TopicNotExist = 17 => "TOPIC_NOT_EXIST",
        TopicExistAlready = 18 => "TOPIC_EXIST_ALREADY",
        PullNotFound = 19 => "PULL_NOT_FOUND",
        PullRetryImmediately = 20 => "PULL_RETRY_IMMEDIATELY",
        PullOffsetMoved = 21 => "PULL_OFFSET_MOVED",
        QueryNotFound = 22 => "QUERY_NOT_FOUND",
        SubscriptionParseFailed = 23 => "SUBSCRIPTION_PARSE_FAILED",
        SubscriptionNotExist = 24 => "SUBSCRIPTION_NOT_EXIST",
        SubscriptionNotLatest = 25 => "SUBSCRIPTION_NOT_LATEST",
        SubscriptionGroupNotExist = 26 => "SUBSCRIPTION_GROUP_NOT_EXIST",
        FilterDataNotExist = 27 => "FILTER_DATA_NOT_EXIST",
        FilterDataNotLatest = 28 => "FILTER_DATA_NOT_LATEST",
        InvalidParameter = 29 => "INVALID_PARAMETER",
        TransactionShouldCommit = 200 => "TRANSACTION_SHOULD_COMMIT",
        TransactionShouldRollback = 201 => "TRANSACTION_SHOULD_ROLLBACK",
        TransactionStateUnknow = 202 => "TRANSACTION_STATE_UNKNOW",
        TransactionStateGroupWrong = 203 => "TRANSACTION_STATE_GROUP_WRONG",
        NoBuyerId = 204 => "NO_BUYER_ID",
        NotInCurrentUnit = 205 => "NOT_IN_CURRENT_UNIT",
        ConsumerNotOnline = 206 => "CONSUMER_NOT_ONLINE",
        ConsumeMsgTimeout = 207 => "CONSUME_MSG_TIMEOUT",
        NoMessage = 208 => "NO_MESSAGE",
        FlowControl = 215 => "FLOW_CONTROL",
        ControllerFencedMasterEpoch = 2000 => "CONTROLLER_FENCED_MASTER_EPOCH",
        ControllerFencedSyncStateSetEpoch = 2001 => "CONTROLLER_FENCED_SYNC_STATE_SET_EPOCH",
        ControllerInvalidMaster = 2002 => "CONTROLLER_INVALID_MASTER",
        ControllerInvalidReplicas = 2003 => "CONTROLLER_INVALID_REPLICAS",
        ControllerMasterNotAvailable = 2004 => "CONTROLLER_MASTER_NOT_AVAILABLE",
        ControllerInvalidRequest = 2005 => "CONTROLLER_INVALID_REQUEST",
        ControllerBrokerNotAlive = 2006 => "CONTROLLER_BROKER_NOT_ALIVE",
        ControllerNotLeader = 2007 => "CONTROLLER_NOT_LEADER",
        ControllerBrokerMetadataNotExist = 2008 => "CONTROLLER_BROKER_METADATA_NOT_EXIST",
        ControllerBrokerNeedToBeRegistered = 2010 => "CONTROLLER_BROKER_NEED_TO_BE_REGISTERED",
        ControllerMasterStillExist = 2011 => "CONTROLLER_MASTER_STILL_EXIST",
        ControllerElectMasterFailed = 2012 => "CONTROLLER_ELECT_MASTER_FAILED",
        ControllerAlterSyncStateSetFailed = 2013 => "CONTROLLER_ALTER_SYNC_STATE_SET_FAILED",
        ControllerBrokerIdInvalid = 2014 => "CONTROLLER_BROKER_ID_INVALID",
    }
}

impl ResponseCode {
    /// Whether a send answered with this code stored the message (docs/protocol.md §3.1: 0, 10, 11, 12).
    pub const fn is_stored(self) -> bool {
        matches!(
            self,
            Self::Success
                | Self::FlushDiskTimeout
                | Self::SlaveNotAvailable
                | Self::FlushSlaveTimeout
        )
    }

    /// Whether a producer should retry a failed send on another broker group (Java 4.9.8's set
    /// plus SYSTEM_BUSY, which rocketmq-client-rust also retries).
    pub const fn is_retryable_send_error(self) -> bool {
        matches!(
            self,
            Self::TopicNotExist
                | Self::ServiceNotAvailable
                | Self::SystemError
                | Self::SystemBusy
                | Self::NoPermission
                | Self::NoBuyerId
                | Self::NotInCurrentUnit
        )
    }
}

/// The sender's implementation language (docs/protocol.md §2.5). Informational only: no wire behaviour
/// depends on it, so an unknown value is preserved rather than rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LanguageCode {
    /// Java clients and servers, and ali-ons.
    #[default]
    Java,
    Cpp,
    Dotnet,
    Python,
    Delphi,
    Erlang,
    Ruby,
    Other,
    Http,
    Go,
    Php,
    Oms,
    /// rocketmq-client-rust (Java knows it from 4.9.4).
    Rust,
    /// 5.x only.
    NodeJs,
    /// A binary language byte outside the known table.
    Unknown(u8),
}

impl LanguageCode {
    const TABLE: [(Self, &'static str); 14] = [
        (Self::Java, "JAVA"),
        (Self::Cpp, "CPP"),
        (Self::Dotnet, "DOTNET"),
        (Self::Python, "PYTHON"),
        (Self::Delphi, "DELPHI"),
        (Self::Erlang, "ERLANG"),
        (Self::Ruby, "RUBY"),
        (Self::Other, "OTHER"),
        (Self::Http, "HTTP"),
        (Self::Go, "GO"),
        (Self::Php, "PHP"),
        (Self::Oms, "OMS"),
        (Self::Rust, "RUST"),
        (Self::NodeJs, "NODE_JS"),
    ];

    /// The byte of the binary (ROCKETMQ) header encoding.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Unknown(byte) => byte,
            known => Self::TABLE
                .iter()
                .position(|(code, _)| *code == known)
                .unwrap_or(7) as u8,
        }
    }

    /// Maps a binary language byte; bytes outside the table are preserved in `Unknown`.
    pub fn from_u8(byte: u8) -> Self {
        Self::TABLE
            .get(usize::from(byte))
            .map_or(Self::Unknown(byte), |(code, _)| *code)
    }

    /// The name used by the JSON header encoding. `Unknown` codes have no name and are written as
    /// `OTHER`, the closest value every client accepts.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unknown(_) => "OTHER",
            known => Self::TABLE
                .iter()
                .find(|(code, _)| *code == known)
                .map_or("OTHER", |(_, name)| name),
        }
    }

    /// Maps a JSON language name. Names outside the table become `Other`: the value is
    /// informational, and refusing a request over it would help nobody.
    pub fn from_name(name: &str) -> Self {
        Self::TABLE
            .iter()
            .find(|(_, known)| *known == name)
            .map_or(Self::Other, |(code, _)| *code)
    }
}

/// How a frame's header is encoded: the top byte of the header-length marker (docs/protocol.md §1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SerializeType {
    /// JSON header (type byte 0). The default, and the only type ali-ons can read.
    #[default]
    Json,
    /// Binary header (type byte 1), called ROCKETMQ by the Java code.
    RocketMq,
}

impl SerializeType {
    /// The type byte of the header-length marker.
    pub const fn as_u8(self) -> u8 {
        match self {
            Self::Json => 0,
            Self::RocketMq => 1,
        }
    }

    /// Maps a marker type byte; any value other than 0 and 1 is invalid.
    pub const fn from_u8(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(Self::Json),
            1 => Some(Self::RocketMq),
            _ => None,
        }
    }

    /// The value of the JSON header key `serializeTypeCurrentRPC`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Json => "JSON",
            Self::RocketMq => "ROCKETMQ",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_codes_keep_their_numbers_and_unknowns() {
        assert_eq!(RequestCode::from_i32(310), RequestCode::SendMessageV2);
        assert_eq!(RequestCode::SendBatchMessage.as_i32(), 320);
        assert_eq!(RequestCode::from_i32(9999), RequestCode::Unknown(9999));
        assert_eq!(RequestCode::Unknown(9999).as_i32(), 9999);
        assert_eq!(
            RequestCode::GetRouteinfoByTopic.to_string(),
            "GET_ROUTEINFO_BY_TOPIC(105)"
        );
    }

    #[test]
    fn response_codes_classify_send_outcomes() {
        assert!(ResponseCode::FlushSlaveTimeout.is_stored());
        assert!(!ResponseCode::TopicNotExist.is_stored());
        assert!(ResponseCode::TopicNotExist.is_retryable_send_error());
        assert!(!ResponseCode::MessageIllegal.is_retryable_send_error());
        assert_eq!(
            ResponseCode::from_i32(202).name(),
            "TRANSACTION_STATE_UNKNOW"
        );
    }

    #[test]
    fn language_codes_round_trip_both_encodings() {
        for byte in 0..=13u8 {
            let code = LanguageCode::from_u8(byte);
            assert_eq!(code.as_u8(), byte);
            assert_eq!(LanguageCode::from_name(code.name()), code);
        }
        assert_eq!(LanguageCode::from_u8(200), LanguageCode::Unknown(200));
        assert_eq!(LanguageCode::Unknown(200).as_u8(), 200);
        assert_eq!(LanguageCode::from_name("COBOL"), LanguageCode::Other);
        assert_eq!(LanguageCode::Rust.as_u8(), 12);
    }
}
