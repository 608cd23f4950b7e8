//! PostgreSQL routes: a prepared statement run for each message, with the
//! message's fields bound as parameters, over a connection pool; batches of
//! messages are run in one transaction.
//!
//! Owns the pool and the translated query. Never builds SQL from a
//! message: its fields are bound to parameters (see `query.rs` for how the
//! named placeholders become `$1..$n`, `bind.rs` for the types).
//!
//! Lifecycle of a batch ([`Sink::deliver`]):
//! 1. take a connection from the pool (opening one if needed) and prepare
//!    the statement on it (cached per connection). Either failing is a
//!    `Retry` for the whole batch: the server may be down, or the table
//!    the query names may not exist yet (it is prepared again next time);
//! 2. bind each message's fields in the types the server inferred; a
//!    message that cannot be bound (a payload that is not UTF-8 for a text
//!    parameter) is `Reject`ed alone;
//! 3. run the rest in one transaction, the executes pipelined (`BEGIN`,
//!    n executes, `COMMIT`: three round trips whatever the batch size);
//! 4. if that fails for a data reason (SQLSTATE class 22 or 23, or a
//!    trigger's `RAISE`), roll back and run the messages one by one, each
//!    in its own transaction, so only the message at fault is `Reject`ed;
//!    after the first `Retry` the rest of the batch is not tried (and is
//!    `Retry`), which keeps each topic's messages in order.
//!
//! Errors that say nothing about the message (a lost connection, classes
//! 08 connection, 53 resources, 57 operator intervention, 40 rollback, and
//! any other) are `Retry`: the route's worker retries with backoff and,
//! after `max_attempts`, dead-letters. A commit whose answer is lost may
//! have been applied: delivery is at least once, and a query made
//! idempotent with `$SEQ`/`$UID` (README, "PostgreSQL routes") stores each
//! message once.

mod bind;
mod query;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures::future::BoxFuture;
use serde::Deserialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Statement};

use super::sink::{DeliveryError, Outcome, RoutedMessage, Secret, Sink};
use bind::{Encoding, Value};
use query::Translated;

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
    /// Longest a batch may take (connecting included) before it is given up
    /// as `Retry` and its connection closed.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_pool_size() -> usize {
    4
}

fn default_max_batch() -> usize {
    100
}

fn default_timeout_ms() -> u64 {
    30_000
}

/// Longest wait to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The PostgreSQL target of a route.
pub struct PostgresSink {
    pool: Pool,
    query: Translated,
    max_batch: usize,
    timeout: Duration,
    /// `postgres://user@host:port/db`, for messages (never the password).
    target: String,
}

impl PostgresSink {
    /// Checks the configuration (query placeholders, URL, secrets) and sets
    /// up the pool; connections are opened when first used.
    pub fn new(config: &PostgresRoute) -> Result<PostgresSink, String> {
        let query = query::translate(&config.query)?;
        let mut pg: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| format!("url: not a PostgreSQL connection string: {e}"))?;
        if let Some(password) = &config.password {
            pg.password(password.resolve().map_err(|e| format!("password: {e}"))?);
        }
        pg.connect_timeout(CONNECT_TIMEOUT);
        if pg.get_application_name().is_none() {
            pg.application_name("tern");
        }
        if config.pool_size == 0 {
            return Err("pool_size: must be at least 1".into());
        }
        if config.max_batch == 0 {
            return Err("max_batch: must be at least 1".into());
        }
        if config.timeout_ms == 0 {
            return Err("timeout_ms: must be at least 1".into());
        }
        let target = target(&pg);
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                // A closed connection is noticed and replaced; a broken one
                // that looks open fails its next query (a `Retry`) and is
                // dropped then.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| format!("connection pool: {e}"))?;
        Ok(PostgresSink {
            pool,
            query,
            max_batch: config.max_batch,
            timeout: Duration::from_millis(config.timeout_ms),
            target,
        })
    }

    async fn deliver_batch(&self, batch: &[RoutedMessage]) -> Vec<Outcome> {
        let retry_all = |e: String| vec![Err(DeliveryError::Retry(e)); batch.len()];
        let mut client = match tokio::time::timeout(self.timeout, self.pool.get()).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                return retry_all(format!(
                    "cannot connect to {}: {}",
                    self.target,
                    pool_error(e)
                ))
            }
            Err(_) => {
                return retry_all(format!(
                    "no connection to {} within {:?}",
                    self.target, self.timeout
                ))
            }
        };
        match tokio::time::timeout(self.timeout, self.run(&mut client, batch)).await {
            Ok(outcomes) => outcomes,
            Err(_) => {
                // The connection may be in the middle of a transaction:
                // close it rather than give it to the next batch.
                drop(deadpool_postgres::Object::take(client));
                retry_all(format!(
                    "{} did not answer within {:?}",
                    self.target, self.timeout
                ))
            }
        }
    }

    async fn run(
        &self,
        client: &mut deadpool_postgres::Client,
        batch: &[RoutedMessage],
    ) -> Vec<Outcome> {
        let retry_all = |e: String| vec![Err(DeliveryError::Retry(e)); batch.len()];
        let statement = match client.prepare_cached(&self.query.sql).await {
            Ok(statement) => statement,
            Err(e) => {
                return retry_all(format!(
                    "cannot prepare the route's query on {} (it is tried again; a table created later is used): {}",
                    self.target,
                    describe(&e)
                ))
            }
        };
        let encodings: Result<Vec<Encoding>, String> = statement
            .params()
            .iter()
            .zip(&self.query.fields)
            .map(|(ty, field)| bind::encoding(*field, ty))
            .collect();
        let encodings = match encodings {
            Ok(encodings) => encodings,
            Err(e) => {
                self.forget_statement();
                return retry_all(format!("the route's query cannot be used: {e}"));
            }
        };

        let mut outcomes: Vec<Outcome> = vec![Ok(()); batch.len()];
        let mut bound: Vec<(usize, Vec<Value>)> = Vec::with_capacity(batch.len());
        for (i, message) in batch.iter().enumerate() {
            match bind::values(message, &self.query.fields, &encodings) {
                Ok(values) => bound.push((i, values)),
                Err(e) => outcomes[i] = Err(DeliveryError::Reject(e)),
            }
        }

        if bound.len() > 1 {
            match run_in_transaction(client, &statement, &bound).await {
                Ok(()) => return outcomes,
                Err(e) => match classify(&e) {
                    // One message's data: find it below.
                    DeliveryError::Reject(_) => {}
                    DeliveryError::Retry(message) => {
                        self.forget_if_stale(&e);
                        for (i, _) in &bound {
                            outcomes[*i] = Err(DeliveryError::Retry(message.clone()));
                        }
                        return outcomes;
                    }
                },
            }
        }

        let mut not_tried: Option<String> = None;
        for (i, values) in &bound {
            if let Some(e) = &not_tried {
                outcomes[*i] = Err(DeliveryError::Retry(e.clone()));
                continue;
            }
            if let Err(e) = client.execute(&statement, &params(values)).await {
                let error = classify(&e);
                self.forget_if_stale(&e);
                if let DeliveryError::Retry(e) = &error {
                    not_tried = Some(format!(
                        "not tried after an earlier message of the batch failed: {e}"
                    ));
                }
                outcomes[*i] = Err(error);
            }
        }
        outcomes
    }
}

impl PostgresSink {
    /// Drops the prepared statement from every connection's cache, so the
    /// next batch prepares it again: the parameter types it was prepared
    /// with may be stale (a table created, dropped or altered since).
    fn forget_statement(&self) {
        self.pool
            .manager()
            .statement_caches
            .remove(&self.query.sql, &[]);
    }

    /// [`forget_statement`](Self::forget_statement) after a server error
    /// that is neither the data's (22, 23) nor the connection's: one that
    /// may come from a schema change.
    fn forget_if_stale(&self, e: &tokio_postgres::Error) {
        let class = e.code().map(|c| &c.code()[..2]);
        if class.is_some_and(|c| !matches!(c, "22" | "23" | "08" | "53" | "57")) {
            self.forget_statement();
        }
    }
}

impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSink")
            .field("target", &self.target)
            .field("sql", &self.query.sql)
            .finish_non_exhaustive()
    }
}

impl Sink for PostgresSink {
    fn deliver<'a>(&'a self, batch: &'a [RoutedMessage]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(self.deliver_batch(batch))
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn target(&self) -> String {
        self.target.clone()
    }
}

fn params(values: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

/// Runs every message in one transaction, the executes pipelined. The error
/// is the one that made the transaction fail (not the "current transaction
/// is aborted" of the executes after it).
async fn run_in_transaction(
    client: &mut deadpool_postgres::Client,
    statement: &Statement,
    bound: &[(usize, Vec<Value>)],
) -> Result<(), tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    let params: Vec<Vec<&(dyn ToSql + Sync)>> = bound.iter().map(|(_, v)| params(v)).collect();
    let results =
        futures::future::join_all(params.iter().map(|p| transaction.execute(statement, p))).await;
    let mut first_error = None;
    for result in results {
        if let Err(e) = result {
            if e.code() != Some(&SqlState::IN_FAILED_SQL_TRANSACTION) {
                first_error = Some(e);
                break;
            }
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        None => transaction.commit().await,
        Some(e) => {
            // If the rollback fails the connection is broken; the pool
            // drops it when it is returned.
            let _ = transaction.rollback().await;
            Err(e)
        }
    }
}

/// `Reject` for errors this message's data causes, `Retry` for the rest.
fn classify(e: &tokio_postgres::Error) -> DeliveryError {
    let message = describe(e);
    match e.code().map(|c| c.code()) {
        // 22 data exception (bad input syntax, value too long, invalid
        // UTF-8 sequence), 23 integrity constraint violation, P0001 a
        // trigger's RAISE EXCEPTION (the database refusing this row).
        Some(code) if code.starts_with("22") || code.starts_with("23") || code == "P0001" => {
            DeliveryError::Reject(message)
        }
        _ => DeliveryError::Retry(message),
    }
}

/// The server's message with its SQLSTATE, or the client's error.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
            if let Some(detail) = db.detail() {
                text.push_str(" (");
                text.push_str(detail);
                text.push(')');
            }
            text
        }
        None => e.to_string(),
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => describe(&e),
        e => e.to_string(),
    }
}

/// `postgres://user@host:port/db` from the parsed configuration.
fn target(pg: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let host = match host {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            match pg.get_ports().get(i).or(pg.get_ports().first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    let user = pg.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let db = pg.get_dbname().unwrap_or_default();
    format!("postgres://{user}{}/{db}", hosts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(url: &str, query: &str) -> PostgresRoute {
        toml::from_str(&format!("url = {url:?}\nquery = {query:?}")).unwrap()
    }

    #[tokio::test]
    async fn the_target_names_user_host_and_database_but_never_the_password() {
        let mut config = route(
            "postgres://tern:hunter2@db.example:6543/iot",
            "INSERT INTO t VALUES ($TOPIC)",
        );
        assert_eq!(config.pool_size, 4);
        assert_eq!(config.max_batch, 100);
        assert_eq!(config.timeout_ms, 30_000);
        config.password = Some(Secret::Plain("other".into()));
        let sink = PostgresSink::new(&config).unwrap();
        assert_eq!(sink.target(), "postgres://tern@db.example:6543/iot");
        assert_eq!(sink.max_batch(), 100);
        let sink =
            PostgresSink::new(&route("host=/run/pg user=u dbname=d", "SELECT $QOS")).unwrap();
        assert_eq!(sink.target(), "postgres://u@/run/pg/d");
    }

    #[test]
    fn bad_configurations_are_refused_with_the_key_named() {
        let err = |config: PostgresRoute| PostgresSink::new(&config).err().unwrap();
        assert!(
            err(route("postgres://h/d", "SELECT $NOPE")).contains("unknown placeholder `$NOPE`")
        );
        assert!(err(route("postgres://h:x/d", "SELECT 1")).starts_with("url:"));
        let mut config = route("postgres://h/d", "SELECT 1");
        config.pool_size = 0;
        assert!(err(config).starts_with("pool_size:"));
        let mut config = route("postgres://h/d", "SELECT 1");
        config.password = Some(Secret::Env {
            env: "TERN_TEST_PG_PASSWORD_UNSET".into(),
        });
        assert!(err(config).contains("TERN_TEST_PG_PASSWORD_UNSET"));
        assert!(toml::from_str::<PostgresRoute>("url = \"u\"\nquery = \"q\"\nbatch = 1").is_err());
    }
}
