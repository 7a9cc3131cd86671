//! `consumer progress`.

use clap::Subcommand;
use ringmq_client::admin::Admin;

use super::output::{Rendered, Table};
use super::{EXIT_FAILED, Failure, Outcome};

/// Consumer-group commands.
#[derive(Debug, Subcommand)]
pub enum ConsumerCommand {
    /// Per queue of a topic: broker offset, the group's committed offset and the lag.
    Progress {
        /// Consumer group.
        #[arg(short = 'g', long)]
        group: String,
        /// Topic.
        #[arg(short = 't', long)]
        topic: String,
    },
}

pub fn run(admin: &Admin, command: &ConsumerCommand) -> Outcome {
    match command {
        ConsumerCommand::Progress { group, topic } => {
            let progress = admin.consumer_progress(group, topic).wait()?;
            let mut table =
                Table::new(["BROKER", "QUEUE", "BROKER OFFSET", "CONSUMER OFFSET", "LAG"]);
            for queue in &progress.queues {
                table.row(vec![
                    queue.queue.broker_name.clone(),
                    queue.queue.queue_id.to_string(),
                    queue.broker_offset.to_string(),
                    queue
                        .committed_offset
                        .map_or_else(|| "-".to_owned(), |offset| offset.to_string()),
                    queue.lag.to_string(),
                ]);
            }
            let text = format!(
                "{}\nconsumer group {group} on topic {topic}: total lag {}\n",
                table.render(),
                progress.total_lag
            );
            let json = serde_json::to_value(&progress).map_err(|error| {
                Failure::new(EXIT_FAILED, format!("cannot render the progress: {error}"))
            })?;
            Ok(Rendered::new(text, json))
        }
    }
}
