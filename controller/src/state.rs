//! The controller's replicated state: per broker group, its replicas, its master, the master's
//! epoch and the in-sync replica set (RocketMQ 5's `SyncStateSet`).
//!
//! Pure and deterministic: every controller applies the same [`Command`]s in the same (Raft log)
//! order and ends in the same state. What is not deterministic (which brokers are alive, which
//! candidate is furthest ahead) is decided by the leader before it proposes a command, and
//! travels inside the command (`crate::election`). Fences that depend only on the state (epochs,
//! who the master is) are checked here, at apply time, so two proposals racing through the log
//! cannot both win.
//!
//! Invariants of a [`Group`]: the master, when there is one, is a registered replica and a member
//! of the sync state set; every member of the sync state set is a registered replica;
//! `master_epoch` and `sync_state_set_epoch` only grow.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A replica's id within its group, assigned by the controller (1, 2, ...). Not the id a broker
/// registers with at the NameServers: there the master is always 0.
pub type BrokerId = u64;

/// The first id the controller assigns in a group.
pub const FIRST_BROKER_ID: BrokerId = 1;

/// One broker group, as the controller keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub cluster_name: String,
    pub broker_name: String,
    /// Every replica that ever registered: id -> its client address (`host:port`).
    pub replicas: BTreeMap<BrokerId, String>,
    pub next_broker_id: BrokerId,
    /// The elected master, if any. `None` before the first election and after an election
    /// that found no eligible replica.
    pub master: Option<BrokerId>,
    /// Bumped by every election that names a master: numbers the master's reign.
    pub master_epoch: u32,
    /// The replicas known to hold everything the master acknowledged.
    pub sync_state_set: BTreeSet<BrokerId>,
    /// Bumped by every change of the sync state set.
    pub sync_state_set_epoch: u32,
}

impl Group {
    fn new(cluster_name: &str, broker_name: &str) -> Self {
        Self {
            cluster_name: cluster_name.to_owned(),
            broker_name: broker_name.to_owned(),
            replicas: BTreeMap::new(),
            next_broker_id: FIRST_BROKER_ID,
            master: None,
            master_epoch: 0,
            sync_state_set: BTreeSet::new(),
            sync_state_set_epoch: 0,
        }
    }

    /// The master's client address.
    pub fn master_addr(&self) -> Option<&str> {
        self.master
            .and_then(|id| self.replicas.get(&id))
            .map(String::as_str)
    }

    /// Whether no master was ever elected: the first election may pick any live replica,
    /// since nobody has acknowledged anything yet.
    pub fn never_elected(&self) -> bool {
        self.master_epoch == 0
    }
}

/// A change to the state, as proposed by the controller leader and applied by every controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Command {
    /// A broker joins (or rejoins) its group. With `broker_id` it claims the id it was given
    /// before (kept in its store) and its address is updated; without, a replica already
    /// registered at `addr` keeps its id and any other gets the next one.
    Register {
        cluster_name: String,
        broker_name: String,
        addr: String,
        broker_id: Option<BrokerId>,
    },
    /// The outcome of an election the leader ran: `master` becomes the group's master in a new
    /// epoch with a sync state set of itself alone, or, with `None`, the group has no master.
    /// Refused when the group moved on since the leader looked (either epoch changed), and when
    /// `master` is not in the sync state set, unless the group was never elected or the
    /// election is `unclean` (an operator allowed it).
    ElectMaster {
        broker_name: String,
        master: Option<BrokerId>,
        expected_epoch: u32,
        expected_sync_state_set_epoch: u32,
        unclean: bool,
    },
    /// The master reports a new sync state set. Fenced by both epochs, so a deposed master or a
    /// stale report changes nothing.
    AlterSyncStateSet {
        broker_name: String,
        master: BrokerId,
        master_epoch: u32,
        sync_state_set_epoch: u32,
        sync_state_set: BTreeSet<BrokerId>,
    },
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    Registered {
        broker_id: BrokerId,
    },
    Elected {
        master: Option<BrokerId>,
        master_epoch: u32,
        sync_state_set_epoch: u32,
    },
    Altered {
        sync_state_set_epoch: u32,
    },
    Refused(Refusal),
}

/// Why a command changed nothing. Every variant leaves the state as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
pub enum Refusal {
    #[error("broker group {broker_name} belongs to cluster {cluster_name}")]
    OtherCluster {
        broker_name: String,
        cluster_name: String,
    },
    #[error("no broker group {0}")]
    NoSuchGroup(String),
    #[error("broker {broker_id} is not a replica of {broker_name}")]
    NoSuchReplica {
        broker_name: String,
        broker_id: BrokerId,
    },
    #[error("master epoch {got} is not the current {current}")]
    FencedMasterEpoch { got: u32, current: u32 },
    #[error("sync state set epoch {got} is not the current {current}")]
    FencedSyncStateSetEpoch { got: u32, current: u32 },
    #[error("broker {0} is not the master")]
    NotMaster(BrokerId),
    #[error("the sync state set must hold the master")]
    MasterNotInSet,
    #[error("broker {0} is not in the sync state set")]
    NotInSync(BrokerId),
}

/// Every group, by broker name (broker names are unique across clusters, as in RocketMQ).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControllerState {
    pub groups: BTreeMap<String, Group>,
}

impl ControllerState {
    pub fn group(&self, broker_name: &str) -> Option<&Group> {
        self.groups.get(broker_name)
    }

    /// Applies one command; the state changes only when the outcome is not [`Outcome::Refused`].
    pub fn apply(&mut self, command: &Command) -> Outcome {
        let result = match command {
            Command::Register {
                cluster_name,
                broker_name,
                addr,
                broker_id,
            } => self.register(cluster_name, broker_name, addr, *broker_id),
            Command::ElectMaster {
                broker_name,
                master,
                expected_epoch,
                expected_sync_state_set_epoch,
                unclean,
            } => self.elect(
                broker_name,
                *master,
                (*expected_epoch, *expected_sync_state_set_epoch),
                *unclean,
            ),
            Command::AlterSyncStateSet {
                broker_name,
                master,
                master_epoch,
                sync_state_set_epoch,
                sync_state_set,
            } => self.alter(
                broker_name,
                *master,
                *master_epoch,
                *sync_state_set_epoch,
                sync_state_set,
            ),
        };
        result.unwrap_or_else(Outcome::Refused)
    }

    fn register(
        &mut self,
        cluster_name: &str,
        broker_name: &str,
        addr: &str,
        claimed: Option<BrokerId>,
    ) -> Result<Outcome, Refusal> {
        if let Some(group) = self.groups.get(broker_name) {
            if group.cluster_name != cluster_name {
                return Err(Refusal::OtherCluster {
                    broker_name: broker_name.to_owned(),
                    cluster_name: group.cluster_name.clone(),
                });
            }
        }
        let known = |id| {
            self.groups
                .get(broker_name)
                .is_some_and(|group| group.replicas.contains_key(&id))
        };
        if let Some(id) = claimed
            && !known(id)
        {
            return Err(Refusal::NoSuchReplica {
                broker_name: broker_name.to_owned(),
                broker_id: id,
            });
        }
        let group = self
            .groups
            .entry(broker_name.to_owned())
            .or_insert_with(|| Group::new(cluster_name, broker_name));
        // Without a claimed id the broker is a new replica, even at a known address: a store
        // that was wiped must not inherit an id that is in the sync state set.
        let broker_id = claimed.unwrap_or_else(|| {
            let id = group.next_broker_id;
            group.next_broker_id += 1;
            id
        });
        group.replicas.insert(broker_id, addr.to_owned());
        Ok(Outcome::Registered { broker_id })
    }

    fn elect(
        &mut self,
        broker_name: &str,
        master: Option<BrokerId>,
        (expected_epoch, expected_set_epoch): (u32, u32),
        unclean: bool,
    ) -> Result<Outcome, Refusal> {
        let group = self
            .groups
            .get_mut(broker_name)
            .ok_or_else(|| Refusal::NoSuchGroup(broker_name.to_owned()))?;
        if group.master_epoch != expected_epoch {
            return Err(Refusal::FencedMasterEpoch {
                got: expected_epoch,
                current: group.master_epoch,
            });
        }
        if group.sync_state_set_epoch != expected_set_epoch {
            return Err(Refusal::FencedSyncStateSetEpoch {
                got: expected_set_epoch,
                current: group.sync_state_set_epoch,
            });
        }
        if let Some(id) = master {
            if !group.replicas.contains_key(&id) {
                return Err(Refusal::NoSuchReplica {
                    broker_name: broker_name.to_owned(),
                    broker_id: id,
                });
            }
            if !(group.never_elected() || unclean || group.sync_state_set.contains(&id)) {
                return Err(Refusal::NotInSync(id));
            }
        }
        match master {
            Some(id) => {
                group.master = Some(id);
                group.master_epoch += 1;
                group.sync_state_set = BTreeSet::from([id]);
                group.sync_state_set_epoch += 1;
            }
            // No eligible replica: the group has no master, but the sync state set stays, so
            // the next election still picks only among replicas that hold everything.
            None => group.master = None,
        }
        Ok(Outcome::Elected {
            master: group.master,
            master_epoch: group.master_epoch,
            sync_state_set_epoch: group.sync_state_set_epoch,
        })
    }

    fn alter(
        &mut self,
        broker_name: &str,
        master: BrokerId,
        master_epoch: u32,
        sync_state_set_epoch: u32,
        sync_state_set: &BTreeSet<BrokerId>,
    ) -> Result<Outcome, Refusal> {
        let group = self
            .groups
            .get_mut(broker_name)
            .ok_or_else(|| Refusal::NoSuchGroup(broker_name.to_owned()))?;
        if group.master_epoch != master_epoch {
            return Err(Refusal::FencedMasterEpoch {
                got: master_epoch,
                current: group.master_epoch,
            });
        }
        if group.master != Some(master) {
            return Err(Refusal::NotMaster(master));
        }
        if group.sync_state_set_epoch != sync_state_set_epoch {
            return Err(Refusal::FencedSyncStateSetEpoch {
                got: sync_state_set_epoch,
                current: group.sync_state_set_epoch,
            });
        }
        if !sync_state_set.contains(&master) {
            return Err(Refusal::MasterNotInSet);
        }
        if let Some(&unknown) = sync_state_set
            .iter()
            .find(|id| !group.replicas.contains_key(id))
        {
            return Err(Refusal::NoSuchReplica {
                broker_name: broker_name.to_owned(),
                broker_id: unknown,
            });
        }
        if *sync_state_set != group.sync_state_set {
            group.sync_state_set.clone_from(sync_state_set);
            group.sync_state_set_epoch += 1;
        }
        Ok(Outcome::Altered {
            sync_state_set_epoch: group.sync_state_set_epoch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(state: &mut ControllerState, addr: &str) -> BrokerId {
        match state.apply(&Command::Register {
            cluster_name: "c".into(),
            broker_name: "b".into(),
            addr: addr.into(),
            broker_id: None,
        }) {
            Outcome::Registered { broker_id } => broker_id,
            other => panic!("{other:?}"),
        }
    }

    fn elect(state: &mut ControllerState, master: Option<BrokerId>) -> Outcome {
        let group = state.group("b").unwrap();
        let command = Command::ElectMaster {
            broker_name: "b".into(),
            master,
            expected_epoch: group.master_epoch,
            expected_sync_state_set_epoch: group.sync_state_set_epoch,
            unclean: false,
        };
        state.apply(&command)
    }

    fn alter(state: &mut ControllerState, master: BrokerId, set: &[BrokerId]) -> Outcome {
        let group = state.group("b").unwrap();
        let command = Command::AlterSyncStateSet {
            broker_name: "b".into(),
            master,
            master_epoch: group.master_epoch,
            sync_state_set_epoch: group.sync_state_set_epoch,
            sync_state_set: set.iter().copied().collect(),
        };
        state.apply(&command)
    }

    #[test]
    fn registration_assigns_new_ids_and_keeps_claimed_ones() {
        let mut state = ControllerState::default();
        assert_eq!(register(&mut state, "a:1"), 1);
        assert_eq!(register(&mut state, "a:2"), 2);
        // Without a claimed id a broker is new, even at a known address (its store may be
        // empty): it must not inherit a place in the sync state set.
        assert_eq!(register(&mut state, "a:1"), 3);
        // Replica 2 restarts on another address and claims its id.
        let moved = state.apply(&Command::Register {
            cluster_name: "c".into(),
            broker_name: "b".into(),
            addr: "a:9".into(),
            broker_id: Some(2),
        });
        assert_eq!(moved, Outcome::Registered { broker_id: 2 });
        assert_eq!(state.group("b").unwrap().replicas[&2], "a:9");
        // A claimed id the group never gave is refused, and so is another cluster; a refused
        // claim on an unknown group creates nothing.
        let before = state.clone();
        let bogus = state.apply(&Command::Register {
            cluster_name: "c".into(),
            broker_name: "b".into(),
            addr: "a:3".into(),
            broker_id: Some(7),
        });
        assert!(matches!(
            bogus,
            Outcome::Refused(Refusal::NoSuchReplica { .. })
        ));
        let other = state.apply(&Command::Register {
            cluster_name: "other".into(),
            broker_name: "b".into(),
            addr: "a:4".into(),
            broker_id: None,
        });
        assert!(matches!(
            other,
            Outcome::Refused(Refusal::OtherCluster { .. })
        ));
        let unknown = state.apply(&Command::Register {
            cluster_name: "c".into(),
            broker_name: "nobody".into(),
            addr: "a:5".into(),
            broker_id: Some(1),
        });
        assert!(matches!(
            unknown,
            Outcome::Refused(Refusal::NoSuchReplica { .. })
        ));
        assert_eq!(state, before, "refusals change nothing");
    }

    #[test]
    fn an_election_starts_a_new_epoch_with_the_master_alone_in_sync() {
        let mut state = ControllerState::default();
        let (one, two) = (register(&mut state, "a:1"), register(&mut state, "a:2"));
        assert!(state.group("b").unwrap().never_elected());
        assert_eq!(
            elect(&mut state, Some(one)),
            Outcome::Elected {
                master: Some(one),
                master_epoch: 1,
                sync_state_set_epoch: 1
            }
        );
        assert_eq!(
            alter(&mut state, one, &[one, two]),
            Outcome::Altered {
                sync_state_set_epoch: 2
            }
        );
        assert_eq!(
            elect(&mut state, Some(two)),
            Outcome::Elected {
                master: Some(two),
                master_epoch: 2,
                sync_state_set_epoch: 3
            }
        );
        let group = state.group("b").unwrap();
        assert_eq!(group.sync_state_set, BTreeSet::from([two]));
        assert_eq!(group.master_addr(), Some("a:2"));
        // No eligible replica: no master, the set stays for the next election.
        assert_eq!(
            elect(&mut state, None),
            Outcome::Elected {
                master: None,
                master_epoch: 2,
                sync_state_set_epoch: 3
            }
        );
        assert_eq!(
            state.group("b").unwrap().sync_state_set,
            BTreeSet::from([two])
        );
    }

    #[test]
    fn a_stale_election_is_fenced_by_the_master_epoch() {
        let mut state = ControllerState::default();
        let (one, two) = (register(&mut state, "a:1"), register(&mut state, "a:2"));
        elect(&mut state, Some(one));
        let stale = Command::ElectMaster {
            broker_name: "b".into(),
            master: Some(two),
            expected_epoch: 0,
            expected_sync_state_set_epoch: 1,
            unclean: false,
        };
        let before = state.clone();
        assert_eq!(
            state.apply(&stale),
            Outcome::Refused(Refusal::FencedMasterEpoch { got: 0, current: 1 })
        );
        // The set changed since the leader looked: the choice may no longer be in sync.
        let stale_set = Command::ElectMaster {
            broker_name: "b".into(),
            master: Some(two),
            expected_epoch: 1,
            expected_sync_state_set_epoch: 0,
            unclean: false,
        };
        assert_eq!(
            state.apply(&stale_set),
            Outcome::Refused(Refusal::FencedSyncStateSetEpoch { got: 0, current: 1 })
        );
        // Outside the set: only an unclean election may name it.
        assert_eq!(
            elect(&mut state, Some(two)),
            Outcome::Refused(Refusal::NotInSync(two))
        );
        assert_eq!(state, before);
        let unclean = Command::ElectMaster {
            broker_name: "b".into(),
            master: Some(two),
            expected_epoch: 1,
            expected_sync_state_set_epoch: 1,
            unclean: true,
        };
        assert!(matches!(
            state.apply(&unclean),
            Outcome::Elected {
                master: Some(2),
                ..
            }
        ));
    }

    #[test]
    fn only_the_current_master_alters_the_set_and_only_from_the_current_epochs() {
        let mut state = ControllerState::default();
        let (one, two, three) = (
            register(&mut state, "a:1"),
            register(&mut state, "a:2"),
            register(&mut state, "a:3"),
        );
        elect(&mut state, Some(one));
        let before = state.clone();
        assert_eq!(
            alter(&mut state, two, &[two]),
            Outcome::Refused(Refusal::NotMaster(two))
        );
        assert_eq!(
            alter(&mut state, one, &[two]),
            Outcome::Refused(Refusal::MasterNotInSet)
        );
        assert!(matches!(
            alter(&mut state, one, &[one, 9]),
            Outcome::Refused(Refusal::NoSuchReplica { broker_id: 9, .. })
        ));
        assert_eq!(state, before);
        assert_eq!(
            alter(&mut state, one, &[one, two]),
            Outcome::Altered {
                sync_state_set_epoch: 2
            }
        );
        // A report built on the old set epoch loses.
        let stale = Command::AlterSyncStateSet {
            broker_name: "b".into(),
            master: one,
            master_epoch: 1,
            sync_state_set_epoch: 1,
            sync_state_set: BTreeSet::from([one, three]),
        };
        assert_eq!(
            state.apply(&stale),
            Outcome::Refused(Refusal::FencedSyncStateSetEpoch { got: 1, current: 2 })
        );
        // An unchanged set is accepted without a new epoch.
        assert_eq!(
            alter(&mut state, one, &[one, two]),
            Outcome::Altered {
                sync_state_set_epoch: 2
            }
        );
        // A deposed master is fenced by the master epoch.
        elect(&mut state, Some(two));
        assert!(matches!(
            state.apply(&Command::AlterSyncStateSet {
                broker_name: "b".into(),
                master: one,
                master_epoch: 1,
                sync_state_set_epoch: 3,
                sync_state_set: BTreeSet::from([one]),
            }),
            Outcome::Refused(Refusal::FencedMasterEpoch { got: 1, current: 2 })
        ));
    }

    #[test]
    fn commands_and_state_round_trip_through_json() {
        let mut state = ControllerState::default();
        let one = register(&mut state, "a:1");
        elect(&mut state, Some(one));
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(
            serde_json::from_str::<ControllerState>(&json).unwrap(),
            state
        );
        let command = Command::ElectMaster {
            broker_name: "b".into(),
            master: None,
            expected_epoch: 3,
            expected_sync_state_set_epoch: 2,
            unclean: true,
        };
        let json = serde_json::to_string(&command).unwrap();
        assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), command);
    }
}
