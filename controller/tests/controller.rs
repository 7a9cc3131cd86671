//! The controller as real `ringmq-controller` processes on loopback, driven the way brokers and
//! tools drive it (remoting requests): registration, heartbeats, sync-state-set changes,
//! elections when a master's connection closes or it falls silent, the Raft group surviving
//! the loss of one controller of three and standing still without a quorum, bad input refused
//! while everything else is served, the admin tool, and a controller embedded in a NameServer.
//!
//! Every wait is a condition with a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use ringmq_protocol::{
    Command, EncodeExt, RequestCode, ResponseCode,
    body::{BrokerReplicasInfo, SyncStateSet},
    header::{
        AlterSyncStateSetRequestHeader, BrokerHeartbeatRequestHeader,
        ControllerMetadataResponseHeader, ControllerRegisterBrokerRequestHeader,
        ElectMasterRequestHeader, GetReplicaInfoRequestHeader, ReplicaInfoResponseHeader,
    },
};
use ringmq_testkit::{
    ControllerGroup, ControllerOptions, NamesrvOptions, NamesrvProcess, RemotingClient, wait_until,
};

const DEADLINE: Duration = Duration::from_secs(20);
const CLUSTER: &str = "DefaultCluster";
const GROUP: &str = "broker-a";

/// A pretend broker: like a real one, it keeps a connection to every controller and heartbeats
/// over all of them (dropping it closes them, as a crash would).
struct Replica {
    id: i64,
    addr: String,
    connections: Vec<(SocketAddr, Option<RemotingClient>)>,
}

impl Replica {
    fn new(group: &ControllerGroup, id: i64, addr: &str) -> Self {
        Self {
            id,
            addr: addr.to_owned(),
            connections: group.members().iter().map(|m| (m.addr, None)).collect(),
        }
    }

    /// Heartbeats every controller that answers; returns the leader's answer when it gave one
    /// (any answer otherwise).
    fn heartbeat(&mut self, max_offset: i64) -> Option<Command> {
        let header = BrokerHeartbeatRequestHeader {
            cluster_name: CLUSTER,
            broker_addr: &self.addr,
            broker_name: GROUP,
            broker_id: Some(self.id),
            epoch: Some(0),
            max_offset: Some(max_offset),
            ..BrokerHeartbeatRequestHeader::default()
        };
        let mut best: Option<Command> = None;
        for (addr, connection) in &mut self.connections {
            if connection.is_none() {
                *connection = RemotingClient::try_connect(*addr).ok();
            }
            let Some(client) = connection.as_mut() else {
                continue;
            };
            match client.try_request(RequestCode::BrokerHeartbeat, header, &[]) {
                Ok(answer) => {
                    let epoch = |c: &Command| {
                        c.header::<ReplicaInfoResponseHeader<'_>>()
                            .map_or(-1, |h| h.master_epoch)
                    };
                    if best.as_ref().is_none_or(|b| epoch(&answer) > epoch(b)) {
                        best = Some(answer);
                    }
                }
                Err(_) => *connection = None,
            }
        }
        best
    }
}

/// The controller that says it leads.
fn leader(group: &ControllerGroup) -> SocketAddr {
    wait_until("a controller leader", DEADLINE, || {
        group.members().iter().find_map(|member| {
            let mut client = RemotingClient::try_connect(member.addr).ok()?;
            let answer = client
                .try_request(RequestCode::ControllerGetMetadataInfo, (), &[])
                .ok()?;
            let header: ControllerMetadataResponseHeader<'_> = answer.header().ok()?;
            header.is_leader.then_some(member.addr)
        })
    })
}

/// A request to whichever controller leads, found again while leadership moves (a follower
/// answers CONTROLLER_NOT_LEADER), until the deadline.
fn call_leader(
    group: &ControllerGroup,
    code: RequestCode,
    header: impl EncodeExt + Copy,
    body: &[u8],
) -> Command {
    wait_until("an answer from the leader", DEADLINE, || {
        let mut client = RemotingClient::try_connect(leader(group)).ok()?;
        let answer = client.try_request(code, header, body).ok()?;
        (answer.response_code() != ResponseCode::ControllerNotLeader).then_some(answer)
    })
}

fn register(group: &ControllerGroup, addr: &str) -> i64 {
    let answer = call_leader(
        group,
        RequestCode::ControllerRegisterBroker,
        ControllerRegisterBrokerRequestHeader {
            cluster_name: CLUSTER,
            broker_name: GROUP,
            broker_address: addr,
            broker_id: None,
        },
        &[],
    );
    assert_eq!(
        answer.response_code(),
        ResponseCode::Success,
        "{:?}",
        answer.remark
    );
    let header: ReplicaInfoResponseHeader<'_> = answer.header().unwrap();
    header.broker_id.expect("the assigned id")
}

/// (master id, master epoch, sync state set, its epoch) as the leader answers them.
fn replica_info(group: &ControllerGroup) -> (Option<i64>, i32, Vec<i64>, i32) {
    let answer = call_leader(
        group,
        RequestCode::ControllerGetReplicaInfo,
        GetReplicaInfoRequestHeader { broker_name: GROUP },
        &[],
    );
    assert_eq!(
        answer.response_code(),
        ResponseCode::Success,
        "{:?}",
        answer.remark
    );
    let header: ReplicaInfoResponseHeader<'_> = answer.header().unwrap();
    let set: SyncStateSet = serde_json::from_slice(&answer.body).unwrap();
    (
        header.master_broker_id,
        header.master_epoch,
        set.sync_state_set,
        set.sync_state_set_epoch,
    )
}

fn alter(
    group: &ControllerGroup,
    master: i64,
    master_epoch: i32,
    set: &[i64],
    set_epoch: i32,
) -> Command {
    let body = serde_json::to_vec(&SyncStateSet {
        sync_state_set: set.to_vec(),
        sync_state_set_epoch: set_epoch,
    })
    .unwrap();
    call_leader(
        group,
        RequestCode::ControllerAlterSyncStateSet,
        AlterSyncStateSetRequestHeader {
            broker_name: GROUP,
            master_broker_id: master,
            master_epoch,
        },
        &body,
    )
}

/// Two replicas registered and heartbeating; the first election has named one of them.
fn two_replicas(group: &ControllerGroup) -> (Replica, Replica) {
    let replica = |addr: &str| Replica::new(group, register(group, addr), addr);
    let (mut one, mut two) = (replica("127.0.0.1:10911"), replica("127.0.0.1:10921"));
    assert_eq!((one.id, two.id), (1, 2), "ids are assigned from 1");
    one.heartbeat(100);
    two.heartbeat(50);
    let (master, epoch, set, _) = wait_until("the first master", DEADLINE, || {
        one.heartbeat(100);
        two.heartbeat(50);
        let info = replica_info(group);
        info.0.is_some().then_some(info)
    });
    assert_eq!(master, Some(1), "the replica furthest ahead");
    assert_eq!((epoch, set), (1, vec![1]));
    (one, two)
}

#[test]
fn a_master_whose_connection_closes_or_who_falls_silent_is_replaced_by_an_in_sync_replica() {
    let group = ControllerGroup::start(1, ControllerOptions::default());
    let (one, mut two) = two_replicas(&group);

    // The master reports replica 2 in sync.
    let answer = alter(&group, 1, 1, &[1, 2], 1);
    assert_eq!(
        answer.response_code(),
        ResponseCode::Success,
        "{:?}",
        answer.remark
    );
    assert_eq!(replica_info(&group).2, vec![1, 2]);

    // The master's process dies: its connection closes, and 2 takes over at once.
    let killed = Instant::now();
    drop(one);
    let (master, epoch, set, _) = wait_until("replica 2 elected", DEADLINE, || {
        two.heartbeat(60);
        let info = replica_info(&group);
        (info.0 == Some(2)).then_some(info)
    });
    let took = killed.elapsed();
    assert_eq!((master, epoch, set), (Some(2), 2, vec![2]));
    assert!(
        took < Duration::from_millis(900),
        "closed connection noticed in {took:?}"
    );
    // The heartbeat answer tells a broker who the master is.
    let header_answer = two.heartbeat(60).unwrap();
    let header: ReplicaInfoResponseHeader<'_> = header_answer.header().unwrap();
    assert_eq!((header.master_broker_id, header.master_epoch), (Some(2), 2));

    // Replica 1 returns; 2 admits it, then falls silent (connection open, no heartbeats).
    let mut one = Replica::new(&group, 1, "127.0.0.1:10911");
    one.heartbeat(60);
    let answer = alter(&group, 2, 2, &[1, 2], 3);
    assert_eq!(
        answer.response_code(),
        ResponseCode::Success,
        "{:?}",
        answer.remark
    );
    let silent = Instant::now();
    let (master, epoch, _, _) = wait_until("replica 1 elected after the timeout", DEADLINE, || {
        one.heartbeat(60);
        let info = replica_info(&group);
        (info.0 == Some(1)).then_some(info)
    });
    assert_eq!((master, epoch), (Some(1), 3));
    assert!(
        silent.elapsed() >= Duration::from_millis(900),
        "not before the heartbeat timeout"
    );
    drop(two);
}

#[test]
fn nobody_outside_the_sync_state_set_is_elected() {
    let group = ControllerGroup::start(1, ControllerOptions::default());
    let (one, mut two) = two_replicas(&group);
    // 2 never joined the set: when 1 dies the group has no master rather than a stale one.
    drop(one);
    let deadline = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < deadline {
        two.heartbeat(500);
        assert_eq!(replica_info(&group).0, Some(1), "2 was not in sync");
        std::thread::sleep(Duration::from_millis(100));
    }
    // An operator asking for 2 is refused for the same reason.
    let answer = call_leader(
        &group,
        RequestCode::ControllerElectMaster,
        ElectMasterRequestHeader {
            cluster_name: Some(CLUSTER),
            broker_name: GROUP,
            broker_id: Some(2),
            designate_elect: Some(true),
        },
        &[],
    );
    assert_eq!(
        answer.response_code(),
        ResponseCode::ControllerElectMasterFailed
    );
}

/// Sync state set changes the controller must refuse, each with its code.
fn refused_alters(group: &ControllerGroup, two: &mut Replica, client: &mut RemotingClient) {
    // 9 heartbeats but was never registered; 3 does neither.
    let mut nine = Replica::new(group, 9, "127.0.0.1:10991");
    // Alters: not the master, a stale master epoch, a stale set epoch, a silent member, an
    // unregistered one, one without the master, garbage.
    let cases = [
        (2, 1, vec![2], 1, ResponseCode::ControllerInvalidMaster),
        (
            1,
            0,
            vec![1, 2],
            1,
            ResponseCode::ControllerFencedMasterEpoch,
        ),
        (
            1,
            1,
            vec![1, 2],
            0,
            ResponseCode::ControllerFencedSyncStateSetEpoch,
        ),
        (
            1,
            1,
            vec![1, 2, 3],
            1,
            ResponseCode::ControllerBrokerNotAlive,
        ),
        (
            1,
            1,
            vec![1, 2, 9],
            1,
            ResponseCode::ControllerInvalidReplicas,
        ),
        (
            1,
            1,
            vec![2],
            1,
            ResponseCode::ControllerAlterSyncStateSetFailed,
        ),
    ];
    for (master, master_epoch, set, set_epoch, code) in cases {
        two.heartbeat(50);
        nine.heartbeat(0);
        let answer = alter(group, master, master_epoch, &set, set_epoch);
        assert_eq!(
            answer.response_code(),
            code,
            "{master} {master_epoch} {set:?} {set_epoch}"
        );
    }
    let answer = client.request(
        RequestCode::ControllerAlterSyncStateSet,
        AlterSyncStateSetRequestHeader {
            broker_name: GROUP,
            master_broker_id: 1,
            master_epoch: 1,
        },
        b"{not json",
    );
    assert_eq!(
        answer.response_code(),
        ResponseCode::ControllerInvalidRequest
    );
}

#[test]
fn bad_requests_are_refused_and_the_controller_keeps_serving() {
    let group = ControllerGroup::start(1, ControllerOptions::default());
    let (_one, mut two) = two_replicas(&group);
    let mut client = RemotingClient::connect(leader(&group));
    // A heartbeat without an id, a register without names, a negative id.
    let answer = client.request(
        RequestCode::BrokerHeartbeat,
        BrokerHeartbeatRequestHeader {
            cluster_name: CLUSTER,
            broker_addr: "x:1",
            broker_name: GROUP,
            ..BrokerHeartbeatRequestHeader::default()
        },
        &[],
    );
    assert_eq!(
        answer.response_code(),
        ResponseCode::ControllerInvalidRequest
    );
    let answer = client.request(
        RequestCode::ControllerRegisterBroker,
        ControllerRegisterBrokerRequestHeader {
            cluster_name: CLUSTER,
            broker_name: "",
            broker_address: "x:1",
            broker_id: None,
        },
        &[],
    );
    assert_eq!(
        answer.response_code(),
        ResponseCode::ControllerInvalidRequest
    );
    let answer = client.request(
        RequestCode::ControllerRegisterBroker,
        ControllerRegisterBrokerRequestHeader {
            cluster_name: CLUSTER,
            broker_name: GROUP,
            broker_address: "x:1",
            broker_id: Some(77),
        },
        &[],
    );
    assert_eq!(
        answer.response_code(),
        ResponseCode::ControllerBrokerIdInvalid
    );
    refused_alters(&group, &mut two, &mut client);
    let answer = client.request(RequestCode::Unknown(4242), (), &[]);
    assert_eq!(
        answer.response_code(),
        ResponseCode::RequestCodeNotSupported
    );
    // Nothing changed, and the controller serves on.
    assert_eq!(replica_info(&group), (Some(1), 1, vec![1], 1));
    let answer = client.request(
        RequestCode::ControllerGetSyncStateData,
        (),
        b"[\"broker-a\"]",
    );
    let info: BrokerReplicasInfo = serde_json::from_slice(&answer.body).unwrap();
    let replicas = &info.replicas_info_table[GROUP];
    assert_eq!(replicas.master_broker_id, Some(1));
    assert_eq!(replicas.in_sync_replicas.len(), 1);
    assert_eq!(replicas.not_in_sync_replicas[0].broker_id, 2);
}

#[test]
fn three_controllers_survive_the_loss_of_one_and_stand_still_without_a_quorum() {
    let mut group = ControllerGroup::start(3, ControllerOptions::default());
    let first = leader(&group);
    let (one, mut two) = two_replicas(&group);
    assert_eq!(
        alter(&group, 1, 1, &[1, 2], 1).response_code(),
        ResponseCode::Success
    );
    // A follower refuses leader-only requests and names the leader.
    let follower = group
        .members()
        .iter()
        .find(|m| m.addr != first)
        .unwrap()
        .addr;
    let answer = RemotingClient::connect(follower).request(
        RequestCode::ControllerGetReplicaInfo,
        GetReplicaInfoRequestHeader { broker_name: GROUP },
        &[],
    );
    assert_eq!(answer.response_code(), ResponseCode::ControllerNotLeader);
    let header: ControllerMetadataResponseHeader<'_> = answer.header().unwrap();
    assert_eq!(
        header.controller_leader_address,
        Some(first.to_string().as_str())
    );

    // The leader controller dies: another takes over with the table intact.
    let first_id = group.members().iter().find(|m| m.addr == first).unwrap().id;
    group.kill(first_id);
    drop(one);
    let second = leader(&group);
    assert_ne!(second, first);
    // Replica 1 died too: the new leader elects 2.
    let info = wait_until("2 elected by the new leader", DEADLINE, || {
        two.heartbeat(70);
        let info = replica_info(&group);
        (info.0 == Some(2)).then_some(info)
    });
    assert_eq!((info.1, info.2), (2, vec![2]));

    // The dead controller returns and catches up.
    group.restart(first_id);
    let restarted = group.member(first_id).addr;
    wait_until(
        "the restarted controller has the election",
        DEADLINE,
        || {
            let mut client = RemotingClient::try_connect(restarted).ok()?;
            let answer = client
                .try_request(
                    RequestCode::BrokerHeartbeat,
                    BrokerHeartbeatRequestHeader {
                        cluster_name: CLUSTER,
                        broker_addr: "127.0.0.1:10921",
                        broker_name: GROUP,
                        broker_id: Some(2),
                        ..BrokerHeartbeatRequestHeader::default()
                    },
                    &[],
                )
                .ok()?;
            let header: ReplicaInfoResponseHeader<'_> = answer.header().ok()?;
            (header.master_epoch == 2).then_some(())
        },
    );

    // Two of three gone: no quorum, no leader, no election, whatever the brokers do.
    let survivors: Vec<u64> = group
        .members()
        .iter()
        .map(|m| m.id)
        .filter(|&id| group.member(id).addr != second)
        .collect();
    let second_id = group
        .members()
        .iter()
        .find(|m| m.addr == second)
        .unwrap()
        .id;
    group.kill(second_id);
    group.kill(survivors[0]);
    let alone = group.member(survivors[1]).addr;
    let deadline = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < deadline {
        let answer = RemotingClient::connect(alone).request(
            RequestCode::ControllerGetReplicaInfo,
            GetReplicaInfoRequestHeader { broker_name: GROUP },
            &[],
        );
        assert_eq!(answer.response_code(), ResponseCode::ControllerNotLeader);
        std::thread::sleep(Duration::from_millis(100));
    }
    // A quorum again: the table is the one the group agreed on.
    group.restart(second_id);
    assert_eq!(replica_info(&group).1, 2);
}

/// `ringmq-admin controller ...` against a running controller.
fn admin(group: &ControllerGroup, args: &[&str]) -> ringmq_testkit::Exited {
    let mut command = std::process::Command::new(ringmq_testkit::binary("ringmq-admin"));
    command
        .arg("--json")
        .arg("controller")
        .args(args)
        .args(["--controller", &group.addrs()]);
    ringmq_testkit::run_to_exit(command, DEADLINE)
}

#[test]
fn the_admin_tool_shows_the_groups_and_elects_a_designated_replica() {
    let group = ControllerGroup::start(1, ControllerOptions::default());
    let (_one, mut two) = two_replicas(&group);
    two.heartbeat(50);
    assert_eq!(
        alter(&group, 1, 1, &[1, 2], 1).response_code(),
        ResponseCode::Success
    );

    let status = admin(&group, &["status"]);
    assert_eq!(status.code(), Some(0), "{}", status.stderr);
    let json: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let broker = &json["replicasInfoTable"][GROUP];
    assert_eq!(broker["masterBrokerId"], 1);
    assert_eq!(broker["inSyncReplicas"].as_array().unwrap().len(), 2);

    let metadata = admin(&group, &["metadata"]);
    assert_eq!(metadata.code(), Some(0), "{}", metadata.stderr);
    assert!(
        metadata.stdout.contains("\"isLeader\":true"),
        "{}",
        metadata.stdout
    );

    // The operator moves mastership to replica 2 (alive and in sync).
    two.heartbeat(50);
    let elect = admin(
        &group,
        &["elect", "--broker-name", GROUP, "--broker-id", "2"],
    );
    assert_eq!(elect.code(), Some(0), "{}", elect.stderr);
    let json: serde_json::Value = serde_json::from_str(&elect.stdout).unwrap();
    assert_eq!(
        (
            json["masterBrokerId"].as_i64(),
            json["masterEpoch"].as_i64()
        ),
        (Some(2), Some(2))
    );
    // A replica that is not in sync is refused, with exit code 1.
    let refused = admin(
        &group,
        &["elect", "--broker-name", GROUP, "--broker-id", "1"],
    );
    assert_eq!(refused.code(), Some(1), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("CONTROLLER_ELECT_MASTER_FAILED"),
        "{}",
        refused.stderr
    );
}

#[test]
fn a_nameserver_runs_a_controller_in_its_process() {
    let namesrv = NamesrvProcess::start_with(NamesrvOptions {
        embedded_controller: true,
        ..NamesrvOptions::default()
    });
    let controller = namesrv.controller_addr().expect("the embedded controller");
    wait_until("the embedded controller leads", DEADLINE, || {
        let mut client = RemotingClient::try_connect(controller).ok()?;
        let answer = client
            .try_request(RequestCode::ControllerGetMetadataInfo, (), &[])
            .ok()?;
        let header: ControllerMetadataResponseHeader<'_> = answer.header().ok()?;
        header.is_leader.then_some(())
    });
    let mut client = RemotingClient::connect(controller);
    let registered = client.request_ok(
        RequestCode::ControllerRegisterBroker,
        ControllerRegisterBrokerRequestHeader {
            cluster_name: CLUSTER,
            broker_name: GROUP,
            broker_address: "127.0.0.1:10911",
            broker_id: None,
        },
        &[],
    );
    let header: ReplicaInfoResponseHeader<'_> = registered.header().unwrap();
    assert_eq!(header.broker_id, Some(1));
    wait_until("the only replica elected", DEADLINE, || {
        let answer = client.request(
            RequestCode::BrokerHeartbeat,
            BrokerHeartbeatRequestHeader {
                cluster_name: CLUSTER,
                broker_addr: "127.0.0.1:10911",
                broker_name: GROUP,
                broker_id: Some(1),
                ..BrokerHeartbeatRequestHeader::default()
            },
            &[],
        );
        let header: ReplicaInfoResponseHeader<'_> = answer.header().ok()?;
        (header.master_broker_id == Some(1)).then_some(())
    });
    // The NameServer itself still serves.
    let answer = namesrv
        .client()
        .request(RequestCode::GetBrokerClusterInfo, (), &[]);
    assert_eq!(answer.response_code(), ResponseCode::Success);
}

#[test]
fn a_controller_restarted_from_its_files_has_the_same_table() {
    let mut group = ControllerGroup::start(1, ControllerOptions::default());
    let (_one, mut two) = two_replicas(&group);
    two.heartbeat(50);
    assert_eq!(
        alter(&group, 1, 1, &[1, 2], 1).response_code(),
        ResponseCode::Success
    );
    // Enough entries for a snapshot (every 500) and a purge of the log before it.
    let mut client = RemotingClient::connect(leader(&group));
    for port in 0..600 {
        let addr = format!("127.0.0.2:{}", 20_000 + port);
        client.request_ok(
            RequestCode::ControllerRegisterBroker,
            ControllerRegisterBrokerRequestHeader {
                cluster_name: CLUSTER,
                broker_name: "broker-many",
                broker_address: &addr,
                broker_id: None,
            },
            &[],
        );
    }
    let dir = group.member(1).dir().to_owned();
    assert!(
        dir.join("raft-snapshot.json").exists(),
        "a snapshot was taken"
    );
    let before = replica_info(&group);
    group.restart(1);
    assert_eq!(
        replica_info(&group),
        before,
        "rebuilt from the snapshot and the log"
    );
    // And it goes on where it was: the next ids follow.
    assert_eq!(register(&group, "127.0.0.1:10931"), 3);
    let answer = call_leader(
        &group,
        RequestCode::ControllerRegisterBroker,
        ControllerRegisterBrokerRequestHeader {
            cluster_name: CLUSTER,
            broker_name: "broker-many",
            broker_address: "127.0.0.2:30000",
            broker_id: None,
        },
        &[],
    );
    let header: ReplicaInfoResponseHeader<'_> = answer.header().unwrap();
    assert_eq!(header.broker_id, Some(601));
}
