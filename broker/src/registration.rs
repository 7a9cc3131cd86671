//! Registration with every NameServer (docs/protocol.md §3.3, §7.1): a side thread that sends
//! REGISTER_BROKER at start, every `registerNameServerPeriod` (30 s) and as soon as the topic
//! table changes, keeps each connection open (a NameServer drops a broker whose connection
//! closes), and sends UNREGISTER_BROKER on shutdown.
//!
//! Blocking sockets on a plain thread: a few requests a minute do not need a runtime, and a
//! slow or dead NameServer never delays a shard.

use std::{sync::Arc, thread::JoinHandle, time::Duration};

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
}

impl Namesrv {
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

fn run(shared: &BrokerShared, addrs: Vec<String>, wake: &flume::Receiver<()>) {
    let mut namesrvs: Vec<Namesrv> = addrs
        .into_iter()
        .map(|addr| Namesrv { addr, client: None })
        .collect();
    let interval = Duration::from_millis(shared.config.register_interval_ms);
    let config = &shared.config;
    let broker_addr = shared.store_host.to_string();
    let ha_addr = format!(
        "{}:{}",
        shared.store_host.ip(),
        shared.store_host.port().wrapping_add(1)
    );
    loop {
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
        for namesrv in &mut namesrvs {
            let result = namesrv.call(RequestCode::RegisterBroker, &header, &body);
            match result {
                Ok(answer) if answer.response_code() == ResponseCode::Success => {
                    shared.metrics.namesrv_registrations_ok_total.inc();
                    tracing::debug!(namesrv = %namesrv.addr, "registered");
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
                    tracing::warn!(namesrv = %namesrv.addr, %err, "registration failed; will retry");
                }
            }
        }
        if shared.stopping() {
            break;
        }
        match wake.recv_timeout(interval) {
            Ok(()) | Err(flume::RecvTimeoutError::Timeout) => {
                // Coalesce a burst of topic changes into one registration.
                while wake.try_recv().is_ok() {}
            }
            Err(flume::RecvTimeoutError::Disconnected) => break,
        }
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
