//! # ringmq-storage
//!
//! The broker's message store (DESIGN.md §4-§5). It will own:
//!
//! - the storage I/O seam (open, read_at, write_at, sync_data, allocate, truncate, remove) with an
//!   io_uring implementation through compio and an in-memory, fault-injecting twin for tests;
//! - the per-shard segmented, append-only commit log of RocketMQ stored-message records
//!   (`ringmq_protocol::message::record`), with group commit (batched fdatasync);
//! - consume queues (20-byte entries per topic/queue), checkpoint and crash recovery;
//! - retention by age and disk watermarks, and the topic-config / consumer-offset metadata files.
//!
//! Nothing is implemented yet: this crate is a placeholder so the workspace has its final shape.
//! The durability contract will be stated here once the store exists.
