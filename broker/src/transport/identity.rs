//! Who a verified client certificate says the client is: the name the ACL
//! and authentication see (`identity = "cn"` or `"san"` of a TLS listener).

use x509_parser::error::X509Error;

use crate::config::IdentitySource;

/// Why a verified client certificate gives no identity; the TLS connection
/// is then closed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The DER is not an X.509 certificate (rustls accepted it, so rare).
    #[error("client certificate does not parse: {0}")]
    Parse(x509_parser::nom::Err<X509Error>),
    /// The Subject Alternative Name extension is malformed.
    #[error("client certificate SAN extension: {0}")]
    SubjectAltNames(X509Error),
    /// `identity = "cn"` and the subject has no Common Name.
    #[error("client certificate has no subject Common Name (identity = \"cn\")")]
    NoCommonName,
    /// `identity = "san"` and no DNS, email or URI name.
    #[error(
        "client certificate has no DNS, email or URI Subject Alternative Name (identity = \"san\")"
    )]
    NoSubjectAltName,
}

/// The identity a verified client certificate gives its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// The client's name, from the part the listener's `identity` key names:
    /// the subject Common Name, or the first DNS, email or URI Subject
    /// Alternative Name.
    pub name: String,
    /// Subject Common Name, if the certificate has one.
    pub common_name: Option<String>,
    /// DNS, email and URI Subject Alternative Names, in certificate order.
    pub subject_alt_names: Vec<String>,
    /// The whole subject, RFC 4514 style (`CN=dev1, O=Acme`).
    pub subject: String,
}

impl CertIdentity {
    /// Reads the identity of a certificate that rustls has verified. `Err`
    /// says why there is none (no such field, or unparsable).
    pub fn from_der(der: &[u8], source: IdentitySource) -> Result<CertIdentity, IdentityError> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(IdentityError::Parse)?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let subject_alt_names: Vec<String> = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                        Some((*s).to_owned())
                    }
                    _ => None,
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => return Err(IdentityError::SubjectAltNames(e)),
        };
        let name = match source {
            IdentitySource::Cn => common_name.clone().ok_or(IdentityError::NoCommonName)?,
            IdentitySource::San => subject_alt_names
                .first()
                .cloned()
                .ok_or(IdentityError::NoSubjectAltName)?,
        };
        Ok(CertIdentity {
            name,
            common_name,
            subject_alt_names,
            subject: cert.subject().to_string(),
        })
    }
}
