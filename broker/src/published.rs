//! A value written rarely by one place and read on every request by every shard.
//!
//! The writer replaces the whole value (an `Arc`) under a mutex and bumps a version; each shard
//! keeps its own [`LocalView`] and re-reads the `Arc` only when the version moved. The steady
//! state of a read is one atomic load and a borrow of the shard's own copy: no lock
//! and no shared cache line written on the data path.

use std::{
    cell::{Cell, RefCell},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

/// The shared side: the current value and its version.
#[derive(Debug)]
pub(crate) struct Published<T> {
    value: Mutex<Arc<T>>,
    version: AtomicU64,
}

impl<T> Published<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            value: Mutex::new(Arc::new(value)),
            version: AtomicU64::new(1),
        }
    }

    /// The current value.
    pub(crate) fn load(&self) -> Arc<T> {
        Arc::clone(&self.value.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replaces the value. The version is bumped after the value is in place (Release), so a
    /// reader that sees the new version (Acquire) then loads the new value.
    pub(crate) fn publish(&self, value: T) {
        *self.value.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(value);
        self.version.fetch_add(1, Ordering::Release);
    }

    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
}

/// One shard's copy of a [`Published`] value.
#[derive(Debug)]
pub(crate) struct LocalView<T> {
    version: Cell<u64>,
    value: RefCell<Arc<T>>,
}

impl<T> LocalView<T> {
    pub(crate) fn new(source: &Published<T>) -> Self {
        let version = source.version();
        Self {
            version: Cell::new(version),
            value: RefCell::new(source.load()),
        }
    }

    fn refresh(&self, source: &Published<T>) {
        let version = source.version();
        if version != self.version.get() {
            *self.value.borrow_mut() = source.load();
            self.version.set(version);
        }
    }

    /// Runs `read` on the newest value (refreshed from `source` if it changed since the last
    /// call). Touches no shared reference count: the hot path.
    pub(crate) fn with<R>(&self, source: &Published<T>, read: impl FnOnce(&T) -> R) -> R {
        self.refresh(source);
        read(&self.value.borrow())
    }

    /// The newest value, owned (for a caller that holds it across an `.await`).
    pub(crate) fn get(&self, source: &Published<T>) -> Arc<T> {
        self.refresh(source);
        Arc::clone(&self.value.borrow())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_follows_publications() {
        let published = Published::new(1);
        let view = LocalView::new(&published);
        assert_eq!(*view.get(&published), 1);
        published.publish(2);
        assert_eq!(*view.get(&published), 2);
        assert_eq!(view.with(&published, |v| *v), 2);
    }
}
