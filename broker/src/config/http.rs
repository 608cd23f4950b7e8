//! `[http]`: where the node's HTTP endpoint (metrics, health, admin API)
//! listens and how its admin API is protected. Owns parsing and checking
//! these keys; the server itself is `crate::http`.

use std::net::SocketAddr;

use serde::Deserialize;

use super::ConfigError;

/// The HTTP endpoint of one node.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `address:port` of the endpoint (port 0 picks a free one); the empty
    /// string turns it off.
    pub bind: String,
    /// Bearer token the admin API (`/api/v1/`) requires. Unset: the admin
    /// API answers loopback peers only.
    pub admin_token: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            bind: "0.0.0.0:8080".into(),
            admin_token: None,
        }
    }
}

impl HttpConfig {
    /// The address to bind, `None` when the endpoint is off.
    pub fn bind_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.bind.is_empty() {
            return Ok(None);
        }
        self.bind
            .parse()
            .map(Some)
            .map_err(|_| ConfigError::Invalid {
                key: "http.bind",
                value: format!("{:?}", self.bind),
                reason: "expected `address:port`, or \"\" to turn the endpoint off",
            })
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.bind_addr()?;
        if self.admin_token.as_deref() == Some("") {
            return Err(ConfigError::Invalid {
                key: "http.admin_token",
                value: "\"\"".into(),
                reason: "must not be empty (leave it unset for loopback-only access)",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn http_section_is_read_and_checked() {
        let c = Config::from_toml("[http]\nbind = \"127.0.0.1:9100\"\nadmin_token = \"s3cret\"\n")
            .unwrap();
        assert_eq!(
            c.http.bind_addr().unwrap(),
            Some("127.0.0.1:9100".parse().unwrap())
        );
        assert_eq!(c.http.admin_token.as_deref(), Some("s3cret"));
        let off = Config::from_toml("[http]\nbind = \"\"\n").unwrap();
        assert_eq!(off.http.bind_addr().unwrap(), None);
        assert_eq!(
            Config::default().http.bind_addr().unwrap(),
            Some("0.0.0.0:8080".parse().unwrap())
        );
        let e = Config::from_toml("[http]\nbind = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.bind") && e.contains("localhost"), "{e}");
        let e = Config::from_toml("[http]\nadmin_token = \"\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.admin_token"), "{e}");
        let c = Config::from_toml("sys_interval_secs = 3\n").unwrap();
        assert_eq!(c.sys_interval_secs, 3);
        assert_eq!(Config::default().sys_interval_secs, 10);
    }
}
