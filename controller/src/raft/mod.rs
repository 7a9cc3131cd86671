//! The controller's consensus: openraft over the controller's own remoting port.
//!
//! Each log entry is one [`Command`]; applying it yields a [`Reply`]. Only the leader proposes;
//! followers replicate. Storage is [`store`], the transport between controllers [`network`].

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::state::{Command, Outcome};

pub mod network;
pub mod store;

/// A controller's id in the Raft group (1, 2, 3, ...).
pub type NodeId = u64;
/// Where a controller listens (`host:port`), as its peers dial it.
pub type Node = openraft::BasicNode;

/// What applying one log entry gave: an outcome for a command, nothing for Raft's own entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply(pub Option<Outcome>);

openraft::declare_raft_types!(
    /// The controller's Raft types.
    pub TypeConfig:
        D = Command,
        R = Reply,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A controller's Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;
