//! `cluster list` and `broker status`.

use clap::Subcommand;
use ringmq_client::admin::Admin;
use serde_json::json;

use super::Outcome;
use super::output::{Rendered, Table};

/// Cluster commands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// List every cluster, broker group and broker address the NameServers know.
    List,
}

/// Broker commands.
#[derive(Debug, Subcommand)]
pub enum BrokerCommand {
    /// Print a broker's runtime statistics (GET_BROKER_RUNTIME_INFO).
    Status {
        /// Broker address, host:port.
        #[arg(short = 'b', long)]
        broker: String,
    },
}

pub fn run_cluster(admin: &Admin, command: &ClusterCommand) -> Outcome {
    match command {
        ClusterCommand::List => {
            let info = admin.cluster_info().wait()?;
            let mut table = Table::new(["CLUSTER", "BROKER", "ID", "ADDRESS"]);
            let mut clusters = Vec::new();
            for (cluster, names) in &info.cluster_addr_table {
                let mut brokers = Vec::new();
                for name in names {
                    let Some(broker) = info.broker_addr_table.get(name) else {
                        continue;
                    };
                    for (id, addr) in &broker.broker_addrs {
                        table.row(vec![
                            cluster.clone(),
                            name.clone(),
                            id.to_string(),
                            addr.clone(),
                        ]);
                        brokers.push(json!({"brokerName": name, "brokerId": id, "addr": addr}));
                    }
                }
                clusters.push(json!({"cluster": cluster, "brokers": brokers}));
            }
            Ok(Rendered::new(
                table.render(),
                json!({ "clusters": clusters }),
            ))
        }
    }
}

pub fn run_broker(admin: &Admin, command: &BrokerCommand) -> Outcome {
    match command {
        BrokerCommand::Status { broker } => {
            let stats = admin.broker_runtime_info(broker).wait()?;
            let mut table = Table::new(["KEY", "VALUE"]);
            for (key, value) in &stats {
                table.row(vec![key.clone(), value.clone()]);
            }
            Ok(Rendered::new(
                table.render(),
                json!({"broker": broker, "runtimeInfo": stats}),
            ))
        }
    }
}
