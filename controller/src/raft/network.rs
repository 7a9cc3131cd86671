//! Raft RPCs between controllers, as remoting requests on the controllers' own port: a
//! RingMQ-private request code per RPC, the openraft request as the JSON body, and the whole
//! `Result` the peer's Raft returned as the JSON body of a SUCCESS answer.
//!
//! One connection per (this controller, peer) replication stream, kept between calls and
//! redialled after any error. Every call ends within openraft's deadline for it.

use std::time::Duration;

use openraft::{
    error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable},
    network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory},
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    },
};
use ringmq_protocol::{CommandHead, RequestCode, ResponseCode, SerializeType};
use serde::{Serialize, de::DeserializeOwned};
use tokio::net::TcpStream;

use super::{Node, NodeId, TypeConfig};
use crate::wire::FramedStream;

/// RingMQ-private request codes of the Raft RPCs (never sent to or by RocketMQ components).
pub const RAFT_APPEND_ENTRIES: i32 = 7101;
pub const RAFT_VOTE: i32 = 7102;
pub const RAFT_INSTALL_SNAPSHOT: i32 = 7103;

/// How long a stream waits before retrying an unreachable peer (openraft's default is 500 ms;
/// failover time depends on a restarted peer being found quickly).
const BACKOFF: Duration = Duration::from_millis(100);

/// Makes a [`PeerConnection`] per target; connections are dialled lazily.
#[derive(Debug, Clone, Default)]
pub struct Network;

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerConnection {
        PeerConnection {
            target,
            addr: node.addr.clone(),
            stream: None,
            opaque: 0,
        }
    }
}

/// Why a call failed before the peer's Raft answered.
enum Transport {
    /// Could not connect: the peer is down.
    Unreachable(std::io::Error),
    /// Connected, but the exchange failed or timed out.
    Network(std::io::Error),
}

impl Transport {
    fn into_rpc<E: std::error::Error>(self) -> RPCError<NodeId, Node, E> {
        match self {
            Self::Unreachable(err) => RPCError::Unreachable(Unreachable::new(&err)),
            Self::Network(err) => RPCError::Network(NetworkError::new(&err)),
        }
    }
}

/// The connection to one peer.
#[derive(Debug)]
pub struct PeerConnection {
    target: NodeId,
    addr: String,
    stream: Option<FramedStream>,
    opaque: i32,
}

impl PeerConnection {
    /// One request and its answer within `ttl`; the connection is dropped after any failure.
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        code: i32,
        request: &Req,
        ttl: Duration,
    ) -> Result<Resp, Transport> {
        let body = serde_json::to_vec(request).map_err(|err| Transport::Network(err.into()))?;
        let result = tokio::time::timeout(ttl, self.exchange(code, &body)).await;
        let answer = match result {
            Ok(Ok(answer)) => answer,
            Ok(Err(err)) => {
                self.stream = None;
                return Err(err);
            }
            Err(_) => {
                self.stream = None;
                return Err(Transport::Network(std::io::ErrorKind::TimedOut.into()));
            }
        };
        serde_json::from_slice(&answer).map_err(|err| Transport::Network(err.into()))
    }

    async fn exchange(&mut self, code: i32, body: &[u8]) -> Result<Vec<u8>, Transport> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.addr)
                .await
                .map_err(Transport::Unreachable)?;
            self.stream = Some(FramedStream::new(stream));
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(Transport::Network(std::io::ErrorKind::NotConnected.into()));
        };
        self.opaque = self.opaque.wrapping_add(1);
        let head = CommandHead::request(
            RequestCode::from_i32(code),
            self.opaque,
            SerializeType::Json,
        );
        stream
            .write(&head, &(), body)
            .await
            .map_err(Transport::Network)?;
        loop {
            let Some(answer) = stream.read().await.map_err(Transport::Network)? else {
                return Err(Transport::Network(std::io::ErrorKind::UnexpectedEof.into()));
            };
            if !answer.is_response() || answer.opaque != self.opaque {
                continue;
            }
            if answer.response_code() != ResponseCode::Success {
                return Err(Transport::Network(std::io::Error::other(format!(
                    "peer answered {}: {}",
                    answer.response_code(),
                    answer.remark.as_deref().unwrap_or("")
                ))));
            }
            return Ok(answer.body.to_vec());
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let answer: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> = self
            .call(RAFT_APPEND_ENTRIES, &rpc, option.hard_ttl())
            .await
            .map_err(Transport::into_rpc)?;
        answer.map_err(|err| RPCError::RemoteError(RemoteError::new(self.target, err)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let answer: Result<
            InstallSnapshotResponse<NodeId>,
            RaftError<NodeId, InstallSnapshotError>,
        > = self
            .call(RAFT_INSTALL_SNAPSHOT, &rpc, option.hard_ttl())
            .await
            .map_err(Transport::into_rpc)?;
        answer.map_err(|err| RPCError::RemoteError(RemoteError::new(self.target, err)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let answer: Result<VoteResponse<NodeId>, RaftError<NodeId>> = self
            .call(RAFT_VOTE, &rpc, option.hard_ttl())
            .await
            .map_err(Transport::into_rpc)?;
        answer.map_err(|err| RPCError::RemoteError(RemoteError::new(self.target, err)))
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(BACKOFF))
    }
}
