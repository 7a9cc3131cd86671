//! Where a slave's master is: `haMasterAddress` from the configuration when set, otherwise the
//! addresses a NameServer answers the slave's registration with (docs/protocol.md §3.3, §8.1).

use std::sync::{Mutex, PoisonError};

/// The master's addresses as last learned. Written by the registration thread, read by the
/// replication and metadata-sync threads (a few times a minute: a mutex is plenty).
#[derive(Debug, Default)]
pub(crate) struct MasterLocator {
    /// `haMasterAddress`: when set, NameServer answers do not override it.
    configured_ha: Option<String>,
    learned: Mutex<Learned>,
}

#[derive(Debug, Default, Clone)]
struct Learned {
    remoting: Option<String>,
    ha: Option<String>,
}

impl MasterLocator {
    pub(crate) fn new(configured_ha: Option<String>) -> Self {
        Self {
            configured_ha,
            learned: Mutex::default(),
        }
    }

    /// Records a NameServer's answer to this slave's registration (`masterAddr`, `haServerAddr`;
    /// either may be absent while the master is not registered).
    pub(crate) fn learn(&self, remoting: Option<&str>, ha: Option<&str>) {
        let clean = |addr: Option<&str>| {
            addr.map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
        };
        let mut learned = self.learned.lock().unwrap_or_else(PoisonError::into_inner);
        let (remoting, ha) = (clean(remoting), clean(ha));
        if learned.remoting != remoting || learned.ha != ha {
            tracing::info!(
                master = remoting.as_deref().unwrap_or("-"),
                ha = ha.as_deref().unwrap_or("-"),
                "master address from the NameServer"
            );
        }
        learned.remoting = remoting;
        learned.ha = ha;
    }

    /// The master's HA address (`host:listenPort+1`).
    pub(crate) fn ha_addr(&self) -> Option<String> {
        if let Some(configured) = &self.configured_ha {
            return Some(configured.clone());
        }
        self.learned().ha
    }

    /// The master's client (remoting) address: learned from a NameServer, else derived from
    /// `haMasterAddress` (its port minus one, as the master binds HA on `listenPort + 1`).
    pub(crate) fn remoting_addr(&self) -> Option<String> {
        if let Some(remoting) = self.learned().remoting {
            return Some(remoting);
        }
        let configured = self.configured_ha.as_deref()?;
        let (host, port) = configured.rsplit_once(':')?;
        let port: u16 = port.parse().ok()?;
        Some(format!("{host}:{}", port.checked_sub(1)?))
    }

    fn learned(&self) -> Learned {
        self.learned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_address_wins_and_gives_the_remoting_port() {
        let locator = MasterLocator::new(Some("127.0.0.1:10912".into()));
        locator.learn(Some("10.0.0.1:10911"), Some("10.0.0.1:10912"));
        assert_eq!(locator.ha_addr().as_deref(), Some("127.0.0.1:10912"));
        assert_eq!(locator.remoting_addr().as_deref(), Some("10.0.0.1:10911"));
        let locator = MasterLocator::new(Some("127.0.0.1:10912".into()));
        assert_eq!(locator.remoting_addr().as_deref(), Some("127.0.0.1:10911"));
    }

    #[test]
    fn learned_addresses_follow_the_namesrv() {
        let locator = MasterLocator::new(None);
        assert_eq!(locator.ha_addr(), None);
        locator.learn(Some("10.0.0.1:10911"), Some("10.0.0.1:10912"));
        assert_eq!(locator.ha_addr().as_deref(), Some("10.0.0.1:10912"));
        locator.learn(None, Some(" "));
        assert_eq!(locator.ha_addr(), None);
        assert_eq!(locator.remoting_addr(), None);
    }
}
