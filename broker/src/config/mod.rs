//! Configuration: a TOML file, overridden by command-line flags and `TERN_*`
//! environment variables (see `Cli`), with defaults that need no file at all.
//!
//! Every field has a default; an unknown key, a value of the wrong type or a
//! value out of range is an error that names the key and the value
//! (`ConfigError`). `tern --help` lists the flags; `README.md` documents every
//! key of the file.

mod cli;
mod http;
mod listener;
mod membership;
mod telemetry;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use cli::{
    AdminArgs, Cli, ClientsAction, ClusterAction, Command, PasswdArgs, RetainedAction,
    SessionsAction,
};
pub use http::HttpConfig;
pub use listener::{
    ClientAuth, IdentitySource, ListenerConfig, ListenerProtocol, TlsConfig, DEFAULT_WS_PATH,
};
pub use membership::{node_id_from_hostname, system_hostname, ClusterSection};
pub use telemetry::TelemetryConfig;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value parsed but is out of its allowed range.
    #[error("config key `{key}` = {value}: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: &'static str,
    },
    /// `cluster.node_id_from_hostname` is set but the host name carries no
    /// StatefulSet ordinal (or cannot be read).
    #[error(
        "cluster.node_id_from_hostname: host name `{hostname}` {reason}; \
         a StatefulSet pod's host name ends in `-N` (N = its ordinal, node id N+1), \
         otherwise set cluster.node_id"
    )]
    Hostname { hostname: String, reason: String },
    /// A `[[routes]]` entry is invalid (the error names the route and key).
    #[error("config [[routes]]: {0}")]
    Route(#[from] crate::hub::config::RouteConfigError),
}

/// The whole configuration of one node.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory of the embedded store (created if missing).
    pub data_dir: PathBuf,
    /// Log filter, `tracing` env-filter syntax: `info`, `debug`, `broker=trace`.
    pub log_level: String,
    /// Log format: `text` or `json`.
    pub log_format: LogFormat,
    /// Worker threads (actix arbiters) that run sessions; 0 means one per core.
    pub workers: usize,
    /// Network endpoints (`[[listeners]]`); TCP 1883 and WebSocket 8083
    /// when the file names none.
    pub listeners: Vec<ListenerConfig>,
    /// Protocol limits and session behaviour.
    pub mqtt: MqttConfig,
    /// The embedded store.
    pub storage: StorageConfig,
    /// Who may connect.
    pub auth: AuthConfig,
    /// What connected clients may publish and subscribe to.
    pub acl: AclConfig,
    /// Limits that protect the broker from abusive or broken clients.
    pub limits: LimitsConfig,
    /// MQTT 5.0 enhanced authentication (AUTH exchanges).
    pub enhanced_auth: EnhancedAuthConfig,
    /// Running as a member of a cluster.
    pub cluster: ClusterSection,
    /// The HTTP endpoint: metrics, health, admin API.
    pub http: HttpConfig,
    /// Seconds between two publications of the `$SYS` topics; 0: none.
    pub sys_interval_secs: u64,
    /// OpenTelemetry traces.
    pub telemetry: TelemetryConfig,
    /// IoT hub routes (`[[routes]]`), node-local.
    pub routes: Vec<crate::hub::config::RouteConfig>,
}

/// MQTT 5.0 enhanced authentication mechanisms.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct EnhancedAuthConfig {
    /// File of SCRAM-SHA-256 credentials (`user:iterations:salt:stored_key:server_key`
    /// per line); when set, clients may authenticate with method `SCRAM-SHA-256`.
    pub scram_users_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("tern-data"),
            log_level: "info".into(),
            log_format: LogFormat::Text,
            workers: 0,
            listeners: ListenerConfig::defaults(),
            mqtt: MqttConfig::default(),
            storage: StorageConfig::default(),
            enhanced_auth: EnhancedAuthConfig::default(),
            cluster: ClusterSection::default(),
            auth: AuthConfig::default(),
            acl: AclConfig::default(),
            limits: LimitsConfig::default(),
            http: HttpConfig::default(),
            sys_interval_secs: 10,
            telemetry: TelemetryConfig::default(),
            routes: Vec::new(),
        }
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Protocol limits and session behaviour.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Largest packet accepted from a client, in bytes (fixed header included).
    /// A larger one disconnects the client (5.0: reason 0x95).
    pub max_packet_size: u32,
    /// Most QoS 1/2 messages sent to one client and not yet acknowledged. A 5.0
    /// client's Receive Maximum lowers it for that client.
    pub max_inflight: u16,
    /// Most QoS 1/2 messages waiting for one client (offline, or past its
    /// inflight window). When full, new messages for that client are dropped
    /// and counted (`tern_messages_dropped_total{reason="queue_full"}`);
    /// older ones are kept.
    pub max_queued_messages: usize,
    /// Bytes encoded for a client and not yet taken by its socket, above which
    /// QoS 0 messages to it are dropped and QoS 1/2 wait in its queue.
    pub max_write_buffer: usize,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout_secs: u64,
    /// Seconds after which an idle connection's session hibernates: a
    /// plain TCP connection with nothing in flight, queued or buffered that
    /// has sent and been sent nothing for this long releases its actor;
    /// its socket waits on its worker thread's poller, which answers
    /// PINGREQ itself, and the session wakes on any other packet or
    /// message for it. 0 disables hibernation.
    pub hibernate_after_secs: u32,
    /// Keep alive imposed on clients asking for 0 or more (5.0 Server Keep
    /// Alive); 0 means clients choose.
    pub max_keep_alive: u16,
    /// Prefix of generated client ids.
    pub client_id_prefix: String,
    /// Longest Session Expiry Interval granted, in seconds; a 5.0 client
    /// asking for more is told the granted value in CONNACK. Also bounds how
    /// long an offline 3.1.1 persistent session is kept. 4294967295 (the
    /// default) means sessions may never expire.
    pub max_session_expiry_secs: u32,
    /// 5.0 Topic Alias Maximum announced to clients (aliases a client may use
    /// towards the broker); 0 disables inbound topic aliases.
    pub max_topic_alias: u16,
    /// Most topic aliases the broker uses towards a client (never more than
    /// the client's own Topic Alias Maximum); 0 disables outbound aliases.
    pub max_outbound_topic_alias: u16,
    /// 5.0 Response Information returned to clients that request it: this
    /// prefix followed by the client id, as a base topic for responses.
    pub response_topic_prefix: String,
    /// Refuse MQTT 3.1 client ids longer than 23 characters (CONNACK 2), as
    /// 3.1 allowed servers to. Off by default: real 3.1 clients send longer
    /// ids and Mosquitto accepts them.
    pub strict_v31_client_id: bool,
    /// Refuse control characters (U+0001..U+001F, U+007F..U+009F) in client
    /// ids, user names, will topics, topic names and filters, which the
    /// specification says SHOULD NOT be sent and a receiver MAY treat as
    /// malformed (3.1.1 section 1.5.3, 5.0 section 1.5.4). On by default.
    pub strict_control_characters: bool,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            max_packet_size: 1024 * 1024,
            max_inflight: 256,
            max_queued_messages: 100_000,
            max_write_buffer: 1024 * 1024,
            connect_timeout_secs: 10,
            hibernate_after_secs: 10,
            max_keep_alive: 0,
            client_id_prefix: "tern-".into(),
            max_session_expiry_secs: u32::MAX,
            max_topic_alias: 64,
            max_outbound_topic_alias: 64,
            response_topic_prefix: "response/".into(),
            strict_v31_client_id: false,
            strict_control_characters: true,
        }
    }
}

impl MqttConfig {
    /// `connect_timeout_secs` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }
}

/// The embedded store.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// sled page cache, in MiB.
    pub cache_mb: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig { cache_mb: 256 }
    }
}

/// Authentication (see `crate::auth`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Clients that present no user name, no password and no accepted
    /// certificate may connect.
    pub allow_anonymous: bool,
    /// File of `user:argon2-PHC-hash` lines, managed with `tern passwd`;
    /// re-read when it changes and on SIGHUP.
    pub password_file: Option<PathBuf>,
    /// JSON Web Tokens in the password field.
    pub jwt: Option<JwtConfig>,
    /// A client certificate identity authenticates the client and becomes its
    /// user name (TLS listeners that verify client certificates).
    pub use_identity_as_username: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            allow_anonymous: true,
            password_file: None,
            jwt: None,
            use_identity_as_username: false,
        }
    }
}

/// JWT verification: the token is the CONNECT password.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// `HS256` (shared secret) or `RS256` (RSA public key).
    pub algorithm: JwtAlgorithm,
    /// HS256 shared secret.
    #[serde(default)]
    pub secret: Option<String>,
    /// RS256 public key, PEM.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// Claim whose string value is the client's user name.
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
}

fn default_username_claim() -> String {
    "sub".into()
}

/// Signature algorithm of accepted tokens.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum JwtAlgorithm {
    HS256,
    RS256,
}

/// Authorization (see `crate::acl`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AclConfig {
    /// Mosquitto-style ACL file. When set, whatever it does not grant is
    /// denied. Re-read when it changes and on SIGHUP.
    pub file: Option<PathBuf>,
}

/// Limits that protect the broker (see `crate::limits`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// New connections per second accepted from one source address; excess
    /// ones are closed before their CONNECT is read. 0: no limit.
    pub max_connect_rate: u32,
    /// Connections one source address may open at once before the rate
    /// applies; 0 means `max_connect_rate`.
    pub connect_burst: u32,
    /// Most levels in a topic name or filter.
    pub max_topic_levels: usize,
    /// Longest topic name or filter, in bytes.
    pub max_topic_length: usize,
    /// PUBLISH packets per second read from one client; faster clients are
    /// read more slowly. 0: no limit.
    pub max_publish_rate: u32,
    /// PUBLISH packets a client may send at once before the rate applies; 0
    /// means `max_publish_rate`.
    pub publish_burst: u32,
    /// Bytes held for all clients together: queued QoS 1/2 messages and
    /// write buffers. Above 7/8 of it new QoS 0 copies are dropped; at it,
    /// new QoS 1/2 copies that would wait are dropped. 0: no limit.
    pub max_queued_bytes: u64,
    /// A client whose socket takes nothing for this long while its write
    /// buffer is full is disconnected. 0: never.
    pub slow_consumer_timeout_secs: u64,
    /// An online subscriber with this many QoS 1/2 messages waiting to be
    /// sent (beyond its in-flight window) is congested: the PUBACK / PUBREC
    /// of a message that adds to its queue waits until the copy is sent to
    /// it, so publishers slow down to its pace instead of overflowing its
    /// queue. 0: never (publishers are acknowledged at once; copies past
    /// `mqtt.max_queued_messages` are dropped).
    pub backpressure_queued: usize,
    /// Longest a publisher's acknowledgement is held back for a congested
    /// subscriber; past it the publisher is acknowledged and the copy stays
    /// queued. In a cluster, at most half of `cluster.forward_timeout_secs`
    /// (a forwarded message's answer waits for it).
    pub backpressure_wait_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connect_rate: 0,
            connect_burst: 0,
            max_topic_levels: 128,
            max_topic_length: 65535,
            max_publish_rate: 0,
            publish_burst: 0,
            max_queued_bytes: 1024 * 1024 * 1024,
            slow_consumer_timeout_secs: 30,
            backpressure_queued: 1000,
            backpressure_wait_secs: 5,
        }
    }
}

impl LimitsConfig {
    /// `slow_consumer_timeout_secs` as a duration; `None` for never.
    pub fn slow_consumer_timeout(&self) -> Option<Duration> {
        (self.slow_consumer_timeout_secs > 0)
            .then(|| Duration::from_secs(self.slow_consumer_timeout_secs))
    }
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges that the types alone do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let m = &self.mqtt;
        if m.max_packet_size < 16
            || m.max_packet_size as usize > crate::codec::MAX_REMAINING_LENGTH + 5
        {
            return Err(ConfigError::Invalid {
                key: "mqtt.max_packet_size",
                value: m.max_packet_size.to_string(),
                reason: "must be between 16 and 268435460 bytes",
            });
        }
        if m.max_inflight == 0 {
            return Err(ConfigError::Invalid {
                key: "mqtt.max_inflight",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        if m.max_queued_messages == 0 {
            return Err(ConfigError::Invalid {
                key: "mqtt.max_queued_messages",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        if m.connect_timeout_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "mqtt.connect_timeout_secs",
                value: "0".into(),
                reason: "must be at least 1 second",
            });
        }
        self.validate_security()?;
        self.http.validate()?;
        self.telemetry.validate()?;
        for seed in &self.cluster.seeds {
            if seed.parse::<cluster::Seed>().is_err() {
                return Err(ConfigError::Invalid {
                    key: "cluster.seeds",
                    value: seed.clone(),
                    reason: "expected `host:port` or `id=host:port`",
                });
            }
        }
        if self.cluster.node_id != 0
            && (self.cluster.tick_ms == 0 || self.cluster.election_ticks < 2)
        {
            return Err(ConfigError::Invalid {
                key: "cluster.tick_ms",
                value: self.cluster.tick_ms.to_string(),
                reason: "tick_ms must be at least 1 and election_ticks at least 2",
            });
        }
        if !(1..=2).contains(&self.cluster.session_replicas) {
            return Err(ConfigError::Invalid {
                key: "cluster.session_replicas",
                value: self.cluster.session_replicas.to_string(),
                reason: "must be 1 (no replica) or 2 (one replica on another node)",
            });
        }
        if self.cluster.forward_queue_limit == 0 {
            return Err(ConfigError::Invalid {
                key: "cluster.forward_queue_limit",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        crate::hub::config::validate_routes(&self.routes)?;
        listener::validate_listeners(&self.listeners)
    }

    /// Checks `[auth]`, `[acl]` and `[limits]`.
    fn validate_security(&self) -> Result<(), ConfigError> {
        if let Some(jwt) = &self.auth.jwt {
            match jwt.algorithm {
                JwtAlgorithm::HS256 if jwt.secret.as_deref().unwrap_or("").is_empty() => {
                    return Err(ConfigError::Invalid {
                        key: "auth.jwt.secret",
                        value: "(missing)".into(),
                        reason: "HS256 needs a non-empty secret",
                    })
                }
                JwtAlgorithm::RS256 if jwt.public_key_file.is_none() => {
                    return Err(ConfigError::Invalid {
                        key: "auth.jwt.public_key_file",
                        value: "(missing)".into(),
                        reason: "RS256 needs a PEM public key file",
                    })
                }
                _ => {}
            }
            if jwt.username_claim.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "auth.jwt.username_claim",
                    value: "\"\"".into(),
                    reason: "must name a claim",
                });
            }
        }
        let l = &self.limits;
        if l.backpressure_queued > 0 && l.backpressure_wait_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "limits.backpressure_wait_secs",
                value: "0".into(),
                reason: "must be at least 1 second while limits.backpressure_queued is set",
            });
        }
        if l.max_topic_levels == 0 {
            return Err(ConfigError::Invalid {
                key: "limits.max_topic_levels",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        if l.max_topic_length == 0 || l.max_topic_length > 65535 {
            return Err(ConfigError::Invalid {
                key: "limits.max_topic_length",
                value: l.max_topic_length.to_string(),
                reason: "must be between 1 and 65535 bytes",
            });
        }
        Ok(())
    }

    /// With `cluster.node_id_from_hostname`, sets `cluster.node_id` from
    /// `hostname` (see [`node_id_from_hostname`]). `hostname` is only
    /// called when the option is set.
    pub fn derive_node_id(
        &mut self,
        hostname: impl FnOnce() -> std::io::Result<String>,
    ) -> Result<(), ConfigError> {
        if !self.cluster.node_id_from_hostname {
            return Ok(());
        }
        if self.cluster.node_id != 0 {
            return Err(ConfigError::Invalid {
                key: "cluster.node_id",
                value: self.cluster.node_id.to_string(),
                reason: "must not be set together with cluster.node_id_from_hostname",
            });
        }
        let hostname = hostname().map_err(|e| ConfigError::Hostname {
            hostname: String::new(),
            reason: format!("cannot be read: {e}"),
        })?;
        self.cluster.node_id = node_id_from_hostname(&hostname)?;
        Ok(())
    }

    /// How long an acknowledgement may wait for a congested subscriber, in
    /// ms (`limits.backpressure_wait_secs`, in a cluster at most half of
    /// `cluster.forward_timeout_secs`); `None` when backpressure is off.
    pub fn backpressure_wait_ms(&self) -> Option<u64> {
        let l = &self.limits;
        let mut wait = l.backpressure_wait_secs * 1000;
        if self.cluster.node_id != 0 {
            wait = wait.min(self.cluster.forward_timeout_secs * 500);
        }
        (l.backpressure_queued > 0).then_some(wait)
    }

    /// Number of worker arbiters to start.
    pub fn worker_count(&self) -> usize {
        if self.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.workers
        }
    }
}

#[cfg(test)]
mod tests;
