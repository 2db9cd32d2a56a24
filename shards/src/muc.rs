//! The XEP-0045 service at `muc.domain` on the shards.
//!
//! A room lives on its home shard, `home_shard(room bare JID)`, like a user: stanzas for it are
//! routed there and handled by `confab_core::muc::Room`. What a room sends is grouped by the
//! home shard of each recipient session: one `RoomDelivery` per shard, so a groupchat message
//! to N occupants crosses to each other shard once, and the shard that owns the sessions makes
//! the per-recipient copies (`to` inserted) and hands each session its stanzas in one inbox
//! slot. The user's side (here too) keeps, per session, the rooms it is in, so the room hears
//! of the session's end (RFC 6121 §4.5.2 directed presence) and a session's rooms are
//! bounded. Persistent rooms load from the partition at start-up; their records and archive
//! belong to an owner named by the room's bare JID. This module does not decide anything
//! about a room itself (core does) and does no socket I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use confab_core::archive::ArchivedMessage;
use confab_core::framer::{parse_element, Stanza};
use confab_core::jid::{BareJid, FullJid, Jid};
use confab_core::muc::{self, AffiliationEntry, Out, Output, Room, RoomArchiveQuery, RoomConfig, RoomSnapshot, Settings};
use confab_core::records::{ItemKind, Record};
use confab_core::routing::{self, iq_result, StanzaKind};

use crate::counters::Counter;
use crate::im::{self, Effects};
use crate::shard::{self, error_envelope, offer, Envelope, Outgoing, SessionMessage, Shard, ShardMessage, ShardRef, Shared};
use crate::storage::{StoredItem, Undo};

/// The rooms homed on one shard.
pub struct Rooms {
    pub rooms: HashMap<String, Room>,
    pub settings: Settings,
}

/// A persistent room's archive as found at start-up: its newest id and its last messages.
#[derive(Debug, Clone)]
pub struct RoomArchive {
    pub room: String,
    pub last: u64,
    pub recent: Vec<ArchivedMessage>,
}

impl Rooms {
    /// Rebuilds the persistent rooms from their stored items (owners named by a bare JID).
    /// Rebuilds the stored rooms; their archive ids continue above `id_floor`
    /// (`storage::advance_id_floor`).
    pub fn load(items: Vec<StoredItem>, archives: Vec<RoomArchive>, settings: Settings, id_floor: u64) -> Rooms {
        let mut configs: BTreeMap<String, RoomConfig> = BTreeMap::new();
        let mut affiliations: BTreeMap<String, BTreeMap<String, AffiliationEntry>> = BTreeMap::new();
        for item in items {
            let decoded = match item.kind {
                ItemKind::RoomConfig => RoomConfig::decode(&item.value).map(|config| {
                    configs.insert(item.user.clone(), config);
                }),
                ItemKind::RoomAffiliation => AffiliationEntry::decode(&item.value).map(|entry| {
                    affiliations.entry(item.user.clone()).or_default().insert(item.key.clone(), entry);
                }),
                _ => Ok(()),
            };
            if let Err(error) = decoded {
                tracing::error!(room = %item.user, kind = ?item.kind, %error, "unreadable stored room item skipped");
            }
        }
        let mut archives: HashMap<String, RoomArchive> = archives.into_iter().map(|a| (a.room.clone(), a)).collect();
        let mut rooms = HashMap::new();
        for (name, config) in configs {
            let Ok(Jid::Bare(jid)) = Jid::parse(&name) else {
                tracing::error!(room = %name, "stored room with an invalid JID skipped");
                continue;
            };
            let archive = archives.remove(&name);
            let (last, recent) = archive.map(|a| (a.last, a.recent)).unwrap_or_default();
            let room = Room::restore(jid, config, affiliations.remove(&name).unwrap_or_default(), recent, last.max(id_floor - 1), false);
            rooms.insert(name, room);
        }
        Rooms { rooms, settings }
    }
}

/// Stanzas from one room for sessions homed on one shard, in the order the room sent them.
#[derive(Debug)]
pub struct RoomDelivery {
    pub room: BareJid,
    pub items: Vec<DeliveryItem>,
}

#[derive(Debug)]
pub enum DeliveryItem {
    Single {
        to: FullJid,
        bytes: Vec<u8>,
        leaves: bool,
    },
    /// One stanza for these sessions (all homed on the receiving shard): `to` is inserted at
    /// `name_end` per recipient.
    Broadcast {
        bytes: Arc<[u8]>,
        name_end: usize,
        to: Vec<FullJid>,
    },
}

/// Is `jid` at the MUC service?
pub fn is_service(shared: &Shared, jid: &Jid) -> bool {
    shared.config.muc.enabled && jid.domain() == shared.config.muc.domain
}

// ---------------------------------------------------------------------------------------
// The user's side: stanzas a bound client sends to the service or to a room.
// ---------------------------------------------------------------------------------------

/// A client's stanza for the service or one of its rooms. The service itself answers disco
/// here; stanzas for rooms are routed to the room's home shard, after the session's room
/// bookkeeping (joins are bounded per session).
pub fn from_client(shard: &mut Shard, me: &FullJid, kind: StanzaKind, stanza: &Stanza<'_>, to: Jid, fx: &mut Effects) {
    let stanza_type = stanza.kind.as_deref();
    let id = stanza.id.as_deref();
    let from = Jid::Full(me.clone());
    if to.local().is_none() {
        service_stanza(shard, me, kind, stanza, &to, fx);
        return;
    }
    if kind == StanzaKind::Presence {
        let limit = shard.shared.config.muc.rooms_per_session;
        let room = to.bare();
        if let (Some(session), Jid::Full(occupancy)) = (shard.session_mut(me), &to) {
            let present = session.rooms.iter().position(|r| r.bare() == room);
            match (stanza_type, present) {
                (None, Some(index)) => session.rooms[index] = occupancy.clone(),
                (None, None) if session.rooms.len() >= limit => {
                    if let Some(error) = error_envelope(&to, &from, kind, stanza_type, id, "resource-constraint") {
                        fx.reply.push(error.bytes);
                    }
                    return;
                }
                (None, None) => session.rooms.push(occupancy.clone()),
                (Some("unavailable"), Some(index)) => {
                    session.rooms.swap_remove(index);
                }
                _ => {}
            }
        }
    }
    fx.envelopes.push(im::routed(me, to, kind, stanza));
}

/// The service's own JID: disco#info here, disco#items (the public rooms, gathered from every
/// shard by the connection), ping; nothing else.
fn service_stanza(shard: &Shard, me: &FullJid, kind: StanzaKind, stanza: &Stanza<'_>, to: &Jid, fx: &mut Effects) {
    let stanza_type = stanza.kind.as_deref();
    let id = stanza.id.as_deref().unwrap_or("");
    let service = shard.shared.config.muc.domain.as_str();
    if kind != StanzaKind::Iq || to.resource().is_some() {
        if kind != StanzaKind::Presence {
            if let Some(error) = error_envelope(to, &Jid::Full(me.clone()), kind, stanza_type, Some(id), "service-unavailable") {
                fx.reply.push(error.bytes);
            }
        }
        return;
    }
    if matches!(stanza_type, Some("result") | Some("error")) {
        return;
    }
    let element = stanza.element().ok();
    let payload = element.as_ref().and_then(|e| e.elements().next());
    match payload.map(|p| (stanza_type.unwrap_or(""), p.name.as_str(), p.namespace.as_str(), p.attribute("node"))) {
        Some(("get", "query", routing::DISCO_INFO_NAMESPACE, None)) => {
            fx.reply.push(iq_result(id, Some(service), me.as_str(), Some(&muc::service_info(&shard.shared.config.muc.name))));
        }
        Some(("get", "query", routing::DISCO_ITEMS_NAMESPACE, None)) => fx.room_listing = Some(id.to_owned()),
        _ => fx.reply.push(routing::server_iq(stanza_type.unwrap_or(""), id, payload, Some(service), me.as_str(), None)),
    }
}

/// The public rooms of this shard, for the service's disco#items (XEP-0045 §6.3).
/// At most `ROOM_LISTING_MAX`, the first by JID (what the merged answer can hold).
pub fn listed_rooms(shard: &Shard) -> Vec<(String, String)> {
    let mut listed: Vec<(&String, &Room)> = shard.rooms.rooms.iter().filter(|(_, room)| room.is_listed()).collect();
    listed.sort_unstable_by(|a, b| a.0.cmp(b.0));
    listed.into_iter().take(ROOM_LISTING_MAX).map(|(jid, room)| (jid.clone(), room.display_name().to_owned())).collect()
}

/// The service's disco#items answer from the rooms of every shard (bounded: at most one page
/// of `ROOM_LISTING_MAX`, sorted by JID).
pub fn room_listing_result(shared: &Shared, id: &str, to: &FullJid, mut rooms: Vec<(String, String)>) -> Vec<u8> {
    rooms.sort();
    rooms.truncate(ROOM_LISTING_MAX);
    iq_result(id, Some(&shared.config.muc.domain), to.as_str(), Some(&muc::service_items(&rooms)))
}

/// Rooms one disco#items answer lists (XEP-0045 §6.3 allows paging; this server lists the
/// first rooms by JID).
pub const ROOM_LISTING_MAX: usize = 1_000;

/// The session ends or becomes unavailable: each room it is in hears it left (RFC 6121
/// §4.5.2, XEP-0045 §7.14).
pub fn leave_rooms(me: &FullJid, rooms: Vec<FullJid>, envelopes: &mut Vec<Envelope>) {
    for occupancy in rooms {
        envelopes.push(im::typed_presence("unavailable", Jid::Full(me.clone()), Jid::Full(occupancy)));
    }
}

// ---------------------------------------------------------------------------------------
// The room's side, on its home shard.
// ---------------------------------------------------------------------------------------

/// Handles an envelope for a room homed on this shard. Returns what must be routed as
/// ordinary stanzas; stanzas for sessions are handed to their shards here.
pub fn deliver(shard: &ShardRef, envelope: Envelope) -> Outgoing {
    let room_jid = envelope.to.bare();
    let nick = envelope.to.resource().map(str::to_owned);
    let Ok(stanza) = parse_element(&envelope.bytes) else { return Vec::new() };
    let now_ms = im::now_ms();
    let output = {
        let mut guard = shard.borrow_mut();
        let state = &mut *guard;
        debug_assert_eq!(state.shared.home_of(&room_jid), state.id, "room stanza away from the room's home shard");
        let from = match &envelope.from {
            Jid::Full(from) => from.clone(),
            Jid::Bare(account) => {
                // Only an account's answer to a forwarded request comes from a bare JID.
                let output = match (state.rooms.rooms.get_mut(room_jid.as_str()), &nick) {
                    (Some(room), Some(nick)) => room.account_answer(account, nick, &stanza),
                    _ => Output::default(),
                };
                drop(guard);
                return carry_out(shard, &room_jid, output, None, None);
            }
        };
        let settings = state.rooms.settings.clone();
        if !state.rooms.rooms.contains_key(room_jid.as_str()) {
            let creatable = muc::is_join(&stanza, nick.as_deref()) && from.domain() == state.shared.config.domain;
            let condition = if !creatable {
                "item-not-found"
            } else if state.rooms.rooms.len() >= state.shared.config.muc.rooms_per_shard {
                "resource-constraint"
            } else {
                // §10.1.1: the first to enter creates the room and owns it.
                let mut room = Room::create(room_jid.clone(), &from.bare(), &settings, now_ms);
                // Never below the run's id floor: a reborn room reuses no stanza-id.
                room.archive_last = room.archive_last.max(state.shared.id_floor - 1);
                state.rooms.rooms.insert(room_jid.as_str().to_owned(), room);
                ""
            };
            if !condition.is_empty() {
                let mut output = Output::default();
                if let Some(bytes) = muc::no_such_room(&stanza, room_jid.as_str(), nick.as_deref(), &from, condition) {
                    // No room, so the session is in none: a refused join is forgotten.
                    output.out.push(Out::Session { to: from.clone(), bytes, leaves: stanza.name == "presence" });
                }
                drop(guard);
                return carry_out(shard, &room_jid, output, None, None);
            }
        }
        let writable = state.partition.is_writable();
        let Some(room) = state.rooms.rooms.get_mut(room_jid.as_str()) else { return Vec::new() };
        // A change to what a persistent room stores is undone if it cannot be stored; while the
        // store cannot write, it is refused before anything changes.
        let snapshot = Room::may_change_stored_state(&stanza).then(|| room.snapshot());
        if snapshot.is_some() && room.config.persistent && !writable {
            let mut output = Output::default();
            if let Some(bytes) = muc::no_such_room(&stanza, room_jid.as_str(), nick.as_deref(), &from, "resource-constraint") {
                output.out.push(Out::Session { to: from.clone(), bytes, leaves: false });
            }
            drop(guard);
            return carry_out(shard, &room_jid, output, None, None);
        }
        let output = room.handle(&from, nick.as_deref(), &stanza, now_ms, &settings);
        if output.destroyed {
            state.rooms.rooms.remove(room_jid.as_str());
        }
        (output, snapshot)
    };
    let (output, snapshot) = output;
    // If the room's change cannot be stored, the requester hears so (RFC 6120 §8.3.3.6).
    let failed = snapshot.is_some().then(|| im::bounce(&envelope, "internal-server-error")).flatten();
    carry_out(shard, &room_jid, output, snapshot, failed)
}

/// Puts a room's persistent state back after a change that could not be stored (the
/// partition's failure hook). A room destroyed by that change comes back, empty.
pub fn restore(shard: &mut Shard, snapshot: muc::RoomSnapshot) {
    let name = snapshot.jid.as_str().to_owned();
    match shard.rooms.rooms.get_mut(&name) {
        Some(room) => room.restore_snapshot(snapshot),
        None => {
            let RoomSnapshot { jid, config, affiliations, locked, archive_last } = snapshot;
            let last = archive_last.max(shard.shared.id_floor - 1);
            shard.rooms.rooms.insert(name, Room::restore(jid, config, affiliations, Vec::new(), last, locked));
        }
    }
}

/// Stores what the room changed and sends what it said. A change other than an archive
/// append (configuration, affiliation, subject) is acknowledged only once durable: the whole
/// output then waits for the commit.
fn carry_out(shard: &ShardRef, room: &BareJid, output: Output, snapshot: Option<muc::RoomSnapshot>, failed: Option<Envelope>) -> Outgoing {
    let Output { out, records, archive_query, .. } = output;
    if let Some(query) = archive_query {
        run_archive_query(shard.clone(), room.clone(), query);
    }
    if records.is_empty() {
        return route(shard, room, out);
    }
    let acknowledges = records.iter().any(|r| !matches!(r, Record::ArchiveAppend { .. }));
    let undo = snapshot.map(|snapshot| Undo::Room(Box::new(snapshot))).into_iter().collect();
    let durable = shard.borrow().partition.submit(records, undo);
    if !acknowledges {
        // A groupchat message never waits for its archive write (as for 1:1 chat).
        drop(durable);
        return route(shard, room, out);
    }
    let shard = shard.clone();
    let room = room.clone();
    glommio::spawn_local(async move {
        match durable.await.unwrap_or_else(|_| Err("writer stopped".into())) {
            Ok(()) => {
                for envelope in route(&shard, &room, out) {
                    shard::dispatch_now(&shard, envelope);
                }
            }
            // Nothing is announced as done, the room was put back as it was (the undo), and
            // the requester is told.
            Err(error) => {
                tracing::error!(%room, %error, "room change not stored");
                if let Some(envelope) = failed {
                    shard::dispatch_now(&shard, envelope);
                }
            }
        }
    })
    .detach();
    Vec::new()
}

/// Groups stanzas for sessions by the sessions' home shard (one `RoomDelivery` per shard)
/// and returns the ones to route normally.
fn route(shard: &ShardRef, room: &BareJid, out: Vec<Out>) -> Outgoing {
    let (shared, here) = {
        let shard = shard.borrow();
        (shard.shared.clone(), shard.id)
    };
    let shards = shared.shard_count();
    let mut per_shard: Vec<Vec<DeliveryItem>> = (0..shards).map(|_| Vec::new()).collect();
    let mut routed = Vec::new();
    for item in out {
        match item {
            Out::Session { to, bytes, leaves } => {
                per_shard[routing::home_shard(to.bare_str(), shards)].push(DeliveryItem::Single { to, bytes, leaves })
            }
            Out::Broadcast { bytes, name_end, to } => {
                let bytes: Arc<[u8]> = bytes.into();
                let mut split: Vec<Vec<FullJid>> = vec![Vec::new(); shards];
                for jid in to {
                    split[routing::home_shard(jid.bare_str(), shards)].push(jid);
                }
                for (k, to) in split.into_iter().enumerate() {
                    if !to.is_empty() {
                        per_shard[k].push(DeliveryItem::Broadcast { bytes: bytes.clone(), name_end, to });
                    }
                }
            }
            Out::Route { to, from, kind, stanza_type, id, bytes } => routed.push(Envelope {
                to,
                from,
                kind,
                stanza_type: stanza_type.map(Into::into),
                id: id.map(Into::into),
                bytes,
                interest: None,
            }),
        }
    }
    for (k, items) in per_shard.into_iter().enumerate() {
        if items.is_empty() {
            continue;
        }
        let delivery = RoomDelivery { room: room.clone(), items };
        if k == here {
            let bounces = deliver_to_sessions(&mut shard.borrow_mut(), delivery);
            routed.extend(bounces);
        } else {
            shard::send_to_peer(shard, k, ShardMessage::Room(delivery));
        }
    }
    routed
}

/// Hands a room's stanzas to the sessions homed here: each session gets its stanzas in
/// order, in one inbox slot. Sessions that are gone are skipped (RFC 6121 §8.5.3.2.1: no
/// offline storage for groupchat to a full JID); so is a user who blocked the room. Returns
/// the room's notices of sessions found gone, to route.
#[must_use]
pub fn deliver_to_sessions(shard: &mut Shard, delivery: RoomDelivery) -> Vec<Envelope> {
    let RoomDelivery { room, items } = delivery;
    let mut bounces = Vec::new();
    if let [DeliveryItem::Broadcast { .. }] = items.as_slice() {
        // The groupchat hot path: one stanza, one copy per session.
        let Some(DeliveryItem::Broadcast { bytes, name_end, to }) = items.into_iter().next() else { return bounces };
        for jid in to {
            hand_over(shard, &room, &jid, vec![Out::addressed(&bytes, name_end, jid.as_str())], false, &mut bounces);
        }
        return bounces;
    }
    let mut batches: Vec<(FullJid, Vec<Vec<u8>>, bool)> = Vec::new();
    let mut index: HashMap<FullJid, usize> = HashMap::new();
    let mut push = |to: FullJid, bytes: Vec<u8>, leaves: bool| match index.get(&to) {
        Some(&i) => {
            batches[i].1.push(bytes);
            batches[i].2 |= leaves;
        }
        None => {
            index.insert(to.clone(), batches.len());
            batches.push((to, vec![bytes], leaves));
        }
    };
    for item in items {
        match item {
            DeliveryItem::Single { to, bytes, leaves } => push(to, bytes, leaves),
            DeliveryItem::Broadcast { bytes, name_end, to } => {
                for jid in to {
                    let copy = Out::addressed(&bytes, name_end, jid.as_str());
                    push(jid, copy, false);
                }
            }
        }
    }
    for (to, stanzas, leaves) in batches {
        hand_over(shard, &room, &to, stanzas, leaves, &mut bounces);
    }
    bounces
}

fn hand_over(shard: &mut Shard, room: &BareJid, to: &FullJid, mut stanzas: Vec<Vec<u8>>, leaves: bool, bounces: &mut Vec<Envelope>) {
    debug_assert_eq!(
        routing::home_shard(to.bare_str(), shard.shared.shard_count()),
        shard.id,
        "room stanza for a session away from its home shard"
    );
    let blocked = shard.users.get(to.local().unwrap_or_default()).is_some_and(|data| data.is_blocked(room.as_str()));
    let Some(session) = shard.session_mut(to) else {
        if !leaves {
            // The session is gone but the room still counts it (its leave was lost): the room
            // hears of it (an error presence, §7.14 status 333) rather than keep a ghost.
            bounces.push(im::typed_presence("error", Jid::Full(to.clone()), Jid::Bare(room.clone())));
        }
        return;
    };
    if leaves {
        session.rooms.retain(|r| r.bare_str() != room.as_str());
    }
    if blocked {
        return;
    }
    let message = match stanzas.len() {
        0 => return,
        1 => SessionMessage::Stanza(stanzas.pop().unwrap_or_default()),
        _ => SessionMessage::Batch(stanzas),
    };
    if !offer(&session.sender, message) {
        // The others got it; this occupant's client reads too slowly (and is closed if it
        // stops reading for good, `limits.stalled_reader_timeout_ms`).
        shard.counters.count(Counter::RoomInboxFull);
    }
}

/// XEP-0313 on a room: the page is read from the room's archive and sent from the room.
fn run_archive_query(shard: ShardRef, room: BareJid, query: RoomArchiveQuery) {
    glommio::spawn_local(async move {
        let partition = shard.borrow().partition.clone();
        let RoomArchiveQuery { requester, id, query } = query;
        let request = im::ArchiveRequest { user: room.as_str().to_owned(), requester: requester.as_str().to_owned(), id, query };
        let out = im::run_archive_query(partition, request)
            .await
            .into_iter()
            .map(|bytes| Out::Session { to: requester.clone(), bytes: muc::with_from(bytes, room.as_str()), leaves: false })
            .collect();
        for envelope in route(&shard, &room, out) {
            shard::dispatch_now(&shard, envelope);
        }
    })
    .detach();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_restores_a_persistent_room_with_its_affiliations_and_history() {
        let settings = Settings { max_users: 10, history_size: 5, occupant_messages_per_s: 1.0, occupant_burst: 1.0 };
        let config = RoomConfig {
            name: "Ops".into(),
            description: String::new(),
            persistent: true,
            public: true,
            members_only: true,
            moderated: false,
            password: None,
            max_users: 10,
            history_length: 5,
            whois_anyone: false,
            logging: true,
            change_subject: false,
            allow_invites: false,
            allow_pm: muc::PmPolicy::Anyone,
            subject: "s".into(),
            subject_by: String::new(),
        };
        let owner = AffiliationEntry { affiliation: muc::Affiliation::Owner, nick: None, reason: String::new() };
        let room = "ops@conference.example".to_owned();
        let items = vec![
            StoredItem { user: room.clone(), kind: ItemKind::RoomConfig, key: String::new(), value: config.encode() },
            StoredItem { user: room.clone(), kind: ItemKind::RoomAffiliation, key: "a@example".into(), value: owner.encode() },
            StoredItem {
                user: "ghost@conference.example".into(),
                kind: ItemKind::RoomAffiliation,
                key: "a@example".into(),
                value: vec![1, 2],
            },
        ];
        let archives = vec![RoomArchive { room: room.clone(), last: 7, recent: Vec::new() }];
        let rooms = Rooms::load(items.clone(), archives.clone(), settings.clone(), 1);
        assert_eq!(rooms.rooms.len(), 1, "a room is its configuration; stray affiliations are not rooms");
        let loaded = &rooms.rooms[&room];
        assert_eq!(loaded.config, config);
        assert_eq!(loaded.archive_last, 7);
        // A later run's floor: the room's next id is above it, whatever the store kept.
        let later = Rooms::load(items, archives, settings, 1 << 40);
        assert_eq!(later.rooms[&room].archive_last, (1 << 40) - 1);
        assert_eq!(loaded.affiliation_of(&BareJid::new(Some("a"), "example").expect("jid")), muc::Affiliation::Owner);
        assert!(!loaded.locked);
    }
}
