//! The PostgreSQL URL: libpq's `sslmode` values on top of what `tokio-postgres` parses, and the
//! rustls configuration each one means.
//!
//! `tokio-postgres` knows `disable`, `prefer` and `require` and has no certificate checking of
//! its own, so `sslmode` and `sslrootcert` are taken out of the URL here and implemented as
//! libpq documents them:
//!
//! | `sslmode` | encryption | certificate checked |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` (the default) | if the server offers it | no |
//! | `require` | always | no (as `verify-ca` when `sslrootcert` is given) |
//! | `verify-ca` | always | chain to a trusted root |
//! | `verify-full` | always | chain and host name |
//!
//! Trusted roots: the PEM file `sslrootcert` names, else the system's (`sslrootcert=system`
//! says so explicitly), else Mozilla's when the system has none.

use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::Config;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{error_chain, StoreError};

/// A parsed PostgreSQL URL, ready to connect.
pub(super) struct Target {
    /// Everything but TLS.
    pub config: Config,
    /// The TLS connector `sslmode` asks for.
    pub tls: MakeRustlsConnect,
    /// `postgres://host:port/db`, without credentials.
    pub describe: String,
}

/// What `sslmode` asks of the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

/// Parse `url` (`postgres://` or `postgresql://`). Errors never repeat the URL, which may hold a
/// password.
pub(super) fn parse(url: &str) -> Result<Target, StoreError> {
    let (rest, sslmode, rootcert) = take_tls_params(url)?;
    let mut config = Config::from_str(&rest)
        .map_err(|e| StoreError::Invalid(format!("invalid PostgreSQL URL: {}", error_chain(&e))))?;
    let (mode, check) = match (sslmode.as_deref(), rootcert.is_some()) {
        (Some("disable"), _) => (SslMode::Disable, Check::Nothing),
        (None | Some("prefer"), _) => (SslMode::Prefer, Check::Nothing),
        (Some("require"), false) => (SslMode::Require, Check::Nothing),
        (Some("require" | "verify-ca"), _) => (SslMode::Require, Check::Chain),
        (Some("verify-full"), _) => (SslMode::Require, Check::ChainAndName),
        (Some(other), _) => {
            return Err(StoreError::Invalid(format!(
                "sslmode {other:?} is not supported: use disable, prefer, require, verify-ca \
                 or verify-full"
            )))
        }
    };
    config.ssl_mode(mode);
    if config.get_application_name().is_none() {
        config.application_name("graphguard");
    }
    let tls = MakeRustlsConnect::new(client_config(check, rootcert.as_deref())?);
    let describe = describe(&config);
    Ok(Target {
        config,
        tls,
        describe,
    })
}

/// The URL without `sslmode` and `sslrootcert`, and their (percent-decoded) values. The other
/// parameters are passed on byte for byte, since `tokio-postgres` decodes them itself.
fn take_tls_params(url: &str) -> Result<(String, Option<String>, Option<String>), StoreError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), None, None));
    };
    let (mut sslmode, mut rootcert, mut kept) = (None, None, Vec::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = || {
            percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .map(|v| v.into_owned())
                .map_err(|_| StoreError::Invalid(format!("the URL's {key} is not UTF-8")))
        };
        match key {
            "sslmode" => sslmode = Some(decoded()?),
            "sslrootcert" => rootcert = Some(decoded()?),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, sslmode, rootcert))
}

fn describe(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                Host::Tcp(name) if name.contains(':') => format!("[{name}]"),
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            // One port applies to every host; otherwise they pair up.
            let ports = config.get_ports();
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            format!("{host}:{port}")
        })
        .collect();
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or_default();
    format!("postgres://{}/{db}", hosts.join(","))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(check: Check, rootcert: Option<&str>) -> Result<rustls::ClientConfig, StoreError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Invalid(format!("TLS setup failed: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        Check::Nothing => Arc::new(NoCertificateCheck(provider)),
        Check::Chain | Check::ChainAndName => {
            let roots = Arc::new(roots(rootcert)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| StoreError::Invalid(format!("TLS setup failed: {e}")))?;
            if check == Check::Chain {
                Arc::new(ChainOnly(webpki))
            } else {
                webpki
            }
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

fn roots(rootcert: Option<&str>) -> Result<RootCertStore, StoreError> {
    let mut roots = RootCertStore::empty();
    match rootcert {
        Some(path) if path != "system" => {
            let pem = std::fs::read(path)
                .map_err(|e| StoreError::Invalid(format!("cannot read sslrootcert {path}: {e}")))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    StoreError::Invalid(format!("sslrootcert {path} is not PEM: {e}"))
                })?;
                roots.add(cert).map_err(|e| {
                    StoreError::Invalid(format!("sslrootcert {path} holds a bad certificate: {e}"))
                })?;
            }
        }
        _ => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    if roots.is_empty() {
        if let Some(path) = rootcert.filter(|p| *p != "system") {
            return Err(StoreError::Invalid(format!(
                "sslrootcert {path} holds no certificate"
            )));
        }
        // The system has no trust store (a distroless image): Mozilla's roots, as the
        // authenticators' HTTPS client does (authn/http_client.rs).
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    Ok(roots)
}

/// `prefer` and `require`: encrypted, the certificate not checked (libpq's meaning); the
/// handshake signature is still verified, so the session key belongs to the certificate.
#[derive(Debug)]
struct NoCertificateCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the name is not compared. WebPKI checks
/// the chain before the name, so a name mismatch means the chain was good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_and_the_rest_kept_verbatim() {
        let (rest, mode, root) = take_tls_params(
            "postgres://u:p%40ss@h:5/db?sslmode=verify-full&options=-c%20x%3Dy&sslrootcert=%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p%40ss@h:5/db?options=-c%20x%3Dy");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/ca.pem"));
        let (rest, mode, _) = take_tls_params("postgresql://h/db").unwrap();
        assert_eq!((rest.as_str(), mode), ("postgresql://h/db", None));
    }

    #[test]
    fn describe_has_no_credentials() {
        let t = parse("postgres://graphguard:s3cret@db.internal:6432/policies?sslmode=require")
            .unwrap();
        assert_eq!(t.describe, "postgres://db.internal:6432/policies");
        assert_eq!(t.config.get_ssl_mode(), SslMode::Require);
        let t = parse("postgresql://u@[::1]/").unwrap();
        assert_eq!(t.describe, "postgres://[::1]:5432/u");
        assert_eq!(t.config.get_ssl_mode(), SslMode::Prefer);
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_them() {
        for url in [
            "postgres://u:s3cret@h/db?sslmode=allow",
            "postgres://u:s3cret@h/db?nonsense=1",
            "postgres://u:s3cret@h:notaport/db",
            "postgres://u:s3cret@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        ] {
            let err = parse(url).err().unwrap();
            assert!(matches!(err, StoreError::Invalid(_)), "{url}: {err}");
            assert!(!err.to_string().contains("s3cret"), "{err}");
        }
    }

    #[test]
    fn verify_modes_build_with_system_roots() {
        for mode in ["verify-ca", "verify-full", "require", "disable"] {
            let url = format!("postgres://h/db?sslmode={mode}&sslrootcert=system");
            assert!(parse(&url).is_ok(), "{mode}");
        }
    }
}
