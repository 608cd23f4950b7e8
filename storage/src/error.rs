//! The storage crate's one error type.
//!
//! Errors are `Clone` because one write error is handed to every durability
//! callback of the group that failed. sled's own error type never appears in a
//! public variant: the broker must not have to name sled.

use std::{io, path::PathBuf, sync::Arc};

/// `Result` with the storage [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// `Store::open` found the data directory locked by another process (or by
    /// another `Store` in this process that is still open).
    #[error("data directory {} is in use by another process", path.display())]
    Locked {
        /// The data directory.
        path: PathBuf,
    },

    /// `Store::open` could not create the data directory or write a file in it.
    #[error("data directory {} is not writable: {source}", path.display())]
    NotWritable {
        /// The data directory.
        path: PathBuf,
        /// What the operating system said.
        source: Arc<io::Error>,
    },

    /// `Store::open` failed for another reason: sled could not recover the
    /// files in the data directory (corrupt log, unsupported settings, ...).
    #[error("cannot open the store in {}: {message}", path.display())]
    Open {
        /// The data directory.
        path: PathBuf,
        /// sled's description of the failure.
        message: String,
    },

    /// A key or value read from the store could not be decoded: truncated,
    /// corrupt, or written in a format version this build does not know.
    #[error("tree `{tree}`, key `{key}`: {reason}")]
    Corrupt {
        /// The sled tree the record was read from.
        tree: &'static str,
        /// The record's key, with bytes outside printable ASCII escaped.
        key: String,
        /// What was wrong with it.
        reason: String,
    },

    /// A write op was refused before touching the disk because the store
    /// could not read it back (a client id containing U+0000, a QoS above 2,
    /// ...). The other requests of the group are not affected.
    #[error("invalid write: {reason}")]
    InvalidWrite {
        /// Which field was invalid and why.
        reason: String,
    },

    /// The file system failed a read, write or flush (disk full, I/O error).
    #[error("{context}: {source}")]
    Io {
        /// What the store was doing.
        context: &'static str,
        /// What the operating system said.
        source: Arc<io::Error>,
    },

    /// sled reported a failure that is not an I/O error (it detected
    /// corruption, or hit one of its own bugs).
    #[error("{context}: {message}")]
    Sled {
        /// What the store was doing.
        context: &'static str,
        /// sled's description of the failure.
        message: String,
    },

    /// The store could not be reopened after a write error, so it can neither
    /// be read nor written until a later reopen succeeds (the writer retries
    /// with each new group); `Store::health` also says this while a reopen
    /// is in progress.
    #[error("store unavailable after a write error: {reason}")]
    Unavailable {
        /// Why the last reopen failed, or that one is in progress.
        reason: String,
    },

    /// The store was closed, or its writer thread has stopped, before the
    /// request was processed.
    #[error("store is closed")]
    Closed,
}

impl Error {
    /// Wraps a sled error from a read, write or flush.
    pub(crate) fn from_sled(context: &'static str, error: sled::Error) -> Error {
        match error {
            sled::Error::Io(source) => Error::Io {
                context,
                source: Arc::new(unwrap_sled_io(source)),
            },
            other => Error::Sled {
                context,
                message: other.to_string(),
            },
        }
    }

    /// Wraps a `std::io` error from a read, write or flush.
    pub(crate) fn from_io(context: &'static str, source: io::Error) -> Error {
        Error::Io {
            context,
            source: Arc::new(source),
        }
    }

    /// A [`Error::Corrupt`] for `key` in `tree`.
    pub(crate) fn corrupt(tree: &'static str, key: &[u8], reason: impl Into<String>) -> Error {
        Error::Corrupt {
            tree,
            key: key.escape_ascii().to_string(),
            reason: reason.into(),
        }
    }
}

/// sled 0.34 rewraps some OS errors as `io::Error::new(kind, format!("{e:?}"))`,
/// which displays as `Os { code: 28, kind: StorageFull, message: "..." }`.
/// Recovers the OS error so the message reads "No space left on device (os
/// error 28)"; any other error is returned as it is.
fn unwrap_sled_io(error: io::Error) -> io::Error {
    if error.raw_os_error().is_some() {
        return error;
    }
    let code = error.get_ref().and_then(|inner| {
        inner
            .to_string()
            .strip_prefix("Os { code: ")?
            .split(',')
            .next()?
            .parse::<i32>()
            .ok()
    });
    match code {
        Some(code) => io::Error::from_raw_os_error(code),
        None => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sled_rewrapped_os_errors_display_as_the_os_error() {
        let wrapped = io::Error::other(format!("{:?}", io::Error::from_raw_os_error(28)));
        let error = Error::from_sled("writing to the store", sled::Error::Io(wrapped));
        assert_eq!(
            error.to_string(),
            "writing to the store: No space left on device (os error 28)"
        );
        let plain = io::Error::other("something else");
        let error = Error::from_sled("flushing the store", sled::Error::Io(plain));
        assert_eq!(error.to_string(), "flushing the store: something else");
    }
}
