//! A slave's copy of its master's topic configs and consumer offsets (docs/protocol.md §8.6).
//!
//! A side thread that, shortly after start and then every `metadataSyncInterval` (10 s), asks
//! the master for GET_ALL_TOPIC_CONFIG and GET_ALL_CONSUMER_OFFSET over one short-lived remoting
//! connection, and applies both:
//! - topics: the slave's table becomes the master's, through the table's one writer on shard 0
//!   and in one save (`crate::metadata`), so the routes the slave registers match the master's;
//! - offsets: first the offsets consumers committed to this slave (while the master was down)
//!   go to the master, each only forward; then each shard takes the master's offset of every
//!   queue it owns, and offsets only the slave has stay (`crate::offsets::apply_master_offsets`
//!   says why). So a master that returns after an outage learns where its consumers got to,
//!   and nothing rewinds a group.
//!
//! Both answers are fetched and checked before either is applied, so a bad answer changes
//! nothing. A master that is down, refuses or answers garbage leaves the slave's tables as they
//! are; that is logged once per outage rather than every round, and counted in
//! `ringmq_metadata_syncs_failed_total`.
//!
//! Blocking sockets on a plain thread, like the NameServer registration (both use
//! `crate::rpc`): one connection every few seconds needs no runtime, and a slow master never
//! delays a shard. A connection per round
//! rather than a kept one: nothing to reconnect or to keep alive across a master restart, for a
//! handshake every 10 s. Java slaves also copy the delay offsets and subscription-group configs;
//! RingMQ keeps neither table, so there is nothing to copy.

use std::{collections::BTreeMap, fmt, io, sync::Arc, thread::JoinHandle, time::Duration};

use ringmq_protocol::{
    BodyError, RequestCode, ResponseCode,
    body::{
        self, ConsumerOffsetTable as ConsumerOffsetBody, TopicConfig, TopicConfigSerializeWrapper,
    },
    header::UpdateConsumerOffsetRequestHeader,
    topic::{ShownTopic, TopicNameError, validate_topic},
};
use ringmq_storage::metadata::METADATA_PAYLOAD_BYTES_MAX;
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::{
    messages::ShardMessage,
    metadata::{self, ReplaceError},
    offsets,
    rpc::{RpcClient, RpcError, Timeouts},
    shared::BrokerShared,
};

/// Limits of the connection to the master: a master that stops answering fails the round, not
/// the thread. An answer (up to [`MAX_ANSWER_BYTES`]) must arrive whole within `answer`.
const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(3),
    write: Duration::from_secs(3),
    answer: Duration::from_secs(30),
};
/// The first round comes soon after start: the registration thread may already know the master.
const FIRST_ROUND_DELAY: Duration = Duration::from_millis(100);
/// How often to try again after a failed round (the master is down or restarting).
const RETRY_WHILE_FAILING: Duration = Duration::from_secs(1);
/// How often to look again while the master's address is unknown (it has not registered yet).
const ADDRESS_POLL: Duration = Duration::from_millis(500);
/// Longest wait for the topic writer or a shard to take or apply a sync.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer accepted: a master cannot persist a bigger table than its metadata files hold,
/// plus room for the frame's header.
const MAX_ANSWER_BYTES: usize = METADATA_PAYLOAD_BYTES_MAX + (1 << 20);

/// The running sync thread (slaves only).
#[derive(Debug)]
pub(crate) struct MetadataSync {
    /// Dropped to wake the thread out of its wait between rounds and end it.
    stop: Option<flume::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MetadataSync {
    pub(crate) fn start(shared: Arc<BrokerShared>) -> io::Result<Self> {
        let (stop, stopped) = flume::bounded(1);
        let thread = std::thread::Builder::new()
            .name("metadata-sync".into())
            .spawn(move || run(&shared, &stopped))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Ends the thread and waits for it: at once when it is between rounds, otherwise after the
    /// step in progress (at worst one I/O timeout).
    pub(crate) fn join(mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Why a round changed nothing.
#[derive(Debug, Error)]
enum SyncError {
    /// The master cannot be reached.
    #[error(transparent)]
    Connect(RpcError),
    #[error("{code}: {source}")]
    Rpc {
        code: RequestCode,
        #[source]
        source: RpcError,
    },
    #[error("{code} refused: {answered}{}", Remark(.remark.as_deref()))]
    Refused {
        code: RequestCode,
        answered: ResponseCode,
        remark: Option<String>,
    },
    #[error("{code}: {source}")]
    Body {
        code: RequestCode,
        #[source]
        source: BodyError,
    },
    #[error("the master's topic table key {} holds the config of topic {}", ShownTopic(.key), ShownTopic(.name))]
    KeyMismatch { key: String, name: String },
    #[error("the master's topic {}: {source}", ShownTopic(.key))]
    InvalidTopic {
        key: String,
        #[source]
        source: TopicNameError,
    },
    #[error(transparent)]
    Topics(#[from] ReplaceError),
    #[error("shard {0} did not give the offsets committed to it")]
    CommitsNotCollected(usize),
    #[error("shard {0} did not take the master's offsets")]
    OffsetsNotTaken(usize),
    #[error("shard {0} did not apply the master's offsets")]
    OffsetsNotApplied(usize),
}

/// A refusal's remark as ` (remark)`, or nothing when there is none.
struct Remark<'a>(Option<&'a str>);

impl fmt::Display for Remark<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(remark) if !remark.is_empty() => write!(f, " ({remark})"),
            _ => Ok(()),
        }
    }
}

/// What one successful round did.
#[derive(Debug)]
struct Synced {
    topics: usize,
    offsets_changed: usize,
    /// Offsets consumers committed to this slave that the master took.
    handed: usize,
}

fn run(shared: &BrokerShared, stop: &flume::Receiver<()>) {
    let interval = Duration::from_millis(shared.config.metadata_sync_interval_ms);
    let mut wait = FIRST_ROUND_DELAY.min(interval);
    // Whether the last round failed: an outage is logged when it starts and when it ends.
    let mut failing = false;
    loop {
        match stop.recv_timeout(wait) {
            Err(flume::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(flume::RecvTimeoutError::Disconnected) => return,
        }
        if shared.stopping() {
            return;
        }
        let Some(master) = shared.master.remoting_addr() else {
            wait = ADDRESS_POLL.min(interval);
            continue;
        };
        wait = interval;
        match sync_once(shared, &master) {
            Ok(synced) => {
                shared.metrics.metadata_syncs_ok_total.inc();
                if failing {
                    tracing::info!(%master, "metadata sync from the master works again");
                    failing = false;
                }
                if synced.handed > 0 {
                    tracing::info!(
                        %master,
                        offsets = synced.handed,
                        "handed the offsets consumers committed here to the master"
                    );
                }
                tracing::debug!(
                    %master,
                    topics = synced.topics,
                    offsets_changed = synced.offsets_changed,
                    "metadata synced from the master"
                );
            }
            Err(_) if shared.stopping() => return,
            Err(reason) => {
                shared.metrics.metadata_syncs_failed_total.inc();
                // A master that comes back should get the commits made here while it was
                // away before consumers read its older offsets: look again soon.
                wait = RETRY_WHILE_FAILING.min(interval);
                if failing {
                    tracing::debug!(%master, %reason, "metadata sync failed again");
                } else {
                    tracing::warn!(
                        %master,
                        %reason,
                        "cannot sync topics and consumer offsets from the master; keeping the \
                         current ones and retrying every {wait:?}"
                    );
                    failing = true;
                }
            }
        }
    }
}

/// One round: fetch both tables, check them, then apply them.
fn sync_once(shared: &BrokerShared, master: &str) -> Result<Synced, SyncError> {
    let mut connection =
        RpcClient::connect(master, TIMEOUTS, MAX_ANSWER_BYTES).map_err(SyncError::Connect)?;
    let handed = hand_over_commits(shared, &mut connection)?;
    let topics: TopicConfigSerializeWrapper = fetch(
        &mut connection,
        RequestCode::GetAllTopicConfig,
        "TopicConfigSerializeWrapper",
    )?;
    let offsets: ConsumerOffsetBody = fetch(
        &mut connection,
        RequestCode::GetAllConsumerOffset,
        "ConsumerOffsetTable",
    )?;
    drop(connection);
    let configs = checked_topics(topics)?;
    let topic_count = configs.len();
    metadata::replace_all_blocking(shared, configs, APPLY_TIMEOUT)?;
    let handed_count = handed.offset_table.values().map(BTreeMap::len).sum();
    let offsets_changed = apply_offsets(shared, offsets, handed)?;
    Ok(Synced {
        topics: topic_count,
        offsets_changed,
        handed: handed_count,
    })
}

/// Hands the master every offset consumers committed to this slave that it has not taken yet,
/// each as UPDATE_CONSUMER_OFFSET with `onlyForward` (a newer commit the master took meanwhile
/// stays); returns what was handed over. A commit the master refuses is logged and counted as
/// handed, so one bad entry cannot stop every later sync.
fn hand_over_commits(
    shared: &BrokerShared,
    connection: &mut RpcClient,
) -> Result<ConsumerOffsetBody, SyncError> {
    let mut handed = ConsumerOffsetBody::default();
    for (shard, inbox) in shared.inboxes.iter().enumerate() {
        let (reply, answer) = flume::bounded(1);
        inbox
            .send_timeout(ShardMessage::CollectSlaveCommits { reply }, APPLY_TIMEOUT)
            .map_err(|_| SyncError::CommitsNotCollected(shard))?;
        let commits = answer
            .recv_timeout(APPLY_TIMEOUT)
            .map_err(|_| SyncError::CommitsNotCollected(shard))?;
        for (key, queues) in commits.offset_table {
            handed.offset_table.entry(key).or_default().extend(queues);
        }
    }
    let code = RequestCode::UpdateConsumerOffset;
    for (group, topic, queue_id, offset) in offsets::entries(&handed) {
        let header = UpdateConsumerOffsetRequestHeader {
            consumer_group: group,
            topic,
            queue_id,
            commit_offset: offset,
            only_forward: Some(true),
        };
        let answer = connection
            .request(code, &header, &[])
            .map_err(|source| SyncError::Rpc { code, source })?;
        if answer.response_code() != ResponseCode::Success {
            tracing::warn!(
                group,
                topic = %ShownTopic(topic),
                queue_id,
                offset,
                code = %answer.response_code(),
                "the master refused an offset committed here; dropped"
            );
        }
    }
    Ok(handed)
}

/// The master's topic configs, refused whole when one is not a valid topic (its key is not its
/// name, or RocketMQ's rules refuse the name): topic names become directory names in the store,
/// and a table half taken would delete the topics left out.
fn checked_topics(wrapper: TopicConfigSerializeWrapper) -> Result<Vec<TopicConfig>, SyncError> {
    wrapper
        .topic_config_table
        .into_iter()
        .map(|(key, config)| {
            if key != config.topic_name {
                return Err(SyncError::KeyMismatch {
                    key,
                    name: config.topic_name,
                });
            }
            if let Err(source) = validate_topic(&key) {
                return Err(SyncError::InvalidTopic { key, source });
            }
            Ok(config)
        })
        .collect()
}

/// Hands the master's offsets, and the commits the master took, to every shard (each takes the
/// queues it owns) and waits for all; returns how many offsets changed.
fn apply_offsets(
    shared: &BrokerShared,
    offsets: ConsumerOffsetBody,
    handed: ConsumerOffsetBody,
) -> Result<usize, SyncError> {
    let offsets = Arc::new(offsets);
    let handed = Arc::new(handed);
    let mut answers = Vec::with_capacity(shared.shard_count());
    for (shard, inbox) in shared.inboxes.iter().enumerate() {
        let (reply, answer) = flume::bounded(1);
        let message = ShardMessage::ApplyMasterOffsets {
            offsets: Arc::clone(&offsets),
            handed: Arc::clone(&handed),
            reply,
        };
        inbox
            .send_timeout(message, APPLY_TIMEOUT)
            .map_err(|_| SyncError::OffsetsNotTaken(shard))?;
        answers.push((shard, answer));
    }
    let mut changed = 0;
    for (shard, answer) in answers {
        changed += answer
            .recv_timeout(APPLY_TIMEOUT)
            .map_err(|_| SyncError::OffsetsNotApplied(shard))?;
    }
    Ok(changed)
}

/// Sends a request without header or body and decodes the body of its SUCCESS answer.
fn fetch<T: DeserializeOwned>(
    connection: &mut RpcClient,
    code: RequestCode,
    body_name: &'static str,
) -> Result<T, SyncError> {
    let answer = connection
        .request(code, &(), &[])
        .map_err(|source| SyncError::Rpc { code, source })?;
    let answered = answer.response_code();
    if answered != ResponseCode::Success {
        return Err(SyncError::Refused {
            code,
            answered,
            remark: answer.remark,
        });
    }
    body::decode(&answer.body, body_name).map_err(|source| SyncError::Body { code, source })
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, net::TcpListener};

    use ringmq_protocol::{CommandHead, blocking::Connection, body::DataVersion};

    use super::*;

    fn topic(name: &str) -> TopicConfig {
        TopicConfig {
            topic_name: name.to_owned(),
            read_queue_nums: 4,
            write_queue_nums: 4,
            perm: 6,
            ..TopicConfig::default()
        }
    }

    fn wrapper(entries: &[(&str, TopicConfig)]) -> TopicConfigSerializeWrapper {
        TopicConfigSerializeWrapper {
            data_version: DataVersion::default(),
            topic_config_table: entries
                .iter()
                .map(|(key, config)| ((*key).to_owned(), config.clone()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn a_valid_master_table_is_taken_whole() {
        let configs = checked_topics(wrapper(&[
            ("Orders", topic("Orders")),
            ("%RETRY%billing", topic("%RETRY%billing")),
        ]))
        .unwrap();
        let names: Vec<&str> = configs.iter().map(|c| c.topic_name.as_str()).collect();
        assert_eq!(names, ["%RETRY%billing", "Orders"]);
    }

    #[test]
    fn one_bad_topic_refuses_the_whole_table() {
        let mismatched = checked_topics(wrapper(&[
            ("Orders", topic("Orders")),
            ("Alias", topic("Other")),
        ]))
        .unwrap_err()
        .to_string();
        assert!(mismatched.contains("\"Alias\""), "{mismatched}");
        let traversal = checked_topics(wrapper(&[("../etc", topic("../etc"))]))
            .unwrap_err()
            .to_string();
        assert!(traversal.contains("../etc"), "{traversal}");
    }

    /// A one-connection fake master: answers each request with what `answer` returns for its
    /// code (response code and body), then closes when the client does.
    fn fake_master(
        answer: impl Fn(RequestCode) -> Option<(ResponseCode, Vec<u8>)> + Send + 'static,
    ) -> (String, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let thread = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut peer = Connection::from_stream(stream).unwrap();
            while let Ok(request) = peer.read_frame(Duration::from_secs(10)) {
                // `None`: hang up instead of answering.
                let Some((code, body)) = answer(request.request_code()) else {
                    return;
                };
                let head = CommandHead::response_to(&request, code);
                peer.send_frame(&head, &(), &body).unwrap();
            }
        });
        (addr, thread)
    }

    #[test]
    fn fetch_decodes_both_tables_including_unquoted_queue_ids() {
        let (addr, master) = fake_master(|code| match code {
            RequestCode::GetAllTopicConfig => Some((
                ResponseCode::Success,
                body::to_vec(&wrapper(&[("Orders", topic("Orders"))])),
            )),
            // As a Java master writes it: fastjson leaves integer map keys unquoted.
            RequestCode::GetAllConsumerOffset => Some((
                ResponseCode::Success,
                br#"{"offsetTable":{"Orders@billing":{0:5,1:7}}}"#.to_vec(),
            )),
            _ => Some((ResponseCode::RequestCodeNotSupported, Vec::new())),
        });
        let mut connection = RpcClient::connect(&addr, TIMEOUTS, MAX_ANSWER_BYTES).unwrap();
        let topics: TopicConfigSerializeWrapper = fetch(
            &mut connection,
            RequestCode::GetAllTopicConfig,
            "TopicConfigSerializeWrapper",
        )
        .unwrap();
        assert_eq!(topics.topic_config_table["Orders"], topic("Orders"));
        let offsets: ConsumerOffsetBody = fetch(
            &mut connection,
            RequestCode::GetAllConsumerOffset,
            "ConsumerOffsetTable",
        )
        .unwrap();
        assert_eq!(
            offsets.offset_table["Orders@billing"],
            BTreeMap::from([(0, 5), (1, 7)])
        );
        drop(connection);
        master.join().unwrap();
    }

    #[test]
    fn refusals_bad_json_and_hang_ups_are_errors_naming_the_request() {
        let (addr, master) = fake_master(|code| match code {
            RequestCode::GetAllTopicConfig => Some((ResponseCode::SystemError, Vec::new())),
            RequestCode::GetAllConsumerOffset => {
                Some((ResponseCode::Success, b"{\"offsetTable\":[".to_vec()))
            }
            _ => None,
        });
        let mut connection = RpcClient::connect(&addr, TIMEOUTS, MAX_ANSWER_BYTES).unwrap();
        let refused = fetch::<TopicConfigSerializeWrapper>(
            &mut connection,
            RequestCode::GetAllTopicConfig,
            "TopicConfigSerializeWrapper",
        )
        .unwrap_err()
        .to_string();
        assert!(
            refused.starts_with("GET_ALL_TOPIC_CONFIG")
                && refused.ends_with("refused: SYSTEM_ERROR(1)"),
            "{refused}"
        );
        let bad_json = fetch::<ConsumerOffsetBody>(
            &mut connection,
            RequestCode::GetAllConsumerOffset,
            "ConsumerOffsetTable",
        )
        .unwrap_err()
        .to_string();
        assert!(bad_json.contains("GET_ALL_CONSUMER_OFFSET"), "{bad_json}");
        let hung_up = fetch::<ConsumerOffsetBody>(
            &mut connection,
            RequestCode::GetBrokerRuntimeInfo,
            "KvTable",
        )
        .unwrap_err()
        .to_string();
        assert!(hung_up.contains("closed"), "{hung_up}");
        master.join().unwrap();
    }

    #[test]
    fn a_master_that_is_down_is_an_error() {
        let addr = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let refused = RpcClient::connect(&addr, TIMEOUTS, MAX_ANSWER_BYTES)
            .map_err(SyncError::Connect)
            .unwrap_err()
            .to_string();
        assert!(refused.starts_with("cannot connect to"), "{refused}");
    }
}
