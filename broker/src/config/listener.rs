//! `[[listeners]]`: network endpoints, their protocol and, for TLS and
//! secure WebSocket, the `[listeners.tls]` table.
//!
//! With no `[[listeners]]` in the file a node listens for MQTT over TCP on
//! 0.0.0.0:1883 and over WebSocket on 0.0.0.0:8083 (path `/mqtt`). TLS
//! listeners exist only when configured, since they need a certificate.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// One network endpoint.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// Address and port to bind; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Wire protocol of the endpoint.
    pub protocol: ListenerProtocol,
    /// Most simultaneous connections on this endpoint; further ones are closed
    /// at accept, before any TLS or WebSocket handshake.
    pub max_connections: usize,
    /// HTTP path of the WebSocket endpoint (`ws`, `wss`); other paths get 404.
    pub path: String,
    /// Certificate, key and client-certificate checks (`tls`, `wss`).
    pub tls: Option<TlsConfig>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            bind: SocketAddr::from(([0, 0, 0, 0], 1883)),
            protocol: ListenerProtocol::Tcp,
            max_connections: 1_000_000,
            path: DEFAULT_WS_PATH.into(),
            tls: None,
        }
    }
}

/// Path of WebSocket endpoints unless `path` says otherwise.
pub const DEFAULT_WS_PATH: &str = "/mqtt";

impl ListenerConfig {
    /// The default WebSocket listener: 0.0.0.0:8083, path `/mqtt`.
    pub fn default_ws() -> ListenerConfig {
        ListenerConfig {
            bind: SocketAddr::from(([0, 0, 0, 0], 8083)),
            protocol: ListenerProtocol::Ws,
            ..Default::default()
        }
    }

    /// The listeners of a configuration that names none.
    pub fn defaults() -> Vec<ListenerConfig> {
        vec![ListenerConfig::default(), ListenerConfig::default_ws()]
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, value: String, reason| Err(ConfigError::Invalid { key, value, reason });
        if self.max_connections == 0 {
            return invalid(
                "listeners.max_connections",
                "0".into(),
                "must be at least 1",
            );
        }
        if !self.path.starts_with('/') {
            return invalid(
                "listeners.path",
                format!("{:?}", self.path),
                "must start with `/`",
            );
        }
        match (&self.tls, self.protocol.is_tls()) {
            (None, true) => {
                return invalid(
                    "listeners.tls",
                    format!("(missing for {} on {})", self.protocol, self.bind),
                    "protocol tls and wss need a [listeners.tls] table with cert and key",
                )
            }
            (Some(_), false) => {
                return invalid(
                    "listeners.tls",
                    format!("(given for {} on {})", self.protocol, self.bind),
                    "only listeners with protocol tls or wss take a [listeners.tls] table",
                )
            }
            _ => {}
        }
        if let Some(tls) = &self.tls {
            tls.validate()?;
        }
        Ok(())
    }
}

/// Wire protocol of a listener.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    /// MQTT over plain TCP.
    Tcp,
    /// MQTT over TLS.
    Tls,
    /// MQTT over WebSocket (binary frames, subprotocol `mqtt`).
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
}

impl ListenerProtocol {
    /// The endpoint speaks TLS (`tls`, `wss`).
    pub fn is_tls(self) -> bool {
        matches!(self, ListenerProtocol::Tls | ListenerProtocol::Wss)
    }

    /// The endpoint speaks WebSocket (`ws`, `wss`).
    pub fn is_websocket(self) -> bool {
        matches!(self, ListenerProtocol::Ws | ListenerProtocol::Wss)
    }
}

impl std::fmt::Display for ListenerProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ListenerProtocol::Tcp => "tcp",
            ListenerProtocol::Tls => "tls",
            ListenerProtocol::Ws => "ws",
            ListenerProtocol::Wss => "wss",
        })
    }
}

/// `[listeners.tls]`: the server's certificate and how clients' certificates
/// are checked. Files are PEM; they are re-read when they change (see
/// `reload_interval_secs`) or on SIGHUP.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Server certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates that client certificates must chain to.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Whether clients must present a certificate.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Certificate revocation lists; a client certificate listed in one is
    /// refused.
    #[serde(default)]
    pub crl: Vec<PathBuf>,
    /// Which part of a client certificate is the client's identity.
    #[serde(default)]
    pub identity: IdentitySource,
    /// Seconds between checks of the files for changes; 0 disables the
    /// check (SIGHUP still reloads).
    #[serde(default = "default_reload_interval_secs")]
    pub reload_interval_secs: u64,
}

fn default_reload_interval_secs() -> u64 {
    5
}

impl TlsConfig {
    /// A configuration with `cert` and `key` and every other key at its default.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsConfig {
        TlsConfig {
            cert: cert.into(),
            key: key.into(),
            ca: None,
            client_auth: ClientAuth::None,
            crl: Vec::new(),
            identity: IdentitySource::Cn,
            reload_interval_secs: default_reload_interval_secs(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.client_auth != ClientAuth::None && self.ca.is_none() {
            return Err(ConfigError::Invalid {
                key: "listeners.tls.ca",
                value: "(missing)".into(),
                reason: "client_auth optional or required needs a CA bundle to check client certificates against",
            });
        }
        if self.client_auth == ClientAuth::None && !self.crl.is_empty() {
            return Err(ConfigError::Invalid {
                key: "listeners.tls.crl",
                value: format!("{:?}", self.crl),
                reason: "revocation lists apply to client certificates: set client_auth to optional or required",
            });
        }
        Ok(())
    }
}

/// Whether a TLS listener asks for client certificates.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No certificate is asked for.
    #[default]
    None,
    /// A certificate is asked for; a client without one is let in, a client
    /// with an invalid one is refused.
    Optional,
    /// A client without a valid certificate is refused.
    Required,
}

/// Which part of a client certificate names the client.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IdentitySource {
    /// The subject's Common Name.
    #[default]
    Cn,
    /// The first Subject Alternative Name of type DNS, email or URI.
    San,
}

/// Checks every listener.
pub(super) fn validate_listeners(listeners: &[ListenerConfig]) -> Result<(), ConfigError> {
    if listeners.is_empty() {
        return Err(ConfigError::Invalid {
            key: "listeners",
            value: "[]".into(),
            reason: "at least one listener is needed",
        });
    }
    listeners.iter().try_for_each(ListenerConfig::validate)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    use super::*;

    fn error(text: &str) -> String {
        Config::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn no_listeners_gives_tcp_1883_and_ws_8083() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.listeners[0].bind, "0.0.0.0:1883".parse().unwrap());
        assert_eq!(c.listeners[0].protocol, ListenerProtocol::Tcp);
        assert_eq!(c.listeners[1].bind, "0.0.0.0:8083".parse().unwrap());
        assert_eq!(c.listeners[1].protocol, ListenerProtocol::Ws);
        assert_eq!(c.listeners[1].path, "/mqtt");
    }

    #[test]
    fn every_protocol_and_tls_key_is_read() {
        let c = Config::from_toml(
            r#"
            [[listeners]]
            bind = "127.0.0.1:1883"
            [[listeners]]
            bind = "127.0.0.1:8883"
            protocol = "tls"
            max_connections = 5
            [listeners.tls]
            cert = "server.pem"
            key = "server.key"
            ca = "ca.pem"
            client_auth = "required"
            crl = ["a.crl", "b.crl"]
            identity = "san"
            reload_interval_secs = 0
            [[listeners]]
            bind = "127.0.0.1:8083"
            protocol = "ws"
            path = "/ws"
            [[listeners]]
            bind = "127.0.0.1:8084"
            protocol = "wss"
            [listeners.tls]
            cert = "server.pem"
            key = "server.key"
            "#,
        )
        .unwrap();
        let protocols: Vec<_> = c.listeners.iter().map(|l| l.protocol).collect();
        assert_eq!(
            protocols,
            [
                ListenerProtocol::Tcp,
                ListenerProtocol::Tls,
                ListenerProtocol::Ws,
                ListenerProtocol::Wss
            ]
        );
        let tls = c.listeners[1].tls.as_ref().unwrap();
        assert_eq!(tls.client_auth, ClientAuth::Required);
        assert_eq!(tls.identity, IdentitySource::San);
        assert_eq!(tls.crl, [PathBuf::from("a.crl"), PathBuf::from("b.crl")]);
        assert_eq!(tls.ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(tls.reload_interval_secs, 0);
        assert_eq!(c.listeners[2].path, "/ws");
        let wss = c.listeners[3].tls.as_ref().unwrap();
        assert_eq!(wss, &TlsConfig::new("server.pem", "server.key"));
    }

    #[test]
    fn tls_listener_without_tls_table_is_named() {
        let e = error("[[listeners]]\nbind = \"127.0.0.1:1\"\nprotocol = \"tls\"\n");
        assert!(
            e.contains("`listeners.tls`") && e.contains("cert and key"),
            "{e}"
        );
    }

    #[test]
    fn tls_table_on_plain_listener_is_named() {
        let e = error(
            "[[listeners]]\nbind = \"127.0.0.1:1\"\nprotocol = \"ws\"\n\
             [listeners.tls]\ncert = \"c\"\nkey = \"k\"\n",
        );
        assert!(
            e.contains("`listeners.tls`") && e.contains("only listeners"),
            "{e}"
        );
    }

    #[test]
    fn missing_cert_is_named() {
        let e = error(
            "[[listeners]]\nbind = \"127.0.0.1:1\"\nprotocol = \"tls\"\n\
             [listeners.tls]\nkey = \"k\"\n",
        );
        assert!(e.contains("cert"), "{e}");
    }

    #[test]
    fn client_auth_without_ca_is_named() {
        let e = error(
            "[[listeners]]\nbind = \"127.0.0.1:1\"\nprotocol = \"tls\"\n\
             [listeners.tls]\ncert = \"c\"\nkey = \"k\"\nclient_auth = \"optional\"\n",
        );
        assert!(e.contains("`listeners.tls.ca`"), "{e}");
    }

    #[test]
    fn crl_without_client_auth_is_named() {
        let e = error(
            "[[listeners]]\nbind = \"127.0.0.1:1\"\nprotocol = \"tls\"\n\
             [listeners.tls]\ncert = \"c\"\nkey = \"k\"\ncrl = [\"x.crl\"]\n",
        );
        assert!(e.contains("`listeners.tls.crl`"), "{e}");
    }

    #[test]
    fn bad_enum_values_are_named() {
        let e = error("[[listeners]]\nbind = \"127.0.0.1:1\"\nprotocol = \"quic\"\n");
        assert!(e.contains("quic") && e.contains("protocol"), "{e}");
        let e = error(
            "[[listeners]]\nbind = \"127.0.0.1:1\"\nprotocol = \"tls\"\n\
             [listeners.tls]\ncert = \"c\"\nkey = \"k\"\nclient_auth = \"sometimes\"\n",
        );
        assert!(e.contains("sometimes") && e.contains("client_auth"), "{e}");
        let e = error(
            "[[listeners]]\nbind = \"127.0.0.1:1\"\nprotocol = \"tls\"\n\
             [listeners.tls]\ncert = \"c\"\nkey = \"k\"\nidentity = \"email\"\n",
        );
        assert!(e.contains("email") && e.contains("identity"), "{e}");
    }

    #[test]
    fn path_must_be_absolute() {
        let e =
            error("[[listeners]]\nbind = \"127.0.0.1:1\"\nprotocol = \"ws\"\npath = \"mqtt\"\n");
        assert!(e.contains("`listeners.path`"), "{e}");
    }
}
