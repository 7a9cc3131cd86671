//! Topic administration and message lookup headers (docs/protocol.md §3.11).

use super::ext_header;

ext_header! {
    /// UPDATE_AND_CREATE_TOPIC (17) request.
    pub struct CreateTopicRequestHeader<'a> {
        topic: &'a str = "topic",
        default_topic: &'a str = "defaultTopic",
        read_queue_nums: i32 = "readQueueNums",
        write_queue_nums: i32 = "writeQueueNums",
        /// Permission bits (`crate::perm`).
        perm: i32 = "perm",
        /// `SINGLE_TAG` or `MULTI_TAG`.
        topic_filter_type: &'a str = "topicFilterType",
        topic_sys_flag: Option<i32> = "topicSysFlag",
        order: bool = "order",
    }
}

ext_header! {
    /// VIEW_MESSAGE_BY_ID (33) request.
    pub struct ViewMessageRequestHeader {
        /// Commit-log physical offset, decoded from the offset message id.
        offset: i64 = "offset",
    }
}

ext_header! {
    /// QUERY_MESSAGE (12) request: messages by key within a time range.
    pub struct QueryMessageRequestHeader<'a> {
        topic: &'a str = "topic",
        key: &'a str = "key",
        max_num: i32 = "maxNum",
        begin_timestamp_ms: i64 = "beginTimestamp",
        end_timestamp_ms: i64 = "endTimestamp",
        /// `true`: `key` is a UNIQ_KEY and `max_num` is replaced by the broker default.
        unique_key_query: Option<bool> = "_UNIQUE_KEY_QUERY",
    }
}

ext_header! {
    /// QUERY_MESSAGE response.
    pub struct QueryMessageResponseHeader {
        index_last_update_timestamp_ms: i64 = "indexLastUpdateTimestamp",
        index_last_update_phyoffset: i64 = "indexLastUpdatePhyoffset",
    }
}

ext_header! {
    /// DELETE_TOPIC_IN_BROKER (215) request.
    pub struct DeleteTopicRequestHeader<'a> {
        topic: &'a str = "topic",
    }
}
