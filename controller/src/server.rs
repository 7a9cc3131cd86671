//! The controller's port: brokers, tools and the other controllers speak the remoting protocol
//! to it (docs/protocol.md §10).
//!
//! Any controller answers heartbeats (904, recording them and answering the group's master as
//! it has applied it) and metadata (1005); registration (1003), replica info (1004), sync state
//! set changes (1001), elections (1002) and sync state data (1006) are the leader's, and other
//! controllers answer CONTROLLER_NOT_LEADER naming the leader. A broker whose heartbeat
//! connection closes counts as gone at once. Heartbeats and metadata are answered in order on
//! the connection's task; every other request runs on its own task (it may wait seconds for a
//! quorum) and answers when done, matched by `opaque`.

use std::{
    collections::{BTreeSet, HashSet},
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use ringmq_protocol::{
    Command, CommandHead, EncodeExt, ExtFields, RequestCode, ResponseCode,
    body::{BrokerReplicasInfo, ReplicaIdentity, ReplicasInfo, SyncStateSet},
    header::{
        AlterSyncStateSetRequestHeader, AlterSyncStateSetResponseHeader,
        BrokerHeartbeatRequestHeader, ControllerMetadataResponseHeader,
        ControllerRegisterBrokerRequestHeader, ElectMasterRequestHeader,
        GetReplicaInfoRequestHeader, ReplicaInfoResponseHeader,
    },
};
use serde::{Serialize, de::DeserializeOwned};
use tokio::{
    net::{TcpListener, TcpStream, tcp::OwnedWriteHalf},
    sync::Mutex,
};

use crate::{
    election::Heartbeat,
    node::{Controller, ControllerError},
    raft::network::{RAFT_APPEND_ENTRIES, RAFT_INSTALL_SNAPSHOT, RAFT_VOTE},
    state::{BrokerId, Command as StateCommand, Group, Outcome, Refusal},
    wire::{self, FrameWriter},
};

/// An answer before it is framed.
struct Answer {
    code: ResponseCode,
    remark: Option<String>,
    ext: ExtFields,
    body: Vec<u8>,
}

impl Answer {
    fn ok(ext: &impl EncodeExt, body: Vec<u8>) -> Self {
        Self::with(ResponseCode::Success, ext, body)
    }

    fn with(code: ResponseCode, ext: &impl EncodeExt, body: Vec<u8>) -> Self {
        let mut fields = ExtFields::new();
        ext.encode_ext(&mut fields);
        Self {
            code,
            remark: None,
            ext: fields,
            body,
        }
    }

    fn error(code: ResponseCode, remark: impl Into<String>) -> Self {
        Self {
            code,
            remark: Some(remark.into()),
            ext: ExtFields::new(),
            body: Vec::new(),
        }
    }

    fn remark(mut self, remark: impl Into<String>) -> Self {
        self.remark = Some(remark.into());
        self
    }
}

/// Serves `listener` until the process ends.
pub async fn serve(controller: Arc<Controller>, listener: TcpListener) {
    // Connection ids, so a heartbeat record knows which connection's close ends it.
    static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                let id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(connection(Arc::clone(&controller), stream, id));
            }
            Err(err) => {
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn connection(controller: Arc<Controller>, stream: TcpStream, id: u64) {
    let peer = stream.peer_addr().ok();
    let (mut reader, writer) = wire::split(stream);
    let writer = Arc::new(Mutex::new(writer));
    // The brokers that heartbeat over this connection: gone when it closes.
    let mut heartbeating: HashSet<(String, BrokerId)> = HashSet::new();
    loop {
        let command = match reader.read().await {
            Ok(Some(command)) => command,
            Ok(None) => break,
            Err(err) => {
                tracing::debug!(?peer, %err, "connection dropped");
                break;
            }
        };
        if command.is_response() {
            continue;
        }
        // Heartbeats and metadata are answered in order, at once; anything that may wait for
        // a quorum runs on its own task, so it never delays the heartbeats behind it.
        if matches!(
            command.request_code(),
            RequestCode::BrokerHeartbeat | RequestCode::ControllerGetMetadataInfo
        ) {
            let answer = handle(&controller, &command, id, &mut heartbeating).await;
            if !respond(&writer, &command, &answer).await {
                break;
            }
            continue;
        }
        let controller = Arc::clone(&controller);
        let writer = Arc::clone(&writer);
        tokio::spawn(async move {
            let answer = handle(&controller, &command, id, &mut HashSet::new()).await;
            respond(&writer, &command, &answer).await;
        });
    }
    for (broker_name, broker_id) in heartbeating {
        controller.connection_lost(&broker_name, broker_id, id);
    }
}

/// Writes `answer` to `command` unless it was oneway; false when the connection failed.
async fn respond(
    writer: &Mutex<FrameWriter<OwnedWriteHalf>>,
    command: &Command,
    answer: &Answer,
) -> bool {
    if command.is_oneway() {
        return true;
    }
    let head = CommandHead {
        remark: answer.remark.as_deref(),
        ..CommandHead::response_to(command, answer.code)
    };
    match writer
        .lock()
        .await
        .write(&head, &answer.ext, &answer.body)
        .await
    {
        Ok(()) => true,
        Err(err) => {
            tracing::debug!(%err, "answer not written");
            false
        }
    }
}

async fn handle(
    controller: &Controller,
    command: &Command,
    connection: u64,
    heartbeating: &mut HashSet<(String, BrokerId)>,
) -> Answer {
    let code = command.request_code();
    let result = match code {
        RequestCode::BrokerHeartbeat => {
            heartbeat(controller, command, connection, heartbeating).await
        }
        RequestCode::ControllerGetMetadataInfo => Ok(metadata(controller)),
        RequestCode::ControllerRegisterBroker => register(controller, command).await,
        RequestCode::ControllerGetReplicaInfo => get_replica_info(controller, command).await,
        RequestCode::ControllerAlterSyncStateSet => alter(controller, command).await,
        RequestCode::ControllerElectMaster => elect(controller, command).await,
        RequestCode::ControllerGetSyncStateData => sync_state_data(controller, command).await,
        RequestCode::Unknown(RAFT_APPEND_ENTRIES) => {
            raft_rpc(command, |rpc: AppendEntriesRequest<_>| {
                controller.raft().append_entries(rpc)
            })
            .await
        }
        RequestCode::Unknown(RAFT_VOTE) => {
            raft_rpc(command, |rpc: VoteRequest<_>| controller.raft().vote(rpc)).await
        }
        RequestCode::Unknown(RAFT_INSTALL_SNAPSHOT) => {
            raft_rpc(command, |rpc: InstallSnapshotRequest<_>| {
                controller.raft().install_snapshot(rpc)
            })
            .await
        }
        other => Ok(Answer::error(
            ResponseCode::RequestCodeNotSupported,
            format!("the controller does not serve {other}"),
        )),
    };
    result.unwrap_or_else(|err| not_served(controller, &err))
}

/// The answer to a request this controller cannot serve.
fn not_served(controller: &Controller, err: &ControllerError) -> Answer {
    match err {
        ControllerError::NotLeader { leader } => {
            let (leader_id, _, _) = controller.leader();
            let header = ControllerMetadataResponseHeader {
                group: None,
                controller_leader_id: leader_id.map(|id| id as i64),
                controller_leader_address: leader.as_deref(),
                is_leader: false,
                peers: None,
            };
            Answer::with(ResponseCode::ControllerNotLeader, &header, Vec::new())
                .remark(err.to_string())
        }
        ControllerError::Unavailable(_) => {
            Answer::error(ResponseCode::SystemError, err.to_string())
        }
    }
}

fn bad_request(err: impl std::fmt::Display) -> Answer {
    Answer::error(ResponseCode::ControllerInvalidRequest, err.to_string())
}

/// A controller id from the wire (Java `Long`): positive.
fn broker_id(raw: i64) -> Option<BrokerId> {
    u64::try_from(raw).ok().filter(|&id| id > 0)
}

/// The code a refused command answers.
fn refusal_code(refusal: &Refusal) -> ResponseCode {
    match refusal {
        Refusal::OtherCluster { .. } => ResponseCode::ControllerInvalidRequest,
        Refusal::NoSuchGroup(_) => ResponseCode::ControllerBrokerNeedToBeRegistered,
        Refusal::NoSuchReplica { .. } => ResponseCode::ControllerInvalidReplicas,
        Refusal::FencedMasterEpoch { .. } => ResponseCode::ControllerFencedMasterEpoch,
        Refusal::FencedSyncStateSetEpoch { .. } => ResponseCode::ControllerFencedSyncStateSetEpoch,
        Refusal::NotMaster(_) => ResponseCode::ControllerInvalidMaster,
        Refusal::MasterNotInSet => ResponseCode::ControllerAlterSyncStateSetFailed,
        Refusal::NotInSync(_) => ResponseCode::ControllerElectMasterFailed,
    }
}

fn sync_state_body(group: &Group) -> Vec<u8> {
    let body = SyncStateSet {
        sync_state_set: group.sync_state_set.iter().map(|&id| id as i64).collect(),
        sync_state_set_epoch: group.sync_state_set_epoch as i32,
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The group's master, epochs and sync state set (and, for a registration, the broker's id).
fn replica_info(group: &Group, broker_id: Option<BrokerId>) -> Answer {
    let header = ReplicaInfoResponseHeader {
        master_broker_id: group.master.map(|id| id as i64),
        master_address: group.master_addr(),
        master_epoch: group.master_epoch as i32,
        sync_state_set_epoch: group.sync_state_set_epoch as i32,
        broker_id: broker_id.map(|id| id as i64),
    };
    Answer::ok(&header, sync_state_body(group))
}

async fn heartbeat(
    controller: &Controller,
    command: &Command,
    connection: u64,
    heartbeating: &mut HashSet<(String, BrokerId)>,
) -> Result<Answer, ControllerError> {
    let header: BrokerHeartbeatRequestHeader<'_> = match command.header() {
        Ok(header) => header,
        Err(err) => return Ok(bad_request(err)),
    };
    let Some(id) = header.broker_id.and_then(broker_id) else {
        return Ok(bad_request(
            "a heartbeat needs the broker's controller id (brokerId)",
        ));
    };
    let timeout = header
        .heartbeat_timeout_millis
        .and_then(|ms| u64::try_from(ms).ok())
        .filter(|&ms| ms > 0)
        .map_or(
            controller.default_heartbeat_timeout(),
            Duration::from_millis,
        );
    controller.heartbeat(
        header.broker_name,
        id,
        Heartbeat {
            at: Instant::now(),
            timeout,
            epoch: header
                .epoch
                .and_then(|e| u32::try_from(e).ok())
                .unwrap_or(0),
            max_offset: header
                .max_offset
                .and_then(|o| u64::try_from(o).ok())
                .unwrap_or(0),
            election_priority: header.election_priority.unwrap_or(i32::MAX),
            connection,
        },
    );
    heartbeating.insert((header.broker_name.to_owned(), id));
    // RingMQ: the answer says who the master is, as this controller has applied it, so brokers
    // learn of an election within one heartbeat.
    Ok(match controller.local_group(header.broker_name).await {
        Some(group) => replica_info(&group, None),
        None => Answer::error(
            ResponseCode::ControllerBrokerNeedToBeRegistered,
            format!("broker group {} is not registered", header.broker_name),
        ),
    })
}

fn metadata(controller: &Controller) -> Answer {
    let (leader_id, leader_addr, is_leader) = controller.leader();
    let mut peers = String::new();
    for (id, addr) in &controller.config.peers {
        let _ = write!(peers, "{id}:{addr};");
    }
    let header = ControllerMetadataResponseHeader {
        group: Some("ringmq-controller"),
        controller_leader_id: leader_id.map(|id| id as i64),
        controller_leader_address: leader_addr.as_deref(),
        is_leader,
        peers: Some(&peers),
    };
    Answer::ok(&header, Vec::new())
}

async fn register(controller: &Controller, command: &Command) -> Result<Answer, ControllerError> {
    let header: ControllerRegisterBrokerRequestHeader<'_> = match command.header() {
        Ok(header) => header,
        Err(err) => return Ok(bad_request(err)),
    };
    let claimed = match header.broker_id {
        None => None,
        Some(raw) => match broker_id(raw) {
            Some(id) => Some(id),
            None => {
                return Ok(Answer::error(
                    ResponseCode::ControllerBrokerIdInvalid,
                    format!("broker id {raw} is not a controller id"),
                ));
            }
        },
    };
    if header.broker_name.is_empty()
        || header.cluster_name.is_empty()
        || header.broker_address.is_empty()
    {
        return Ok(bad_request(
            "clusterName, brokerName and brokerAddress are required",
        ));
    }
    let outcome = controller
        .propose(StateCommand::Register {
            cluster_name: header.cluster_name.to_owned(),
            broker_name: header.broker_name.to_owned(),
            addr: header.broker_address.to_owned(),
            broker_id: claimed,
        })
        .await?;
    let id = match outcome {
        Outcome::Registered { broker_id } => broker_id,
        Outcome::Refused(Refusal::NoSuchReplica { broker_id, .. }) => {
            return Ok(Answer::error(
                ResponseCode::ControllerBrokerIdInvalid,
                format!(
                    "broker id {broker_id} was never given in {}",
                    header.broker_name
                ),
            ));
        }
        Outcome::Refused(refusal) => {
            return Ok(Answer::error(refusal_code(&refusal), refusal.to_string()));
        }
        other => {
            return Err(ControllerError::Unavailable(format!(
                "unexpected {other:?}"
            )));
        }
    };
    tracing::info!(
        broker_name = header.broker_name,
        broker_id = id,
        addr = header.broker_address,
        "broker registered"
    );
    // A group without a master may elect one now.
    controller.rescan();
    let group = controller
        .read(|state| state.group(header.broker_name).cloned())
        .await?;
    Ok(group.map_or_else(
        || Answer::error(ResponseCode::SystemError, "the registered group vanished"),
        |group| replica_info(&group, Some(id)),
    ))
}

async fn replica_info_request(
    controller: &Controller,
    broker_name: &str,
) -> Result<Answer, ControllerError> {
    let group = controller
        .read(|state| state.group(broker_name).cloned())
        .await?;
    Ok(group.map_or_else(
        || {
            Answer::error(
                ResponseCode::ControllerBrokerMetadataNotExist,
                format!("broker group {broker_name} is not registered"),
            )
        },
        |group| replica_info(&group, None),
    ))
}

async fn get_replica_info(
    controller: &Controller,
    command: &Command,
) -> Result<Answer, ControllerError> {
    match command.header::<GetReplicaInfoRequestHeader<'_>>() {
        Ok(header) => replica_info_request(controller, header.broker_name).await,
        Err(err) => Ok(bad_request(err)),
    }
}

async fn alter(controller: &Controller, command: &Command) -> Result<Answer, ControllerError> {
    let header: AlterSyncStateSetRequestHeader<'_> = match command.header() {
        Ok(header) => header,
        Err(err) => return Ok(bad_request(err)),
    };
    let body: SyncStateSet = match serde_json::from_slice(&command.body) {
        Ok(body) => body,
        Err(err) => return Ok(bad_request(format!("sync state set body: {err}"))),
    };
    let (Some(master), Ok(master_epoch), Ok(set_epoch)) = (
        broker_id(header.master_broker_id),
        u32::try_from(header.master_epoch),
        u32::try_from(body.sync_state_set_epoch),
    ) else {
        return Ok(bad_request("ids and epochs must not be negative"));
    };
    let mut members = BTreeSet::new();
    for &raw in &body.sync_state_set {
        let Some(id) = broker_id(raw) else {
            return Ok(Answer::error(
                ResponseCode::ControllerInvalidReplicas,
                format!("{raw} is not a controller id"),
            ));
        };
        // A member must be alive: a set naming a dead replica could elect it.
        if id != master && !controller.is_alive(header.broker_name, id) {
            return Ok(Answer::error(
                ResponseCode::ControllerBrokerNotAlive,
                format!("broker {id} of {} is not alive", header.broker_name),
            ));
        }
        members.insert(id);
    }
    let outcome = controller
        .propose(StateCommand::AlterSyncStateSet {
            broker_name: header.broker_name.to_owned(),
            master,
            master_epoch,
            sync_state_set_epoch: set_epoch,
            sync_state_set: members.clone(),
        })
        .await?;
    Ok(match outcome {
        Outcome::Altered {
            sync_state_set_epoch,
        } => {
            let header = AlterSyncStateSetResponseHeader {
                new_sync_state_set_epoch: sync_state_set_epoch as i32,
            };
            let body = SyncStateSet {
                sync_state_set: members.iter().map(|&id| id as i64).collect(),
                sync_state_set_epoch: sync_state_set_epoch as i32,
            };
            Answer::ok(&header, serde_json::to_vec(&body).unwrap_or_default())
        }
        Outcome::Refused(refusal) => Answer::error(refusal_code(&refusal), refusal.to_string()),
        other => {
            return Err(ControllerError::Unavailable(format!(
                "unexpected {other:?}"
            )));
        }
    })
}

/// CONTROLLER_ELECT_MASTER from a broker or an operator. A live master stays
/// (CONTROLLER_MASTER_STILL_EXIST, with who it is) unless a designated one is asked for.
async fn elect(controller: &Controller, command: &Command) -> Result<Answer, ControllerError> {
    let header: ElectMasterRequestHeader<'_> = match command.header() {
        Ok(header) => header,
        Err(err) => return Ok(bad_request(err)),
    };
    let Some(group) = controller
        .read(|state| state.group(header.broker_name).cloned())
        .await?
    else {
        return Ok(Answer::error(
            ResponseCode::ControllerBrokerNeedToBeRegistered,
            format!("broker group {} is not registered", header.broker_name),
        ));
    };
    let designated = if header.designate_elect == Some(true) {
        match header.broker_id.and_then(broker_id) {
            Some(id) => Some(id),
            None => return Ok(bad_request("designateElect needs the broker's id")),
        }
    } else {
        None
    };
    let master_alive = controller.master_alive(&group);
    let choice = match designated {
        Some(id) if group.master == Some(id) && master_alive => None,
        Some(id) => {
            let eligible = controller.is_alive(&group.broker_name, id)
                && (group.sync_state_set.contains(&id)
                    || group.never_elected()
                    || controller.config.elect_unclean);
            if !eligible {
                return Ok(Answer::error(
                    ResponseCode::ControllerElectMasterFailed,
                    format!("broker {id} is not alive or not in sync"),
                ));
            }
            Some(id)
        }
        None if master_alive => None,
        None => match controller.candidate(&group) {
            Some(id) => Some(id),
            None => {
                return Ok(Answer::error(
                    ResponseCode::ControllerElectMasterFailed,
                    "no live replica of the sync state set",
                ));
            }
        },
    };
    let Some(master) = choice else {
        let mut answer = replica_info(&group, None);
        answer.code = ResponseCode::ControllerMasterStillExist;
        return Ok(answer);
    };
    match controller.elect(&group, master).await? {
        Outcome::Elected { .. } => {}
        Outcome::Refused(refusal) => {
            return Ok(Answer::error(refusal_code(&refusal), refusal.to_string()));
        }
        other => {
            return Err(ControllerError::Unavailable(format!(
                "unexpected {other:?}"
            )));
        }
    }
    replica_info_request(controller, header.broker_name).await
}

/// CONTROLLER_GET_SYNC_STATE_DATA: the body names the broker groups (empty: all of them).
async fn sync_state_data(
    controller: &Controller,
    command: &Command,
) -> Result<Answer, ControllerError> {
    let names: Vec<String> = if command.body.is_empty() {
        Vec::new()
    } else {
        match serde_json::from_slice(&command.body) {
            Ok(names) => names,
            Err(err) => return Ok(bad_request(format!("broker names body: {err}"))),
        }
    };
    let groups: Vec<Group> = controller
        .read(|state| {
            state
                .groups
                .values()
                .filter(|group| names.is_empty() || names.contains(&group.broker_name))
                .cloned()
                .collect()
        })
        .await?;
    let mut info = BrokerReplicasInfo::default();
    for group in groups {
        let identity = |(&id, addr): (&BrokerId, &String)| ReplicaIdentity {
            alive: controller.is_alive(&group.broker_name, id),
            broker_address: addr.clone(),
            broker_id: id as i64,
            broker_name: group.broker_name.clone(),
        };
        let (in_sync, not_in_sync): (Vec<_>, Vec<_>) = group
            .replicas
            .iter()
            .partition(|(id, _)| group.sync_state_set.contains(id));
        info.replicas_info_table.insert(
            group.broker_name.clone(),
            ReplicasInfo {
                in_sync_replicas: in_sync.into_iter().map(identity).collect(),
                master_address: group.master_addr().map(str::to_owned),
                master_broker_id: group.master.map(|id| id as i64),
                master_epoch: group.master_epoch as i32,
                not_in_sync_replicas: not_in_sync.into_iter().map(identity).collect(),
                sync_state_set_epoch: group.sync_state_set_epoch as i32,
            },
        );
    }
    Ok(Answer::ok(
        &(),
        serde_json::to_vec(&info).unwrap_or_default(),
    ))
}

/// A Raft RPC from a peer: the request is the JSON body, the answer the JSON of what this
/// controller's Raft returned (errors included, which the peer's Raft interprets).
async fn raft_rpc<Req, Resp, Fut>(
    command: &Command,
    call: impl FnOnce(Req) -> Fut,
) -> Result<Answer, ControllerError>
where
    Req: DeserializeOwned,
    Resp: Serialize,
    Fut: Future<Output = Resp>,
{
    let request: Req = match serde_json::from_slice(&command.body) {
        Ok(request) => request,
        Err(err) => return Ok(bad_request(format!("Raft request: {err}"))),
    };
    let response = call(request).await;
    match serde_json::to_vec(&response) {
        Ok(body) => Ok(Answer::ok(&(), body)),
        Err(err) => Err(ControllerError::Unavailable(err.to_string())),
    }
}
