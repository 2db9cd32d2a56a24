//! What moving a connection to its user's home shard costs, rebuilt for benchmarks.
//!
//! The server moves a connection once per login, mid-SASL, when it learns the username
//! (`shards/src/connection.rs`, `Connection::migrate` and `adopt`): the sending shard
//! duplicates the socket with `fcntl(F_DUPFD_CLOEXEC)`, closes its own descriptor, boxes the
//! connection state into a `Migrant` and sends it through the home shard's inbox; the home
//! shard rebuilds a glommio `TcpStream` from the descriptor and carries on. [`Departing`] is
//! a connection on the sending shard just before `migrate`, [`Migrant`] the boxed state in
//! flight and [`Adopted`] the connection on the home shard.
//!
//! The TLS session is a stand-in: [`TLS_SESSION_STATE_BYTES`] of heap, the RSS DESIGN.md
//! measured for an idle rustls `ServerConnection`. The home shard reads all of it once, to
//! pay for pulling it into its core's cache; a real session touches less on its next record,
//! so this overstates the move slightly. Everything else (framer, stream state machine,
//! socket) is the real type.

use std::net::{SocketAddr, TcpListener, TcpStream as StdTcpStream};
use std::os::unix::io::{AsRawFd, FromRawFd, RawFd};
use std::time::Instant;

use confab_core::framer::{Frame, Framer};
use confab_core::stream::C2sStream;
use glommio::net::TcpStream;

use crate::corpus::STREAM_HEADER;
use crate::route::authenticated_limits;

/// Heap bytes of an idle rustls `ServerConnection` after a TLS 1.3 handshake (DESIGN.md,
/// "Measured here": ≈ 7.8 KiB of RSS), rounded up.
pub const TLS_SESSION_STATE_BYTES: usize = 8 * 1024;

/// The SASL `<auth/>` a client sends before the move; the framer has just consumed it.
const SASL_AUTH: &[u8] = b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>\
biwsbj11c2VyMTcscj1meXtvK2QybG1pWjBmUkJYYmZ5SEJ3PT0=</auth>";

/// The stand-in for a rustls `ServerConnection`'s heap state.
pub type TlsState = [u64; TLS_SESSION_STATE_BYTES / 8];

/// A connection on the sending shard, about to move: its own socket and its state.
pub struct Departing {
    socket: TcpStream,
    tls: Box<TlsState>,
    framer: Framer,
    stream: C2sStream,
    peer: SocketAddr,
}

/// The boxed state that crosses the channel. Mirrors `confab_shards::connection::Migrant`
/// less its `pending: Action` (the one stream action to resume with); the framer and stream
/// state are options here only so that `adopt` can take them out of a type that implements
/// `Drop` without building replacements.
pub struct Migrant {
    fd: RawFd,
    tls: Option<Box<TlsState>>,
    framer: Option<Framer>,
    stream: Option<C2sStream>,
    peer: SocketAddr,
    deadline: Instant,
}

/// The connection as the home shard holds it after the move.
pub struct Adopted {
    pub socket: TcpStream,
    pub tls: Option<Box<TlsState>>,
    pub framer: Framer,
    pub stream: C2sStream,
    pub peer: SocketAddr,
    pub deadline: Instant,
    /// Sum of the TLS state's words, so reading it cannot be optimised away.
    pub touched: u64,
}

/// One established loopback TCP connection; [`Departing`] sockets are duplicates of its
/// server end, so thousands of moves need neither thousands of ports nor TIME_WAIT slots.
#[derive(Debug)]
pub struct LoopbackConnection {
    server: StdTcpStream,
    _client: StdTcpStream,
    peer: SocketAddr,
}

impl LoopbackConnection {
    /// Connects to a fresh listener on 127.0.0.1 and accepts.
    pub fn open() -> std::io::Result<LoopbackConnection> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let client = StdTcpStream::connect(listener.local_addr()?)?;
        let (server, peer) = listener.accept()?;
        Ok(LoopbackConnection { server, _client: client, peer })
    }

    /// A connection as it stands on the sending shard mid-SASL: its own descriptor (a
    /// duplicate of the server end) wrapped in a glommio `TcpStream`, an established TLS
    /// session, and a framer that has consumed the stream header and `<auth/>`. Call on a
    /// glommio executor thread.
    pub fn departing(&self, seed: u64) -> Departing {
        let fd = dup(self.server.as_raw_fd());
        assert!(fd >= 0, "dup: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` was just duplicated and is owned by nothing else.
        #[allow(unsafe_code)]
        let socket = unsafe { TcpStream::from_raw_fd(fd) };
        let mut tls = Box::new([0u64; TLS_SESSION_STATE_BYTES / 8]);
        for (n, word) in tls.iter_mut().enumerate() {
            *word = seed ^ n as u64;
        }
        let mut framer = Framer::new(authenticated_limits());
        framer.push(STREAM_HEADER);
        framer.push(SASL_AUTH);
        while let Ok(Some(frame)) = framer.next_frame() {
            debug_assert!(matches!(frame, Frame::StreamOpen(_) | Frame::Stanza(_)));
        }
        Departing { socket, tls, framer, stream: C2sStream::new(), peer: self.peer }
    }
}

impl Departing {
    /// `Connection::migrate` up to the send: duplicate the socket, close the original, box.
    pub fn into_migrant(self) -> Box<Migrant> {
        let Departing { socket, tls, framer, stream, peer } = self;
        let fd = dup(socket.as_raw_fd());
        drop(socket);
        assert!(fd >= 0, "dup: {}", std::io::Error::last_os_error());
        Box::new(Migrant { fd, tls: Some(tls), framer: Some(framer), stream: Some(stream), peer, deadline: Instant::now() })
    }
}

impl Migrant {
    /// `adopt` up to resuming the connection: rebuild the socket on this shard's reactor and
    /// bring the TLS state into this core's cache. Call on a glommio executor thread.
    pub fn adopt(mut self: Box<Self>) -> Adopted {
        let fd = std::mem::replace(&mut self.fd, -1);
        // SAFETY: `fd` is the migrant's own duplicate; the sender closed its descriptor and
        // the migrant gave it up above (-1), so the stream is its only owner.
        #[allow(unsafe_code)]
        let socket = unsafe { TcpStream::from_raw_fd(fd) };
        let tls = self.tls.take();
        let touched = tls.as_deref().map_or(0, |state| state.iter().fold(0u64, |sum, word| sum.wrapping_add(*word)));
        let framer = self.framer.take().expect("a migrant is adopted once");
        let stream = self.stream.take().expect("a migrant is adopted once");
        Adopted { socket, tls, framer, stream, peer: self.peer, deadline: self.deadline, touched }
    }
}

impl Drop for Migrant {
    fn drop(&mut self) {
        if self.fd >= 0 {
            // SAFETY: the migrant owns `fd` until `adopt` takes it (setting it to -1).
            #[allow(unsafe_code)]
            let socket = unsafe { StdTcpStream::from_raw_fd(self.fd) };
            drop(socket);
        }
    }
}

/// `fcntl(fd, F_DUPFD_CLOEXEC, 0)`, as `Connection::migrate` does; -1 on failure.
fn dup(fd: RawFd) -> RawFd {
    // SAFETY: F_DUPFD_CLOEXEC only reads `fd`; an invalid one is reported as -1.
    #[allow(unsafe_code)]
    unsafe {
        libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0)
    }
}
