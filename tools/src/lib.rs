//! # ringmq-tools
//!
//! Command-line tools (docs/architecture.md §2): `ringmq-admin` (mqadmin-like cluster operations),
//! `ringmq-bench` (produce/consume/end-to-end load against any RocketMQ-protocol broker) and
//! `ringmq-inspect` (offline store verification and dumps).
//!
//! Implemented so far: [`admin`](mod@admin), the library behind `ringmq-admin`, and
//! [`bench`](mod@bench), the library behind `ringmq-bench`.

pub mod admin;
pub mod bench;
