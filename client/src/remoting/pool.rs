//! One connection per server address, reopened on demand with exponential backoff.
//!
//! A caller asks the pool for an address; a live connection is shared, a failed one is replaced
//! by a fresh connect. After a connect fails the address is in backoff: requests to it fail at
//! once (so a producer moves to another broker instead of waiting) until the backoff ends, and
//! each further failure doubles it up to a ceiling. A successful connect resets it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use ringmq_protocol::{Command, EncodeExt, RequestCode};

use super::connection::{Connection, ConnectionOptions};
use crate::error::{ClientError, Result};

/// Reconnect backoff bounds.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Wait after the first failed connect.
    pub initial: Duration,
    /// Longest wait between attempts.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// Wait after `failures` consecutive failed connects (`failures` >= 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        self.initial.saturating_mul(1 << doublings).min(self.max)
    }
}

/// A connect in progress that other callers for the same address wait on.
#[derive(Debug, Default)]
struct Connecting {
    done: Cell<bool>,
    wakers: RefCell<Vec<Waker>>,
}

impl Connecting {
    fn finish(&self) {
        self.done.set(true);
        for waker in self.wakers.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    async fn wait(&self) {
        poll_fn(|cx| {
            if self.done.get() {
                Poll::Ready(())
            } else {
                self.wakers.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }
}

/// Ends a connect attempt however its future ends (completion or cancellation): the address's
/// `Connecting` entry is removed unless the attempt replaced it, and the waiters are woken.
struct ConnectingGuard<'a> {
    pool: &'a ConnectionPool,
    addr: &'a str,
    connecting: Rc<Connecting>,
}

impl Drop for ConnectingGuard<'_> {
    fn drop(&mut self) {
        let mut entries = self.pool.entries.borrow_mut();
        if let Some(Entry::Connecting(current)) = entries.get(self.addr)
            && Rc::ptr_eq(current, &self.connecting)
        {
            entries.remove(self.addr);
        }
        drop(entries);
        self.connecting.finish();
    }
}

#[derive(Debug)]
enum Entry {
    Live(Rc<Connection>),
    /// Another task is connecting; wait for it rather than open a second socket.
    Connecting(Rc<Connecting>),
    BackingOff {
        retry_at: Instant,
        failures: u32,
        reason: String,
    },
}

/// The connections of one runtime thread, by `host:port`.
#[derive(Debug)]
pub struct ConnectionPool {
    options: ConnectionOptions,
    backoff: Backoff,
    entries: RefCell<HashMap<String, Entry>>,
}

impl ConnectionPool {
    /// An empty pool whose connections use `options`.
    pub fn new(options: ConnectionOptions, backoff: Backoff) -> Self {
        Self {
            options,
            backoff,
            entries: RefCell::new(HashMap::new()),
        }
    }

    /// The live connection to `addr`, connecting first when there is none. Concurrent callers
    /// for one address share one connect.
    pub async fn get(&self, addr: &str) -> Result<Rc<Connection>> {
        loop {
            let failures = match self.entries.borrow().get(addr) {
                Some(Entry::Live(connection)) if !connection.is_closed() => {
                    return Ok(Rc::clone(connection));
                }
                Some(Entry::Connecting(connecting)) => Err(Rc::clone(connecting)),
                Some(Entry::BackingOff {
                    retry_at,
                    failures,
                    reason,
                }) => {
                    if Instant::now() < *retry_at {
                        return Err(ClientError::Connect {
                            addr: addr.to_owned(),
                            reason: format!("{reason} (reconnect backoff, {failures} failures)"),
                        });
                    }
                    Ok(*failures)
                }
                _ => Ok(0),
            };
            match failures {
                Ok(failures) => return self.connect(addr, failures).await,
                // The other attempt ended (connected, failed or was cancelled): look again.
                Err(connecting) => connecting.wait().await,
            }
        }
    }

    /// Opens the connection to `addr` after `failures` consecutive failed connects.
    async fn connect(&self, addr: &str, failures: u32) -> Result<Rc<Connection>> {
        let connecting = Rc::new(Connecting::default());
        self.entries
            .borrow_mut()
            .insert(addr.to_owned(), Entry::Connecting(Rc::clone(&connecting)));
        let _guard = ConnectingGuard {
            pool: self,
            addr,
            connecting,
        };
        match Connection::connect(addr, &self.options).await {
            Ok(connection) => {
                self.entries
                    .borrow_mut()
                    .insert(addr.to_owned(), Entry::Live(Rc::clone(&connection)));
                Ok(connection)
            }
            Err(error) => {
                let failures = failures + 1;
                let delay = self.backoff.delay(failures);
                tracing::debug!(addr, %error, failures, ?delay, "connect failed");
                let reason = match &error {
                    ClientError::Connect { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                self.entries.borrow_mut().insert(
                    addr.to_owned(),
                    Entry::BackingOff {
                        retry_at: Instant::now() + delay,
                        failures,
                        reason,
                    },
                );
                Err(error)
            }
        }
    }

    /// Sends one request to `addr` and waits up to `timeout` for its answer.
    pub async fn request<E: EncodeExt>(
        &self,
        addr: &str,
        code: RequestCode,
        header: &E,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Command> {
        let connection = self.get(addr).await?;
        connection.request(code, header, body, timeout).await
    }

    /// Sends a oneway request to `addr`.
    pub async fn oneway<E: EncodeExt>(
        &self,
        addr: &str,
        code: RequestCode,
        header: &E,
        body: &[u8],
    ) -> Result<()> {
        self.get(addr).await?.oneway(code, header, body)
    }

    /// Closes the connection to `addr`, if any (a server known to be gone).
    pub fn close(&self, addr: &str, reason: &str) {
        if let Some(Entry::Live(connection)) = self.entries.borrow_mut().remove(addr) {
            connection.close(reason);
        }
    }

    /// Closes every connection.
    pub fn close_all(&self, reason: &str) {
        let entries = std::mem::take(&mut *self.entries.borrow_mut());
        for entry in entries.into_values() {
            if let Entry::Live(connection) = entry {
                connection.close(reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_callers_share_one_connect() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&accepted);
        std::thread::spawn(move || {
            let mut open = Vec::new();
            for stream in listener.incoming().take(8).flatten() {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                open.push(stream);
            }
        });
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let pool = Rc::new(ConnectionPool::new(
                ConnectionOptions::default(),
                Backoff::default(),
            ));
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let (pool, addr) = (Rc::clone(&pool), addr.clone());
                    compio::runtime::spawn(async move { pool.get(&addr).await })
                })
                .collect();
            let mut connections = Vec::new();
            for task in tasks {
                connections.push(task.await.unwrap().unwrap());
            }
            assert!(connections.iter().all(|c| Rc::ptr_eq(c, &connections[0])));
            // A second connect would have been accepted by now.
            compio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
            pool.close_all("test over");
        });
    }

    #[test]
    fn backoff_doubles_to_its_ceiling() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(1), Duration::from_millis(100));
        assert_eq!(backoff.delay(2), Duration::from_millis(200));
        assert_eq!(backoff.delay(4), Duration::from_millis(800));
        assert_eq!(backoff.delay(40), Duration::from_secs(5));
    }
}
