//! `controller status`, `controller metadata` and `controller elect`: the controllers' view of
//! each broker group (master, epochs, in-sync replicas) and an operator's election.
//!
//! Controllers are not NameServers: these commands take the controllers' addresses
//! (`--controller host:port;host:port`) and find the leader among them.

use std::time::Duration;

use clap::Subcommand;
use ringmq_protocol::{
    Command, RequestCode, ResponseCode,
    blocking::Connection,
    body::{BrokerReplicasInfo, ReplicaIdentity},
    header::{
        ControllerMetadataResponseHeader, ElectMasterRequestHeader, ReplicaInfoResponseHeader,
    },
};
use serde_json::json;

use super::output::{Rendered, Table};
use super::{EXIT_FAILED, EXIT_UNREACHABLE, Failure, Outcome};

/// Controller commands.
#[derive(Debug, Subcommand)]
pub enum ControllerCommand {
    /// Each broker group's master, master epoch and in-sync replicas (CONTROLLER_GET_SYNC_STATE_DATA).
    Status {
        /// Controller addresses, "host:port;host:port".
        #[arg(short = 'c', long)]
        controller: String,
        /// Only these broker groups (repeat the flag); all when absent.
        #[arg(short = 'b', long = "broker-name")]
        broker_names: Vec<String>,
    },
    /// Each controller's view of the controller group: who leads, and the peers
    /// (CONTROLLER_GET_METADATA_INFO).
    Metadata {
        /// Controller addresses, "host:port;host:port".
        #[arg(short = 'c', long)]
        controller: String,
    },
    /// Make a replica the master of its group, if it is alive and in sync
    /// (CONTROLLER_ELECT_MASTER with designateElect).
    Elect {
        /// Controller addresses, "host:port;host:port".
        #[arg(short = 'c', long)]
        controller: String,
        /// The broker group.
        #[arg(short = 'b', long = "broker-name")]
        broker_name: String,
        /// The replica's controller id.
        #[arg(short = 'i', long = "broker-id")]
        broker_id: i64,
    },
}

fn addresses(list: &str) -> Vec<&str> {
    list.split(';')
        .map(str::trim)
        .filter(|addr| !addr.is_empty())
        .collect()
}

/// One request to one controller.
fn call(
    addr: &str,
    code: RequestCode,
    header: &impl ringmq_protocol::EncodeExt,
    body: &[u8],
    timeout: Duration,
) -> Result<Command, String> {
    let mut connection =
        Connection::connect(addr, timeout).map_err(|err| format!("{addr}: {err}"))?;
    connection
        .request(code, header, body, timeout)
        .map_err(|err| format!("{addr}: {err}"))
}

/// Sends to the leader among `list`: asks each controller, and follows a CONTROLLER_NOT_LEADER
/// answer that names the leader.
fn call_leader(
    list: &str,
    code: RequestCode,
    header: &impl ringmq_protocol::EncodeExt,
    body: &[u8],
    timeout: Duration,
) -> Result<Command, Failure> {
    let mut errors = Vec::new();
    let mut candidates: Vec<String> = addresses(list).into_iter().map(str::to_owned).collect();
    let mut index = 0;
    while index < candidates.len() && index < 16 {
        let addr = candidates[index].clone();
        index += 1;
        match call(&addr, code, header, body, timeout) {
            Ok(answer) if answer.response_code() == ResponseCode::ControllerNotLeader => {
                if let Ok(named) = answer.header::<ControllerMetadataResponseHeader<'_>>()
                    && let Some(leader) = named.controller_leader_address
                    && !candidates.iter().any(|c| c == leader)
                {
                    candidates.push(leader.to_owned());
                }
                errors.push(format!("{addr}: not the leader"));
            }
            Ok(answer) => return Ok(answer),
            Err(err) => errors.push(err),
        }
    }
    Err(Failure::new(
        EXIT_UNREACHABLE,
        format!("no controller leader answered ({})", errors.join("; ")),
    ))
}

fn refused(answer: &Command) -> Failure {
    Failure::new(
        EXIT_FAILED,
        format!(
            "the controller refused: {} ({})",
            answer.response_code(),
            answer.remark.as_deref().unwrap_or("")
        ),
    )
}

fn replicas_cell(replicas: &[ReplicaIdentity]) -> String {
    let cells: Vec<String> = replicas
        .iter()
        .map(|r| {
            format!(
                "{}@{}{}",
                r.broker_id,
                r.broker_address,
                if r.alive { "" } else { " (down)" }
            )
        })
        .collect();
    if cells.is_empty() {
        "-".to_owned()
    } else {
        cells.join(", ")
    }
}

pub fn run(command: &ControllerCommand, timeout: Duration) -> Outcome {
    match command {
        ControllerCommand::Status {
            controller,
            broker_names,
        } => status(controller, broker_names, timeout),
        ControllerCommand::Metadata { controller } => metadata(controller, timeout),
        ControllerCommand::Elect {
            controller,
            broker_name,
            broker_id,
        } => elect(controller, broker_name, *broker_id, timeout),
    }
}

fn status(controller: &str, broker_names: &[String], timeout: Duration) -> Outcome {
    let body = serde_json::to_vec(broker_names).unwrap_or_default();
    let answer = call_leader(
        controller,
        RequestCode::ControllerGetSyncStateData,
        &(),
        &body,
        timeout,
    )?;
    if answer.response_code() != ResponseCode::Success {
        return Err(refused(&answer));
    }
    let info: BrokerReplicasInfo = serde_json::from_slice(&answer.body)
        .map_err(|err| Failure::new(EXIT_FAILED, format!("sync state data: {err}")))?;
    let mut table = Table::new([
        "BROKER",
        "MASTER",
        "EPOCH",
        "SYNC-EPOCH",
        "IN-SYNC",
        "NOT-IN-SYNC",
    ]);
    for (name, replicas) in &info.replicas_info_table {
        let master = match (replicas.master_broker_id, &replicas.master_address) {
            (Some(id), Some(addr)) => format!("{id}@{addr}"),
            _ => "none".to_owned(),
        };
        table.row(vec![
            name.clone(),
            master,
            replicas.master_epoch.to_string(),
            replicas.sync_state_set_epoch.to_string(),
            replicas_cell(&replicas.in_sync_replicas),
            replicas_cell(&replicas.not_in_sync_replicas),
        ]);
    }
    let json = serde_json::to_value(&info).unwrap_or_default();
    Ok(Rendered::new(table.render(), json))
}

fn metadata(controller: &str, timeout: Duration) -> Outcome {
    let mut table = Table::new(["CONTROLLER", "LEADER", "IS-LEADER", "PEERS"]);
    let mut rows = Vec::new();
    for addr in addresses(controller) {
        match call(
            addr,
            RequestCode::ControllerGetMetadataInfo,
            &(),
            &[],
            timeout,
        ) {
            Ok(answer) => {
                let header: ControllerMetadataResponseHeader<'_> = answer
                    .header()
                    .map_err(|err| Failure::new(EXIT_FAILED, format!("{addr}: {err}")))?;
                let leader = header.controller_leader_address.unwrap_or("-").to_owned();
                table.row(vec![
                    addr.to_owned(),
                    leader.clone(),
                    header.is_leader.to_string(),
                    header.peers.unwrap_or("").to_owned(),
                ]);
                rows.push(json!({"controller": addr, "leader": leader, "isLeader": header.is_leader, "peers": header.peers}));
            }
            Err(err) => {
                table.row(vec![
                    addr.to_owned(),
                    "unreachable".into(),
                    "-".into(),
                    "-".into(),
                ]);
                rows.push(json!({"controller": addr, "error": err}));
            }
        }
    }
    Ok(Rendered::new(
        table.render(),
        json!({ "controllers": rows }),
    ))
}

fn elect(controller: &str, broker_name: &str, broker_id: i64, timeout: Duration) -> Outcome {
    let header = ElectMasterRequestHeader {
        cluster_name: None,
        broker_name,
        broker_id: Some(broker_id),
        designate_elect: Some(true),
    };
    let answer = call_leader(
        controller,
        RequestCode::ControllerElectMaster,
        &header,
        &[],
        timeout,
    )?;
    let code = answer.response_code();
    if code != ResponseCode::Success && code != ResponseCode::ControllerMasterStillExist {
        return Err(refused(&answer));
    }
    let info: ReplicaInfoResponseHeader<'_> = answer
        .header()
        .map_err(|err| Failure::new(EXIT_FAILED, format!("the answer: {err}")))?;
    let text = format!(
        "master of {broker_name}: {}@{} epoch {}\n",
        info.master_broker_id
            .map_or("none".to_owned(), |id| id.to_string()),
        info.master_address.unwrap_or("-"),
        info.master_epoch
    );
    Ok(Rendered::new(
        text,
        json!({
            "brokerName": broker_name,
            "masterBrokerId": info.master_broker_id,
            "masterAddress": info.master_address,
            "masterEpoch": info.master_epoch,
        }),
    ))
}
