//! PULL_MESSAGE headers and sys-flag bits (docs/protocol.md §3.5).

use super::ext_header;

/// PullSysFlag bits of the `sysFlag` pull request field.
pub mod pull_sys_flag {
    /// Store `commitOffset` as the group's offset (masters only).
    pub const COMMIT_OFFSET: i32 = 0x1;
    /// The broker may hold the request (long polling) while nothing is found.
    pub const SUSPEND: i32 = 0x2;
    /// Use the subscription carried by this request instead of the heartbeat one.
    pub const SUBSCRIPTION: i32 = 0x4;
    /// Legacy class filter (never set by the target clients).
    pub const CLASS_FILTER: i32 = 0x8;
    /// Set by the Java lite pull consumer; no effect on the broker.
    pub const LITE_PULL_MESSAGE: i32 = 0x10;

    /// Builds the flag from its parts.
    pub const fn build(commit_offset: bool, suspend: bool, subscription: bool) -> i32 {
        (if commit_offset { COMMIT_OFFSET } else { 0 })
            | (if suspend { SUSPEND } else { 0 })
            | (if subscription { SUBSCRIPTION } else { 0 })
    }
}

ext_header! {
    /// PULL_MESSAGE (11) request.
    pub struct PullMessageRequestHeader<'a> {
        consumer_group: &'a str = "consumerGroup",
        topic: &'a str = "topic",
        queue_id: i32 = "queueId",
        /// Logical offset to read from.
        queue_offset: i64 = "queueOffset",
        max_msg_nums: i32 = "maxMsgNums",
        /// [`pull_sys_flag`] bits.
        sys_flag: i32 = "sysFlag",
        /// Consumer progress to store when [`pull_sys_flag::COMMIT_OFFSET`] is set.
        commit_offset: i64 = "commitOffset",
        /// Long-poll hold time when [`pull_sys_flag::SUSPEND`] is set.
        suspend_timeout_ms: i64 = "suspendTimeoutMillis",
        /// Tag expression or SQL92 text, used with [`pull_sys_flag::SUBSCRIPTION`].
        subscription: Option<&'a str> = "subscription",
        sub_version: i64 = "subVersion",
        /// `TAG` (default) or `SQL92`.
        expression_type: Option<&'a str> = "expressionType",
        /// 5.x/Rust extra: byte limit of the batch.
        max_msg_bytes: Option<i32> = "maxMsgBytes",
    }
}

impl PullMessageRequestHeader<'_> {
    /// Whether the commit-offset bit is set.
    pub const fn has_commit_offset(&self) -> bool {
        self.sys_flag & pull_sys_flag::COMMIT_OFFSET != 0
    }

    /// Whether the broker may suspend the request (long polling).
    pub const fn is_suspend(&self) -> bool {
        self.sys_flag & pull_sys_flag::SUSPEND != 0
    }

    /// Whether the request carries its own subscription.
    pub const fn has_subscription(&self) -> bool {
        self.sys_flag & pull_sys_flag::SUBSCRIPTION != 0
    }
}

ext_header! {
    /// PULL_MESSAGE response header, sent with SUCCESS, PULL_NOT_FOUND, PULL_RETRY_IMMEDIATELY and
    /// PULL_OFFSET_MOVED. Every field is required by the Java and Rust clients.
    pub struct PullMessageResponseHeader {
        /// Broker id to pull from next (0 = master).
        suggest_which_broker_id: i64 = "suggestWhichBrokerId",
        next_begin_offset: i64 = "nextBeginOffset",
        min_offset: i64 = "minOffset",
        /// Exclusive: the next offset to be written.
        max_offset: i64 = "maxOffset",
    }
}
