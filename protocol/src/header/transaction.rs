//! Transaction headers (docs/protocol.md §3.9).

use super::ext_header;

/// `commitOrRollback` values: the transaction-type bits of the message sys flag.
pub mod transaction_state {
    /// Unknown: the broker takes no action.
    pub const UNKNOWN: i32 = 0;
    /// Commit the half message.
    pub const COMMIT: i32 = 0x8;
    /// Roll the half message back.
    pub const ROLLBACK: i32 = 0xC;
}

ext_header! {
    /// END_TRANSACTION (37) request, oneway in Java.
    pub struct EndTransactionRequestHeader<'a> {
        producer_group: &'a str = "producerGroup",
        /// Half-queue offset (the send response's `queueOffset`).
        tran_state_table_offset: i64 = "tranStateTableOffset",
        /// Half message physical offset, decoded from the send response's `msgId`.
        commit_log_offset: i64 = "commitLogOffset",
        /// One of [`transaction_state`].
        commit_or_rollback: i32 = "commitOrRollback",
        from_transaction_check: Option<bool> = "fromTransactionCheck",
        /// The client's UNIQ_KEY.
        msg_id: &'a str = "msgId",
        transaction_id: Option<&'a str> = "transactionId",
    }
}

ext_header! {
    /// CHECK_TRANSACTION_STATE (39), broker to producer, oneway; the body is the half message.
    pub struct CheckTransactionStateRequestHeader<'a> {
        tran_state_table_offset: i64 = "tranStateTableOffset",
        commit_log_offset: i64 = "commitLogOffset",
        msg_id: Option<&'a str> = "msgId",
        transaction_id: Option<&'a str> = "transactionId",
        offset_msg_id: Option<&'a str> = "offsetMsgId",
    }
}
