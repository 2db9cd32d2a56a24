//! A shard: one glommio executor on one core, owning a slice of the users.
//!
//! A user's home shard is `home_shard(bare JID)`; it owns the user's account, all their
//! sessions and their store partition, so nothing about one user needs a lock or a cross-core
//! hop once the connection lives there. Shards talk only through their bounded inboxes
//! (`ShardMessage`): stanzas for users homed elsewhere, connections moving home, ban notices
//! and admin requests. This module owns the session table and local delivery; it does not
//! parse sockets (connection.rs) or speak HTTP (admin.rs).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_core::framer::FramerLimits;
use confab_core::jid::{BareJid, FullJid, Jid};
use confab_core::records::{Account, Record};
use confab_core::routing::{self, deliver_to_account, Delivery, SessionView, StanzaKind};
use confab_core::stream::{StreamConfig, StreamError};
use futures_channel::oneshot;
use glommio::channels::local_channel::LocalSender;

use crate::config::Config;
use crate::connection::Migrant;
use crate::tls::TlsContext;

/// Immutable state shared by every shard: the one object shards share.
pub struct Shared {
    pub config: Config,
    pub stream: StreamConfig,
    pub tls: TlsContext,
    pub inboxes: Vec<async_channel::Sender<ShardMessage>>,
    pub started: Instant,
}

impl Shared {
    pub fn shard_count(&self) -> usize {
        self.inboxes.len()
    }

    pub fn home_of(&self, user: &BareJid) -> usize {
        routing::home_shard(user.as_str(), self.shard_count())
    }

    pub fn framer_limits(&self, authenticated: bool) -> FramerLimits {
        let limits = &self.config.limits;
        FramerLimits {
            stanza_bytes_max: if authenticated { limits.stanza_bytes } else { limits.stanza_bytes_preauth },
            depth_max: limits.element_depth,
            attributes_max: limits.attributes,
            namespace_declarations_max: limits.namespace_declarations,
        }
    }
}

/// What crosses between shards (and from the admin thread into a shard).
pub enum ShardMessage {
    /// A connection whose user is homed on the receiving shard.
    Adopt(Box<Migrant>),
    /// A stanza for a user homed on the receiving shard.
    Deliver(Envelope),
    /// A failed login from this address (sent to the address's counting shard).
    AuthFailure(IpAddr),
    /// Refuse this address until the instant.
    Ban(IpAddr, Instant),
    Admin(AdminRequest, oneshot::Sender<AdminReply>),
}

/// A routed stanza: its bytes (with `from` already stamped) and the header fields routing needs.
#[derive(Debug)]
pub struct Envelope {
    pub to: Jid,
    pub from: Jid,
    pub kind: StanzaKind,
    pub stanza_type: Option<Box<str>>,
    pub id: Option<Box<str>>,
    pub bytes: Vec<u8>,
}

/// An admin command for the shard that is home to the account (or for every shard).
#[derive(Debug)]
pub enum AdminRequest {
    Register(Account),
    Unregister(String),
    ChangePassword(Account),
    CheckAccount(String),
    RegisteredUsers,
    SessionCount,
}

#[derive(Debug, PartialEq, Eq)]
pub enum AdminReply {
    Done,
    AlreadyExists,
    NoSuchAccount,
    Users(Vec<String>),
    Count(usize),
    Failed(String),
}

/// Messages a shard sends to one session's connection task.
#[derive(Debug)]
pub enum SessionMessage {
    Stanza(Vec<u8>),
    /// Close the stream with this error (`conflict` on rebind, `not-authorized` on unregister).
    Kick(StreamError),
}

struct Session {
    resource: String,
    connection: u64,
    available: bool,
    priority: i8,
    sender: LocalSender<SessionMessage>,
}

/// One shard's state. Owned by its thread (behind `Rc<RefCell<_>>`); never borrowed across
/// an `.await`.
pub struct Shard {
    pub id: usize,
    pub shared: Arc<Shared>,
    accounts: HashMap<String, Account>,
    sessions: HashMap<BareJid, Vec<Session>>,
    session_count: usize,
    bans: HashMap<IpAddr, Instant>,
    failures: HashMap<IpAddr, (u32, Instant)>,
    next_connection: u64,
}

pub type ShardRef = Rc<RefCell<Shard>>;

/// A stanza error or result that the shard produced and that must now be routed.
pub type Outgoing = Vec<Envelope>;

impl Shard {
    pub fn new(id: usize, shared: Arc<Shared>, accounts: Vec<Account>) -> Shard {
        Shard {
            id,
            shared,
            accounts: accounts.into_iter().map(|a| (a.user.clone(), a)).collect(),
            sessions: HashMap::new(),
            session_count: 0,
            bans: HashMap::new(),
            failures: HashMap::new(),
            next_connection: (id as u64) << 48,
        }
    }

    pub fn next_connection_id(&mut self) -> u64 {
        self.next_connection += 1;
        self.next_connection
    }

    pub fn account(&self, user: &BareJid) -> Option<&Account> {
        debug_assert_eq!(self.shared.home_of(user), self.id, "account looked up away from its home shard");
        user.local().and_then(|local| self.accounts.get(local))
    }

    pub fn is_banned(&mut self, address: IpAddr, now: Instant) -> bool {
        match self.bans.get(&address) {
            Some(until) if *until > now => true,
            Some(_) => {
                self.bans.remove(&address);
                false
            }
            None => false,
        }
    }

    /// Counts a failure for an address this shard counts for; returns the ban to broadcast
    /// when the threshold is reached.
    pub fn count_failure(&mut self, address: IpAddr, now: Instant) -> Option<Instant> {
        debug_assert_eq!(routing::home_shard(&address.to_string(), self.shared.shard_count()), self.id);
        let window = Duration::from_millis(self.shared.config.security.ban_ms);
        if self.failures.len() >= confab_core::limits::AUTH_FAILURE_ADDRESSES_MAX && !self.failures.contains_key(&address) {
            // Bounded table: forget entries whose window passed; if none did, the oldest.
            self.failures.retain(|_, (_, first)| now.duration_since(*first) < window);
            if self.failures.len() >= confab_core::limits::AUTH_FAILURE_ADDRESSES_MAX {
                if let Some(oldest) = self.failures.iter().min_by_key(|(_, (_, first))| *first).map(|(a, _)| *a) {
                    self.failures.remove(&oldest);
                }
            }
        }
        let entry = self.failures.entry(address).or_insert((0, now));
        if now.duration_since(entry.1) >= window {
            *entry = (0, now);
        }
        entry.0 += 1;
        if entry.0 >= self.shared.config.security.auth_failures_before_ban {
            self.failures.remove(&address);
            Some(now + window)
        } else {
            None
        }
    }

    pub fn ban(&mut self, address: IpAddr, until: Instant) {
        tracing::warn!(%address, "address banned after repeated authentication failures");
        self.bans.insert(address, until);
    }

    /// RFC 6120 §7.6–7.7: binds `jid` for a connection. A session already bound to the same
    /// full JID is replaced (the older one is closed with `<conflict/>`, §7.7.2.2).
    pub fn bind(&mut self, jid: &FullJid, connection: u64, sender: LocalSender<SessionMessage>) -> Result<(), &'static str> {
        debug_assert_eq!(self.shared.home_of(&jid.bare()), self.id, "bind away from the home shard");
        let sessions_max = self.shared.config.limits.sessions_per_user;
        let sessions = self.sessions.entry(jid.bare()).or_default();
        if let Some(existing) = sessions.iter_mut().find(|s| s.resource == jid.resource()) {
            let _ = offer(&existing.sender, SessionMessage::Kick(StreamError::with_text("conflict", "replaced by a new session")));
            existing.connection = connection;
            existing.available = false;
            existing.priority = 0;
            existing.sender = sender;
            return Ok(());
        }
        if sessions.len() >= sessions_max {
            return Err("resource-constraint");
        }
        sessions.push(Session { resource: jid.resource().to_owned(), connection, available: false, priority: 0, sender });
        self.session_count += 1;
        Ok(())
    }

    /// Removes the session of `connection` (if it still owns `jid`); returns whether it was
    /// available, so the caller can announce its departure.
    pub fn unbind(&mut self, jid: &FullJid, connection: u64) -> bool {
        let bare = jid.bare();
        let Some(sessions) = self.sessions.get_mut(&bare) else { return false };
        let Some(index) = sessions.iter().position(|s| s.resource == jid.resource() && s.connection == connection) else {
            return false;
        };
        let session = sessions.swap_remove(index);
        if sessions.is_empty() {
            self.sessions.remove(&bare);
        }
        self.session_count -= 1;
        session.available
    }

    /// Records the availability and priority a session announced (RFC 6121 §4.2, §4.7.2.3).
    pub fn set_presence(&mut self, jid: &FullJid, available: bool, priority: i8) {
        if let Some(session) = self
            .sessions
            .get_mut(&jid.bare())
            .and_then(|sessions| sessions.iter_mut().find(|s| s.resource == jid.resource()))
        {
            session.available = available;
            session.priority = priority;
        }
    }

    pub fn session_count(&self) -> usize {
        self.session_count
    }

    /// Delivers an envelope addressed to a user homed here (RFC 6121 §8.5). Returns the
    /// replies (errors, server answers) the delivery produced, to be routed by the caller.
    pub fn deliver_local(&mut self, envelope: Envelope) -> Outgoing {
        let to_bare = envelope.to.bare();
        debug_assert_eq!(self.shared.home_of(&to_bare), self.id, "stanza delivered away from its home shard");
        let exists = to_bare.local().is_some_and(|local| self.accounts.contains_key(local));
        let sessions = self.sessions.get(&to_bare);
        let views: Vec<SessionView<'_>> = sessions
            .map(|s| s.iter().map(|s| SessionView { resource: &s.resource, available: s.available, priority: s.priority }).collect())
            .unwrap_or_default();
        let verdict = deliver_to_account(envelope.kind, envelope.stanza_type.as_deref(), envelope.to.resource(), exists, &views);
        match verdict {
            Delivery::Sessions(indices) => {
                let mut replies = Vec::new();
                let Some(sessions) = sessions else { return replies };
                let last = indices.len().saturating_sub(1);
                let mut bytes = Some(envelope.bytes);
                for (n, index) in indices.iter().enumerate() {
                    let payload = if n == last { bytes.take().unwrap_or_default() } else { bytes.clone().unwrap_or_default() };
                    if !offer(&sessions[*index].sender, SessionMessage::Stanza(payload)) && n == 0 {
                        // RFC 6120 §8.3.3.18: the recipient cannot take more right now.
                        replies.extend(error_envelope(&envelope.to, &envelope.from, envelope.kind, envelope.stanza_type.as_deref(), envelope.id.as_deref(), "resource-constraint"));
                    }
                }
                replies
            }
            Delivery::Error(condition) => {
                error_envelope(&envelope.to, &envelope.from, envelope.kind, envelope.stanza_type.as_deref(), envelope.id.as_deref(), condition)
                    .into_iter()
                    .collect()
            }
            Delivery::Ignore => Vec::new(),
            Delivery::Server => {
                // An iq to the account's bare JID, answered by the server on its behalf.
                let element = confab_core::framer::parse_element(&envelope.bytes).ok();
                let payload = element.as_ref().and_then(|e| e.elements().next());
                let reply = routing::server_iq(
                    envelope.stanza_type.as_deref().unwrap_or(""),
                    envelope.id.as_deref().unwrap_or(""),
                    payload,
                    Some(to_bare.as_str()),
                    envelope.from.as_str(),
                    Some(to_bare.as_str()),
                );
                vec![Envelope {
                    to: envelope.from.clone(),
                    from: Jid::Bare(to_bare),
                    kind: StanzaKind::Iq,
                    stanza_type: Some("result".into()),
                    id: envelope.id.clone(),
                    bytes: reply,
                }]
            }
        }
    }

    /// Handles an admin request for accounts homed here. Storage writes happen in the caller
    /// (they are async); this returns the record to write, if any, and the reply.
    pub fn admin(&mut self, request: &AdminRequest) -> (Option<Record>, AdminReply) {
        match request {
            AdminRequest::Register(account) => {
                if self.accounts.contains_key(&account.user) {
                    (None, AdminReply::AlreadyExists)
                } else {
                    (Some(Record::AccountPut(account.clone())), AdminReply::Done)
                }
            }
            AdminRequest::ChangePassword(account) => {
                if self.accounts.contains_key(&account.user) {
                    (Some(Record::AccountPut(account.clone())), AdminReply::Done)
                } else {
                    (None, AdminReply::NoSuchAccount)
                }
            }
            AdminRequest::Unregister(user) => {
                if self.accounts.contains_key(user) {
                    (Some(Record::AccountDelete { user: user.clone() }), AdminReply::Done)
                } else {
                    (None, AdminReply::NoSuchAccount)
                }
            }
            AdminRequest::CheckAccount(user) => {
                (None, if self.accounts.contains_key(user) { AdminReply::Done } else { AdminReply::NoSuchAccount })
            }
            AdminRequest::RegisteredUsers => (None, AdminReply::Users(self.accounts.keys().cloned().collect())),
            AdminRequest::SessionCount => (None, AdminReply::Count(self.session_count)),
        }
    }

    /// Applies a record that has been made durable to the in-memory state.
    pub fn applied(&mut self, record: Record) {
        match record {
            Record::AccountPut(account) => {
                self.accounts.insert(account.user.clone(), account);
            }
            Record::AccountDelete { user } => {
                self.accounts.remove(&user);
                // The account is gone: its sessions end (RFC 6120 §4.9.3.12 not-authorized).
                let domain = self.shared.config.domain.clone();
                if let Ok(bare) = BareJid::new(Some(&user), &domain) {
                    if let Some(sessions) = self.sessions.get(&bare) {
                        for session in sessions {
                            let _ = offer(&session.sender, SessionMessage::Kick(StreamError::with_text("not-authorized", "account removed")));
                        }
                    }
                }
            }
        }
    }
}

/// Queues a message for a session unless its inbox already holds
/// `SESSION_INBOX_STANZAS_MAX` (a kick always fits: it ends the session anyway).
fn offer(sender: &LocalSender<SessionMessage>, message: SessionMessage) -> bool {
    let full = sender.len() >= confab_core::limits::SESSION_INBOX_STANZAS_MAX;
    if full && matches!(message, SessionMessage::Stanza(_)) {
        return false;
    }
    sender.try_send(message).is_ok()
}

/// Builds the error reply to a stanza that could not be delivered, unless the stanza was
/// itself an error or an iq response (RFC 6120 §8.3.1: never answer an error with an error).
pub fn error_envelope(
    original_to: &Jid,
    original_from: &Jid,
    kind: StanzaKind,
    stanza_type: Option<&str>,
    id: Option<&str>,
    condition: &'static str,
) -> Option<Envelope> {
    if matches!(stanza_type, Some("error")) || (kind == StanzaKind::Iq && matches!(stanza_type, Some("result"))) {
        return None;
    }
    Some(Envelope {
        to: original_from.clone(),
        from: original_to.clone(),
        kind,
        stanza_type: Some("error".into()),
        id: id.map(Into::into),
        bytes: routing::error_reply(kind, id, Some(original_to.as_str()), Some(original_from.as_str()), condition),
    })
}

/// Routes an envelope from shard code that must not wait (the inbox loop, admin paths):
/// local delivery, or a non-blocking send to the home shard. A full peer inbox drops the
/// envelope with a warning rather than stall this shard (two shards waiting on each other's
/// full inboxes would deadlock).
pub fn dispatch_now(shard: &ShardRef, envelope: Envelope) {
    let mut queue = vec![envelope];
    // Each reply is an error or a result, which never produces a further reply, so this loop
    // runs at most twice per envelope; the bound is an assertion, not a limit.
    let mut rounds = 0;
    while let Some(envelope) = queue.pop() {
        rounds += 1;
        debug_assert!(rounds <= 64, "reply loop in dispatch");
        if rounds > 64 {
            break;
        }
        let (home, shared) = {
            let shard = shard.borrow();
            (shard.shared.home_of(&envelope.to.bare()), shard.shared.clone())
        };
        if envelope.to.local().is_none() || envelope.to.domain() != shared.config.domain {
            continue;
        }
        if home == shard.borrow().id {
            let replies = shard.borrow_mut().deliver_local(envelope);
            queue.extend(replies);
        } else if let Err(error) = shared.inboxes[home].try_send(ShardMessage::Deliver(envelope)) {
            tracing::warn!(shard = home, "peer inbox full or closed, reply dropped: {error}");
        }
    }
}
