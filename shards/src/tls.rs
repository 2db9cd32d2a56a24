//! TLS: the rustls server configuration, the self-signed certificate made at first start, and
//! the channel-binding data SCRAM-PLUS needs (RFC 5929 §4, RFC 9266).
//!
//! rustls is driven by hand by the connection code (bytes in, bytes out), so the same
//! `ServerConnection` works for STARTTLS and direct TLS and can move between shards. This
//! module does not touch sockets.

use std::path::Path;
use std::sync::Arc;

use confab_core::sasl::ChannelBindings;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};
use sha2::Digest;

/// TLS 1.3 session tickets issued per full handshake, so reconnecting clients resume cheaply.
pub const TLS13_TICKETS_PER_HANDSHAKE: usize = 2;

/// The shared TLS context: rustls configuration and what channel bindings need of the
/// certificate.
pub struct TlsContext {
    pub config: Arc<ServerConfig>,
    /// RFC 5929 §4.1: hash of our end-entity certificate, computed once.
    pub server_end_point: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("certificate generation: {0}")]
    Generate(String),
}

impl TlsContext {
    /// Loads the configured certificate and key, or the generated pair in `data_dir`
    /// (creating it on first start).
    pub fn load(cert: Option<&Path>, key: Option<&Path>, domain: &str, data_dir: &Path) -> Result<TlsContext, TlsSetupError> {
        let (cert_path, key_path) = match (cert, key) {
            (Some(cert), Some(key)) => (cert.to_path_buf(), key.to_path_buf()),
            _ => {
                let cert_path = data_dir.join("cert.pem");
                let key_path = data_dir.join("key.pem");
                if !cert_path.exists() || !key_path.exists() {
                    generate_self_signed(domain, &cert_path, &key_path)?;
                }
                (cert_path, key_path)
            }
        };
        let file_error =
            |path: &Path, e: &dyn std::fmt::Display| TlsSetupError::File { path: path.display().to_string(), message: e.to_string() };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
            .map_err(|e| file_error(&cert_path, &e))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_error(&cert_path, &e))?;
        if chain.is_empty() {
            return Err(file_error(&cert_path, &"no certificate in file"));
        }
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| file_error(&key_path, &e))?;
        let server_end_point = server_end_point_hash(&chain[0]);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        // TLS 1.2 and 1.3 only (rustls implements nothing older).
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.send_tls13_tickets = TLS13_TICKETS_PER_HANDSHAKE;
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
        Ok(TlsContext { config: Arc::new(config), server_end_point })
    }

    pub fn accept(&self) -> Result<ServerConnection, rustls::Error> {
        ServerConnection::new(self.config.clone())
    }

    /// Channel bindings for a connection whose handshake completed.
    pub fn bindings(&self, connection: &ServerConnection) -> ChannelBindings {
        // RFC 9266 §2: tls-exporter is defined for TLS 1.3 (for 1.2 only with extended master
        // secret, which we do not rely on): 32 bytes, label "EXPORTER-Channel-Binding",
        // no context.
        let tls_exporter = (connection.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3))
            .then(|| connection.export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None).ok())
            .flatten()
            .map(|bytes| bytes.to_vec());
        ChannelBindings { tls_exporter, tls_server_end_point: self.server_end_point.clone() }
    }
}

/// RFC 5929 §4.1: the certificate hashed with its signature's hash function, SHA-256 when that
/// is MD5 or SHA-1. `None` for signature algorithms without a hash (Ed25519), where
/// tls-server-end-point is undefined and therefore not offered.
fn server_end_point_hash(certificate: &CertificateDer<'_>) -> Option<Vec<u8>> {
    // OIDs (DER-encoded) of signature algorithms; the TBSCertificate names the algorithm before
    // anything else that could contain these bytes, so the first match is the signature's.
    const SHA256: &[&[u8]] = &[
        &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02], // ecdsa-with-SHA256
        &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b], // sha256WithRSAEncryption
        &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05], // sha1WithRSAEncryption
        &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01],       // ecdsa-with-SHA1
    ];
    const SHA384: &[&[u8]] = &[
        &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
        &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c],
    ];
    const SHA512: &[&[u8]] = &[
        &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],
        &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d],
    ];
    let der: &[u8] = certificate.as_ref();
    let first = |oids: &[&[u8]]| oids.iter().filter_map(|oid| der.windows(oid.len()).position(|w| w == *oid)).min();
    let candidates = [(first(SHA256), 256), (first(SHA384), 384), (first(SHA512), 512)];
    let (_, bits) = candidates.iter().filter_map(|(pos, bits)| pos.map(|p| (p, *bits))).min()?;
    Some(match bits {
        256 => sha2::Sha256::digest(der).to_vec(),
        384 => sha2::Sha384::digest(der).to_vec(),
        _ => sha2::Sha512::digest(der).to_vec(),
    })
}

/// Makes a self-signed ECDSA P-256 certificate for `domain` (and localhost), written with
/// the key readable by the owner only.
fn generate_self_signed(domain: &str, cert_path: &Path, key_path: &Path) -> Result<(), TlsSetupError> {
    let mut names = vec![domain.to_owned()];
    if domain != "localhost" {
        names.push("localhost".to_owned());
    }
    let generated = rcgen::generate_simple_self_signed(names).map_err(|e| TlsSetupError::Generate(e.to_string()))?;
    let write = |path: &Path, text: String, mode: u32| -> Result<(), TlsSetupError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)
            .map_err(|e| TlsSetupError::File { path: path.display().to_string(), message: e.to_string() })?;
        file.write_all(text.as_bytes()).map_err(|e| TlsSetupError::File { path: path.display().to_string(), message: e.to_string() })
    };
    write(key_path, generated.signing_key.serialize_pem(), 0o600)?;
    write(cert_path, generated.cert.pem(), 0o644)?;
    tracing::info!(path = %cert_path.display(), %domain, "generated a self-signed certificate");
    Ok(())
}
