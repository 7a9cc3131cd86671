//! The broker-wide topic table: one writer (a task on shard 0) that persists every change
//! (`<store>/config/topics.json`) before publishing the new snapshot every shard reads.
//!
//! Changes arrive from any shard as [`TopicChange`]s (UPDATE_AND_CREATE_TOPIC, auto-creation on
//! send, retry topics on heartbeat, DELETE_TOPIC_IN_BROKER) and are applied one at a time, so two
//! shards creating the same topic at once both see it created once.
//!
//! Deleting a topic removes its config only. Its stored messages stay where they are: the
//! records in the commit log until retention removes their segment by age, the consume-queue
//! entries and the consumer groups' committed offsets untouched. Until then a topic re-created
//! under the same name continues its queues' offsets (and its old messages are readable again);
//! while it does not exist, sends, pulls and routes for it are refused as for any unknown topic.

use std::sync::Arc;

use ringmq_storage::{io::UringStorage, metadata::TopicConfigTable};

use crate::{
    shared::{BrokerShared, TopicChange, TopicEdit},
    topics::{self, TopicSnapshot},
};

/// Loads the table, adds the template topic when auto-creation is on, publishes it.
pub(crate) async fn open_topics(
    shared: &BrokerShared,
) -> Result<TopicConfigTable<UringStorage>, String> {
    let dir = shared.config.store_dir.join("config");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut table = TopicConfigTable::open(UringStorage::new(), dir.join("topics.json"))
        .await
        .map_err(|e| format!("cannot load the topic table: {e}"))?;
    if shared.config.auto_create_topic && table.get(topics::AUTO_CREATE_TEMPLATE).is_none() {
        table
            .upsert(topics::template_topic(
                shared.config.default_topic_queue_nums,
            ))
            .await
            .map_err(|e| format!("cannot save the topic table: {e}"))?;
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
                Err(format!("cannot save the topic table: {err}"))
            }
        };
        let _ = change.reply.send(result);
    }
}

/// Creates or updates a topic through the table's writer and waits until every shard can see it.
pub(crate) async fn apply(
    shared: &BrokerShared,
    config: ringmq_protocol::body::TopicConfig,
) -> Result<(), String> {
    edit(shared, TopicEdit::Upsert(config)).await
}

/// Deletes a topic's config through the table's writer and waits until every shard sees it
/// gone. Deleting an unknown topic succeeds (RocketMQ answers SUCCESS too).
pub(crate) async fn delete(shared: &BrokerShared, topic: &str) -> Result<(), String> {
    edit(shared, TopicEdit::Delete(topic.to_owned())).await
}

async fn edit(shared: &BrokerShared, edit: TopicEdit) -> Result<(), String> {
    let (reply, answer) = flume::bounded(1);
    shared
        .topic_changes
        .send_async(TopicChange { edit, reply })
        .await
        .map_err(|_| "the broker is stopping".to_owned())?;
    answer
        .recv_async()
        .await
        .map_err(|_| "the broker is stopping".to_owned())?
}
