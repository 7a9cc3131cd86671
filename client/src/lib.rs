//! # ringmq-client
//!
//! The Rust client library users embed (DESIGN.md §1). It will own the multiplexed connection layer,
//! route fetching and caching, the producer (retries, latency fault avoidance), the pull and push
//! consumers (rebalance, long polling, offset commits) and admin operations.
//!
//! Nothing is implemented yet: this crate is a placeholder so the workspace has its final shape.
