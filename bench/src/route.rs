//! The per-stanza routing work of a shard, rebuilt from `confab-core` parts for benchmarks.
//!
//! [`SenderSide`] is what the connection task of a bound client does with one read chunk
//! holding one 1:1 message (`shards/src/connection.rs`, `route_from_client` and `envelope`):
//! push into the framer, drain it, parse `to` (`Jid::parse`), pick the home shard
//! (`routing::home_shard`) and build an [`Envelope`] whose bytes have `from` stamped
//! (`Stanza::with_from`). [`HomeSide`] is what the recipient's home shard does with the
//! envelope (`shards/src/shard.rs`, `Shard::deliver_local`): look up the account and its
//! sessions, decide with `routing::deliver_to_account`, and push the bytes into each chosen
//! session's bounded inbox.
//!
//! It deliberately leaves out what is not per-stanza routing: socket reads and writes, TLS,
//! and the connection task that writes an inbox out (here a full inbox batch is simply
//! dropped). [`Population`] is a realistic session table: most online users have one or two
//! sessions, some three, with the priorities clients announce.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};

use confab_core::framer::{Frame, Framer, FramerLimits};
use confab_core::jid::{BareJid, FullJid, Jid};
use confab_core::limits::{ATTRIBUTES_MAX, ELEMENT_DEPTH_MAX, NAMESPACE_DECLARATIONS_MAX, SESSION_INBOX_STANZAS_MAX, STANZA_BYTES_MAX};
use confab_core::routing::{deliver_to_account, home_shard, Delivery, SessionView, StanzaKind};

use crate::corpus::{chat_message, resource, Rng, DOMAIN, STREAM_HEADER};

/// Shards in the benchmarked node: this machine has two cores.
pub const SHARDS: usize = 2;

/// Registered accounts in the session table the home side searches.
pub const ACCOUNTS: usize = 10_000;

/// Stanzas a session inbox holds before the stand-in writer empties it; the server's
/// connection task writes its inbox out in batches of this many (`INBOX_BATCH_MAX`).
pub const INBOX_BATCH_STANZAS: usize = 64;

const _: () = assert!(INBOX_BATCH_STANZAS <= SESSION_INBOX_STANZAS_MAX);

/// The limits a shard gives an authenticated connection's framer (the defaults).
pub fn authenticated_limits() -> FramerLimits {
    FramerLimits {
        stanza_bytes_max: STANZA_BYTES_MAX,
        depth_max: ELEMENT_DEPTH_MAX,
        attributes_max: ATTRIBUTES_MAX,
        namespace_declarations_max: NAMESPACE_DECLARATIONS_MAX,
    }
}

/// A routed stanza. Mirrors `confab_shards::shard::Envelope` field for field.
#[derive(Debug)]
pub struct Envelope {
    pub to: Jid,
    pub from: Jid,
    pub kind: StanzaKind,
    pub stanza_type: Option<Box<str>>,
    pub id: Option<Box<str>>,
    pub bytes: Vec<u8>,
}

/// The sending connection: a bound client whose framer has consumed the stream header.
#[derive(Debug)]
pub struct SenderSide {
    framer: Framer,
    me: FullJid,
}

impl SenderSide {
    /// The connection of `sender@example.com/<resource>`.
    pub fn new() -> SenderSide {
        let mut framer = Framer::new(authenticated_limits());
        framer.push(STREAM_HEADER);
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::StreamOpen(_)))), "the stream header frames");
        assert!(matches!(framer.next_frame(), Ok(None)));
        let me =
            BareJid::new(Some("sender"), DOMAIN).and_then(|bare| bare.with_resource("Conversations.x7Yq")).expect("a valid sender JID");
        SenderSide { framer, me }
    }

    /// Frames one read chunk holding exactly one 1:1 stanza to a local user and returns the
    /// recipient's home shard with the envelope, as `route_from_client` does.
    pub fn route(&mut self, chunk: &[u8]) -> (usize, Envelope) {
        self.framer.push(chunk);
        let routed = match self.framer.next_frame() {
            Ok(Some(Frame::Stanza(stanza))) => {
                let kind = StanzaKind::from_name(stanza.name).expect("a stanza");
                let to = Jid::parse(stanza.to.as_deref().expect("addressed")).expect("a valid JID");
                assert!(to.local().is_some() && to.domain() == DOMAIN, "addressed to a local user");
                let home = home_shard(to.bare_str(), SHARDS);
                let envelope = Envelope {
                    to,
                    from: Jid::Full(self.me.clone()),
                    kind,
                    stanza_type: stanza.kind.as_deref().map(Into::into),
                    id: stanza.id.as_deref().map(Into::into),
                    bytes: stanza.with_from(self.me.as_str()),
                };
                (home, envelope)
            }
            other => panic!("expected one stanza per chunk, got {other:?}"),
        };
        // The server drains the framer after every push.
        assert!(matches!(self.framer.next_frame(), Ok(None)), "one stanza per chunk");
        routed
    }
}

impl Default for SenderSide {
    fn default() -> Self {
        SenderSide::new()
    }
}

/// The recipient's home shard: accounts, sessions and their inboxes.
#[derive(Debug)]
pub struct HomeSide {
    shard: usize,
    accounts: HashSet<String>,
    sessions: HashMap<BareJid, Vec<Session>>,
    delivered: u64,
}

#[derive(Debug)]
struct Session {
    resource: String,
    available: bool,
    priority: i8,
    /// Stands in for the session's `LocalSender<SessionMessage>`, which is bounded by
    /// `SESSION_INBOX_STANZAS_MAX` and takes `&self`.
    inbox: RefCell<VecDeque<Vec<u8>>>,
}

impl HomeSide {
    /// Shard `shard`'s part of `population`: the accounts homed there and their sessions.
    pub fn new(shard: usize, population: &Population) -> HomeSide {
        let mut accounts = HashSet::new();
        let mut sessions = HashMap::new();
        for user in population.users.iter().filter(|user| user.home == shard) {
            accounts.insert(user.local.clone());
            if user.sessions.is_empty() {
                continue;
            }
            let bare = BareJid::new(Some(&user.local), DOMAIN).expect("a valid JID");
            let table = user
                .sessions
                .iter()
                .map(|s| Session {
                    resource: s.resource.clone(),
                    available: s.available,
                    priority: s.priority,
                    inbox: RefCell::new(VecDeque::with_capacity(INBOX_BATCH_STANZAS)),
                })
                .collect();
            sessions.insert(bare, table);
        }
        HomeSide { shard, accounts, sessions, delivered: 0 }
    }

    /// Delivers one envelope as `Shard::deliver_local` does; returns how many sessions got it.
    pub fn deliver(&mut self, envelope: Envelope) -> usize {
        let to_bare = envelope.to.bare();
        debug_assert_eq!(home_shard(to_bare.as_str(), SHARDS), self.shard, "delivered away from home");
        let exists = to_bare.local().is_some_and(|local| self.accounts.contains(local));
        let sessions = self.sessions.get(&to_bare);
        let views: Vec<SessionView<'_>> = sessions
            .map(|s| s.iter().map(|s| SessionView { resource: &s.resource, available: s.available, priority: s.priority }).collect())
            .unwrap_or_default();
        let verdict = deliver_to_account(envelope.kind, envelope.stanza_type.as_deref(), envelope.to.resource(), exists, &views);
        let (Delivery::Sessions(indices), Some(sessions)) = (verdict, sessions) else {
            panic!("the population only addresses online sessions");
        };
        let last = indices.len() - 1;
        let mut bytes = Some(envelope.bytes);
        for (n, index) in indices.iter().enumerate() {
            let payload = if n == last { bytes.take().unwrap_or_default() } else { bytes.clone().unwrap_or_default() };
            let mut inbox = sessions[*index].inbox.borrow_mut();
            if inbox.len() == INBOX_BATCH_STANZAS {
                // The connection task would write these out now; freeing them is its share.
                inbox.clear();
            }
            inbox.push_back(payload);
        }
        self.delivered += indices.len() as u64;
        indices.len()
    }

    /// Session deliveries so far (a message to a bare JID may reach several sessions).
    pub fn delivered(&self) -> u64 {
        self.delivered
    }
}

/// Every account of the node, where it is homed and which sessions it has.
#[derive(Debug, Clone)]
pub struct Population {
    users: Vec<User>,
}

#[derive(Debug, Clone)]
struct User {
    local: String,
    home: usize,
    sessions: Vec<SessionSpec>,
}

#[derive(Debug, Clone)]
struct SessionSpec {
    resource: String,
    available: bool,
    priority: i8,
}

impl Population {
    /// [`ACCOUNTS`] users: 40% offline, 30% with one session, 20% two, 10% three (phone,
    /// desktop, web). One session in ten has not sent presence yet or is unavailable.
    pub fn new(seed: u64) -> Population {
        let mut rng = Rng::new(seed);
        let users = (0..ACCOUNTS)
            .map(|n| {
                let local = format!("user{n}");
                let home = home_shard(&format!("{local}@{DOMAIN}"), SHARDS);
                let count = match rng.below(10) {
                    0..=3 => 0,
                    4..=6 => 1,
                    7..=8 => 2,
                    _ => 3,
                };
                let sessions = (0..count)
                    .map(|_| SessionSpec {
                        resource: resource(&mut rng),
                        available: rng.below(10) != 0,
                        priority: *rng.pick(&[0, 0, 1, 5, 10, 24]),
                    })
                    .collect();
                User { local, home, sessions }
            })
            .collect();
        Population { users }
    }

    /// `count` read chunks, each one 1:1 chat message from the sender to a user homed on
    /// `shard` who has an available session; half to the bare JID, half to a session's full
    /// JID. Every message gets at least one delivery.
    pub fn chat_chunks_to(&self, shard: usize, count: usize, seed: u64) -> Vec<Vec<u8>> {
        let mut rng = Rng::new(seed);
        let online: Vec<&User> =
            self.users.iter().filter(|user| user.home == shard && user.sessions.iter().any(|s| s.available && s.priority >= 0)).collect();
        assert!(!online.is_empty(), "users are online on shard {shard}");
        (0..count)
            .map(|_| {
                let user = rng.pick(&online);
                let to = match rng.below(2) {
                    0 => format!("{}@{DOMAIN}", user.local),
                    _ => {
                        let session = rng.pick(&user.sessions);
                        format!("{}@{DOMAIN}/{}", user.local, session.resource)
                    }
                };
                let mut chunk = String::new();
                chat_message(&mut rng, &mut chunk, &to);
                chunk.into_bytes()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chat_chunk_reaches_a_session_of_its_home_shard() {
        let population = Population::new(1);
        for shard in 0..SHARDS {
            let mut sender = SenderSide::new();
            let mut home = HomeSide::new(shard, &population);
            for chunk in population.chat_chunks_to(shard, 500, 2) {
                let (home_shard, envelope) = sender.route(&chunk);
                assert_eq!(home_shard, shard);
                assert!(std::str::from_utf8(&envelope.bytes).is_ok_and(|s| s.contains("from='sender@example.com/")));
                assert!(home.deliver(envelope) >= 1);
            }
            assert!(home.delivered() >= 500);
        }
    }
}
