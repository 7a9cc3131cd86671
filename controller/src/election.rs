//! Which replicas are alive, and whom an election names: what a controller decides on its own
//! before it proposes a [`Command::ElectMaster`](crate::state::Command::ElectMaster).
//!
//! Brokers heartbeat to every controller, so every controller (not only the Raft leader) knows
//! who is alive and a new leader can act at once. Only a replica with a fresh heartbeat is a
//! candidate. A controller that has just become leader may not have heard from everyone yet:
//! for one heartbeat timeout it presumes a sitting master it has no record of to be alive, so
//! it never deposes a master it simply has not heard from (it never elects an unheard replica
//! either).

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
    /// The connection it arrived on: only that connection's close makes the broker gone.
    pub connection: u64,
}

/// Heartbeats by (broker name, broker id), and the rule that makes a replica alive.
#[derive(Debug)]
pub struct Liveness {
    timeout: Duration,
    /// Since when a sitting master without a record is presumed alive.
    grace_from: Instant,
    heartbeats: HashMap<(String, BrokerId), Heartbeat>,
}

impl Liveness {
    pub fn new(timeout: Duration, now: Instant) -> Self {
        Self {
            timeout,
            grace_from: now,
            heartbeats: HashMap::new(),
        }
    }

    pub fn record(&mut self, broker_name: &str, broker_id: BrokerId, heartbeat: Heartbeat) {
        self.heartbeats
            .insert((broker_name.to_owned(), broker_id), heartbeat);
    }

    /// The connection `connection` that carried the broker's heartbeats closed: it counts as
    /// gone at once (a crashed process is noticed without waiting for the timeout), unless its
    /// latest heartbeat came over another connection (it reconnected).
    pub fn mark_gone(&mut self, broker_name: &str, broker_id: BrokerId, connection: u64) {
        if let Some(heartbeat) = self
            .heartbeats
            .get_mut(&(broker_name.to_owned(), broker_id))
            && heartbeat.connection == connection
        {
            heartbeat.timeout = Duration::ZERO;
        }
    }

    /// This controller just became leader: a sitting master it has no record of is presumed
    /// alive for one more timeout.
    pub fn restart_grace(&mut self, now: Instant) {
        self.grace_from = now;
    }

    pub fn last(&self, broker_name: &str, broker_id: BrokerId) -> Option<&Heartbeat> {
        self.heartbeats.get(&(broker_name.to_owned(), broker_id))
    }

    /// Whether the replica's last heartbeat is within its timeout.
    pub fn is_alive(&self, broker_name: &str, broker_id: BrokerId, now: Instant) -> bool {
        self.last(broker_name, broker_id).is_some_and(|heartbeat| {
            now.saturating_duration_since(heartbeat.at) < heartbeat.timeout
        })
    }

    /// Whether the group's master is alive, or presumed so (no record yet, within the grace
    /// after this controller started leading).
    pub fn master_alive(&self, group: &Group, now: Instant) -> bool {
        group
            .master
            .is_some_and(|id| match self.last(&group.broker_name, id) {
                Some(_) => self.is_alive(&group.broker_name, id, now),
                None => now.saturating_duration_since(self.grace_from) < self.timeout,
            })
    }

    /// Whether `group` needs an election now: it has no live master, and a live replica could
    /// take over.
    pub fn needs_election(&self, group: &Group, unclean: bool, now: Instant) -> bool {
        !self.master_alive(group, now) && self.choose_master(group, unclean, now).is_some()
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
                connection: id,
            },
        );
    }

    #[test]
    fn a_new_leader_presumes_only_the_sitting_master_alive_for_one_timeout() {
        let start = Instant::now();
        let mut liveness = Liveness::new(TIMEOUT, start);
        let g = group(&[1, 2], Some(1), &[1, 2]);
        assert!(liveness.master_alive(&g, start + TIMEOUT / 2));
        assert!(
            !liveness.is_alive("b", 2, start),
            "never heard: not a candidate"
        );
        assert!(!liveness.needs_election(&g, false, start));
        assert!(!liveness.master_alive(&g, start + TIMEOUT));
        assert!(
            !liveness.needs_election(&g, false, start + TIMEOUT),
            "nobody to elect"
        );
        liveness.restart_grace(start + TIMEOUT);
        assert!(liveness.master_alive(&g, start + TIMEOUT * 3 / 2));
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
                connection: 3,
            },
        );
        assert_eq!(
            liveness.choose_master(&g, false, now),
            Some(3),
            "epoch first"
        );
        liveness.mark_gone("b", 3, 99);
        assert!(
            liveness.is_alive("b", 3, now),
            "another connection's close changes nothing"
        );
        liveness.mark_gone("b", 3, 3);
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
