//! raft-rs's [`raft::Storage`] trait for [`RaftStorage`]: reads from the
//! in-memory cache and the `raft_log` tree (see `raft.rs`).

use raft::{
    eraftpb::{Entry, Snapshot},
    GetEntriesContext, RaftState, StorageError,
};

use crate::{error::Error, raft::RaftStorage};

/// Wraps a store error for raft-rs, which then stops the node.
fn raft_error(e: Error) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

impl raft::Storage for RaftStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let cache = self.cache.read();
        Ok(RaftState::new(
            cache.hard_state.clone(),
            cache.snapshot.get_conf_state().clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let (first, last) = {
            let cache = self.cache.read();
            (cache.truncated.0 + 1, cache.last_index)
        };
        if low < first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        // The trait allows a panic here; an error is kinder to the process.
        if high > last + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        self.read_entries(low, high, max_size.into())
            .map_err(raft_error)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let (truncated, last) = {
            let cache = self.cache.read();
            (cache.truncated, cache.last_index)
        };
        if idx == truncated.0 {
            return Ok(truncated.1);
        }
        if idx < truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > last {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        self.read_term(idx).map_err(raft_error)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.cache.read().truncated.0 + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.cache.read().last_index)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let index = self.cache.read().snapshot.index;
        if index == 0 || index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        self.read_snapshot().map_err(raft_error)
    }
}
