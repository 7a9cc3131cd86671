//! A shard: one OS thread pinned to a core, with its own compio runtime, listeners, commit log,
//! consume queues, consumer offsets, parked pulls and connections (docs/architecture.md §3).
//!
//! Split in two so that the code a request runs depends on the shard's state, never on the
//! loop that drives it:
//! - [`context`]: [`context::ShardCtx`], the shard's state and its accessors. Handlers, the HA
//!   shard side and the connection loops take an `Rc<ShardCtx>`.
//! - [`run`]: the thread: runtime, store opening, the accept, timer and connection tasks, and
//!   the inbox dispatch that hands other shards' messages to the handlers.
//!
//! Everything here is `!Send`; other threads talk to a shard only through its inbox
//! (`crate::messages::ShardMessage`).

mod connection_io;
pub(crate) mod context;
pub(crate) mod run;
