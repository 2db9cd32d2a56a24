//! Instant messaging for the users homed on this shard: rosters and subscriptions (RFC 6121
//! §2–3), presence broadcast, probes and directed presence (§4), offline messages (XEP-0160),
//! message carbons (XEP-0280), the user archive (XEP-0313), blocking (XEP-0191), private XML
//! storage (XEP-0049), vCards (XEP-0054), last activity (XEP-0012), software version
//! (XEP-0092) and entity time (XEP-0202).
//!
//! Everything here runs on the home shard of the user whose state it touches: a contact's
//! roster is only ever read on the contact's home shard, reached by routing a stanza there.
//! Changes are applied to memory first and then handed to the partition as `Record`s, in call
//! order; a reply that acknowledges a change (a roster set's result) is sent only once its
//! records are durable. The decisions themselves (subscription state machine, parsing, the
//! elements sent) live in confab-core; this module applies them to the shard's tables and
//! does no socket I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use confab_core::archive::{self, ArchiveQuery, ArchivedMessage, Preferences, MAM_NAMESPACE};
use confab_core::blocking::{self, BlockingRequest, BLOCKING_NAMESPACE};
use confab_core::carbons::{self, CARBONS_NAMESPACE};
use confab_core::framer::{parse_element, Stanza};
use confab_core::jid::{BareJid, FullJid, Jid};
use confab_core::pep::{
    self, PubsubError, PubsubRequest, BOOKMARKS2_NAMESPACE, LEGACY_BOOKMARKS_NAMESPACE, PUBSUB_NAMESPACE, PUBSUB_OWNER_NAMESPACE,
};
use confab_core::records::{ItemKind, Record};
use confab_core::roster::{self, RosterItem, RosterSet, Subscription, SubscriptionStanza, ROSTER_NAMESPACE};
use confab_core::routing::{self, deliver_to_account, error_reply, iq_result, Delivery, SessionView, StanzaKind};
use confab_core::stream::REGISTER_NAMESPACE;
use confab_core::xml::{escape_attribute, Element, Node};
use rand::distr::{Alphanumeric, SampleString as _};

use crate::counters::Counter;
use crate::shard::{error_envelope, offer, offer_or_count, Envelope, Interest, Outgoing, SessionMessage, Shard, ShardRef};
use crate::storage::{StoredItem, Undo};

/// XEP-0054 vCard namespace.
pub const VCARD_NAMESPACE: &str = "vcard-temp";
/// XEP-0049 private XML storage namespace.
pub const PRIVATE_NAMESPACE: &str = "jabber:iq:private";
/// XEP-0012 last activity namespace.
pub const LAST_NAMESPACE: &str = "jabber:iq:last";
/// XEP-0092 software version namespace.
pub const VERSION_NAMESPACE: &str = "jabber:iq:version";
/// XEP-0202 entity time namespace.
pub const TIME_NAMESPACE: &str = "urn:xmpp:time";
/// XEP-0359 unique and stable stanza ids.
pub const STANZA_ID_NAMESPACE: &str = "urn:xmpp:sid:0";
/// XEP-0160 offline storage feature.
pub const OFFLINE_FEATURE: &str = "msgoffline";

/// Features the server itself advertises in disco#info (XEP-0030 §3.1): only what works.
pub const SERVER_FEATURES: &[&str] = &[
    routing::DISCO_INFO_NAMESPACE,
    routing::DISCO_ITEMS_NAMESPACE,
    routing::PING_NAMESPACE,
    ROSTER_NAMESPACE,
    VCARD_NAMESPACE,
    PRIVATE_NAMESPACE,
    LAST_NAMESPACE,
    VERSION_NAMESPACE,
    TIME_NAMESPACE,
    CARBONS_NAMESPACE,
    BLOCKING_NAMESPACE,
    OFFLINE_FEATURE,
];

/// Features of an account's bare JID (XEP-0313 §7 advertises MAM there).
pub const ACCOUNT_FEATURES: &[&str] =
    &[routing::DISCO_INFO_NAMESPACE, routing::DISCO_ITEMS_NAMESPACE, MAM_NAMESPACE, STANZA_ID_NAMESPACE, LAST_NAMESPACE, VCARD_NAMESPACE];

/// One user's stored state, kept in memory on the home shard.
#[derive(Debug, Default)]
pub struct UserData {
    /// Roster entries by contact bare JID, including hidden pending-in requests.
    pub roster: BTreeMap<String, RosterItem>,
    pub roster_version: u64,
    pub blocklist: BTreeSet<String>,
    /// XEP-0049 fragments by "{namespace} {name}".
    pub private: BTreeMap<String, String>,
    pub vcard: Option<String>,
    pub preferences: Preferences,
    /// XEP-0160 messages by arrival sequence, already carrying their `<delay/>`.
    pub offline: BTreeMap<u64, Vec<u8>>,
    /// The newest archive id used (0: none yet).
    pub archive_last: u64,
    /// XEP-0012: when the last session ended (ms) and its status text.
    pub last_activity: Option<(u64, String)>,
    /// XEP-0163 nodes by name.
    pub pep: BTreeMap<String, pep::Node>,
    /// The extension children of pending subscription requests, by contact (RFC 6121 §3.1.3).
    pub subscription_requests: BTreeMap<String, String>,
}

impl UserData {
    /// Rebuilds the tables from the store at start-up. Unreadable values are reported and
    /// skipped (they stay on disk for an operator).
    pub fn load(items: Vec<StoredItem>, archive_last: Vec<(String, u64)>) -> HashMap<String, UserData> {
        let mut users: HashMap<String, UserData> = HashMap::new();
        for item in items {
            let data = users.entry(item.user.clone()).or_default();
            if let Err(error) = data.apply(item.kind, &item.key, &item.value) {
                tracing::error!(user = %item.user, kind = ?item.kind, key = %item.key, %error, "unreadable stored item skipped");
            }
        }
        for (user, last) in archive_last {
            users.entry(user).or_default().archive_last = last;
        }
        users
    }

    fn apply(&mut self, kind: ItemKind, key: &str, value: &[u8]) -> Result<(), String> {
        let text = || String::from_utf8(value.to_vec()).map_err(|e| e.to_string());
        match kind {
            ItemKind::Roster => {
                self.roster.insert(key.to_owned(), RosterItem::decode(value)?);
            }
            ItemKind::RosterVersion => self.roster_version = read_u64(value)?,
            ItemKind::Block => {
                self.blocklist.insert(key.to_owned());
            }
            ItemKind::Private => {
                self.private.insert(key.to_owned(), text()?);
            }
            ItemKind::Vcard => self.vcard = Some(text()?),
            ItemKind::ArchivePreferences => self.preferences = Preferences::decode(value)?,
            ItemKind::Offline => {
                let sequence = key.parse::<u64>().map_err(|e| e.to_string())?;
                self.offline.insert(sequence, value.to_vec());
            }
            ItemKind::PepNode => {
                self.pep.insert(key.to_owned(), pep::Node::decode(value)?);
            }
            // Rooms are loaded by muc.rs; an account never owns these.
            ItemKind::RoomConfig | ItemKind::RoomAffiliation => return Err("room state stored for an account".into()),
            ItemKind::SubscriptionRequest => {
                self.subscription_requests.insert(key.to_owned(), text()?);
            }
            ItemKind::LastActivity => {
                let stamp = read_u64(value.get(..8).unwrap_or_default())?;
                let status = String::from_utf8(value.get(8..).unwrap_or_default().to_vec()).map_err(|e| e.to_string())?;
                self.last_activity = Some((stamp, status));
            }
        }
        Ok(())
    }

    /// The value memory holds for one stored item, encoded as the store holds it (`None`:
    /// absent): what puts the item back if a change to it cannot be stored.
    pub fn stored(&self, kind: ItemKind, key: &str) -> Option<Vec<u8>> {
        match kind {
            ItemKind::Roster => self.roster.get(key).map(RosterItem::encode),
            ItemKind::RosterVersion => (self.roster_version != 0).then(|| self.roster_version.to_le_bytes().to_vec()),
            ItemKind::Block => self.blocklist.contains(key).then(Vec::new),
            ItemKind::Private => self.private.get(key).map(|xml| xml.clone().into_bytes()),
            ItemKind::Vcard => self.vcard.clone().map(String::into_bytes),
            ItemKind::ArchivePreferences => Some(self.preferences.encode()),
            ItemKind::Offline => key.parse::<u64>().ok().and_then(|sequence| self.offline.get(&sequence).cloned()),
            ItemKind::PepNode => self.pep.get(key).map(pep::Node::encode),
            ItemKind::LastActivity => self.last_activity.as_ref().map(|(stamp, status)| {
                let mut value = stamp.to_le_bytes().to_vec();
                value.extend_from_slice(status.as_bytes());
                value
            }),
            ItemKind::SubscriptionRequest => self.subscription_requests.get(key).map(|xml| xml.clone().into_bytes()),
            ItemKind::RoomConfig | ItemKind::RoomAffiliation => None,
        }
    }

    /// Puts one item back as `stored` said it was.
    pub fn restore(&mut self, kind: ItemKind, key: &str, value: Option<&[u8]>) -> Result<(), String> {
        if let Some(value) = value {
            return self.apply(kind, key, value);
        }
        match kind {
            ItemKind::Roster => drop(self.roster.remove(key)),
            ItemKind::RosterVersion => self.roster_version = 0,
            ItemKind::Block => drop(self.blocklist.remove(key)),
            ItemKind::Private => drop(self.private.remove(key)),
            ItemKind::Vcard => self.vcard = None,
            ItemKind::ArchivePreferences => self.preferences = Preferences::default(),
            ItemKind::Offline => {
                if let Ok(sequence) = key.parse::<u64>() {
                    self.offline.remove(&sequence);
                }
            }
            ItemKind::PepNode => drop(self.pep.remove(key)),
            ItemKind::LastActivity => self.last_activity = None,
            ItemKind::SubscriptionRequest => drop(self.subscription_requests.remove(key)),
            ItemKind::RoomConfig | ItemKind::RoomAffiliation => {}
        }
        Ok(())
    }

    /// Bytes of stored state this user holds (about what the store holds for it), checked
    /// against `limits.account_bytes` where state grows. A walk over the user's items: only
    /// changes that grow state pay it.
    pub fn stored_bytes(&self) -> usize {
        const ENTRY_OVERHEAD_BYTES: usize = 32;
        let roster: usize = self
            .roster
            .values()
            .map(|item| {
                item.jid.len()
                    + item.name.as_ref().map_or(0, String::len)
                    + item.groups.iter().map(String::len).sum::<usize>()
                    + ENTRY_OVERHEAD_BYTES
            })
            .sum();
        let blocklist: usize = self.blocklist.iter().map(|jid| jid.len() + ENTRY_OVERHEAD_BYTES).sum();
        let private: usize = self.private.iter().map(|(key, xml)| key.len() + xml.len()).sum();
        let pep: usize = self
            .pep
            .values()
            .flat_map(|node| node.items.iter())
            .map(|item| item.id.len() + item.payload.len() + ENTRY_OVERHEAD_BYTES)
            .sum();
        let offline: usize = self.offline.values().map(Vec::len).sum();
        let requests: usize = self.subscription_requests.iter().map(|(jid, xml)| jid.len() + xml.len()).sum();
        roster + blocklist + private + pep + offline + requests + self.vcard.as_ref().map_or(0, String::len)
    }

    /// Is `address` blocked (XEP-0191 §3.5 with XEP-0016 §2.1 matching)?
    pub fn is_blocked(&self, address: &str) -> bool {
        // At most four set lookups, whatever the list's size (XEP-0191 §6 matching).
        !self.blocklist.is_empty() && blocking::is_blocked(address, |entry| self.blocklist.contains(entry))
    }

    fn subscription(&self, contact: &str) -> Subscription {
        self.roster.get(contact).map(|item| item.subscription).unwrap_or(Subscription::None)
    }

    /// Contacts that receive the user's presence (subscription from or both).
    fn presence_subscribers(&self) -> Vec<String> {
        self.roster
            .values()
            .filter(|item| matches!(item.subscription, Subscription::From | Subscription::Both))
            .filter(|item| !self.is_blocked(&item.jid))
            .map(|item| item.jid.clone())
            .collect()
    }
}

/// The undo of a change about to be made to one item of `user` (see `storage::Undo`).
fn before(data: &UserData, user: &str, kind: ItemKind, key: &str) -> Undo {
    Undo::Item { user: user.to_owned(), kind, key: key.to_owned(), value: data.stored(kind, key) }
}

fn read_u64(bytes: &[u8]) -> Result<u64, String> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| "expected 8 bytes".to_owned())?;
    Ok(u64::from_le_bytes(array))
}

/// What handling a client's stanza produced beyond direct session deliveries.
#[derive(Default)]
pub struct Effects {
    /// Stanzas for the acting connection, written once `records` are durable.
    pub reply: Vec<Vec<u8>>,
    /// Stanzas to route (to this shard or others).
    pub envelopes: Vec<Envelope>,
    /// State changes to make durable, in order.
    pub records: Vec<Record>,
    /// How to put memory back if `records` cannot be stored.
    pub undo: Vec<Undo>,
    /// A MAM query to run against the store (it reads from disk, so the connection runs it).
    pub archive_query: Option<ArchiveRequest>,
    /// An in-band account change (XEP-0077 §3.2–3.3), carried out by the connection (it
    /// derives secrets off the shard thread); `id` is the iq to answer.
    pub account_change: Option<(String, AccountChange)>,
    /// The MUC service's disco#items (XEP-0045 §6.3): the rooms of every shard are gathered
    /// by the connection; this is the iq id to answer.
    pub room_listing: Option<String>,
}

/// XEP-0077 changes an authenticated user makes to their own account.
pub enum AccountChange {
    Password(String),
    Remove,
}

/// A XEP-0313 query waiting for its read.
pub struct ArchiveRequest {
    pub user: String,
    pub requester: String,
    pub id: String,
    pub query: ArchiveQuery,
}

/// Milliseconds since the Unix epoch (the one clock the IM services read).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn token() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 12)
}

fn presence_bytes(stanza_type: &str, from: &str, to: &str) -> Vec<u8> {
    presence_with(stanza_type, from, to, "")
}

/// `presence_bytes` with children (serialised XML, e.g. a kept request's `<nick/>`).
fn presence_with(stanza_type: &str, from: &str, to: &str, children: &str) -> Vec<u8> {
    let (from, to) = (escape_attribute(from), escape_attribute(to));
    if children.is_empty() {
        format!("<presence type='{stanza_type}' from='{from}' to='{to}'/>").into_bytes()
    } else {
        format!("<presence type='{stanza_type}' from='{from}' to='{to}'>{children}</presence>").into_bytes()
    }
}

fn presence_envelope(to: Jid, from: Jid, stanza_type: Option<&str>, bytes: Vec<u8>) -> Envelope {
    Envelope { to, from, kind: StanzaKind::Presence, stanza_type: stanza_type.map(Into::into), id: None, bytes, interest: None }
}

/// A payload-less presence of `stanza_type` from `from` to `to`, ready to route.
pub(crate) fn typed_presence(stanza_type: &str, from: Jid, to: Jid) -> Envelope {
    let bytes = presence_bytes(stanza_type, from.as_str(), to.as_str());
    presence_envelope(to, from, Some(stanza_type), bytes)
}

/// The bytes of an unavailable presence from `from` (RFC 6121 §4.5.2).
fn unavailable_from(from: &FullJid) -> Vec<u8> {
    format!("<presence type='unavailable' from='{}'/>", escape_attribute(from.as_str())).into_bytes()
}

// ---------------------------------------------------------------------------------------
// Stanzas from the user's own clients.
// ---------------------------------------------------------------------------------------

/// Handles a stanza from a bound client of a user homed here (RFC 6120 §10, RFC 6121 §8).
/// `undirected` is true for presence without `to`.
pub fn from_client(shard: &mut Shard, me: &FullJid, stanza: &Stanza<'_>, undirected: bool, now_ms: u64) -> Effects {
    let mut fx = Effects::default();
    let domain = shard.shared.config.domain.clone();
    let Some(kind) = StanzaKind::from_name(stanza.name) else { return fx };
    let stanza_type = stanza.kind.as_deref();
    let id = stanza.id.as_deref();
    let from = Jid::Full(me.clone());
    let to = match stanza.to.as_deref().map(Jid::parse) {
        Some(Ok(to)) => Some(to),
        None => None,
        Some(Err(_)) => {
            // RFC 6120 §8.3.3.8 jid-malformed, from the server that found it: the addresses
            // cannot be swapped when one is malformed (§8.3.1).
            let Ok(server) = Jid::parse(&domain) else { return fx };
            if let Some(error) = error_envelope(&server, &from, kind, stanza_type, id, "jid-malformed") {
                fx.reply.push(error.bytes);
            }
            return fx;
        }
    };
    let user = me.local().unwrap_or_default().to_owned();
    if let Some(to) = &to {
        // XEP-0191 §3.5: nothing goes out to a blocked entity; messages and iqs bounce.
        if shard.users.get(&user).is_some_and(|data| data.is_blocked(to.as_str())) {
            if kind != StanzaKind::Presence && !matches!(stanza_type, Some("error") | Some("result")) {
                fx.reply.push(blocking::blocked_error(kind.name(), id, to.as_str(), me.as_str()));
            }
            return fx;
        }
    }
    match kind {
        StanzaKind::Presence => presence_from_client(shard, me, stanza, to, undirected, now_ms, &mut fx),
        StanzaKind::Iq => {
            let own_account = match &to {
                None => true,
                Some(Jid::Bare(bare)) => *bare == me.bare(),
                Some(Jid::Full(_)) => false,
            };
            if own_account {
                if matches!(stanza_type, Some("result") | Some("error")) {
                    // Answers to roster or block pushes: nothing to do (RFC 6121 §2.1.6).
                    return fx;
                }
                let element = stanza.element().ok();
                let payload = element.as_ref().and_then(|e| e.elements().next());
                own_iq(shard, me, stanza_type.unwrap_or(""), id.unwrap_or(""), payload, to.is_some(), now_ms, &mut fx);
            } else {
                let to = to.unwrap_or_else(|| Jid::Bare(me.bare()));
                route_or_answer(shard, me, kind, stanza, to, &domain, now_ms, &mut fx);
            }
        }
        StanzaKind::Message => {
            // RFC 6121 §8.1: no `to` means the sender's bare JID.
            let to = to.unwrap_or_else(|| Jid::Bare(me.bare()));
            if to.local().is_some() && to.domain() == domain {
                message_from_client(shard, me, stanza, &to, now_ms, &mut fx);
            }
            route_or_answer(shard, me, kind, stanza, to, &domain, now_ms, &mut fx);
        }
    }
    fx
}

/// Routes a stanza to a user, or answers it for the server (RFC 6120 §10.3–10.4).
#[allow(clippy::too_many_arguments)]
fn route_or_answer(
    shard: &mut Shard,
    me: &FullJid,
    kind: StanzaKind,
    stanza: &Stanza<'_>,
    to: Jid,
    domain: &str,
    now_ms: u64,
    fx: &mut Effects,
) {
    let stanza_type = stanza.kind.as_deref();
    let id = stanza.id.as_deref();
    let from = Jid::Full(me.clone());
    if crate::muc::is_service(&shard.shared, &to) {
        crate::muc::from_client(shard, me, kind, stanza, to, fx);
        return;
    }
    if to.domain() != domain {
        // No server-to-server yet: RFC 6120 §10.4.3 remote-server-not-found.
        if let Some(error) = error_envelope(&to, &from, kind, stanza_type, id, "remote-server-not-found") {
            fx.reply.push(error.bytes);
        }
        return;
    }
    if to.local().is_none() {
        if kind == StanzaKind::Iq
            && matches!(stanza_type, Some("result") | Some("error"))
            && caps_answer(shard, me, id.unwrap_or(""), stanza, fx)
        {
            return;
        }
        if kind == StanzaKind::Iq && to.resource().is_none() && !matches!(stanza_type, Some("result") | Some("error")) {
            let element = stanza.element().ok();
            let payload = element.as_ref().and_then(|e| e.elements().next());
            fx.reply.push(server_iq(shard, stanza_type.unwrap_or(""), id.unwrap_or(""), payload, me.as_str(), now_ms));
        } else if kind != StanzaKind::Presence {
            // RFC 6120 §10.3: nothing is served at the domain's resources or by message.
            if let Some(error) = error_envelope(&to, &from, kind, stanza_type, id, "service-unavailable") {
                fx.reply.push(error.bytes);
            }
        }
        return;
    }
    fx.envelopes.push(routed(me, to, kind, stanza));
}

/// A client's stanza on its way to `to`: the original bytes with only `from` stamped (RFC 6120
/// §8.1.2.1), and the header fields routing needs.
pub(crate) fn routed(me: &FullJid, to: Jid, kind: StanzaKind, stanza: &Stanza<'_>) -> Envelope {
    Envelope {
        to,
        from: Jid::Full(me.clone()),
        kind,
        stanza_type: stanza.kind.as_deref().map(Into::into),
        id: stanza.id.as_deref().map(Into::into),
        bytes: stanza.with_from(me.as_str()),
        interest: None,
    }
}

/// The server's own answers at the domain: ping, disco, version, time, uptime.
fn server_iq(shard: &Shard, stanza_type: &str, id: &str, payload: Option<&Element>, requester: &str, now_ms: u64) -> Vec<u8> {
    let domain = shard.shared.config.domain.as_str();
    let Some(payload) = payload else {
        return routing::server_iq(stanza_type, id, None, Some(domain), requester, None);
    };
    match (stanza_type, payload.name.as_str(), payload.namespace.as_str()) {
        ("get", "query", VERSION_NAMESPACE) => {
            // XEP-0092 §2.1: name and version; the operating system is not disclosed.
            let query = Element::new("query", VERSION_NAMESPACE)
                .with_child(Element::new("name", VERSION_NAMESPACE).with_text("Confab"))
                .with_child(Element::new("version", VERSION_NAMESPACE).with_text(env!("CARGO_PKG_VERSION")));
            iq_result(id, Some(domain), requester, Some(&query))
        }
        ("get", "time", TIME_NAMESPACE) => {
            // XEP-0202 §3: the server keeps UTC.
            let time = Element::new("time", TIME_NAMESPACE)
                .with_child(Element::new("tzo", TIME_NAMESPACE).with_text("+00:00"))
                .with_child(Element::new("utc", TIME_NAMESPACE).with_text(&confab_core::time::format_timestamp(now_ms)));
            iq_result(id, Some(domain), requester, Some(&time))
        }
        ("get", "query", LAST_NAMESPACE) => {
            // XEP-0012 §6: a server answers with its uptime.
            let uptime = shard.shared.started.elapsed().as_secs();
            let query = Element::new("query", LAST_NAMESPACE).with_attribute("seconds", &uptime.to_string());
            iq_result(id, Some(domain), requester, Some(&query))
        }
        ("get", "query", routing::DISCO_INFO_NAMESPACE) if payload.attribute("node").is_none() => {
            let mut query = Element::new("query", routing::DISCO_INFO_NAMESPACE).with_child(
                Element::new("identity", routing::DISCO_INFO_NAMESPACE)
                    .with_attribute("category", "server")
                    .with_attribute("type", "im")
                    .with_attribute("name", "Confab"),
            );
            for feature in SERVER_FEATURES {
                query = query.with_child(Element::new("feature", routing::DISCO_INFO_NAMESPACE).with_attribute("var", feature));
            }
            iq_result(id, Some(domain), requester, Some(&query))
        }
        ("get", "query", routing::DISCO_ITEMS_NAMESPACE) if payload.attribute("node").is_none() => {
            // XEP-0030 §4: the server's services (XEP-0045 §6.1 finds the MUC service here).
            let mut query = Element::new("query", routing::DISCO_ITEMS_NAMESPACE);
            let muc = &shard.shared.config.muc;
            if muc.enabled {
                query = query.with_child(
                    Element::new("item", routing::DISCO_ITEMS_NAMESPACE)
                        .with_attribute("jid", &muc.domain)
                        .with_attribute("name", &muc.name),
                );
            }
            iq_result(id, Some(domain), requester, Some(&query))
        }
        _ => routing::server_iq(stanza_type, id, Some(payload), Some(domain), requester, None),
    }
}

fn presence_from_client(
    shard: &mut Shard,
    me: &FullJid,
    stanza: &Stanza<'_>,
    to: Option<Jid>,
    undirected: bool,
    now_ms: u64,
    fx: &mut Effects,
) {
    let stanza_type = stanza.kind.as_deref();
    let user = me.local().unwrap_or_default().to_owned();
    if let Some(room) = to.as_ref().filter(|to| crate::muc::is_service(&shard.shared, to)) {
        // Presence to a room is XEP-0045 (join, change, leave), kept per session by muc.rs
        // rather than as directed presence.
        crate::muc::from_client(shard, me, StanzaKind::Presence, stanza, room.clone(), fx);
        return;
    }
    match (to, stanza_type) {
        (None, None) if undirected => available_from_client(shard, me, stanza, fx),
        (None, Some("unavailable")) if undirected => {
            let bytes = stanza.with_from(me.as_str());
            // XEP-0012 §4: the last unavailable presence's status is the user's last status.
            let status = stanza.element().ok().and_then(|e| e.child("status", confab_core::stream::CLIENT_NAMESPACE).map(Element::text));
            if let Some(session) = shard.session_mut(me) {
                session.leaving_status = status.map(Into::into);
                session.unavailable_at_ms = Some(now_ms);
            }
            unavailable_broadcast(shard, me, bytes, fx);
        }
        // Subscription stanzas, probes and errors need an addressee; a client must not probe
        // (RFC 6121 §4.3); all are ignored without one.
        (None, _) => {}
        (Some(to), Some(kind)) if SubscriptionStanza::from_type(kind).is_some() => {
            let Some(stanza_kind) = SubscriptionStanza::from_type(kind) else { return };
            let contact = to.bare();
            if contact.domain() != shard.shared.config.domain || contact.local().is_none() || contact == me.bare() {
                // No server-to-server; subscribing to oneself or a domain is meaningless.
                return;
            }
            outbound_subscription(shard, me, &user, &contact, stanza_kind, stanza, fx);
        }
        (Some(_), Some("probe")) => {}
        (Some(to), stanza_type) => {
            // Directed presence (RFC 6121 §4.6): routed as is; remembered so the entity hears
            // of our unavailability, unless it is a subscriber that hears anyway.
            let subscriber = shard
                .users
                .get(&user)
                .is_some_and(|data| matches!(data.subscription(to.bare().as_str()), Subscription::From | Subscription::Both));
            if let Some(session) = shard.session_mut(me) {
                match stanza_type {
                    None if !subscriber && session.available && !session.directed.contains(&to) => {
                        if session.directed.len() >= confab_core::limits::DIRECTED_PRESENCE_MAX {
                            session.directed.remove(0);
                        }
                        session.directed.push(to.clone());
                    }
                    Some("unavailable") => session.directed.retain(|j| *j != to),
                    _ => {}
                }
            }
            let domain = shard.shared.config.domain.clone();
            route_or_answer(shard, me, StanzaKind::Presence, stanza, to, &domain, now_ms, fx);
        }
    }
}

/// RFC 6121 §4.2 (initial presence) and §4.4 (subsequent presence).
fn available_from_client(shard: &mut Shard, me: &FullJid, stanza: &Stanza<'_>, fx: &mut Effects) {
    let user = me.local().unwrap_or_default().to_owned();
    let bare = me.bare();
    let element = stanza.element().ok();
    let priority = element
        .as_ref()
        .and_then(|e| e.child("priority", confab_core::stream::CLIENT_NAMESPACE).map(|p| p.text()))
        .and_then(|text| text.trim().parse::<i8>().ok())
        .unwrap_or(0);
    let caps = element.as_ref().and_then(pep::parse_caps);
    let bytes: Rc<[u8]> = stanza.with_from(me.as_str()).into();
    let caps_changed = caps_announced(shard, me, caps, fx);
    let Some(session) = shard.session_mut(me) else { return };
    let initial = !session.available;
    session.available = true;
    session.priority = priority;
    session.presence = Some(bytes.clone());
    let notify = session.notify.clone();
    // §4.2.2 / §4.4.2: to every subscriber, and to all of the user's available resources
    // (including this one).
    let subscribers = shard.users.get(&user).map(UserData::presence_subscribers).unwrap_or_default();
    for contact in subscribers {
        if let Ok(contact) = Jid::parse(&contact) {
            fx.envelopes.push(presence_envelope(contact, Jid::Full(me.clone()), None, bytes.to_vec()));
        }
    }
    deliver_to_own_available(shard, &bare, &bytes);
    // §4.2.1: probe the contacts we are subscribed to, from the bare JID; the probe also asks
    // for the last PEP items this session is interested in (XEP-0163 §4.3.2).
    if initial {
        let interest = (!notify.is_empty()).then(|| Interest { nodes: notify.clone(), session: Some(me.clone()), items_only: false });
        probe_contacts(shard, &user, &bare, interest, fx);
    }
    if (initial || caps_changed) && !notify.is_empty() {
        send_own_last_items(shard, me, &notify);
    }
    // §3.1.3: subscription requests that arrived while the user had no available resource.
    let Some(index) = shard.sessions.get(&bare).and_then(|s| s.iter().position(|s| s.resource == me.resource())) else { return };
    let Some(sessions) = shard.sessions.get(&bare) else { return };
    let sender = &sessions[index].sender;
    if let Some(data) = shard.users.get(&user).filter(|_| initial) {
        // XEP-0191 §3.3: nothing from a JID blocked since it asked.
        for item in data.roster.values().filter(|item| item.pending_in && !data.is_blocked(&item.jid)) {
            // Refused: the request stays pending and comes again at the next initial presence.
            // As it was sent: with the children kept for it (a XEP-0172 `<nick/>`, say).
            let children = data.subscription_requests.get(&item.jid).map(String::as_str).unwrap_or_default();
            let request = presence_with("subscribe", &item.jid, bare.as_str(), children);
            offer_or_count(shard, sender, SessionMessage::Stanza(request), Counter::PresenceInboxFull);
        }
    }
    // XEP-0160 §3: offline messages go to the first resource that is available with a
    // non-negative priority (on its initial presence or a later change).
    // While the store cannot write they stay stored: delivering them needs their removal.
    if priority >= 0 && shard.partition.is_writable() {
        if let Some(data) = shard.users.get_mut(&user) {
            let mut delivered = Vec::new();
            for (sequence, message) in &data.offline {
                // A sender blocked since is not heard (XEP-0191 §3.3); its messages go.
                let blocked = !data.blocklist.is_empty()
                    && parse_element(message)
                        .ok()
                        .and_then(|m| m.attribute("from").map(str::to_owned))
                        .is_some_and(|from| data.is_blocked(&from));
                // All at once, past the inbox's soft bound: their number is bounded by the
                // offline limits, and stopping halfway would strand the rest until the next
                // presence while newer messages overtake them.
                if !blocked && !sender.force(SessionMessage::Stanza(message.clone())) {
                    break;
                }
                delivered.push(*sequence);
            }
            for sequence in delivered {
                fx.undo.push(before(data, &user, ItemKind::Offline, &offline_key(sequence)));
                data.offline.remove(&sequence);
                fx.records.push(Record::ItemDelete { user: user.clone(), kind: ItemKind::Offline, key: offline_key(sequence) });
            }
        }
    }
}

/// XEP-0160 with XEP-0203: keeps a message for `user`, stamped with when it arrived (unless
/// it carries its stamp already). The caller checked `offline_has_room` and that the store
/// can write; should the write fail anyway, the message is taken back and bounced.
fn store_offline(shard: &mut Shard, user: &str, bytes: &[u8], stamped: bool, records: &mut Vec<Record>, undo: &mut Vec<Undo>) {
    let stored = if stamped { bytes.to_vec() } else { confab_core::time::with_delay(bytes, &shard.shared.config.domain, now_ms()) };
    let data = shard.users.entry(user.to_owned()).or_default();
    let sequence = data.offline.keys().next_back().map_or(1, |last| last + 1);
    undo.push(before(data, user, ItemKind::Offline, &offline_key(sequence)));
    undo.push(Undo::Offline { bytes: bytes.to_vec() });
    records.push(Record::ItemPut { user: user.to_owned(), kind: ItemKind::Offline, key: offline_key(sequence), value: stored.clone() });
    data.offline.insert(sequence, stored);
}

fn offline_key(sequence: u64) -> String {
    format!("{sequence:020}")
}

/// Sends a probe to every contact the user is subscribed to (RFC 6121 §4.2.1), with the PEP
/// interest of the session that asks, if any.
fn probe_contacts(shard: &Shard, user: &str, bare: &BareJid, interest: Option<Interest>, fx: &mut Effects) {
    let Some(data) = shard.users.get(user) else { return };
    for item in data.roster.values() {
        if matches!(item.subscription, Subscription::To | Subscription::Both) && !data.is_blocked(&item.jid) {
            if let Ok(Jid::Bare(contact)) = Jid::parse(&item.jid) {
                let bytes = presence_bytes("probe", bare.as_str(), contact.as_str());
                let mut envelope = presence_envelope(Jid::Bare(contact), Jid::Bare(bare.clone()), Some("probe"), bytes);
                envelope.interest = interest.clone();
                fx.envelopes.push(envelope);
            }
        }
    }
}

/// XEP-0115 §6.3: a session announced caps. Known `ver`: its `+notify` nodes apply at once;
/// unknown: the client is asked (disco#info), and the answer is handled by `caps_answer`.
/// Returns whether the session's caps changed.
fn caps_announced(shard: &mut Shard, me: &FullJid, caps: Option<pep::Caps>, fx: &mut Effects) -> bool {
    let Some(caps) = caps else { return false };
    let known = shard.caps.get(&caps.ver).cloned();
    let Some(session) = shard.session_mut(me) else { return false };
    if session.caps_ver.as_deref() == Some(caps.ver.as_str()) {
        return false;
    }
    session.caps_ver = Some(caps.ver.clone().into());
    match known {
        Some(nodes) => session.notify = nodes,
        None => {
            session.notify = Arc::from(Vec::new());
            // One question in flight per session: a newer announcement replaces the older.
            shard.caps_pending.retain(|_, (_, asked)| asked != me);
            if caps.hash == pep::CAPS_HASH_SHA1 && shard.caps_pending.len() < confab_core::limits::CAPS_QUERIES_PENDING_MAX {
                let id = format!("caps-{}", token());
                let domain = shard.shared.config.domain.clone();
                fx.reply.push(pep::disco_request(&id, &domain, me.as_str(), &caps));
                shard.caps_pending.insert(id, (caps, me.clone()));
            }
        }
    }
    true
}

/// XEP-0115 §5.4: the client answered our disco#info. A verified answer is cached for its
/// `ver`; sessions announcing that `ver` get its `+notify` nodes, and the asking session
/// gets the last items it is now known to want (its own nodes and its contacts').
fn caps_answer(shard: &mut Shard, me: &FullJid, id: &str, stanza: &Stanza<'_>, fx: &mut Effects) -> bool {
    let Some((caps, asked)) = shard.caps_pending.remove(id) else { return false };
    if asked != *me {
        return true;
    }
    let element = stanza.element().ok();
    let query = element.as_ref().and_then(|e| e.child("query", routing::DISCO_INFO_NAMESPACE));
    let Some(features) = query.and_then(|q| pep::verify(&caps, q)) else {
        tracing::debug!(jid = %me, ver = %caps.ver, "caps did not verify");
        return true;
    };
    let nodes: Arc<[String]> = Arc::from(pep::notify_nodes(&features));
    if nodes.iter().map(String::len).sum::<usize>() > confab_core::limits::CAPS_NOTIFY_BYTES_MAX {
        tracing::debug!(jid = %me, "caps with too many +notify nodes ignored");
        return true;
    }
    if shard.caps.len() >= confab_core::limits::CAPS_CACHE_ENTRIES_MAX {
        shard.caps.clear();
    }
    shard.caps.insert(caps.ver.clone(), nodes.clone());
    if let Some(sessions) = shard.sessions.get_mut(&me.bare()) {
        for session in sessions.iter_mut().filter(|s| s.caps_ver.as_deref() == Some(caps.ver.as_str())) {
            session.notify = nodes.clone();
        }
    }
    if nodes.is_empty() {
        return true;
    }
    send_own_last_items(shard, me, &nodes);
    let user = me.local().unwrap_or_default().to_owned();
    let interest = Interest { nodes, session: Some(me.clone()), items_only: true };
    probe_contacts(shard, &user, &me.bare(), Some(interest), fx);
    true
}

/// XEP-0163 §4.3.2: the last item of each of the user's own nodes the session wants.
fn send_own_last_items(shard: &Shard, me: &FullJid, nodes: &[String]) {
    let user = me.local().unwrap_or_default();
    let (Some(data), Some(session)) =
        (shard.users.get(user), shard.sessions.get(&me.bare()).and_then(|s| s.iter().find(|s| s.resource == me.resource())))
    else {
        return;
    };
    let owner = me.bare();
    for name in nodes {
        if let Some(item) = data
            .pep
            .get(name)
            .filter(|n| n.config.send_last_published_item != pep::SendLastPublishedItem::Never)
            .and_then(|n| n.last_item())
        {
            offer_or_count(
                shard,
                &session.sender,
                SessionMessage::Stanza(pep::last_item_event(owner.as_str(), me.as_str(), name, item)),
                Counter::PepInboxFull,
            );
        }
    }
}

/// Delivers presence bytes to every available session of a local user.
fn deliver_to_own_available(shard: &Shard, bare: &BareJid, bytes: &[u8]) {
    if let Some(sessions) = shard.sessions.get(bare) {
        for session in sessions.iter().filter(|s| s.available) {
            offer_or_count(shard, &session.sender, SessionMessage::Stanza(bytes.to_vec()), Counter::PresenceInboxFull);
        }
    }
}

/// RFC 6121 §4.5: the session becomes unavailable; subscribers, entities that got directed
/// presence and the user's own resources are told.
fn unavailable_broadcast(shard: &mut Shard, me: &FullJid, bytes: Vec<u8>, fx: &mut Effects) {
    let user = me.local().unwrap_or_default().to_owned();
    let bare = me.bare();
    let Some(session) = shard.session_mut(me) else { return };
    let was_available = session.available;
    session.available = false;
    session.presence = None;
    let directed = std::mem::take(&mut session.directed);
    let rooms = std::mem::take(&mut session.rooms);
    // The session itself sees its own unavailable presence too (§4.5.2 includes it).
    let offered = offer(&session.sender, SessionMessage::Stanza(bytes.clone()));
    if !offered {
        shard.counters.count(Counter::PresenceInboxFull);
    }
    crate::muc::leave_rooms(me, rooms, &mut fx.envelopes);
    if !was_available {
        return;
    }
    announce_departure(shard, &user, me, &bytes, directed, fx);
    deliver_to_own_available(shard, &bare, &bytes);
}

fn announce_departure(shard: &Shard, user: &str, me: &FullJid, bytes: &[u8], directed: Vec<Jid>, fx: &mut Effects) {
    let subscribers = shard.users.get(user).map(UserData::presence_subscribers).unwrap_or_default();
    for contact in subscribers {
        if let Ok(contact) = Jid::parse(&contact) {
            fx.envelopes.push(presence_envelope(contact, Jid::Full(me.clone()), Some("unavailable"), bytes.to_vec()));
        }
    }
    for entity in directed {
        fx.envelopes.push(presence_envelope(entity, Jid::Full(me.clone()), Some("unavailable"), bytes.to_vec()));
    }
}

/// A session ended (stream closed or connection lost): it leaves the table and, if it was
/// available, its unavailability is announced (RFC 6121 §4.5.2). Returns what to route and
/// what to store.
pub fn session_ended(shard: &mut Shard, me: &FullJid, connection: u64, now_ms: u64) -> Effects {
    let mut fx = Effects::default();
    let Some(session) = shard.unbind(me, connection) else { return fx };
    shard.caps_pending.retain(|_, (_, asked)| asked != me);
    let user = me.local().unwrap_or_default().to_owned();
    if session.available {
        let bytes = unavailable_from(me);
        announce_departure(shard, &user, me, &bytes, session.directed.clone(), &mut fx);
        deliver_to_own_available(shard, &me.bare(), &bytes);
    }
    crate::muc::leave_rooms(me, session.rooms.clone(), &mut fx.envelopes);
    if !shard.sessions.contains_key(&me.bare()) && shard.accounts.contains_key(&user) && shard.partition.is_writable() {
        // XEP-0012 §4: the last logout, for "last seen" (not recorded while the store cannot
        // write: nobody waits on it).
        let mut value = now_ms.to_le_bytes().to_vec();
        let status = match &session.leaving_status {
            Some(status) => status.to_string(),
            None => session
                .presence
                .as_deref()
                .and_then(|p| parse_element(p).ok())
                .and_then(|p| p.child("status", confab_core::stream::CLIENT_NAMESPACE).map(Element::text))
                .unwrap_or_default(),
        };
        value.extend_from_slice(status.as_bytes());
        let data = shard.users.entry(user.clone()).or_default();
        fx.undo.push(before(data, &user, ItemKind::LastActivity, ""));
        data.last_activity = Some((now_ms, status));
        fx.records.push(Record::ItemPut { user, kind: ItemKind::LastActivity, key: String::new(), value });
    }
    fx
}

/// RFC 6120 §7.7.2.2: a new session took over the resource; the replaced one's presence ends
/// as if it had disconnected (RFC 6121 §4.5.2, §4.6.3). Returns what to route.
pub(crate) fn session_replaced(shard: &mut Shard, me: &FullJid, old: crate::shard::Session) -> Vec<Envelope> {
    let mut fx = Effects::default();
    if old.available {
        let user = me.local().unwrap_or_default().to_owned();
        let bytes = unavailable_from(me);
        announce_departure(shard, &user, me, &bytes, old.directed, &mut fx);
        deliver_to_own_available(shard, &me.bare(), &bytes);
    }
    crate::muc::leave_rooms(me, old.rooms, &mut fx.envelopes);
    fx.envelopes
}

/// RFC 6121 §3.1.2, §3.2.2, §3.3.2, §3.4: the user sends a subscription stanza.
fn outbound_subscription(
    shard: &mut Shard,
    me: &FullJid,
    user: &str,
    contact: &BareJid,
    kind: SubscriptionStanza,
    stanza: &Stanza<'_>,
    fx: &mut Effects,
) {
    let roster_max = shard.shared.config.limits.roster_items;
    // A subscription change needs a write: refused at once while the store cannot take one.
    let writable = shard.partition.is_writable();
    let data = shard.users.entry(user.to_owned()).or_default();
    let current = data.roster.get(contact.as_str());
    if current.is_none() && data.roster.len() >= roster_max || !writable {
        fx.reply.push(error_reply(
            StanzaKind::Presence,
            stanza.id.as_deref(),
            Some(contact.as_str()),
            Some(me.as_str()),
            "resource-constraint",
        ));
        return;
    }
    let effect = roster::outbound(current, contact.as_str(), kind);
    let visible = apply_roster_effect(data, user, contact.as_str(), effect.item, effect.changed, fx);
    if let Some(element) = visible {
        let version = data.roster_version;
        push_roster(shard, &me.bare(), version, &element);
    }
    if !effect.route {
        return;
    }
    // §3.1.2: stamped with the user's bare JID.
    let bare = me.bare();
    fx.envelopes.push(presence_envelope(
        Jid::Bare(contact.clone()),
        Jid::Bare(bare.clone()),
        Some(kind.as_type()),
        stanza.with_from(bare.as_str()),
    ));
    match kind {
        // §3.1.5: the contact now gets the user's current presence from each resource.
        SubscriptionStanza::Subscribed => send_current_presence(shard, &bare, contact, fx),
        // §3.2.2: and loses it when the subscription is cancelled.
        SubscriptionStanza::Unsubscribed => send_unavailable(shard, &bare, contact, fx),
        _ => {}
    }
}

/// Applies a subscription effect to the roster table; returns the element to push when the
/// change is visible to the user.
fn apply_roster_effect(
    data: &mut UserData,
    user: &str,
    contact: &str,
    item: Option<RosterItem>,
    changed: bool,
    fx: &mut Effects,
) -> Option<Element> {
    let was_visible = data.roster.get(contact).is_some_and(|i| !i.hidden);
    if !item.as_ref().is_some_and(|i| i.pending_in) && data.subscription_requests.contains_key(contact) {
        // The request was answered (or withdrawn): its kept children go with it.
        fx.undo.push(before(data, user, ItemKind::SubscriptionRequest, contact));
        data.subscription_requests.remove(contact);
        fx.records.push(Record::ItemDelete { user: user.to_owned(), kind: ItemKind::SubscriptionRequest, key: contact.to_owned() });
    }
    fx.undo.push(before(data, user, ItemKind::Roster, contact));
    let pushed = match item {
        Some(item) if !item.is_empty_state() => {
            let element = (!item.hidden).then(|| item.to_element());
            fx.records.push(Record::ItemPut {
                user: user.to_owned(),
                kind: ItemKind::Roster,
                key: contact.to_owned(),
                value: item.encode(),
            });
            data.roster.insert(contact.to_owned(), item);
            element
        }
        _ => {
            if data.roster.remove(contact).is_some() {
                fx.records.push(Record::ItemDelete { user: user.to_owned(), kind: ItemKind::Roster, key: contact.to_owned() });
            }
            was_visible.then(|| roster::removed_item_element(contact))
        }
    };
    if changed && pushed.is_some() {
        fx.undo.push(before(data, user, ItemKind::RosterVersion, ""));
        data.roster_version += 1;
        fx.records.push(Record::ItemPut {
            user: user.to_owned(),
            kind: ItemKind::RosterVersion,
            key: String::new(),
            value: data.roster_version.to_le_bytes().to_vec(),
        });
        pushed
    } else {
        None
    }
}

/// RFC 6121 §2.1.6: a roster push to every interested resource of the user.
fn push_roster(shard: &Shard, user: &BareJid, version: u64, item: &Element) {
    let Some(sessions) = shard.sessions.get(user) else { return };
    let version = version.to_string();
    for session in sessions.iter().filter(|s| s.interested) {
        let to = format!("{}/{}", user.as_str(), session.resource);
        offer_or_count(
            shard,
            &session.sender,
            SessionMessage::Stanza(roster::push_iq(&token(), &to, Some(&version), item)),
            Counter::PushInboxFull,
        );
    }
}

/// The user's current presence from each available resource, to `contact`.
fn send_current_presence(shard: &Shard, user: &BareJid, contact: &BareJid, fx: &mut Effects) {
    let Some(sessions) = shard.sessions.get(user) else { return };
    for session in sessions.iter().filter(|s| s.available) {
        if let (Some(bytes), Ok(from)) = (&session.presence, user.with_resource(&session.resource)) {
            fx.envelopes.push(presence_envelope(Jid::Bare(contact.clone()), Jid::Full(from), None, bytes.to_vec()));
        }
    }
}

fn send_unavailable(shard: &Shard, user: &BareJid, contact: &BareJid, fx: &mut Effects) {
    let Some(sessions) = shard.sessions.get(user) else { return };
    for session in sessions.iter().filter(|s| s.available) {
        if let Ok(from) = user.with_resource(&session.resource) {
            let bytes = presence_bytes("unavailable", from.as_str(), contact.as_str());
            fx.envelopes.push(presence_envelope(Jid::Bare(contact.clone()), Jid::Full(from), Some("unavailable"), bytes));
        }
    }
}

/// Carbons (XEP-0280 §5) and the sender's archive (XEP-0313) for a message to a local user.
fn message_from_client(shard: &mut Shard, me: &FullJid, stanza: &Stanza<'_>, to: &Jid, now_ms: u64, fx: &mut Effects) {
    let floor = shard.shared.id_floor;
    if !might_be_interesting(stanza.kind.as_deref(), stanza.bytes()) {
        return;
    }
    let bare = me.bare();
    let user = me.local().unwrap_or_default().to_owned();
    let carbon_targets: Vec<usize> = shard
        .sessions
        .get(&bare)
        .map(|sessions| {
            (0..sessions.len()).filter(|&i| sessions[i].carbons && sessions[i].available && sessions[i].resource != me.resource()).collect()
        })
        .unwrap_or_default();
    let to_bare = to.bare();
    let archive = to_bare != bare;
    if carbon_targets.is_empty() && !archive {
        return;
    }
    if carbon_targets.is_empty() && plain_message(stanza.kind.as_deref(), stanza.bytes()) {
        // The common case needs no tree: the bytes as routed are the bytes archived.
        let data = shard.users.entry(user.clone()).or_default();
        let in_roster = data.roster.get(to_bare.as_str()).is_some_and(|i| !i.hidden);
        if archive::should_archive(&data.preferences, to_bare.as_str(), in_roster) {
            if shard.partition.is_writable() {
                let kept = shard.shared.config.limits.archive_messages;
                let id = next_archive_id(data, floor);
                fx.records.extend(archive_append(data, &user, to_bare.as_str(), id, now_ms, stanza.with_from(me.as_str()), kept));
            } else {
                shard.counters.count(Counter::ArchiveSkipped);
            }
        }
        return;
    }
    let Ok(mut element) = stanza.element() else { return };
    element.set_attribute("from", me.as_str());
    let canonical = element.to_xml().into_bytes();
    if !carbon_targets.is_empty() && carbons::is_eligible_for(carbons::Direction::Sent, &element) {
        if let Some(sessions) = shard.sessions.get(&bare) {
            for index in carbon_targets {
                let session = &sessions[index];
                let full = format!("{}/{}", bare.as_str(), session.resource);
                offer_or_count(
                    shard,
                    &session.sender,
                    SessionMessage::Stanza(carbons::wrap(carbons::Direction::Sent, bare.as_str(), &full, &canonical)),
                    Counter::CarbonInboxFull,
                );
            }
        }
    }
    if archive && archive::is_archivable(&element) {
        let data = shard.users.entry(user.clone()).or_default();
        let in_roster = data.roster.get(to_bare.as_str()).is_some_and(|i| !i.hidden);
        if archive::should_archive(&data.preferences, to_bare.as_str(), in_roster) {
            if shard.partition.is_writable() {
                let kept = shard.shared.config.limits.archive_messages;
                let id = next_archive_id(data, floor);
                fx.records.extend(archive_append(data, &user, to_bare.as_str(), id, now_ms, canonical, kept));
            } else {
                shard.counters.count(Counter::ArchiveSkipped);
            }
        }
    }
}

/// A cheap test before parsing: chat messages (carbons copy them, XEP-0280 §6) and normal
/// messages with a body, a store hint or what carbons copy (receipts, markers, chat states)
/// need more than routing.
fn might_be_interesting(stanza_type: Option<&str>, bytes: &[u8]) -> bool {
    const SIGNS: [&[u8]; 5] =
        [b"<body", b"urn:xmpp:hints", b"urn:xmpp:receipts", b"urn:xmpp:chat-markers", b"jabber.org/protocol/chatstates"];
    match stanza_type {
        Some("chat") => true,
        None | Some("normal") => SIGNS.iter().any(|sign| contains(bytes, sign)),
        _ => false,
    }
}

/// A chat or normal message with a body and nothing that changes what the server does with it
/// (no hints, carbons, archive or forwarding payloads, no stanza id, no MUC or invitation
/// payload), ending in `</message>`: archived, stored and delivered as its bytes, without a
/// tree (what `archive::is_archivable` would say, decided on bytes; every special case goes
/// the parsed way).
fn plain_message(stanza_type: Option<&str>, bytes: &[u8]) -> bool {
    const SPECIAL: [&[u8]; 8] = [
        b"urn:xmpp:hints",
        b"urn:xmpp:carbons",
        b"urn:xmpp:mam",
        b"urn:xmpp:forward",
        STANZA_ID_NAMESPACE.as_bytes(),
        b"http://jabber.org/protocol/muc",
        b"jabber:x:conference",
        b"urn:xmpp:delay",
    ];
    matches!(stanza_type, None | Some("chat") | Some("normal"))
        && bytes.starts_with(b"<message")
        && bytes.ends_with(b"</message>")
        && contains(bytes, b"<body")
        && !SPECIAL.iter().any(|special| contains(bytes, special))
}

/// Inserts our `<stanza-id/>` (XEP-0359) as the message's last child, on bytes that
/// `plain_message` accepted.
fn with_stanza_id(bytes: &[u8], id: u64, by: &str) -> Vec<u8> {
    let tail = b"</message>".len();
    let element = format!("<stanza-id xmlns='{STANZA_ID_NAMESPACE}' id='{id}' by='{}'/>", escape_attribute(by));
    let mut out = Vec::with_capacity(bytes.len() + element.len());
    out.extend_from_slice(&bytes[..bytes.len() - tail]);
    out.extend_from_slice(element.as_bytes());
    out.extend_from_slice(&bytes[bytes.len() - tail..]);
    out
}

/// Room a `<stanza-id/>` takes on a message (namespace, id, our bare JID).
const STANZA_ID_BYTES_MAX: usize = 512 + 3 * 1024;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// XEP-0160 §4: room for one more offline message of `bytes`, by count and by bytes.
fn offline_has_room(data: &UserData, bytes: usize, count_max: usize, account_bytes: usize) -> bool {
    let held: usize = data.offline.values().map(Vec::len).sum();
    data.offline.len() < count_max && held + bytes <= confab_core::limits::OFFLINE_BYTES_MAX && data.stored_bytes() + bytes <= account_bytes
}

/// The id the user's next archived message gets: one more than the last, and never below the
/// floor this run started with (`storage::advance_id_floor`), so it differs from every id of
/// an earlier run, even one a crash lost from the store before its commit (appends commit
/// unsynced). Ids are XEP-0359 stanza-ids too: they must never repeat.
fn next_archive_id(data: &UserData, floor: u64) -> u64 {
    data.archive_last.saturating_add(1).max(floor)
}

/// The record that archives a message under `id` (from `next_archive_id`); none for a message
/// larger than `ARCHIVED_MESSAGE_BYTES_MAX` (delivered, not archived).
fn archive_append(data: &mut UserData, user: &str, with: &str, id: u64, now_ms: u64, bytes: Vec<u8>, kept: u64) -> Option<Record> {
    if bytes.len() > confab_core::limits::ARCHIVED_MESSAGE_BYTES_MAX {
        return None;
    }
    data.archive_last = id;
    let message = ArchivedMessage { id, stamp_ms: now_ms, with: with.to_owned(), bytes };
    Some(Record::ArchiveAppend { user: user.to_owned(), id: message.id, kept, message: message.encode() })
}

/// Requests to the user's own account (no `to`, or the bare JID): roster, blocking, private
/// storage, vCard, carbons, archive, and the server's answers on the account's behalf.
#[allow(clippy::too_many_arguments)]
fn own_iq(
    shard: &mut Shard,
    me: &FullJid,
    stanza_type: &str,
    id: &str,
    payload: Option<&Element>,
    addressed: bool,
    now_ms: u64,
    fx: &mut Effects,
) {
    let bare = me.bare();
    let user = me.local().unwrap_or_default().to_owned();
    // RFC 6120 §8.1.2.1: a reply to an iq without `to` comes from the account, without `from`.
    let reply_from = addressed.then(|| bare.as_str().to_owned());
    let error = |condition: &str| error_reply(StanzaKind::Iq, Some(id), reply_from.as_deref(), Some(me.as_str()), condition);
    let result = |payload: Option<&Element>| iq_result(id, reply_from.as_deref(), me.as_str(), payload);
    let Some(payload) = payload else {
        fx.reply.push(error("bad-request"));
        return;
    };
    if stanza_type == "set" && writes_own_state(payload) && !shard.partition.is_writable() {
        // The change could not be kept: refused before anything changes (RFC 6120
        // §8.3.3.18, type wait: try again later).
        fx.reply.push(error("resource-constraint"));
        return;
    }
    match (stanza_type, payload.name.as_str(), payload.namespace.as_str()) {
        ("get", "query", ROSTER_NAMESPACE) => {
            // RFC 6121 §2.1.3 / §2.6.3: the full roster, or an empty result when the client's
            // version is current (later changes come as pushes).
            let data = shard.users.get(&user);
            let version = data.map(|d| d.roster_version).unwrap_or(0).to_string();
            if let Some(session) = shard.session_mut(me) {
                session.interested = true;
            }
            if payload.attribute("ver") == Some(version.as_str()) {
                fx.reply.push(result(None));
            } else {
                let items = shard
                    .users
                    .get(&user)
                    .map(|d| d.roster.values().filter(|i| !i.hidden).cloned().collect::<Vec<_>>())
                    .unwrap_or_default();
                fx.reply.push(roster::roster_result(id, me.as_str(), Some(&version), items.iter()));
            }
        }
        ("set", "query", ROSTER_NAMESPACE) => roster_set(shard, me, &user, id, payload, fx),
        ("get" | "set", _, BLOCKING_NAMESPACE) => match blocking::parse_request(stanza_type, payload) {
            Err(condition) => fx.reply.push(error(condition)),
            Ok(request) => blocking_request(shard, me, &user, id, request, fx),
        },
        ("get", "query", PRIVATE_NAMESPACE) => {
            let Some(child) = payload.elements().next() else {
                fx.reply.push(error("bad-request"));
                return;
            };
            let key = format!("{} {}", child.namespace, child.name);
            if child.namespace == LEGACY_BOOKMARKS_NAMESPACE && child.name == "storage" {
                // XEP-0402 §5.3 (#compat): XEP-0048 bookmarks are a view of the bookmarks node.
                let items =
                    shard.users.get(&user).and_then(|d| d.pep.get(BOOKMARKS2_NAMESPACE)).map(|n| n.items.clone()).unwrap_or_default();
                let query = Element::new("query", PRIVATE_NAMESPACE).with_child(pep::legacy_from_bookmarks(&items));
                fx.reply.push(result(Some(&query)));
                return;
            }
            let stored = shard.users.get(&user).and_then(|d| d.private.get(&key)).and_then(|xml| parse_fragment(xml));
            let query =
                Element::new("query", PRIVATE_NAMESPACE).with_child(stored.unwrap_or_else(|| Element::new(&child.name, &child.namespace)));
            fx.reply.push(result(Some(&query)));
        }
        ("set", "query", PRIVATE_NAMESPACE) => {
            let children: Vec<&Element> = payload.elements().collect();
            // XEP-0049 §3: jabber:* namespaces are reserved; at least one fragment.
            if children.is_empty() || children.iter().any(|c| c.namespace.starts_with("jabber:") || c.namespace.is_empty()) {
                fx.reply.push(error("not-acceptable"));
                return;
            }
            let account_bytes = shard.shared.config.limits.account_bytes;
            let data = shard.users.entry(user.clone()).or_default();
            // Bounded in entries and in bytes, counted as the store would hold them once
            // written: one fragment per key, the last of a repeated key winning.
            let mut fragments: BTreeMap<String, usize> = BTreeMap::new();
            for child in &children {
                fragments.insert(format!("{} {}", child.namespace, child.name), child.to_xml().len());
            }
            let new_keys = fragments.keys().filter(|key| !data.private.contains_key(*key)).count();
            let replaced: usize = fragments.keys().filter_map(|key| data.private.get(key)).map(String::len).sum();
            let incoming: usize = fragments.values().sum();
            let held: usize = data.private.values().map(String::len).sum();
            if data.private.len() + new_keys > confab_core::limits::PRIVATE_ITEMS_MAX
                || held.saturating_sub(replaced) + incoming > confab_core::limits::PRIVATE_BYTES_MAX
                || data.stored_bytes().saturating_sub(replaced) + incoming > account_bytes
            {
                fx.reply.push(error("resource-constraint"));
                return;
            }
            for child in children {
                if child.namespace == LEGACY_BOOKMARKS_NAMESPACE && child.name == "storage" {
                    legacy_bookmarks_set(shard, me, &user, child, now_ms, fx);
                    continue;
                }
                let data = shard.users.entry(user.clone()).or_default();
                let key = format!("{} {}", child.namespace, child.name);
                let xml = child.to_xml();
                fx.undo.push(before(data, &user, ItemKind::Private, &key));
                fx.records.push(Record::ItemPut {
                    user: user.clone(),
                    kind: ItemKind::Private,
                    key: key.clone(),
                    value: xml.clone().into_bytes(),
                });
                data.private.insert(key, xml);
            }
            fx.reply.push(result(None));
        }
        ("get", "vCard", VCARD_NAMESPACE) => {
            let stored = shard.users.get(&user).and_then(|d| d.vcard.as_deref()).and_then(parse_fragment);
            fx.reply.push(result(Some(&stored.unwrap_or_else(|| Element::new("vCard", VCARD_NAMESPACE)))));
        }
        ("set", "vCard", VCARD_NAMESPACE) => {
            let xml = payload.to_xml();
            let account_bytes = shard.shared.config.limits.account_bytes;
            let data = shard.users.entry(user.clone()).or_default();
            if data.stored_bytes().saturating_sub(data.vcard.as_ref().map_or(0, String::len)) + xml.len() > account_bytes {
                // limits.account_bytes: the account keeps what it has.
                fx.reply.push(error("resource-constraint"));
                return;
            }
            fx.undo.push(before(data, &user, ItemKind::Vcard, ""));
            fx.records.push(Record::ItemPut {
                user: user.clone(),
                kind: ItemKind::Vcard,
                key: String::new(),
                value: xml.clone().into_bytes(),
            });
            data.vcard = Some(xml);
            fx.reply.push(result(None));
        }
        ("set", "enable" | "disable", CARBONS_NAMESPACE) => match carbons::parse_toggle(payload) {
            // XEP-0280 §4: per session.
            Some(enabled) => {
                if let Some(session) = shard.session_mut(me) {
                    session.carbons = enabled;
                }
                fx.reply.push(result(None));
            }
            None => fx.reply.push(error("bad-request")),
        },
        ("get", "query", MAM_NAMESPACE) => fx.reply.push(archive::fields_iq(id, me.as_str())),
        ("set", "query", MAM_NAMESPACE) => match archive::parse_query(payload) {
            Ok(query) => fx.archive_query = Some(ArchiveRequest { user, requester: me.as_str().to_owned(), id: id.to_owned(), query }),
            Err((condition, text)) => {
                tracing::debug!(%text, "bad archive query");
                fx.reply.push(error(condition));
            }
        },
        ("get", "prefs", MAM_NAMESPACE) => {
            let prefs = shard.users.get(&user).map(|d| d.preferences.clone()).unwrap_or_default();
            fx.reply.push(result(Some(&archive::prefs_element(&prefs))));
        }
        ("set", "prefs", MAM_NAMESPACE) => match archive::parse_prefs(payload) {
            Ok(prefs) => {
                let data = shard.users.entry(user.clone()).or_default();
                fx.undo.push(before(data, &user, ItemKind::ArchivePreferences, ""));
                fx.records.push(Record::ItemPut { user, kind: ItemKind::ArchivePreferences, key: String::new(), value: prefs.encode() });
                fx.reply.push(result(Some(&archive::prefs_element(&prefs))));
                data.preferences = prefs;
            }
            Err(condition) => fx.reply.push(error(condition)),
        },
        ("get", "query", routing::DISCO_INFO_NAMESPACE) if payload.attribute("node").is_none() => {
            fx.reply.push(account_disco(id, reply_from.as_deref(), me.as_str()));
        }
        ("get", "query", routing::DISCO_ITEMS_NAMESPACE) if payload.attribute("node").is_none() => {
            let access = pep::Requester { owner: true, presence_subscribed: true, groups: &[] };
            let items = pep_node_items(&bare, shard.users.get(&user), &access);
            fx.reply.push(result(Some(&items)));
        }
        ("get" | "set", "pubsub", PUBSUB_NAMESPACE | PUBSUB_OWNER_NAMESPACE) => {
            pep_request(shard, me, &user, stanza_type, id, payload, now_ms, fx)
        }
        ("get", "query", REGISTER_NAMESPACE) if shard.shared.config.registration.enabled => {
            // XEP-0077 §3.2: already registered.
            let query = Element::new("query", REGISTER_NAMESPACE)
                .with_child(Element::new("registered", REGISTER_NAMESPACE))
                .with_child(Element::new("username", REGISTER_NAMESPACE).with_text(&user))
                .with_child(Element::new("password", REGISTER_NAMESPACE));
            fx.reply.push(result(Some(&query)));
        }
        ("set", "query", REGISTER_NAMESPACE) if shard.shared.config.registration.enabled => {
            if payload.child("remove", REGISTER_NAMESPACE).is_some() {
                fx.account_change = Some((id.to_owned(), AccountChange::Remove));
                return;
            }
            // §3.3: a password change names the account's own user.
            let username = payload.child("username", REGISTER_NAMESPACE).map(Element::text).unwrap_or_default();
            let password = payload.child("password", REGISTER_NAMESPACE).map(Element::text).unwrap_or_default();
            if confab_core::jid::prepare_local(&username).ok().as_deref() != Some(user.as_str()) {
                fx.reply.push(error("bad-request"));
            } else if password.is_empty() {
                fx.reply.push(error("not-acceptable"));
            } else {
                fx.account_change = Some((id.to_owned(), AccountChange::Password(password)));
            }
        }
        ("get", "query", LAST_NAMESPACE) => {
            // XEP-0012 §4, asking one's own account: as a contact would see it.
            let (seconds, status) = last_seen(shard, &bare, now_ms).unwrap_or_default();
            let mut query = Element::new("query", LAST_NAMESPACE).with_attribute("seconds", &seconds.to_string());
            if !status.is_empty() {
                query = query.with_text(&status);
            }
            fx.reply.push(result(Some(&query)));
        }
        _ if !addressed => fx.reply.push(server_iq(shard, stanza_type, id, Some(payload), me.as_str(), now_ms)),
        _ => fx.reply.push(routing::server_iq(stanza_type, id, Some(payload), reply_from.as_deref(), me.as_str(), Some(bare.as_str()))),
    }
}

/// XEP-0012 §4: seconds since the account was last available and the status text it left
/// with: 0 while a resource is available; else since the latest unavailable presence of a
/// session still connected; else since the last logout (stored). None: never seen.
fn last_seen(shard: &Shard, account: &BareJid, now_ms: u64) -> Option<(u64, String)> {
    let sessions = shard.sessions.get(account);
    if sessions.is_some_and(|s| s.iter().any(|s| s.available)) {
        return Some((0, String::new()));
    }
    let latest = sessions.and_then(|s| s.iter().filter_map(|s| Some((s.unavailable_at_ms?, s))).max_by_key(|(at, _)| *at));
    if let Some((at, session)) = latest {
        return Some((now_ms.saturating_sub(at) / 1000, session.leaving_status.as_deref().unwrap_or_default().to_owned()));
    }
    let (stamp, status) = account.local().and_then(|user| shard.users.get(user)).and_then(|d| d.last_activity.clone())?;
    Some((now_ms.saturating_sub(stamp) / 1000, status))
}

/// Whether an iq set with this payload to the user's own account changes stored state.
fn writes_own_state(payload: &Element) -> bool {
    matches!(
        payload.namespace.as_str(),
        ROSTER_NAMESPACE
            | BLOCKING_NAMESPACE
            | PRIVATE_NAMESPACE
            | VCARD_NAMESPACE
            | PUBSUB_NAMESPACE
            | PUBSUB_OWNER_NAMESPACE
            | REGISTER_NAMESPACE
    ) || (payload.namespace == MAM_NAMESPACE && payload.name == "prefs")
}

/// XEP-0060 §5.2 on the account's PEP service: the nodes the requester may access (XEP-0163
/// §7: PEP nodes are discovered on the bare JID).
fn pep_node_items(owner: &BareJid, data: Option<&UserData>, requester: &pep::Requester<'_>) -> Element {
    let mut query = Element::new("query", routing::DISCO_ITEMS_NAMESPACE);
    for (name, node) in data.map(|d| &d.pep).into_iter().flatten() {
        if pep::check_access(&node.config, requester).is_ok() {
            query = query.with_child(
                Element::new("item", routing::DISCO_ITEMS_NAMESPACE).with_attribute("jid", owner.as_str()).with_attribute("node", name),
            );
        }
    }
    query
}

fn account_disco(id: &str, from: Option<&str>, to: &str) -> Vec<u8> {
    // XEP-0163 §6.1: the account is also a PEP service.
    let mut query = Element::new("query", routing::DISCO_INFO_NAMESPACE)
        .with_child(
            Element::new("identity", routing::DISCO_INFO_NAMESPACE)
                .with_attribute("category", "account")
                .with_attribute("type", "registered"),
        )
        .with_child(
            Element::new("identity", routing::DISCO_INFO_NAMESPACE).with_attribute("category", "pubsub").with_attribute("type", "pep"),
        );
    for feature in ACCOUNT_FEATURES.iter().chain(pep::PEP_FEATURES).chain([&pep::BOOKMARKS2_COMPAT_FEATURE]) {
        query = query.with_child(Element::new("feature", routing::DISCO_INFO_NAMESPACE).with_attribute("var", feature));
    }
    iq_result(id, from, to, Some(&query))
}

fn parse_fragment(xml: &str) -> Option<Element> {
    // Stored fragments were serialised by Element::to_xml with their namespace declared on
    // the root, so parsing them needs no stream context.
    parse_element(xml.as_bytes()).ok()
}

/// RFC 6121 §2.3–2.5: roster set (add, update, remove).
fn roster_set(shard: &mut Shard, me: &FullJid, user: &str, id: &str, query: &Element, fx: &mut Effects) {
    let account_bytes = shard.shared.config.limits.account_bytes;
    let bare = me.bare();
    let error = |condition: &str| error_reply(StanzaKind::Iq, Some(id), None, Some(me.as_str()), condition);
    let roster_max = shard.shared.config.limits.roster_items;
    let set = match roster::parse_roster_set(query) {
        Ok(set) => set,
        Err(condition) => {
            fx.reply.push(error(condition));
            return;
        }
    };
    let data = shard.users.entry(user.to_owned()).or_default();
    let (contact, element, removed) = match set {
        RosterSet::Update { jid, name, groups } => {
            let existing = data.roster.get(jid.as_str()).cloned();
            let adding = jid.as_str().len() + name.as_ref().map_or(0, String::len) + groups.iter().map(String::len).sum::<usize>();
            if existing.is_none() && data.roster.len() >= roster_max || data.stored_bytes() + adding > account_bytes {
                fx.reply.push(error("resource-constraint"));
                return;
            }
            fx.undo.push(before(data, user, ItemKind::Roster, jid.as_str()));
            let mut item = existing.unwrap_or_else(|| RosterItem::new(jid.as_str()));
            item.name = name;
            item.groups = groups;
            item.hidden = false;
            let element = item.to_element();
            fx.records.push(Record::ItemPut {
                user: user.to_owned(),
                kind: ItemKind::Roster,
                key: jid.as_str().to_owned(),
                value: item.encode(),
            });
            data.roster.insert(jid.as_str().to_owned(), item);
            (jid, element, None)
        }
        RosterSet::Remove { jid } => {
            // §2.5.3: removing an item that is not there.
            let Some(item) = data.roster.get(jid.as_str()).filter(|i| !i.hidden).cloned() else {
                fx.reply.push(error("item-not-found"));
                return;
            };
            fx.undo.push(before(data, user, ItemKind::Roster, jid.as_str()));
            data.roster.remove(jid.as_str());
            fx.records.push(Record::ItemDelete { user: user.to_owned(), kind: ItemKind::Roster, key: jid.as_str().to_owned() });
            (jid.clone(), roster::removed_item_element(jid.as_str()), Some(item))
        }
    };
    fx.undo.push(before(data, user, ItemKind::RosterVersion, ""));
    data.roster_version += 1;
    let version = data.roster_version;
    fx.records.push(Record::ItemPut {
        user: user.to_owned(),
        kind: ItemKind::RosterVersion,
        key: String::new(),
        value: version.to_le_bytes().to_vec(),
    });
    fx.reply.push(iq_result(id, None, me.as_str(), None));
    push_roster(shard, &bare, version, &element);
    if let Some(item) = removed {
        // §2.5.2: the contact learns the subscriptions are gone, and stops seeing us.
        let had_from = matches!(item.subscription, Subscription::From | Subscription::Both);
        for kind in roster::removal_stanzas(&item) {
            let bytes = presence_bytes(kind.as_type(), bare.as_str(), contact.as_str());
            fx.envelopes.push(presence_envelope(Jid::Bare(contact.clone()), Jid::Bare(bare.clone()), Some(kind.as_type()), bytes));
        }
        if had_from {
            send_unavailable(shard, &bare, &contact, fx);
        }
    }
}

/// XEP-0191 §3.2–3.4.
fn blocking_request(shard: &mut Shard, me: &FullJid, user: &str, id: &str, request: BlockingRequest, fx: &mut Effects) {
    let account_bytes = shard.shared.config.limits.account_bytes;
    let bare = me.bare();
    let data = shard.users.entry(user.to_owned()).or_default();
    let (block, jids) = match request {
        BlockingRequest::List => {
            let list = blocking::blocklist_element(data.blocklist.iter().map(String::as_str));
            fx.reply.push(iq_result(id, None, me.as_str(), Some(&list)));
            if let Some(session) = shard.session_mut(me) {
                session.blocklist_interested = true;
            }
            return;
        }
        BlockingRequest::Block(jids) => {
            let new: Vec<String> = jids.into_iter().filter(|j| !data.blocklist.contains(j)).collect();
            let adding: usize = new.iter().map(String::len).sum();
            if data.blocklist.len() + new.len() > blocking::BLOCKLIST_ITEMS_MAX || data.stored_bytes() + adding > account_bytes {
                fx.reply.push(error_reply(StanzaKind::Iq, Some(id), None, Some(me.as_str()), "resource-constraint"));
                return;
            }
            for jid in &new {
                fx.undo.push(before(data, user, ItemKind::Block, jid));
                data.blocklist.insert(jid.clone());
                fx.records.push(Record::ItemPut { user: user.to_owned(), kind: ItemKind::Block, key: jid.clone(), value: Vec::new() });
            }
            (true, new)
        }
        BlockingRequest::Unblock(jids) => {
            let gone: Vec<String> = if jids.is_empty() {
                data.blocklist.iter().cloned().collect()
            } else {
                jids.into_iter().filter(|j| data.blocklist.contains(j)).collect()
            };
            for jid in &gone {
                fx.undo.push(before(data, user, ItemKind::Block, jid));
                data.blocklist.remove(jid);
                fx.records.push(Record::ItemDelete { user: user.to_owned(), kind: ItemKind::Block, key: jid.clone() });
            }
            (false, gone)
        }
    };
    fx.reply.push(iq_result(id, None, me.as_str(), None));
    if jids.is_empty() {
        return;
    }
    // §3.3 / §3.4: the change is pushed to every resource that asked for the list.
    if let Some(sessions) = shard.sessions.get(&bare) {
        for session in sessions.iter().filter(|s| s.blocklist_interested) {
            let to = format!("{}/{}", bare.as_str(), session.resource);
            offer_or_count(
                shard,
                &session.sender,
                SessionMessage::Stanza(blocking::push_iq(&token(), &to, block, &jids)),
                Counter::PushInboxFull,
            );
        }
    }
    // §3.3: blocked contacts that could see us (subscribers, or sent directed presence)
    // stop seeing us; unblocked subscribers see us again. Nobody else learns anything.
    let subscribers: BTreeSet<String> = shard
        .users
        .get(user)
        .map(|d| {
            d.roster.values().filter(|i| matches!(i.subscription, Subscription::From | Subscription::Both)).map(|i| i.jid.clone()).collect()
        })
        .unwrap_or_default();
    for jid in &jids {
        let Ok(Jid::Bare(contact)) = Jid::parse(jid) else { continue };
        if block {
            let mut directed = false;
            if let Some(sessions) = shard.sessions.get_mut(&bare) {
                for session in sessions.iter_mut() {
                    let before = session.directed.len();
                    session.directed.retain(|entity| entity.bare() != contact);
                    directed |= session.directed.len() != before;
                }
            }
            if directed || subscribers.contains(contact.as_str()) {
                send_unavailable(shard, &bare, &contact, fx);
            }
        } else if subscribers.contains(contact.as_str()) {
            send_current_presence(shard, &bare, &contact, fx);
        }
    }
}

/// The admin API's add_rosteritem: sets the item (with its subscription) as given, pushes it
/// to the user's interested resources and returns the records to store.
pub fn admin_roster_put(shard: &mut Shard, user: &str, item: RosterItem) -> (Vec<Record>, Vec<Undo>) {
    let mut fx = Effects::default();
    let data = shard.users.entry(user.to_owned()).or_default();
    let contact = item.jid.clone();
    if let Some(element) = apply_roster_effect(data, user, &contact, Some(item), true, &mut fx) {
        let version = data.roster_version;
        if let Ok(bare) = BareJid::new(Some(user), &shard.shared.config.domain) {
            push_roster(shard, &bare, version, &element);
        }
    }
    (fx.records, fx.undo)
}

/// XEP-0163 / XEP-0060 requests of the owner on its own PEP service.
#[allow(clippy::too_many_arguments)]
fn pep_request(shard: &mut Shard, me: &FullJid, user: &str, stanza_type: &str, id: &str, payload: &Element, now_ms: u64, fx: &mut Effects) {
    let account_bytes = shard.shared.config.limits.account_bytes;
    let owner = me.bare();
    let fail = |error: PubsubError| pep::error_iq(id, None, me.as_str(), &error);
    let request = match pep::parse_request(stanza_type, payload) {
        Ok(request) => request,
        Err(error) => return fx.reply.push(fail(error)),
    };
    let data = shard.users.entry(user.to_owned()).or_default();
    // Every request that changes a node changes only that one: its undo is the node as it is.
    if let Some(node) = request.changed_node() {
        fx.undo.push(before(data, user, ItemKind::PepNode, node));
    }
    match request {
        PubsubRequest::Publish { node, item_id, payload, options } => {
            let created = !data.pep.contains_key(&node);
            if created {
                // XEP-0163 §3 auto-create, with publish-options as its configuration (§7.1.5).
                if data.pep.len() >= pep::PEP_NODES_PER_USER_MAX {
                    return fx.reply.push(fail(PubsubError::max_nodes_exceeded()));
                }
                match pep::publish_options_config(&options) {
                    Ok(config) => {
                        data.pep.insert(node.clone(), pep::Node::new(&node, config));
                    }
                    Err(error) => return fx.reply.push(fail(error)),
                }
            } else if !options.is_empty() && !data.pep.get(&node).is_some_and(|n| pep::options_match(&n.config, &options)) {
                return fx.reply.push(fail(PubsubError::precondition_not_met()));
            }
            let payload_bytes = payload.to_xml().len();
            let total: usize = data.pep.values().flat_map(|n| n.items.iter()).map(|i| i.payload.len()).sum();
            if total + payload_bytes > confab_core::limits::PEP_USER_BYTES_MAX || data.stored_bytes() + payload_bytes > account_bytes {
                if created {
                    data.pep.remove(&node);
                }
                return fx.reply.push(fail(PubsubError::with_app("not-acceptable", "payload-too-big")));
            }
            let Some(stored) = data.pep.get_mut(&node) else { return };
            let item = pep::publish(stored, item_id.unwrap_or_else(token), &payload, now_ms);
            let config = stored.config.clone();
            fx.records.push(node_record(user, stored));
            fx.reply.push(pep::publish_result(id, me.as_str(), &node, &item.id));
            notify_node(shard, &owner, &node, &config, |to| pep::event_message(owner.as_str(), to, &node, std::slice::from_ref(&item)), fx);
        }
        PubsubRequest::Retract { node, item_ids, notify } => {
            let Some(stored) = data.pep.get_mut(&node) else { return fx.reply.push(fail(PubsubError::not_found())) };
            if let Err(error) = pep::retract(stored, &item_ids) {
                return fx.reply.push(fail(error));
            }
            let config = stored.config.clone();
            fx.records.push(node_record(user, stored));
            fx.reply.push(iq_result(id, None, me.as_str(), None));
            if notify {
                notify_node(shard, &owner, &node, &config, |to| pep::retract_event(owner.as_str(), to, &node, &item_ids), fx);
            }
        }
        PubsubRequest::Items { node, max_items, item_ids } => match data.pep.get(&node) {
            Some(stored) => {
                fx.reply.push(pep::items_result(id, None, me.as_str(), &node, &pep::select_items(stored, max_items, &item_ids)))
            }
            None => fx.reply.push(fail(PubsubError::not_found())),
        },
        PubsubRequest::Delete { node } => {
            let Some(stored) = data.pep.remove(&node) else { return fx.reply.push(fail(PubsubError::not_found())) };
            fx.records.push(Record::ItemDelete { user: user.to_owned(), kind: ItemKind::PepNode, key: node.clone() });
            fx.reply.push(iq_result(id, None, me.as_str(), None));
            notify_node(shard, &owner, &node, &stored.config, |to| pep::delete_event(owner.as_str(), to, &node), fx);
        }
        PubsubRequest::Purge { node } => {
            let Some(stored) = data.pep.get_mut(&node) else { return fx.reply.push(fail(PubsubError::not_found())) };
            stored.items.clear();
            let config = stored.config.clone();
            fx.records.push(node_record(user, stored));
            fx.reply.push(iq_result(id, None, me.as_str(), None));
            notify_node(shard, &owner, &node, &config, |to| pep::purge_event(owner.as_str(), to, &node), fx);
        }
        PubsubRequest::Create { node, config: fields } => {
            if data.pep.contains_key(&node) {
                return fx.reply.push(fail(PubsubError::node_exists()));
            }
            if data.pep.len() >= pep::PEP_NODES_PER_USER_MAX {
                return fx.reply.push(fail(PubsubError::max_nodes_exceeded()));
            }
            let mut config = pep::NodeConfig::default();
            if let Err(error) = pep::configure(&mut config, &fields) {
                return fx.reply.push(fail(error));
            }
            let created = pep::Node::new(&node, config);
            fx.records.push(node_record(user, &created));
            data.pep.insert(node, created);
            fx.reply.push(iq_result(id, None, me.as_str(), None));
        }
        PubsubRequest::ConfigureGet { node } => match data.pep.get(&node) {
            Some(stored) => fx.reply.push(pep::config_form_result(id, me.as_str(), &node, &stored.config)),
            None => fx.reply.push(fail(PubsubError::not_found())),
        },
        PubsubRequest::ConfigureSet { node, config: fields } => {
            let Some(stored) = data.pep.get_mut(&node) else { return fx.reply.push(fail(PubsubError::not_found())) };
            if let Err(error) = pep::configure(&mut stored.config, &fields) {
                return fx.reply.push(fail(error));
            }
            pep::trim(stored);
            fx.records.push(node_record(user, stored));
            fx.reply.push(iq_result(id, None, me.as_str(), None));
        }
    }
}

/// The record that stores a node; a node that does not persist items is stored without them
/// (XEP-0060 §4.3: its items live in memory only).
fn node_record(user: &str, node: &pep::Node) -> Record {
    let value = if node.config.persist_items {
        node.encode()
    } else {
        pep::Node { name: node.name.clone(), config: node.config.clone(), items: Vec::new() }.encode()
    };
    Record::ItemPut { user: user.to_owned(), kind: ItemKind::PepNode, key: node.name.clone(), value }
}

/// XEP-0163 §4.3.1: an event goes to the owner's interested resources and to every contact
/// allowed by the access model (presence subscribers), whose shard hands it to the sessions
/// that announced `node+notify`.
fn notify_node(shard: &Shard, owner: &BareJid, node: &str, config: &pep::NodeConfig, build: impl Fn(&str) -> Vec<u8>, fx: &mut Effects) {
    if let Some(sessions) = shard.sessions.get(owner) {
        for session in sessions.iter().filter(|s| s.available && s.notify.iter().any(|n| n == node)) {
            let full = format!("{}/{}", owner.as_str(), session.resource);
            offer_or_count(shard, &session.sender, SessionMessage::Stanza(build(&full)), Counter::PepInboxFull);
        }
    }
    let Some(data) = owner.local().and_then(|user| shard.users.get(user)) else { return };
    let nodes: Arc<[String]> = Arc::from(vec![node.to_owned()]);
    for item in data.roster.values() {
        if !matches!(item.subscription, Subscription::From | Subscription::Both) || data.is_blocked(&item.jid) {
            continue;
        }
        let requester = pep::Requester { owner: false, presence_subscribed: true, groups: &item.groups };
        if pep::check_access(config, &requester).is_err() {
            continue;
        }
        let Ok(contact) = Jid::parse(&item.jid) else { continue };
        fx.envelopes.push(Envelope {
            to: contact,
            from: Jid::Bare(owner.clone()),
            kind: StanzaKind::Message,
            stanza_type: Some("headline".into()),
            id: None,
            bytes: build(&item.jid),
            interest: Some(Interest { nodes: nodes.clone(), session: None, items_only: false }),
        });
    }
}

/// XEP-0402 §5.3 (#compat): XEP-0048 bookmarks written to private storage replace the items of
/// the bookmarks node (configured as XEP-0402 §3 asks) and notify the owner's resources.
fn legacy_bookmarks_set(shard: &mut Shard, me: &FullJid, user: &str, storage: &Element, now_ms: u64, fx: &mut Effects) {
    let owner = me.bare();
    let data = shard.users.entry(user.to_owned()).or_default();
    fx.undo.push(before(data, user, ItemKind::PepNode, BOOKMARKS2_NAMESPACE));
    let config = pep::NodeConfig {
        access_model: pep::AccessModel::Whitelist,
        max_items: pep::PEP_ITEMS_PER_NODE_MAX as u32,
        send_last_published_item: pep::SendLastPublishedItem::Never,
        ..pep::NodeConfig::default()
    };
    let node = data.pep.entry(BOOKMARKS2_NAMESPACE.to_owned()).or_insert_with(|| pep::Node::new(BOOKMARKS2_NAMESPACE, config.clone()));
    // XEP-0402 §3: private and able to hold every bookmark, whatever a client configured
    // before: XEP-0048 storage is private, and room passwords must not reach contacts.
    node.config.access_model = config.access_model;
    node.config.max_items = config.max_items;
    node.items.clear();
    let mut published = Vec::new();
    for (room, conference) in pep::bookmarks_from_legacy(storage) {
        published.push(pep::publish(node, room, &conference, now_ms));
    }
    let config = node.config.clone();
    fx.records.push(node_record(user, node));
    notify_node(
        shard,
        &owner,
        BOOKMARKS2_NAMESPACE,
        &config,
        |to| pep::event_message(owner.as_str(), to, BOOKMARKS2_NAMESPACE, &published),
        fx,
    );
}

/// Runs a XEP-0313 query against the store and returns the result messages and the final iq.
pub async fn run_archive_query(partition: Rc<crate::storage::Partition>, request: ArchiveRequest) -> Vec<Vec<u8>> {
    let ArchiveRequest { user, requester, id, query } = request;
    let query_id = query.query_id.clone();
    match partition.archive_page(&user, query).await {
        Err(error) => {
            tracing::error!(%error, "archive read failed");
            vec![error_reply(StanzaKind::Iq, Some(&id), None, Some(&requester), "internal-server-error")]
        }
        Ok(Err(condition)) => vec![error_reply(StanzaKind::Iq, Some(&id), None, Some(&requester), condition)],
        Ok(Ok(page)) => {
            let mut out = Vec::with_capacity(page.items.len() + 1);
            for item in &page.items {
                out.push(archive::result_message(&requester, query_id.as_deref(), item));
            }
            let page = archive::Page {
                items: page.items.iter().collect(),
                complete: page.complete,
                count: page.count,
                first_index: page.first_index,
            };
            out.push(archive::fin_iq(&id, &requester, &page));
            out
        }
    }
}

/// Stanzas a session was sent but never acknowledged (XEP-0198 §5: the session ended or was
/// not resumed in time) are treated as undelivered: messages with content go to the user's
/// other available resources, else to offline storage, else back to the sender as an error;
/// requests (iq get/set) are answered with an error. Never silently dropped. Presence,
/// carbons, archive results and notifications are stale and dropped. Returns the errors to
/// route.
pub fn redeliver(shard: &mut Shard, user: &BareJid, stanzas: Vec<Vec<u8>>) -> Vec<Envelope> {
    let mut records = Vec::new();
    let mut undo = Vec::new();
    let mut bounces = Vec::new();
    let name = user.local().unwrap_or_default().to_owned();
    let exists = shard.accounts.contains_key(&name);
    let offline_max = shard.shared.config.limits.offline_messages;
    let account_bytes = shard.shared.config.limits.account_bytes;
    for bytes in stanzas {
        let kind = if bytes.starts_with(b"<message") {
            StanzaKind::Message
        } else if bytes.starts_with(b"<iq") {
            StanzaKind::Iq
        } else {
            shard.counters.count(Counter::StaleAfterSessionEnd);
            continue;
        };
        let Ok(element) = parse_element(&bytes) else { continue };
        let bounce = |condition| {
            let (Some(from), Some(to)) =
                (element.attribute("from").and_then(|f| Jid::parse(f).ok()), element.attribute("to").and_then(|t| Jid::parse(t).ok()))
            else {
                return None;
            };
            error_envelope(&to, &from, kind, element.attribute("type"), element.attribute("id"), condition)
        };
        if kind == StanzaKind::Iq {
            if matches!(element.attribute("type"), Some("get") | Some("set")) {
                bounces.extend(bounce("service-unavailable"));
            } else {
                shard.counters.count(Counter::StaleAfterSessionEnd);
            }
            continue;
        }
        if !archive::is_archivable(&element) {
            // Chat states, receipts, carbons, archive results: stale once the session is gone.
            shard.counters.count(Counter::StaleAfterSessionEnd);
            continue;
        }
        if !exists {
            // The account is gone (unregistered meanwhile): nothing may be stored for it.
            bounces.extend(bounce("service-unavailable"));
            continue;
        }
        let views = session_views(shard, user);
        let views: Vec<SessionView<'_>> = views.iter().map(|(r, a, p)| SessionView { resource: r, available: *a, priority: *p }).collect();
        let decision = deliver_to_account(StanzaKind::Message, element.attribute("type"), None, true, &views);
        if let (Delivery::Sessions(indices), Some(sessions)) = (&decision, shard.sessions.get(user)) {
            if indices.iter().filter_map(|i| sessions.get(*i)).any(|s| offer(&s.sender, SessionMessage::Stanza(bytes.clone()))) {
                continue;
            }
        }
        if !shard.partition.is_writable() {
            // The store cannot write: the sender is told, rather than the message kept in
            // memory alone.
            bounces.extend(bounce("resource-constraint"));
            continue;
        }
        let data = shard.users.entry(name.clone()).or_default();
        if !offline_has_room(data, bytes.len(), offline_max, account_bytes) {
            bounces.extend(bounce("service-unavailable"));
            continue;
        }
        // Stamped already when it came from offline storage: kept as it is.
        let stamped = element.child("delay", confab_core::time::DELAY_NAMESPACE).is_some();
        store_offline(shard, &name, &bytes, stamped, &mut records, &mut undo);
    }
    store(shard, records, undo);
    bounces
}

// ---------------------------------------------------------------------------------------
// Stanzas arriving for a user homed here.
// ---------------------------------------------------------------------------------------

/// Delivers an envelope to a local user (RFC 6121 §8.5 with the IM services above). Returns
/// replies to route; state changes go to the partition in call order.
pub fn deliver(shard: &mut Shard, envelope: Envelope) -> Outgoing {
    let mut fx = Effects::default();
    let to_bare = envelope.to.bare();
    let user = to_bare.local().unwrap_or_default().to_owned();
    let exists = shard.accounts.contains_key(&user);
    let mut replies = Vec::new();
    // XEP-0191 §5: a user's own resources are never blocked from each other.
    let own = envelope.from.bare() == to_bare;
    let blocked = exists && !own && shard.users.get(&user).is_some_and(|data| data.is_blocked(envelope.from.as_str()));
    if blocked {
        // XEP-0191 §3.5: presence is dropped; messages and requests bounce.
        let answer = matches!(envelope.kind, StanzaKind::Message)
            || (envelope.kind == StanzaKind::Iq && matches!(envelope.stanza_type.as_deref(), Some("get") | Some("set")));
        if answer {
            replies.extend(bounce(&envelope, "service-unavailable"));
        }
        return replies;
    }
    match envelope.kind {
        StanzaKind::Presence => deliver_presence(shard, envelope, exists, &mut fx, &mut replies),
        StanzaKind::Message => deliver_message(shard, envelope, exists, &mut fx, &mut replies),
        StanzaKind::Iq => deliver_iq(shard, envelope, exists, &mut replies),
    }
    store(shard, fx.records, fx.undo);
    replies.extend(fx.envelopes);
    replies
}

pub(crate) fn bounce(envelope: &Envelope, condition: &'static str) -> Option<Envelope> {
    error_envelope(&envelope.to, &envelope.from, envelope.kind, envelope.stanza_type.as_deref(), envelope.id.as_deref(), condition)
}

/// Hands records to the partition without waiting (the inbox loop cannot), with what puts
/// memory back should they fail.
pub fn store(shard: &Shard, records: Vec<Record>, undo: Vec<Undo>) {
    if !records.is_empty() {
        drop(shard.partition.submit(records, undo));
    }
}

/// Puts memory back after changes that could not be stored (the partition's failure hook):
/// items as they were, and each message taken in for offline storage bounced to its sender
/// (RFC 6120 §8.3.3.18 resource-constraint: the server could not keep it).
pub fn undo(shard: &ShardRef, undo: Vec<Undo>) {
    let mut bounces = Vec::new();
    {
        let mut state = shard.borrow_mut();
        for change in undo {
            match change {
                Undo::Item { user, kind, key, value } => {
                    if let Some(data) = state.users.get_mut(&user) {
                        if let Err(error) = data.restore(kind, &key, value.as_deref()) {
                            tracing::error!(%user, ?kind, %key, %error, "could not put a failed change back");
                        }
                    }
                }
                Undo::Offline { bytes } => {
                    let Ok(element) = parse_element(&bytes) else { continue };
                    let (Some(Ok(from)), Some(Ok(to))) =
                        (element.attribute("from").map(Jid::parse), element.attribute("to").map(Jid::parse))
                    else {
                        continue;
                    };
                    bounces.extend(error_envelope(
                        &to,
                        &from,
                        StanzaKind::Message,
                        element.attribute("type"),
                        element.attribute("id"),
                        "resource-constraint",
                    ));
                }
                Undo::Room(snapshot) => crate::muc::restore(&mut state, *snapshot),
            }
        }
    }
    for envelope in bounces {
        crate::shard::dispatch_now(shard, envelope);
    }
}

fn session_views(shard: &Shard, user: &BareJid) -> Vec<(String, bool, i8)> {
    shard.sessions.get(user).map(|s| s.iter().map(|s| (s.resource.clone(), s.available, s.priority)).collect()).unwrap_or_default()
}

fn verdict(shard: &Shard, envelope: &Envelope, exists: bool) -> Delivery {
    let views = session_views(shard, &envelope.to.bare());
    let views: Vec<SessionView<'_>> = views.iter().map(|(r, a, p)| SessionView { resource: r, available: *a, priority: *p }).collect();
    deliver_to_account(envelope.kind, envelope.stanza_type.as_deref(), envelope.to.resource(), exists, &views)
}

/// Offers bytes to the sessions at `indices`; the first refusal bounces the stanza.
fn to_sessions(shard: &Shard, envelope: &Envelope, indices: &[usize], bytes: &[u8], replies: &mut Vec<Envelope>) {
    let Some(sessions) = shard.sessions.get(&envelope.to.bare()) else { return };
    let mut accepted = false;
    let mut refused = 0;
    for index in indices {
        let Some(session) = sessions.get(*index) else { continue };
        if offer(&session.sender, SessionMessage::Stanza(bytes.to_vec())) {
            accepted = true;
        } else {
            refused += 1;
        }
    }
    if accepted {
        // Another of the user's sessions took it.
        for _ in 0..refused {
            shard.counters.count(Counter::SessionInboxFull);
        }
    }
    if !accepted && !indices.is_empty() {
        // RFC 6120 §8.3.3.18: no recipient session can take more right now.
        replies.extend(bounce(envelope, "resource-constraint"));
    }
}

fn deliver_presence(shard: &mut Shard, envelope: Envelope, exists: bool, fx: &mut Effects, replies: &mut Vec<Envelope>) {
    let stanza_type = envelope.stanza_type.as_deref();
    let to_bare = envelope.to.bare();
    let user = to_bare.local().unwrap_or_default().to_owned();
    let contact = envelope.from.bare();
    if let Some(kind) = stanza_type.and_then(SubscriptionStanza::from_type) {
        if !exists {
            // RFC 6121 §3.1.3: a request for an account that does not exist is refused.
            if kind == SubscriptionStanza::Subscribe {
                let bytes = presence_bytes("unsubscribed", to_bare.as_str(), contact.as_str());
                replies.push(presence_envelope(Jid::Bare(contact), Jid::Bare(to_bare), Some("unsubscribed"), bytes));
            }
            return;
        }
        inbound_subscription(shard, &user, &to_bare, &contact, kind, envelope, fx);
        return;
    }
    if stanza_type == Some("probe") {
        // RFC 6121 §4.3.2: answered by the server, only to subscribers.
        if !exists || envelope.to.resource().is_some() {
            return;
        }
        let subscribed =
            shard.users.get(&user).is_some_and(|d| matches!(d.subscription(contact.as_str()), Subscription::From | Subscription::Both));
        if !subscribed {
            // §4.3.2: no presence for a non-subscriber; `unsubscribed` lets its server put its
            // roster right (a subscription state that diverged).
            let bytes = presence_bytes("unsubscribed", to_bare.as_str(), contact.as_str());
            replies.push(presence_envelope(Jid::Bare(contact), Jid::Bare(to_bare), Some("unsubscribed"), bytes));
            return;
        }
        let items_only = envelope.interest.as_ref().is_some_and(|i| i.items_only);
        let online = shard.sessions.get(&to_bare).is_some_and(|s| s.iter().any(|s| s.available));
        if !items_only && online {
            send_current_presence(shard, &to_bare, &contact, fx);
        } else if !items_only {
            // §4.3.2: no available resource: the last unavailable presence, stamped with when
            // it happened (XEP-0203), so the subscriber can show "last seen".
            if let Some((stamp, status)) = shard.users.get(&user).and_then(|d| d.last_activity.clone()) {
                let mut presence = Element::new("presence", confab_core::stream::CLIENT_NAMESPACE)
                    .with_attribute("type", "unavailable")
                    .with_attribute("from", to_bare.as_str())
                    .with_attribute("to", contact.as_str());
                if !status.is_empty() {
                    presence = presence.with_child(Element::new("status", confab_core::stream::CLIENT_NAMESPACE).with_text(&status));
                }
                presence = presence.with_child(confab_core::time::delay_element(to_bare.as_str(), stamp, None));
                let bytes = presence.to_xml().into_bytes();
                fx.envelopes.push(presence_envelope(Jid::Bare(contact.clone()), Jid::Bare(to_bare.clone()), Some("unavailable"), bytes));
            }
        }
        if let Some(interest) = &envelope.interest {
            send_last_items(shard, &to_bare, &contact, interest, fx);
        }
        return;
    }
    if let Delivery::Sessions(indices) = verdict(shard, &envelope, exists) {
        to_sessions(shard, &envelope, &indices, &envelope.bytes, replies);
    }
}

/// RFC 6121 §3.1.3, §3.1.6, §3.2.3, §3.3.3: a contact's subscription stanza arrives.
fn inbound_subscription(
    shard: &mut Shard,
    user: &str,
    to_bare: &BareJid,
    contact: &BareJid,
    kind: SubscriptionStanza,
    envelope: Envelope,
    fx: &mut Effects,
) {
    let roster_max = shard.shared.config.limits.roster_items;
    let account_bytes = shard.shared.config.limits.account_bytes;
    if !shard.partition.is_writable() {
        // The contact's side cannot be recorded: its sender is told (RFC 6120 §8.3.3.18).
        fx.envelopes.extend(bounce(&envelope, "resource-constraint"));
        return;
    }
    let data = shard.users.entry(user.to_owned()).or_default();
    let current = data.roster.get(contact.as_str());
    if current.is_none() && data.roster.len() >= roster_max {
        // The user's roster is full (`limits.roster_items`): the contact is told.
        fx.envelopes.extend(bounce(&envelope, "resource-constraint"));
        return;
    }
    let effect = roster::inbound(current, contact.as_str(), kind);
    let noted = kind == SubscriptionStanza::Subscribe && effect.deliver;
    let visible = apply_roster_effect(data, user, contact.as_str(), effect.item, effect.changed, fx);
    let version = data.roster_version;
    if noted {
        // §3.1.3: the request waits, with what it carried, for the user's next login.
        let children = parse_element(&envelope.bytes).map(|e| e.elements().map(Element::to_xml).collect::<String>()).unwrap_or_default();
        // Within the request bound and the account's byte budget; past either, the request
        // still waits, without its children.
        let fits = children.len() <= confab_core::limits::SUBSCRIPTION_REQUEST_BYTES_MAX
            && data.stored_bytes() + contact.as_str().len() + children.len() <= account_bytes;
        if !children.is_empty() && fits {
            fx.undo.push(before(data, user, ItemKind::SubscriptionRequest, contact.as_str()));
            data.subscription_requests.insert(contact.as_str().to_owned(), children.clone());
            fx.records.push(Record::ItemPut {
                user: user.to_owned(),
                kind: ItemKind::SubscriptionRequest,
                key: contact.as_str().to_owned(),
                value: children.into_bytes(),
            });
        }
    }
    // §3.1.6: the approval is delivered, then the roster push says what it changed (the
    // order of §3.1.6's steps and of its examples).
    if effect.deliver {
        // To every available resource; a subscribe request with none available waits as
        // pending-in state and is delivered at the next initial presence.
        deliver_to_own_available(shard, to_bare, &envelope.bytes);
    }
    if let Some(element) = visible {
        push_roster(shard, to_bare, version, &element);
    }
    if let Some(reply) = effect.auto_reply {
        let bytes = presence_bytes(reply.as_type(), to_bare.as_str(), contact.as_str());
        fx.envelopes.push(presence_envelope(Jid::Bare(contact.clone()), Jid::Bare(to_bare.clone()), Some(reply.as_type()), bytes));
        if reply == SubscriptionStanza::Subscribed {
            send_current_presence(shard, to_bare, contact, fx);
        }
    }
    if kind == SubscriptionStanza::Unsubscribe && effect.changed {
        // §3.3.3: the former subscriber stops seeing us.
        send_unavailable(shard, to_bare, contact, fx);
    }
}

/// XEP-0163 §4.3.2: the last item of each node the prober's session wants, that the prober may
/// see, to that session (or to the prober's bare JID).
fn send_last_items(shard: &Shard, owner: &BareJid, contact: &BareJid, interest: &Interest, fx: &mut Effects) {
    let Some(data) = owner.local().and_then(|user| shard.users.get(user)) else { return };
    let groups = data.roster.get(contact.as_str()).map(|i| i.groups.as_slice()).unwrap_or_default();
    let requester = pep::Requester { owner: false, presence_subscribed: true, groups };
    let to = interest.session.clone().map(Jid::Full).unwrap_or_else(|| Jid::Bare(contact.clone()));
    for name in interest.nodes.iter() {
        let Some(node) = data.pep.get(name) else { continue };
        if node.config.send_last_published_item == pep::SendLastPublishedItem::Never || pep::check_access(&node.config, &requester).is_err()
        {
            continue;
        }
        if let Some(item) = node.last_item() {
            fx.envelopes.push(Envelope {
                to: to.clone(),
                from: Jid::Bare(owner.clone()),
                kind: StanzaKind::Message,
                stanza_type: Some("headline".into()),
                id: None,
                bytes: pep::last_item_event(owner.as_str(), to.as_str(), name, item),
                interest: None,
            });
        }
    }
}

fn deliver_message(shard: &mut Shard, envelope: Envelope, exists: bool, fx: &mut Effects, replies: &mut Vec<Envelope>) {
    let floor = shard.shared.id_floor;
    let to_bare = envelope.to.bare();
    let user = to_bare.local().unwrap_or_default().to_owned();
    if let Some(interest) = &envelope.interest {
        // A PEP notification (XEP-0163 §4.3.1): only to sessions that asked for the node.
        if let Some(sessions) = shard.sessions.get(&to_bare) {
            for session in sessions.iter().filter(|s| s.available && s.notify.iter().any(|n| interest.nodes.contains(n))) {
                offer_or_count(shard, &session.sender, SessionMessage::Stanza(envelope.bytes.clone()), Counter::PepInboxFull);
            }
        }
        return;
    }
    let decision = verdict(shard, &envelope, exists);
    let offline = matches!(decision, Delivery::Error("service-unavailable")) && exists;
    // XEP-0359 §3: a stanza-id claiming to be ours is removed whatever else happens, so a
    // cheap scan decides whether the message must be parsed for that alone.
    let claims_id = contains(&envelope.bytes, STANZA_ID_NAMESPACE.as_bytes());
    let carbon_copies = shard.sessions.get(&to_bare).is_some_and(|s| s.iter().any(|s| s.carbons && s.available));
    if exists && !carbon_copies && plain_message(envelope.stanza_type.as_deref(), &envelope.bytes) {
        deliver_plain_message(shard, envelope, decision, offline, fx, replies);
        return;
    }
    let interesting = exists && (claims_id || might_be_interesting(envelope.stanza_type.as_deref(), &envelope.bytes));
    if !interesting {
        match decision {
            Delivery::Sessions(indices) => to_sessions(shard, &envelope, &indices, &envelope.bytes, replies),
            Delivery::Error(condition) => replies.extend(bounce(&envelope, condition)),
            Delivery::Ignore | Delivery::Server => {}
        }
        return;
    }
    let Ok(mut element) = parse_element(&envelope.bytes) else { return };
    // XEP-0280 §9: <private/> has done its job once the message reached the recipient's server.
    carbons::remove_private(&mut element);
    element.children.retain(|node| match node {
        Node::Element(child) => {
            !(child.name == "stanza-id" && child.namespace == STANZA_ID_NAMESPACE && child.attribute("by") == Some(to_bare.as_str()))
        }
        Node::Text(_) => true,
    });
    let from_bare = envelope.from.bare();
    let content = archive::is_archivable(&element);
    let archivable = content && from_bare != to_bare;
    let kept = shard.shared.config.limits.archive_messages;
    let offline_max = shard.shared.config.limits.offline_messages;
    let account_bytes = shard.shared.config.limits.account_bytes;
    let writable = shard.partition.is_writable();
    if (archivable || offline) && shard.partition.is_congested() || offline && content && !shard.partition.is_writable() {
        replies.extend(bounce(&envelope, "resource-constraint"));
        return;
    }
    if offline && !content {
        // XEP-0160 §3 stores messages with content; chat states alone are dropped.
        return;
    }
    let data = shard.users.entry(user.clone()).or_default();
    if offline && !offline_has_room(data, envelope.bytes.len(), offline_max, account_bytes) {
        // XEP-0160 §4: storage full.
        replies.extend(bounce(&envelope, "service-unavailable"));
        return;
    }
    let in_roster = data.roster.get(from_bare.as_str()).is_some_and(|i| !i.hidden);
    // While the store cannot write, live chat goes on unarchived (and without a stanza-id
    // that would name nothing).
    let wanted = archivable
        && envelope.bytes.len() + STANZA_ID_BYTES_MAX <= confab_core::limits::ARCHIVED_MESSAGE_BYTES_MAX
        && archive::should_archive(&data.preferences, from_bare.as_str(), in_roster);
    let archive = wanted && writable;
    if wanted && !writable {
        shard.counters.count(Counter::ArchiveSkipped);
    }
    let now = now_ms();
    let id = next_archive_id(data, floor);
    if archive {
        // XEP-0359 §3: our stanza-id, which the archive and the recipient share.
        element.children.push(Node::Element(
            Element::new("stanza-id", STANZA_ID_NAMESPACE).with_attribute("id", &id.to_string()).with_attribute("by", to_bare.as_str()),
        ));
    }
    let bytes = element.to_xml().into_bytes();
    if archive {
        fx.records.extend(archive_append(data, &user, from_bare.as_str(), id, now, bytes.clone(), kept));
    }
    match decision {
        Delivery::Sessions(indices) => {
            to_sessions(shard, &envelope, &indices, &bytes, replies);
            // XEP-0280 §5.1: the user's other carbons-enabled resources get a copy.
            if carbons::is_eligible(&element) {
                if let Some(sessions) = shard.sessions.get(&to_bare) {
                    for (index, session) in sessions.iter().enumerate() {
                        if session.carbons && session.available && !indices.contains(&index) {
                            let full = format!("{}/{}", to_bare.as_str(), session.resource);
                            offer_or_count(
                                shard,
                                &session.sender,
                                SessionMessage::Stanza(carbons::wrap(carbons::Direction::Received, to_bare.as_str(), &full, &bytes)),
                                Counter::CarbonInboxFull,
                            );
                        }
                    }
                }
            }
        }
        Delivery::Error(_) if offline => store_offline(shard, &user, &bytes, false, &mut fx.records, &mut fx.undo),
        Delivery::Error(condition) => replies.extend(bounce(&envelope, condition)),
        Delivery::Ignore | Delivery::Server => {}
    }
}

/// `deliver_message` for a `plain_message` to a user without carbons: the same rules (archive
/// with our stanza-id, offline storage with its limits, congestion), on bytes.
fn deliver_plain_message(
    shard: &mut Shard,
    envelope: Envelope,
    decision: Delivery,
    offline: bool,
    fx: &mut Effects,
    replies: &mut Vec<Envelope>,
) {
    let floor = shard.shared.id_floor;
    let to_bare = envelope.to.bare();
    let from_bare = envelope.from.bare();
    let user = to_bare.local().unwrap_or_default().to_owned();
    let writable = shard.partition.is_writable();
    if shard.partition.is_congested() || offline && !writable {
        replies.extend(bounce(&envelope, "resource-constraint"));
        return;
    }
    let kept = shard.shared.config.limits.archive_messages;
    let offline_max = shard.shared.config.limits.offline_messages;
    let account_bytes = shard.shared.config.limits.account_bytes;
    let data = shard.users.entry(user.clone()).or_default();
    if offline && !offline_has_room(data, envelope.bytes.len(), offline_max, account_bytes) {
        replies.extend(bounce(&envelope, "service-unavailable"));
        return;
    }
    let in_roster = data.roster.get(from_bare.as_str()).is_some_and(|i| !i.hidden);
    let wanted = from_bare != to_bare
        && envelope.bytes.len() + STANZA_ID_BYTES_MAX <= confab_core::limits::ARCHIVED_MESSAGE_BYTES_MAX
        && archive::should_archive(&data.preferences, from_bare.as_str(), in_roster);
    let archive = wanted && writable;
    if wanted && !writable {
        shard.counters.count(Counter::ArchiveSkipped);
    }
    let bytes = if archive {
        let now = now_ms();
        let id = next_archive_id(data, floor);
        let bytes = with_stanza_id(&envelope.bytes, id, to_bare.as_str());
        fx.records.extend(archive_append(data, &user, from_bare.as_str(), id, now, bytes.clone(), kept));
        bytes
    } else {
        envelope.bytes.clone()
    };
    match decision {
        Delivery::Sessions(indices) => to_sessions(shard, &envelope, &indices, &bytes, replies),
        Delivery::Error(_) if offline => store_offline(shard, &user, &bytes, false, &mut fx.records, &mut fx.undo),
        Delivery::Error(condition) => replies.extend(bounce(&envelope, condition)),
        Delivery::Ignore | Delivery::Server => {}
    }
}

fn deliver_iq(shard: &mut Shard, envelope: Envelope, exists: bool, replies: &mut Vec<Envelope>) {
    match verdict(shard, &envelope, exists) {
        Delivery::Sessions(indices) => to_sessions(shard, &envelope, &indices, &envelope.bytes, replies),
        Delivery::Error(condition) => replies.extend(bounce(&envelope, condition)),
        Delivery::Ignore => {}
        Delivery::Server => {
            let to_bare = envelope.to.bare();
            let element = parse_element(&envelope.bytes).ok();
            let payload = element.as_ref().and_then(|e| e.elements().next());
            let bytes = account_iq(shard, &to_bare, &envelope, payload);
            replies.push(Envelope {
                to: envelope.from.clone(),
                from: Jid::Bare(to_bare),
                kind: StanzaKind::Iq,
                stanza_type: Some(if bytes.starts_with(b"<iq type='error'") { "error" } else { "result" }.into()),
                id: envelope.id.clone(),
                bytes,
                interest: None,
            });
        }
    }
}

/// RFC 6121 §8.5.2.1.3: an iq to an account's bare JID from someone else, answered by the
/// server on the account's behalf.
fn account_iq(shard: &Shard, owner: &BareJid, envelope: &Envelope, payload: Option<&Element>) -> Vec<u8> {
    let id = envelope.id.as_deref().unwrap_or("");
    let requester = envelope.from.as_str();
    let stanza_type = envelope.stanza_type.as_deref().unwrap_or("");
    let error = |condition: &str| error_reply(StanzaKind::Iq, Some(id), Some(owner.as_str()), Some(requester), condition);
    let user = owner.local().unwrap_or_default();
    let Some(payload) = payload else { return error("bad-request") };
    match (stanza_type, payload.name.as_str(), payload.namespace.as_str()) {
        // XEP-0054 §3.2: anyone may read a user's vCard.
        ("get", "vCard", VCARD_NAMESPACE) => {
            let stored = shard.users.get(user).and_then(|d| d.vcard.as_deref()).and_then(parse_fragment);
            iq_result(id, Some(owner.as_str()), requester, Some(&stored.unwrap_or_else(|| Element::new("vCard", VCARD_NAMESPACE))))
        }
        ("get", "query", LAST_NAMESPACE) => {
            // XEP-0012 §4: only for those allowed to see the user's presence.
            let data = shard.users.get(user);
            let allowed =
                data.is_some_and(|d| matches!(d.subscription(envelope.from.bare().as_str()), Subscription::From | Subscription::Both));
            if !allowed {
                return error("forbidden");
            }
            let Some((seconds, status)) = last_seen(shard, owner, now_ms()) else { return error("item-not-found") };
            let mut query = Element::new("query", LAST_NAMESPACE).with_attribute("seconds", &seconds.to_string());
            if !status.is_empty() {
                query = query.with_text(&status);
            }
            iq_result(id, Some(owner.as_str()), requester, Some(&query))
        }
        ("get", "query", routing::DISCO_INFO_NAMESPACE) if payload.attribute("node").is_none() => {
            account_disco(id, Some(owner.as_str()), requester)
        }
        ("get", "query", routing::DISCO_ITEMS_NAMESPACE) if payload.attribute("node").is_none() => {
            let data = shard.users.get(user);
            let contact = data.and_then(|d| d.roster.get(envelope.from.bare().as_str()));
            let subscribed = contact.is_some_and(|i| matches!(i.subscription, Subscription::From | Subscription::Both));
            let groups = contact.map(|i| i.groups.as_slice()).unwrap_or_default();
            let access = pep::Requester { owner: false, presence_subscribed: subscribed, groups };
            iq_result(id, Some(owner.as_str()), requester, Some(&pep_node_items(owner, data, &access)))
        }
        ("get", "pubsub", PUBSUB_NAMESPACE) => {
            // XEP-0060 §6.5 on someone else's PEP service, by its access model (§6.5.9).
            let fail = |error: PubsubError| pep::error_iq(id, Some(owner.as_str()), requester, &error);
            let (node, max_items, item_ids) = match pep::parse_request(stanza_type, payload) {
                Ok(PubsubRequest::Items { node, max_items, item_ids }) => (node, max_items, item_ids),
                Ok(_) => return fail(PubsubError::new("forbidden")),
                Err(error) => return fail(error),
            };
            let data = shard.users.get(user);
            let Some(stored) = data.and_then(|d| d.pep.get(&node)) else { return fail(PubsubError::not_found()) };
            let contact = data.and_then(|d| d.roster.get(envelope.from.bare().as_str()));
            let subscribed = contact.is_some_and(|i| matches!(i.subscription, Subscription::From | Subscription::Both));
            let groups = contact.map(|i| i.groups.as_slice()).unwrap_or_default();
            let access = pep::Requester { owner: false, presence_subscribed: subscribed, groups };
            if let Err(error) = pep::check_access(&stored.config, &access) {
                return fail(error);
            }
            pep::items_result(id, Some(owner.as_str()), requester, &node, &pep::select_items(stored, max_items, &item_ids))
        }
        // Another user's roster, block list, private data, archive or vCard (RFC 6121 §2.1.5,
        // XEP-0049 §3, XEP-0313 §4): only the owner may touch them.
        (
            _,
            _,
            ROSTER_NAMESPACE
            | BLOCKING_NAMESPACE
            | PRIVATE_NAMESPACE
            | MAM_NAMESPACE
            | CARBONS_NAMESPACE
            | PUBSUB_NAMESPACE
            | PUBSUB_OWNER_NAMESPACE,
        )
        | ("set", "vCard", VCARD_NAMESPACE) => error("forbidden"),
        _ => routing::server_iq(stanza_type, id, Some(payload), Some(owner.as_str()), requester, Some(owner.as_str())),
    }
}
