//! Which replicas are alive, and whom an election names: what a controller decides on its own
//! before it proposes a [`Command::ElectMaster`](crate::state::Command::ElectMaster).
//!
//! Brokers heartbeat to every controller, so every controller (not only the Raft leader) knows
//! who is alive and a new leader can act at once. A controller that has just started knows
//! nothing yet: it counts every registered replica as alive until one heartbeat timeout has
//! passed, so it never deposes a master it simply has not heard from.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::state::{BrokerId, Group};

/// What a broker's last heartbeat said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub at: Instant,
    /// How long after `at` the broker counts as gone (its own `heartbeatTimeoutMills`, or the
    /// controller's default).
    pub timeout: Duration,
    /// The last epoch the replica's log holds: among eligible candidates the highest wins.
    pub epoch: u32,
    /// How far the replica's log reaches (the sum of its shards' log ends): at equal epochs the
    /// one furthest ahead wins, so the least unacknowledged data is cut.
    pub max_offset: u64,
    /// Then the lowest wins (RocketMQ's `brokerElectionPriority`).
    pub election_priority: i32,
}

/// Heartbeats by (broker name, broker id), and the rule that makes a replica alive.
#[derive(Debug)]
pub struct Liveness {
    timeout: Duration,
    started: Instant,
    heartbeats: HashMap<(String, BrokerId), Heartbeat>,
}

impl Liveness {
    pub fn new(timeout: Duration, now: Instant) -> Self {
        Self {
            timeout,
            started: now,
            heartbeats: HashMap::new(),
        }
    }

    /// The controller's default heartbeat timeout.
    pub const fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn record(&mut self, broker_name: &str, broker_id: BrokerId, heartbeat: Heartbeat) {
        self.heartbeats
            .insert((broker_name.to_owned(), broker_id), heartbeat);
    }

    /// The broker's heartbeat connection closed: it counts as gone at once (a crashed process
    /// is noticed without waiting for the timeout).
    pub fn mark_gone(&mut self, broker_name: &str, broker_id: BrokerId) {
        if let Some(heartbeat) = self
            .heartbeats
            .get_mut(&(broker_name.to_owned(), broker_id))
        {
            heartbeat.timeout = Duration::ZERO;
        }
    }

    pub fn last(&self, broker_name: &str, broker_id: BrokerId) -> Option<&Heartbeat> {
        self.heartbeats.get(&(broker_name.to_owned(), broker_id))
    }

    /// Whether the replica heartbeat within the timeout, or this controller is too new to know.
    pub fn is_alive(&self, broker_name: &str, broker_id: BrokerId, now: Instant) -> bool {
        match self.last(broker_name, broker_id) {
            Some(heartbeat) => now.saturating_duration_since(heartbeat.at) < heartbeat.timeout,
            None => now.saturating_duration_since(self.started) < self.timeout,
        }
    }

    /// Whether `group` needs an election now: it has no live master, and either never had one
    /// or has a live replica that could take over.
    pub fn needs_election(&self, group: &Group, unclean: bool, now: Instant) -> bool {
        let master_alive = group
            .master
            .is_some_and(|id| self.is_alive(&group.broker_name, id, now));
        !master_alive && self.choose_master(group, unclean, now).is_some()
    }

    /// The replica an election names: among live members of the sync state set (any live
    /// replica when the group was never elected, or with `unclean` when no member is alive),
    /// the highest epoch, then the furthest log, then the lowest election priority, then the
    /// lowest id (RocketMQ's order, with a deterministic last tie-break).
    pub fn choose_master(&self, group: &Group, unclean: bool, now: Instant) -> Option<BrokerId> {
        let alive = |id: &BrokerId| self.is_alive(&group.broker_name, *id, now);
        let in_sync: Vec<BrokerId> = group.sync_state_set.iter().copied().filter(alive).collect();
        let candidates = if in_sync.is_empty() && (group.never_elected() || unclean) {
            group.replicas.keys().copied().filter(alive).collect()
        } else {
            in_sync
        };
        candidates.into_iter().min_by_key(|&id| {
            let heartbeat = self.last(&group.broker_name, id);
            (
                std::cmp::Reverse(heartbeat.map_or(0, |h| h.epoch)),
                std::cmp::Reverse(heartbeat.map_or(0, |h| h.max_offset)),
                heartbeat.map_or(i32::MAX, |h| h.election_priority),
                id,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(1);

    fn group(replicas: &[BrokerId], master: Option<BrokerId>, in_sync: &[BrokerId]) -> Group {
        Group {
            cluster_name: "c".into(),
            broker_name: "b".into(),
            replicas: replicas
                .iter()
                .map(|&id| (id, format!("h:{id}")))
                .collect::<BTreeMap<_, _>>(),
            next_broker_id: replicas.iter().max().map_or(1, |m| m + 1),
            master,
            master_epoch: u32::from(master.is_some()),
            sync_state_set: in_sync.iter().copied().collect::<BTreeSet<_>>(),
            sync_state_set_epoch: u32::from(master.is_some()),
        }
    }

    fn beat(liveness: &mut Liveness, id: BrokerId, at: Instant, max_offset: u64, priority: i32) {
        liveness.record(
            "b",
            id,
            Heartbeat {
                at,
                timeout: TIMEOUT,
                epoch: 1,
                max_offset,
                election_priority: priority,
            },
        );
    }

    #[test]
    fn a_new_controller_counts_everyone_alive_for_one_timeout() {
        let start = Instant::now();
        let liveness = Liveness::new(TIMEOUT, start);
        assert!(liveness.is_alive("b", 1, start + TIMEOUT / 2));
        assert!(!liveness.is_alive("b", 1, start + TIMEOUT));
        let g = group(&[1, 2], Some(1), &[1, 2]);
        assert!(!liveness.needs_election(&g, false, start));
    }

    #[test]
    fn only_live_in_sync_replicas_are_elected_best_first() {
        let start = Instant::now();
        let now = start + TIMEOUT * 3;
        let mut liveness = Liveness::new(TIMEOUT, start);
        // 1 was master and is silent; 2 and 3 are in sync, 4 is not.
        beat(&mut liveness, 2, now, 100, 0);
        beat(&mut liveness, 3, now, 200, 0);
        beat(&mut liveness, 4, now, 900, 0);
        let g = group(&[1, 2, 3, 4], Some(1), &[1, 2, 3]);
        assert!(liveness.needs_election(&g, false, now));
        assert_eq!(
            liveness.choose_master(&g, false, now),
            Some(3),
            "furthest ahead"
        );
        beat(&mut liveness, 3, now, 100, 0);
        beat(&mut liveness, 2, now, 100, -1);
        assert_eq!(
            liveness.choose_master(&g, false, now),
            Some(2),
            "then priority"
        );
        liveness.record(
            "b",
            3,
            Heartbeat {
                at: now,
                timeout: TIMEOUT,
                epoch: 2,
                max_offset: 1,
                election_priority: 5,
            },
        );
        assert_eq!(
            liveness.choose_master(&g, false, now),
            Some(3),
            "epoch first"
        );
        liveness.mark_gone("b", 3);
        assert!(
            !liveness.is_alive("b", 3, now),
            "a closed connection is gone at once"
        );
        assert_eq!(liveness.choose_master(&g, false, now), Some(2));
    }

    #[test]
    fn without_a_live_in_sync_replica_nobody_is_elected_unless_unclean() {
        let start = Instant::now();
        let now = start + TIMEOUT * 3;
        let mut liveness = Liveness::new(TIMEOUT, start);
        beat(&mut liveness, 2, now, 500, 0);
        let g = group(&[1, 2], Some(1), &[1]);
        assert_eq!(liveness.choose_master(&g, false, now), None);
        assert!(!liveness.needs_election(&g, false, now));
        assert_eq!(liveness.choose_master(&g, true, now), Some(2));
        // A group never elected takes any live replica.
        let fresh = group(&[1, 2], None, &[]);
        assert_eq!(liveness.choose_master(&fresh, false, now), Some(2));
        assert!(liveness.needs_election(&fresh, false, now));
    }

    #[test]
    fn a_live_master_needs_no_election() {
        let start = Instant::now();
        let now = start + TIMEOUT * 3;
        let mut liveness = Liveness::new(TIMEOUT, start);
        beat(&mut liveness, 1, start + TIMEOUT * 5 / 2, 0, 0);
        beat(&mut liveness, 2, now, 0, 0);
        let g = group(&[1, 2], Some(1), &[1, 2]);
        assert!(!liveness.needs_election(&g, false, now));
        assert!(liveness.needs_election(&g, false, now + TIMEOUT * 3 / 4));
    }
}
