//! TLS for the `tls` and `wss` listeners (rustls, `ring` provider): the
//! server's certificate, the checks of client certificates, the identity a
//! client certificate gives, and reloading the files without a restart.
//!
//! Client certificates are checked by rustls's `WebPkiClientVerifier`: the
//! chain must lead to a CA of the configured bundle, every certificate of it
//! must be valid now (an expired one is refused), and none may be listed in a
//! configured CRL. A certificate whose issuer has no CRL among the configured
//! ones is not refused for that ("unknown revocation status" is allowed), so
//! that one CA of a bundle can have a CRL and another none.
//!
//! Lifecycle of a [`TlsSource`]:
//! 1. `load` reads every file (an error names the file) when the listener is
//!    bound, so a bad file stops the node at startup;
//! 2. each handshake takes the current `rustls::ServerConfig`;
//! 3. `watch` re-reads the files every `reload_interval_secs` when one of
//!    them changed (modification time, size or inode), and on SIGHUP in any
//!    case; new handshakes use the new material, established connections
//!    keep theirs. A reload that fails logs the error and keeps the old
//!    material.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use tokio::sync::watch;

use crate::config::{ClientAuth, IdentitySource, TlsConfig};

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A configured file could not be read.
    #[error("cannot read {what} file {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file is not PEM, or holds no item of the expected kind.
    #[error("{what} file {path}: {message}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    /// rustls refused the material (e.g. the key does not match the
    /// certificate, a CA certificate or a CRL does not parse).
    #[error("{what}: {message}")]
    Rustls { what: &'static str, message: String },
}

/// The TLS material of one listener, reloadable.
pub struct TlsSource {
    config: TlsConfig,
    /// For log lines.
    label: String,
    current: RwLock<Arc<ServerConfig>>,
    /// What the files looked like at the last load attempt, good or bad: a
    /// bad file is reported once, not at every check.
    stamps: Mutex<Vec<FileStamp>>,
}

/// Modification time, size and inode of a file; `None` if it can't be read.
type FileStamp = Option<(SystemTime, u64, u64)>;

impl TlsSource {
    /// Reads the files of `config`. `label` names the listener in logs.
    pub fn load(config: &TlsConfig, label: String) -> Result<TlsSource, TlsError> {
        let stamps = stamp_files(config);
        let server_config = build_server_config(config)?;
        Ok(TlsSource {
            config: config.clone(),
            label,
            current: RwLock::new(Arc::new(server_config)),
            stamps: Mutex::new(stamps),
        })
    }

    /// The material new handshakes use.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current.read().clone()
    }

    /// The identity source of client certificates, and whether one is required.
    pub fn client_auth(&self) -> (ClientAuth, IdentitySource) {
        (self.config.client_auth, self.config.identity)
    }

    /// Re-reads the files; on error the current material stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        *self.stamps.lock() = stamp_files(&self.config);
        let server_config = build_server_config(&self.config)?;
        *self.current.write() = Arc::new(server_config);
        Ok(())
    }

    /// Re-reads the files if one changed since the last attempt. `None` if
    /// nothing changed.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let now = stamp_files(&self.config);
        if *self.stamps.lock() == now {
            return None;
        }
        Some(self.reload())
    }

    /// Reloads on file changes (every `reload_interval_secs`, if not 0) and
    /// on SIGHUP, until `stop` turns true. The SIGHUP handler is installed
    /// when this is called (from within a tokio runtime), not when the
    /// future first runs: a SIGHUP right after startup must not find the
    /// default action, which ends the process.
    pub fn watch(
        self: Arc<Self>,
        mut stop: watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(listener = %self.label, error = %e, "cannot watch SIGHUP; TLS files are reloaded on change only");
                None
            }
        };
        let interval = Duration::from_secs(self.config.reload_interval_secs);
        async move {
            loop {
                let forced = tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    Some(()) = async {
                        match &mut hangup {
                            Some(h) => h.recv().await,
                            None => std::future::pending().await,
                        }
                    } => true,
                    () = async {
                        if interval.is_zero() {
                            std::future::pending().await
                        } else {
                            tokio::time::sleep(interval).await
                        }
                    } => false,
                };
                let result = if forced {
                    Some(self.reload())
                } else {
                    self.reload_if_changed()
                };
                match result {
                    None => {}
                    Some(Ok(())) => {
                        tracing::info!(listener = %self.label, cert = %self.config.cert.display(), "TLS certificates reloaded")
                    }
                    Some(Err(e)) => {
                        tracing::error!(listener = %self.label, error = %e, "TLS reload failed, keeping the previous certificates")
                    }
                }
            }
        }
    }
}

impl std::fmt::Debug for TlsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSource")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

fn stamp_files(config: &TlsConfig) -> Vec<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let stamp = |path: &Path| {
        let m = std::fs::metadata(path).ok()?;
        Some((m.modified().ok()?, m.len(), m.ino()))
    };
    std::iter::once(config.cert.as_path())
        .chain(std::iter::once(config.key.as_path()))
        .chain(config.ca.as_deref())
        .chain(config.crl.iter().map(PathBuf::as_path))
        .map(stamp)
        .collect()
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Every PEM item of type `T` in a file; at least one.
fn read_all<T: PemObject>(what: &'static str, path: &Path) -> Result<Vec<T>, TlsError> {
    let bytes = read(what, path)?;
    let pem_error = |message: String| TlsError::Pem {
        what,
        path: path.to_owned(),
        message,
    };
    let items = T::pem_slice_iter(&bytes)
        .collect::<Result<Vec<T>, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if items.is_empty() {
        return Err(pem_error(format!("no PEM {what} found")));
    }
    Ok(items)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls configuration from the files.
fn build_server_config(config: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let chain: Vec<CertificateDer<'static>> = read_all("certificate", &config.cert)?;
    let key_bytes = read("private key", &config.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| TlsError::Pem {
        what: "private key",
        path: config.key.clone(),
        message: e.to_string(),
    })?;
    let verifier = match (config.client_auth, &config.ca) {
        (ClientAuth::None, _) | (_, None) => WebPkiClientVerifier::no_client_auth(),
        (auth, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for cert in read_all::<CertificateDer<'static>>("CA", ca)? {
                roots.add(cert).map_err(|e| TlsError::Rustls {
                    what: "CA certificate",
                    message: format!("{}: {e}", ca.display()),
                })?;
            }
            let mut crls = Vec::new();
            for path in &config.crl {
                crls.extend(read_all::<CertificateRevocationListDer<'static>>(
                    "CRL", path,
                )?);
            }
            let mut builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .with_crls(crls)
                    .allow_unknown_revocation_status();
            if auth == ClientAuth::Optional {
                builder = builder.allow_unauthenticated();
            }
            builder.build().map_err(|e| TlsError::Rustls {
                what: "client certificate verifier",
                message: e.to_string(),
            })?
        }
    };
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls {
            what: "protocol versions",
            message: e.to_string(),
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls {
            what: "certificate and key",
            message: format!(
                "{} and {}: {e}",
                config.cert.display(),
                config.key.display()
            ),
        })
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    use super::*;
    use crate::transport::CertIdentity;

    fn cert(cn: Option<&str>, sans: Vec<SanType>) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Acme");
        params.subject_alt_names = sans;
        (params.self_signed(&key).unwrap(), key)
    }

    fn ia5(s: &str) -> rcgen::Ia5String {
        s.try_into().unwrap()
    }

    #[test]
    fn identity_is_the_common_name_or_the_first_san() {
        let (c, _) = cert(
            Some("device-7"),
            vec![
                SanType::IpAddress("10.0.0.1".parse().unwrap()),
                SanType::Rfc822Name(ia5("ops@example.com")),
                SanType::DnsName(ia5("device-7.example.com")),
            ],
        );
        let id = CertIdentity::from_der(c.der(), IdentitySource::Cn).unwrap();
        assert_eq!(id.name, "device-7");
        assert_eq!(id.common_name.as_deref(), Some("device-7"));
        assert_eq!(
            id.subject_alt_names,
            ["ops@example.com", "device-7.example.com"]
        );
        assert!(id.subject.contains("CN=device-7"), "{}", id.subject);
        let id = CertIdentity::from_der(c.der(), IdentitySource::San).unwrap();
        assert_eq!(id.name, "ops@example.com");
    }

    #[test]
    fn missing_identity_field_is_an_error_naming_it() {
        let (c, _) = cert(None, vec![]);
        let e = CertIdentity::from_der(c.der(), IdentitySource::Cn)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Common Name"), "{e}");
        let e = CertIdentity::from_der(c.der(), IdentitySource::San)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Subject Alternative Name"), "{e}");
        let e = CertIdentity::from_der(b"garbage", IdentitySource::Cn)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not parse"), "{e}");
    }

    fn write_pair(dir: &Path, cn: &str) {
        let (c, key) = cert(Some(cn), vec![SanType::DnsName(ia5("localhost"))]);
        std::fs::write(dir.join("cert.pem"), c.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    }

    fn source(dir: &Path) -> Result<TlsSource, TlsError> {
        let config = TlsConfig::new(dir.join("cert.pem"), dir.join("key.pem"));
        TlsSource::load(&config, "test".into())
    }

    #[test]
    fn reload_happens_when_a_file_changes_and_a_bad_file_keeps_the_old_material() {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "one");
        let source = source(dir.path()).unwrap();
        let first = source.server_config();
        assert!(source.reload_if_changed().is_none(), "nothing changed");

        std::fs::write(dir.path().join("key.pem"), "-----BEGIN NOTHING").unwrap();
        let e = source
            .reload_if_changed()
            .expect("change seen")
            .unwrap_err();
        assert!(e.to_string().contains("key.pem"), "{e}");
        assert!(Arc::ptr_eq(&first, &source.server_config()), "old kept");
        assert!(
            source.reload_if_changed().is_none(),
            "bad file reported once"
        );

        write_pair(dir.path(), "two");
        source.reload_if_changed().expect("change seen").unwrap();
        assert!(!Arc::ptr_eq(&first, &source.server_config()));
    }

    #[test]
    fn key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "one");
        let (_, other_key) = cert(Some("other"), vec![]);
        std::fs::write(dir.path().join("key.pem"), other_key.serialize_pem()).unwrap();
        let e = source(dir.path()).unwrap_err().to_string();
        assert!(e.contains("cert.pem and") && e.contains("key.pem"), "{e}");
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = source(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("certificate file") && e.contains("cert.pem"),
            "{e}"
        );
        std::fs::write(dir.path().join("cert.pem"), "hello").unwrap();
        let e = source(dir.path()).unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        write_pair(dir.path(), "one");
        let mut config = TlsConfig::new(dir.path().join("cert.pem"), dir.path().join("key.pem"));
        config.client_auth = ClientAuth::Required;
        config.ca = Some(dir.path().join("ca.pem"));
        let e = TlsSource::load(&config, "t".into())
            .unwrap_err()
            .to_string();
        assert!(e.contains("CA file") && e.contains("ca.pem"), "{e}");
        std::fs::copy(dir.path().join("cert.pem"), dir.path().join("ca.pem")).unwrap();
        config.crl = vec![dir.path().join("bad.crl")];
        std::fs::write(
            dir.path().join("bad.crl"),
            "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
        )
        .unwrap();
        let e = TlsSource::load(&config, "t".into())
            .unwrap_err()
            .to_string();
        assert!(e.contains("verifier") || e.contains("CRL"), "{e}");
    }
}
