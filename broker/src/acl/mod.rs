//! Authorization: which topics a client may publish to and read from, by
//! user name, client id, certificate identity and `%c`/`%u` patterns (the
//! file format and matching rules are in [`rules`]).
//!
//! Owns the rules loaded from `acl.file` and their reloading. Never touches
//! sessions: they ask [`Acl::check_topic`] and [`Acl::check_subscribe`].
//!
//! Semantics:
//! - No `acl.file`: everything is allowed (the default).
//! - With a file, a client's applicable rules are those of its user section
//!   (or, without a user name, the lines before any section), of its client
//!   id section, of its certificate identity section, and every `pattern`.
//!   Default deny: an access is allowed only if an applicable rule grants it
//!   and no applicable `deny` rule matches.
//! - PUBLISH needs `write` on the topic name; the Will topic too, checked at
//!   CONNECT (a will that could not be published refuses the connection:
//!   3.1.1 return code 5, 5.0 0x87).
//! - SUBSCRIBE needs a `read` rule that covers the whole filter, and no
//!   `deny` rule covering it (a filter `#` needs a rule `#`). Then, like
//!   Mosquitto, every message is checked again at delivery against the
//!   topic name, retained messages included: a `deny` rule inside a granted
//!   wildcard (`topic read a/#`, `topic deny a/secret`) grants `a/#` but
//!   never delivers `a/secret`. A shared subscription `$share/g/f` is checked
//!   as `f`.
//! - Reloading (file change, SIGHUP) applies to later checks, including
//!   deliveries on subscriptions granted earlier.

pub mod rules;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock};

use crate::auth::Principal;
use crate::codec::topic::split_shared;
pub use rules::{Rule, RuleAccess, RuleError, Rules, Values};

/// Why the ACL file could not be loaded. At startup it stops `tern`; on a
/// reload it is logged and the previous rules stay.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    /// The file named by `acl.file` cannot be read.
    #[error("cannot read ACL file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A line of the file is not a rule.
    #[error("ACL file {}: {source}", path.display())]
    Parse { path: PathBuf, source: RuleError },
}

/// The access asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Receive messages on a topic (subscribe, delivery).
    Read,
    /// Publish to a topic.
    Write,
}

/// Who asks: the client id and what authentication established.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    pub client_id: String,
    pub username: Option<String>,
    pub certificate_identity: Option<String>,
}

impl Subject {
    pub fn new(client_id: &str, principal: &Principal) -> Subject {
        Subject {
            client_id: client_id.to_owned(),
            username: principal.username.as_deref().map(str::to_owned),
            certificate_identity: principal.certificate_identity.clone(),
        }
    }

    fn values(&self) -> Values<'_> {
        Values {
            client_id: &self.client_id,
            username: self.username.as_deref(),
        }
    }
}

/// The node's ACL: none, or the rules of a file.
#[derive(Debug)]
pub struct Acl {
    file: Option<PathBuf>,
    rules: RwLock<Option<Arc<Rules>>>,
    stamp: Mutex<(Option<SystemTime>, u64)>,
}

fn stamp_of(path: &Path) -> (Option<SystemTime>, u64) {
    std::fs::metadata(path).map_or((None, 0), |m| (m.modified().ok(), m.len()))
}

fn load(path: &Path) -> Result<Rules, AclError> {
    let text = std::fs::read_to_string(path).map_err(|source| AclError::Read {
        path: path.to_owned(),
        source,
    })?;
    rules::parse(&text).map_err(|source| AclError::Parse {
        path: path.to_owned(),
        source,
    })
}

impl Acl {
    /// No rules: everything allowed.
    pub fn allow_all() -> Acl {
        Acl {
            file: None,
            rules: RwLock::new(None),
            stamp: Mutex::new((None, 0)),
        }
    }

    /// Rules given as text (tests, fuzzing).
    pub fn from_rules(rules: Rules) -> Acl {
        Acl {
            file: None,
            rules: RwLock::new(Some(Arc::new(rules))),
            stamp: Mutex::new((None, 0)),
        }
    }

    /// Reads `file`; an error names it and the line.
    pub fn open(file: Option<&Path>) -> Result<Acl, AclError> {
        let Some(path) = file else {
            return Ok(Acl::allow_all());
        };
        let stamp = stamp_of(path);
        let rules = load(path)?;
        Ok(Acl {
            file: Some(path.to_owned()),
            rules: RwLock::new(Some(Arc::new(rules))),
            stamp: Mutex::new(stamp),
        })
    }

    /// True if rules are configured (and checks can deny).
    pub fn is_enabled(&self) -> bool {
        self.rules.read().is_some()
    }

    /// Re-reads the file if it changed (`force`: even if not). On error the
    /// previous rules stay.
    pub fn reload(&self, force: bool) -> Result<(), AclError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let stamp = stamp_of(path);
        if !force && *self.stamp.lock() == stamp {
            return Ok(());
        }
        *self.stamp.lock() = stamp;
        let rules = load(path)?;
        tracing::info!(file = %path.display(), rules = rules.len(), "ACL file reloaded");
        *self.rules.write() = Some(Arc::new(rules));
        Ok(())
    }

    /// May `subject` publish to (`Write`) or receive from (`Read`) the topic
    /// name `topic`?
    pub fn check_topic(&self, subject: &Subject, topic: &str, access: Access) -> bool {
        let Some(rules) = self.rules.read().clone() else {
            return true;
        };
        let values = subject.values();
        let mut granted = false;
        for rule in applicable(&rules, subject) {
            if rule.matches_topic(topic, &values) {
                if rule.access == RuleAccess::Deny {
                    return false;
                }
                granted |= rule.access.grants(access);
            }
        }
        granted
    }

    /// May `subject` subscribe to `filter` (a `$share/group/` prefix is
    /// checked without it)?
    pub fn check_subscribe(&self, subject: &Subject, filter: &str) -> bool {
        let Some(rules) = self.rules.read().clone() else {
            return true;
        };
        let filter = match split_shared(filter) {
            Ok(Some((_, inner))) => inner,
            _ => filter,
        };
        let values = subject.values();
        let mut granted = false;
        for rule in applicable(&rules, subject) {
            if rule.covers_filter(filter, &values) {
                if rule.access == RuleAccess::Deny {
                    return false;
                }
                granted |= rule.access.grants(Access::Read);
            }
        }
        granted
    }
}

/// The rules that apply to `subject`, in no particular order.
fn applicable<'r>(rules: &'r Rules, subject: &Subject) -> impl Iterator<Item = &'r Rule> {
    let own = match &subject.username {
        Some(u) => rules.users.get(u).map_or(&[][..], Vec::as_slice),
        None => rules.anonymous.as_slice(),
    };
    let client = rules
        .clients
        .get(&subject.client_id)
        .map_or(&[][..], Vec::as_slice);
    let certificate = subject
        .certificate_identity
        .as_ref()
        .and_then(|c| rules.certificates.get(c))
        .map_or(&[][..], Vec::as_slice);
    own.iter()
        .chain(client)
        .chain(certificate)
        .chain(&rules.patterns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(text: &str) -> Acl {
        Acl::from_rules(rules::parse(text).unwrap())
    }

    fn user(name: &str, client_id: &str) -> Subject {
        Subject {
            client_id: client_id.into(),
            username: Some(name.into()),
            certificate_identity: None,
        }
    }

    #[test]
    fn no_file_allows_everything() {
        let acl = Acl::allow_all();
        let s = Subject::default();
        assert!(acl.check_topic(&s, "a", Access::Write));
        assert!(acl.check_subscribe(&s, "#"));
    }

    #[test]
    fn an_empty_file_denies_everything() {
        let acl = acl("# nothing\n");
        assert!(!acl.check_topic(&user("u", "c"), "a", Access::Read));
    }

    #[test]
    fn user_rules_grant_by_access_and_deny_wins() {
        let acl = acl("user alice\ntopic read a/#\ntopic write a/in\ntopic deny a/secret\n");
        let alice = user("alice", "c1");
        assert!(acl.check_topic(&alice, "a/x", Access::Read));
        assert!(!acl.check_topic(&alice, "a/x", Access::Write));
        assert!(acl.check_topic(&alice, "a/in", Access::Write));
        assert!(!acl.check_topic(&alice, "a/secret", Access::Read));
        assert!(!acl.check_topic(&user("bob", "c2"), "a/x", Access::Read));
    }

    #[test]
    fn wildcard_subscription_is_granted_but_denied_topics_are_not_delivered() {
        let acl = acl("user alice\ntopic read a/#\ntopic deny a/secret\n");
        let alice = user("alice", "c1");
        assert!(acl.check_subscribe(&alice, "a/#"));
        assert!(acl.check_subscribe(&alice, "$share/g/a/+"));
        assert!(!acl.check_subscribe(&alice, "#"));
        assert!(!acl.check_subscribe(&alice, "a/secret"));
        assert!(!acl.check_topic(&alice, "a/secret", Access::Read));
    }

    #[test]
    fn anonymous_client_and_certificate_sections_and_patterns_apply() {
        let acl = acl("topic read public/#\n\
             client sensor-1\ntopic write sensors/1\n\
             certificate CN=gw\ntopic read gw/#\n\
             pattern readwrite devices/%c/#\n\
             pattern read users/%u/#\n");
        let anon = Subject {
            client_id: "sensor-1".into(),
            ..Default::default()
        };
        assert!(acl.check_topic(&anon, "public/x", Access::Read));
        assert!(acl.check_topic(&anon, "sensors/1", Access::Write));
        assert!(acl.check_topic(&anon, "devices/sensor-1/t", Access::Write));
        assert!(!acl.check_topic(&anon, "devices/other/t", Access::Write));
        assert!(!acl.check_topic(&anon, "gw/x", Access::Read));
        let gw = Subject {
            client_id: "g".into(),
            username: Some("gw".into()),
            certificate_identity: Some("gw".into()),
        };
        assert!(acl.check_topic(&gw, "gw/x", Access::Read));
        assert!(acl.check_topic(&gw, "users/gw/x", Access::Read));
        // user sections do not inherit the anonymous lines
        assert!(!acl.check_topic(&gw, "public/x", Access::Read));
    }
}
