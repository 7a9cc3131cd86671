//! Helpers shared by the storage integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    time::Duration,
};

use ringmq_protocol::message::record::{MessageMagic, StoredRecord};
use ringmq_storage::{FlushMode, StoreConfig};

pub const BORN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000));
pub const STORE: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 10911));

/// A record to append; the store fills in offsets, timestamp and CRC.
pub fn record<'a>(
    topic: &'a str,
    queue_id: i32,
    body: &'a [u8],
    properties: &'a str,
) -> StoredRecord<'a> {
    StoredRecord {
        magic: MessageMagic::V1,
        body_crc: 0,
        queue_id,
        flag: 0,
        queue_offset: 0,
        physical_offset: 0,
        sys_flag: 0,
        born_timestamp_ms: 1_700_000_000_000,
        born_host: BORN,
        store_timestamp_ms: 0,
        store_host: STORE,
        reconsume_times: 0,
        prepared_transaction_offset: 0,
        body,
        topic,
        properties,
    }
}

/// A body that names its queue and sequence number, so a test can check it came back intact.
pub fn body_for(queue_id: i32, sequence: u64, len: usize) -> Vec<u8> {
    let mut body = format!("q{queue_id}-m{sequence}-").into_bytes();
    let mut x = sequence.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ queue_id as u64;
    while body.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        body.push(b'a' + (x % 26) as u8);
    }
    body.truncate(len.max(8));
    body
}

/// Small segments and fast timers so tests exercise rolls and checkpoints quickly.
pub fn small_config(dir: impl Into<std::path::PathBuf>, mode: FlushMode) -> StoreConfig {
    let mut config = StoreConfig::new(dir);
    config.segment_bytes = 64 << 10;
    config.cq_entries_per_file = 64;
    config.flush_mode = mode;
    config.flush_interval = Duration::from_millis(20);
    config.checkpoint_interval = Duration::from_secs(3600);
    config.max_chunk_bytes = 16 << 10;
    config.read_cache_bytes = 32 << 10;
    config.cq_cache_entries = 8;
    config.retention_check_interval = Duration::from_secs(3600);
    // These tests are not about disk usage: a shared disk that happens to be 85% full must not
    // make the store delete segments under them (tests of the watermarks set their own).
    config.high_watermark_percent = 100;
    config.hard_watermark_percent = 100;
    config
}

pub fn runtime() -> compio::runtime::Runtime {
    compio::runtime::Runtime::new().expect("compio runtime")
}

/// A runtime on compio's polling (epoll) driver, as where io_uring is unavailable.
pub fn poll_runtime() -> compio::runtime::Runtime {
    let mut proactor = compio::driver::ProactorBuilder::new();
    proactor.driver_type(compio::driver::DriverType::Poll);
    let runtime = compio::runtime::RuntimeBuilder::new()
        .with_proactor(proactor)
        .build()
        .expect("compio runtime on the polling driver");
    assert_eq!(runtime.driver_type(), compio::driver::DriverType::Poll);
    runtime
}
