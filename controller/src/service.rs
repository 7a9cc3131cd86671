//! Starting a controller: on the caller's tokio runtime ([`bind_and_start`], what the
//! `ringmq-controller` binary does), or on a thread of its own ([`EmbeddedController`], how a
//! NameServer runs one).

use std::{net::SocketAddr, sync::Arc};

use crate::{
    node::{Controller, ControllerConfig, StartError},
    server,
};

/// Binds this controller's own peer address, starts it, its server and its election watch on
/// the current tokio runtime; returns it with the address it listens on.
pub async fn bind_and_start(
    config: ControllerConfig,
) -> Result<(Arc<Controller>, SocketAddr), StartError> {
    let own = config
        .peers
        .get(&config.id)
        .cloned()
        .ok_or(StartError::NotAPeer(config.id))?;
    let listener = tokio::net::TcpListener::bind(&own)
        .await
        .map_err(|source| StartError::Listen {
            addr: own.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| StartError::Listen {
        addr: own.clone(),
        source,
    })?;
    let controller = Controller::start(config).await?;
    tokio::spawn(server::serve(Arc::clone(&controller), listener));
    tokio::spawn(Arc::clone(&controller).watch_masters());
    Ok((controller, local))
}

/// A controller on a thread of its own (with its own small tokio runtime), for a process that
/// is not on tokio: the NameServer embeds one this way.
#[derive(Debug)]
pub struct EmbeddedController {
    local_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EmbeddedController {
    /// Starts the controller and returns once it listens (or failed to start).
    pub fn start(config: ControllerConfig) -> Result<Self, StartError> {
        let (ready, started) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("controller".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("controller-rt")
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = ready.send(Err(StartError::Raft(format!("no runtime: {err}"))));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match bind_and_start(config).await {
                        Ok((controller, local)) => {
                            let _ = ready.send(Ok(local));
                            tokio::select! {
                                _ = stopped => {}
                                () = controller.stopped() => {
                                    tracing::error!("the embedded controller's Raft stopped (its storage failed?); it no longer takes part in elections");
                                }
                            }
                            controller.shutdown().await;
                        }
                        Err(err) => {
                            let _ = ready.send(Err(err));
                        }
                    }
                });
            })
            .map_err(|err| StartError::Raft(format!("no controller thread: {err}")))?;
        let local_addr = started
            .recv()
            .map_err(|_| StartError::Raft("the controller thread ended while starting".into()))??;
        Ok(Self {
            local_addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub const fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops Raft and ends the thread.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for EmbeddedController {
    fn drop(&mut self) {
        self.shut_down();
    }
}
