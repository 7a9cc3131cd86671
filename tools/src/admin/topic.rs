//! `topic create | update | delete | list | route | status`.

use clap::{Args, Subcommand};
use ringmq_client::admin::{Admin, TopicSpec, TopicTarget};
use serde_json::json;

use super::output::{Rendered, Table, format_time_ms};
use super::{Failure, Outcome};

/// Topic commands.
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic on every master of a cluster (-c) or on one broker (-b).
    Create(SpecArgs),
    /// Change a topic's queue counts, permission or order flag (same request as create).
    Update(SpecArgs),
    /// Delete a topic from every master of a cluster and from every NameServer.
    Delete {
        /// Topic name.
        #[arg(short = 't', long)]
        topic: String,
        /// Cluster name.
        #[arg(short = 'c', long)]
        cluster: String,
    },
    /// List every topic the NameServers know.
    List,
    /// Print a topic's route (broker groups, addresses, queues).
    Route {
        /// Topic name.
        #[arg(short = 't', long)]
        topic: String,
    },
    /// Print min offset, max offset and last store time of every queue of a topic.
    Status {
        /// Topic name.
        #[arg(short = 't', long)]
        topic: String,
    },
}

/// A topic's settings and where to apply them.
#[derive(Debug, Args)]
pub struct SpecArgs {
    /// Topic name.
    #[arg(short = 't', long)]
    topic: String,
    #[command(flatten)]
    target: TargetArgs,
    /// Read queue count.
    #[arg(short = 'r', long = "read-queues", default_value_t = 8,
          value_parser = clap::value_parser!(i32).range(1..=1024))]
    read_queues: i32,
    /// Write queue count.
    #[arg(short = 'w', long = "write-queues", default_value_t = 8,
          value_parser = clap::value_parser!(i32).range(1..=1024))]
    write_queues: i32,
    /// Permission: 2 write-only, 4 read-only, 6 read-write.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..=7))]
    perm: i32,
    /// Mark the topic as ordered.
    #[arg(long)]
    order: bool,
}

/// Exactly one of a cluster or a broker.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct TargetArgs {
    /// Every master of this cluster.
    #[arg(short = 'c', long)]
    cluster: Option<String>,
    /// This broker (host:port).
    #[arg(short = 'b', long)]
    broker: Option<String>,
}

impl TargetArgs {
    fn target(&self) -> Result<TopicTarget, Failure> {
        match (&self.cluster, &self.broker) {
            (Some(cluster), None) => Ok(TopicTarget::Cluster(cluster.clone())),
            (None, Some(broker)) => Ok(TopicTarget::Broker(broker.clone())),
            _ => Err(Failure::new(
                super::EXIT_USAGE,
                "give exactly one of --cluster and --broker",
            )),
        }
    }
}

pub fn run(admin: &Admin, command: &TopicCommand) -> Outcome {
    match command {
        TopicCommand::Create(args) => apply(admin, args, "created"),
        TopicCommand::Update(args) => apply(admin, args, "updated"),
        TopicCommand::Delete { topic, cluster } => {
            admin.delete_topic(topic, cluster).wait()?;
            Ok(Rendered::new(
                format!("topic {topic} deleted from cluster {cluster}\n"),
                json!({"topic": topic, "cluster": cluster, "deleted": true}),
            ))
        }
        TopicCommand::List => {
            let topics = admin.topic_list().wait()?;
            let mut text = String::new();
            for topic in &topics {
                text.push_str(topic);
                text.push('\n');
            }
            Ok(Rendered::new(text, json!({ "topics": topics })))
        }
        TopicCommand::Route { topic } => route(admin, topic),
        TopicCommand::Status { topic } => status(admin, topic),
    }
}

fn apply(admin: &Admin, args: &SpecArgs, done: &str) -> Outcome {
    let spec = TopicSpec::new(args.topic.clone())
        .with_queues(args.read_queues, args.write_queues)
        .with_perm(args.perm)
        .with_order(args.order);
    let brokers = admin.create_topic(spec, args.target.target()?).wait()?;
    Ok(Rendered::new(
        format!(
            "topic {} {done} on {} (read queues {}, write queues {}, perm {}, order {})\n",
            args.topic,
            brokers.join(", "),
            args.read_queues,
            args.write_queues,
            args.perm,
            args.order
        ),
        json!({
            "topic": args.topic,
            "brokers": brokers,
            "readQueues": args.read_queues,
            "writeQueues": args.write_queues,
            "perm": args.perm,
            "order": args.order,
        }),
    ))
}

fn route(admin: &Admin, topic: &str) -> Outcome {
    let route = admin.topic_route(topic).wait()?;
    let mut brokers = Table::new(["BROKER", "CLUSTER", "ID", "ADDRESS"]);
    for broker in &route.broker_datas {
        for (id, addr) in &broker.broker_addrs {
            brokers.row(vec![
                broker.broker_name.clone(),
                broker.cluster.clone(),
                id.to_string(),
                addr.clone(),
            ]);
        }
    }
    let mut queues = Table::new(["BROKER", "READ QUEUES", "WRITE QUEUES", "PERM"]);
    for data in &route.queue_datas {
        queues.row(vec![
            data.broker_name.clone(),
            data.read_queue_nums.to_string(),
            data.write_queue_nums.to_string(),
            perm_text(data.perm),
        ]);
    }
    let text = format!("{}\n{}", brokers.render(), queues.render());
    let json = serde_json::to_value(&route).map_err(|error| {
        Failure::new(
            super::EXIT_FAILED,
            format!("cannot render the route: {error}"),
        )
    })?;
    Ok(Rendered::new(text, json))
}

fn status(admin: &Admin, topic: &str) -> Outcome {
    let queues = admin.topic_status(topic).wait()?;
    let mut table = Table::new(["BROKER", "QUEUE", "MIN OFFSET", "MAX OFFSET", "LAST STORED"]);
    for queue in &queues {
        table.row(vec![
            queue.queue.broker_name.clone(),
            queue.queue.queue_id.to_string(),
            queue.min_offset.to_string(),
            queue.max_offset.to_string(),
            queue
                .last_store_timestamp_ms
                .map_or_else(|| "-".to_owned(), format_time_ms),
        ]);
    }
    Ok(Rendered::new(
        table.render(),
        json!({ "topic": topic, "queues": queues }),
    ))
}

/// `6` as `6 (rw)`.
fn perm_text(perm: i32) -> String {
    let read = if perm & 4 == 0 { "" } else { "r" };
    let write = if perm & 2 == 0 { "" } else { "w" };
    format!("{perm} ({read}{write})")
}
