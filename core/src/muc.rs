//! XEP-0045 Multi-User Chat: one room's state and every decision about it.
//!
//! A `Room` takes the stanzas addressed to it (`room@service` or `room@service/nick`), already
//! parsed, with the sender's full JID and the time, and says what goes out (`Output`): stanzas
//! for single sessions, the same stanza for many sessions (`Out::Broadcast`, which the runtime
//! copies once per shard, not once per occupant), stanzas to route like any other (mediated
//! invitations may wait offline), the `Record`s that keep a persistent room durable, and
//! archive queries to run. It owns roles, affiliations, nicknames, history, subject,
//! configuration forms and the status codes of XEP-0045 §15.6. It does not know shards,
//! sockets or clocks: the runtime (shards/src/muc.rs) routes what comes out.
//!
//! Persistent rooms are stored as items of an owner named by the room's bare JID: one
//! `ItemKind::RoomConfig` (configuration and subject) and one `ItemKind::RoomAffiliation` per
//! affiliated JID; their messages go to the archive under the same owner (XEP-0313 on MUC).

use std::collections::{BTreeMap, VecDeque};

use rkyv::{Archive, Deserialize, Serialize};

use crate::archive::{ArchiveQuery, ArchivedMessage, MAM_NAMESPACE};
use crate::forms::{boolean_value, field, option, parse_boolean};
use crate::jid::{BareJid, FullJid, Jid};
use crate::records::{ItemKind, Record};
use crate::routing::{iq_result, StanzaKind, DISCO_INFO_NAMESPACE, DISCO_ITEMS_NAMESPACE, PING_NAMESPACE, STANZAS_NAMESPACE};
use crate::xml::{escape_attribute, push_attribute, Element, Node};

pub const MUC_NAMESPACE: &str = "http://jabber.org/protocol/muc";
pub const MUC_USER_NAMESPACE: &str = "http://jabber.org/protocol/muc#user";
pub const MUC_ADMIN_NAMESPACE: &str = "http://jabber.org/protocol/muc#admin";
pub const MUC_OWNER_NAMESPACE: &str = "http://jabber.org/protocol/muc#owner";
/// XEP-0045 §15.5.3 configuration form type.
pub const ROOMCONFIG_FORM: &str = "http://jabber.org/protocol/muc#roomconfig";
/// XEP-0045 §15.5.4 room information form type.
pub const ROOMINFO_FORM: &str = "http://jabber.org/protocol/muc#roominfo";
/// XEP-0045 §7.10: registering with a room (a XEP-0077 query carrying this form).
pub const REGISTER_NAMESPACE: &str = "jabber:iq:register";
pub const REGISTER_FORM: &str = "http://jabber.org/protocol/muc#register";
/// XEP-0249 direct invitations (routed between users; the service only advertises nothing).
pub const CONFERENCE_NAMESPACE: &str = "jabber:x:conference";
pub use crate::forms::DATA_FORMS_NAMESPACE;
pub const STANZA_ID_NAMESPACE: &str = "urn:xmpp:sid:0";
const VCARD_NAMESPACE: &str = "vcard-temp";

/// History messages a room may keep (`muc#maxhistoryfetch` is refused above it).
pub const HISTORY_MAX: u32 = 200;
/// Invitations one message may carry (XEP-0045 §7.8.2 allows several).
pub const INVITES_PER_MESSAGE_MAX: usize = 16;
/// Items one muc#admin set may change at once (XEP-0045 §9.5 sends lists).
pub const ADMIN_ITEMS_MAX: usize = 256;
/// Bytes of a room name, description, subject, password or reason kept.
pub const ROOM_TEXT_BYTES_MAX: usize = 4 * 1024;
/// Bytes of an occupant's presence payload (show, status, caps …) kept and rebroadcast.
pub const OCCUPANT_PRESENCE_BYTES_MAX: usize = 4 * 1024;
/// Affiliations a room keeps (member lists of big rooms).
pub const AFFILIATIONS_MAX: usize = 100_000;
/// Bytes of history a room keeps in memory (and sends in one join burst), whatever its
/// history length: the oldest messages go first.
pub const HISTORY_BYTES_MAX: usize = 256 * 1024;
/// Mediated invitations a room remembers, so that only an invitee may decline, and only to
/// its inviter (§7.8.3).
pub const INVITATIONS_REMEMBERED_MAX: usize = 256;
/// Requests forwarded to occupants awaiting their answer (§7.5 IQs): answers are passed on
/// only for these, to the session that asked.
pub const IQS_PENDING_MAX: usize = 1_024;

/// XEP-0045 §5.2: affiliations, ordered by privilege.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Affiliation {
    Outcast,
    None,
    Member,
    Admin,
    Owner,
}

impl Affiliation {
    pub fn name(self) -> &'static str {
        match self {
            Affiliation::Outcast => "outcast",
            Affiliation::None => "none",
            Affiliation::Member => "member",
            Affiliation::Admin => "admin",
            Affiliation::Owner => "owner",
        }
    }

    pub fn from_name(name: &str) -> Option<Affiliation> {
        [Affiliation::Outcast, Affiliation::None, Affiliation::Member, Affiliation::Admin, Affiliation::Owner]
            .into_iter()
            .find(|a| a.name() == name)
    }
}

/// XEP-0045 §5.1: roles, ordered by privilege.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    None,
    Visitor,
    Participant,
    Moderator,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Visitor => "visitor",
            Role::Participant => "participant",
            Role::Moderator => "moderator",
        }
    }

    pub fn from_name(name: &str) -> Option<Role> {
        [Role::None, Role::Visitor, Role::Participant, Role::Moderator].into_iter().find(|r| r.name() == name)
    }
}

/// Who may send private messages (`muc#roomconfig_allowpm`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PmPolicy {
    Anyone,
    Participants,
    Moderators,
    Nobody,
}

impl PmPolicy {
    fn name(self) -> &'static str {
        match self {
            PmPolicy::Anyone => "anyone",
            PmPolicy::Participants => "participants",
            PmPolicy::Moderators => "moderators",
            PmPolicy::Nobody => "none",
        }
    }

    fn from_name(name: &str) -> Option<PmPolicy> {
        [PmPolicy::Anyone, PmPolicy::Participants, PmPolicy::Moderators, PmPolicy::Nobody].into_iter().find(|p| p.name() == name)
    }
}

/// A room's configuration (XEP-0045 §10.2) and its subject, stored as one item.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RoomConfig {
    pub name: String,
    pub description: String,
    pub persistent: bool,
    pub public: bool,
    pub members_only: bool,
    pub moderated: bool,
    pub password: Option<String>,
    pub max_users: u32,
    pub history_length: u32,
    /// Real JIDs visible to every occupant (non-anonymous) rather than to moderators only.
    pub whois_anyone: bool,
    /// Messages are archived (XEP-0313) while the room is persistent.
    pub logging: bool,
    pub change_subject: bool,
    /// Members of a members-only room may invite (admins and owners always may).
    pub allow_invites: bool,
    pub allow_pm: PmPolicy,
    pub subject: String,
    pub subject_by: String,
}

crate::records::stored_codec!(RoomConfig);

/// One affiliated JID: its affiliation, reserved nickname (§9.3) and the reason given.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AffiliationEntry {
    pub affiliation: Affiliation,
    pub nick: Option<String>,
    pub reason: String,
}

crate::records::stored_codec!(AffiliationEntry);

/// Service-wide settings for rooms (the `[muc]` configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Occupants a room may hold; also the default for new rooms.
    pub max_users: u32,
    /// History length of new rooms.
    pub history_size: u32,
    /// Groupchat and private messages per second one occupant may send, and the burst.
    pub occupant_messages_per_s: f64,
    pub occupant_burst: f64,
}

impl Settings {
    fn default_config(&self) -> RoomConfig {
        RoomConfig {
            name: String::new(),
            description: String::new(),
            persistent: false,
            public: true,
            members_only: false,
            moderated: false,
            password: None,
            max_users: self.max_users,
            history_length: self.history_size.min(HISTORY_MAX),
            whois_anyone: false,
            logging: true,
            change_subject: false,
            allow_invites: false,
            allow_pm: PmPolicy::Anyone,
            subject: String::new(),
            subject_by: String::new(),
        }
    }
}

/// What handling one stanza produced, in the order it must go out.
#[derive(Debug, Default)]
pub struct Output {
    pub out: Vec<Out>,
    /// Changes that keep the room durable (persistent rooms only), in order.
    pub records: Vec<Record>,
    /// A XEP-0313 query of the room's archive, to be run against the store.
    pub archive_query: Option<RoomArchiveQuery>,
    /// The room is gone (destroyed, or a temporary room emptied): forget it.
    pub destroyed: bool,
}

/// A MAM query of a room's archive: answer `requester` to iq `id` with the page.
#[derive(Debug)]
pub struct RoomArchiveQuery {
    pub requester: FullJid,
    pub id: String,
    pub query: ArchiveQuery,
}

/// One outgoing item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// To one session; dropped if it no longer exists. `leaves`: this stanza ends that
    /// session's occupancy of the room (its own unavailable presence).
    Session { to: FullJid, bytes: Vec<u8>, leaves: bool },
    /// The same stanza to many sessions: `to='…'` is inserted at `name_end` (just after the
    /// element name) for each recipient.
    Broadcast { bytes: Vec<u8>, name_end: usize, to: Vec<FullJid> },
    /// Routed like any stanza (to a bare JID it may be stored offline): invitations, declines,
    /// vCard requests for an occupant's account.
    /// `from` is the room's JID, or an occupant's (`room/nick`) for a forwarded request.
    Route { to: Jid, from: Jid, kind: StanzaKind, stanza_type: Option<&'static str>, id: Option<String>, bytes: Vec<u8> },
}

impl Out {
    /// The bytes one recipient of a broadcast gets.
    pub fn addressed(bytes: &[u8], name_end: usize, to: &str) -> Vec<u8> {
        insert_attribute(bytes, name_end, "to", to)
    }
}

#[derive(Debug, Clone)]
struct Occupant {
    real: BareJid,
    sessions: Vec<FullJid>,
    role: Role,
    /// The children of its last presence (show, status, caps…), serialised, without the MUC
    /// extensions.
    payload: String,
    tokens: f64,
    refilled_ms: u64,
}

/// One message kept for history on join (§7.2.15).
#[derive(Debug, Clone)]
struct HistoryEntry {
    stamp_ms: u64,
    /// The message as broadcast, without `to`.
    bytes: Vec<u8>,
    chars: usize,
}

/// A room and its occupants.
#[derive(Debug)]
pub struct Room {
    pub jid: BareJid,
    pub config: RoomConfig,
    pub affiliations: BTreeMap<String, AffiliationEntry>,
    /// Created and not yet configured (§10.1.2): only its owner may enter.
    pub locked: bool,
    /// The newest archive id used.
    pub archive_last: u64,
    occupants: BTreeMap<String, Occupant>,
    /// Nick of each occupant session.
    nicks: std::collections::HashMap<FullJid, String>,
    history: VecDeque<HistoryEntry>,
    history_bytes: usize,
    /// Reserved nicknames (§9.3 `nick` on an affiliation item) → the bare JID holding each.
    reserved: std::collections::HashMap<String, String>,
    /// Recent mediated invitations: (invitee bare JID, inviter).
    invitations: VecDeque<(String, Jid)>,
    /// Forwarded requests: (answering JID, iq id) → the session that asked.
    pending_iqs: VecDeque<((String, String), FullJid)>,
}

/// A room's persistent state at one moment (see `Room::snapshot`).
#[derive(Debug, Clone)]
pub struct RoomSnapshot {
    pub jid: BareJid,
    pub config: RoomConfig,
    pub affiliations: BTreeMap<String, AffiliationEntry>,
    pub locked: bool,
    /// The newest archive id when the snapshot was taken: a room brought back whole continues
    /// above it (its archive is still stored), never reusing a stanza-id.
    pub archive_last: u64,
}

/// Stanza error details for one reply.
struct Refusal {
    condition: &'static str,
    error_type: &'static str,
}

const fn refuse(condition: &'static str, error_type: &'static str) -> Refusal {
    Refusal { condition, error_type }
}

/// XEP-0045 status codes (§15.6).
mod status {
    pub const NON_ANONYMOUS: u16 = 100;
    pub const SELF: u16 = 110;
    pub const CONFIG_CHANGED: u16 = 104;
    pub const LOGGING: u16 = 170;
    pub const NOT_LOGGING: u16 = 171;
    pub const NOW_NON_ANONYMOUS: u16 = 172;
    pub const NOW_SEMI_ANONYMOUS: u16 = 173;
    pub const CREATED: u16 = 201;
    pub const BANNED: u16 = 301;
    pub const NICK_CHANGED: u16 = 303;
    pub const KICKED: u16 = 307;
    pub const AFFILIATION_REMOVED: u16 = 321;
    pub const MEMBERS_ONLY: u16 = 322;
    pub const SERVICE_ERROR: u16 = 333;
}

/// How an occupant left (the status code others see).
#[derive(Clone, Copy)]
struct Removal<'a> {
    code: Option<u16>,
    actor: Option<&'a str>,
    reason: Option<&'a str>,
    affiliation: Option<Affiliation>,
}

impl Room {
    /// A new room owned by its creator, locked until the owner configures it (§10.1).
    /// Its archive ids start from the creation time in microseconds, so a room created again
    /// under a former room's name never reuses a stanza-id (XEP-0359 §4 uniqueness).
    pub fn create(jid: BareJid, owner: &BareJid, settings: &Settings, now_ms: u64) -> Room {
        let mut affiliations = BTreeMap::new();
        affiliations
            .insert(owner.as_str().to_owned(), AffiliationEntry { affiliation: Affiliation::Owner, nick: None, reason: String::new() });
        Room::restore(jid, settings.default_config(), affiliations, Vec::new(), now_ms.saturating_mul(1000), true)
    }

    /// A persistent room as stored, with its last messages for history.
    pub fn restore(
        jid: BareJid,
        config: RoomConfig,
        affiliations: BTreeMap<String, AffiliationEntry>,
        recent: Vec<ArchivedMessage>,
        archive_last: u64,
        locked: bool,
    ) -> Room {
        let mut room = Room {
            jid,
            config,
            affiliations,
            locked,
            archive_last,
            occupants: BTreeMap::new(),
            nicks: std::collections::HashMap::new(),
            history: VecDeque::new(),
            history_bytes: 0,
            reserved: std::collections::HashMap::new(),
            invitations: VecDeque::new(),
            pending_iqs: VecDeque::new(),
        };
        room.reserved = room.affiliations.iter().filter_map(|(jid, e)| Some((e.nick.clone()?, jid.clone()))).collect();
        for message in recent {
            room.remember(message.stamp_ms, message.bytes);
        }
        room
    }

    /// The room's persistent state (configuration with its subject, affiliations), taken
    /// before a stanza that may change it: put back with `restore_snapshot` if the change
    /// cannot be stored.
    pub fn snapshot(&self) -> RoomSnapshot {
        RoomSnapshot {
            jid: self.jid.clone(),
            config: self.config.clone(),
            affiliations: self.affiliations.clone(),
            locked: self.locked,
            archive_last: self.archive_last,
        }
    }

    /// Puts back the persistent state of `snapshot` (occupants and history stay as they are).
    pub fn restore_snapshot(&mut self, snapshot: RoomSnapshot) {
        debug_assert_eq!(snapshot.jid, self.jid, "a snapshot restored into another room");
        self.config = snapshot.config;
        self.affiliations = snapshot.affiliations;
        self.locked = snapshot.locked;
        self.reserved = self.affiliations.iter().filter_map(|(jid, e)| Some((e.nick.clone()?, jid.clone()))).collect();
    }

    /// Whether `stanza` may change what a persistent room stores: owner and admin requests
    /// (`iq` set), a subject change, an invitation (which may make a member).
    pub fn may_change_stored_state(stanza: &Element) -> bool {
        match stanza.name.as_str() {
            "iq" => stanza.attribute("type") == Some("set"),
            "message" => {
                stanza.child("subject", crate::stream::CLIENT_NAMESPACE).is_some() || stanza.child("x", MUC_USER_NAMESPACE).is_some()
            }
            _ => false,
        }
    }

    pub fn occupant_count(&self) -> usize {
        self.occupants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.occupants.is_empty()
    }

    /// The name disco#items lists for a public room.
    pub fn display_name(&self) -> &str {
        if self.config.name.is_empty() {
            self.jid.local().unwrap_or_default()
        } else {
            &self.config.name
        }
    }

    /// Is the room listed in the service's disco#items (§6.3)?
    pub fn is_listed(&self) -> bool {
        self.config.public && !self.locked
    }

    pub fn affiliation_of(&self, jid: &BareJid) -> Affiliation {
        self.affiliations.get(jid.as_str()).map(|entry| entry.affiliation).unwrap_or(Affiliation::None)
    }

    /// Handles a stanza from `from` to the room (`nick` is the resource of `to`, if any).
    pub fn handle(&mut self, from: &FullJid, nick: Option<&str>, stanza: &Element, now_ms: u64, settings: &Settings) -> Output {
        let mut output = Output::default();
        let stanza_type = stanza.attribute("type");
        match (stanza.name.as_str(), nick) {
            ("presence", Some(nick)) => self.presence(from, nick, stanza, now_ms, settings, &mut output),
            ("presence", None) => {
                if stanza_type == Some("unavailable") && self.nicks.contains_key(from) {
                    self.leave(from, stanza, &mut output);
                } else if stanza_type == Some("error") && self.nicks.contains_key(from) {
                    // The session is gone (its shard bounced our stanza): it leaves with 333.
                    self.remove_session(
                        from,
                        Removal { code: Some(status::SERVICE_ERROR), actor: None, reason: None, affiliation: None },
                        &mut output,
                    );
                } else if stanza_type.is_none() {
                    // §7.2.1: joining needs a nickname.
                    self.error(&mut output, from, None, stanza, refuse("jid-malformed", "modify"));
                }
            }
            ("message", None) => self.message_to_room(from, stanza, now_ms, settings, &mut output),
            ("message", Some(nick)) => self.private_message(from, nick, stanza, now_ms, settings, &mut output),
            ("iq", None) => self.iq_to_room(from, stanza, settings, &mut output),
            ("iq", Some(nick)) => self.iq_to_occupant(from, nick, stanza, &mut output),
            _ => {}
        }
        output
    }

    // -----------------------------------------------------------------------------------
    // Presence: join, status change, nickname change, leave (§7.2, §7.6, §7.7, §7.14).
    // -----------------------------------------------------------------------------------

    fn presence(&mut self, from: &FullJid, nick: &str, stanza: &Element, now_ms: u64, settings: &Settings, output: &mut Output) {
        match stanza.attribute("type") {
            None => match self.nicks.get(from).cloned() {
                // Every change is broadcast to all occupants: it spends a token like a message.
                Some(current) if !self.take_token(&current, now_ms, settings) => {
                    self.error(output, from, Some(nick), stanza, refuse("resource-constraint", "wait"));
                }
                Some(current) if current == nick && stanza.child("x", MUC_NAMESPACE).is_some() => {
                    self.resync(from, nick, stanza, now_ms, output)
                }
                Some(current) if current == nick => self.status_change(nick, stanza, output),
                Some(current) => self.nick_change(from, &current, nick, stanza, output),
                None => self.join(from, nick, stanza, now_ms, output),
            },
            // §17.3 (business rules) lets a service answer probes to an occupant JID: an
            // occupant (and only an occupant: nobody else may learn who is in the room) gets
            // that occupant's current presence, as the occupant would see it.
            Some("probe") if self.nicks.contains_key(from) => {
                if let Some(occupant) = self.occupants.get(nick) {
                    let show_jid = self.sees_jids(from);
                    let bytes = self.presence_bytes(nick, occupant, from, show_jid, &[], None);
                    output.out.push(Out::Session { to: from.clone(), bytes, leaves: false });
                }
            }
            Some("probe") => self.error(output, from, Some(nick), stanza, refuse("not-acceptable", "cancel")),
            Some("unavailable") if self.nicks.contains_key(from) => self.leave(from, stanza, output),
            // The occupant's server says the client is gone (RFC 6120 §8.3): it leaves, as in
            // §7.14 with status 333.
            Some("error") if self.nicks.contains_key(from) => self.remove_session(
                from,
                Removal { code: Some(status::SERVICE_ERROR), actor: None, reason: None, affiliation: None },
                output,
            ),
            _ => {}
        }
    }

    fn join(&mut self, from: &FullJid, nick: &str, stanza: &Element, now_ms: u64, output: &mut Output) {
        let real = from.bare();
        let affiliation = self.affiliation_of(&real);
        let muc = stanza.child("x", MUC_NAMESPACE);
        let refusal =
            if self.locked && affiliation != Affiliation::Owner {
                // §10.1.2: a locked room does not exist for others yet.
                Some(refuse("item-not-found", "cancel"))
            } else if affiliation == Affiliation::Outcast {
                Some(refuse("forbidden", "auth")) // §7.2.8
            } else if self.config.members_only && affiliation < Affiliation::Member {
                Some(refuse("registration-required", "auth")) // §7.2.7
            } else if self.config.password.as_deref().is_some_and(|password| {
                muc.and_then(|x| x.child("password", MUC_NAMESPACE)).map(Element::text).as_deref() != Some(password)
            }) {
                Some(refuse("not-authorized", "auth")) // §7.2.6
            } else if self.occupants.get(nick).is_some_and(|o| o.real != real) || self.reserved_by_other(nick, &real) {
                Some(refuse("conflict", "cancel")) // §7.2.9
            } else if !self.occupants.contains_key(nick)
                && self.occupants.len() >= self.config.max_users as usize
                && affiliation < Affiliation::Admin
            {
                Some(refuse("service-unavailable", "wait")) // §7.2.10: admins and owners may exceed
            } else {
                None
            };
        if let Some(refusal) = refusal {
            self.error(output, from, Some(nick), stanza, refusal);
            // The session is not in the room: its shard forgets the attempt.
            if let Some(Out::Session { leaves, .. }) = output.out.last_mut() {
                *leaves = true;
            }
            return;
        }
        let created = self.occupants.is_empty() && self.locked;
        if created && muc.is_none() {
            // §10.1.2 / §7.2.1: a client without MUC support (groupchat 1.0) gets an instant
            // room; it could never unlock a reserved one.
            self.locked = false;
        }
        let payload = presence_payload(stanza);
        if let Some(occupant) = self.occupants.get_mut(nick) {
            // The same user joining with the same nick from another resource: one occupant,
            // several sessions (multi-session nicks); the others see nothing change.
            occupant.sessions.push(from.clone());
            let show_jid = self.config.whois_anyone || occupant.role == Role::Moderator;
            self.nicks.insert(from.clone(), nick.to_owned());
            for (other_nick, other) in &self.occupants {
                if other_nick != nick {
                    let bytes = self.presence_bytes(other_nick, other, from, show_jid, &[], None);
                    output.out.push(Out::Session { to: from.clone(), bytes, leaves: false });
                }
            }
            if let Some(occupant) = self.occupants.get(nick) {
                let bytes = self.presence_bytes(nick, occupant, from, true, &[status::SELF], None);
                output.out.push(Out::Session { to: from.clone(), bytes, leaves: false });
            }
            // The new session has its own presence (110) already.
            self.sessions_changed(nick, Some(from), output);
        } else {
            let role = self.default_role(affiliation);
            let occupant = Occupant { real, sessions: vec![from.clone()], role, payload, tokens: f64::MAX, refilled_ms: now_ms };
            // §7.2.3: the existing occupants' presence first, then the new one's to all.
            for (other_nick, other) in &self.occupants {
                let show_jid = self.config.whois_anyone || role == Role::Moderator;
                let bytes = self.presence_bytes(other_nick, other, from, show_jid, &[], None);
                output.out.push(Out::Session { to: from.clone(), bytes, leaves: false });
            }
            self.occupants.insert(nick.to_owned(), occupant);
            self.nicks.insert(from.clone(), nick.to_owned());
            let mut own = vec![status::SELF];
            if self.config.whois_anyone {
                own.push(status::NON_ANONYMOUS); // §7.2.4
            }
            if self.logging() {
                own.push(status::LOGGING); // §7.2.12
            }
            if created {
                own.push(status::CREATED); // §10.1.1
            }
            self.broadcast_presence(nick, &own, None, output);
        }
        self.send_history(from, muc.and_then(|x| x.child("history", MUC_NAMESPACE)), now_ms, output);
        self.send_subject(from, output);
    }

    /// A join presence from a session that is already an occupant under that nick (a client
    /// that lost track of the room, e.g. after a failed stream resumption): the presence is
    /// a status change for the others, and the session gets the room's state again, in
    /// §7.2.3's order — occupants, its own presence, history, subject — so that it can
    /// resynchronise. XEP-0045 does not define a second join; this is what clients expect
    /// of Prosody and ejabberd.
    fn resync(&mut self, from: &FullJid, nick: &str, stanza: &Element, now_ms: u64, output: &mut Output) {
        let show_jid = self.sees_jids(from);
        for (other_nick, other) in &self.occupants {
            if other_nick != nick {
                let bytes = self.presence_bytes(other_nick, other, from, show_jid, &[], None);
                output.out.push(Out::Session { to: from.clone(), bytes, leaves: false });
            }
        }
        self.status_change(nick, stanza, output);
        let muc = stanza.child("x", MUC_NAMESPACE);
        self.send_history(from, muc.and_then(|x| x.child("history", MUC_NAMESPACE)), now_ms, output);
        self.send_subject(from, output);
    }

    /// §7.2.15: the subject last, even when empty.
    fn send_subject(&self, from: &FullJid, output: &mut Output) {
        let subject_from = if self.config.subject_by.is_empty() {
            self.jid.as_str().to_owned()
        } else {
            format!("{}/{}", self.jid, self.config.subject_by)
        };
        let subject = Element::new("message", crate::stream::CLIENT_NAMESPACE)
            .with_attribute("from", &subject_from)
            .with_attribute("to", from.as_str())
            .with_attribute("type", "groupchat")
            .with_attribute("id", &format!("subject-{}", self.archive_last))
            .with_child(Element::new("subject", crate::stream::CLIENT_NAMESPACE).with_text(&self.config.subject));
        output.out.push(Out::Session { to: from.clone(), bytes: subject.to_xml().into_bytes(), leaves: false });
    }

    fn reserved_by_other(&self, nick: &str, real: &BareJid) -> bool {
        self.reserved.get(nick).is_some_and(|holder| holder != real.as_str())
    }

    /// §5.1.2 default roles: moderators for owners and admins; visitors for unaffiliated
    /// users of a moderated room; participants otherwise.
    fn default_role(&self, affiliation: Affiliation) -> Role {
        match affiliation {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            Affiliation::None if self.config.moderated => Role::Visitor,
            Affiliation::None => Role::Participant,
            Affiliation::Outcast => Role::None,
        }
    }

    fn logging(&self) -> bool {
        self.config.logging && self.config.persistent
    }

    /// §7.2.15: `maxchars`, `maxstanzas`, `seconds` and `since` all limit what is sent.
    fn send_history(&self, to: &FullJid, request: Option<&Element>, now_ms: u64, output: &mut Output) {
        let number = |name: &str| request.and_then(|h| h.attribute(name)).and_then(|v| v.parse::<u64>().ok());
        let max_stanzas = number("maxstanzas").unwrap_or(u64::MAX);
        let max_chars = number("maxchars").unwrap_or(u64::MAX);
        let mut oldest_ms = number("seconds").map(|s| now_ms.saturating_sub(s.saturating_mul(1000))).unwrap_or(0);
        if let Some(since) = request.and_then(|h| h.attribute("since")).and_then(crate::time::parse_timestamp) {
            oldest_ms = oldest_ms.max(since);
        }
        let mut chars = 0u64;
        let mut picked = Vec::new();
        for entry in self.history.iter().rev() {
            if picked.len() as u64 >= max_stanzas || entry.stamp_ms < oldest_ms {
                break;
            }
            chars += entry.chars as u64;
            if chars > max_chars {
                break;
            }
            picked.push(entry);
        }
        for entry in picked.into_iter().rev() {
            let delayed = crate::time::with_delay(&entry.bytes, self.jid.as_str(), entry.stamp_ms);
            output.out.push(Out::Session { to: to.clone(), bytes: Out::addressed(&delayed, "<message".len(), to.as_str()), leaves: false });
        }
    }

    fn status_change(&mut self, nick: &str, stanza: &Element, output: &mut Output) {
        if let Some(occupant) = self.occupants.get_mut(nick) {
            occupant.payload = presence_payload(stanza);
        }
        self.broadcast_presence(nick, &[status::SELF], None, output);
    }

    /// §7.6: unavailable from the old nick with 303 and the new nick, then available from
    /// the new one.
    fn nick_change(&mut self, from: &FullJid, current: &str, new: &str, stanza: &Element, output: &mut Output) {
        let Some(real) = self.occupants.get(current).map(|o| o.real.clone()) else { return };
        if self.occupants.contains_key(new) || self.reserved_by_other(new, &real) {
            self.error(output, from, Some(new), stanza, refuse("conflict", "cancel"));
            return;
        }
        let Some(mut occupant) = self.occupants.remove(current) else { return };
        let recipients = self.all_sessions_with(&occupant);
        for to in &recipients {
            let own = occupant.sessions.contains(to);
            let codes: &[u16] = if own { &[status::NICK_CHANGED, status::SELF] } else { &[status::NICK_CHANGED] };
            let show = own || self.sees_jids(to);
            let bytes = addressed_presence(self.presence_template(current, &occupant, show, codes, true, Some(new), None), to);
            output.out.push(Out::Session { to: to.clone(), bytes, leaves: false });
        }
        occupant.payload = presence_payload(stanza);
        for session in &occupant.sessions {
            self.nicks.insert(session.clone(), new.to_owned());
        }
        self.occupants.insert(new.to_owned(), occupant);
        self.broadcast_presence(new, &[status::SELF], None, output);
    }

    fn leave(&mut self, from: &FullJid, stanza: &Element, output: &mut Output) {
        let status = stanza.child("status", crate::stream::CLIENT_NAMESPACE).map(Element::text);
        if let Some(nick) = self.nicks.get(from) {
            if let Some(occupant) = self.occupants.get_mut(nick.as_str()).filter(|o| o.sessions.len() == 1) {
                occupant.payload = status.map(|text| format!("<status>{}</status>", crate::xml::escape_text(&text))).unwrap_or_default();
            }
        }
        self.remove_session(from, Removal { code: None, actor: None, reason: None, affiliation: None }, output);
    }

    /// One session leaves; the occupant goes when it was its last.
    fn remove_session(&mut self, from: &FullJid, removal: Removal<'_>, output: &mut Output) {
        let Some(nick) = self.nicks.remove(from) else { return };
        let Some(occupant) = self.occupants.get_mut(&nick) else { return };
        occupant.sessions.retain(|s| s != from);
        if !occupant.sessions.is_empty() {
            // Another resource keeps the nick: this session hears it left, and those who see
            // real JIDs get the occupant's presence with the sessions that remain.
            let Some(occupant) = self.occupants.get(&nick) else { return };
            let mut gone = (*occupant).clone();
            gone.sessions = vec![from.clone()];
            let bytes = addressed_presence(self.presence_template(&nick, &gone, true, &[status::SELF], true, None, Some(removal)), from);
            output.out.push(Out::Session { to: from.clone(), bytes, leaves: true });
            self.sessions_changed(&nick, None, output);
            return;
        }
        let Some(mut occupant) = self.occupants.remove(&nick) else { return };
        occupant.sessions.push(from.clone());
        self.announce_removal(&nick, occupant, removal, output);
    }

    /// A multi-session occupant gained or lost a session: those who see real JIDs (and its
    /// other sessions) get its presence listing every session (one `<item/>` each; XEP-0045
    /// leaves multi-session nicks undefined, this is what Prosody sends); for the others
    /// nothing they can see changed.
    fn sessions_changed(&self, nick: &str, except: Option<&FullJid>, output: &mut Output) {
        let Some(occupant) = self.occupants.get(nick) else { return };
        let to: Vec<FullJid> = self
            .occupants
            .iter()
            .filter(|(other_nick, other)| other_nick.as_str() == nick || self.config.whois_anyone || other.role == Role::Moderator)
            .flat_map(|(_, other)| other.sessions.iter().cloned())
            .filter(|session| Some(session) != except)
            .collect();
        if !to.is_empty() {
            let bytes = self.presence_template(nick, occupant, true, &[], false, None, None);
            output.out.push(Out::Broadcast { bytes, name_end: "<presence".len(), to });
        }
    }

    /// The whole occupant leaves (kick, ban, membership removed): every session of it and
    /// every other occupant hear why.
    fn remove_occupant(&mut self, nick: &str, removal: Removal<'_>, output: &mut Output) {
        let Some(occupant) = self.occupants.remove(nick) else { return };
        for session in &occupant.sessions {
            self.nicks.remove(session);
        }
        self.announce_removal(nick, occupant, removal, output);
    }

    fn announce_removal(&mut self, nick: &str, mut occupant: Occupant, removal: Removal<'_>, output: &mut Output) {
        occupant.role = Role::None;
        let code: Vec<u16> = removal.code.into_iter().collect();
        let mut own = code.clone();
        own.push(status::SELF);
        for to in &occupant.sessions {
            let bytes = addressed_presence(self.presence_template(nick, &occupant, true, &own, true, None, Some(removal)), to);
            output.out.push(Out::Session { to: to.clone(), bytes, leaves: true });
        }
        self.broadcast_variants(nick, &occupant, &code, true, Some(removal), &[], output);
        if self.occupants.is_empty() && !self.config.persistent {
            // §10.1.3 / §10.9: a temporary room ends with its last occupant.
            output.destroyed = true;
        }
    }

    /// Sends an occupant's current presence to every occupant (`own` codes to its own
    /// sessions).
    fn broadcast_presence(&self, nick: &str, own: &[u16], removal: Option<Removal<'_>>, output: &mut Output) {
        let Some(occupant) = self.occupants.get(nick) else { return };
        for to in &occupant.sessions {
            let bytes = addressed_presence(self.presence_template(nick, occupant, true, own, false, None, removal), to);
            output.out.push(Out::Session { to: to.clone(), bytes, leaves: false });
        }
        self.broadcast_variants(nick, occupant, &[], false, removal, &occupant.sessions, output);
    }

    /// One broadcast for the occupants who see real JIDs and one for those who do not.
    #[allow(clippy::too_many_arguments)]
    fn broadcast_variants(
        &self,
        nick: &str,
        occupant: &Occupant,
        codes: &[u16],
        unavailable: bool,
        removal: Option<Removal<'_>>,
        except: &[FullJid],
        output: &mut Output,
    ) {
        let mut seeing = Vec::new();
        let mut blind = Vec::new();
        for other in self.occupants.values() {
            for session in &other.sessions {
                if except.contains(session) {
                    continue;
                }
                if self.config.whois_anyone || other.role == Role::Moderator {
                    seeing.push(session.clone());
                } else {
                    blind.push(session.clone());
                }
            }
        }
        for (show, to) in [(true, seeing), (false, blind)] {
            if !to.is_empty() {
                let bytes = self.presence_template(nick, occupant, show, codes, unavailable, None, removal);
                output.out.push(Out::Broadcast { bytes, name_end: "<presence".len(), to });
            }
        }
    }

    fn all_sessions_with(&self, extra: &Occupant) -> Vec<FullJid> {
        let mut all: Vec<FullJid> = self.occupants.values().flat_map(|o| o.sessions.iter().cloned()).collect();
        all.extend(extra.sessions.iter().cloned());
        all
    }

    /// Does this session see real JIDs (non-anonymous room, or a moderator)?
    fn sees_jids(&self, session: &FullJid) -> bool {
        self.config.whois_anyone
            || self.nicks.get(session).and_then(|nick| self.occupants.get(nick)).is_some_and(|o| o.role == Role::Moderator)
    }

    fn presence_bytes(
        &self,
        nick: &str,
        occupant: &Occupant,
        to: &FullJid,
        show_jid: bool,
        codes: &[u16],
        removal: Option<Removal<'_>>,
    ) -> Vec<u8> {
        addressed_presence(self.presence_template(nick, occupant, show_jid, codes, false, None, removal), to)
    }

    /// `<presence from='room/nick'>payload<x muc#user><item …/><status …/></x></presence>`,
    /// without `to`.
    #[allow(clippy::too_many_arguments)]
    fn presence_template(
        &self,
        nick: &str,
        occupant: &Occupant,
        show_jid: bool,
        codes: &[u16],
        unavailable: bool,
        new_nick: Option<&str>,
        removal: Option<Removal<'_>>,
    ) -> Vec<u8> {
        let affiliation = removal.and_then(|r| r.affiliation).unwrap_or_else(|| self.affiliation_of(&occupant.real));
        let mut item = Element::new("item", MUC_USER_NAMESPACE)
            .with_attribute("affiliation", affiliation.name())
            // A nick change's unavailable presence keeps the role (§7.6.3): the occupant stays.
            .with_attribute("role", if unavailable && new_nick.is_none() { Role::None.name() } else { occupant.role.name() });
        if show_jid {
            // The session's full JID; with several sessions, each gets an item of its own
            // (below), this one names the first.
            let jid = occupant.sessions.first().map(|s| s.as_str().to_owned()).unwrap_or_else(|| occupant.real.as_str().to_owned());
            item.set_attribute("jid", &jid);
        }
        let mut more_items = Vec::new();
        if show_jid {
            for session in occupant.sessions.iter().skip(1) {
                let mut other = Element::new("item", MUC_USER_NAMESPACE);
                other.attributes = item.attributes.clone();
                other.set_attribute("jid", session.as_str());
                more_items.push(other);
            }
        }
        if let Some(new_nick) = new_nick {
            item.set_attribute("nick", new_nick);
        }
        if let Some(removal) = removal {
            if let Some(actor) = removal.actor {
                let mut element = Element::new("actor", MUC_USER_NAMESPACE).with_attribute("nick", actor);
                // The actor's real JID (XEP-0045 1.16+: `<actor jid/>`) for those who see real
                // JIDs; an occupant's own copy carries it only in a non-anonymous room.
                let sees = show_jid && (self.config.whois_anyone || !codes.contains(&status::SELF));
                if let Some(real) = self.occupants.get(actor).filter(|_| sees) {
                    let jid = match real.sessions.as_slice() {
                        [one] => one.as_str().to_owned(),
                        _ => real.real.as_str().to_owned(),
                    };
                    element.set_attribute("jid", &jid);
                }
                item = item.with_child(element);
            }
            if let Some(reason) = removal.reason.filter(|r| !r.is_empty()) {
                item = item.with_child(Element::new("reason", MUC_USER_NAMESPACE).with_text(reason));
            }
        }
        let mut x = Element::new("x", MUC_USER_NAMESPACE).with_child(item);
        for other in more_items {
            x = x.with_child(other);
        }
        for code in codes {
            x = x.with_child(Element::new("status", MUC_USER_NAMESPACE).with_attribute("code", &code.to_string()));
        }
        let mut out = String::with_capacity(256 + occupant.payload.len());
        out.push_str("<presence");
        push_attribute(&mut out, "xmlns", crate::stream::CLIENT_NAMESPACE);
        push_attribute(&mut out, "from", &format!("{}/{}", self.jid, nick));
        if unavailable {
            push_attribute(&mut out, "type", "unavailable");
        }
        out.push('>');
        out.push_str(&occupant.payload);
        out.push_str(&x.to_xml());
        out.push_str("</presence>");
        out.into_bytes()
    }

    // -----------------------------------------------------------------------------------
    // Messages (§7.4, §7.5, §7.8, §8.1).
    // -----------------------------------------------------------------------------------

    fn message_to_room(&mut self, from: &FullJid, stanza: &Element, now_ms: u64, settings: &Settings, output: &mut Output) {
        let stanza_type = stanza.attribute("type");
        let user_x = stanza.child("x", MUC_USER_NAMESPACE);
        if stanza_type == Some("error") {
            // The occupant's client or server refused a groupchat message: it is gone.
            if self.nicks.contains_key(from) {
                self.remove_session(
                    from,
                    Removal { code: Some(status::SERVICE_ERROR), actor: None, reason: None, affiliation: None },
                    output,
                );
            }
            return;
        }
        if let Some(x) = user_x {
            if x.child("invite", MUC_USER_NAMESPACE).is_some() {
                return self.invite(from, stanza, x, now_ms, settings, output);
            }
            if let Some(decline) = x.child("decline", MUC_USER_NAMESPACE) {
                return self.decline(from, decline, output);
            }
        }
        if stanza_type != Some("groupchat") {
            // §7.4: only groupchat messages go to the room (voice requests are not supported).
            self.error(output, from, None, stanza, refuse("bad-request", "modify"));
            return;
        }
        let Some(nick) = self.nicks.get(from).cloned() else {
            // §7.4: a non-occupant may not post.
            self.error(output, from, None, stanza, refuse("not-acceptable", "cancel"));
            return;
        };
        // `nicks` and `occupants` change together, so the nick names an occupant.
        let Some(role) = self.occupants.get(&nick).map(|o| o.role) else { return };
        let subject = stanza.child("subject", crate::stream::CLIENT_NAMESPACE);
        let body = stanza.child("body", crate::stream::CLIENT_NAMESPACE);
        if let (Some(subject), None) = (subject, body) {
            // §8.1: moderators, or participants when the room lets them.
            if !(role == Role::Moderator || (self.config.change_subject && role >= Role::Participant)) {
                self.error(output, from, None, stanza, refuse("forbidden", "auth"));
                return;
            }
            self.config.subject = truncate(&subject.text(), ROOM_TEXT_BYTES_MAX);
            self.config.subject_by = nick.clone();
            self.store_config(output);
            let message = self.reflected(&nick, stanza, None);
            self.broadcast_message(message, output);
            return;
        }
        if role < Role::Participant {
            // §7.4: visitors have no voice in a moderated room.
            self.error(output, from, None, stanza, refuse("forbidden", "auth"));
            return;
        }
        if !self.take_token(&nick, now_ms, settings) {
            self.error(output, from, None, stanza, refuse("resource-constraint", "wait"));
            return;
        }
        let archived = self.logging() && body.is_some();
        let id = if archived {
            // Above the run's floor from the start (the runtime sets it at load and creation).
            self.archive_last += 1;
            Some(self.archive_last)
        } else {
            None
        };
        let message = self.reflected(&nick, stanza, id);
        if body.is_some() {
            self.remember(now_ms, message.clone());
        }
        if let Some(id) = id {
            let archived = ArchivedMessage { id, stamp_ms: now_ms, with: format!("{}/{}", self.jid, nick), bytes: message.clone() };
            output.records.push(Record::ArchiveAppend {
                user: self.jid.as_str().to_owned(),
                id,
                kept: crate::limits::ARCHIVE_MESSAGES_MAX,
                message: archived.encode(),
            });
        }
        self.broadcast_message(message, output);
    }

    fn broadcast_message(&self, message: Vec<u8>, output: &mut Output) {
        let to: Vec<FullJid> = self.occupants.values().flat_map(|o| o.sessions.iter().cloned()).collect();
        output.out.push(Out::Broadcast { bytes: message, name_end: "<message".len(), to });
    }

    fn remember(&mut self, stamp_ms: u64, bytes: Vec<u8>) {
        let limit = self.config.history_length as usize;
        if limit == 0 {
            self.history.clear();
            self.history_bytes = 0;
            return;
        }
        if bytes.len() > HISTORY_BYTES_MAX {
            return;
        }
        while self.history.len() >= limit || self.history_bytes + bytes.len() > HISTORY_BYTES_MAX {
            let Some(oldest) = self.history.pop_front() else { break };
            self.history_bytes -= oldest.bytes.len();
        }
        let chars = String::from_utf8_lossy(&bytes).chars().count();
        self.history_bytes += bytes.len();
        self.history.push_back(HistoryEntry { stamp_ms, bytes, chars });
    }

    /// The message as the room sends it: from `room/nick`, type groupchat, the sender's
    /// payload without any stanza-id claiming to be ours (XEP-0359 §3.1), plus ours.
    fn reflected(&self, nick: &str, stanza: &Element, archive_id: Option<u64>) -> Vec<u8> {
        let mut message = Element::new("message", crate::stream::CLIENT_NAMESPACE)
            .with_attribute("from", &format!("{}/{}", self.jid, nick))
            .with_attribute("type", "groupchat");
        for attribute in ["id", "xml:lang"] {
            if let Some(value) = stanza.attribute(attribute) {
                message.set_attribute(attribute, value);
            }
        }
        for node in &stanza.children {
            if let Node::Element(child) = node {
                if child.name == "stanza-id" && child.namespace == STANZA_ID_NAMESPACE && child.attribute("by") == Some(self.jid.as_str()) {
                    continue;
                }
                message.children.push(node.clone());
            }
        }
        if let Some(id) = archive_id {
            message = message.with_child(
                Element::new("stanza-id", STANZA_ID_NAMESPACE)
                    .with_attribute(
                        "id",
                        &crate::archive::ArchivedMessage { id, stamp_ms: 0, with: String::new(), bytes: Vec::new() }.id_string(),
                    )
                    .with_attribute("by", self.jid.as_str()),
            );
        }
        message.to_xml().into_bytes()
    }

    fn take_token(&mut self, nick: &str, now_ms: u64, settings: &Settings) -> bool {
        let Some(occupant) = self.occupants.get_mut(nick) else { return false };
        let elapsed_s = now_ms.saturating_sub(occupant.refilled_ms) as f64 / 1000.0;
        occupant.tokens =
            (occupant.tokens.min(settings.occupant_burst) + elapsed_s * settings.occupant_messages_per_s).min(settings.occupant_burst);
        occupant.refilled_ms = now_ms;
        if occupant.tokens < 1.0 {
            return false;
        }
        occupant.tokens -= 1.0;
        true
    }

    /// §7.5: a private message to one occupant, from the sender's nick.
    fn private_message(&mut self, from: &FullJid, to_nick: &str, stanza: &Element, now_ms: u64, settings: &Settings, output: &mut Output) {
        match stanza.attribute("type") {
            Some("error") => return,
            Some("groupchat") => {
                // §7.5: a groupchat message to one occupant is refused.
                self.error(output, from, Some(to_nick), stanza, refuse("bad-request", "modify"));
                return;
            }
            _ => {}
        }
        let Some(nick) = self.nicks.get(from).cloned() else {
            self.error(output, from, Some(to_nick), stanza, refuse("not-acceptable", "cancel"));
            return;
        };
        let Some(role) = self.occupants.get(&nick).map(|o| o.role) else { return };
        let allowed = match self.config.allow_pm {
            PmPolicy::Anyone => true,
            PmPolicy::Participants => role >= Role::Participant,
            PmPolicy::Moderators => role == Role::Moderator,
            PmPolicy::Nobody => false,
        };
        if !allowed {
            self.error(output, from, Some(to_nick), stanza, refuse("forbidden", "auth"));
            return;
        }
        let Some(target) = self.occupants.get(to_nick) else {
            self.error(output, from, Some(to_nick), stanza, refuse("item-not-found", "cancel"));
            return;
        };
        let targets = target.sessions.clone();
        if !self.take_token(&nick, now_ms, settings) {
            self.error(output, from, Some(to_nick), stanza, refuse("resource-constraint", "wait"));
            return;
        }
        let mut message = stanza.clone();
        message.attributes.retain(|(name, _)| name != "to" && name != "from");
        message.set_attribute("from", &format!("{}/{}", self.jid, nick));
        if message.child("x", MUC_USER_NAMESPACE).is_none() {
            // §7.5: marks the message as a private message from a room.
            message = message.with_child(Element::new("x", MUC_USER_NAMESPACE));
        }
        let bytes = message.to_xml().into_bytes();
        output.out.push(Out::Broadcast { bytes, name_end: "<message".len(), to: targets });
    }

    /// §7.8.2 mediated invitations.
    fn invite(&mut self, from: &FullJid, stanza: &Element, x: &Element, now_ms: u64, settings: &Settings, output: &mut Output) {
        let affiliation = self.affiliation_of(&from.bare());
        let occupant = self.nicks.contains_key(from);
        // §7.8.2 and `muc#roomconfig_allowinvites`: admins and owners may always invite;
        // others when the room allows it (members of a members-only room, occupants of an
        // open one).
        let allowed = affiliation >= Affiliation::Admin
            || (self.config.allow_invites && if self.config.members_only { affiliation >= Affiliation::Member } else { occupant });
        if !allowed {
            self.error(output, from, None, stanza, refuse("forbidden", "auth"));
            return;
        }
        let invites: Vec<&Element> = x.elements().filter(|e| e.name == "invite" && e.namespace == MUC_USER_NAMESPACE).collect();
        if invites.len() > INVITES_PER_MESSAGE_MAX {
            self.error(output, from, None, stanza, refuse("policy-violation", "modify"));
            return;
        }
        // Invitations cost a token like a message (each may be stored offline).
        if let Some(nick) = self.nicks.get(from).cloned() {
            if !self.take_token(&nick, now_ms, settings) {
                self.error(output, from, None, stanza, refuse("resource-constraint", "wait"));
                return;
            }
        }
        let mut targets = Vec::new();
        for invite in &invites {
            match invite.attribute("to").map(Jid::parse) {
                Some(Ok(jid)) => targets.push((jid, invite.child("reason", MUC_USER_NAMESPACE).map(Element::text))),
                _ => {
                    self.error(output, from, None, stanza, refuse("jid-malformed", "modify"));
                    return;
                }
            }
        }
        for (invitee, reason) in targets {
            let bare = invitee.bare();
            if self.affiliation_of(&bare) == Affiliation::Outcast {
                self.error(output, from, None, stanza, refuse("forbidden", "auth"));
                continue;
            }
            if self.config.members_only && self.affiliation_of(&bare) < Affiliation::Member {
                if self.affiliations.len() >= AFFILIATIONS_MAX {
                    self.error(output, from, None, stanza, refuse("resource-constraint", "wait"));
                    continue;
                }
                // §7.8.2: in a members-only room the invitee becomes a member.
                self.set_affiliation(&bare, Affiliation::Member, None, "", output);
            }
            if self.invitations.len() >= INVITATIONS_REMEMBERED_MAX {
                self.invitations.pop_front();
            }
            self.invitations.push_back((bare.as_str().to_owned(), Jid::Full(from.clone())));
            // §7.8.2 allows the inviter's bare, full or occupant JID: a semi-anonymous room
            // does not reveal an occupant's real JID to someone who is not even in it.
            let inviter = match self.nicks.get(from) {
                Some(nick) if !self.config.whois_anyone => format!("{}/{}", self.jid, nick),
                _ => from.bare().as_str().to_owned(),
            };
            let mut invite = Element::new("invite", MUC_USER_NAMESPACE).with_attribute("from", &inviter);
            if let Some(reason) = reason {
                invite = invite.with_child(Element::new("reason", MUC_USER_NAMESPACE).with_text(&truncate(&reason, ROOM_TEXT_BYTES_MAX)));
            }
            let mut user_x = Element::new("x", MUC_USER_NAMESPACE).with_child(invite);
            if let Some(password) = &self.config.password {
                user_x = user_x.with_child(Element::new("password", MUC_USER_NAMESPACE).with_text(password));
            }
            let mut message = Element::new("message", crate::stream::CLIENT_NAMESPACE)
                .with_attribute("from", self.jid.as_str())
                .with_attribute("to", invitee.as_str())
                .with_child(user_x);
            if let Some(id) = stanza.attribute("id") {
                message.set_attribute("id", id);
            }
            output.out.push(Out::Route {
                to: invitee,
                from: Jid::Bare(self.jid.clone()),
                kind: StanzaKind::Message,
                stanza_type: None,
                id: stanza.attribute("id").map(str::to_owned),
                bytes: message.to_xml().into_bytes(),
            });
        }
    }

    /// §7.8.3: a declined invitation goes back to the inviter: only an invitee may decline,
    /// once, and only to whoever invited it (the room sends nothing else on anyone's behalf).
    fn decline(&mut self, from: &FullJid, decline: &Element, output: &mut Output) {
        let invitee = from.bare();
        let Some(index) = self.invitations.iter().position(|(jid, _)| jid == invitee.as_str()) else { return };
        let Some((_, inviter)) = self.invitations.remove(index) else { return };
        let mut element = Element::new("decline", MUC_USER_NAMESPACE).with_attribute("from", from.bare().as_str());
        if let Some(reason) = decline.child("reason", MUC_USER_NAMESPACE) {
            element =
                element.with_child(Element::new("reason", MUC_USER_NAMESPACE).with_text(&truncate(&reason.text(), ROOM_TEXT_BYTES_MAX)));
        }
        let message = Element::new("message", crate::stream::CLIENT_NAMESPACE)
            .with_attribute("from", self.jid.as_str())
            .with_attribute("to", inviter.as_str())
            .with_child(Element::new("x", MUC_USER_NAMESPACE).with_child(element));
        output.out.push(Out::Route {
            to: inviter,
            from: Jid::Bare(self.jid.clone()),
            kind: StanzaKind::Message,
            stanza_type: None,
            id: None,
            bytes: message.to_xml().into_bytes(),
        });
    }

    // -----------------------------------------------------------------------------------
    // IQ: disco (§6), admin (§8–9), owner (§10), archive (XEP-0313), to occupants (§7.5).
    // -----------------------------------------------------------------------------------

    fn iq_to_room(&mut self, from: &FullJid, stanza: &Element, settings: &Settings, output: &mut Output) {
        let stanza_type = stanza.attribute("type").unwrap_or("");
        if matches!(stanza_type, "result" | "error") {
            return;
        }
        let id = stanza.attribute("id").unwrap_or("").to_owned();
        let Some(payload) = stanza.elements().next() else {
            self.error(output, from, None, stanza, refuse("bad-request", "modify"));
            return;
        };
        let affiliation = self.affiliation_of(&from.bare());
        if self.locked && affiliation != Affiliation::Owner {
            self.error(output, from, None, stanza, refuse("item-not-found", "cancel"));
            return;
        }
        let result = match (stanza_type, payload.name.as_str(), payload.namespace.as_str()) {
            ("get", "query", DISCO_INFO_NAMESPACE) => Ok(Some(self.disco_info(from, payload.attribute("node")))),
            ("get", "query", DISCO_ITEMS_NAMESPACE) => Ok(Some(self.disco_items(from))),
            ("get", "ping", PING_NAMESPACE) => Ok(None),
            ("get", "query", MUC_ADMIN_NAMESPACE) => self.admin_get(from, payload).map(Some),
            ("set", "query", MUC_ADMIN_NAMESPACE) => self.admin_set(from, payload, output).map(|()| None),
            ("get", "query", MUC_OWNER_NAMESPACE) => {
                if affiliation == Affiliation::Owner {
                    Ok(Some(Element::new("query", MUC_OWNER_NAMESPACE).with_child(self.config_form(settings))))
                } else {
                    Err(refuse("forbidden", "auth"))
                }
            }
            ("get", "query", REGISTER_NAMESPACE) => self.registration_form(from).map(Some),
            ("set", "query", REGISTER_NAMESPACE) => self.register(from, payload, output).map(|()| None),
            ("set", "query", MUC_OWNER_NAMESPACE) => {
                let mark = output.out.len();
                let answer = self.owner_set(from, payload, settings, output);
                if answer.is_ok() {
                    let bytes = iq_result(&id, Some(self.jid.as_str()), from.as_str(), None);
                    output.out.insert(mark, Out::Session { to: from.clone(), bytes, leaves: false });
                    return;
                }
                answer.map(|()| None)
            }
            ("get", "query", MAM_NAMESPACE) => {
                output.out.push(Out::Session {
                    to: from.clone(),
                    bytes: self.from_room(crate::archive::fields_iq(&id, from.as_str())),
                    leaves: false,
                });
                return;
            }
            ("set", "query", MAM_NAMESPACE) => {
                let member = affiliation >= Affiliation::Member || self.nicks.contains_key(from);
                let closed = self.config.members_only || !self.config.public || self.config.password.is_some();
                if affiliation == Affiliation::Outcast || (!member && closed) {
                    Err(refuse("forbidden", "auth"))
                } else if !self.config.persistent || !self.config.logging {
                    Err(refuse("feature-not-implemented", "cancel"))
                } else {
                    match crate::archive::parse_query(payload) {
                        Ok(query) => {
                            output.archive_query = Some(RoomArchiveQuery { requester: from.clone(), id, query });
                            return;
                        }
                        Err((condition, _)) => Err(refuse(condition, crate::routing::error_type(condition))),
                    }
                }
            }
            _ => Err(refuse("service-unavailable", "cancel")),
        };
        match result {
            Ok(payload) => {
                let bytes = iq_result(&id, Some(self.jid.as_str()), from.as_str(), payload.as_ref());
                // The room may be gone (destroyed or emptied) but the requester still gets
                // its answer.
                output.out.push(Out::Session { to: from.clone(), bytes, leaves: false });
            }
            Err(refusal) => self.error(output, from, None, stanza, refusal),
        }
    }

    /// Adds `from='room'` to a stanza built without one (archive answers).
    pub fn from_room(&self, bytes: Vec<u8>) -> Vec<u8> {
        with_from(bytes, self.jid.as_str())
    }

    fn disco_info(&self, from: &FullJid, node: Option<&str>) -> Element {
        let mut query = Element::new("query", DISCO_INFO_NAMESPACE);
        if let Some(node) = node {
            query.set_attribute("node", node);
            if node == "x-roomuser-item" {
                // §7.12: the requester's reserved nickname, if any.
                if let Some(nick) = self.affiliations.get(from.bare().as_str()).and_then(|e| e.nick.clone()) {
                    query = query.with_child(
                        Element::new("identity", DISCO_INFO_NAMESPACE)
                            .with_attribute("category", "conference")
                            .with_attribute("name", &nick)
                            .with_attribute("type", "text"),
                    );
                }
            }
            return query;
        }
        query = query.with_child(
            Element::new("identity", DISCO_INFO_NAMESPACE)
                .with_attribute("category", "conference")
                .with_attribute("name", self.display_name())
                .with_attribute("type", "text"),
        );
        let config = &self.config;
        let mut features = vec![
            MUC_NAMESPACE,
            DISCO_INFO_NAMESPACE,
            if config.persistent { "muc_persistent" } else { "muc_temporary" },
            if config.public { "muc_public" } else { "muc_hidden" },
            if config.members_only { "muc_membersonly" } else { "muc_open" },
            if config.moderated { "muc_moderated" } else { "muc_unmoderated" },
            if config.password.is_some() { "muc_passwordprotected" } else { "muc_unsecured" },
            if config.whois_anyone { "muc_nonanonymous" } else { "muc_semianonymous" },
        ];
        if self.logging() {
            // Only archived messages carry our stanza-id (XEP-0359 §5 advertises it).
            features.push(MAM_NAMESPACE);
            features.push(STANZA_ID_NAMESPACE);
        }
        for feature in features {
            query = query.with_child(Element::new("feature", DISCO_INFO_NAMESPACE).with_attribute("var", feature));
        }
        // §6.4: extended information (XEP-0128).
        let form = Element::new("x", DATA_FORMS_NAMESPACE)
            .with_attribute("type", "result")
            .with_child(field("FORM_TYPE", Some("hidden"), None, &[ROOMINFO_FORM]))
            .with_child(field("muc#roominfo_description", None, Some("Description"), &[&config.description]))
            .with_child(field("muc#roominfo_subject", None, Some("Subject"), &[&config.subject]))
            .with_child(field("muc#roominfo_occupants", None, Some("Number of occupants"), &[&self.occupants.len().to_string()]))
            .with_child(field(
                "muc#roomconfig_changesubject",
                None,
                Some("Occupants may change the subject"),
                &[boolean_value(config.change_subject)],
            ));
        query.with_child(form)
    }

    /// §6.5: the occupants, to occupants and for public rooms; nothing otherwise.
    fn disco_items(&self, from: &FullJid) -> Element {
        let mut query = Element::new("query", DISCO_ITEMS_NAMESPACE);
        if self.config.public || self.nicks.contains_key(from) {
            for nick in self.occupants.keys() {
                query =
                    query.with_child(Element::new("item", DISCO_ITEMS_NAMESPACE).with_attribute("jid", &format!("{}/{}", self.jid, nick)));
            }
        }
        query
    }

    /// §8.5, §9.5, §10.5: role lists for moderators, affiliation lists for admins and owners.
    fn admin_get(&self, from: &FullJid, query: &Element) -> Result<Element, Refusal> {
        let Some(item) = query.child("item", MUC_ADMIN_NAMESPACE) else { return Err(refuse("bad-request", "modify")) };
        let mut result = Element::new("query", MUC_ADMIN_NAMESPACE);
        if let Some(role) = item.attribute("role") {
            let role = Role::from_name(role).ok_or(refuse("bad-request", "modify"))?;
            if self.role_of(from) != Role::Moderator {
                return Err(refuse("forbidden", "auth"));
            }
            for (nick, occupant) in self.occupants.iter().filter(|(_, o)| o.role == role) {
                result = result.with_child(
                    Element::new("item", MUC_ADMIN_NAMESPACE)
                        .with_attribute("affiliation", self.affiliation_of(&occupant.real).name())
                        .with_attribute("jid", occupant.real.as_str())
                        .with_attribute("nick", nick)
                        .with_attribute("role", role.name()),
                );
            }
            return Ok(result);
        }
        let affiliation = item.attribute("affiliation").and_then(Affiliation::from_name).ok_or(refuse("bad-request", "modify"))?;
        let mine = self.affiliation_of(&from.bare());
        // The lists name real JIDs. §9.5 gives the member list to admins, and "if the room is
        // non-anonymous, a service SHOULD also return the member list to any occupant in a
        // members-only room ... [and] allow any member to retrieve [it] even if not yet an
        // occupant". In a non-anonymous room members also see who owns and administers it
        // (everyone there sees real JIDs anyway; Prosody does the same); the ban list stays
        // with admins.
        let open_book =
            self.config.whois_anyone && (mine >= Affiliation::Member || (self.config.members_only && self.nicks.contains_key(from)));
        let allowed = match affiliation {
            Affiliation::None => return Err(refuse("bad-request", "modify")),
            Affiliation::Member | Affiliation::Admin | Affiliation::Owner => mine >= Affiliation::Admin || open_book,
            Affiliation::Outcast => mine >= Affiliation::Admin,
        };
        if !allowed {
            return Err(refuse("forbidden", "auth"));
        }
        for (jid, entry) in self.affiliations.iter().filter(|(_, e)| e.affiliation == affiliation) {
            let mut element =
                Element::new("item", MUC_ADMIN_NAMESPACE).with_attribute("affiliation", affiliation.name()).with_attribute("jid", jid);
            if let Some(nick) = &entry.nick {
                element.set_attribute("nick", nick);
            }
            if !entry.reason.is_empty() {
                element = element.with_child(Element::new("reason", MUC_ADMIN_NAMESPACE).with_text(&entry.reason));
            }
            result = result.with_child(element);
        }
        Ok(result)
    }

    fn role_of(&self, session: &FullJid) -> Role {
        self.nicks.get(session).and_then(|nick| self.occupants.get(nick)).map(|o| o.role).unwrap_or(Role::None)
    }

    /// §8.2–8.7, §9.1–9.8, §10.3–10.7: role and affiliation changes, checked all before any
    /// is applied.
    fn admin_set(&mut self, from: &FullJid, query: &Element, output: &mut Output) -> Result<(), Refusal> {
        enum Change {
            Role { nick: String, role: Role, reason: String },
            Affiliation { jid: BareJid, affiliation: Affiliation, nick: Option<String>, reason: String },
        }
        let items: Vec<&Element> = query.elements().filter(|e| e.name == "item" && e.namespace == MUC_ADMIN_NAMESPACE).collect();
        if items.is_empty() || items.len() > ADMIN_ITEMS_MAX {
            return Err(refuse("bad-request", "modify"));
        }
        let actor_affiliation = self.affiliation_of(&from.bare());
        let actor_role = self.role_of(from);
        let actor_nick = self.nicks.get(from).cloned();
        let mut changes = Vec::with_capacity(items.len());
        let mut owners_left = self.affiliations.values().filter(|e| e.affiliation == Affiliation::Owner).count();
        for item in items {
            let reason = truncate(&item.child("reason", MUC_ADMIN_NAMESPACE).map(Element::text).unwrap_or_default(), ROOM_TEXT_BYTES_MAX);
            if let Some(affiliation) = item.attribute("affiliation") {
                let affiliation = Affiliation::from_name(affiliation).ok_or(refuse("bad-request", "modify"))?;
                let jid = match (item.attribute("jid"), item.attribute("nick")) {
                    (Some(jid), _) => Jid::parse(jid).map_err(|_| refuse("jid-malformed", "modify"))?.bare(),
                    (None, Some(nick)) => self.occupants.get(nick).map(|o| o.real.clone()).ok_or(refuse("item-not-found", "cancel"))?,
                    (None, None) => return Err(refuse("bad-request", "modify")),
                };
                if actor_affiliation < Affiliation::Admin {
                    return Err(refuse("forbidden", "auth"));
                }
                let current = self.affiliation_of(&jid);
                if (current >= Affiliation::Admin || affiliation >= Affiliation::Admin) && actor_affiliation != Affiliation::Owner {
                    // §9: admins manage members and outcasts; owners manage admins and owners.
                    return Err(refuse("not-allowed", "cancel"));
                }
                if current == Affiliation::Owner && affiliation != Affiliation::Owner {
                    if owners_left <= 1 {
                        // §10.6: a room keeps at least one owner.
                        return Err(refuse("conflict", "cancel"));
                    }
                    owners_left -= 1;
                }
                if affiliation != Affiliation::None
                    && !self.affiliations.contains_key(jid.as_str())
                    && self.affiliations.len() >= AFFILIATIONS_MAX
                {
                    return Err(refuse("resource-constraint", "wait"));
                }
                let nick = item.attribute("nick").filter(|_| item.attribute("jid").is_some()).map(str::to_owned);
                changes.push(Change::Affiliation { jid, affiliation, nick, reason });
            } else if let Some(role) = item.attribute("role") {
                let role = Role::from_name(role).ok_or(refuse("bad-request", "modify"))?;
                let nick = item.attribute("nick").ok_or(refuse("bad-request", "modify"))?;
                let target = self.occupants.get(nick).ok_or(refuse("item-not-found", "cancel"))?;
                if actor_role != Role::Moderator {
                    return Err(refuse("forbidden", "auth"));
                }
                let target_affiliation = self.affiliation_of(&target.real);
                let allowed = match role {
                    // §8.2: no kicking an admin or owner, nor anyone above oneself.
                    Role::None => target_affiliation < Affiliation::Admin && target_affiliation <= actor_affiliation,
                    // §9.6: only admins and owners grant moderator.
                    Role::Moderator => actor_affiliation >= Affiliation::Admin,
                    // §8.3–8.4 and §9.7: voice comes and goes freely below moderator; taking
                    // moderator away needs an admin, and never from an admin or owner.
                    Role::Participant | Role::Visitor => {
                        target_affiliation < Affiliation::Admin
                            && target_affiliation <= actor_affiliation
                            && (target.role != Role::Moderator || actor_affiliation >= Affiliation::Admin)
                    }
                };
                if !allowed {
                    return Err(refuse("not-allowed", "cancel"));
                }
                changes.push(Change::Role { nick: nick.to_owned(), role, reason });
            } else {
                return Err(refuse("bad-request", "modify"));
            }
        }
        for change in changes {
            match change {
                Change::Role { nick, role: Role::None, reason } => {
                    let removal =
                        Removal { code: Some(status::KICKED), actor: actor_nick.as_deref(), reason: Some(&reason), affiliation: None };
                    self.remove_occupant(&nick, removal, output);
                }
                Change::Role { nick, role, reason } => {
                    if let Some(occupant) = self.occupants.get_mut(&nick) {
                        occupant.role = role;
                    }
                    let removal = Removal { code: None, actor: actor_nick.as_deref(), reason: Some(&reason), affiliation: None };
                    self.broadcast_presence(&nick, &[status::SELF], Some(removal), output);
                }
                Change::Affiliation { jid, affiliation, nick, reason } => {
                    self.set_affiliation(&jid, affiliation, nick, &reason, output);
                    self.affiliation_changed(&jid, affiliation, actor_nick.as_deref(), &reason, output);
                }
            }
        }
        Ok(())
    }

    /// Records an affiliation (memory, and the store for a persistent room).
    fn set_affiliation(&mut self, jid: &BareJid, affiliation: Affiliation, nick: Option<String>, reason: &str, output: &mut Output) {
        let key = jid.as_str().to_owned();
        if let Some(old) = self.affiliations.get(&key).and_then(|e| e.nick.clone()) {
            self.reserved.remove(&old);
        }
        if affiliation == Affiliation::None {
            self.affiliations.remove(&key);
            if self.config.persistent {
                output.records.push(Record::ItemDelete { user: self.jid.as_str().to_owned(), kind: ItemKind::RoomAffiliation, key });
            }
            return;
        }
        let nick = nick.or_else(|| self.affiliations.get(&key).and_then(|e| e.nick.clone()));
        if let Some(nick) = &nick {
            self.reserved.insert(nick.clone(), key.clone());
            // Someone else in the room under the nickname just reserved leaves it (307), so
            // that its holder can enter under it (as Prosody does; XEP-0045 does not say).
            if self.occupants.get(nick).is_some_and(|o| o.real != *jid) {
                let removal =
                    Removal { code: Some(status::KICKED), actor: None, reason: Some("This nickname is reserved"), affiliation: None };
                self.remove_occupant(nick, removal, output);
            }
        }
        let entry = AffiliationEntry { affiliation, nick, reason: reason.to_owned() };
        if self.config.persistent {
            output.records.push(Record::ItemPut {
                user: self.jid.as_str().to_owned(),
                kind: ItemKind::RoomAffiliation,
                key: key.clone(),
                value: entry.encode(),
            });
        }
        self.affiliations.insert(key, entry);
    }

    /// What an affiliation change does to the user's occupants (§9.1, §9.4, §9.8, §10.7).
    fn affiliation_changed(&mut self, jid: &BareJid, affiliation: Affiliation, actor: Option<&str>, reason: &str, output: &mut Output) {
        let nicks: Vec<String> = self.occupants.iter().filter(|(_, o)| o.real == *jid).map(|(n, _)| n.clone()).collect();
        if nicks.is_empty() {
            // §9.3–§9.8 / §10.3–§10.7: "if the user is not in the room, the service MAY send a
            // message from the room itself to the room occupants". It names the real JID, so
            // only those who may see real JIDs get it (everyone in a non-anonymous room, the
            // moderators otherwise): the member list in their clients stays current.
            let to: Vec<FullJid> = self
                .occupants
                .values()
                .filter(|o| self.config.whois_anyone || o.role == Role::Moderator)
                .flat_map(|o| o.sessions.iter().cloned())
                .collect();
            if !to.is_empty() {
                let mut item = Element::new("item", MUC_USER_NAMESPACE)
                    .with_attribute("affiliation", affiliation.name())
                    .with_attribute("jid", jid.as_str());
                if !reason.is_empty() {
                    item = item.with_child(Element::new("reason", MUC_USER_NAMESPACE).with_text(reason));
                }
                let message = Element::new("message", crate::stream::CLIENT_NAMESPACE)
                    .with_attribute("from", self.jid.as_str())
                    .with_child(Element::new("x", MUC_USER_NAMESPACE).with_child(item));
                output.out.push(Out::Broadcast { bytes: message.to_xml().into_bytes(), name_end: "<message".len(), to });
            }
        }
        for nick in nicks {
            let code = match affiliation {
                Affiliation::Outcast => Some(status::BANNED),
                Affiliation::None if self.config.members_only => Some(status::AFFILIATION_REMOVED),
                _ => None,
            };
            if let Some(code) = code {
                let removal = Removal { code: Some(code), actor, reason: Some(reason), affiliation: Some(affiliation) };
                self.remove_occupant(&nick, removal, output);
                continue;
            }
            let role = self.default_role(affiliation);
            if let Some(occupant) = self.occupants.get_mut(&nick) {
                occupant.role = role;
            }
            let removal = Removal { code: None, actor, reason: Some(reason), affiliation: None };
            self.broadcast_presence(&nick, &[status::SELF], Some(removal), output);
        }
    }

    /// §7.10: who may register. "An implementation MAY restrict this privilege and allow
    /// only room admins to add new members": members, admins and owners register (reserve a
    /// nickname) or leave the member list; an unaffiliated user may not make itself a member
    /// (it would keep that membership if the room became members-only), and approval
    /// requests (§9.9) are not offered.
    fn may_register(&self, jid: &BareJid) -> bool {
        self.affiliation_of(jid) >= Affiliation::Member
    }

    /// §7.10: `<registered/>` with the reserved nickname, or the form to fill.
    fn registration_form(&self, from: &FullJid) -> Result<Element, Refusal> {
        let jid = from.bare();
        if !self.may_register(&jid) {
            return Err(refuse("not-allowed", "cancel"));
        }
        let query = Element::new("query", REGISTER_NAMESPACE);
        // Registered: a member (or more) with a reserved nickname; a member without one
        // (made so by an admin or an invitation) may still register a nickname.
        let registered = self.affiliations.get(jid.as_str()).filter(|e| e.affiliation >= Affiliation::Member).and_then(|e| e.nick.as_ref());
        if let Some(nick) = registered {
            return Ok(query
                .with_child(Element::new("registered", REGISTER_NAMESPACE))
                .with_child(Element::new("username", REGISTER_NAMESPACE).with_text(nick)));
        }
        let mut nick = field("muc#register_roomnick", Some("text-single"), Some("Nickname"), &[]);
        nick = nick.with_child(Element::new("required", DATA_FORMS_NAMESPACE));
        let form = Element::new("x", DATA_FORMS_NAMESPACE)
            .with_attribute("type", "form")
            .with_child(field("FORM_TYPE", Some("hidden"), None, &[REGISTER_FORM]))
            .with_child(nick);
        Ok(query.with_child(form))
    }

    /// §7.10: a submitted registration form reserves the nickname and makes the user a
    /// member; XEP-0077 §3.2 `<remove/>` takes a member off the list again (admins and owners
    /// leave through the admin lists, so that a room never loses its last owner this way).
    fn register(&mut self, from: &FullJid, query: &Element, output: &mut Output) -> Result<(), Refusal> {
        let jid = from.bare();
        if !self.may_register(&jid) {
            return Err(refuse("not-allowed", "cancel"));
        }
        if query.child("remove", REGISTER_NAMESPACE).is_some() {
            return match self.affiliation_of(&jid) {
                Affiliation::Member => {
                    self.set_affiliation(&jid, Affiliation::None, None, "", output);
                    self.affiliation_changed(&jid, Affiliation::None, None, "", output);
                    Ok(())
                }
                _ => Err(refuse("not-allowed", "cancel")),
            };
        }
        // §7.10: "If the user did not include a valid data form, the room MUST return a
        // <bad-request/> error".
        let form = query
            .child("x", DATA_FORMS_NAMESPACE)
            .filter(|x| x.attribute("type") == Some("submit"))
            .ok_or(refuse("bad-request", "modify"))?;
        let value = |var: &str| {
            form.elements()
                .find(|f| f.name == "field" && f.attribute("var") == Some(var))
                .and_then(|f| f.child("value", DATA_FORMS_NAMESPACE).map(Element::text))
        };
        if value("FORM_TYPE").is_some_and(|t| t != REGISTER_FORM) {
            return Err(refuse("bad-request", "modify"));
        }
        let wanted = value("muc#register_roomnick").filter(|n| !n.is_empty()).ok_or(refuse("not-acceptable", "modify"))?;
        // The nickname becomes an occupant JID's resourcepart (§7.2.1).
        let nick = crate::jid::prepare_resource(&wanted).map_err(|_| refuse("jid-malformed", "modify"))?;
        // §7.10: a nickname reserved (or, here, in use) by someone else is a conflict.
        if self.reserved_by_other(&nick, &jid) || self.occupants.get(&nick).is_some_and(|o| o.real != jid) {
            return Err(refuse("conflict", "cancel"));
        }
        let affiliation = self.affiliation_of(&jid);
        let reason = self.affiliations.get(jid.as_str()).map(|e| e.reason.clone()).unwrap_or_default();
        self.set_affiliation(&jid, affiliation, Some(nick), &reason, output);
        // The affiliation is unchanged (only members register): the user's occupants say so
        // again, their roles untouched (a granted voice or moderation stays).
        let nicks: Vec<String> = self.occupants.iter().filter(|(_, o)| o.real == jid).map(|(n, _)| n.clone()).collect();
        for nick in nicks {
            self.broadcast_presence(&nick, &[status::SELF], None, output);
        }
        Ok(())
    }

    fn owner_set(&mut self, from: &FullJid, query: &Element, settings: &Settings, output: &mut Output) -> Result<(), Refusal> {
        if self.affiliation_of(&from.bare()) != Affiliation::Owner {
            return Err(refuse("forbidden", "auth"));
        }
        if let Some(destroy) = query.child("destroy", MUC_OWNER_NAMESPACE) {
            self.destroy(destroy, output);
            return Ok(());
        }
        let Some(form) = query.child("x", DATA_FORMS_NAMESPACE) else { return Err(refuse("bad-request", "modify")) };
        match form.attribute("type") {
            Some("cancel") => {
                // §10.1.3: cancelling the first configuration destroys the new room.
                if self.locked {
                    self.destroy(&Element::new("destroy", MUC_OWNER_NAMESPACE), output);
                }
                Ok(())
            }
            Some("submit") => self.configure(form, settings, output),
            _ => Err(refuse("bad-request", "modify")),
        }
    }

    /// §10.2: applies a submitted configuration form (an empty one makes an instant room,
    /// §10.1.2) and announces the changes (§10.2.1 status codes).
    fn configure(&mut self, form: &Element, settings: &Settings, output: &mut Output) -> Result<(), Refusal> {
        let before = self.config.clone();
        let mut config = self.config.clone();
        let mut password_protected = None;
        let mut secret = config.password.clone();
        for field in form.elements().filter(|e| e.name == "field" && e.namespace == DATA_FORMS_NAMESPACE) {
            let Some(var) = field.attribute("var") else { continue };
            let values: Vec<String> = field.elements().filter(|e| e.name == "value").map(Element::text).collect();
            let value = values.first().map(String::as_str).unwrap_or("");
            let flag = || parse_boolean(value).ok_or(refuse("not-acceptable", "modify"));
            let text = || truncate(value, ROOM_TEXT_BYTES_MAX);
            match var {
                "FORM_TYPE" if value != ROOMCONFIG_FORM => return Err(refuse("bad-request", "modify")),
                "muc#roomconfig_roomname" => config.name = text(),
                "muc#roomconfig_roomdesc" => config.description = text(),
                "muc#roomconfig_persistentroom" => config.persistent = flag()?,
                "muc#roomconfig_publicroom" => config.public = flag()?,
                "muc#roomconfig_membersonly" => config.members_only = flag()?,
                "muc#roomconfig_moderatedroom" => config.moderated = flag()?,
                "muc#roomconfig_passwordprotectedroom" => password_protected = Some(flag()?),
                "muc#roomconfig_roomsecret" => secret = Some(text()).filter(|s| !s.is_empty()),
                "muc#roomconfig_enablelogging" => config.logging = flag()?,
                "muc#roomconfig_changesubject" => config.change_subject = flag()?,
                "muc#roomconfig_allowinvites" => config.allow_invites = flag()?,
                "muc#roomconfig_allowpm" => config.allow_pm = PmPolicy::from_name(value).ok_or(refuse("not-acceptable", "modify"))?,
                "muc#roomconfig_whois" => {
                    config.whois_anyone = match value {
                        "anyone" => true,
                        "moderators" => false,
                        _ => return Err(refuse("not-acceptable", "modify")),
                    }
                }
                "muc#roomconfig_maxusers" => {
                    let max = if value == "none" {
                        settings.max_users
                    } else {
                        value.parse::<u32>().map_err(|_| refuse("not-acceptable", "modify"))?
                    };
                    if max == 0 || max > settings.max_users {
                        return Err(refuse("not-acceptable", "modify"));
                    }
                    config.max_users = max;
                }
                "muc#maxhistoryfetch" | "muc#roomconfig_historylength" => {
                    let length = value.parse::<u32>().map_err(|_| refuse("not-acceptable", "modify"))?;
                    if length > HISTORY_MAX {
                        return Err(refuse("not-acceptable", "modify"));
                    }
                    config.history_length = length;
                }
                // Fields this service does not offer are ignored (XEP-0004 §3.3 lets a
                // form processor do so for fields it did not send).
                _ => {}
            }
        }
        // A submitted secret with no `passwordprotectedroom` field protects the room: an owner
        // who sets a password expects it to be asked for (as Prosody does); the flag alone
        // still decides when it is submitted.
        let protected = password_protected.unwrap_or(secret.is_some());
        config.password = if protected {
            match secret {
                Some(secret) => Some(secret),
                // §10.2: a password-protected room needs a password.
                None => return Err(refuse("not-acceptable", "modify")),
            }
        } else {
            None
        };
        self.config = config;
        self.locked = false;
        while self.history.len() > self.config.history_length as usize {
            let Some(oldest) = self.history.pop_front() else { break };
            self.history_bytes -= oldest.bytes.len();
        }
        // Durability: a room that became persistent is written whole; one that stopped being
        // persistent is removed from the store (its archive with it).
        if self.config.persistent {
            self.store_config(output);
            if !before.persistent {
                for (jid, entry) in &self.affiliations {
                    output.records.push(Record::ItemPut {
                        user: self.jid.as_str().to_owned(),
                        kind: ItemKind::RoomAffiliation,
                        key: jid.clone(),
                        value: entry.encode(),
                    });
                }
            }
        } else if before.persistent {
            output.records.push(Record::AccountDelete { user: self.jid.as_str().to_owned() });
            // A temporary room lives only while occupied.
            output.destroyed = self.occupants.is_empty();
        }
        {
            // §10.2.1: every configuration is announced, the first one too (a privacy change
            // MUST be, and the owner's client learns that the room is now open).
            let mut codes = vec![status::CONFIG_CHANGED];
            if self.logging() != (before.logging && before.persistent) {
                codes.push(if self.logging() { status::LOGGING } else { status::NOT_LOGGING });
            }
            if self.config.whois_anyone != before.whois_anyone {
                codes.push(if self.config.whois_anyone { status::NOW_NON_ANONYMOUS } else { status::NOW_SEMI_ANONYMOUS });
            }
            let mut x = Element::new("x", MUC_USER_NAMESPACE);
            for code in codes {
                x = x.with_child(Element::new("status", MUC_USER_NAMESPACE).with_attribute("code", &code.to_string()));
            }
            let notice = Element::new("message", crate::stream::CLIENT_NAMESPACE)
                .with_attribute("from", self.jid.as_str())
                .with_attribute("type", "groupchat")
                .with_child(x);
            self.broadcast_message(notice.to_xml().into_bytes(), output);
        }
        if self.config.members_only && !before.members_only {
            // §9.4 / §10.2: non-members leave a room that became members-only (322).
            let outsiders: Vec<String> =
                self.occupants.iter().filter(|(_, o)| self.affiliation_of(&o.real) < Affiliation::Member).map(|(n, _)| n.clone()).collect();
            for nick in outsiders {
                let removal = Removal { code: Some(status::MEMBERS_ONLY), actor: None, reason: None, affiliation: None };
                self.remove_occupant(&nick, removal, output);
            }
        }
        Ok(())
    }

    fn store_config(&self, output: &mut Output) {
        if self.config.persistent {
            output.records.push(Record::ItemPut {
                user: self.jid.as_str().to_owned(),
                kind: ItemKind::RoomConfig,
                key: String::new(),
                value: self.config.encode(),
            });
        }
    }

    /// §10.9: every occupant leaves with the destroy notice and the room is forgotten.
    fn destroy(&mut self, destroy: &Element, output: &mut Output) {
        let mut notice = Element::new("destroy", MUC_USER_NAMESPACE);
        if let Some(Ok(venue)) = destroy.attribute("jid").map(Jid::parse) {
            notice.set_attribute("jid", venue.as_str());
        }
        if let Some(reason) = destroy.child("reason", MUC_OWNER_NAMESPACE) {
            notice =
                notice.with_child(Element::new("reason", MUC_USER_NAMESPACE).with_text(&truncate(&reason.text(), ROOM_TEXT_BYTES_MAX)));
        }
        if let Some(password) = destroy.child("password", MUC_OWNER_NAMESPACE) {
            notice =
                notice.with_child(Element::new("password", MUC_USER_NAMESPACE).with_text(&truncate(&password.text(), ROOM_TEXT_BYTES_MAX)));
        }
        for (nick, occupant) in std::mem::take(&mut self.occupants) {
            let x = Element::new("x", MUC_USER_NAMESPACE)
                .with_child(Element::new("item", MUC_USER_NAMESPACE).with_attribute("affiliation", "none").with_attribute("role", "none"))
                .with_child(notice.clone());
            for to in occupant.sessions {
                let presence = Element::new("presence", crate::stream::CLIENT_NAMESPACE)
                    .with_attribute("from", &format!("{}/{}", self.jid, nick))
                    .with_attribute("to", to.as_str())
                    .with_attribute("type", "unavailable")
                    .with_child(x.clone());
                output.out.push(Out::Session { to, bytes: presence.to_xml().into_bytes(), leaves: true });
            }
        }
        self.nicks.clear();
        if self.config.persistent {
            output.records.push(Record::AccountDelete { user: self.jid.as_str().to_owned() });
        }
        output.destroyed = true;
    }

    /// §10.2 configuration form with the current values.
    fn config_form(&self, settings: &Settings) -> Element {
        let config = &self.config;
        let max_users = config.max_users.to_string();
        let history = config.history_length.to_string();
        let mut form = Element::new("x", DATA_FORMS_NAMESPACE)
            .with_attribute("type", "form")
            .with_child(Element::new("title", DATA_FORMS_NAMESPACE).with_text(&format!("Configuration of {}", self.jid)))
            .with_child(field("FORM_TYPE", Some("hidden"), None, &[ROOMCONFIG_FORM]))
            .with_child(field("muc#roomconfig_roomname", Some("text-single"), Some("Name"), &[&config.name]))
            .with_child(field("muc#roomconfig_roomdesc", Some("text-single"), Some("Description"), &[&config.description]))
            .with_child(field("muc#roomconfig_persistentroom", Some("boolean"), Some("Persistent"), &[boolean_value(config.persistent)]))
            .with_child(field(
                "muc#roomconfig_publicroom",
                Some("boolean"),
                Some("Listed in the directory"),
                &[boolean_value(config.public)],
            ))
            .with_child(field("muc#roomconfig_membersonly", Some("boolean"), Some("Members only"), &[boolean_value(config.members_only)]))
            .with_child(field("muc#roomconfig_moderatedroom", Some("boolean"), Some("Moderated"), &[boolean_value(config.moderated)]))
            .with_child(field(
                "muc#roomconfig_passwordprotectedroom",
                Some("boolean"),
                Some("Password required"),
                &[boolean_value(config.password.is_some())],
            ))
            .with_child(field(
                "muc#roomconfig_roomsecret",
                Some("text-private"),
                Some("Password"),
                &[config.password.as_deref().unwrap_or("")],
            ))
            .with_child(field("muc#roomconfig_enablelogging", Some("boolean"), Some("Archive messages"), &[boolean_value(config.logging)]))
            .with_child(field(
                "muc#roomconfig_changesubject",
                Some("boolean"),
                Some("Participants may change the subject"),
                &[boolean_value(config.change_subject)],
            ))
            .with_child(field(
                "muc#roomconfig_allowinvites",
                Some("boolean"),
                Some("Members may invite"),
                &[boolean_value(config.allow_invites)],
            ));
        let mut whois = field(
            "muc#roomconfig_whois",
            Some("list-single"),
            Some("Who may see real JIDs"),
            &[if config.whois_anyone { "anyone" } else { "moderators" }],
        );
        for choice in ["moderators", "anyone"] {
            whois = whois.with_child(option(choice));
        }
        let mut allow_pm =
            field("muc#roomconfig_allowpm", Some("list-single"), Some("Who may send private messages"), &[config.allow_pm.name()]);
        for choice in ["anyone", "participants", "moderators", "none"] {
            allow_pm = allow_pm.with_child(option(choice));
        }
        let mut max = field("muc#roomconfig_maxusers", Some("list-single"), Some("Maximum occupants"), &[&max_users]);
        const CHOICES: [u32; 10] = [10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];
        for choice in CHOICES.into_iter().filter(|n| *n <= settings.max_users) {
            max = max.with_child(option(&choice.to_string()));
        }
        if !CHOICES.contains(&settings.max_users) {
            max = max.with_child(option(&settings.max_users.to_string()));
        }
        form = form.with_child(whois).with_child(allow_pm).with_child(max).with_child(field(
            "muc#maxhistoryfetch",
            Some("text-single"),
            Some("Messages of history sent on join"),
            &[&history],
        ));
        form
    }

    // -----------------------------------------------------------------------------------
    // IQs to occupants (§7.5 and XEP-0054 through the room).
    // -----------------------------------------------------------------------------------

    fn iq_to_occupant(&mut self, from: &FullJid, nick: &str, stanza: &Element, output: &mut Output) {
        let stanza_type = stanza.attribute("type").unwrap_or("");
        let id = stanza.attribute("id").unwrap_or("").to_owned();
        if matches!(stanza_type, "result" | "error") {
            // An answer to a request we forwarded, from the asked session, for the asker.
            self.answer(from.as_str(), nick, stanza, output);
            return;
        }
        let Some(sender_nick) = self.nicks.get(from).cloned() else {
            self.error(output, from, Some(nick), stanza, refuse("not-acceptable", "cancel"));
            return;
        };
        let Some(target) = self.occupants.get(nick) else {
            self.error(output, from, Some(nick), stanza, refuse("item-not-found", "cancel"));
            return;
        };
        if stanza_type == "get" && nick == sender_nick && stanza.child("ping", PING_NAMESPACE).is_some() {
            // XEP-0410 self-ping: the room answers for a joined occupant.
            let bytes = iq_result(&id, Some(&format!("{}/{}", self.jid, nick)), from.as_str(), None);
            output.out.push(Out::Session { to: from.clone(), bytes, leaves: false });
            return;
        }
        let mut forwarded = stanza.clone();
        forwarded.attributes.retain(|(name, _)| name != "to" && name != "from");
        forwarded.set_attribute("from", &format!("{}/{}", self.jid, sender_nick));
        let is_vcard = stanza_type == "get" && stanza.child("vCard", VCARD_NAMESPACE).is_some();
        let answerer = if is_vcard {
            target.real.as_str().to_owned()
        } else {
            target.sessions.first().map(|s| s.as_str().to_owned()).unwrap_or_default()
        };
        if self.pending_iqs.len() >= IQS_PENDING_MAX {
            self.pending_iqs.pop_front();
        }
        self.pending_iqs.push_back(((answerer, id.clone()), from.clone()));
        if is_vcard {
            // XEP-0045 §17.3 / XEP-0054: a vCard is the account's, asked of its server.
            let real = target.real.clone();
            forwarded.set_attribute("to", real.as_str());
            let Ok(asker) = self.jid.with_resource(&sender_nick) else { return };
            output.out.push(Out::Route {
                to: Jid::Bare(real),
                from: Jid::Full(asker),
                kind: StanzaKind::Iq,
                stanza_type: Some("get"),
                id: Some(id),
                bytes: forwarded.to_xml().into_bytes(),
            });
            return;
        }
        let Some(first) = target.sessions.first().cloned() else { return };
        let bytes = Out::addressed(&forwarded.to_xml().into_bytes(), "<iq".len(), first.as_str());
        output.out.push(Out::Session { to: first, bytes, leaves: false });
    }

    /// The answer of an occupant's account (its server, for a vCard request forwarded by
    /// `iq_to_occupant`) to the occupant `nick` who asked.
    pub fn account_answer(&mut self, from: &BareJid, nick: &str, stanza: &Element) -> Output {
        let mut output = Output::default();
        if stanza.name == "iq" && matches!(stanza.attribute("type"), Some("result") | Some("error")) {
            self.answer(from.as_str(), nick, stanza, &mut output);
        }
        output
    }

    /// Passes an answer on only if it answers a request we forwarded to `from` with that id,
    /// and only to the session that asked; it comes from the answerer's nick.
    fn answer(&mut self, from: &str, nick: &str, stanza: &Element, output: &mut Output) {
        let id = stanza.attribute("id").unwrap_or("");
        let Some(index) = self.pending_iqs.iter().position(|((answerer, pending), _)| answerer == from && pending == id) else { return };
        let Some((_, asker)) = self.pending_iqs.remove(index) else { return };
        if self.nicks.get(&asker).map(String::as_str) != Some(nick) {
            return;
        }
        let responder = match Jid::parse(from) {
            Ok(Jid::Full(full)) => self.nicks.get(&full).cloned(),
            Ok(Jid::Bare(bare)) => self.occupants.iter().find(|(_, o)| o.real == bare).map(|(n, _)| n.clone()),
            Err(_) => None,
        };
        let Some(responder) = responder else { return };
        let mut forwarded = stanza.clone();
        forwarded.attributes.retain(|(name, _)| name != "to" && name != "from");
        forwarded.set_attribute("from", &format!("{}/{}", self.jid, responder));
        let bytes = Out::addressed(&forwarded.to_xml().into_bytes(), "<iq".len(), asker.as_str());
        output.out.push(Out::Session { to: asker, bytes, leaves: false });
    }

    // -----------------------------------------------------------------------------------
    // Errors.
    // -----------------------------------------------------------------------------------

    fn error(&self, output: &mut Output, to: &FullJid, nick: Option<&str>, stanza: &Element, refusal: Refusal) {
        if matches!(stanza.attribute("type"), Some("error") | Some("result")) {
            return;
        }
        let from = match nick {
            Some(nick) => format!("{}/{}", self.jid, nick),
            None => self.jid.as_str().to_owned(),
        };
        output.out.push(Out::Session {
            to: to.clone(),
            bytes: error_stanza(
                &stanza.name,
                stanza.attribute("id"),
                &from,
                to.as_str(),
                refusal.condition,
                refusal.error_type,
                self.jid.as_str(),
            ),
            leaves: false,
        });
    }
}

/// A stanza error from the room (XEP-0045 §7.2 examples): `<x xmlns='…muc'/>` on presence
/// errors, `by` naming the room.
fn error_stanza(name: &str, id: Option<&str>, from: &str, to: &str, condition: &str, error_type: &str, by: &str) -> Vec<u8> {
    let mut out = String::with_capacity(256);
    out.push('<');
    out.push_str(name);
    push_attribute(&mut out, "xmlns", crate::stream::CLIENT_NAMESPACE);
    push_attribute(&mut out, "type", "error");
    if let Some(id) = id {
        push_attribute(&mut out, "id", id);
    }
    push_attribute(&mut out, "from", from);
    push_attribute(&mut out, "to", to);
    out.push('>');
    if name == "presence" {
        out.push_str("<x xmlns='");
        out.push_str(MUC_NAMESPACE);
        out.push_str("'/>");
    }
    out.push_str("<error");
    push_attribute(&mut out, "type", error_type);
    push_attribute(&mut out, "by", by);
    out.push_str("><");
    out.push_str(condition);
    out.push_str(" xmlns='");
    out.push_str(STANZAS_NAMESPACE);
    out.push_str("'/></error></");
    out.push_str(name);
    out.push('>');
    out.into_bytes()
}

/// A stanza error from the service for a room that does not exist (or may not be created),
/// as the room would send it.
pub fn no_such_room(stanza: &Element, room: &str, nick: Option<&str>, to: &FullJid, condition: &str) -> Option<Vec<u8>> {
    if matches!(stanza.attribute("type"), Some("error") | Some("result") | Some("unavailable")) {
        return None;
    }
    let from = match nick {
        Some(nick) => format!("{room}/{nick}"),
        None => room.to_owned(),
    };
    Some(error_stanza(&stanza.name, stanza.attribute("id"), &from, to.as_str(), condition, crate::routing::error_type(condition), room))
}

/// Is this stanza a request to join (and maybe create) a room: available presence to
/// `room/nick`?
pub fn is_join(stanza: &Element, nick: Option<&str>) -> bool {
    stanza.name == "presence" && nick.is_some() && stanza.attribute("type").is_none()
}

/// The service's disco#info (XEP-0045 §6.1).
pub fn service_info(name: &str) -> Element {
    let mut query = Element::new("query", DISCO_INFO_NAMESPACE).with_child(
        Element::new("identity", DISCO_INFO_NAMESPACE)
            .with_attribute("category", "conference")
            .with_attribute("name", name)
            .with_attribute("type", "text"),
    );
    for feature in [MUC_NAMESPACE, DISCO_INFO_NAMESPACE, DISCO_ITEMS_NAMESPACE, STANZA_ID_NAMESPACE, MAM_NAMESPACE] {
        query = query.with_child(Element::new("feature", DISCO_INFO_NAMESPACE).with_attribute("var", feature));
    }
    query
}

/// The service's disco#items: its public rooms (§6.3).
pub fn service_items(rooms: &[(String, String)]) -> Element {
    let mut query = Element::new("query", DISCO_ITEMS_NAMESPACE);
    for (jid, name) in rooms {
        query = query.with_child(Element::new("item", DISCO_ITEMS_NAMESPACE).with_attribute("jid", jid).with_attribute("name", name));
    }
    query
}

/// The children of a presence the room rebroadcasts (show, status, priority, caps …): all
/// but the MUC elements, bounded.
fn presence_payload(stanza: &Element) -> String {
    let mut payload = String::new();
    for child in stanza.elements() {
        if child.namespace == MUC_NAMESPACE || child.namespace == MUC_USER_NAMESPACE {
            continue;
        }
        let xml = child.to_xml();
        if payload.len() + xml.len() > OCCUPANT_PRESENCE_BYTES_MAX {
            break;
        }
        payload.push_str(&xml);
    }
    // Children in jabber:client were serialised with their namespace declared (they are top
    // level in `to_xml`); inside the presence that declaration is the default anyway.
    payload.replace(" xmlns='jabber:client'", "")
}

/// A room presence built without `to`, addressed to one session.
fn addressed_presence(template: Vec<u8>, to: &FullJid) -> Vec<u8> {
    Out::addressed(&template, "<presence".len(), to.as_str())
}

/// Adds `from` to a stanza written without one, just after its element name.
pub fn with_from(bytes: Vec<u8>, from: &str) -> Vec<u8> {
    let Some(name_end) = bytes.iter().position(|b| *b == b' ' || *b == b'>' || *b == b'/') else { return bytes };
    insert_attribute(&bytes, name_end, "from", from)
}

/// A copy of a serialised element with ` name='value'` (escaped) inserted at `at`, which is
/// just after the element's name.
fn insert_attribute(bytes: &[u8], at: usize, name: &str, value: &str) -> Vec<u8> {
    let value = escape_attribute(value);
    let mut out = Vec::with_capacity(bytes.len() + name.len() + value.len() + 4);
    out.extend_from_slice(&bytes[..at]);
    out.push(b' ');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"='");
    out.extend_from_slice(value.as_bytes());
    out.push(b'\'');
    out.extend_from_slice(&bytes[at..]);
    out
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framer::parse_element;

    const ROOM: &str = "room@conference.example";

    fn settings() -> Settings {
        Settings { max_users: 50, history_size: 20, occupant_messages_per_s: 1.0, occupant_burst: 3.0 }
    }

    fn full(local: &str) -> FullJid {
        BareJid::new(Some(local), "example").and_then(|b| b.with_resource("r")).expect("jid")
    }

    fn el(xml: &str) -> Element {
        parse_element(xml.as_bytes()).expect("xml")
    }

    /// What `to` receives from an output, in order, as text.
    fn received(output: &Output, to: &FullJid) -> Vec<String> {
        let mut seen = Vec::new();
        for out in &output.out {
            match out {
                Out::Session { to: t, bytes, .. } if t == to => seen.push(String::from_utf8_lossy(bytes).into_owned()),
                Out::Broadcast { bytes, name_end, to: recipients } if recipients.contains(to) => {
                    seen.push(String::from_utf8_lossy(&Out::addressed(bytes, *name_end, to.as_str())).into_owned())
                }
                _ => {}
            }
        }
        seen
    }

    fn codes(stanza: &str) -> Vec<u16> {
        stanza.split("<status code='").skip(1).filter_map(|rest| rest.split('\'').next()?.parse().ok()).collect()
    }

    fn join(room: &mut Room, who: &FullJid, nick: &str, extra: &str, now: u64) -> Output {
        room.handle(who, Some(nick), &el(&format!("<presence><x xmlns='{MUC_NAMESPACE}'>{extra}</x></presence>")), now, &settings())
    }

    fn iq(room: &mut Room, who: &FullJid, kind: &str, payload: &str) -> Output {
        room.handle(who, None, &el(&format!("<iq type='{kind}' id='i'>{payload}</iq>")), 0, &settings())
    }

    fn say(room: &mut Room, who: &FullJid, body: &str, now: u64) -> Output {
        room.handle(who, None, &el(&format!("<message type='groupchat' id='m'><body>{body}</body></message>")), now, &settings())
    }

    /// A room created by `owner` (nick Owner) and unlocked as an instant room.
    fn open_room(owner: &FullJid) -> Room {
        let mut room = Room::create(BareJid::new(Some("room"), "conference.example").expect("jid"), &owner.bare(), &settings(), 0);
        join(&mut room, owner, "Owner", "", 0);
        let out =
            iq(&mut room, owner, "set", &format!("<query xmlns='{MUC_OWNER_NAMESPACE}'><x xmlns='jabber:x:data' type='submit'/></query>"));
        assert!(received(&out, owner).iter().any(|s| s.contains("type='result'")));
        room
    }

    fn configure(room: &mut Room, owner: &FullJid, fields: &[(&str, &str)]) -> Output {
        let mut form = String::new();
        for (var, value) in fields {
            form.push_str(&format!("<field var='{var}'><value>{value}</value></field>"));
        }
        iq(room, owner, "set", &format!("<query xmlns='{MUC_OWNER_NAMESPACE}'><x xmlns='jabber:x:data' type='submit'>{form}</x></query>"))
    }

    fn admin_set(room: &mut Room, who: &FullJid, item: &str) -> Output {
        iq(room, who, "set", &format!("<query xmlns='{MUC_ADMIN_NAMESPACE}'>{item}</query>"))
    }

    fn error_of(output: &Output, to: &FullJid) -> Option<String> {
        received(output, to).into_iter().find(|s| s.contains("type='error'"))
    }

    #[test]
    fn creation_is_locked_until_configured_and_joins_come_in_spec_order() {
        let (owner, guest) = (full("owner"), full("guest"));
        let mut room = Room::create(BareJid::new(Some("room"), "conference.example").expect("jid"), &owner.bare(), &settings(), 0);
        let created = join(&mut room, &owner, "Owner", "", 0);
        let own = received(&created, &owner);
        assert!(codes(&own[0]).contains(&110) && codes(&own[0]).contains(&201), "{own:?}");
        assert!(own.last().is_some_and(|s| s.contains("<subject")), "{own:?}");
        let refused = join(&mut room, &guest, "Guest", "", 0);
        assert!(error_of(&refused, &guest).is_some_and(|e| e.contains("item-not-found")), "§10.1.2 locked");
        assert!(matches!(refused.out.last(), Some(Out::Session { leaves: true, .. })), "a refused join is forgotten by the session");
        configure(&mut room, &owner, &[]);
        let joined = join(&mut room, &guest, "Guest", "", 0);
        let seen = received(&joined, &guest);
        assert!(seen[0].contains(&format!("from='{ROOM}/Owner'")) && !codes(&seen[0]).contains(&110), "{seen:?}");
        assert!(seen[1].contains(&format!("from='{ROOM}/Guest'")) && codes(&seen[1]) == vec![110], "{seen:?}");
        assert!(seen[2].contains("<subject"), "{seen:?}");
        let owner_view = received(&joined, &owner);
        assert!(owner_view[0].contains("jid='guest@example/r'"), "moderators see real JIDs: {owner_view:?}");
        assert!(!seen[0].contains(" jid="), "participants of a semi-anonymous room do not: {seen:?}");
    }

    #[test]
    fn a_groupchat_message_is_one_broadcast_to_every_session_with_forged_ids_removed() {
        let (owner, a, b) = (full("owner"), full("a"), full("b"));
        let mut room = open_room(&owner);
        configure(&mut room, &owner, &[("muc#roomconfig_persistentroom", "1")]);
        join(&mut room, &a, "A", "", 0);
        join(&mut room, &b, "B", "", 0);
        let out = room.handle(
            &a,
            None,
            &el(&format!("<message type='groupchat' id='x'><body>hi</body><stanza-id xmlns='{STANZA_ID_NAMESPACE}' id='forged' by='{ROOM}'/></message>")),
            5,
            &settings(),
        );
        assert_eq!(out.out.len(), 1, "{:?}", out.out);
        let Out::Broadcast { bytes, to, .. } = &out.out[0] else { panic!("{:?}", out.out) };
        assert_eq!(to.len(), 3, "every occupant, the sender included (§7.4)");
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains("forged") && text.contains("<stanza-id xmlns='urn:xmpp:sid:0' id='"), "{text}");
        assert!(matches!(&out.records[..], [Record::ArchiveAppend { id: 1, .. }]), "{:?}", out.records);
    }

    #[test]
    fn history_honours_maxstanzas_maxchars_seconds_and_since() {
        let owner = full("owner");
        let mut room = open_room(&owner);
        for (i, now) in [(1, 1_000u64), (2, 60_000), (3, 120_000)] {
            say(&mut room, &owner, &format!("m{i}"), now);
        }
        let history = |room: &mut Room, who: &str, request: &str| -> Vec<String> {
            let guest = full(who);
            let out = join(room, &guest, who, request, 121_000);
            let got: Vec<String> = received(&out, &guest).into_iter().filter(|s| s.contains("<body>")).collect();
            room.handle(&guest, Some(who), &el("<presence type='unavailable'/>"), 121_000, &settings());
            got
        };
        assert_eq!(history(&mut room, "g1", "").len(), 3);
        let two = history(&mut room, "g2", "<history maxstanzas='2'/>");
        assert!(two.len() == 2 && two[0].contains("m2") && two[1].contains("m3"), "{two:?}");
        assert!(history(&mut room, "g3", "<history maxchars='0'/>").is_empty());
        let recent = history(&mut room, "g4", "<history seconds='70'/>");
        assert!(recent.len() == 2 && recent[0].contains("m2"), "{recent:?}");
        let since = history(&mut room, "g5", &format!("<history since='{}'/>", crate::time::format_timestamp(100_000)));
        assert!(since.len() == 1 && since[0].contains("m3"), "{since:?}");
        assert!(two[0].contains("<delay xmlns='urn:xmpp:delay'") && two[0].contains(&format!("from='{ROOM}'")), "{two:?}");
    }

    #[test]
    fn privileges_follow_the_affiliation_rules() {
        let (owner, admin, member, visitor) = (full("owner"), full("admin"), full("member"), full("visitor"));
        let mut room = open_room(&owner);
        configure(&mut room, &owner, &[("muc#roomconfig_moderatedroom", "1")]);
        admin_set(&mut room, &owner, "<item affiliation='admin' jid='admin@example'/>");
        admin_set(&mut room, &owner, "<item affiliation='member' jid='member@example'/>");
        for (who, nick) in [(&admin, "Admin"), (&member, "Member"), (&visitor, "Visitor")] {
            join(&mut room, who, nick, "", 0);
        }
        let cases: [(&FullJid, &str, Option<&str>); 8] = [
            (&visitor, "<item nick='Member' role='none'/>", Some("forbidden")),
            (&admin, "<item affiliation='owner' jid='member@example'/>", Some("not-allowed")),
            (&admin, "<item affiliation='outcast' jid='owner@example'/>", Some("not-allowed")),
            (&owner, "<item nick='Admin' role='none'/>", Some("not-allowed")),
            (&owner, "<item affiliation='member' jid='owner@example'/>", Some("conflict")),
            (&member, "<item affiliation='outcast' jid='visitor@example'/>", Some("forbidden")),
            (&owner, "<item nick='Ghost' role='visitor'/>", Some("item-not-found")),
            (&admin, "<item nick='Admin' role='participant'/>", Some("not-allowed")),
        ];
        for (who, item, expected) in cases {
            let out = admin_set(&mut room, who, item);
            let error = error_of(&out, who);
            match expected {
                Some(condition) => assert!(error.as_deref().is_some_and(|e| e.contains(condition)), "{item}: {error:?}"),
                None => assert!(error.is_none(), "{item}: {error:?}"),
            }
        }
        // A visitor has no voice; an admin grants it; a ban removes with 301.
        assert!(error_of(&say(&mut room, &visitor, "x", 0), &visitor).is_some_and(|e| e.contains("forbidden")));
        assert!(error_of(&admin_set(&mut room, &admin, "<item nick='Visitor' role='participant'/>"), &admin).is_none());
        assert!(error_of(&say(&mut room, &visitor, "x", 0), &visitor).is_none());
        let ban = admin_set(&mut room, &admin, "<item affiliation='outcast' jid='visitor@example'/>");
        let gone = received(&ban, &visitor);
        assert!(gone.iter().any(|s| codes(s).contains(&301) && codes(s).contains(&110)), "{gone:?}");
        assert!(matches!(
            ban.out.iter().find(|o| matches!(o, Out::Session { to, .. } if *to == visitor)),
            Some(Out::Session { leaves: true, .. })
        ));
        assert!(error_of(&join(&mut room, &visitor, "Visitor", "", 0), &visitor).is_some_and(|e| e.contains("forbidden")));
    }

    #[test]
    fn configuration_is_validated_announced_and_stored_only_while_persistent() {
        let (owner, guest) = (full("owner"), full("guest"));
        let mut room = open_room(&owner);
        join(&mut room, &guest, "Guest", "", 0);
        for fields in [
            vec![("muc#roomconfig_passwordprotectedroom", "1")],
            vec![("muc#roomconfig_maxusers", "51")],
            vec![("muc#maxhistoryfetch", "201")],
            vec![("muc#roomconfig_whois", "everybody")],
            vec![("muc#roomconfig_persistentroom", "maybe")],
            vec![("FORM_TYPE", "urn:other")],
        ] {
            let out = configure(&mut room, &owner, &fields);
            assert!(error_of(&out, &owner).is_some(), "{fields:?}");
            assert!(out.records.is_empty());
        }
        assert!(error_of(&configure(&mut room, &guest, &[]), &guest).is_some_and(|e| e.contains("forbidden")));
        // Persistent + members-only: stored whole (config and the owner's affiliation); the
        // unaffiliated guest leaves with 322; occupants hear 104.
        let out = configure(&mut room, &owner, &[("muc#roomconfig_persistentroom", "1"), ("muc#roomconfig_membersonly", "true")]);
        assert!(
            matches!(
                &out.records[..],
                [Record::ItemPut { kind: ItemKind::RoomConfig, .. }, Record::ItemPut { kind: ItemKind::RoomAffiliation, .. }]
            ),
            "{:?}",
            out.records
        );
        assert!(
            received(&out, &owner).iter().any(|s| codes(s).contains(&104) && codes(s).contains(&170)),
            "logging now on: {:?}",
            received(&out, &owner)
        );
        assert!(received(&out, &guest).iter().any(|s| codes(s).contains(&322)), "{:?}", received(&out, &guest));
        let stored = match &out.records[0] {
            Record::ItemPut { value, .. } => RoomConfig::decode(value).expect("decodes"),
            other => panic!("{other:?}"),
        };
        assert!(stored.persistent && stored.members_only);
        // Temporary again: everything stored goes.
        let out = configure(&mut room, &owner, &[("muc#roomconfig_persistentroom", "0")]);
        assert!(matches!(&out.records[..], [Record::AccountDelete { user }] if user == ROOM), "{:?}", out.records);
    }

    #[test]
    fn bad_requests_get_errors_and_departures_clean_up() {
        let (owner, guest) = (full("owner"), full("guest"));
        let mut room = open_room(&owner);
        assert!(error_of(&iq(&mut room, &owner, "get", ""), &owner).is_some_and(|e| e.contains("bad-request")));
        assert!(error_of(&iq(&mut room, &owner, "get", "<query xmlns='urn:unknown'/>"), &owner)
            .is_some_and(|e| e.contains("service-unavailable")));
        assert!(error_of(&admin_set(&mut room, &owner, "<item/>"), &owner).is_some_and(|e| e.contains("bad-request")));
        let too_many: String = (0..=ADMIN_ITEMS_MAX).map(|i| format!("<item affiliation='member' jid='u{i}@example'/>")).collect();
        assert!(error_of(&admin_set(&mut room, &owner, &too_many), &owner).is_some_and(|e| e.contains("bad-request")));
        // Rate: the burst of 3, then resource-constraint until tokens come back.
        for _ in 0..3 {
            assert!(error_of(&say(&mut room, &owner, "x", 10), &owner).is_none());
        }
        assert!(error_of(&say(&mut room, &owner, "x", 10), &owner).is_some_and(|e| e.contains("resource-constraint")));
        assert!(error_of(&say(&mut room, &owner, "x", 1_010), &owner).is_none(), "one token per second");
        // A presence error from an occupant's session removes it with 333 (the others hear).
        join(&mut room, &guest, "Guest", "", 0);
        let out = room.handle(&guest, Some("Guest"), &el("<presence type='error'/>"), 0, &settings());
        assert!(received(&out, &owner).iter().any(|s| codes(s).contains(&333) && s.contains("type='unavailable'")));
        assert_eq!(room.occupant_count(), 1);
        // The last occupant of a temporary room leaving ends it.
        let out = room.handle(&owner, Some("Owner"), &el("<presence type='unavailable'/>"), 0, &settings());
        assert!(out.destroyed);
    }

    #[test]
    fn review_regressions_stay_fixed() {
        let (owner, guest, other) = (full("owner"), full("guest"), full("other"));
        // §10.1.2: a groupchat 1.0 join (no <x/>) gets an instant room, unlocked.
        let mut old = Room::create(BareJid::new(Some("old"), "conference.example").expect("jid"), &owner.bare(), &settings(), 0);
        old.handle(&owner, Some("Owner"), &el("<presence/>"), 0, &settings());
        assert!(!old.locked);

        let mut room = open_room(&owner);
        join(&mut room, &guest, "Guest", "", 0);
        // §7.6.3: a nick change's unavailable keeps the occupant's role.
        let changed = room.handle(&guest, Some("Guest2"), &el("<presence/>"), 0, &settings());
        let gone = received(&changed, &owner).into_iter().find(|s| codes(s).contains(&303)).expect("303");
        assert!(gone.contains("role='participant'") && gone.contains("nick='Guest2'"), "{gone}");
        // A second resource of a participant does not learn real JIDs (semi-anonymous).
        let second = BareJid::new(Some("guest"), "example").and_then(|b| b.with_resource("two")).expect("jid");
        let joined = join(&mut room, &second, "Guest2", "", 0);
        let others: Vec<String> = received(&joined, &second).into_iter().filter(|s| !s.contains("/Guest2'")).collect();
        assert!(others.iter().all(|s| !s.contains(" jid=")), "{others:?}");
        // A decline without an invitation is dropped.
        let decline = room.handle(
            &other,
            None,
            &el(&format!("<message><x xmlns='{MUC_USER_NAMESPACE}'><decline to='owner@example/r'/></x></message>")),
            0,
            &settings(),
        );
        assert!(decline.out.is_empty(), "{:?}", decline.out);
        // An answer nobody asked for is not passed on; the asked session's answer is, to the asker.
        let spoof = room.handle(&guest, Some("Owner"), &el("<iq type='result' id='x'/>"), 0, &settings());
        assert!(spoof.out.is_empty(), "{:?}", spoof.out);
        let asked =
            room.handle(&owner, Some("Guest2"), &el("<iq type='get' id='q'><query xmlns='jabber:iq:version'/></iq>"), 0, &settings());
        assert!(received(&asked, &guest).iter().any(|s| s.contains("id='q'")));
        let answered = room.handle(&guest, Some("Owner"), &el("<iq type='result' id='q'/>"), 0, &settings());
        assert!(received(&answered, &owner).iter().any(|s| s.contains(&format!("from='{ROOM}/Guest2'"))), "{:?}", answered.out);
        // A gone session bounced by its shard leaves with 333.
        let bounced = room.handle(&second, None, &el("<presence type='error'/>"), 0, &settings());
        assert!(matches!(bounced.out.first(), Some(Out::Session { leaves: true, .. })), "{:?}", bounced.out);
        // Empty and made temporary by an absent owner: the room goes.
        let mut empty = open_room(&owner);
        configure(&mut empty, &owner, &[("muc#roomconfig_persistentroom", "1")]);
        empty.handle(&owner, Some("Owner"), &el("<presence type='unavailable'/>"), 0, &settings());
        assert!(configure(&mut empty, &owner, &[("muc#roomconfig_persistentroom", "0")]).destroyed);
        // Ids of a new room start from its creation time: never those of a former room.
        let reborn =
            Room::create(BareJid::new(Some("room"), "conference.example").expect("jid"), &owner.bare(), &settings(), 1_700_000_000_000);
        assert_eq!(reborn.archive_last, 1_700_000_000_000_000);
    }

    #[test]
    fn registration_notices_and_what_the_peer_suite_pinned() {
        let (owner, member, guest) = (full("owner"), full("member"), full("guest"));
        let mut room = open_room(&owner);
        join(&mut room, &guest, "Guest", "", 0);
        // The first configuration was announced after its result (§10.2.1, §10.2's order).
        let out = configure(&mut room, &owner, &[("muc#roomconfig_roomsecret", "s3cret")]);
        let seen = received(&out, &owner);
        assert!(seen[0].contains("type='result'") && codes(&seen[1]).contains(&104), "{seen:?}");
        // A secret alone protects the room.
        let late = full("late");
        assert!(error_of(&join(&mut room, &late, "Late", "", 0), &late).is_some_and(|e| e.contains("not-authorized")));

        // Out-of-room affiliation change: to moderators only in a semi-anonymous room.
        let out = admin_set(&mut room, &owner, "<item affiliation='member' jid='member@example'/>");
        assert!(received(&out, &owner).iter().any(|s| s.starts_with("<message") && s.contains("jid='member@example'")));
        assert!(received(&out, &guest).is_empty(), "{:?}", received(&out, &guest));

        // §7.10: the guest may not register; the member registers and is registered.
        let form = |room: &mut Room, who: &FullJid| iq(room, who, "get", &format!("<query xmlns='{REGISTER_NAMESPACE}'/>"));
        assert!(error_of(&form(&mut room, &guest), &guest).is_some_and(|e| e.contains("not-allowed")));
        assert!(received(&form(&mut room, &member), &member)[0].contains("muc#register_roomnick"));
        let submit = format!(
            "<query xmlns='{REGISTER_NAMESPACE}'><x xmlns='jabber:x:data' type='submit'><field var='muc#register_roomnick'><value>Guest</value></field></x></query>"
        );
        assert!(error_of(&iq(&mut room, &member, "set", &submit), &member).is_some_and(|e| e.contains("conflict")));
        let submit = submit.replace("<value>Guest</value>", "<value>Mem</value>");
        assert!(error_of(&iq(&mut room, &member, "set", &submit), &member).is_none());
        let shown = received(&form(&mut room, &member), &member);
        assert!(shown[0].contains("<username>Mem</username>"), "{shown:?}");
        assert_eq!(room.affiliations.get("member@example").and_then(|e| e.nick.as_deref()), Some("Mem"));
        // Registering again from inside the room, as a moderator: the role stays.
        join(&mut room, &member, "Mem", "<password>s3cret</password>", 0);
        admin_set(&mut room, &owner, "<item nick='Mem' role='moderator'/>");
        let again = submit.replace("<value>Mem</value>", "<value>Mem2</value>");
        let out = iq(&mut room, &member, "set", &again);
        assert!(received(&out, &member).iter().any(|s| s.contains("role='moderator'") && codes(s).contains(&110)));
        assert_eq!(room.role_of(&member), Role::Moderator);
        assert_eq!(room.affiliations.get("member@example").and_then(|e| e.nick.as_deref()), Some("Mem2"));
        let out = room.handle(&member, None, &el("<presence type='unavailable'/>"), 0, &settings());
        assert!(received(&out, &member).iter().any(|s| s.contains("type='unavailable'")));
        let out = iq(&mut room, &member, "set", &format!("<query xmlns='{REGISTER_NAMESPACE}'><remove/></query>"));
        assert!(error_of(&out, &member).is_none() && room.affiliation_of(&member.bare()) == Affiliation::None);

        // Probes: an occupant gets the presence, a stranger an error.
        let probe = el("<presence type='probe'/>");
        let out = room.handle(&owner, Some("Guest"), &probe, 0, &settings());
        assert!(received(&out, &owner).iter().any(|s| s.contains("from='room@conference.example/Guest'") && !s.contains("error")));
        let out = room.handle(&late, Some("Guest"), &probe, 0, &settings());
        assert!(error_of(&out, &late).is_some_and(|e| e.contains("not-acceptable")));

        // §8.1: subject with body is a message, not a subject change.
        let out =
            room.handle(&guest, None, &el("<message type='groupchat'><subject>New</subject><body>hi</body></message>"), 0, &settings());
        assert!(received(&out, &owner).iter().any(|s| s.contains("<body>hi</body>")));
        assert!(room.config.subject.is_empty());
    }
}
