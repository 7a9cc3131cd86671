//! One controller: its Raft member, the table it applies, the heartbeats it receives, and the
//! leader's watch that elects a new master when one is gone.
//!
//! Reads and writes of the table go through the Raft leader (writes as log entries, reads after
//! a linearizable barrier); heartbeats go to every controller and stay local
//! (`crate::election`). Only the leader runs elections.

use std::{
    collections::BTreeMap,
    io,
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use openraft::{
    BasicNode, ServerState,
    error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError},
};
use thiserror::Error;
use tokio::sync::Notify;

use crate::{
    election::{Heartbeat, Liveness},
    raft::{
        NodeId, Raft,
        network::Network,
        store::{LogStore, SNAPSHOT_EVERY, StateMachine},
    },
    state::{BrokerId, Command, ControllerState, Group, Outcome},
};

/// How long a proposal or a linearizable read may wait for a quorum.
const QUORUM_WAIT: Duration = Duration::from_secs(5);
const NO_QUORUM: &str = "no quorum of controllers answered in time";

/// What a controller is told at start.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// This controller's id among `peers`.
    pub id: NodeId,
    /// Every controller of the group, this one included: id -> `host:port` its peers dial.
    pub peers: BTreeMap<NodeId, String>,
    /// Where the Raft log and snapshots live.
    pub dir: PathBuf,
    /// How long a broker may go without a heartbeat, when it does not say
    /// (`controllerHeartBeatTimeoutMills`).
    pub heartbeat_timeout: Duration,
    /// How often the leader looks for groups without a live master.
    pub scan_interval: Duration,
    /// Elect a replica outside the sync state set when no member is alive: availability over
    /// acknowledged data (`enableElectUncleanMaster`).
    pub elect_unclean: bool,
    /// Raft's heartbeat between controllers; elections among controllers time out after 3 to 6
    /// of these.
    pub raft_heartbeat: Duration,
}

impl ControllerConfig {
    /// Defaults for the timers: a master that stops is replaced in about
    /// `heartbeat_timeout + scan_interval` (a crash that closes its connection at once is
    /// noticed without the timeout).
    pub fn new(id: NodeId, peers: BTreeMap<NodeId, String>, dir: PathBuf) -> Self {
        Self {
            id,
            peers,
            dir,
            heartbeat_timeout: Duration::from_millis(1_500),
            scan_interval: Duration::from_millis(100),
            elect_unclean: false,
            raft_heartbeat: Duration::from_millis(100),
        }
    }
}

/// Parses one `--peer` flag: `id=host:port`.
pub fn parse_peer(text: &str) -> Result<(NodeId, String), String> {
    let (id, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("{text}: expected id=host:port"))?;
    let id = id
        .parse::<NodeId>()
        .map_err(|err| format!("{text}: the id: {err}"))?;
    if addr.rsplit_once(':').is_none() {
        return Err(format!("{text}: expected id=host:port"));
    }
    Ok((id, addr.to_owned()))
}

/// The peers of `--peer` flags, checked: no id twice, and `own` among them.
pub fn peer_table(
    own: NodeId,
    peers: &[(NodeId, String)],
) -> Result<BTreeMap<NodeId, String>, String> {
    let mut table = BTreeMap::new();
    for (id, addr) in peers {
        if table.insert(*id, addr.clone()).is_some() {
            return Err(format!("controller id {id} is given twice"));
        }
    }
    if !table.contains_key(&own) {
        return Err(format!("controller id {own} is not among the peers"));
    }
    Ok(table)
}

/// Why a request could not be served here.
#[derive(Debug, Error)]
pub enum ControllerError {
    /// Only the leader serves this; `leader` is its address when known.
    #[error("this controller is not the leader{}", .leader.as_deref().map(|l| format!(" (the leader is {l})")).unwrap_or_default())]
    NotLeader { leader: Option<String> },
    /// Raft stopped or its storage failed.
    #[error("the controller cannot serve: {0}")]
    Unavailable(String),
}

/// Why a controller did not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("this controller's id {0} is not among its peers")]
    NotAPeer(NodeId),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: io::Error },
    #[error("opening the controller's store in {dir}: {source}")]
    Store { dir: PathBuf, source: io::Error },
    #[error("invalid Raft settings: {0}")]
    Config(String),
    #[error("starting Raft: {0}")]
    Raft(String),
}

/// A running controller.
pub struct Controller {
    pub config: ControllerConfig,
    raft: Raft,
    machine: StateMachine,
    liveness: Mutex<Liveness>,
    /// Wakes the election watch early (a registration or a lost connection).
    rescan: Notify,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("id", &self.config.id)
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// Opens the store and joins the Raft group. A controller whose store is empty proposes the
    /// configured membership; doing so on every member at once is safe (they propose the same).
    pub async fn start(config: ControllerConfig) -> Result<Arc<Self>, StartError> {
        if !config.peers.contains_key(&config.id) {
            return Err(StartError::NotAPeer(config.id));
        }
        std::fs::create_dir_all(&config.dir).map_err(|source| StartError::Store {
            dir: config.dir.clone(),
            source,
        })?;
        let store_error = |source| StartError::Store {
            dir: config.dir.clone(),
            source,
        };
        let log = LogStore::open(&config.dir).map_err(store_error)?;
        let machine = StateMachine::open(&config.dir).map_err(store_error)?;
        let heartbeat_ms = config.raft_heartbeat.as_millis().max(10) as u64;
        let raft_config = openraft::Config {
            cluster_name: "ringmq-controller".into(),
            heartbeat_interval: heartbeat_ms,
            election_timeout_min: heartbeat_ms * 3,
            election_timeout_max: heartbeat_ms * 6,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY),
            max_in_snapshot_log_to_keep: 100,
            // Receiving, parsing and saving a snapshot of a large table takes longer than the
            // default 200 ms; a follower that keeps timing out would never catch up.
            install_snapshot_timeout: 5_000,
            ..Default::default()
        }
        .validate()
        .map_err(|err| StartError::Config(err.to_string()))?;
        let raft = Raft::new(
            config.id,
            Arc::new(raft_config),
            Network,
            log,
            machine.clone(),
        )
        .await
        .map_err(|err| StartError::Raft(err.to_string()))?;
        let members: BTreeMap<NodeId, BasicNode> = config
            .peers
            .iter()
            .map(|(&id, addr)| (id, BasicNode::new(addr)))
            .collect();
        match raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(err) => return Err(StartError::Raft(err.to_string())),
        }
        let liveness = Liveness::new(config.heartbeat_timeout, Instant::now());
        Ok(Arc::new(Self {
            config,
            raft,
            machine,
            liveness: Mutex::new(liveness),
            rescan: Notify::new(),
        }))
    }

    /// The Raft handle (the server hands peers' RPCs to it).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The leader as this controller sees it: id and address, and whether it is this one.
    pub fn leader(&self) -> (Option<NodeId>, Option<String>, bool) {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader;
        let addr = leader.and_then(|id| {
            metrics
                .membership_config
                .membership()
                .get_node(&id)
                .map(|node| node.addr.clone())
        });
        (leader, addr, metrics.state == ServerState::Leader)
    }

    fn not_leader(&self) -> ControllerError {
        ControllerError::NotLeader {
            leader: self.leader().1,
        }
    }

    /// Proposes `command` (leader only) and returns its outcome once committed and applied,
    /// within [`QUORUM_WAIT`] (a leader cut off from its quorum answers rather than hang).
    pub async fn propose(&self, command: Command) -> Result<Outcome, ControllerError> {
        let written = tokio::time::timeout(QUORUM_WAIT, self.raft.client_write(command))
            .await
            .map_err(|_| ControllerError::Unavailable(NO_QUORUM.into()))?;
        match written {
            Ok(response) => response
                .data
                .0
                .ok_or_else(|| ControllerError::Unavailable("a command applied as nothing".into())),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(ControllerError::NotLeader {
                    leader: forward.leader_node.map(|node| node.addr),
                })
            }
            Err(err) => Err(ControllerError::Unavailable(err.to_string())),
        }
    }

    /// Reads the table as of now (leader only, after confirming leadership with a quorum).
    pub async fn read<T>(
        &self,
        read: impl FnOnce(&ControllerState) -> T,
    ) -> Result<T, ControllerError> {
        let confirmed = tokio::time::timeout(QUORUM_WAIT, self.raft.ensure_linearizable())
            .await
            .map_err(|_| ControllerError::Unavailable(NO_QUORUM.into()))?;
        match confirmed {
            Ok(_) => Ok(self.machine.with_state(read).await),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => {
                Err(self.not_leader())
            }
            Err(err) => Err(ControllerError::Unavailable(err.to_string())),
        }
    }

    /// The table as this controller has applied it (any controller; possibly behind the
    /// leader, which epochs make harmless for brokers: they act only on newer epochs).
    pub async fn local_group(&self, broker_name: &str) -> Option<Group> {
        self.machine
            .with_state(|state| state.group(broker_name).cloned())
            .await
    }

    fn liveness(&self) -> std::sync::MutexGuard<'_, Liveness> {
        self.liveness.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a broker's heartbeat.
    pub fn heartbeat(&self, broker_name: &str, broker_id: BrokerId, heartbeat: Heartbeat) {
        self.liveness().record(broker_name, broker_id, heartbeat);
    }

    /// Connection `connection`, which carried the broker's heartbeats, closed: the broker is
    /// gone now (unless it heartbeats over another one); the leader looks at once.
    pub fn connection_lost(&self, broker_name: &str, broker_id: BrokerId, connection: u64) {
        self.liveness()
            .mark_gone(broker_name, broker_id, connection);
        self.rescan.notify_one();
    }

    /// Whether a replica's last heartbeat here is within its timeout.
    pub fn is_alive(&self, broker_name: &str, broker_id: BrokerId) -> bool {
        self.liveness()
            .is_alive(broker_name, broker_id, Instant::now())
    }

    /// Whether the group's master is alive (or presumed so right after this controller began
    /// leading).
    pub fn master_alive(&self, group: &Group) -> bool {
        self.liveness().master_alive(group, Instant::now())
    }

    /// The default timeout a heartbeat without its own gets.
    pub fn default_heartbeat_timeout(&self) -> Duration {
        self.config.heartbeat_timeout
    }

    /// Asks the election watch to look now rather than at its next tick.
    pub fn rescan(&self) {
        self.rescan.notify_one();
    }

    /// The replica an election in `group` would name now.
    pub fn candidate(&self, group: &Group) -> Option<BrokerId> {
        self.liveness()
            .choose_master(group, self.config.elect_unclean, Instant::now())
    }

    /// The leader's election watch: every `scan_interval` (or when woken), each group without a
    /// live master gets one elected from its live in-sync replicas. Runs until the process ends.
    pub async fn watch_masters(self: Arc<Self>) {
        let mut leading = false;
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.config.scan_interval) => {}
                () = self.rescan.notified() => {}
            }
            let now_leading = self.leader().2;
            if now_leading && !leading {
                // Heartbeats may not all have reached this controller yet.
                self.liveness().restart_grace(Instant::now());
            }
            leading = now_leading;
            if !leading {
                continue;
            }
            let groups: Vec<Group> = self
                .machine
                .with_state(|state| state.groups.values().cloned().collect())
                .await;
            for group in groups {
                let choice = {
                    let liveness = self.liveness();
                    let now = Instant::now();
                    liveness
                        .needs_election(&group, self.config.elect_unclean, now)
                        .then(|| liveness.choose_master(&group, self.config.elect_unclean, now))
                        .flatten()
                };
                let Some(master) = choice else { continue };
                if let Err(err) = self.elect(&group, master).await {
                    tracing::warn!(broker_name = %group.broker_name, %err, "election not committed");
                }
            }
        }
    }

    /// Proposes `master` for `group`, fenced by both epochs the choice was made at; a choice
    /// outside the sync state set is marked unclean (only this controller's policy allows it).
    pub async fn elect(&self, group: &Group, master: BrokerId) -> Result<Outcome, ControllerError> {
        let command = Command::ElectMaster {
            broker_name: group.broker_name.clone(),
            master: Some(master),
            expected_epoch: group.master_epoch,
            expected_sync_state_set_epoch: group.sync_state_set_epoch,
            unclean: !group.never_elected() && !group.sync_state_set.contains(&master),
        };
        let outcome = self.propose(command).await?;
        match &outcome {
            Outcome::Elected { master_epoch, .. } => tracing::info!(
                broker_name = %group.broker_name,
                master,
                previous = ?group.master,
                master_epoch,
                "master elected"
            ),
            Outcome::Refused(refusal) => tracing::warn!(
                broker_name = %group.broker_name,
                master,
                %refusal,
                "election refused (the group moved on since it was decided)"
            ),
            _ => {}
        }
        Ok(outcome)
    }

    /// Returns once Raft has stopped by itself (a storage failure is fatal to it).
    pub async fn stopped(&self) {
        let mut metrics = self.raft.metrics();
        loop {
            if metrics.borrow().state == ServerState::Shutdown {
                return;
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }

    /// Stops Raft.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}
