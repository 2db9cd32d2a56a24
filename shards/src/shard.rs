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
use confab_core::routing::{self, StanzaKind};
use confab_core::stream::{StreamConfig, StreamError};
use futures_channel::oneshot;

use crate::config::Config;
use crate::connection::{Detached, Migrant};
use crate::counters::{Counter, Counters};
use crate::im::UserData;
use crate::inbox::InboxSender;
use crate::storage::{OpenedPartition, Partition, Undo};
use crate::tls::TlsContext;
use confab_core::throttle::AuthThrottle;

/// Immutable state shared by every shard: the one object shards share.
pub struct Shared {
    pub config: Config,
    pub stream: StreamConfig,
    pub tls: TlsContext,
    pub inboxes: Vec<async_channel::Sender<ShardMessage>>,
    pub started: Instant,
    /// Where passwords are hashed, off the shards and off the store's threads.
    pub hashes: crate::hashing::HashPool,
    /// The least archive id (and stanza-id) of this run, above every id of earlier runs
    /// (`storage::advance_id_floor`).
    pub id_floor: u64,
}

impl Shared {
    pub fn shard_count(&self) -> usize {
        self.inboxes.len()
    }

    /// Milliseconds since the server started: the monotonic clock every shard shares (bans
    /// and locks are instants on it).
    pub fn monotonic_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
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
    /// A wrong password for this account from this address (sent to the address's counting
    /// shard, which decides address bans).
    AuthFailure(IpAddr, String),
    /// Refuse this address until this time (`Shared::monotonic_ms`).
    Ban(IpAddr, u64),
    Admin(AdminRequest, oneshot::Sender<AdminReply>),
    /// A room's stanzas for sessions homed on the receiving shard (XEP-0045 fan-out: one
    /// message per shard, not per occupant).
    Room(crate::muc::RoomDelivery),
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
    /// PEP interest (XEP-0163 §4): on a probe, the nodes whose last items the prober's new
    /// session wants; on a notification, deliver only to sessions interested in these nodes.
    pub interest: Option<Interest>,
}

/// Nodes an entity wants notifications for (XEP-0115 `+notify` features).
#[derive(Debug, Clone)]
pub struct Interest {
    pub nodes: Arc<[String]>,
    /// On a probe: the session whose last items are wanted (they go to it alone).
    pub session: Option<FullJid>,
    /// On a probe: the presence was answered already; send the last items only.
    pub items_only: bool,
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
    /// Create or replace a roster item with the given subscription (ejabberd's
    /// add_rosteritem), pushed to the user's interested resources.
    RosterPut(String, confab_core::roster::RosterItem),
    /// The user's roster (ejabberd's get_roster).
    Roster(String),
    /// The public rooms homed on the shard (XEP-0045 §6.3 disco#items of the service).
    ListedRooms,
    /// What the shard dropped, by reason (`counters`).
    Counters,
    /// The store's commit latencies since the last ask (`store_latency`).
    StoreLatency,
}

impl AdminRequest {
    /// The account a request changes, if it changes one.
    fn changes_account(&self) -> Option<&str> {
        match self {
            AdminRequest::Register(account) | AdminRequest::ChangePassword(account) => Some(&account.user),
            AdminRequest::Unregister(user) => Some(user),
            // Roster items change memory at once and are written in order: nothing to wait for.
            AdminRequest::RosterPut(..)
            | AdminRequest::CheckAccount(_)
            | AdminRequest::RegisteredUsers
            | AdminRequest::SessionCount
            | AdminRequest::Roster(_)
            | AdminRequest::ListedRooms
            | AdminRequest::Counters
            | AdminRequest::StoreLatency => None,
        }
    }
}

#[derive(Debug)]
pub enum AdminReply {
    Done,
    AlreadyExists,
    NoSuchAccount,
    Users(Vec<String>),
    Count(usize),
    Roster(Vec<confab_core::roster::RosterItem>),
    /// Rooms as (bare JID, name).
    Rooms(Vec<(String, String)>),
    Counters(Vec<(&'static str, u64)>),
    Latency(Box<hdrhistogram::Histogram<u64>>),
    Failed(String),
}

/// Messages a shard sends to one session's connection task.
#[derive(Debug)]
pub enum SessionMessage {
    Stanza(Vec<u8>),
    /// Several stanzas in order, in one inbox slot (a room's join burst: every occupant's
    /// presence, the history and the subject).
    Batch(Vec<Vec<u8>>),
    /// Close the stream with this error (`conflict` on rebind, `not-authorized` on unregister).
    Kick(StreamError),
}

pub(crate) struct Session {
    pub(crate) resource: String,
    pub(crate) connection: u64,
    pub(crate) available: bool,
    pub(crate) priority: i8,
    pub(crate) sender: InboxSender,
    /// The last available presence the session broadcast (RFC 6121 §4.2), `from` stamped;
    /// answered to probes from subscribers.
    pub(crate) presence: Option<Rc<[u8]>>,
    /// Asked for the roster since binding: receives roster pushes (RFC 6121 §2.1.6).
    pub(crate) interested: bool,
    /// Asked for the block list: receives block pushes (XEP-0191 §3.3).
    pub(crate) blocklist_interested: bool,
    /// Message carbons enabled (XEP-0280 §4).
    pub(crate) carbons: bool,
    /// Entities that got directed presence and must hear of unavailability (RFC 6121 §4.6.3),
    /// bounded by `DIRECTED_PRESENCE_MAX`.
    pub(crate) directed: Vec<Jid>,
    /// The XEP-0115 `ver` the client announced, and the PEP nodes it wants notifications for
    /// (its `+notify` features, once its caps are known).
    pub(crate) caps_ver: Option<Box<str>>,
    pub(crate) notify: Arc<[String]>,
    /// The status text of the session's unavailable presence and when it was sent (ms
    /// since the epoch), for XEP-0012 last activity.
    pub(crate) leaving_status: Option<Box<str>>,
    pub(crate) unavailable_at_ms: Option<u64>,
    /// The rooms the session is in, as `room@service/nick` (XEP-0045), bounded by
    /// `muc.rooms_per_session`: each hears of the session's end.
    pub(crate) rooms: Vec<FullJid>,
}

impl Session {
    fn new(resource: &str, connection: u64, sender: InboxSender) -> Session {
        Session {
            resource: resource.to_owned(),
            connection,
            available: false,
            priority: 0,
            sender,
            presence: None,
            interested: false,
            blocklist_interested: false,
            carbons: false,
            directed: Vec::new(),
            caps_ver: None,
            notify: Arc::from(Vec::new()),
            leaving_status: None,
            unavailable_at_ms: None,
            rooms: Vec::new(),
        }
    }
}

/// One shard's state. Owned by its thread (behind `Rc<RefCell<_>>`); never borrowed across
/// an `.await`.
pub struct Shard {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub(crate) accounts: HashMap<String, Account>,
    pub(crate) sessions: HashMap<BareJid, Vec<Session>>,
    /// Stored state of users homed here (rosters, block lists, offline messages …), only
    /// for users that have any.
    pub(crate) users: HashMap<String, UserData>,
    pub(crate) partition: Rc<Partition>,
    /// XEP-0045 rooms homed here.
    pub(crate) rooms: crate::muc::Rooms,
    /// Sessions waiting for stream resumption, by resumption id (XEP-0198 §5).
    pub(crate) detached: HashMap<String, Box<Detached>>,
    /// XEP-0115: the `+notify` nodes of each verified caps `ver` (bounded by
    /// `CAPS_CACHE_ENTRIES_MAX`), and the disco#info queries in flight (by iq id).
    pub(crate) caps: HashMap<String, Arc<[String]>>,
    pub(crate) caps_pending: HashMap<String, (confab_core::pep::Caps, FullJid)>,
    session_count: usize,
    /// Who may try a password now (bans, locks, attempts in flight). Its own cell, so that an
    /// attempt's guard can settle it from a connection's drop without borrowing the shard.
    pub(crate) throttle: Rc<RefCell<AuthThrottle>>,
    /// What this shard dropped, by reason.
    pub(crate) counters: Counters,
    /// When each address last registered an account in band (XEP-0077), bounded.
    registrations: HashMap<IpAddr, Instant>,
    /// Accounts with an admin change waiting for its commit.
    accounts_changing: std::collections::HashSet<String>,
    next_connection: u64,
    /// Messages for each peer shard that found its inbox full, in order, bounded by
    /// `PEER_OVERFLOW_MESSAGES_MAX`, and whether a task is handing them over (see
    /// `send_to_peer`).
    overflow: Vec<(std::collections::VecDeque<ShardMessage>, bool)>,
}

pub type ShardRef = Rc<RefCell<Shard>>;

/// A stanza error or result that the shard produced and that must now be routed.
pub type Outgoing = Vec<Envelope>;

impl Shard {
    pub fn new(id: usize, shared: Arc<Shared>, opened: OpenedPartition) -> Shard {
        let OpenedPartition { database, path, accounts, items, archive_last, room_archives } = opened;
        let shared_count = shared.shard_count();
        let throttle = Rc::new(RefCell::new(AuthThrottle::new(shared.config.security.throttle())));
        let accounts: HashMap<String, Account> = accounts.into_iter().map(|a| (a.user.clone(), a)).collect();
        // Rooms are owners named by a bare JID; accounts by a local part.
        let (room_items, mut items): (Vec<_>, Vec<_>) = items.into_iter().partition(|item| item.user.contains('@'));
        let rooms = crate::muc::Rooms::load(room_items, room_archives, shared.config.muc.settings(), shared.id_floor);
        // State whose account is gone (a write that raced the deletion) is not loaded; the
        // next registration of that name clears it from disk.
        items.retain(|item| accounts.contains_key(&item.user));
        Shard {
            id,
            shared,
            users: UserData::load(items, archive_last),
            accounts,
            sessions: HashMap::new(),
            partition: Rc::new(Partition::new(database, path)),
            rooms,
            detached: HashMap::new(),
            caps: HashMap::new(),
            caps_pending: HashMap::new(),
            session_count: 0,
            throttle,
            counters: Counters::default(),
            registrations: HashMap::new(),
            accounts_changing: std::collections::HashSet::new(),
            next_connection: (id as u64) << 48,
            overflow: (0..shared_count).map(|_| (std::collections::VecDeque::new(), false)).collect(),
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

    pub fn is_banned(&self, address: IpAddr, now: u64) -> bool {
        self.throttle.borrow().is_banned(address, now)
    }

    /// The shard that counts failures of `address` across accounts and decides its ban.
    pub fn counting_shard(&self, address: IpAddr) -> usize {
        routing::home_shard(&address.to_string(), self.shared.shard_count())
    }

    /// On the address's counting shard: a wrong password for `account`; returns the ban to
    /// broadcast when the address reached its threshold of failed accounts.
    pub fn count_failure(&mut self, address: IpAddr, account: &str, now: u64) -> Option<u64> {
        let counting = self.counting_shard(address);
        assert_eq!(counting, self.id, "an address's failures are counted on its counting shard");
        self.throttle.borrow_mut().address_failure(address, account, now)
    }

    /// XEP-0077: may `address` register an account now? Records the attempt when it may.
    /// (Counted per shard: an address spread over shards gets one registration per shard per
    /// interval at most.)
    pub fn registration_allowed(&mut self, address: IpAddr, now: Instant) -> bool {
        let interval = Duration::from_secs(self.shared.config.registration.interval_s);
        if let Some(last) = self.registrations.get(&address) {
            if now.duration_since(*last) < interval {
                return false;
            }
        }
        if self.registrations.len() >= confab_core::limits::REGISTRATION_ADDRESSES_MAX {
            self.registrations.retain(|_, last| now.duration_since(*last) < interval);
            if self.registrations.len() >= confab_core::limits::REGISTRATION_ADDRESSES_MAX {
                self.registrations.clear();
            }
        }
        self.registrations.insert(address, now);
        true
    }

    pub fn ban(&mut self, address: IpAddr, until: u64) {
        tracing::warn!(%address, "address banned: wrong passwords for too many accounts");
        self.throttle.borrow_mut().ban(address, until);
    }

    /// RFC 6120 §7.6–7.7: binds `jid` for a connection. A session already bound to the same
    /// full JID is replaced (the older one is closed with `<conflict/>`, §7.7.2.2).
    /// Returns the session it replaced, if any, whose departure the caller announces.
    pub(crate) fn bind(&mut self, jid: &FullJid, connection: u64, sender: InboxSender) -> Result<Option<Session>, &'static str> {
        debug_assert_eq!(self.shared.home_of(&jid.bare()), self.id, "bind away from the home shard");
        let sessions_max = self.shared.config.limits.sessions_per_user;
        let sessions = self.sessions.entry(jid.bare()).or_default();
        if let Some(existing) = sessions.iter_mut().find(|s| s.resource == jid.resource()) {
            let _ = offer(&existing.sender, SessionMessage::Kick(StreamError::with_text("conflict", "replaced by a new session")));
            let old = std::mem::replace(existing, Session::new(jid.resource(), connection, sender));
            return Ok(Some(old));
        }
        if sessions.len() >= sessions_max {
            return Err("resource-constraint");
        }
        sessions.push(Session::new(jid.resource(), connection, sender));
        self.session_count += 1;
        Ok(None)
    }

    /// Removes the session of `connection` (if it still owns `jid`) and returns it, so the
    /// caller can announce its departure.
    pub(crate) fn unbind(&mut self, jid: &FullJid, connection: u64) -> Option<Session> {
        let bare = jid.bare();
        let sessions = self.sessions.get_mut(&bare)?;
        let index = sessions.iter().position(|s| s.resource == jid.resource() && s.connection == connection)?;
        let session = sessions.swap_remove(index);
        if sessions.is_empty() {
            self.sessions.remove(&bare);
        }
        self.session_count -= 1;
        Some(session)
    }

    /// The session bound to `jid`, if any.
    pub(crate) fn session_mut(&mut self, jid: &FullJid) -> Option<&mut Session> {
        self.sessions.get_mut(jid.bare_str()).and_then(|sessions| sessions.iter_mut().find(|s| s.resource == jid.resource()))
    }

    pub fn session_count(&self) -> usize {
        self.session_count
    }

    /// Delivers an envelope addressed to a user homed here (RFC 6121 §8.5, with the IM
    /// services of im.rs). Returns the replies the delivery produced, to be routed.
    pub fn deliver_local(&mut self, envelope: Envelope) -> Outgoing {
        debug_assert_eq!(self.shared.home_of(&envelope.to.bare()), self.id, "stanza delivered away from its home shard");
        crate::im::deliver(self, envelope)
    }

    /// Handles an admin request for accounts homed here. Storage writes happen in the caller
    /// (they are async); this returns the record to write, if any, and the reply.
    pub fn admin(&mut self, request: &AdminRequest) -> (Vec<Record>, Vec<Undo>, AdminReply) {
        let changing = request.changes_account();
        if let Some(user) = changing {
            // One change per account at a time: a second would be decided on state the first
            // has not applied yet (until `admin_settled`).
            if self.accounts_changing.contains(user) {
                return (Vec::new(), Vec::new(), AdminReply::Failed(format!("another change to {user} is in progress; retry")));
            }
        }
        if changing.is_some() && !self.partition.is_writable() {
            return (Vec::new(), Vec::new(), AdminReply::Failed("the store cannot write now; try again".into()));
        }
        let (records, undo, reply) = self.admin_decide(request);
        if let (Some(user), false) = (changing, records.is_empty()) {
            self.accounts_changing.insert(user.to_owned());
        }
        (records, undo, reply)
    }

    /// The account change of `request` is durable and applied (or failed).
    pub fn admin_settled(&mut self, request: &AdminRequest) {
        if let Some(user) = request.changes_account() {
            self.accounts_changing.remove(user);
        }
    }

    fn admin_decide(&mut self, request: &AdminRequest) -> (Vec<Record>, Vec<Undo>, AdminReply) {
        let (record, reply) = match request {
            AdminRequest::RosterPut(user, item) => {
                if !self.accounts.contains_key(user) {
                    return (Vec::new(), Vec::new(), AdminReply::NoSuchAccount);
                }
                if !self.partition.is_writable() {
                    return (Vec::new(), Vec::new(), AdminReply::Failed("the store cannot write now; try again".into()));
                }
                let (records, undo) = crate::im::admin_roster_put(self, user, item.clone());
                return (records, undo, AdminReply::Done);
            }
            AdminRequest::ListedRooms => return (Vec::new(), Vec::new(), AdminReply::Rooms(crate::muc::listed_rooms(self))),
            AdminRequest::Counters => return (Vec::new(), Vec::new(), AdminReply::Counters(self.counters.snapshot())),
            AdminRequest::StoreLatency => return (Vec::new(), Vec::new(), AdminReply::Latency(Box::new(self.partition.take_latencies()))),
            AdminRequest::Roster(user) => {
                if !self.accounts.contains_key(user) {
                    return (Vec::new(), Vec::new(), AdminReply::NoSuchAccount);
                }
                let items = self.users.get(user).map(|d| d.roster.values().filter(|i| !i.hidden).cloned().collect()).unwrap_or_default();
                return (Vec::new(), Vec::new(), AdminReply::Roster(items));
            }
            AdminRequest::Register(account) => {
                if self.accounts.contains_key(&account.user) {
                    return (Vec::new(), Vec::new(), AdminReply::AlreadyExists);
                }
                // A new account starts empty: anything a former account of the same name left
                // behind (a write that raced its deletion) goes first.
                let clean = Record::AccountDelete { user: account.user.clone() };
                return (vec![clean, Record::AccountPut(account.clone())], Vec::new(), AdminReply::Done);
            }
            other => self.account_admin(other),
        };
        (record.into_iter().collect(), Vec::new(), reply)
    }

    fn account_admin(&mut self, request: &AdminRequest) -> (Option<Record>, AdminReply) {
        match request {
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
            AdminRequest::Register(_)
            | AdminRequest::RosterPut(..)
            | AdminRequest::Roster(_)
            | AdminRequest::ListedRooms
            | AdminRequest::Counters
            | AdminRequest::StoreLatency => {
                unreachable!("handled by admin()")
            }
        }
    }

    /// Applies a record that has been made durable to the in-memory state.
    pub fn applied(&mut self, record: Record) {
        match record {
            Record::AccountPut(account) => {
                self.accounts.insert(account.user.clone(), account);
            }
            // User state is applied to memory by im.rs before it is written.
            Record::ItemPut { .. } | Record::ItemDelete { .. } | Record::ArchiveAppend { .. } => {}
            Record::AccountDelete { user } => {
                self.accounts.remove(&user);
                self.users.remove(&user);
                // The account is gone: its sessions end (RFC 6120 §4.9.3.12 not-authorized).
                let domain = self.shared.config.domain.clone();
                if let Ok(bare) = BareJid::new(Some(&user), &domain) {
                    if let Some(sessions) = self.sessions.get(&bare) {
                        for session in sessions {
                            let _ =
                                offer(&session.sender, SessionMessage::Kick(StreamError::with_text("not-authorized", "account removed")));
                        }
                    }
                }
            }
        }
    }
}

/// Queues a message for a session if its inbox has room in stanzas and bytes (a kick always
/// fits: it ends the session anyway). A batch takes one slot; a room bounds its size
/// (occupants, history bytes). See `inbox`.
pub(crate) fn offer(sender: &InboxSender, message: SessionMessage) -> bool {
    sender.offer(message)
}

/// `offer`, counting a refusal under `counter`: for stanzas whose loss is no error for anyone
/// (copies, pushes, notifications, presence), which are counted instead of bounced.
pub(crate) fn offer_or_count(shard: &Shard, sender: &InboxSender, message: SessionMessage, counter: Counter) -> bool {
    let offered = sender.offer(message);
    if !offered {
        shard.counters.count(counter);
    }
    offered
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
        interest: None,
    })
}

/// Envelopes one `dispatch_now` call handles, replies included.
const DISPATCH_ENVELOPES_MAX: usize = 4096;

/// Routes an envelope from shard code that must not wait (the inbox loop, admin paths):
/// local delivery, or a non-blocking send to the home shard. A full peer inbox drops the
/// envelope with a warning rather than stall this shard (two shards waiting on each other's
/// full inboxes would deadlock).
pub fn dispatch_now(shard: &ShardRef, envelope: Envelope) {
    let mut queue = std::collections::VecDeque::from([envelope]);
    // A delivery may produce replies (errors, results, a probe's presences and last PEP
    // items, a subscription's auto-reply and presence), and those can produce errors, which
    // produce nothing. The bound is far above that fan-out (sessions × nodes); reaching it
    // means a loop, and what is left is dropped with a warning. First in, first out: replies
    // leave in the order they were produced (RFC 6120 §10.1, in-order processing — a
    // pre-approved subscription's `subscribed` before the presence that follows it).
    let mut rounds = 0;
    while let Some(envelope) = queue.pop_front() {
        rounds += 1;
        if rounds > DISPATCH_ENVELOPES_MAX {
            let shard = shard.borrow();
            for _ in 0..=queue.len() {
                shard.counters.count(Counter::DispatchLimit);
            }
            break;
        }
        let (home, shared) = {
            let shard = shard.borrow();
            (shard.shared.home_of(&envelope.to.bare()), shard.shared.clone())
        };
        let room = crate::muc::is_service(&shared, &envelope.to);
        if envelope.to.local().is_none() || (envelope.to.domain() != shared.config.domain && !room) {
            shard.borrow().counters.count(Counter::Unroutable);
            continue;
        }
        if home == shard.borrow().id {
            let replies = if room { crate::muc::deliver(shard, envelope) } else { shard.borrow_mut().deliver_local(envelope) };
            queue.extend(replies);
        } else {
            send_to_peer(shard, home, ShardMessage::Deliver(envelope));
        }
    }
}

/// Messages one shard holds for a peer whose inbox was full, beyond which they are dropped
/// with a warning. Shard code never waits on a peer (two shards waiting on each other's full
/// inboxes would deadlock), but a burst — thousands of sessions ending at once, each telling
/// its rooms and contacts — must not lose what it sends while clients keep the peer's inbox
/// full: it waits here, in order, and a task hands it over as room frees up.
pub const PEER_OVERFLOW_MESSAGES_MAX: usize = 16_384;

/// Sends a message to a peer shard from code that must not wait: straight into its inbox
/// when there is room and nothing is waiting before it, else queued in order (bounded) for
/// the one task per peer that waits for room.
pub fn send_to_peer(shard: &ShardRef, peer: usize, message: ShardMessage) {
    let inbox = {
        let mut guard = shard.borrow_mut();
        let state = &mut *guard;
        let inbox = state.shared.inboxes[peer].clone();
        let (queue, draining) = &mut state.overflow[peer];
        if *draining {
            // Behind what already waits, to keep the order.
            if queue.len() >= PEER_OVERFLOW_MESSAGES_MAX {
                state.counters.count(Counter::PeerOverflow);
            } else {
                queue.push_back(message);
            }
            return;
        }
        match inbox.try_send(message) {
            Ok(()) => return,
            Err(async_channel::TrySendError::Closed(_)) => {
                state.counters.count(Counter::PeerClosed);
                return;
            }
            Err(async_channel::TrySendError::Full(message)) => {
                queue.push_back(message);
                *draining = true;
            }
        }
        inbox
    };
    let shard = shard.clone();
    glommio::spawn_local(async move {
        loop {
            let next = shard.borrow_mut().overflow[peer].0.pop_front();
            let Some(message) = next else { break };
            if inbox.send(message).await.is_err() {
                shard.borrow_mut().overflow[peer].0.clear();
                break;
            }
        }
        // Nothing was queued between the last pop and here (no await in between).
        shard.borrow_mut().overflow[peer].1 = false;
    })
    .detach();
}
