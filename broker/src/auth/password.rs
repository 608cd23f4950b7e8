//! The password file: user names and salted argon2id hashes, managed with
//! `tern passwd`.
//!
//! Format: UTF-8 text, one `user:hash` per line, where `hash` is an argon2
//! PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) and `user` is
//! everything before the last `:` (PHC strings hold no `:`). Blank lines and
//! lines starting with `#` are ignored. A line whose hash is not an argon2 PHC
//! string (a plain-text password, say) makes the whole file invalid: at
//! startup `tern` refuses to start, on a reload the previous contents stay.
//!
//! Timing: an unknown user name is hashed against a dummy hash with the same
//! parameters as the file's first entry, so that answering "unknown user"
//! takes as long as "wrong password". Hash comparison is constant-time
//! (the `password-hash` crate's `Output` equality).
//!
//! Reloading: [`PasswordFile::reload`] re-reads the file when its modification
//! time or length changed (or always, with `force`, on SIGHUP).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use argon2::password_hash::{self, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use bytestring::ByteString;
use parking_lot::{Mutex, RwLock};
use rand::RngCore;

use super::{
    AuthError, AuthRequest, Authenticator, Failure, PasswordLineError, Principal, Verdict,
};

/// The parsed users of one version of the file.
#[derive(Debug)]
struct Users {
    hashes: HashMap<String, String>,
    /// Hashed when the user is unknown.
    dummy: String,
}

/// Identifies one version of the file on disk.
type Stamp = (Option<SystemTime>, u64);

/// A password file, re-read when it changes.
#[derive(Debug)]
pub struct PasswordFile {
    path: PathBuf,
    users: RwLock<Arc<Users>>,
    stamp: Mutex<Stamp>,
}

/// Hashes `password` with argon2id, the default parameters (m=19456 KiB,
/// t=2, p=1) and a random 16-byte salt; returns the PHC string.
pub fn hash_password(password: &[u8]) -> Result<String, AuthError> {
    hash_with(&Argon2::default(), password)
}

/// Hashes `password` with argon2id and the given cost (memory in KiB,
/// iterations, lanes), for tests and fuzzing that cannot wait for the
/// default cost.
pub fn hash_password_with_cost(
    password: &[u8],
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
) -> Result<String, AuthError> {
    let params =
        argon2::Params::new(m_cost, t_cost, p_cost, None).map_err(password_hash::Error::from)?;
    hash_with(
        &Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params),
        password,
    )
}

fn hash_with(argon2: &Argon2<'_>, password: &[u8]) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)?;
    Ok(argon2.hash_password(password, &salt)?.to_string())
}

/// A hasher with the parameters of `phc` (argon2 variant, version, cost).
fn argon2_like(phc: &str) -> Result<Argon2<'static>, password_hash::Error> {
    let hash = PasswordHash::new(phc)?;
    let algorithm = argon2::Algorithm::try_from(hash.algorithm)?;
    let version = hash
        .version
        .map_or(Ok(argon2::Version::V0x13), argon2::Version::try_from)?;
    let params = argon2::Params::try_from(&hash)?;
    Ok(Argon2::new(algorithm, version, params))
}

/// True if `password` hashes to `phc`.
pub fn verify_password(password: &[u8], phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default().verify_password(password, &hash).is_ok(),
        Err(_) => false,
    }
}

/// Parses the file's text into (user, hash) pairs, in file order.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, PasswordLineError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let n = i + 1;
        let Some((user, hash)) = line.rsplit_once(':') else {
            return Err(PasswordLineError::NoSeparator { line: n });
        };
        if user.is_empty() {
            return Err(PasswordLineError::EmptyUser { line: n });
        }
        if let Err(reason) = argon2_like(hash) {
            return Err(PasswordLineError::NotArgon2 {
                line: n,
                user: user.to_owned(),
                reason,
            });
        }
        out.push((user.to_owned(), hash.to_owned()));
    }
    Ok(out)
}

fn stamp_of(path: &Path) -> Stamp {
    match std::fs::metadata(path) {
        Ok(m) => (m.modified().ok(), m.len()),
        Err(_) => (None, 0),
    }
}

fn load(path: &Path) -> Result<Users, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::ReadPasswordFile {
        path: path.to_owned(),
        source,
    })?;
    let entries = parse(&text).map_err(|source| AuthError::PasswordFile {
        path: path.to_owned(),
        source,
    })?;
    let dummy_params = match entries.first() {
        Some((_, phc)) => argon2_like(phc)?,
        None => Argon2::default(),
    };
    let mut secret = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    let dummy = hash_with(&dummy_params, &secret)?;
    Ok(Users {
        hashes: entries.into_iter().collect(),
        dummy,
    })
}

impl PasswordFile {
    /// Reads the file; an error names the file and the bad line.
    pub fn open(path: &Path) -> Result<PasswordFile, AuthError> {
        let stamp = stamp_of(path);
        let users = load(path)?;
        Ok(PasswordFile {
            path: path.to_owned(),
            users: RwLock::new(Arc::new(users)),
            stamp: Mutex::new(stamp),
        })
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.read().hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks a user name and password (blocks for the hash).
    pub fn check(&self, username: &str, password: &[u8]) -> bool {
        let users = self.users.read().clone();
        match users.hashes.get(username) {
            Some(phc) => verify_password(password, phc),
            None => {
                // Same work as for a known user: existence must not show.
                let _ = verify_password(password, &users.dummy);
                false
            }
        }
    }
}

impl Authenticator for PasswordFile {
    fn name(&self) -> &'static str {
        "password_file"
    }

    fn is_expensive(&self) -> bool {
        true
    }

    fn authenticate(&self, request: &AuthRequest) -> Verdict {
        let Some(username) = &request.username else {
            return Verdict::Pass;
        };
        let Some(password) = &request.password else {
            return Verdict::Reject(Failure::BadCredentials);
        };
        if self.check(username, password) {
            Verdict::Accept(Principal {
                username: Some(ByteString::from(&**username)),
                certificate_identity: None,
            })
        } else {
            Verdict::Reject(Failure::BadCredentials)
        }
    }

    fn reload(&self, force: bool) -> Result<(), AuthError> {
        let stamp = stamp_of(&self.path);
        if !force && *self.stamp.lock() == stamp {
            return Ok(());
        }
        *self.stamp.lock() = stamp;
        let users = load(&self.path)?;
        tracing::info!(file = %self.path.display(), users = users.hashes.len(), "password file reloaded");
        *self.users.write() = Arc::new(users);
        Ok(())
    }
}

/// What `tern passwd` does to one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswdAction {
    /// Add the user or replace its password.
    Set(Vec<u8>),
    /// Remove the user.
    Delete,
}

/// Edits the password file: sets or deletes `user`, keeping other lines
/// (comments included) as they are. `create` starts from an empty file
/// (overwriting one that exists). The file is replaced atomically, with
/// mode 0600.
pub fn edit_file(
    path: &Path,
    user: &str,
    action: PasswdAction,
    create: bool,
) -> Result<(), AuthError> {
    if user.is_empty() || user.contains(['\n', '\r']) {
        return Err(AuthError::BadUserName);
    }
    let text = if create {
        String::new()
    } else {
        std::fs::read_to_string(path).map_err(|source| AuthError::EditMissing {
            path: path.to_owned(),
            source,
        })?
    };
    parse(&text).map_err(|source| AuthError::PasswordFile {
        path: path.to_owned(),
        source,
    })?;
    let mut lines: Vec<String> = Vec::new();
    let mut found = false;
    for line in text.lines() {
        let is_user = !line.trim_start().starts_with('#')
            && line.rsplit_once(':').is_some_and(|(u, _)| u == user);
        if is_user {
            found = true;
            if let PasswdAction::Set(password) = &action {
                lines.push(format!("{user}:{}", hash_password(password)?));
            }
        } else {
            lines.push(line.to_owned());
        }
    }
    match &action {
        PasswdAction::Set(password) if !found => {
            lines.push(format!("{user}:{}", hash_password(password)?))
        }
        PasswdAction::Delete if !found => {
            return Err(AuthError::UnknownUser {
                user: user.to_owned(),
                path: path.to_owned(),
            })
        }
        _ => {}
    }
    let mut out = lines.join("\n");
    out.push('\n');
    write_atomically(path, out.as_bytes())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), AuthError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let name = path.file_name().ok_or_else(|| AuthError::NotAFileName {
        path: path.to_owned(),
    })?;
    let tmp = dir.unwrap_or(Path::new(".")).join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        AuthError::Write {
            path: path.to_owned(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_users_are_hashed_at_the_cost_of_the_first_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        let cheap = hash_password_with_cost(b"p", 64, 1, 1).unwrap();
        std::fs::write(&path, format!("u:{cheap}\n")).unwrap();
        let users = load(&path).unwrap();
        let dummy = PasswordHash::new(&users.dummy).unwrap();
        let entry = PasswordHash::new(&cheap).unwrap();
        assert_eq!(dummy.algorithm, entry.algorithm);
        assert_eq!(dummy.params, entry.params);
        assert!(!verify_password(b"p", &users.dummy));
    }
}
