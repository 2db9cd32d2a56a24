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
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::inbox::{inbox, InboxReceiver};
use confab_core::framer::{Frame, Framer};
use confab_core::jid::{BareJid, FullJid};
use confab_core::limits::READ_CHUNK_BYTES;
use confab_core::routing::{self, StanzaKind};
use confab_core::sasl::SaslFailure;
use confab_core::sm::{self, SmElement, StreamManagement};
use confab_core::stream::{Action, C2sStream, Entropy, StreamError, CSI_NAMESPACE, SM_NAMESPACE};
use confab_core::throttle::{AuthThrottle, Refusal};
use futures_channel::oneshot;
use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};
use glommio::net::TcpStream;
use rand::distr::{Alphanumeric, SampleString as _};
use rustls::ServerConnection;

use crate::im;
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
        let s = shard.borrow();
        (s.shared.clone(), s.is_banned(peer.ip(), s.shared.monotonic_ms()))
    };
    let deadline = Instant::now() + Duration::from_millis(shared.config.limits.preauth_timeout_ms);
    let id = shard.borrow_mut().next_connection_id();
    let parts = Parts { socket, tls: None, framer: Framer::new(shared.framer_limits(false)), stream: C2sStream::new(), peer, deadline };
    let mut connection = Connection::new(parts, shard.clone(), id, Vec::new());
    if banned {
        // Refused before any work, with the reason in the stream error.
        let mut out = Vec::new();
        connection.stream.fail(
            StreamError::with_text("policy-violation", "too many failed logins; try again later"),
            &shared.stream,
            &mut ThreadEntropy,
            &mut out,
        );
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
    let mut connection = Connection::new(Parts { socket, tls, framer, stream, peer, deadline }, shard, id, vec![pending]);
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
    inbox: Option<InboxReceiver>,
    /// Plaintext waiting to be written.
    output: Vec<u8>,
    actions: Vec<Action>,
    /// What the last client stanza produced (its records already queued for the store, with
    /// what resolves once they are durable), carried out before the next frame.
    effects: Option<(im::Effects, oneshot::Receiver<Result<(), String>>)>,
    /// XEP-0198 state once enabled (boxed: most sessions never enable it).
    sm: Option<Box<StreamManagement>>,
    /// The resumption id when the client asked for resumable stream management.
    sm_id: Option<String>,
    /// Stanzas went out since the last `<r/>`.
    sm_unrequested: bool,
    /// An `<r/>` is waiting for its `<a/>`: no second one until it comes (one request per
    /// round trip, not one per write).
    sm_request_outstanding: bool,
    /// XEP-0352: the client said it is inactive; presence is held back.
    inactive: bool,
    held: Vec<Vec<u8>>,
    /// The authentication attempt in flight, if any.
    attempt: Option<Attempt>,
    /// The peer closed its TLS session (close_notify): frames received before it are handled,
    /// then the connection ends as on EOF.
    peer_closed: bool,
}

/// An authentication attempt in flight, from its start (credential lookup) to its verdict.
/// Dropped unsettled — the connection ended mid-exchange, the exchange was aborted — it is
/// abandoned: it stops counting, and counts as no failure.
struct Attempt {
    throttle: Rc<RefCell<AuthThrottle>>,
    address: IpAddr,
    account: String,
    /// The server hashes this attempt's password (SASL PLAIN).
    hashing: bool,
    settled: bool,
}

impl Attempt {
    fn succeeded(mut self) {
        self.settled = true;
        self.throttle.borrow_mut().succeeded(self.address, &self.account, self.hashing);
    }

    /// A wrong password; returns until when the account is now locked for this address.
    fn failed(mut self, now: u64) -> Option<u64> {
        self.settled = true;
        self.throttle.borrow_mut().failed(self.address, &self.account, self.hashing, now)
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.settled {
            self.throttle.borrow_mut().abandoned(self.address, &self.account, self.hashing);
        }
    }
}

/// A session whose connection was lost with resumable stream management on: it stays bound
/// (and keeps collecting stanzas in its inbox) until resumed or until the timeout (XEP-0198 §5).
pub struct Detached {
    jid: FullJid,
    connection: u64,
    sm: Box<StreamManagement>,
    inbox: InboxReceiver,
}

/// What a connection is made of before it has a session: the same whether it was accepted
/// here or moved here.
struct Parts {
    socket: TcpStream,
    tls: Option<Box<ServerConnection>>,
    framer: Framer,
    stream: C2sStream,
    peer: SocketAddr,
    deadline: Instant,
}

impl Connection {
    fn new(parts: Parts, shard: ShardRef, id: u64, actions: Vec<Action>) -> Connection {
        let Parts { socket, tls, framer, stream, peer, deadline } = parts;
        Connection {
            socket,
            tls,
            framer,
            stream,
            peer,
            deadline,
            shard,
            id,
            inbox: None,
            output: Vec::new(),
            actions,
            effects: None,
            sm: None,
            sm_id: None,
            sm_unrequested: false,
            sm_request_outstanding: false,
            inactive: false,
            held: Vec::new(),
            attempt: None,
            peer_closed: false,
        }
    }

    async fn run(mut self) {
        let shared = self.shard.borrow().shared.clone();
        let idle = Duration::from_millis(shared.config.limits.idle_timeout_ms);
        // Only bytes from the peer count as activity (RFC 6120 §4.6.1: whitespace pings too).
        let mut last_heard = Instant::now();
        // Set when the connection was lost rather than closed: a resumable session waits.
        let mut lost = false;
        loop {
            // Boxed: the frame-processing future (TLS handshakes, SASL answers) is large and
            // short-lived; kept inline it would sit in every idle connection's task.
            match Box::pin(self.process_frames()).await {
                Ok(Flow::Continue) => {}
                Ok(Flow::Close) => {
                    let _ = self.flush().await;
                    break;
                }
                Err(_) => {
                    lost = true;
                    break;
                }
                Ok(Flow::Migrate(home)) => return self.migrate(home).await,
            }
            if self.sm_unrequested && !self.sm_request_outstanding {
                // XEP-0198 §4: ask for an acknowledgement of what went out.
                self.sm_unrequested = false;
                self.sm_request_outstanding = true;
                self.output.extend_from_slice(&sm::request());
            }
            if self.flush().await.is_err() || self.peer_closed {
                lost = true;
                break;
            }
            let timeout = if self.stream.bound().is_some() {
                (last_heard + idle).saturating_duration_since(Instant::now())
            } else {
                self.deadline.saturating_duration_since(Instant::now())
            };
            match self.wait(timeout).await {
                Wake::Readable(Ok(0)) | Wake::Readable(Err(_)) => {
                    lost = true;
                    break;
                }
                Wake::Readable(Ok(_)) => match self.read().await {
                    Ok(true) => last_heard = Instant::now(),
                    Ok(false) => {
                        lost = true;
                        break;
                    }
                    Err(error) => {
                        tracing::debug!(peer = %self.peer, %error, "read failed");
                        let _ = self.flush().await;
                        lost = true;
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
                        let Some(message) = inbox.try_recv() else {
                            break;
                        };
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
                    lost = true;
                    break;
                }
            }
        }
        if lost && self.sm_id.is_some() && self.inbox.is_some() {
            return self.detach();
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
            Ok(n) => match self.receive(&buffer[..n]) {
                // What came before the close_notify is handled first; the loop then ends.
                Ok(false) => {
                    self.peer_closed = true;
                    Ok(true)
                }
                other => other,
            },
            Err(error) => Err(error),
        };
        give_back(buffer);
        outcome
    }

    /// Feeds received bytes (decrypted when TLS is up) to the framer. Ok(false) when the peer
    /// closed its TLS session (close_notify): whatever followed the alert is dropped, and the
    /// connection ends like on EOF. Every turn of the loop consumes input or returns, so no
    /// input can make it spin.
    fn receive(&mut self, mut bytes: &[u8]) -> io::Result<bool> {
        let Some(tls) = self.tls.as_deref_mut() else {
            self.framer.push(bytes);
            return Ok(true);
        };
        let mut plain = take_buffer();
        let result = (|| {
            while !bytes.is_empty() {
                // rustls reads nothing more once close_notify was seen (RFC 8446 §6.1: the
                // peer sends nothing after it); Ok(0) therefore ends the session.
                if tls.read_tls(&mut bytes)? == 0 {
                    return Ok(false);
                }
                let state = match tls.process_new_packets() {
                    Ok(state) => state,
                    // The alert rustls queued goes out with the next flush.
                    Err(error) => return Err(io::Error::new(io::ErrorKind::InvalidData, error)),
                };
                let closed = state.peer_has_closed();
                loop {
                    match tls.reader().read(&mut plain) {
                        Ok(0) => break,
                        Ok(n) => self.framer.push(&plain[..n]),
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                        Err(error) => return Err(error),
                    }
                }
                if closed {
                    return Ok(false);
                }
            }
            Ok(true)
        })();
        give_back(plain);
        result
    }

    /// Writes pending plaintext (through TLS when active) and any TLS records rustls queued.
    async fn flush(&mut self) -> io::Result<()> {
        let stalled_after = Duration::from_millis(self.shard.borrow().shared.config.limits.stalled_reader_timeout_ms);
        match self.tls.as_deref_mut() {
            None => {
                if !self.output.is_empty() {
                    write_watched(&mut self.socket, &self.output, self.inbox.as_ref(), stalled_after).await?;
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
                        write_watched(&mut self.socket, &wire, self.inbox.as_ref(), stalled_after).await?;
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
                Some(Ok(_)) => match self.read().await {
                    Ok(true) if !self.peer_closed => {}
                    Ok(_) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Err(error) => {
                        let _ = self.flush().await;
                        return Err(error);
                    }
                },
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
            if let Some((effects, durable)) = self.effects.take() {
                self.carry_out_effects(effects, durable, &mut outbox).await;
            }
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
                        if stanza.namespace == SM_NAMESPACE || stanza.namespace == CSI_NAMESPACE {
                            let (namespace, name, element) = (stanza.namespace.to_string(), stanza.name.to_owned(), stanza.element());
                            self.stream_element(&namespace, &name, element.ok());
                        } else {
                            let Some(me) = self.stream.bound().cloned() else { unreachable!("the stream only yields stanzas once bound") };
                            if let Some(sm) = self.sm.as_mut() {
                                sm.received_stanza();
                            }
                            let mut effects =
                                im::from_client(&mut self.shard.borrow_mut(), &me, &stanza, is_presence_without_to, im::now_ms());
                            // Queued for the store now, in the order the memory changed, before
                            // anything else can touch the same keys.
                            let (records, undo) = (std::mem::take(&mut effects.records), std::mem::take(&mut effects.undo));
                            let durable = self.shard.borrow().partition.submit(records, undo);
                            self.effects = Some((effects, durable));
                        }
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

    /// Routes what a client stanza produced; a reply that acknowledges stored state is written
    /// only once that state is durable.
    async fn carry_out_effects(
        &mut self,
        effects: im::Effects,
        durable: oneshot::Receiver<Result<(), String>>,
        outbox: &mut Vec<(usize, Envelope)>,
    ) {
        let im::Effects { reply, envelopes, records, archive_query, account_change, room_listing, .. } = effects;
        debug_assert!(records.is_empty(), "records are submitted when the stanza is handled");
        let (shared, partition) = {
            let shard = self.shard.borrow();
            (shard.shared.clone(), shard.partition.clone())
        };
        for envelope in envelopes {
            outbox.push((shared.home_of(&envelope.to.bare()), envelope));
        }
        // Only a reply waits for durability (it acknowledges the change); a routed message does
        // not wait for its archive write.
        if !reply.is_empty() {
            let result = durable.await.unwrap_or_else(|_| Err("writer stopped".into()));
            if let Err(error) = result {
                tracing::error!(%error, "store write failed; the client is told");
                // RFC 6120 §8.3.3.6 internal-server-error; memory was put back as it was (the
                // undo), so no reply may claim success, whatever it answers.
                if let Some(first) = reply.first().filter(|r| r.starts_with(b"<iq")) {
                    let id = confab_core::framer::parse_element(first).ok().and_then(|e| e.attribute("id").map(str::to_owned));
                    let to = self.stream.bound().map(|j| j.as_str().to_owned());
                    self.output.extend_from_slice(&routing::error_reply(
                        StanzaKind::Iq,
                        id.as_deref(),
                        None,
                        to.as_deref(),
                        "internal-server-error",
                    ));
                }
                return;
            }
        }
        for stanza in reply {
            self.emit(stanza);
        }
        if let Some(request) = archive_query {
            for stanza in im::run_archive_query(partition, request).await {
                self.emit(stanza);
            }
        }
        if let Some((id, change)) = account_change {
            let answer = self.change_account(&id, change).await;
            self.emit(answer);
        }
        if let Some(id) = room_listing {
            let answer = self.room_listing(&id).await;
            self.emit(answer);
        }
    }

    /// XEP-0045 §6.3: the service's public rooms, asked of every shard (rooms live on their
    /// home shards).
    async fn room_listing(&mut self, id: &str) -> Vec<u8> {
        let shared = self.shard.borrow().shared.clone();
        let Some(me) = self.stream.bound().cloned() else { return Vec::new() };
        let mut rooms = Vec::new();
        for k in 0..shared.shard_count() {
            if let shard::AdminReply::Rooms(listed) = crate::admin::ask_async(&shared, k, shard::AdminRequest::ListedRooms).await {
                rooms.extend(listed);
            }
        }
        crate::muc::room_listing_result(&shared, id, &me, rooms)
    }

    /// XEP-0077 §3.2 (cancel) and §3.3 (password change) for the bound user.
    async fn change_account(&mut self, id: &str, change: im::AccountChange) -> Vec<u8> {
        let shared = self.shard.borrow().shared.clone();
        let Some(me) = self.stream.bound().cloned() else { return Vec::new() };
        let error = |condition| routing::error_reply(StanzaKind::Iq, Some(id), None, Some(me.as_str()), condition);
        let local = me.local().unwrap_or_default().to_owned();
        let request = match change {
            im::AccountChange::Remove => shard::AdminRequest::Unregister(local),
            im::AccountChange::Password(password) => {
                let iterations = shared.config.security.scram_iterations;
                let Ok(derived) = shared.hashes.run(move || crate::admin::make_account(&local, &password, iterations)) else {
                    return error("resource-constraint");
                };
                match derived.await {
                    Ok(Ok(account)) => shard::AdminRequest::ChangePassword(account),
                    _ => return error("not-acceptable"),
                }
            }
        };
        match crate::admin::ask_async(&shared, shared.home_of(&me.bare()), request).await {
            shard::AdminReply::Done => routing::iq_result(id, None, me.as_str(), None),
            _ => error("internal-server-error"),
        }
    }

    /// Writes one stanza to the client, counting it for stream management (XEP-0198 §4).
    fn emit(&mut self, bytes: Vec<u8>) {
        self.output.extend_from_slice(&bytes);
        if let Some(sm) = self.sm.as_mut() {
            self.sm_unrequested = true;
            if let Err(error) = sm.sent_stanza(bytes) {
                // The client neither reads nor acknowledges: the stream ends, and what it
                // never acknowledged is redelivered by `finish`.
                self.fail(StreamError::with_text(error.stream_condition(), error.to_string()));
            }
        }
    }

    /// XEP-0198 and XEP-0352 elements at stream level.
    fn stream_element(&mut self, namespace: &str, name: &str, element: Option<confab_core::xml::Element>) {
        if namespace == CSI_NAMESPACE {
            match name {
                // XEP-0352 §4: held presence goes out when the client is active again.
                "active" => {
                    self.inactive = false;
                    for held in std::mem::take(&mut self.held) {
                        self.emit(held);
                    }
                }
                "inactive" => self.inactive = true,
                _ => self.fail(StreamError::new("unsupported-stanza-type")),
            }
            return;
        }
        let parsed = element.ok_or("unreadable").and_then(|element| sm::parse(&element));
        match parsed {
            Err(reason) => self.fail(StreamError::with_text("undefined-condition", reason)),
            Ok(SmElement::Enable { resume, .. }) => {
                // XEP-0198 §3: only once, and only after binding.
                if self.sm.is_some() || self.stream.bound().is_none() {
                    self.output.extend_from_slice(&sm::failed("unexpected-request", None));
                    return;
                }
                self.sm = Some(Box::default());
                let timeout = self.shard.borrow().shared.config.limits.resume_timeout_s;
                if resume && timeout > 0 {
                    let id = ThreadEntropy.token();
                    self.output.extend_from_slice(&sm::enabled(Some(&id), Some(timeout)));
                    self.sm_id = Some(id);
                } else {
                    self.output.extend_from_slice(&sm::enabled(None, None));
                }
            }
            Ok(SmElement::Resume { previd, h }) => self.resume(&previd, h),
            Ok(SmElement::Request) => match self.sm.as_ref() {
                Some(sm) => {
                    let answer = sm::answer(sm.inbound_count());
                    self.output.extend_from_slice(&answer);
                }
                None => self.fail(StreamError::with_text("unsupported-stanza-type", "stream management is not enabled")),
            },
            Ok(SmElement::Answer { h }) => {
                self.sm_request_outstanding = false;
                let result = match self.sm.as_mut() {
                    Some(sm) => sm.acknowledge(h),
                    None => return self.fail(StreamError::with_text("unsupported-stanza-type", "stream management is not enabled")),
                };
                if let Err(error) = result {
                    // XEP-0198 §4: the peer acknowledged more than it was sent.
                    self.fail(StreamError::with_text(error.stream_condition(), error.to_string()));
                }
            }
        }
    }

    /// XEP-0198 §5: takes over a detached session of the same user.
    fn resume(&mut self, previd: &str, h: u32) {
        if self.stream.bound().is_some() {
            self.output.extend_from_slice(&sm::failed("unexpected-request", None));
            return;
        }
        let Some(user) = self.stream.user().cloned() else { return };
        let mut replaced: Option<Box<Detached>> = None;
        let detached = {
            let mut shard = self.shard.borrow_mut();
            match shard.detached.remove(previd) {
                Some(detached) if detached.jid.bare() == user => {
                    let id = self.id;
                    match shard.session_mut(&detached.jid) {
                        Some(session) if session.connection == detached.connection => {
                            session.connection = id;
                            Some(detached)
                        }
                        // Replaced by a new login meanwhile: nothing left to resume, but what
                        // it held is redelivered, not dropped.
                        _ => {
                            replaced = Some(detached);
                            None
                        }
                    }
                }
                Some(other) => {
                    // Another user's id: put it back untouched, and say nothing about it.
                    shard.detached.insert(previd.to_owned(), other);
                    None
                }
                None => None,
            }
        };
        if let Some(old) = replaced {
            let Detached { jid, connection, mut sm, inbox } = *old;
            end_session(&self.shard, &jid, connection, sm.take_unacked(), Some(inbox));
        }
        let Some(Detached { jid, sm: mut state, inbox, .. }) = detached.map(|d| *d) else {
            self.output.extend_from_slice(&sm::failed("item-not-found", None));
            return;
        };
        let resend = match state.resume(h) {
            Ok(resend) => resend,
            Err(error) => {
                // The session cannot go on consistently; it ends as if not resumed.
                let unacked = state.take_unacked();
                self.end_session(&jid, unacked, Some(inbox));
                self.fail(StreamError::with_text(error.stream_condition(), error.to_string()));
                return;
            }
        };
        tracing::debug!(%jid, resent = resend.len(), "session resumed");
        self.output.extend_from_slice(&sm::resumed(previd, state.inbound_count()));
        for stanza in resend {
            self.output.extend_from_slice(&stanza);
        }
        self.stream.resumed(jid);
        self.sm = Some(state);
        // The resent stanzas want an acknowledgement.
        self.sm_unrequested = true;
        self.sm_id = Some(previd.to_owned());
        self.inbox = Some(inbox);
    }

    /// Parks the session for resumption (XEP-0198 §5) instead of ending it.
    fn detach(mut self) {
        let (Some(jid), Some(id), Some(inbox), Some(sm)) =
            (self.stream.bound().cloned(), self.sm_id.take(), self.inbox.take(), self.sm.take())
        else {
            return self.finish();
        };
        let timeout = Duration::from_secs(u64::from(self.shard.borrow().shared.config.limits.resume_timeout_s));
        tracing::debug!(%jid, "connection lost; session kept for resumption");
        let connection = self.id;
        let detached = Box::new(Detached { jid, connection, sm, inbox });
        self.shard.borrow_mut().detached.insert(id.clone(), detached);
        let shard = self.shard.clone();
        glommio::spawn_local(async move {
            glommio::timer::sleep(timeout).await;
            // Only this detachment expires: after a resume and a new drop, the same id names
            // a later one with its own timer.
            let expired = {
                let mut shard = shard.borrow_mut();
                match shard.detached.get(&id) {
                    Some(detached) if detached.connection == connection => shard.detached.remove(&id),
                    _ => None,
                }
            };
            if let Some(detached) = expired {
                let Detached { jid, connection, mut sm, inbox } = *detached;
                tracing::debug!(%jid, "resumption timed out; session ends");
                end_session(&shard, &jid, connection, sm.take_unacked(), Some(inbox));
            }
        })
        .detach();
    }

    fn end_session(&mut self, jid: &FullJid, unacked: Vec<Vec<u8>>, inbox: Option<InboxReceiver>) {
        end_session(&self.shard, jid, self.id, unacked, inbox);
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
                // shard, so the connection moves there first; there the attempt starts, or is
                // refused before any password work (banned, locked, too many in flight).
                let home = shared.home_of(user);
                if home != self.shard.borrow().id {
                    self.actions = std::iter::once(action).chain(queue).collect();
                    return Ok(Flow::Migrate(home));
                }
                let hashing = matches!(action, Action::VerifyPlain { .. });
                if let Err(refusal) = self.begin_attempt(user, hashing) {
                    self.refuse_attempt(refusal, &mut more);
                    more.extend(queue);
                    queue = more;
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
                        confab_core::sasl::ScramCredentials::fake(
                            hash,
                            user.as_str(),
                            &shared.stream.server_secret,
                            shared.config.security.scram_iterations,
                        )
                    });
                    let password = password.clone();
                    // PBKDF2 on the hashing pool: never on this thread, never in front of the
                    // store's commits; a saturated pool refuses at once.
                    let verdict = match shared.hashes.run(move || credentials.verify_password(&password)) {
                        Ok(verdict) => verdict.await.ok(),
                        Err(_) => None,
                    };
                    match verdict {
                        // A ban that came while the hash ran: no verdict is given.
                        Some(ok) if self.attempt_still_allowed(user) => {
                            self.stream.plain_checked(ok, &shared.stream, &mut ThreadEntropy, &mut more)
                        }
                        _ => {
                            self.attempt = None;
                            self.stream.attempt_refused(SaslFailure::TemporaryAuthFailure, &shared.stream, &mut ThreadEntropy, &mut more);
                        }
                    }
                }
                Action::ConfirmVerdict(ref user) => {
                    // SCRAM's final message is checked against the bans too, before its verdict
                    // (right or wrong) is given.
                    let allowed = self.attempt_still_allowed(user);
                    self.stream.verdict_confirmed(allowed, &shared.stream, &mut ThreadEntropy, &mut more);
                }
                Action::Register { id, user, password } => {
                    let answer = self.register(&id, &user, password).await;
                    self.output.extend_from_slice(&answer);
                }
                Action::Authenticated(user) => {
                    assert_eq!(shared.home_of(&user), self.shard.borrow().id, "authenticated away from the home shard");
                    if let Some(attempt) = self.attempt.take() {
                        attempt.succeeded();
                    }
                    tracing::info!(peer = %self.peer, %user, "authenticated");
                }
                Action::AuthFailed(user) => {
                    let address = self.peer.ip();
                    let locked = self.attempt.take().and_then(|attempt| attempt.failed(shared.monotonic_ms()));
                    match locked {
                        Some(_) => tracing::warn!(peer = %self.peer, %user, "wrong password; account locked for this address"),
                        None => tracing::info!(peer = %self.peer, %user, "wrong password"),
                    }
                    // The address's counting shard decides whether this makes a spray.
                    let account = user.as_str().to_owned();
                    let counter = self.shard.borrow().counting_shard(address);
                    if counter == self.shard.borrow().id {
                        handle_auth_failure(&self.shard, address, &account);
                    } else {
                        let _ = shared.inboxes[counter].send(ShardMessage::AuthFailure(address, account)).await;
                    }
                }
                Action::StanzaHandled => {
                    if let Some(sm) = self.sm.as_mut() {
                        sm.received_stanza();
                    }
                }
                Action::AuthAbandoned(_) => {
                    // Dropping the attempt settles it as abandoned.
                    self.attempt = None;
                }
                Action::Bind { jid, id } => {
                    // Bounded in stanzas and bytes (see inbox.rs).
                    let (sender, receiver) = inbox(shared.config.limits.session_inbox_bytes);
                    let result = self.shard.borrow_mut().bind(&jid, self.id, sender);
                    match result {
                        Ok(replaced) => {
                            if let Some(old) = replaced {
                                let envelopes = im::session_replaced(&mut self.shard.borrow_mut(), &jid, old);
                                for envelope in envelopes {
                                    shard::dispatch_now(&self.shard, envelope);
                                }
                            }
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

    /// XEP-0077 §3.1: creates the account on its home shard; returns the iq answer.
    async fn register(&mut self, id: &str, user: &confab_core::jid::BareJid, password: String) -> Vec<u8> {
        let error = |condition| routing::error_reply(StanzaKind::Iq, Some(id), None, None, condition);
        let shared = self.shard.borrow().shared.clone();
        if !self.shard.borrow_mut().registration_allowed(self.peer.ip(), Instant::now()) {
            // XEP-0077 §3.1 with RFC 6120 §8.3.3.18: try again later.
            return error("resource-constraint");
        }
        let local = user.local().unwrap_or_default().to_owned();
        let iterations = shared.config.security.scram_iterations;
        let Ok(derived) = shared.hashes.run(move || crate::admin::make_account(&local, &password, iterations)) else {
            // The hashing pool is saturated (a login storm): try again later.
            return error("resource-constraint");
        };
        let Ok(Ok(account)) = derived.await else { return error("not-acceptable") };
        match crate::admin::ask_async(&shared, shared.home_of(user), shard::AdminRequest::Register(account)).await {
            shard::AdminReply::Done => {
                tracing::info!(peer = %self.peer, %user, "account registered in band");
                format!("<iq type='result' id='{}'/>", confab_core::xml::escape_attribute(id)).into_bytes()
            }
            shard::AdminReply::AlreadyExists => error("conflict"),
            _ => error("internal-server-error"),
        }
    }

    /// Starts an authentication attempt for `user` from this connection's address (see
    /// `confab_core::throttle`): it counts as a failure until it is settled.
    fn begin_attempt(&mut self, user: &BareJid, hashing: bool) -> Result<(), Refusal> {
        let address = self.peer.ip();
        let throttle = self.shard.borrow().throttle.clone();
        let now = self.shard.borrow().shared.monotonic_ms();
        throttle.borrow_mut().begin(address, user.as_str(), hashing, now)?;
        self.attempt = Some(Attempt { throttle, address, account: user.as_str().to_owned(), hashing, settled: false });
        Ok(())
    }

    /// Answers an attempt that may not start: a banned address loses the stream; a locked
    /// account or a busy address is told to try again later (RFC 6120 §6.5.11), and nothing
    /// counts as a wrong password.
    fn refuse_attempt(&mut self, refusal: Refusal, more: &mut Vec<Action>) {
        let shared = self.shard.borrow().shared.clone();
        match refusal {
            Refusal::AddressBanned => {
                tracing::info!(peer = %self.peer, "login refused: address banned");
                self.stream.fail(
                    StreamError::with_text("policy-violation", "too many failed logins; try again later"),
                    &shared.stream,
                    &mut ThreadEntropy,
                    more,
                );
            }
            Refusal::AccountLocked | Refusal::Busy => {
                tracing::info!(peer = %self.peer, ?refusal, "login attempt refused for now");
                self.stream.attempt_refused(SaslFailure::TemporaryAuthFailure, &shared.stream, &mut ThreadEntropy, more);
            }
        }
    }

    /// May the attempt in flight for `user` still succeed (no ban or lock since it started)?
    fn attempt_still_allowed(&self, user: &BareJid) -> bool {
        let shard = self.shard.borrow();
        let allowed = shard.throttle.borrow().still_allowed(self.peer.ip(), user.as_str(), shard.shared.monotonic_ms());
        allowed
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
                if self.inactive {
                    let held_bytes: usize = self.held.iter().map(Vec::len).sum();
                    let fits = self.held.len() < confab_core::limits::CSI_HELD_STANZAS_MAX
                        && held_bytes + bytes.len() <= confab_core::limits::CSI_HELD_BYTES_MAX;
                    if bytes.starts_with(b"<presence") && fits {
                        // XEP-0352 §5: presence can wait while the client is inactive.
                        self.held.push(bytes);
                        return true;
                    }
                    // Anything else goes out now, after what was held (order is kept).
                    for held in std::mem::take(&mut self.held) {
                        self.emit(held);
                    }
                }
                self.emit(bytes);
                !self.stream.is_closed()
            }
            SessionMessage::Batch(stanzas) => {
                for bytes in stanzas {
                    if !self.session_message(SessionMessage::Stanza(bytes)) {
                        return false;
                    }
                }
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

    /// Leaves the session table and announces the departure (RFC 6121 §4.5.2).
    fn finish(&mut self) {
        let Some(jid) = self.stream.bound().cloned() else { return };
        // XEP-0198 §5: what the client never acknowledged (and what still waits in the inbox)
        // is redelivered, not dropped.
        let mut unacked = self.sm.as_mut().map(|sm| sm.take_unacked()).unwrap_or_default();
        unacked.append(&mut std::mem::take(&mut self.held));
        // What still waits in the inbox never reached the client, with or without XEP-0198.
        let inbox = self.inbox.take();
        self.end_session(&jid, unacked, inbox);
        tracing::debug!(%jid, "session ended");
    }
}

/// Ends a session: leaves the table, announces the departure, and redelivers stanzas the
/// client never acknowledged or never got.
fn end_session(shard: &ShardRef, jid: &FullJid, connection: u64, mut unacked: Vec<Vec<u8>>, inbox: Option<InboxReceiver>) {
    let effects = im::session_ended(&mut shard.borrow_mut(), jid, connection, im::now_ms());
    im::store(&shard.borrow(), effects.records, effects.undo);
    for envelope in effects.envelopes {
        shard::dispatch_now(shard, envelope);
    }
    if let Some(inbox) = inbox {
        // Bounded: the inbox holds at most SESSION_INBOX_STANZAS_MAX stanzas.
        while let Some(message) = inbox.try_recv() {
            match message {
                SessionMessage::Stanza(bytes) => unacked.push(bytes),
                SessionMessage::Batch(stanzas) => unacked.extend(stanzas),
                SessionMessage::Kick(_) => {}
            }
        }
    }
    if !unacked.is_empty() {
        let bounces = im::redeliver(&mut shard.borrow_mut(), &jid.bare(), unacked);
        for envelope in bounces {
            shard::dispatch_now(shard, envelope);
        }
    }
}

/// Counts a wrong password on the shard that counts for this address; a ban goes to every
/// shard.
pub fn handle_auth_failure(shard: &ShardRef, address: std::net::IpAddr, account: &str) {
    let (ban, shared) = {
        let mut s = shard.borrow_mut();
        let now = s.shared.monotonic_ms();
        (s.count_failure(address, account, now), s.shared.clone())
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

/// Writes `bytes` to the client, unless the client stops reading for good: when no byte could
/// be written for `stalled_after` while the session's inbox refused stanzas for as long, the
/// write fails (`limits.stalled_reader_timeout_ms`) and the connection ends as lost — what the
/// client never acknowledged then goes where XEP-0198 §5 says. A client that reads slowly makes
/// progress and is not cut off. The check runs only while a write is blocked: a write that
/// completes at once never starts its timer.
async fn write_watched(socket: &mut TcpStream, mut bytes: &[u8], inbox: Option<&InboxReceiver>, stalled_after: Duration) -> io::Result<()> {
    while !bytes.is_empty() {
        let blocked_since = Instant::now();
        let stalled = async {
            loop {
                glommio::timer::sleep(STALL_CHECK_INTERVAL.min(stalled_after)).await;
                let refusing = inbox.and_then(InboxReceiver::stalled_for).is_some_and(|stalled| stalled >= stalled_after);
                if refusing && blocked_since.elapsed() >= stalled_after {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading while its inbox was full"));
                }
            }
        };
        let written = futures_lite::future::or(socket.write(bytes), stalled).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[written..];
    }
    Ok(())
}

/// How often a blocked write checks whether its client has stalled.
const STALL_CHECK_INTERVAL: Duration = Duration::from_millis(1000);

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
