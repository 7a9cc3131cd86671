//! # ringmq-client
//!
//! The Rust client library for RingMQ and any RocketMQ 4.x broker (docs/architecture.md §1).

pub mod admin;
pub mod config;
pub mod consumer;
pub mod error;
mod instance;
pub mod message;
mod notify;
pub mod producer;
pub mod remoting;
pub mod route;
mod rpc;

pub use config::ClientConfig;
pub use consumer::{
    ConsumeContext, ConsumeMode, ConsumeOutcome, PullConsumer, PullConsumerBuilder, PushConsumer,
    PushConsumerBuilder, StartPosition,
};
pub use error::{ClientError, Result};
pub use instance::{ClientInstance, Pending};
pub use message::{Message, MessageQueue, ReceivedMessage, SendResult, SendStatus};
pub use producer::{Producer, ProducerBuilder};
