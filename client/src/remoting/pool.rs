//! One connection per server address, reopened on demand with exponential backoff.
//!
//! A caller asks the pool for an address; a live connection is shared, a failed one is replaced
//! by a fresh connect. After a connect fails the address is in backoff: requests to it fail at
//! once (so a producer moves to another broker instead of waiting) until the backoff ends, and
//! each further failure doubles it up to a ceiling. A successful connect resets it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
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

#[derive(Debug)]
enum Entry {
    Live(Rc<Connection>),
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

    /// The live connection to `addr`, connecting first when there is none.
    pub async fn get(&self, addr: &str) -> Result<Rc<Connection>> {
        let failures = match self.entries.borrow().get(addr) {
            Some(Entry::Live(connection)) if !connection.is_closed() => {
                return Ok(Rc::clone(connection));
            }
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
                *failures
            }
            _ => 0,
        };
        match Connection::connect(addr, &self.options).await {
            Ok(connection) => {
                let mut entries = self.entries.borrow_mut();
                // Two tasks may have connected at once: keep the first live one.
                if let Some(Entry::Live(existing)) = entries.get(addr)
                    && !existing.is_closed()
                {
                    connection.close("duplicate connection");
                    return Ok(Rc::clone(existing));
                }
                entries.insert(addr.to_owned(), Entry::Live(Rc::clone(&connection)));
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
    fn backoff_doubles_to_its_ceiling() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(1), Duration::from_millis(100));
        assert_eq!(backoff.delay(2), Duration::from_millis(200));
        assert_eq!(backoff.delay(4), Duration::from_millis(800));
        assert_eq!(backoff.delay(40), Duration::from_secs(5));
    }
}
