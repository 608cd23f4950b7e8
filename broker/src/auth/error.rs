//! Why the authentication files could not be loaded or edited:
//! [`AuthError`] (password file, JWT key, `tern passwd`) and
//! [`PasswordLineError`] (one bad line of the password file).
//!
//! These are errors of the operator's files, not of a client: a client's
//! refusal is a [`Failure`](super::Failure), which knows its reason code.
//! At startup an `AuthError` stops `tern`; on a reload it is logged and the
//! previous contents stay.

use std::path::PathBuf;

use argon2::password_hash;

/// A password file, JWT key or `tern passwd` operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The password file named by `auth.password_file` cannot be read.
    #[error("cannot read password file {}: {source}", path.display())]
    ReadPasswordFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A line of the password file is not `user:hash` with an argon2 hash.
    #[error("password file {}: {source}", path.display())]
    PasswordFile {
        path: PathBuf,
        source: PasswordLineError,
    },
    /// argon2 refused to hash (bad cost parameters or salt); also when a
    /// file's first hash has parameters no hasher can be built from.
    #[error("cannot hash the password: {0}")]
    Hash(#[from] password_hash::Error),
    /// `tern passwd` with a user name that is empty or spans lines.
    #[error("the user name must be non-empty and on one line")]
    BadUserName,
    /// `tern passwd` without `-c` on a file that cannot be read.
    #[error("cannot read {}: {source} (use -c to create it)", path.display())]
    EditMissing {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `tern passwd -D` of a user the file does not have.
    #[error("user `{user}` is not in {}", path.display())]
    UnknownUser { user: String, path: PathBuf },
    /// `tern passwd` on a path without a file name (`/`, `..`).
    #[error("{} is not a file name", path.display())]
    NotAFileName { path: PathBuf },
    /// The new password file could not be written or renamed into place.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// RS256 without `auth.jwt.public_key_file`.
    #[error("auth.jwt.public_key_file is required for RS256")]
    NoPublicKeyFile,
    /// The JWT public key file cannot be read.
    #[error("auth.jwt.public_key_file {}: {source}", path.display())]
    ReadPublicKey {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The JWT public key file holds no RSA public key in PEM.
    #[error("auth.jwt.public_key_file {}: not an RSA public key in PEM: {source}", path.display())]
    BadPublicKey {
        path: PathBuf,
        source: jsonwebtoken::errors::Error,
    },
}

/// One line of the password file that is not an entry (lines count from 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordLineError {
    /// No `:` between user name and hash.
    #[error("line {line}: expected `user:hash`")]
    NoSeparator { line: usize },
    /// Nothing before the last `:`.
    #[error("line {line}: empty user name")]
    EmptyUser { line: usize },
    /// The hash is not an argon2 PHC string (a plain-text password, say).
    #[error(
        "line {line} (user `{user}`): not an argon2 PHC hash ({reason}); create entries with `tern passwd`"
    )]
    NotArgon2 {
        line: usize,
        user: String,
        reason: password_hash::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_file_and_the_line() {
        let e = AuthError::PasswordFile {
            path: "/etc/tern/passwd".into(),
            source: PasswordLineError::NoSeparator { line: 3 },
        };
        assert_eq!(
            e.to_string(),
            "password file /etc/tern/passwd: line 3: expected `user:hash`"
        );
        assert_eq!(
            AuthError::UnknownUser {
                user: "carol".into(),
                path: "pw".into()
            }
            .to_string(),
            "user `carol` is not in pw"
        );
    }
}
