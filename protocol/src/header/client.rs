//! Client registration and retry headers (docs/protocol.md §3.7, §3.8).

use super::ext_header;

ext_header! {
    /// UNREGISTER_CLIENT (35) request.
    pub struct UnregisterClientRequestHeader<'a> {
        /// Note the capital `ID` on the wire.
        client_id: &'a str = "clientID",
        producer_group: Option<&'a str> = "producerGroup",
        consumer_group: Option<&'a str> = "consumerGroup",
    }
}

ext_header! {
    /// GET_CONSUMER_LIST_BY_GROUP (38) request.
    pub struct GetConsumerListByGroupRequestHeader<'a> {
        consumer_group: &'a str = "consumerGroup",
    }
}

ext_header! {
    /// NOTIFY_CONSUMER_IDS_CHANGED (40), broker to client, oneway.
    pub struct NotifyConsumerIdsChangedRequestHeader<'a> {
        consumer_group: &'a str = "consumerGroup",
    }
}

ext_header! {
    /// CONSUMER_SEND_MSG_BACK (36) request: a message the consumer failed to process.
    pub struct ConsumerSendMsgBackRequestHeader<'a> {
        /// Commit-log physical offset of the failed message.
        offset: i64 = "offset",
        group: &'a str = "group",
        /// 0 lets the broker choose (3 + reconsumeTimes); negative sends straight to the DLQ.
        delay_level: i32 = "delayLevel",
        origin_msg_id: Option<&'a str> = "originMsgId",
        origin_topic: Option<&'a str> = "originTopic",
        unit_mode: Option<bool> = "unitMode",
        max_reconsume_times: Option<i32> = "maxReconsumeTimes",
    }
}
