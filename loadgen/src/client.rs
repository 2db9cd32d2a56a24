//! One simulated XMPP client on a glommio executor: TCP (from a chosen source address),
//! STARTTLS or direct TLS with rustls driven by hand, SASL, bind, roster, presence, and then
//! sending and receiving stanzas.
//!
//! Standard XMPP only (RFC 6120/6121), so the same client drives Confab, ejabberd and
//! Prosody. It uses confab-core's framer and SCRAM client, never the server's runtime. This
//! module times login stages; it does not schedule anything (scenario.rs does).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use confab_core::framer::{Frame, Framer, FramerLimits};
use confab_core::sasl::{ClientBinding, ScramClient, ScramHash};
use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};
use glommio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::ClientConnection;

/// Bytes read from the socket at once.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Largest stanza the load generator accepts from a server.
const STANZA_BYTES_MAX: usize = 1 << 20;

/// How the client secures and authenticates.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    pub server: SocketAddr,
    pub domain: String,
    pub tls: TlsMode,
    pub mechanism: String,
    pub tls_config: Option<Arc<rustls::ClientConfig>>,
    /// Ask for the roster during login (RFC 6121 §2.2), as real clients do.
    pub roster: bool,
    pub timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// STARTTLS on the c2s port (RFC 6120 §5).
    StartTls,
    /// TLS from the first byte (XEP-0368).
    Direct,
    /// No TLS at all (only for servers configured to allow it).
    None,
}

/// The login stages, in order; failures are counted by stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    Tcp,
    Tls,
    Sasl,
    Bind,
    Roster,
    Presence,
}

impl Stage {
    pub const ALL: [Stage; 6] = [Stage::Tcp, Stage::Tls, Stage::Sasl, Stage::Bind, Stage::Roster, Stage::Presence];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Tcp => "tcp",
            Stage::Tls => "tls",
            Stage::Sasl => "sasl",
            Stage::Bind => "bind",
            Stage::Roster => "roster",
            Stage::Presence => "presence",
        }
    }
}

/// Why a login failed, and where.
#[derive(Debug, thiserror::Error)]
#[error("{stage:?}: {message}")]
pub struct LoginError {
    pub stage: Stage,
    pub message: String,
}

/// A received top-level element, owned.
#[derive(Debug)]
pub struct Incoming {
    pub name: String,
    pub kind: Option<String>,
    pub id: Option<String>,
    pub bytes: Vec<u8>,
}

/// An established session.
pub struct Session {
    socket: TcpStream,
    tls: Option<Box<ClientConnection>>,
    framer: Framer,
    pub jid: String,
    pub roster_supported: bool,
    /// Items in the roster fetched at login (RFC 6121 §2.1.3).
    pub roster_items: u64,
}

/// A user's salted password as a SCRAM client caches it: (salt, iterations, salted password).
type SaltedPassword = (Vec<u8>, u32, Vec<u8>);

thread_local! {
    /// Salted passwords per (user, hash): PBKDF2 is paid once per user per process, not per
    /// login, so the load generator measures the server, not itself.
    static SALTED: RefCell<HashMap<(String, bool), SaltedPassword>> = RefCell::new(HashMap::new());
}

/// Connects and logs in; returns the session and the duration of each stage.
pub async fn login(
    settings: &ClientSettings,
    source: Option<IpAddr>,
    user: &str,
    password: &str,
    resource: &str,
) -> Result<(Session, Vec<(Stage, Duration)>), LoginError> {
    let fail = |stage: Stage| move |e: io::Error| LoginError { stage, message: e.to_string() };
    let mut stages = Vec::with_capacity(6);
    let mut mark = Instant::now();
    let mut lap = |stages: &mut Vec<(Stage, Duration)>, stage: Stage| {
        let now = Instant::now();
        stages.push((stage, now - mark));
        mark = now;
    };
    let socket = connect(settings.server, source).await.map_err(fail(Stage::Tcp))?;
    let mut session = Session {
        socket,
        tls: None,
        framer: Framer::new(FramerLimits {
            stanza_bytes_max: STANZA_BYTES_MAX,
            depth_max: 64,
            attributes_max: 64,
            namespace_declarations_max: 16,
        }),
        jid: String::new(),
        roster_supported: true,
        roster_items: 0,
    };
    let timeout = settings.timeout;
    match settings.tls {
        TlsMode::StartTls => {
            let features = session.open_stream(&settings.domain, timeout).await.map_err(fail(Stage::Tcp))?;
            lap(&mut stages, Stage::Tcp);
            if !features.contains("urn:ietf:params:xml:ns:xmpp-tls") {
                return Err(LoginError { stage: Stage::Tls, message: "server offers no STARTTLS".into() });
            }
            session.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>").await.map_err(fail(Stage::Tls))?;
            let answer = session.next(timeout).await.map_err(fail(Stage::Tls))?;
            if answer.name != "proceed" {
                return Err(LoginError { stage: Stage::Tls, message: format!("STARTTLS answered {}", answer.name) });
            }
            session.handshake(settings, timeout).await.map_err(fail(Stage::Tls))?;
            lap(&mut stages, Stage::Tls);
        }
        TlsMode::Direct => {
            lap(&mut stages, Stage::Tcp);
            session.handshake(settings, timeout).await.map_err(fail(Stage::Tls))?;
            lap(&mut stages, Stage::Tls);
        }
        TlsMode::None => {
            lap(&mut stages, Stage::Tcp);
            lap(&mut stages, Stage::Tls);
        }
    }
    if settings.tls != TlsMode::StartTls || session.tls.is_some() {
        session.open_stream(&settings.domain, timeout).await.map_err(fail(Stage::Sasl))?;
    }
    session.authenticate(settings, user, password, timeout).await?;
    lap(&mut stages, Stage::Sasl);
    let features = session.open_stream(&settings.domain, timeout).await.map_err(fail(Stage::Bind))?;
    if !features.contains("urn:ietf:params:xml:ns:xmpp-bind") {
        return Err(LoginError { stage: Stage::Bind, message: "no bind feature".into() });
    }
    session
        .send(
            format!("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>")
                .as_bytes(),
        )
        .await
        .map_err(fail(Stage::Bind))?;
    let bound = session.until_id("bind", timeout).await.map_err(fail(Stage::Bind))?;
    let text = String::from_utf8_lossy(&bound.bytes);
    let Some(jid) = text.split("<jid>").nth(1).and_then(|s| s.split("</jid>").next()) else {
        return Err(LoginError { stage: Stage::Bind, message: format!("bind failed: {text}") });
    };
    session.jid = jid.to_owned();
    // RFC 3921 session, only where a server still requires it (not marked optional).
    if features.contains("urn:ietf:params:xml:ns:xmpp-session") && !features.contains("<optional/>") {
        session
            .send(b"<iq type='set' id='sess'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
            .await
            .map_err(fail(Stage::Bind))?;
        session.until_id("sess", timeout).await.map_err(fail(Stage::Bind))?;
    }
    lap(&mut stages, Stage::Bind);
    if settings.roster {
        session.send(b"<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>").await.map_err(fail(Stage::Roster))?;
        let answer = session.until_id("roster", timeout).await.map_err(fail(Stage::Roster))?;
        session.roster_supported = answer.kind.as_deref() == Some("result");
        session.roster_items = crate::im::roster_items(&String::from_utf8_lossy(&answer.bytes));
    }
    lap(&mut stages, Stage::Roster);
    // Initial presence; the server reflects it to our own resource (RFC 6121 §4.2.2).
    session.send(b"<presence/>").await.map_err(fail(Stage::Presence))?;
    let own = session.jid.clone();
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let frame = session.next(remaining).await.map_err(fail(Stage::Presence))?;
        if frame.name == "presence" && String::from_utf8_lossy(&frame.bytes).contains(&format!("from='{own}'")) {
            break;
        }
        if frame.name == "presence" && String::from_utf8_lossy(&frame.bytes).contains(&format!("from=\"{own}\"")) {
            break;
        }
    }
    lap(&mut stages, Stage::Presence);
    Ok((session, stages))
}

/// Opens a TCP connection from `source` (a 127.0.0.x address spreads ephemeral ports).
async fn connect(server: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let domain = if server.is_ipv6() { socket2::Domain::IPV6 } else { socket2::Domain::IPV4 };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    if let Some(source) = source {
        // IP_BIND_ADDRESS_NO_PORT: the port is chosen at connect time, per destination, so
        // many source addresses each get the whole ephemeral range.
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads `one` (a c_int of the given size) on our own socket.
        #[allow(unsafe_code)]
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        socket.bind(&SocketAddr::new(source, 0).into())?;
    }
    match socket.connect(&server.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    // The first send waits (io_uring polls for writability) until the connection completes.
    Ok(TcpStream::from(socket))
}

impl Session {
    /// Sends a stream header and returns the features element.
    async fn open_stream(&mut self, domain: &str, timeout: Duration) -> io::Result<String> {
        self.framer.restart(false);
        self.send(
            format!("<?xml version='1.0'?><stream:stream to='{domain}' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")
                .as_bytes(),
        )
        .await?;
        let deadline = Instant::now() + timeout;
        loop {
            let frame = self.next(deadline.saturating_duration_since(Instant::now())).await?;
            if frame.name == "features" {
                return Ok(String::from_utf8_lossy(&frame.bytes).into_owned());
            }
            if frame.name == "error" {
                return Err(io::Error::other(String::from_utf8_lossy(&frame.bytes).into_owned()));
            }
        }
    }

    async fn handshake(&mut self, settings: &ClientSettings, timeout: Duration) -> io::Result<()> {
        let config = settings.tls_config.clone().ok_or_else(|| io::Error::other("no TLS configuration"))?;
        let name = ServerName::try_from(settings.domain.clone()).map_err(|e| io::Error::other(e.to_string()))?;
        let connection = ClientConnection::new(config, name).map_err(|e| io::Error::other(e.to_string()))?;
        self.tls = Some(Box::new(connection));
        self.framer.restart(true);
        let deadline = Instant::now() + timeout;
        loop {
            let Some(tls) = self.tls.as_deref_mut() else { return Err(io::ErrorKind::NotConnected.into()) };
            if tls.wants_write() {
                let mut wire = Vec::new();
                while tls.wants_write() {
                    tls.write_tls(&mut wire)?;
                }
                self.socket.write_all(&wire).await?;
                continue;
            }
            if !tls.is_handshaking() {
                return Ok(());
            }
            self.read_once(deadline.saturating_duration_since(Instant::now())).await?;
        }
    }

    async fn authenticate(&mut self, settings: &ClientSettings, user: &str, password: &str, timeout: Duration) -> Result<(), LoginError> {
        let fail = |e: io::Error| LoginError { stage: Stage::Sasl, message: e.to_string() };
        if settings.mechanism == "PLAIN" {
            let payload = BASE64.encode(format!("\0{user}\0{password}"));
            self.send(format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{payload}</auth>").as_bytes())
                .await
                .map_err(fail)?;
            let answer = self.next(timeout).await.map_err(fail)?;
            return if answer.name == "success" {
                Ok(())
            } else {
                Err(LoginError { stage: Stage::Sasl, message: String::from_utf8_lossy(&answer.bytes).into_owned() })
            };
        }
        let sha1 = settings.mechanism == "SCRAM-SHA-1";
        let hash = if sha1 { ScramHash::Sha1 } else { ScramHash::Sha256 };
        let nonce: String = {
            use rand::distr::{Alphanumeric, SampleString as _};
            Alphanumeric.sample_string(&mut rand::rng(), 24)
        };
        let mut client = ScramClient::new(hash, user, password, ClientBinding::NotSupported, &nonce);
        let key = (user.to_owned(), sha1);
        if let Some((salt, iterations, salted)) = SALTED.with(|cache| cache.borrow().get(&key).cloned()) {
            client = client.with_salted_password_cache(salt, iterations, salted);
        }
        self.send(
            format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{}'>{}</auth>",
                settings.mechanism,
                BASE64.encode(client.client_first())
            )
            .as_bytes(),
        )
        .await
        .map_err(fail)?;
        let challenge = self.next(timeout).await.map_err(fail)?;
        if challenge.name != "challenge" {
            return Err(LoginError { stage: Stage::Sasl, message: String::from_utf8_lossy(&challenge.bytes).into_owned() });
        }
        let server_first =
            BASE64.decode(element_text(&challenge.bytes)).map_err(|e| LoginError { stage: Stage::Sasl, message: e.to_string() })?;
        let client_final = client
            .handle_server_first(&server_first)
            .map_err(|e| LoginError { stage: Stage::Sasl, message: format!("challenge rejected: {e:?}") })?;
        if let (Some(salted), Some(salt), Some(iterations)) = (client.salted_password(), client.salt(), client.iterations()) {
            let entry = (salt.to_vec(), iterations, salted.to_vec());
            SALTED.with(|cache| cache.borrow_mut().insert(key, entry));
        }
        self.send(format!("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>", BASE64.encode(client_final)).as_bytes())
            .await
            .map_err(fail)?;
        let answer = self.next(timeout).await.map_err(fail)?;
        if answer.name != "success" {
            return Err(LoginError { stage: Stage::Sasl, message: String::from_utf8_lossy(&answer.bytes).into_owned() });
        }
        let server_final = BASE64.decode(element_text(&answer.bytes)).unwrap_or_default();
        client
            .verify_server_final(&server_final)
            .map_err(|e| LoginError { stage: Stage::Sasl, message: format!("server signature: {e:?}") })
    }

    /// Reads frames until an iq with this id arrives.
    async fn until_id(&mut self, id: &str, timeout: Duration) -> io::Result<Incoming> {
        let deadline = Instant::now() + timeout;
        loop {
            let frame = self.next(deadline.saturating_duration_since(Instant::now())).await?;
            if frame.id.as_deref() == Some(id) {
                return Ok(frame);
            }
        }
    }

    /// Writes bytes (through TLS when active).
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.tls.as_deref_mut() {
            None => self.socket.write_all(bytes).await,
            Some(tls) => {
                let mut offset = 0;
                loop {
                    offset += tls.writer().write(&bytes[offset..])?;
                    let mut wire = Vec::with_capacity(bytes.len() + 64);
                    while tls.wants_write() {
                        tls.write_tls(&mut wire)?;
                    }
                    if !wire.is_empty() {
                        self.socket.write_all(&wire).await?;
                    }
                    if offset >= bytes.len() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// The next top-level element from the server, waiting at most `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> io::Result<Incoming> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(frame) = self.take_frame()? {
                return Ok(frame);
            }
            self.read_once(deadline.saturating_duration_since(Instant::now())).await?;
        }
    }

    /// A frame already buffered, without reading.
    pub fn take_frame(&mut self) -> io::Result<Option<Incoming>> {
        loop {
            match self.framer.next_frame() {
                Ok(Some(Frame::Stanza(stanza))) => {
                    return Ok(Some(Incoming {
                        name: stanza.name.to_owned(),
                        kind: stanza.kind.as_deref().map(str::to_owned),
                        id: stanza.id.as_deref().map(str::to_owned),
                        bytes: stanza.bytes().to_vec(),
                    }))
                }
                Ok(Some(Frame::StreamClose)) => return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "server closed the stream")),
                Ok(Some(Frame::StreamOpen(_))) | Ok(Some(Frame::Whitespace)) => continue,
                Ok(None) => return Ok(None),
                Err(error) => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{error:?}"))),
            }
        }
    }

    /// Waits until the socket has bytes (parking on a 1-byte peek, so idle sessions hold no
    /// buffer), then reads and decrypts them into the framer.
    pub async fn read_once(&mut self, timeout: Duration) -> io::Result<()> {
        let ready = async { Some(self.socket.peek(&mut [0u8; 1]).await) };
        let timer = async {
            glommio::timer::sleep(timeout).await;
            None
        };
        match futures_lite::future::or(ready, timer).await {
            None => return Err(io::ErrorKind::TimedOut.into()),
            Some(Ok(0)) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(_)) => {}
        }
        let mut buffer = vec![0u8; READ_CHUNK_BYTES];
        let n = self.socket.read(&mut buffer).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        match self.tls.as_deref_mut() {
            None => self.framer.push(&buffer[..n]),
            Some(tls) => {
                let mut bytes = &buffer[..n];
                let mut plain = vec![0u8; READ_CHUNK_BYTES];
                while !bytes.is_empty() {
                    tls.read_tls(&mut bytes)?;
                    tls.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    loop {
                        match tls.reader().read(&mut plain) {
                            Ok(0) => break,
                            Ok(k) => self.framer.push(&plain[..k]),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e),
                        }
                    }
                }
                if tls.wants_write() {
                    let mut wire = Vec::new();
                    while tls.wants_write() {
                        tls.write_tls(&mut wire)?;
                    }
                    self.socket.write_all(&wire).await?;
                }
            }
        }
        Ok(())
    }

    /// Waits for readable bytes without a timeout (cancellable by the caller's select).
    pub async fn readable(&self) -> io::Result<usize> {
        self.socket.peek(&mut [0u8; 1]).await.map_err(Into::into)
    }

    /// Ends the stream politely (RFC 6120 §4.4).
    pub async fn close(mut self) {
        let _ = self.send(b"</stream:stream>").await;
        let _ = self.socket.close().await;
    }

    /// Drops the connection without a closing handshake (storms, crashes).
    pub fn abort(self) {
        drop(self);
    }
}

/// Text content of `<name …>TEXT</name>`.
fn element_text(bytes: &[u8]) -> &str {
    let text = std::str::from_utf8(bytes).unwrap_or("");
    text.split_once('>').map(|(_, rest)| rest).and_then(|rest| rest.rsplit_once('<')).map(|(t, _)| t).unwrap_or("")
}

/// TLS settings: verify against a CA file, or (`insecure`) accept any certificate.
pub fn tls_config(ca: Option<&std::path::Path>, insecure: bool) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder =
        rustls::ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().map_err(|e| e.to_string())?;
    let config = if insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAny(provider))).with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = ca {
            use rustls::pki_types::pem::PemObject as _;
            for certificate in rustls::pki_types::CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
                roots.add(certificate.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// `--insecure`: accepts any server certificate (self-signed test servers), still checking
/// handshake signatures so the TLS session itself is sound.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
