//! Test support: start the real `confab` binary on free ports and talk XMPP to it over TCP
//! and TLS, as a client would. Only the wire protocol is used (confab-core's framer splits
//! what the server sends; its SCRAM client computes proofs).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use confab_core::framer::{Frame, Framer, FramerLimits};
use confab_core::sasl::{ChannelBindingType, ClientBinding, ScramClient, ScramHash};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

pub const DOMAIN: &str = "localhost";
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Listeners a test server opens: two shards (the generated configuration) × two client ports.
const LISTENERS_PER_SERVER: usize = 4;

/// A running server process, killed on drop.
pub struct Server {
    child: Child,
    pub c2s: u16,
    pub c2s_tls: u16,
    pub http: u16,
    /// The test's directory: configuration and log.
    pub data_dir: PathBuf,
    /// The server's `data_dir`: store, certificate, secret (the test's directory unless a test
    /// puts it elsewhere, e.g. on a small file system).
    pub store_dir: PathBuf,
}

/// First port handed to servers: below the kernel's ephemeral range (32768–60999), so a
/// port a restarting server gives up for a moment is never taken by a client's connection or
/// by another test's `bind(0)`.
const SERVER_PORTS_FIRST: u16 = 20_000;
const SERVER_PORTS_LAST: u16 = 32_000;

/// A port no other test of this binary uses and nothing listens on right now.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = SERVER_PORTS_LAST - SERVER_PORTS_FIRST;
    // Start at a spot that depends on the process, so concurrent test runs rarely meet.
    let _ = NEXT.compare_exchange(0, (std::process::id() % u32::from(span)) as u16 + 1, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..span {
        let port = SERVER_PORTS_FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % span;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {SERVER_PORTS_FIRST} and {SERVER_PORTS_LAST}");
}

/// The server binary: `CONFAB_BINARY` when set (to run these tests against another build, e.g.
/// an older revision, to see which of them fail there), else this workspace's debug build.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CONFAB_BINARY") {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug/confab");
    assert!(path.exists(), "{} is missing: run `cargo build -p confab-shards` first (scripts/test does)", path.display());
    path
}

impl Server {
    pub fn start() -> Server {
        Server::start_with("")
    }

    /// Starts with extra TOML appended to the generated configuration (top-level keys first).
    pub fn start_with(extra: &str) -> Server {
        Server::start_storing_in(extra, None)
    }

    /// Like `start_with`, with the server's `data_dir` at `store_dir` when given.
    pub fn start_storing_in(extra: &str, store_dir: Option<PathBuf>) -> Server {
        let (c2s, c2s_tls, http) = (free_port(), free_port(), free_port());
        let data_dir = std::env::temp_dir().join(format!("confab-it-{}-{}", std::process::id(), c2s));
        let _ = std::fs::remove_dir_all(&data_dir);
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let store_dir = store_dir.unwrap_or_else(|| data_dir.clone());
        let (top, sections) = match extra.find('[') {
            Some(i) => (&extra[..i], &extra[i..]),
            None => (extra, ""),
        };
        // Two shards unless the extra configuration says otherwise.
        let shards = if top.contains("shards") { "" } else { "shards = 2\n" };
        let config = format!(
            "domain = \"{DOMAIN}\"\ndata_dir = \"{}\"\n{shards}{top}\n[listen]\nc2s = \"127.0.0.1:{c2s}\"\nc2s_tls = \"127.0.0.1:{c2s_tls}\"\nhttp = \"127.0.0.1:{http}\"\n{sections}\n",
            store_dir.display()
        );
        let config_path = data_dir.join("confab.toml");
        std::fs::write(&config_path, config).expect("write config");
        let child = Server::spawn(&data_dir);
        let mut server = Server { child, c2s, c2s_tls, http, data_dir, store_dir };
        server.wait_ready();
        server
    }

    fn spawn(data_dir: &std::path::Path) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(data_dir.join("server.log")).expect("log file");
        Command::new(binary())
            .args(["serve", "--config"])
            .arg(data_dir.join("confab.toml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn confab")
    }

    /// Stops the server abruptly (SIGKILL: nothing gets a chance to flush) and starts it
    /// again on the same configuration and data directory.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let logged = self.log().len();
        self.child = Server::spawn(&self.data_dir);
        self.wait_listening(logged);
        self.wait_ready();
    }

    /// Waits until the server started after log offset `from` says every shard listens on both
    /// client ports. After a SIGKILL the kernel may keep the old process's listening sockets
    /// (held by its io_uring) accepting for a moment, so a successful connect alone could
    /// reach the dead server instead of the new one.
    fn wait_listening(&mut self, from: usize) {
        let start = Instant::now();
        loop {
            let log = self.log();
            let fresh = log.get(from..).unwrap_or("");
            if fresh.matches(" listening address=").count() >= LISTENERS_PER_SERVER {
                return;
            }
            assert!(self.is_running(), "server exited; log:\n{log}");
            assert!(start.elapsed() < TIMEOUT, "server did not start listening; log:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        for port in [self.c2s, self.c2s_tls, self.http] {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(self.is_running(), "server exited; log:\n{}", self.log());
                assert!(start.elapsed() < TIMEOUT, "server did not start; log:\n{}", self.log());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Something answered on every port: make sure it is this server, not one that exited
        // after failing to bind while another process held a port.
        assert!(self.is_running(), "server exited; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("server.log")).unwrap_or_default()
    }

    /// The server's process id (it re-executes itself in place, so the child's pid stays).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time the server process has used so far (user + system), in milliseconds.
    pub fn cpu_ms(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("/proc stat");
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("").split_whitespace().collect();
        let ticks: u64 = fields.get(11..13).map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum()).unwrap_or(0);
        // USER_HZ is 100 on Linux.
        ticks * 10
    }

    /// Whether the server process is alive (without reaping it).
    pub fn is_running_now(&self) -> bool {
        std::path::Path::new(&format!("/proc/{}/stat", self.pid())).exists()
            && !std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default().contains(") Z ")
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Calls the admin API; returns (status, JSON body).
    pub fn api(&self, command: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut response =
            agent.post(&format!("http://127.0.0.1:{}/api/{command}", self.http)).send_json(body).expect("admin API reachable");
        let status = response.status().as_u16();
        (status, response.body_mut().read_json().expect("JSON body"))
    }

    pub fn register(&self, user: &str, password: &str) {
        let (status, body) = self.api("register", serde_json::json!({"user": user, "host": DOMAIN, "password": password}));
        assert_eq!(status, 200, "register {user}: {body}");
    }

    /// Creates every account of `users` with the same password.
    pub fn register_all(&self, users: &[String], password: &str) {
        for user in users {
            self.register(user, password);
        }
    }

    pub fn ca(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(self.store_dir.join("cert.pem")).expect("generated certificate")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

enum Transport {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

/// A minimal XMPP client for tests.
pub struct Client {
    transport: Transport,
    framer: Framer,
    ca: CertificateDer<'static>,
    pub jid: Option<String>,
}

fn client_limits() -> FramerLimits {
    FramerLimits { stanza_bytes_max: 1 << 20, depth_max: 64, attributes_max: 64, namespace_declarations_max: 16 }
}

impl Client {
    pub fn connect(server: &Server) -> Client {
        let tcp = TcpStream::connect(("127.0.0.1", server.c2s)).unwrap_or_else(|e| panic!("connect: {e}; server log:\n{}", server.log()));
        tcp.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        Client { transport: Transport::Plain(tcp), framer: Framer::new(client_limits()), ca: server.ca(), jid: None }
    }

    pub fn connect_direct_tls(server: &Server) -> Client {
        let mut client = Client::connect_port(server, server.c2s_tls);
        client.wrap_tls();
        client
    }

    fn connect_port(server: &Server, port: u16) -> Client {
        let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        tcp.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        Client { transport: Transport::Plain(tcp), framer: Framer::new(client_limits()), ca: server.ca(), jid: None }
    }

    pub fn send(&mut self, data: &str) {
        self.send_bytes(data.as_bytes());
    }

    pub fn send_bytes(&mut self, data: &[u8]) {
        let result = match &mut self.transport {
            Transport::Plain(tcp) => tcp.write_all(data).and_then(|_| tcp.flush()),
            Transport::Tls(tls) => tls.write_all(data).and_then(|_| tls.flush()),
        };
        // A write may fail after the server closed on us; tests check what was read instead.
        let _ = result;
    }

    /// The next frame from the server as text: the stream header, a top-level element, or
    /// "</stream:stream>". `None` when the server closed the connection.
    pub fn next(&mut self) -> Option<String> {
        self.read_frame(Some(Instant::now() + TIMEOUT))
    }

    /// Like `next`, but `None` also when the read times out.
    fn try_next(&mut self) -> Option<String> {
        self.read_frame(None)
    }

    /// The next frame as text; with a deadline, past it is a test failure.
    fn read_frame(&mut self, deadline: Option<Instant>) -> Option<String> {
        loop {
            match self.framer.next_frame() {
                Ok(Some(Frame::StreamOpen(open))) => return Some(format!("<stream:stream from='{}'>", open.from.as_deref().unwrap_or(""))),
                Ok(Some(Frame::Stanza(stanza))) => return Some(String::from_utf8_lossy(stanza.bytes()).into_owned()),
                Ok(Some(Frame::StreamClose)) => return Some("</stream:stream>".into()),
                Ok(Some(Frame::Whitespace)) => continue,
                Ok(None) => {}
                Err(error) => panic!("server sent bad XML: {error:?}"),
            }
            assert!(deadline.is_none_or(|deadline| Instant::now() < deadline), "timed out waiting for the server");
            let mut buffer = [0u8; 16 * 1024];
            let n = match &mut self.transport {
                Transport::Plain(tcp) => tcp.read(&mut buffer),
                Transport::Tls(tls) => tls.read(&mut buffer),
            };
            match n {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.framer.push(&buffer[..n]),
            }
        }
    }

    /// Reads frames until one contains `needle`; panics with what was seen otherwise.
    pub fn expect(&mut self, needle: &str) -> String {
        let mut seen = Vec::new();
        while let Some(frame) = self.next() {
            if frame.contains(needle) {
                return frame;
            }
            seen.push(frame);
        }
        panic!("connection closed before {needle:?}; saw {seen:#?}");
    }

    /// Reads until the server closes the connection; returns everything seen.
    pub fn read_to_close(&mut self) -> Vec<String> {
        let mut seen = Vec::new();
        while let Some(frame) = self.next() {
            seen.push(frame);
        }
        seen
    }

    pub fn open_stream(&mut self) -> String {
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream to='{DOMAIN}' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
        ));
        self.expect("<stream:stream");
        self.expect("<stream:features")
    }

    pub fn starttls(&mut self) -> String {
        self.open_stream();
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        self.expect("<proceed");
        self.wrap_tls();
        self.open_stream()
    }

    fn wrap_tls(&mut self) {
        let Transport::Plain(tcp) = &self.transport else { panic!("TLS twice") };
        let tcp = tcp.try_clone().expect("clone");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).expect("add CA");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connection = rustls::ClientConnection::new(Arc::new(config), ServerName::try_from(DOMAIN).expect("name")).expect("client");
        self.transport = Transport::Tls(Box::new(rustls::StreamOwned::new(connection, tcp)));
        self.framer.restart(true);
    }

    /// Channel-binding data of this connection, as the server computes it.
    pub fn binding(&self, kind: ChannelBindingType) -> Vec<u8> {
        let Transport::Tls(tls) = &self.transport else { panic!("no TLS") };
        match kind {
            ChannelBindingType::TlsExporter => {
                tls.conn.export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None).expect("exporter").to_vec()
            }
            ChannelBindingType::TlsServerEndPoint => {
                use sha2::Digest as _;
                let certificate = &tls.conn.peer_certificates().expect("peer certificates")[0];
                sha2::Sha256::digest(certificate.as_ref()).to_vec()
            }
        }
    }

    /// Runs a SCRAM exchange; returns the server's final answer element.
    pub fn scram(&mut self, mechanism: &str, user: &str, password: &str) -> String {
        let hash = if mechanism.starts_with("SCRAM-SHA-1") { ScramHash::Sha1 } else { ScramHash::Sha256 };
        let binding = if mechanism.ends_with("-PLUS") {
            let kind = ChannelBindingType::TlsExporter;
            ClientBinding::Use(kind, self.binding(kind))
        } else if matches!(self.transport, Transport::Tls(_)) {
            // We see PLUS offered but do not use it here: the "n" flag says "client does not
            // support channel binding" so the exchange is a plain SCRAM one.
            ClientBinding::NotSupported
        } else {
            ClientBinding::NotSupported
        };
        self.scram_with(mechanism, hash, user, password, binding)
    }

    pub fn scram_with(&mut self, mechanism: &str, hash: ScramHash, user: &str, password: &str, binding: ClientBinding) -> String {
        let mut client = ScramClient::new(hash, user, password, binding, "testclientnonce12345");
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mechanism}'>{}</auth>",
            BASE64.encode(client.client_first())
        ));
        let answer = self.next().expect("answer to auth");
        if !answer.contains("<challenge") {
            return answer;
        }
        let server_first = BASE64.decode(element_text(&answer)).expect("base64 challenge");
        let Ok(client_final) = client.handle_server_first(&server_first) else { return "client rejected challenge".into() };
        self.send(&format!("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>", BASE64.encode(client_final)));
        let answer = self.next().expect("answer to response");
        if answer.contains("<success") {
            // RFC 6120 §6.4.6: the server's next bytes start a new stream (and document).
            self.framer.restart(false);
            let server_final = BASE64.decode(element_text(&answer)).expect("base64 success");
            client.verify_server_final(&server_final).expect("server signature verifies");
        }
        answer
    }

    pub fn plain(&mut self, user: &str, password: &str) -> String {
        let payload = BASE64.encode(format!("\0{user}\0{password}"));
        self.send(&format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{payload}</auth>"));
        let answer = self.next().expect("answer to PLAIN");
        if answer.contains("<success") {
            self.framer.restart(false);
        }
        answer
    }

    /// Restarts the stream after SASL success and binds a resource; returns the full JID.
    pub fn bind(&mut self, resource: &str) -> String {
        let features = self.open_stream();
        assert!(features.contains("urn:ietf:params:xml:ns:xmpp-bind"), "{features}");
        self.send(&format!(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
        ));
        let result = self.expect("id='bind1'");
        let jid = result.split("<jid>").nth(1).and_then(|s| s.split("</jid>").next()).expect("jid in bind result").to_owned();
        self.jid = Some(jid.clone());
        jid
    }

    /// STARTTLS + SCRAM-SHA-256 + bind + available presence.
    pub fn login(server: &Server, user: &str, password: &str, resource: &str) -> Client {
        let mut client = Client::bound(server, user, password, resource);
        client.send("<presence/>");
        client.expect("<presence");
        client
    }

    /// STARTTLS + SCRAM-SHA-256, stopping before the post-authentication stream restart.
    pub fn authenticated(server: &Server, user: &str, password: &str) -> Client {
        let mut client = Client::connect(server);
        client.starttls();
        let answer = client.scram("SCRAM-SHA-256", user, password);
        assert!(answer.contains("<success"), "login {user}: {answer}");
        client
    }

    /// STARTTLS + SCRAM-SHA-256 + bind, without presence (the session is not yet available).
    pub fn bound(server: &Server, user: &str, password: &str, resource: &str) -> Client {
        let mut client = Client::authenticated(server, user, password);
        client.bind(resource);
        client
    }

    /// Sends an iq and returns the answer with the same id.
    pub fn iq(&mut self, id: &str, body: &str) -> String {
        self.send(body);
        self.expect(&format!("id='{id}'"))
    }

    /// Reads frames for `wait` and returns them (for checking that something did not arrive).
    pub fn collect_for(&mut self, wait: Duration) -> Vec<String> {
        self.set_read_timeout(wait);
        let mut seen = Vec::new();
        while let Some(frame) = self.try_next() {
            seen.push(frame);
        }
        self.set_read_timeout(TIMEOUT);
        seen
    }

    fn set_read_timeout(&mut self, timeout: Duration) {
        let tcp = match &self.transport {
            Transport::Plain(tcp) => tcp,
            Transport::Tls(tls) => tls.get_ref(),
        };
        tcp.set_read_timeout(Some(timeout)).expect("timeout");
    }

    /// Sends a TLS close_notify alert and `after` in the same TCP write, as a hostile or broken
    /// peer might (nothing may follow close_notify, RFC 8446 §6.1).
    pub fn close_notify_then(&mut self, after: &[u8]) {
        let Transport::Tls(tls) = &mut self.transport else { panic!("no TLS") };
        tls.conn.send_close_notify();
        let mut wire = Vec::new();
        while tls.conn.wants_write() {
            tls.conn.write_tls(&mut wire).expect("alert bytes");
        }
        wire.extend_from_slice(after);
        let _ = tls.sock.write_all(&wire);
    }

    /// Drops the TCP connection without closing the stream (a lost connection).
    pub fn drop_connection(self) {
        let tcp = match &self.transport {
            Transport::Plain(tcp) => tcp,
            Transport::Tls(tls) => tls.get_ref(),
        };
        let _ = tcp.shutdown(std::net::Shutdown::Both);
    }
}

/// Text content of a simple element like `<challenge xmlns='…'>BASE64</challenge>`.
pub fn element_text(element: &str) -> &str {
    element.split_once('>').map(|(_, rest)| rest).and_then(|rest| rest.rsplit_once('<')).map(|(text, _)| text).unwrap_or("")
}

/// Picks `count` user names whose home shards (FNV-1a of the bare JID mod 2) are as asked.
pub fn users_on_shards(prefix: &str, want: &[usize]) -> Vec<String> {
    let mut out = Vec::new();
    for &shard in want {
        let name = (0..)
            .map(|i| format!("{prefix}{i}"))
            .find(|name| confab_core::routing::home_shard(&format!("{name}@{DOMAIN}"), 2) == shard && !out.contains(name))
            .expect("some name hashes there");
        out.push(name);
    }
    out
}
