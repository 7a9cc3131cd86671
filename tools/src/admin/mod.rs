//! `ringmq-admin`: cluster operations in the spirit of RocketMQ's `mqadmin`, on the client
//! library's [`Admin`] handle.
//!
//! Each command group lives in its own module and turns its result into a [`Rendered`] (text
//! and JSON); the binary picks one and maps failures to the exit codes below, which scripts can
//! rely on.

mod cluster;
mod consumer;
mod controller;
mod message;
pub mod output;
mod smoke;
mod topic;

use std::time::Duration;

use clap::{Parser, Subcommand};
use ringmq_client::admin::Admin;
use ringmq_client::{ClientConfig, ClientError};

pub use output::Rendered;

/// Exit code: the operation succeeded.
pub const EXIT_OK: u8 = 0;
/// Exit code: the operation failed (a server refused it, or what was asked for does not exist).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: the command line is wrong (clap's own code for usage errors).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: no server could be reached, or one did not answer in time (also: `consume` got
/// no message in time).
pub const EXIT_UNREACHABLE: u8 = 3;

/// RingMQ / RocketMQ cluster administration.
#[derive(Debug, Parser)]
#[command(
    name = "ringmq-admin",
    version,
    after_help = "Exit codes:\n  0  success\n  1  operation failed (refused by a server, or not found)\n  2  usage error\n  3  cannot reach any server, or timeout (consume: no message in time)"
)]
pub struct Cli {
    /// NameServer addresses, "host:port;host:port".
    #[arg(
        short = 'n',
        long = "namesrv",
        global = true,
        env = "NAMESRV_ADDR",
        default_value = "127.0.0.1:9876"
    )]
    pub namesrv: String,
    /// Print one JSON document instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Limit for connecting and for each request, ms (also the budget of a `send`, retries
    /// included, and how long `consume` waits).
    #[arg(long = "timeout-ms", global = true, default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub timeout_ms: u64,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The command groups.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, update, delete, list and inspect topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Clusters and their broker groups.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// One broker's state.
    #[command(subcommand)]
    Broker(cluster::BrokerCommand),
    /// Consumer groups.
    #[command(subcommand)]
    Consumer(consumer::ConsumerCommand),
    /// Look messages up by offset id or key.
    #[command(subcommand)]
    Message(message::MessageCommand),
    /// Broker groups' masters, epochs and in-sync replicas, as the controllers keep them.
    #[command(subcommand)]
    Controller(controller::ControllerCommand),
    /// Send one message and print where it was stored.
    Send(smoke::SendArgs),
    /// Print one message of a topic, then exit.
    Consume(smoke::ConsumeArgs),
}

/// Why a command failed, with its exit code.
#[derive(Debug)]
pub struct Failure {
    /// [`EXIT_FAILED`], [`EXIT_USAGE`] or [`EXIT_UNREACHABLE`].
    pub exit_code: u8,
    /// What went wrong, for people.
    pub message: String,
    /// The client error behind it, if any (its response code and remark go into `--json`).
    pub error: Option<ClientError>,
}

impl Failure {
    /// A failure that is not a client error.
    pub fn new(exit_code: u8, message: impl Into<String>) -> Self {
        Self {
            exit_code,
            message: message.into(),
            error: None,
        }
    }

    /// The failure as the one JSON document `--json` prints.
    pub fn json(&self) -> serde_json::Value {
        let error = self.error.as_ref();
        serde_json::json!({
            "error": self.message,
            "exitCode": self.exit_code,
            "responseCode": error
                .and_then(ClientError::response_code)
                .map(ringmq_protocol::ResponseCode::as_i32),
            "remark": error.and_then(ClientError::remark),
        })
    }
}

impl From<ClientError> for Failure {
    /// Transport failures (nothing reachable, no answer in time) exit with
    /// [`EXIT_UNREACHABLE`]; refusals and everything else with [`EXIT_FAILED`]. A send whose
    /// retries ran out is judged by its last attempt.
    fn from(error: ClientError) -> Self {
        let cause = match &error {
            ClientError::RetriesExhausted { last, .. } => last.as_ref(),
            other => other,
        };
        let exit_code = if cause.is_transport()
            || matches!(cause, ClientError::NameServersUnreachable { .. })
        {
            EXIT_UNREACHABLE
        } else {
            EXIT_FAILED
        };
        Self {
            exit_code,
            message: error.to_string(),
            error: Some(error),
        }
    }
}

/// Result of a command.
pub type Outcome = Result<Rendered, Failure>;

/// Runs the command the command line names.
pub fn run(cli: &Cli) -> Outcome {
    let timeout = Duration::from_millis(cli.timeout_ms);
    // Controllers are reached directly, not through the NameServers.
    if let Command::Controller(command) = &cli.command {
        return controller::run(command, timeout);
    }
    let config = ClientConfig::new(&cli.namesrv)
        .with_request_timeout(timeout)
        .with_connect_timeout(timeout)
        .with_instance_name(format!("ringmq-admin-{}", std::process::id()));
    if let Err(error) = config.validate() {
        return Err(Failure::new(EXIT_USAGE, error.to_string()));
    }
    let admin = Admin::new(config)?;
    let outcome = match &cli.command {
        Command::Topic(command) => topic::run(&admin, command),
        Command::Cluster(command) => cluster::run_cluster(&admin, command),
        Command::Broker(command) => cluster::run_broker(&admin, command),
        Command::Consumer(command) => consumer::run(&admin, command),
        Command::Message(command) => message::run(&admin, command),
        Command::Controller(command) => controller::run(command, timeout),
        Command::Send(args) => smoke::send(&admin, args, timeout),
        Command::Consume(args) => smoke::consume(&admin, args, timeout),
    };
    admin.instance().shutdown();
    outcome
}
