//! The NameServer as a network service: worker threads (each a compio runtime) accepting on one
//! listener, a scanner thread expiring silent brokers, and the route snapshot that lets route
//! queries run without waiting for registrations.

use std::{
    io,
    net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream},
    sync::Arc,
    thread::JoinHandle,
    time::Duration,
};

use bytes::BytesMut;
use compio::{
    BufResult,
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use ringmq_protocol::FrameCodec;

use crate::registry::ConnectionId;
pub use crate::state::NamesrvConfig;
use crate::state::Shared;

/// A running NameServer. Dropping it (or [`NameServer::shutdown`]) stops it.
#[derive(Debug)]
pub struct NameServer {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
}

impl NameServer {
    /// Binds the listener and starts the worker and scanner threads.
    pub fn start(config: NamesrvConfig) -> io::Result<Self> {
        let listener = StdListener::bind(config.listen)?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
        let mut threads = Vec::new();
        for worker in 0..shared.config.workers.max(1) {
            let listener = listener.try_clone()?;
            let shared = Arc::clone(&shared);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("namesrv-{worker}"))
                    .spawn(move || run_worker(&shared, listener))?,
            );
        }
        let scanner = Arc::clone(&shared);
        threads.push(
            std::thread::Builder::new()
                .name("namesrv-scan".into())
                .spawn(move || {
                    while !scanner.is_stopping() {
                        std::thread::park_timeout(scanner.config.scan_interval);
                        if scanner.is_stopping() {
                            break;
                        }
                        scanner.scan();
                    }
                })?,
        );
        tracing::info!(%local_addr, "NameServer listening");
        Ok(Self {
            shared,
            local_addr,
            threads,
        })
    }

    /// The address it listens on (with the real port when started on port 0).
    pub const fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes connections and joins the threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.shared.request_stop() {
            return;
        }
        // Wake each accept loop with a connection it will see the stop flag on.
        let wake_addr = match self.local_addr {
            SocketAddr::V4(v4) if v4.ip().is_unspecified() => {
                SocketAddr::from(([127, 0, 0, 1], v4.port()))
            }
            addr => addr,
        };
        for _ in 0..self.shared.config.workers.max(1) {
            let _ = StdStream::connect_timeout(&wake_addr, Duration::from_secs(1));
        }
        for thread in self.threads.drain(..) {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

impl Drop for NameServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run_worker(shared: &Arc<Shared>, listener: StdListener) {
    let runtime = match compio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(%err, "cannot start a NameServer worker runtime");
            return;
        }
    };
    runtime.block_on(async {
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(err) => {
                tracing::error!(%err, "cannot register the NameServer listener");
                return;
            }
        };
        loop {
            let accepted = listener.accept().await;
            if shared.is_stopping() {
                return;
            }
            match accepted {
                Ok((stream, peer)) => {
                    let connection = shared.next_connection_id();
                    let shared = Arc::clone(shared);
                    compio::runtime::spawn(async move {
                        serve(&shared, stream, peer, connection).await;
                        shared.connection_closed(connection);
                    })
                    .detach();
                }
                Err(err) => {
                    // EMFILE and friends: keep serving the connections we have.
                    tracing::warn!(%err, "accept failed");
                    compio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
}

/// Serves one connection: reads frames, answers each, writes the answers of a read together.
async fn serve(shared: &Shared, mut stream: TcpStream, peer: SocketAddr, connection: ConnectionId) {
    let _ = stream.set_nodelay(true);
    let codec = FrameCodec::new(shared.config.max_frame_bytes);
    let mut input = BytesMut::with_capacity(64 << 10);
    let mut output = BytesMut::with_capacity(64 << 10);
    loop {
        if input.capacity() - input.len() < 16 << 10 {
            input.reserve(64 << 10);
        }
        let BufResult(read, buf) = stream.append(input).await;
        input = buf;
        match read {
            Ok(0) => return,
            Ok(_) => {}
            Err(err) => {
                tracing::debug!(%peer, %err, "read failed; closing");
                return;
            }
        }
        loop {
            match codec.decode(&mut input) {
                Ok(Some(command)) => {
                    crate::service::handle(shared, &command, connection, &mut output);
                }
                Ok(None) => break,
                Err(err) => {
                    // A frame we cannot read: answer nothing more on this connection.
                    tracing::warn!(%peer, %err, "malformed request; closing the connection");
                    flush(&mut stream, &mut output).await;
                    return;
                }
            }
        }
        if !flush(&mut stream, &mut output).await {
            return;
        }
    }
}

async fn flush(stream: &mut TcpStream, output: &mut BytesMut) -> bool {
    if output.is_empty() {
        return true;
    }
    let BufResult(written, buf) = stream.write_all(std::mem::take(output)).await;
    *output = buf;
    output.clear();
    written.is_ok()
}
