//! The connection layer: multiplexed remoting connections and the per-thread pool that owns
//! them. Everything here is `!Send` and runs on one compio runtime thread; the public handles of
//! the crate reach it through the client's I/O thread, and the benchmark tool uses it directly
//! on its own threads.

mod connection;
mod pool;

pub use connection::{
    Connection, ConnectionOptions, DEFAULT_MAX_FRAME_BYTES, InboundHandler, MAX_QUEUED_OUT_BYTES,
    expect_success, resolve,
};
pub use pool::{Backoff, ConnectionPool};
