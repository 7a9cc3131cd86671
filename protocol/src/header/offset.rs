//! Offset command headers (docs/protocol.md §3.6).

use super::ext_header;

ext_header! {
    /// QUERY_CONSUMER_OFFSET (14) request.
    pub struct QueryConsumerOffsetRequestHeader<'a> {
        consumer_group: &'a str = "consumerGroup",
        topic: &'a str = "topic",
        queue_id: i32 = "queueId",
        /// 5.x: answer 0 instead of QUERY_NOT_FOUND.
        set_zero_if_not_found: Option<bool> = "setZeroIfNotFound",
    }
}

ext_header! {
    /// UPDATE_CONSUMER_OFFSET (15) request (Java sends it oneway).
    pub struct UpdateConsumerOffsetRequestHeader<'a> {
        consumer_group: &'a str = "consumerGroup",
        topic: &'a str = "topic",
        queue_id: i32 = "queueId",
        /// The next offset to consume.
        commit_offset: i64 = "commitOffset",
        /// RingMQ's: commit only if this moves the group's offset forward. A slave hands the
        /// master offsets committed to it while the master was down this way, so a newer
        /// commit the master took meanwhile is never undone. Brokers that do not know the key
        /// ignore it.
        only_forward: Option<bool> = "onlyForward",
    }
}

ext_header! {
    /// GET_MAX_OFFSET (30), GET_MIN_OFFSET (31) and GET_EARLIEST_MSG_STORETIME (32) requests: a
    /// single queue.
    pub struct QueueRequestHeader<'a> {
        topic: &'a str = "topic",
        queue_id: i32 = "queueId",
    }
}

/// GET_MAX_OFFSET (30) request.
pub type GetMaxOffsetRequestHeader<'a> = QueueRequestHeader<'a>;
/// GET_MIN_OFFSET (31) request.
pub type GetMinOffsetRequestHeader<'a> = QueueRequestHeader<'a>;
/// GET_EARLIEST_MSG_STORETIME (32) request.
pub type GetEarliestMsgStoretimeRequestHeader<'a> = QueueRequestHeader<'a>;

ext_header! {
    /// The response of QUERY_CONSUMER_OFFSET, GET_MAX_OFFSET, GET_MIN_OFFSET and
    /// SEARCH_OFFSET_BY_TIMESTAMP: one offset.
    pub struct OffsetResponseHeader {
        offset: i64 = "offset",
    }
}

/// QUERY_CONSUMER_OFFSET response.
pub type QueryConsumerOffsetResponseHeader = OffsetResponseHeader;
/// GET_MAX_OFFSET response.
pub type GetMaxOffsetResponseHeader = OffsetResponseHeader;
/// GET_MIN_OFFSET response.
pub type GetMinOffsetResponseHeader = OffsetResponseHeader;
/// SEARCH_OFFSET_BY_TIMESTAMP response.
pub type SearchOffsetResponseHeader = OffsetResponseHeader;

ext_header! {
    /// SEARCH_OFFSET_BY_TIMESTAMP (29) request.
    pub struct SearchOffsetRequestHeader<'a> {
        topic: &'a str = "topic",
        queue_id: i32 = "queueId",
        timestamp_ms: i64 = "timestamp",
    }
}

ext_header! {
    /// GET_EARLIEST_MSG_STORETIME response.
    pub struct GetEarliestMsgStoretimeResponseHeader {
        timestamp_ms: i64 = "timestamp",
    }
}
