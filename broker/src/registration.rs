//! Registration with every NameServer (docs/protocol.md §3.3, §7.1): a side thread that sends
//! REGISTER_BROKER at start, every `registerNameServerPeriod` (30 s), as soon as the topic
//! table changes, and to a NameServer it lost as soon as that one answers again (checked every
//! second: a restarted NameServer would otherwise serve no route of this broker for up to a
//! period). It keeps each connection open (a NameServer drops a broker whose connection
//! closes), and sends UNREGISTER_BROKER on shutdown.
//!
//! Blocking sockets on a plain thread: a few requests a minute do not need a runtime, and a
//! slow or dead NameServer never delays a shard.

use std::{
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use ringmq_protocol::{
    Command, DEFAULT_MAX_FRAME_BYTES, EncodeExt, RequestCode, ResponseCode,
    body::{self, RegisterBrokerBody},
    header::{
        RegisterBrokerRequestHeader, RegisterBrokerResponseHeader, UnregisterBrokerRequestHeader,
    },
    message::body_crc,
};

use crate::{
    rpc::{RpcClient, RpcError, Timeouts},
    shared::BrokerShared,
};

const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(3),
    write: Duration::from_secs(5),
    answer: Duration::from_secs(5),
};

/// One NameServer and the connection to it (kept open: a NameServer drops a broker whose
/// connection closes).
struct Namesrv {
    addr: String,
    client: Option<RpcClient>,
    /// The last registration failed to reach it (for logging an outage once).
    failing: bool,
}

impl Namesrv {
    /// Whether this NameServer may not hold the registration: never reached, the last attempt
    /// failed (both leave no connection), or it closed the kept connection.
    fn lost(&mut self) -> bool {
        if self.client.as_ref().is_some_and(RpcClient::peer_closed) {
            self.client = None;
        }
        self.client.is_none()
    }

    /// Sends one request and waits for its answer, connecting first if needed; any failure
    /// drops the connection so the next attempt reconnects.
    fn call(
        &mut self,
        code: RequestCode,
        header: &impl EncodeExt,
        body: &[u8],
    ) -> Result<Command, RpcError> {
        let client = match &mut self.client {
            Some(client) => client,
            None => self.client.insert(RpcClient::connect(
                &self.addr,
                TIMEOUTS,
                DEFAULT_MAX_FRAME_BYTES,
            )?),
        };
        let result = client.request(code, header, body);
        if result.is_err() {
            self.client = None;
        }
        result
    }
}

/// One REGISTER_BROKER to one NameServer. A failure is logged once per outage (a lost
/// NameServer is retried every [`RECHECK`]), and the registration that ends it once too.
fn register(
    shared: &BrokerShared,
    namesrv: &mut Namesrv,
    header: &RegisterBrokerRequestHeader<'_>,
    body: &[u8],
) {
    let config = &shared.config;
    match namesrv.call(RequestCode::RegisterBroker, header, body) {
        Ok(answer) if answer.response_code() == ResponseCode::Success => {
            shared.metrics.namesrv_registrations_ok_total.inc();
            if std::mem::take(&mut namesrv.failing) {
                tracing::info!(namesrv = %namesrv.addr, "registered again");
            } else {
                tracing::debug!(namesrv = %namesrv.addr, "registered");
            }
            if config.broker_id != 0 {
                // A slave learns where its master is from the answer (§3.3).
                match answer.header::<RegisterBrokerResponseHeader<'_>>() {
                    Ok(reply) => {
                        shared.master.learn(reply.master_addr, reply.ha_server_addr);
                    }
                    Err(err) => {
                        tracing::warn!(namesrv = %namesrv.addr, %err, "bad registration answer");
                    }
                }
            }
        }
        Ok(answer) => {
            shared.metrics.namesrv_registrations_failed_total.inc();
            tracing::warn!(namesrv = %namesrv.addr, code = %answer.response_code(), remark = answer.remark.as_deref().unwrap_or(""), "registration refused");
        }
        Err(err) => {
            shared.metrics.namesrv_registrations_failed_total.inc();
            if !std::mem::replace(&mut namesrv.failing, true) {
                tracing::warn!(namesrv = %namesrv.addr, %err, "registration failed; retrying every second");
            }
        }
    }
}

/// The running registration thread.
#[derive(Debug)]
pub(crate) struct Registration {
    thread: Option<JoinHandle<()>>,
}

impl Registration {
    pub(crate) fn start(
        shared: Arc<BrokerShared>,
        namesrv_addrs: Vec<String>,
        wake: flume::Receiver<()>,
    ) -> std::io::Result<Self> {
        let thread = std::thread::Builder::new()
            .name("namesrv-register".into())
            .spawn(move || run(&shared, namesrv_addrs, &wake))?;
        Ok(Self {
            thread: Some(thread),
        })
    }

    /// Waits for the thread to unregister and end (the caller has set the stop flag and woken it).
    pub(crate) fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How often, between full rounds, the thread looks for NameServers it lost: a kept connection
/// the NameServer closed (it restarted, or dropped this broker) or one it could not reach. Such
/// a NameServer is registered with as soon as it answers again, not at the next full round, so a
/// restarted NameServer serves this broker's routes within about this long of its start.
const RECHECK: Duration = Duration::from_secs(1);

fn run(shared: &BrokerShared, addrs: Vec<String>, wake: &flume::Receiver<()>) {
    let mut namesrvs: Vec<Namesrv> = addrs
        .into_iter()
        .map(|addr| Namesrv {
            addr,
            client: None,
            failing: false,
        })
        .collect();
    let interval = Duration::from_millis(shared.config.register_interval_ms);
    let config = &shared.config;
    let broker_addr = shared.store_host.to_string();
    let ha_addr = format!(
        "{}:{}",
        shared.store_host.ip(),
        shared.store_host.port().wrapping_add(1)
    );
    let mut next_round = Instant::now();
    let mut topics_changed = false;
    loop {
        let now = Instant::now();
        let full_round = topics_changed || now >= next_round;
        if full_round {
            next_round = now + interval;
        }
        let due: Vec<usize> = (0..namesrvs.len())
            .filter(|&i| full_round || namesrvs[i].lost())
            .collect();
        if !due.is_empty() {
            let wrapper = shared.topics.load().to_wrapper();
            let body = body::to_vec(&RegisterBrokerBody {
                filter_server_list: Vec::new(),
                topic_config_serialize_wrapper: wrapper,
            });
            let header = RegisterBrokerRequestHeader {
                broker_name: &config.broker_name,
                broker_addr: &broker_addr,
                cluster_name: &config.cluster_name,
                ha_server_addr: &ha_addr,
                broker_id: config.broker_id,
                compressed: Some(false),
                body_crc32: Some(body_crc(&body)),
            };
            for i in due {
                register(shared, &mut namesrvs[i], &header, &body);
            }
        }
        if shared.stopping() {
            break;
        }
        let wait = next_round
            .saturating_duration_since(Instant::now())
            .min(RECHECK);
        topics_changed = match wake.recv_timeout(wait) {
            Ok(()) => {
                // Coalesce a burst of topic changes into one registration.
                while wake.try_recv().is_ok() {}
                true
            }
            Err(flume::RecvTimeoutError::Timeout) => false,
            Err(flume::RecvTimeoutError::Disconnected) => break,
        };
        if shared.stopping() {
            break;
        }
    }
    let header = UnregisterBrokerRequestHeader {
        broker_name: &config.broker_name,
        broker_addr: &broker_addr,
        cluster_name: &config.cluster_name,
        broker_id: config.broker_id,
    };
    for namesrv in &mut namesrvs {
        if namesrv.client.is_none() {
            continue;
        }
        if let Err(err) = namesrv.call(RequestCode::UnregisterBroker, &header, &[]) {
            tracing::warn!(namesrv = %namesrv.addr, %err, "unregister failed");
        }
    }
}
