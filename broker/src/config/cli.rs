//! Command-line flags. Each flag also reads a `TERN_*` environment variable;
//! both override the config file, the flag winning over the variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::{Config, ConfigError, ListenerConfig, ListenerProtocol, LogFormat};

/// Tern: a clustered MQTT broker (MQTT 3.1, 3.1.1 and 5.0).
///
/// With no options, runs a single node listening for MQTT on 0.0.0.0:1883
/// (TCP) and 0.0.0.0:8083 (WebSocket, path /mqtt), serving metrics, health
/// checks and the admin API over HTTP on 0.0.0.0:8080, with its store in
/// ./tern-data. The config file (TOML) sets everything; flags and
/// environment variables override it. See README.md for every key.
#[derive(Debug, Clone, Parser, Default)]
#[command(name = "tern", version, about, long_about)]
pub struct Cli {
    /// Without a command, `tern` runs the broker.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// TOML config file.
    #[arg(short, long, env = "TERN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of the embedded store [default: tern-data].
    #[arg(long, env = "TERN_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the MQTT TCP listener, replacing the configured listeners'
    /// TCP address [default: 0.0.0.0:1883].
    #[arg(short, long, env = "TERN_BIND", value_name = "ADDR:PORT")]
    pub bind: Option<SocketAddr>,
    /// Address of the MQTT-over-WebSocket listener (path /mqtt), replacing
    /// the configured listeners' WebSocket address [default: 0.0.0.0:8083].
    #[arg(long, env = "TERN_WS_BIND", value_name = "ADDR:PORT")]
    pub ws_bind: Option<SocketAddr>,
    /// Log filter: error, warn, info, debug, trace, or `tracing` directives
    /// such as `broker=debug` [default: info].
    #[arg(long, env = "TERN_LOG", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log format [default: text].
    #[arg(long, env = "TERN_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Worker threads for sessions; 0 means one per core [default: 0].
    #[arg(long, env = "TERN_WORKERS", value_name = "N")]
    pub workers: Option<usize>,
    /// Largest packet accepted from a client, in bytes [default: 1048576].
    #[arg(long, env = "TERN_MAX_PACKET_SIZE", value_name = "BYTES")]
    pub max_packet_size: Option<u32>,
    /// Most QoS 1/2 messages queued per session [default: 100000].
    #[arg(long, env = "TERN_MAX_QUEUED_MESSAGES", value_name = "N")]
    pub max_queued_messages: Option<usize>,
    /// This node's id in a cluster; 0 runs a single node [default: 0].
    #[arg(long, env = "TERN_NODE_ID", value_name = "ID")]
    pub node_id: Option<u64>,
    /// Derive the node id from the host name: a StatefulSet pod `NAME-N`
    /// is node N+1. Excludes --node-id.
    #[arg(
        long,
        env = "TERN_NODE_ID_FROM_HOSTNAME",
        conflicts_with = "node_id",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true",
        require_equals = true,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub node_id_from_hostname: Option<bool>,
    /// Address of the cluster gRPC endpoint [default: 0.0.0.0:7000].
    #[arg(long, env = "TERN_CLUSTER_LISTEN", value_name = "ADDR:PORT")]
    pub cluster_listen: Option<SocketAddr>,
    /// host:port other nodes reach the cluster endpoint at.
    #[arg(long, env = "TERN_CLUSTER_ADVERTISE", value_name = "HOST:PORT")]
    pub cluster_advertise: Option<String>,
    /// host:port clients reach this node's MQTT listener at.
    #[arg(long, env = "TERN_MQTT_ADVERTISE", value_name = "HOST:PORT")]
    pub mqtt_advertise: Option<String>,
    /// Cluster seeds, comma separated: `id=host:port` or `host:port`.
    #[arg(long, env = "TERN_SEEDS", value_name = "SEEDS", value_delimiter = ',')]
    pub seeds: Option<Vec<String>>,
    /// OTLP gRPC endpoint spans are exported to (`http://host:4317`); empty
    /// turns tracing off [default: off].
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of exported spans [default: tern].
    #[arg(long, env = "OTEL_SERVICE_NAME", value_name = "NAME")]
    pub otel_service_name: Option<String>,
    /// Share of new traces recorded, 0.0 to 1.0 (the sampler is always
    /// OpenTelemetry's `parentbased_traceidratio`) [default: 1.0].
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", value_name = "RATIO")]
    pub otel_sample_ratio: Option<f64>,
    /// Milliseconds between two exports of the metrics over OTLP; 0: none
    /// [default: 60000].
    #[arg(long, env = "OTEL_METRIC_EXPORT_INTERVAL", value_name = "MS")]
    pub otel_metric_export_interval: Option<u64>,
    /// Address of the HTTP endpoint (metrics, health, admin API); an empty
    /// value turns it off [default: 0.0.0.0:8080].
    #[arg(long, env = "TERN_HTTP_BIND", value_name = "ADDR:PORT")]
    pub http_bind: Option<String>,
}

/// How the admin commands reach a node's HTTP endpoint.
#[derive(Debug, Clone, Args, PartialEq, Eq)]
pub struct AdminArgs {
    /// host:port of the node's HTTP endpoint.
    #[arg(
        long = "http",
        value_name = "ADDR",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub http: String,
    /// Bearer token of the admin API (`http.admin_token`).
    #[arg(long, env = "TERN_ADMIN_TOKEN", value_name = "TOKEN", global = true)]
    pub token: Option<String>,
}

/// `tern clients ...`
#[derive(Debug, Clone, Subcommand, PartialEq, Eq)]
pub enum ClientsAction {
    /// Sessions of the node, online or not, in client id order.
    List {
        /// Only client ids starting with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Most sessions to list.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// List the client ids after this one (the previous page's last).
        #[arg(long)]
        after: Option<String>,
        /// Print the JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `tern sessions ...`
#[derive(Debug, Clone, Subcommand, PartialEq, Eq)]
pub enum SessionsAction {
    /// One session: online or not, its subscriptions, its queue.
    Show {
        /// The client id.
        id: String,
    },
    /// Ends a session: closes its connection and discards its
    /// subscriptions and queued messages.
    Delete {
        /// The client id.
        id: String,
    },
}

/// `tern retained ...`
#[derive(Debug, Clone, Subcommand, PartialEq, Eq)]
pub enum RetainedAction {
    /// Retained messages, in topic order.
    List {
        /// Only topics starting with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Most messages to list.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// List the topics after this one.
        #[arg(long)]
        after: Option<String>,
    },
    /// Deletes the retained message of TOPIC.
    Delete {
        /// The topic name.
        topic: String,
    },
}

/// `tern cluster ...`
#[derive(Debug, Clone, clap::Subcommand, PartialEq, Eq)]
pub enum ClusterAction {
    /// Members, leader, raft term and indexes, and each peer's health, as
    /// the node at ADDRESS sees them.
    Status {
        /// host:port of a node's cluster endpoint.
        #[arg(long, default_value = "127.0.0.1:7000")]
        address: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Removes node ID from the cluster (a raft configuration change).
    Remove {
        /// host:port of any node's cluster endpoint.
        #[arg(long, default_value = "127.0.0.1:7000")]
        address: String,
        /// The node to remove.
        id: u64,
    },
}

/// Commands other than running the broker.
#[derive(Debug, Clone, Subcommand, PartialEq, Eq)]
pub enum Command {
    /// Add a user to a password file, change its password, or delete it.
    ///
    /// The password is read from standard input (one line), or asked for
    /// twice without echo when standard input is a terminal. The file holds
    /// argon2id hashes (`user:$argon2id$...` lines) and is written atomically
    /// with mode 0600.
    Passwd(PasswdArgs),
    /// Print the SCRAM-SHA-256 credential line of USER for the file named by
    /// `enhanced_auth.scram_users_file` (MQTT 5 enhanced authentication).
    /// The password is read like `tern passwd` reads it; only derived keys
    /// are printed.
    ScramUser {
        /// The user name.
        user: String,
    },
    /// Inspect or change a running cluster through a node's cluster endpoint.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// List a node's clients through its HTTP admin API.
    Clients {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        action: ClientsAction,
    },
    /// Show or delete a session through a node's HTTP admin API.
    Sessions {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        action: SessionsAction,
    },
    /// Disconnect a client (its session stays if it is persistent).
    Kick {
        #[command(flatten)]
        admin: AdminArgs,
        /// The client id.
        id: String,
    },
    /// List or delete retained messages through a node's HTTP admin API.
    Retained {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        action: RetainedAction,
    },
}

/// Arguments of `tern passwd`.
#[derive(Debug, Clone, Args, PartialEq, Eq)]
pub struct PasswdArgs {
    /// Create the file, replacing one that exists.
    #[arg(short = 'c', long, conflicts_with = "delete")]
    pub create: bool,
    /// Delete the user instead of setting its password.
    #[arg(short = 'D', long)]
    pub delete: bool,
    /// The password file (`auth.password_file`).
    pub file: PathBuf,
    /// The user name.
    pub user: String,
}

impl Cli {
    /// The file's configuration (or the defaults) with the flags applied.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(bind) = self.bind {
            config
                .listeners
                .retain(|l| l.protocol != ListenerProtocol::Tcp);
            config.listeners.insert(
                0,
                ListenerConfig {
                    bind,
                    ..Default::default()
                },
            );
        }
        if let Some(bind) = self.ws_bind {
            let at = config
                .listeners
                .iter()
                .position(|l| l.protocol == ListenerProtocol::Ws);
            config
                .listeners
                .retain(|l| l.protocol != ListenerProtocol::Ws);
            let at = at
                .unwrap_or(config.listeners.len())
                .min(config.listeners.len());
            config.listeners.insert(
                at,
                ListenerConfig {
                    bind,
                    ..ListenerConfig::default_ws()
                },
            );
        }
        if let Some(level) = &self.log_level {
            config.log_level = level.clone();
        }
        if let Some(format) = self.log_format {
            config.log_format = format;
        }
        if let Some(workers) = self.workers {
            config.workers = workers;
        }
        if let Some(size) = self.max_packet_size {
            config.mqtt.max_packet_size = size;
        }
        if let Some(n) = self.max_queued_messages {
            config.mqtt.max_queued_messages = n;
        }
        if let Some(id) = self.node_id {
            config.cluster.node_id = id;
        }
        if let Some(on) = self.node_id_from_hostname {
            config.cluster.node_id_from_hostname = on;
        }
        if let Some(listen) = self.cluster_listen {
            config.cluster.listen = listen;
        }
        if let Some(a) = &self.cluster_advertise {
            config.cluster.advertise = a.clone();
        }
        if let Some(a) = &self.mqtt_advertise {
            config.cluster.mqtt_advertise = a.clone();
        }
        if let Some(seeds) = &self.seeds {
            config.cluster.seeds = seeds.iter().filter(|s| !s.is_empty()).cloned().collect();
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            config.telemetry.otlp_endpoint = endpoint.clone();
        }
        if let Some(name) = &self.otel_service_name {
            config.telemetry.service_name = name.clone();
        }
        if let Some(ratio) = self.otel_sample_ratio {
            config.telemetry.sample_ratio = ratio;
        }
        if let Some(ms) = self.otel_metric_export_interval {
            config.telemetry.metrics_interval_ms = ms;
        }
        if let Some(bind) = &self.http_bind {
            config.http.bind = bind.clone();
        }
        config.derive_node_id(super::system_hostname)?;
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn flags_override_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "data_dir = \"/a\"\n[mqtt]\nmax_packet_size = 100").unwrap();
        let cli = Cli::try_parse_from([
            "tern",
            "--config",
            file.path().to_str().unwrap(),
            "--data-dir",
            "/b",
            "--bind",
            "127.0.0.1:1999",
        ])
        .unwrap();
        let config = cli.load().unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/b"));
        assert_eq!(config.mqtt.max_packet_size, 100);
        assert_eq!(config.listeners.len(), 2);
        assert_eq!(config.listeners[0].bind, "127.0.0.1:1999".parse().unwrap());
        assert_eq!(config.listeners[0].protocol, ListenerProtocol::Tcp);
        assert_eq!(config.listeners[1], ListenerConfig::default_ws());
    }

    #[test]
    fn ws_bind_replaces_the_websocket_listener_only() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "[[listeners]]\nbind = \"127.0.0.1:1\"\n\
             [[listeners]]\nbind = \"127.0.0.1:2\"\nprotocol = \"ws\"\npath = \"/x\"\n\
             [[listeners]]\nbind = \"127.0.0.1:3\"\nprotocol = \"ws\""
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "tern",
            "--config",
            file.path().to_str().unwrap(),
            "--ws-bind",
            "127.0.0.1:0",
        ])
        .unwrap();
        let config = cli.load().unwrap();
        let listeners: Vec<_> = config
            .listeners
            .iter()
            .map(|l| (l.bind.to_string(), l.protocol, l.path.as_str()))
            .collect();
        assert_eq!(
            listeners,
            [
                ("127.0.0.1:1".to_string(), ListenerProtocol::Tcp, "/mqtt"),
                ("127.0.0.1:0".to_string(), ListenerProtocol::Ws, "/mqtt"),
            ]
        );
    }

    #[test]
    fn otel_variables_override_the_telemetry_section() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "[telemetry]\notlp_endpoint = \"http://a:4317\"\nservice_name = \"a\""
        )
        .unwrap();
        let path = file.path().to_str().unwrap();
        let kept = Cli::try_parse_from(["tern", "--config", path])
            .unwrap()
            .load()
            .unwrap();
        assert_eq!(kept.telemetry.otlp_endpoint, "http://a:4317");
        // the flags are what clap fills from OTEL_EXPORTER_OTLP_ENDPOINT and
        // OTEL_SERVICE_NAME (tests must not set process-wide variables)
        let cli = Cli::try_parse_from([
            "tern",
            "--config",
            path,
            "--otlp-endpoint",
            "http://b:4317",
            "--otel-service-name",
            "b",
            "--otel-sample-ratio",
            "0.25",
            "--otel-metric-export-interval",
            "1000",
        ])
        .unwrap();
        let config = cli.load().unwrap();
        assert_eq!(config.telemetry.otlp_endpoint, "http://b:4317");
        assert_eq!(config.telemetry.service_name, "b");
        assert_eq!(config.telemetry.sample_ratio, 0.25);
        assert_eq!(config.telemetry.metrics_interval_ms, 1000);
        let e = Cli::try_parse_from(["tern", "--otel-sample-ratio", "2"])
            .unwrap()
            .load()
            .unwrap_err()
            .to_string();
        assert!(e.contains("telemetry.sample_ratio"), "{e}");
        let off = Cli::try_parse_from(["tern", "--config", path, "--otlp-endpoint", ""])
            .unwrap()
            .load()
            .unwrap();
        assert!(!off.telemetry.enabled());
    }

    #[test]
    fn no_flags_no_file_gives_defaults() {
        let cli = Cli::try_parse_from(["tern"]).unwrap();
        assert_eq!(cli.load().unwrap(), Config::default());
    }

    #[test]
    fn passwd_is_a_subcommand_and_no_subcommand_runs_the_broker() {
        let cli = Cli::try_parse_from(["tern", "passwd", "-c", "/tmp/pw", "alice"]).unwrap();
        assert_eq!(
            cli.command,
            Some(Command::Passwd(PasswdArgs {
                create: true,
                delete: false,
                file: PathBuf::from("/tmp/pw"),
                user: "alice".into(),
            }))
        );
        assert!(Cli::try_parse_from(["tern", "passwd", "-c", "-D", "/tmp/pw", "a"]).is_err());
        assert_eq!(
            Cli::try_parse_from(["tern", "--workers", "2"])
                .unwrap()
                .command,
            None
        );
    }

    #[test]
    fn node_id_from_hostname_flag_and_env_forms() {
        let flag = Cli::try_parse_from(["tern", "--node-id-from-hostname"]).unwrap();
        assert_eq!(flag.node_id_from_hostname, Some(true));
        let off = Cli::try_parse_from(["tern", "--node-id-from-hostname=false"]).unwrap();
        assert_eq!(off.node_id_from_hostname, Some(false));
        assert_eq!(off.load().unwrap().cluster.node_id, 0);
        assert!(
            Cli::try_parse_from(["tern", "--node-id-from-hostname", "--node-id", "2"]).is_err()
        );
    }

    #[test]
    fn http_flag_and_admin_commands_parse() {
        let cli = Cli::try_parse_from(["tern", "--http-bind", ""]).unwrap();
        assert_eq!(cli.load().unwrap().http.bind_addr().unwrap(), None);
        let e = Cli::try_parse_from(["tern", "--http-bind", "nowhere"])
            .unwrap()
            .load()
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.bind") && e.contains("nowhere"), "{e}");
        let cli = Cli::try_parse_from([
            "tern",
            "kick",
            "c1",
            "--http",
            "127.0.0.1:1",
            "--token",
            "t",
        ])
        .unwrap();
        assert_eq!(
            cli.command,
            Some(Command::Kick {
                admin: AdminArgs {
                    http: "127.0.0.1:1".into(),
                    token: Some("t".into())
                },
                id: "c1".into()
            })
        );
        let cli = Cli::try_parse_from(["tern", "clients", "list", "--prefix", "a"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Clients { action: ClientsAction::List { ref prefix, limit: 100, .. }, .. })
                if prefix.as_deref() == Some("a")
        ));
    }

    #[test]
    fn bad_flag_value_is_rejected_by_clap() {
        let e = Cli::try_parse_from(["tern", "--bind", "nowhere"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--bind") && e.contains("nowhere"), "{e}");
    }
}
