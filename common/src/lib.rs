//! # ringmq-common
//!
//! Rules with no protocol meaning that more than one crate needs, each written once:
//!
//! - [`clock`]: wall-clock milliseconds, behind a [`Clock`] that tests can set and advance.
//! - [`hash`]: 64-bit FNV-1a, the stable hash that places queues on shards and keys the store's
//!   topic maps.
//! - [`fs`]: replacing a small file atomically and durably with blocking `std::fs` calls (the
//!   store's metadata files do the same through its own I/O seam, so faults can be injected).
//!
//! It depends on nothing, so every crate of the workspace can use it.

pub mod clock;
pub mod fs;
pub mod hash;

pub use clock::{Clock, now_ms};
pub use hash::{Fnv1a, FnvBuildHasher, fnv1a_64};
