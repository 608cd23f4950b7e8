//! An S3-compatible server of the test's own: moto's (`moto_server`, from
//! PyPI, in the venv `scripts/test.sh` makes; `TERN_MOTO_SERVER` names it,
//! else `moto_server` on the `PATH`) on a free loopback port. It keeps
//! everything in memory: a restart loses the buckets.
//!
//! The checks read the store with plain HTTP requests, not with the
//! `object_store` client the sink uses: moto does not check signatures, but
//! it answers an anonymous GET with 403, so they carry an `Authorization`
//! header naming the test's key with a dummy signature.
//!
//! Lifecycle: [`S3Server::start`], then any number of [`S3Server::stop`] /
//! [`S3Server::start_again`] on the same port; dropped = killed.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::process::free_port;

/// Credentials routes are given (moto accepts any).
pub const ACCESS_KEY_ID: &str = "tern-test-key";
pub const SECRET_ACCESS_KEY: &str = "tern-test-secret";

/// A running moto server.
pub struct S3Server {
    pub port: u16,
    child: Option<Child>,
    log: tempfile::NamedTempFile,
}

impl S3Server {
    /// Starts moto and waits until it answers.
    pub fn start() -> S3Server {
        let mut server = S3Server {
            port: free_port(),
            child: None,
            log: tempfile::NamedTempFile::new().expect("log file"),
        };
        server.start_again();
        server
    }

    /// Starts it again after [`stop`](Self::stop), same port, no buckets.
    pub fn start_again(&mut self) {
        let program = std::env::var("TERN_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(self.log.reopen().unwrap())
            .stderr(self.log.reopen().unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{program}: {e} (scripts/test.sh installs moto[server] and sets TERN_MOTO_SERVER)")
            });
        self.child = Some(child);
        let ready = super::wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
        assert!(
            ready,
            "moto did not listen on {}: {}",
            self.port,
            self.log()
        );
    }

    /// Kills the server.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `http://127.0.0.1:PORT`, a route's `endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// A request with the test's (unchecked) credentials.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, format!("{}/{path}", self.endpoint()))
            .header(
                "Authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/20261205/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00"
                ),
            )
    }

    pub async fn create_bucket(&self, bucket: &str) {
        let response = self
            .request(reqwest::Method::PUT, bucket)
            .send()
            .await
            .expect("create bucket");
        assert!(
            response.status().is_success(),
            "create bucket {bucket}: {response:?}"
        );
    }

    /// The object's bytes; `None` when there is none at `key`.
    pub async fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let response = self
            .request(reqwest::Method::GET, &format!("{bucket}/{key}"))
            .send()
            .await
            .expect("get object");
        match response.status().as_u16() {
            200 => Some(response.bytes().await.unwrap().to_vec()),
            404 => None,
            status => panic!("get {bucket}/{key}: {status}"),
        }
    }

    /// Every key in the bucket under `prefix`, sorted (one listing page:
    /// up to 1000 keys, more than any test writes).
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        self.try_keys(bucket, prefix)
            .await
            .unwrap_or_else(|| panic!("cannot list {bucket}: {}", self.log()))
    }

    /// [`keys`](Self::keys), or `None` when the server or the bucket is
    /// not there.
    pub async fn try_keys(&self, bucket: &str, prefix: &str) -> Option<Vec<String>> {
        let response = self
            .request(reqwest::Method::GET, bucket)
            .query(&[("list-type", "2"), ("prefix", prefix)])
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        let xml = response.text().await.ok()?;
        let mut keys: Vec<String> = xml
            .split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split("</Key>").next())
            .map(|k| {
                k.replace("&amp;", "&")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
            })
            .collect();
        keys.sort();
        Some(keys)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An S3 route named `name` for `topic` into `bucket` on `server`, keys
/// under `prefix`, `strategy` `per_topic` or `per_message`, with the quick
/// retries of `hub::rest_route` (backoff 20 to 200 ms, 1000 attempts).
pub fn s3_route(
    name: &str,
    topic: &str,
    server: &S3Server,
    bucket: &str,
    prefix: &str,
    strategy: &str,
) -> broker::hub::config::RouteConfig {
    let value = serde_json::json!({
        "name": name,
        "topic": topic,
        "type": "s3",
        "bucket": bucket,
        "endpoint": server.endpoint(),
        "prefix": prefix,
        "strategy": strategy,
        "access_key_id": ACCESS_KEY_ID,
        "secret_access_key": SECRET_ACCESS_KEY,
        "backoff_initial_ms": 20,
        "backoff_max_ms": 200,
        "max_attempts": 1000,
    });
    broker::hub::config::RouteConfig::from_json(&value)
        .unwrap_or_else(|e| panic!("route definition: {e}"))
}
