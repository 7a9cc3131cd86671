//! The store's file operations that more than one part of it performs, each written once with
//! its error mapping: creating a segment, removing a file that may already be gone, syncing a
//! directory.

use std::path::Path;

use crate::{
    StoreConfig, StoreError,
    commitlog::Segment,
    format::{COMMITLOG_DIR, segment_name},
    io::{Storage, StorageFile},
};

/// Creates the commit-log segment starting at `start`: the file, its blocks when the store
/// preallocates, and a durable directory entry. On error no half-allocated file is left.
pub(crate) async fn create_segment<S: Storage>(
    storage: &S,
    config: &StoreConfig,
    start: u64,
) -> Result<Segment<S::File>, StoreError> {
    let dir = config.dir.join(COMMITLOG_DIR);
    let path = dir.join(segment_name(start));
    let file = storage
        .open(&path, true)
        .await
        .map_err(|e| StoreError::io("create segment", &path, e))?;
    if config.preallocate
        && let Err(err) = file.allocate(config.segment_bytes).await
    {
        // Leave no half-allocated segment behind: the next attempt starts afresh.
        let _ = storage.remove(&path).await;
        return Err(StoreError::io("allocate segment", &path, err));
    }
    sync_dir(storage, &dir).await?;
    Ok(Segment::new(start, file, path))
}

/// Removes `path`; a file that is already gone is fine (a crash may have come between the
/// decision and the removal).
pub(crate) async fn remove_if_present<S: Storage>(
    storage: &S,
    op: &'static str,
    path: &Path,
) -> Result<(), StoreError> {
    match storage.remove(path).await {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(StoreError::io(op, path, err)),
    }
}

/// Makes `dir`'s entries (creates, renames, removes) durable.
pub(crate) async fn sync_dir<S: Storage>(storage: &S, dir: &Path) -> Result<(), StoreError> {
    storage
        .sync_dir(dir)
        .await
        .map_err(|e| StoreError::io("sync directory", dir, e))
}
