//! PostgreSQL routes: a prepared statement run for each message, with the
//! message's fields bound as parameters, over a connection pool; batches of
//! messages are run in one transaction.

use serde::Deserialize;

use super::sink::Secret;

/// `type = "postgres"` keys of a `[[routes]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresRoute {
    /// `postgres://user@host:port/database` (a password in it is accepted
    /// but `password` is the place for it).
    pub url: String,
    /// Password, overriding the URL's.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The statement, with `$TOPIC`, `$PAYLOAD`, `$QOS`, `$RETAIN`,
    /// `$CLIENT_ID`, `$TIMESTAMP` (and `$SEQ`, `$UID`) where values go;
    /// they are bound as parameters, never spliced into the text.
    pub query: String,
    /// Connections in the pool.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Most messages run in one transaction.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
}

fn default_pool_size() -> usize {
    4
}

fn default_max_batch() -> usize {
    100
}

/// The PostgreSQL target of a route.
pub struct PostgresSink {}

impl PostgresSink {
    /// Checks the configuration (query placeholders, URL, secrets) and sets
    /// up the pool; connections are opened when first used.
    pub fn new(_config: &PostgresRoute) -> Result<PostgresSink, String> {
        Err("PostgreSQL routes are not built yet".into())
    }
}
