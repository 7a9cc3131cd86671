//! The broker-wide topic table: one writer (a task on shard 0) that persists every change
//! (`<store>/config/topics.json`) before publishing the new snapshot every shard reads.
//!
//! Changes arrive from any shard as [`TopicChange`]s (UPDATE_AND_CREATE_TOPIC, auto-creation on
//! send, retry topics on heartbeat, DELETE_TOPIC_IN_BROKER), and on a slave from its metadata
//! sync (the master's whole table, `crate::ha::metadata_sync`). They are applied one at a time,
//! so two shards creating the same topic at once both see it created once.
//!
//! Deleting a topic removes its config only. Its stored messages stay where they are: the
//! records in the commit log until retention removes their segment by age, the consume-queue
//! entries and the consumer groups' committed offsets untouched. Until then a topic re-created
//! under the same name continues its queues' offsets (and its old messages are readable again);
//! while it does not exist, sends, pulls and routes for it are refused as for any unknown topic.

use std::{collections::HashSet, sync::Arc, time::Duration};

use ringmq_protocol::{body::TopicConfig, topic::AUTO_CREATE_TEMPLATE};
use ringmq_storage::{io::UringStorage, metadata::TopicConfigTable};

use crate::{
    error::{TopicEditError, TopicTableError},
    messages::{TopicChange, TopicEdit},
    shared::BrokerShared,
    topics::{self, TopicSnapshot},
};

/// Loads the table, adds the template topic when auto-creation is on, publishes it.
pub(crate) async fn open_topics(
    shared: &BrokerShared,
) -> Result<TopicConfigTable<UringStorage>, TopicTableError> {
    let dir = shared.config.store_dir.join("config");
    if let Err(source) = std::fs::create_dir_all(&dir) {
        return Err(TopicTableError::CreateDir { dir, source });
    }
    let mut table = TopicConfigTable::open(UringStorage::new(), dir.join("topics.json"))
        .await
        .map_err(TopicTableError::Load)?;
    if shared.config.auto_create_topic && table.get(AUTO_CREATE_TEMPLATE).is_none() {
        table
            .upsert(topics::template_topic(
                shared.config.default_topic_queue_nums,
            ))
            .await
            .map_err(TopicTableError::Save)?;
    }
    publish(shared, &table);
    Ok(table)
}

fn publish(shared: &BrokerShared, table: &TopicConfigTable<UringStorage>) {
    let snapshot = TopicSnapshot {
        topics: table
            .iter()
            .map(|config| (config.topic_name.clone(), config.clone()))
            .collect(),
        data_version: table.data_version(),
    };
    shared.metrics.topics.set(snapshot.topics.len() as i64);
    shared.topics.publish(snapshot);
}

/// Applies changes until every sender is gone (the broker stopping).
pub(crate) async fn serve_topic_changes(
    shared: Arc<BrokerShared>,
    mut table: TopicConfigTable<UringStorage>,
    changes: flume::Receiver<TopicChange>,
) {
    while let Ok(change) = changes.recv_async().await {
        let (name, saved, what) = match change.edit {
            TopicEdit::ReplaceAll(configs) => {
                let result = replace_all(&shared, &mut table, configs).await;
                let _ = change.reply.send(result);
                continue;
            }
            TopicEdit::Upsert(config) => {
                let name = config.topic_name.clone();
                (name, table.upsert(config).await, "created or updated")
            }
            TopicEdit::Delete(name) => {
                let saved = table.remove(&name).await;
                let what = match &saved {
                    Ok(None) => "to delete is unknown; nothing to do",
                    _ => "deleted",
                };
                (name, saved.map(drop), what)
            }
        };
        let result = match saved {
            Ok(()) => {
                publish(&shared, &table);
                // Tell every NameServer now rather than at the next 30 s heartbeat. A deleted
                // topic simply no longer appears in the registration: NameServers keep its
                // queue data until DELETE_TOPIC_IN_NAMESRV (as in RocketMQ).
                let _ = shared.register_now.try_send(());
                tracing::info!(topic = %name, "topic {what}");
                Ok(())
            }
            Err(err) => {
                tracing::error!(topic = %name, %err, "cannot save the topic table");
                Err(TopicEditError::Save(err))
            }
        };
        let _ = change.reply.send(result);
    }
}

/// A slave taking its master's topic table: one save, one publish, and a re-registration, all
/// only when something changed (a sync every 10 s must not re-register every 10 s).
///
/// The slave's template topic stays when the master has none and auto-creation is on:
/// [`open_topics`] adds it back at every start anyway, so dropping it would only make the table
/// (and the NameServer's view) flap across restarts.
async fn replace_all(
    shared: &BrokerShared,
    table: &mut TopicConfigTable<UringStorage>,
    mut configs: Vec<TopicConfig>,
) -> Result<(), TopicEditError> {
    if shared.config.auto_create_topic
        && !configs
            .iter()
            .any(|config| config.topic_name == AUTO_CREATE_TEMPLATE)
    {
        if let Some(template) = table.get(AUTO_CREATE_TEMPLATE) {
            configs.push(template.clone());
        }
    }
    let (upserted, removed) = count_changes(table, &configs);
    match table.replace_all(configs).await {
        Ok(false) => Ok(()),
        Ok(true) => {
            publish(shared, table);
            let _ = shared.register_now.try_send(());
            tracing::info!(upserted, removed, "topic table copied from the master");
            Ok(())
        }
        Err(err) => {
            tracing::error!(%err, "cannot save the topic table copied from the master");
            Err(TopicEditError::Save(err))
        }
    }
}

/// How many topics replacing `table` by `configs` creates or changes, and how many it removes.
fn count_changes(
    table: &TopicConfigTable<UringStorage>,
    configs: &[TopicConfig],
) -> (usize, usize) {
    let upserted = configs
        .iter()
        .filter(|config| table.get(&config.topic_name) != Some(*config))
        .count();
    let names: HashSet<&str> = configs.iter().map(|c| c.topic_name.as_str()).collect();
    let removed = table
        .iter()
        .filter(|config| !names.contains(config.topic_name.as_str()))
        .count();
    (upserted, removed)
}

/// Creates or updates a topic through the table's writer and waits until every shard can see it.
pub(crate) async fn apply(
    shared: &BrokerShared,
    config: TopicConfig,
) -> Result<(), TopicEditError> {
    edit(shared, TopicEdit::Upsert(config)).await
}

/// Deletes a topic's config through the table's writer and waits until every shard sees it
/// gone. Deleting an unknown topic succeeds (RocketMQ answers SUCCESS too).
pub(crate) async fn delete(shared: &BrokerShared, topic: &str) -> Result<(), TopicEditError> {
    edit(shared, TopicEdit::Delete(topic.to_owned())).await
}

async fn edit(shared: &BrokerShared, edit: TopicEdit) -> Result<(), TopicEditError> {
    let (reply, answer) = flume::bounded(1);
    shared
        .topic_changes
        .send_async(TopicChange { edit, reply })
        .await
        .map_err(|_| TopicEditError::Stopping)?;
    answer
        .recv_async()
        .await
        .map_err(|_| TopicEditError::Stopping)?
}

/// Why [`replace_all_blocking`] did not replace the table.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplaceError {
    #[error("the topic table's writer did not take the master's table")]
    NotTaken,
    #[error("the topic table's writer did not answer")]
    NoAnswer,
    #[error(transparent)]
    Edit(#[from] TopicEditError),
}

/// From a plain thread (a slave's metadata sync): makes the table exactly `configs` through the
/// table's writer, waiting at most `timeout` for each of handing it over and its answer.
pub(crate) fn replace_all_blocking(
    shared: &BrokerShared,
    configs: Vec<TopicConfig>,
    timeout: Duration,
) -> Result<(), ReplaceError> {
    let (reply, answer) = flume::bounded(1);
    let change = TopicChange {
        edit: TopicEdit::ReplaceAll(configs),
        reply,
    };
    shared
        .topic_changes
        .send_timeout(change, timeout)
        .map_err(|_| ReplaceError::NotTaken)?;
    Ok(answer
        .recv_timeout(timeout)
        .map_err(|_| ReplaceError::NoAnswer)??)
}
