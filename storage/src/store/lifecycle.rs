//! Opening a store (recovery, then the background tasks) and closing it.

use super::MessageStore;
use crate::{StoreConfig, StoreError, io::Storage, recovery::recover};

impl<S: Storage> MessageStore<S> {
    /// Opens (or creates) the store in `config.dir`, recovers it (crate::recovery) and starts
    /// its background tasks on the current compio runtime: writer, flusher, checkpointer and
    /// retention. A first checkpoint is written before this returns.
    pub async fn open(storage: S, config: StoreConfig) -> Result<Self, StoreError> {
        let (log, queues) = recover(&storage, &config).await?;
        let store = Self::from_recovered(storage, config, log, queues);
        store.spawn_tasks();
        store.checkpoint(false).await?;
        Ok(store)
    }

    fn spawn_tasks(&self) {
        let mut tasks = self.inner.tasks.borrow_mut();
        tasks.push(compio::runtime::spawn(self.clone().run_writer()));
        tasks.push(compio::runtime::spawn(self.clone().run_flusher()));
        tasks.push(compio::runtime::spawn(self.clone().run_checkpointer()));
        tasks.push(compio::runtime::spawn(self.clone().run_retention()));
    }

    /// Stops the background tasks after making everything durable and writing a clean
    /// checkpoint. Appends after this fail with [`StoreError::Closed`].
    pub async fn close(self) -> Result<(), StoreError> {
        let result = self.checkpoint(true).await;
        self.inner.state.borrow_mut().set_closing();
        self.inner.stop.notify();
        self.inner.work.notify();
        self.inner.flush_request.notify();
        self.inner.progress.notify();
        self.inner.acks.wake_all();
        let tasks: Vec<_> = self.inner.tasks.borrow_mut().drain(..).collect();
        for task in tasks {
            let _ = task.await;
        }
        result
    }
}
