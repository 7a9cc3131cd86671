//! Registration with every NameServer (docs/protocol.md §3.3, §7.1): a side thread that sends
//! REGISTER_BROKER at start, every `registerNameServerPeriod` (30 s) and as soon as the topic
//! table changes, keeps each connection open (a NameServer drops a broker whose connection
//! closes), and sends UNREGISTER_BROKER on shutdown.
//!
//! Blocking sockets on a plain thread: a few requests a minute do not need a runtime, and a
//! slow or dead NameServer never delays a shard.

use std::{
    io::{Read, Write},
    net::{TcpStream, ToSocketAddrs},
    sync::Arc,
    thread::JoinHandle,
    time::Duration,
};

use bytes::BytesMut;
use ringmq_protocol::{
    Command, CommandHead, FrameCodec, RequestCode, ResponseCode, SerializeType,
    body::{self, RegisterBrokerBody},
    encode_frame,
    header::{
        RegisterBrokerRequestHeader, RegisterBrokerResponseHeader, UnregisterBrokerRequestHeader,
    },
    message::body_crc,
};

use crate::shared::BrokerShared;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// One NameServer and the connection to it.
struct Namesrv {
    addr: String,
    stream: Option<TcpStream>,
    input: BytesMut,
    opaque: i32,
}

impl Namesrv {
    fn connect(&mut self) -> std::io::Result<&mut TcpStream> {
        if self.stream.is_none() {
            let addr = self
                .addr
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| std::io::Error::other("address does not resolve"))?;
            let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
            stream.set_read_timeout(Some(IO_TIMEOUT))?;
            stream.set_write_timeout(Some(IO_TIMEOUT))?;
            let _ = stream.set_nodelay(true);
            self.input.clear();
            self.stream = Some(stream);
        }
        self.stream
            .as_mut()
            .ok_or_else(|| std::io::Error::other("not connected"))
    }

    /// Sends one request and waits for its answer; any failure drops the connection so the
    /// next attempt reconnects.
    fn call(&mut self, frame_of: impl FnOnce(i32) -> BytesMut) -> Result<Command, String> {
        self.opaque = self.opaque.wrapping_add(1);
        let opaque = self.opaque;
        let result = self.exchange(&frame_of(opaque), opaque);
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    fn exchange(&mut self, frame: &BytesMut, opaque: i32) -> Result<Command, String> {
        let stream = self.connect().map_err(|e| format!("connect: {e}"))?;
        stream.write_all(frame).map_err(|e| format!("write: {e}"))?;
        let codec = FrameCodec::default();
        let mut chunk = [0u8; 4096];
        loop {
            match codec.decode(&mut self.input) {
                Ok(Some(command)) if command.is_response() && command.opaque == opaque => {
                    return Ok(command);
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    let stream = self.stream.as_mut().ok_or("not connected")?;
                    let read = stream.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
                    if read == 0 {
                        return Err("connection closed".into());
                    }
                    self.input.extend_from_slice(&chunk[..read]);
                }
                Err(err) => return Err(format!("bad answer: {err}")),
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

fn run(shared: &BrokerShared, addrs: Vec<String>, wake: &flume::Receiver<()>) {
    let mut namesrvs: Vec<Namesrv> = addrs
        .into_iter()
        .map(|addr| Namesrv {
            addr,
            stream: None,
            input: BytesMut::new(),
            opaque: 0,
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
            let result = namesrv.call(|opaque| {
                let mut frame = BytesMut::with_capacity(body.len() + 512);
                let head =
                    CommandHead::request(RequestCode::RegisterBroker, opaque, SerializeType::Json);
                encode_frame(&head, &header, &body, &mut frame);
                frame
            });
            match result {
                Ok(answer) if answer.code == ResponseCode::Success.as_i32() => {
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
                    tracing::warn!(namesrv = %namesrv.addr, code = answer.code, remark = answer.remark.as_deref().unwrap_or(""), "registration refused");
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
        if namesrv.stream.is_none() {
            continue;
        }
        let result = namesrv.call(|opaque| {
            let mut frame = BytesMut::with_capacity(512);
            let head =
                CommandHead::request(RequestCode::UnregisterBroker, opaque, SerializeType::Json);
            encode_frame(&head, &header, &[], &mut frame);
            frame
        });
        if let Err(err) = result {
            tracing::warn!(namesrv = %namesrv.addr, %err, "unregister failed");
        }
    }
}
