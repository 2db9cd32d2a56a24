//! One client connection: socket and TLS I/O around the core's framer and stream machine.
//!
//! The task parks on a 1-byte `peek` while the peer is silent (an io_uring receive holds its
//! buffer while pending, so idle connections hold none), reads into a per-shard pooled buffer,
//! decrypts with rustls driven by hand, feeds the framer, and carries out the stream's
//! `Action`s. When SASL names a user homed on another shard, the whole connection (fd, rustls
//! state, framer, stream) moves there before any credential is looked up; from then on every
//! stanza of that user is handled on its home shard. This module does not decide routing
//! (shard.rs and confab-core do) and does not know the HTTP API.

use std::cell::RefCell;
use std::io::{self, Read as _, Write as _};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::{Duration, Instant};

use confab_core::framer::{Framer, Frame, Stanza};
use confab_core::jid::{FullJid, Jid};
use confab_core::limits::READ_CHUNK_BYTES;
use confab_core::routing::{self, StanzaKind};
use confab_core::stream::{Action, C2sStream, Entropy, StreamError};
use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};
use glommio::channels::local_channel::{self, LocalReceiver};
use glommio::net::TcpStream;
use rand::distr::{Alphanumeric, SampleString as _};
use rustls::ServerConnection;

use crate::shard::{self, Envelope, SessionMessage, ShardMessage, ShardRef};

/// Pooled read buffers kept per shard; more are allocated (and freed) under bursts.
const READ_BUFFERS_POOLED_MAX: usize = 64;
/// Stanzas written in one batch when several wait in the session inbox.
const INBOX_BATCH_MAX: usize = 64;
/// A write the peer does not drain within this time fails and the connection closes, so a
/// client that stops reading cannot hold its task (and its inbox) forever.
const WRITE_TIMEOUT_MS: u64 = 30_000;

/// A connection on its way to its user's home shard, mid-SASL.
pub struct Migrant {
    fd: RawFd,
    tls: Option<Box<ServerConnection>>,
    framer: Framer,
    stream: C2sStream,
    peer: SocketAddr,
    deadline: Instant,
    pending: Action,
}

impl Drop for Migrant {
    fn drop(&mut self) {
        if self.fd >= 0 {
            // SAFETY: the fd was dup'ed for this migrant and is owned by it alone until
            // `adopt` takes it (setting it to -1).
            #[allow(unsafe_code)]
            unsafe {
                libc::close(self.fd);
            }
        }
    }
}

/// Randomness for the stream machine: ids, nonces, generated resources.
pub struct ThreadEntropy;

impl Entropy for ThreadEntropy {
    fn token(&mut self) -> String {
        Alphanumeric.sample_string(&mut rand::rng(), 20)
    }
}

/// Serves a freshly accepted connection on this shard.
pub async fn accept(shard: ShardRef, socket: TcpStream, direct_tls: bool) {
    let Ok(peer) = socket.peer_addr() else { return };
    let _ = socket.set_nodelay(true);
    let _ = socket.set_write_timeout(Some(Duration::from_millis(WRITE_TIMEOUT_MS)));
    let (shared, banned) = {
        let mut s = shard.borrow_mut();
        (s.shared.clone(), s.is_banned(peer.ip(), Instant::now()))
    };
    let deadline = Instant::now() + Duration::from_millis(shared.config.limits.preauth_timeout_ms);
    let mut connection = Connection {
        socket,
        tls: None,
        framer: Framer::new(shared.framer_limits(false)),
        stream: C2sStream::new(),
        peer,
        deadline,
        shard: shard.clone(),
        id: shard.borrow_mut().next_connection_id(),
        inbox: None,
        output: Vec::new(),
        actions: Vec::new(),
    };
    if banned {
        // Refused before any work, with the reason in the stream error.
        let mut out = Vec::new();
        connection.stream.fail(StreamError::with_text("policy-violation", "too many failed logins; try again later"), &shared.stream, &mut ThreadEntropy, &mut out);
        connection.actions = out;
        let _ = connection.carry_out_simple();
        let _ = connection.flush().await;
        return;
    }
    if direct_tls {
        // XEP-0368: TLS from the first byte.
        match shared.tls.accept() {
            Ok(tls) => connection.tls = Some(Box::new(tls)),
            Err(error) => {
                tracing::warn!(%error, "cannot start TLS");
                return;
            }
        }
        if connection.handshake().await.is_err() {
            return;
        }
        let bindings = connection.tls.as_deref().map(|tls| shared.tls.bindings(tls)).unwrap_or_default();
        connection.stream = C2sStream::new_direct_tls(bindings);
    }
    connection.run().await;
}

/// Resumes a connection that moved here from another shard.
pub async fn adopt(shard: ShardRef, mut migrant: Box<Migrant>) {
    let (fd, tls, framer, stream, peer, deadline, pending) = migrant.take();
    // SAFETY: `fd` is a dup of the original socket, owned by the migrant until now; the
    // original descriptor was closed on the sending shard, so this is the only owner.
    #[allow(unsafe_code)]
    let socket = unsafe { TcpStream::from_raw_fd(fd) };
    let _ = socket.set_write_timeout(Some(Duration::from_millis(WRITE_TIMEOUT_MS)));
    let id = shard.borrow_mut().next_connection_id();
    let mut connection = Connection { socket, tls, framer, stream, peer, deadline, shard, id, inbox: None, output: Vec::new(), actions: vec![pending] };
    match connection.carry_out().await {
        Ok(Flow::Continue) => connection.run().await,
        Ok(Flow::Migrate(_)) => {
            debug_assert!(false, "a connection moved twice");
            connection.finish();
        }
        Ok(Flow::Close) | Err(_) => {
            let _ = connection.flush().await;
            connection.finish();
        }
    }
}

impl Migrant {
    /// Moves everything out; the fd becomes the caller's (Drop will not close it).
    #[allow(clippy::type_complexity)]
    fn take(&mut self) -> (RawFd, Option<Box<ServerConnection>>, Framer, C2sStream, SocketAddr, Instant, Action) {
        (
            std::mem::replace(&mut self.fd, -1),
            self.tls.take(),
            std::mem::replace(&mut self.framer, Framer::new(empty_limits())),
            std::mem::take(&mut self.stream),
            self.peer,
            self.deadline,
            std::mem::replace(&mut self.pending, Action::Close),
        )
    }
}

fn empty_limits() -> confab_core::framer::FramerLimits {
    confab_core::framer::FramerLimits { stanza_bytes_max: 0, depth_max: 0, attributes_max: 0, namespace_declarations_max: 0 }
}

enum Flow {
    Continue,
    Close,
    /// Move to another shard with this pending action.
    Migrate(usize),
}

enum Wake {
    Readable(io::Result<usize>),
    Inbox(Option<SessionMessage>),
    Timeout,
}

struct Connection {
    socket: TcpStream,
    tls: Option<Box<ServerConnection>>,
    framer: Framer,
    stream: C2sStream,
    peer: SocketAddr,
    /// Authentication must complete before this instant.
    deadline: Instant,
    shard: ShardRef,
    id: u64,
    inbox: Option<LocalReceiver<SessionMessage>>,
    /// Plaintext waiting to be written.
    output: Vec<u8>,
    actions: Vec<Action>,
}

impl Connection {
    async fn run(mut self) {
        let shared = self.shard.borrow().shared.clone();
        let idle = Duration::from_millis(shared.config.limits.idle_timeout_ms);
        // Only bytes from the peer count as activity (RFC 6120 §4.6.1: whitespace pings too).
        let mut last_heard = Instant::now();
        loop {
            // Boxed: the frame-processing future (TLS handshakes, SASL answers) is large and
            // short-lived; kept inline it would sit in every idle connection's task.
            match Box::pin(self.process_frames()).await {
                Ok(Flow::Continue) => {}
                Ok(Flow::Close) => {
                    let _ = self.flush().await;
                    break;
                }
                Err(_) => break,
                Ok(Flow::Migrate(home)) => return self.migrate(home).await,
            }
            if self.flush().await.is_err() {
                break;
            }
            let timeout = if self.stream.bound().is_some() {
                (last_heard + idle).saturating_duration_since(Instant::now())
            } else {
                self.deadline.saturating_duration_since(Instant::now())
            };
            match self.wait(timeout).await {
                Wake::Readable(Ok(0)) | Wake::Readable(Err(_)) => break,
                Wake::Readable(Ok(_)) => match self.read().await {
                    Ok(true) => last_heard = Instant::now(),
                    Ok(false) => break,
                    Err(error) => {
                        tracing::debug!(peer = %self.peer, %error, "read failed");
                        let _ = self.flush().await;
                        break;
                    }
                },
                Wake::Inbox(Some(message)) => {
                    if !self.session_message(message) {
                        let _ = self.flush().await;
                        break;
                    }
                    // Drain what else is waiting so one write carries a batch.
                    for _ in 0..INBOX_BATCH_MAX {
                        let Some(inbox) = self.inbox.as_ref() else { break };
                        let Some(Some(message)) = futures_lite::future::block_on(futures_lite::future::poll_once(inbox.recv())) else { break };
                        if !self.session_message(message) {
                            break;
                        }
                    }
                    if self.stream.is_closed() {
                        let _ = self.flush().await;
                        break;
                    }
                }
                Wake::Inbox(None) => break,
                Wake::Timeout => {
                    // RFC 6120 §4.9.3.4 connection-timeout.
                    self.fail(StreamError::new("connection-timeout"));
                    let _ = self.flush().await;
                    break;
                }
            }
        }
        self.finish();
    }

    /// Waits for bytes from the peer, a stanza for the session, or the timeout.
    async fn wait(&self, timeout: Duration) -> Wake {
        let mut probe = [0u8; 1];
        let readable = async { Wake::Readable(self.socket.peek(&mut probe).await.map_err(io::Error::from)) };
        let timer = async {
            glommio::timer::sleep(timeout).await;
            Wake::Timeout
        };
        match &self.inbox {
            Some(inbox) => {
                let inbox = async { Wake::Inbox(inbox.recv().await) };
                futures_lite::future::or(readable, futures_lite::future::or(inbox, timer)).await
            }
            None => futures_lite::future::or(readable, timer).await,
        }
    }

    /// Reads one chunk and feeds its plaintext to the framer. Ok(false) on orderly close.
    async fn read(&mut self) -> io::Result<bool> {
        let mut buffer = take_buffer();
        let result = self.socket.read(&mut buffer).await;
        let outcome = match result {
            Ok(0) => Ok(false),
            Ok(n) => self.receive(&buffer[..n]).map(|_| true),
            Err(error) => Err(error),
        };
        give_back(buffer);
        outcome
    }

    fn receive(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let Some(tls) = self.tls.as_deref_mut() else {
            self.framer.push(bytes);
            return Ok(());
        };
        let mut plain = take_buffer();
        let result = (|| {
            while !bytes.is_empty() {
                tls.read_tls(&mut bytes)?;
                if let Err(error) = tls.process_new_packets() {
                    // The alert rustls queued goes out with the next flush.
                    return Err(io::Error::new(io::ErrorKind::InvalidData, error));
                }
                loop {
                    match tls.reader().read(&mut plain) {
                        Ok(0) => break,
                        Ok(n) => self.framer.push(&plain[..n]),
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                        Err(error) => return Err(error),
                    }
                }
            }
            Ok(())
        })();
        give_back(plain);
        result
    }

    /// Writes pending plaintext (through TLS when active) and any TLS records rustls queued.
    async fn flush(&mut self) -> io::Result<()> {
        match self.tls.as_deref_mut() {
            None => {
                if !self.output.is_empty() {
                    self.socket.write_all(&self.output).await?;
                }
            }
            Some(tls) => {
                // rustls buffers at most its buffer limit of plaintext: feed it in pieces,
                // sending the records each piece makes.
                let mut offset = 0;
                loop {
                    if offset < self.output.len() {
                        offset += tls.writer().write(&self.output[offset..])?;
                    }
                    if tls.wants_write() {
                        let mut wire = Vec::with_capacity((self.output.len() - offset).min(64 * 1024) + 64);
                        while tls.wants_write() {
                            tls.write_tls(&mut wire)?;
                        }
                        self.socket.write_all(&wire).await?;
                    }
                    if offset >= self.output.len() {
                        break;
                    }
                }
            }
        }
        // Idle connections keep no output buffer; the next write allocates one.
        self.output = Vec::new();
        Ok(())
    }

    /// Runs the TLS handshake to completion (STARTTLS or direct TLS), within the pre-auth
    /// deadline.
    async fn handshake(&mut self) -> io::Result<()> {
        loop {
            let Some(tls) = self.tls.as_deref_mut() else { return Err(io::ErrorKind::NotConnected.into()) };
            if !tls.is_handshaking() {
                break;
            }
            if tls.wants_write() {
                self.flush().await?;
                continue;
            }
            let timeout = self.deadline.saturating_duration_since(Instant::now());
            let read = async { Some(self.socket.peek(&mut [0u8; 1]).await) };
            let timer = async {
                glommio::timer::sleep(timeout).await;
                None
            };
            match futures_lite::future::or(read, timer).await {
                Some(Ok(0)) | Some(Err(_)) | None => return Err(io::ErrorKind::TimedOut.into()),
                Some(Ok(_)) => {
                    if let Err(error) = self.read().await {
                        let _ = self.flush().await;
                        return Err(error);
                    }
                }
            }
        }
        self.flush().await
    }

    /// Takes frames from the framer and hands them to the stream machine until it needs
    /// more bytes, waits for an answer, or the stream ends.
    async fn process_frames(&mut self) -> io::Result<Flow> {
        let shared = self.shard.borrow().shared.clone();
        let mut outbox: Vec<(usize, Envelope)> = Vec::new();
        loop {
            if !self.actions.is_empty() {
                match self.carry_out().await? {
                    Flow::Continue => {}
                    other => {
                        self.send_outbox(outbox).await;
                        return Ok(other);
                    }
                }
            }
            if self.stream.is_closed() {
                self.send_outbox(outbox).await;
                return Ok(Flow::Close);
            }
            if self.stream.is_waiting() {
                continue;
            }
            let mut actions = std::mem::take(&mut self.actions);
            let frame = self.framer.next_frame();
            match frame {
                Ok(None) => {
                    self.actions = actions;
                    break;
                }
                Err(error) => {
                    tracing::debug!(peer = %self.peer, %error, "stream error from framer");
                    self.stream.framer_error(error, &shared.stream, &mut ThreadEntropy, &mut actions);
                }
                Ok(Some(frame)) => {
                    let is_presence_without_to = matches!(&frame, Frame::Stanza(s) if s.name == "presence" && s.to.is_none());
                    if let Some(stanza) = self.stream.handle_frame(frame, &shared.stream, &mut ThreadEntropy, &mut actions) {
                        let Some(me) = self.stream.bound().cloned() else {
                            unreachable!("the stream only yields stanzas once bound")
                        };
                        route_from_client(&self.shard, &me, &stanza, is_presence_without_to, &mut self.output, &mut outbox);
                    }
                }
            }
            self.actions = actions;
            if outbox.len() >= INBOX_BATCH_MAX {
                self.send_outbox(std::mem::take(&mut outbox)).await;
            }
        }
        self.send_outbox(outbox).await;
        if self.framer.buffered_len() == 0 {
            self.framer.release_idle_memory();
        }
        Ok(Flow::Continue)
    }

    /// Sends envelopes for other shards, waiting when a peer's inbox is full (backpressure
    /// on this client, never unbounded queues).
    async fn send_outbox(&self, outbox: Vec<(usize, Envelope)>) {
        if outbox.is_empty() {
            return;
        }
        let shared = self.shard.borrow().shared.clone();
        for (home, envelope) in outbox {
            if home == self.shard.borrow().id {
                shard::dispatch_now(&self.shard, envelope);
            } else if shared.inboxes[home].send(ShardMessage::Deliver(envelope)).await.is_err() {
                tracing::warn!(shard = home, "peer shard inbox closed");
            }
        }
    }

    /// Carries out queued actions without I/O; used on paths that only write and close.
    fn carry_out_simple(&mut self) -> Flow {
        let mut flow = Flow::Continue;
        for action in std::mem::take(&mut self.actions) {
            match action {
                Action::Send(bytes) => self.output.extend_from_slice(&bytes),
                Action::Close => flow = Flow::Close,
                _ => {}
            }
        }
        flow
    }

    /// Carries out the stream machine's actions in order.
    async fn carry_out(&mut self) -> io::Result<Flow> {
        let shared = self.shard.borrow().shared.clone();
        let mut queue = std::mem::take(&mut self.actions);
        let mut flow = Flow::Continue;
        while !queue.is_empty() {
            let action = queue.remove(0);
            let mut more = Vec::new();
            if let Action::LookupCredentials { user, .. } | Action::VerifyPlain { user, .. } = &action {
                // SASL named the user: credentials are only ever touched on the user's home
                // shard, so the connection moves there first; and a banned address gets no
                // password work at all.
                let home = shared.home_of(user);
                if home != self.shard.borrow().id {
                    self.actions = std::iter::once(action).chain(queue).collect();
                    return Ok(Flow::Migrate(home));
                }
                if self.refuse_if_banned() {
                    continue;
                }
            }
            match action {
                Action::Send(bytes) => self.output.extend_from_slice(&bytes),
                Action::Close => flow = Flow::Close,
                Action::StartTls => {
                    self.flush().await?;
                    self.tls = Some(Box::new(shared.tls.accept().map_err(|e| io::Error::other(e.to_string()))?));
                    // RFC 6120 §5.4.3.3: bytes received in clear after <starttls/> are dropped.
                    self.framer.restart(true);
                    self.handshake().await?;
                    let bindings = self.tls.as_deref().map(|tls| shared.tls.bindings(tls)).unwrap_or_default();
                    self.stream.tls_established(bindings);
                }
                Action::RestartStream => {
                    self.framer.restart(false);
                    self.framer.set_limits(shared.framer_limits(true));
                }
                Action::LookupCredentials { ref user, hash } => {
                    let credentials = self.shard.borrow().account(user).map(|a| a.credentials(hash));
                    self.stream.credentials(credentials, &shared.stream, &mut ThreadEntropy, &mut more);
                }
                Action::VerifyPlain { ref user, ref password } => {
                    let hash = confab_core::sasl::ScramHash::Sha256;
                    // Unknown users get the same PBKDF2 work against fake credentials, so
                    // timing does not tell them apart from a wrong password.
                    let credentials = self.shard.borrow().account(user).map(|a| a.credentials(hash)).unwrap_or_else(|| {
                        confab_core::sasl::ScramCredentials::fake(hash, user.as_str(), &shared.stream.server_secret, shared.config.security.scram_iterations)
                    });
                    let password = password.clone();
                    let ok = glommio::executor().spawn_blocking(move || credentials.verify_password(&password)).await;
                    self.stream.plain_checked(ok, &shared.stream, &mut ThreadEntropy, &mut more);
                }
                Action::Authenticated(user) => {
                    debug_assert_eq!(shared.home_of(&user), self.shard.borrow().id, "authenticated away from the home shard");
                    tracing::info!(peer = %self.peer, %user, "authenticated");
                }
                Action::AuthFailed => {
                    let address = self.peer.ip();
                    tracing::info!(peer = %self.peer, "authentication failed");
                    let counter = routing::home_shard(&address.to_string(), shared.shard_count());
                    if counter == self.shard.borrow().id {
                        handle_auth_failure(&self.shard, address);
                    } else {
                        let _ = shared.inboxes[counter].send(ShardMessage::AuthFailure(address)).await;
                    }
                }
                Action::Bind { jid, id } => {
                    // Unbounded in type, bounded in use (`shard::offer` checks the length):
                    // glommio's bounded channel preallocates its whole capacity, which would
                    // cost every idle session tens of KiB.
                    let (sender, receiver) = local_channel::new_unbounded();
                    let result = self.shard.borrow_mut().bind(&jid, self.id, sender);
                    match result {
                        Ok(()) => {
                            self.inbox = Some(receiver);
                            tracing::debug!(%jid, "resource bound");
                            self.stream.bind_result(Ok(jid), &id, &mut more);
                        }
                        Err(condition) => self.stream.bind_result(Err(condition), &id, &mut more),
                    }
                }
            }
            // Actions produced by an answer run before the rest of the queue.
            if !more.is_empty() {
                more.extend(queue);
                queue = more;
            }
        }
        Ok(flow)
    }

    fn refuse_if_banned(&mut self) -> bool {
        let banned = self.shard.borrow_mut().is_banned(self.peer.ip(), Instant::now());
        if banned {
            self.fail(StreamError::with_text("policy-violation", "too many failed logins; try again later"));
        }
        banned
    }

    fn fail(&mut self, error: StreamError) {
        let shared = self.shard.borrow().shared.clone();
        let mut out = Vec::new();
        self.stream.fail(error, &shared.stream, &mut ThreadEntropy, &mut out);
        for action in out {
            if let Action::Send(bytes) = action {
                self.output.extend_from_slice(&bytes);
            }
        }
    }

    /// Returns false when the connection must close.
    fn session_message(&mut self, message: SessionMessage) -> bool {
        match message {
            SessionMessage::Stanza(bytes) => {
                self.output.extend_from_slice(&bytes);
                true
            }
            SessionMessage::Kick(error) => {
                tracing::info!(peer = %self.peer, condition = error.condition, "session closed by the server");
                self.fail(error);
                false
            }
        }
    }

    async fn migrate(self, home: usize) {
        let shared = self.shard.borrow().shared.clone();
        let Connection { socket, tls, framer, stream, peer, deadline, mut actions, .. } = self;
        // SAFETY: dup of a descriptor we own; the copy is owned by the migrant from here on.
        #[allow(unsafe_code)]
        let fd = unsafe { libc::fcntl(socket.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        drop(socket);
        if fd < 0 {
            tracing::warn!(%peer, "cannot duplicate socket for migration");
            return;
        }
        let pending = if actions.is_empty() { Action::Close } else { actions.remove(0) };
        debug_assert!(actions.is_empty(), "actions after a credential request");
        let migrant = Box::new(Migrant { fd, tls, framer, stream, peer, deadline, pending });
        if shared.inboxes[home].send(ShardMessage::Adopt(migrant)).await.is_err() {
            tracing::warn!(shard = home, "home shard gone; connection dropped");
        }
    }

    /// Leaves the session table and tells the user's other resources, if it was available.
    fn finish(&mut self) {
        let Some(jid) = self.stream.bound().cloned() else { return };
        let was_available = self.shard.borrow_mut().unbind(&jid, self.id);
        if was_available {
            // RFC 6121 §4.5.2: unavailable presence on the user's behalf.
            let bytes = format!("<presence type='unavailable' from='{}'/>", confab_core::xml::escape_attribute(jid.as_str())).into_bytes();
            let envelope = Envelope {
                to: Jid::Bare(jid.bare()),
                from: Jid::Full(jid.clone()),
                kind: StanzaKind::Presence,
                stanza_type: Some("unavailable".into()),
                id: None,
                bytes,
            };
            shard::dispatch_now(&self.shard, envelope);
        }
        tracing::debug!(%jid, "session ended");
    }
}

/// Counts a login failure on the shard that counts for this address; bans go to every shard.
pub fn handle_auth_failure(shard: &ShardRef, address: std::net::IpAddr) {
    let (ban, shared) = {
        let mut s = shard.borrow_mut();
        (s.count_failure(address, Instant::now()), s.shared.clone())
    };
    if let Some(until) = ban {
        let me = shard.borrow().id;
        for (k, inbox) in shared.inboxes.iter().enumerate() {
            if k == me {
                shard.borrow_mut().ban(address, until);
            } else if inbox.try_send(ShardMessage::Ban(address, until)).is_err() {
                tracing::warn!(shard = k, "could not forward a ban");
            }
        }
    }
}

/// Routes a stanza from a bound client (RFC 6120 §10, RFC 6121 §8). Replies the server makes
/// to the sender itself go straight into `output`; stanzas for users go to `outbox`.
fn route_from_client(
    shard: &ShardRef,
    me: &FullJid,
    stanza: &Stanza<'_>,
    undirected_presence: bool,
    output: &mut Vec<u8>,
    outbox: &mut Vec<(usize, Envelope)>,
) {
    let shared = shard.borrow().shared.clone();
    let domain = shared.config.domain.as_str();
    let Some(kind) = StanzaKind::from_name(stanza.name) else { return };
    let stanza_type = stanza.kind.as_deref();
    let id = stanza.id.as_deref();
    let to = match stanza.to.as_deref().map(Jid::parse) {
        Some(Ok(to)) => Some(to),
        None => None,
        Some(Err(_)) => {
            // RFC 6120 §8.3.3.8 jid-malformed.
            if let Some(error) = shard::error_envelope(&Jid::Bare(me.bare()), &Jid::Full(me.clone()), kind, stanza_type, id, "jid-malformed") {
                output.extend_from_slice(&error.bytes);
            }
            return;
        }
    };
    let from = Jid::Full(me.clone());
    match (kind, to) {
        (StanzaKind::Presence, None) if undirected_presence => {
            // RFC 6121 §4.2–4.5: the session's availability; broadcast to the user's own
            // available resources (no roster yet, so no contacts to tell).
            let (available, priority) = presence_state(stanza);
            shard.borrow_mut().set_presence(me, available, priority);
            if matches!(stanza_type, None | Some("unavailable")) {
                let envelope = envelope(Jid::Bare(me.bare()), from, kind, stanza, me);
                shard::dispatch_now(shard, envelope);
            }
        }
        (StanzaKind::Iq, None) => {
            // RFC 6120 §10.3.3: no `to` means the server answers on the account's behalf.
            let element = stanza.element().ok();
            if matches!(stanza_type, Some("result") | Some("error")) {
                return;
            }
            let payload = element.as_ref().and_then(|e| e.elements().next());
            output.extend_from_slice(&routing::server_iq(stanza_type.unwrap_or(""), id.unwrap_or(""), payload, None, me.as_str(), None));
        }
        (StanzaKind::Message, None) => {
            // RFC 6121 §8.1: treated as addressed to the sender's bare JID.
            let to = Jid::Bare(me.bare());
            let home = shared.home_of(&to.bare());
            outbox.push((home, envelope(to, from, kind, stanza, me)));
        }
        (_, None) => {}
        (_, Some(to)) if to.domain() != domain => {
            // No server-to-server yet: RFC 6120 §10.4.3 remote-server-not-found.
            if let Some(error) = shard::error_envelope(&to, &from, kind, stanza_type, id, "remote-server-not-found") {
                output.extend_from_slice(&error.bytes);
            }
        }
        (_, Some(to)) if to.local().is_none() => {
            if kind == StanzaKind::Iq && to.resource().is_none() && !matches!(stanza_type, Some("result") | Some("error")) {
                let element = stanza.element().ok();
                let payload = element.as_ref().and_then(|e| e.elements().next());
                output.extend_from_slice(&routing::server_iq(stanza_type.unwrap_or(""), id.unwrap_or(""), payload, Some(domain), me.as_str(), None));
            } else if kind != StanzaKind::Presence {
                // RFC 6120 §10.3: nothing is served at the domain's resources or by message.
                if let Some(error) = shard::error_envelope(&to, &from, kind, stanza_type, id, "service-unavailable") {
                    output.extend_from_slice(&error.bytes);
                }
            }
        }
        (_, Some(to)) => {
            let home = shared.home_of(&to.bare());
            outbox.push((home, envelope(to, from, kind, stanza, me)));
        }
    }
}

fn envelope(to: Jid, from: Jid, kind: StanzaKind, stanza: &Stanza<'_>, me: &FullJid) -> Envelope {
    Envelope {
        to,
        from,
        kind,
        stanza_type: stanza.kind.as_deref().map(Into::into),
        id: stanza.id.as_deref().map(Into::into),
        // The original bytes with only `from` stamped (RFC 6120 §8.1.2.1).
        bytes: stanza.with_from(me.as_str()),
    }
}

/// RFC 6121 §4.7.2.3: priority is an integer in -128..=127, 0 when absent; an unavailable
/// presence makes the session unavailable.
fn presence_state(stanza: &Stanza<'_>) -> (bool, i8) {
    match stanza.kind.as_deref() {
        None => {
            let priority = stanza
                .element()
                .ok()
                .and_then(|e| e.child("priority", confab_core::stream::CLIENT_NAMESPACE).map(|p| p.text()))
                .and_then(|text| text.trim().parse::<i8>().ok())
                .unwrap_or(0);
            (true, priority)
        }
        _ => (false, 0),
    }
}

thread_local! {
    static READ_BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn take_buffer() -> Vec<u8> {
    READ_BUFFERS.with(|pool| pool.borrow_mut().pop()).unwrap_or_else(|| vec![0; READ_CHUNK_BYTES])
}

fn give_back(buffer: Vec<u8>) {
    debug_assert_eq!(buffer.len(), READ_CHUNK_BYTES);
    READ_BUFFERS.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < READ_BUFFERS_POOLED_MAX {
            pool.push(buffer);
        }
    });
}

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send>() {}
    is_send::<Migrant>();
}
