//! # ringmq-tools
//!
//! Command-line tools (docs/architecture.md §2): `ringmq-admin` (mqadmin-like cluster operations;
//! its library is [`admin`](mod@admin)) and `ringmq-bench` (produce/consume/end-to-end load
//! against any RocketMQ-protocol broker; its library is [`bench`](mod@bench)). An offline store
//! inspector is not built yet.

pub mod admin;
pub mod bench;
