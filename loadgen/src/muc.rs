//! The `muc` scenario's pure logic (XEP-0045 multi-user chat): which user occupies which room,
//! when each occupant joins and posts (one timeline every worker computes alike), the stanzas
//! an occupant sends, how to recognise the service's answers among what it receives, and the
//! delivery ledger that turns the copies received into expected, missing and duplicated ones.
//!
//! No sockets and no clock reads: times come in as arguments, so every rule here is a unit
//! test. scenario.rs plays the timeline and feeds the ledger; main.rs merges the workers'
//! counters. A room's occupants all live in one worker (`Layout::worker_of`), so the room's
//! creator can tell its other occupants, without any cross-process signal, that the room is
//! unlocked, and one worker's ledger sees every copy of its rooms.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::im;

/// Between the last room creator's join and the first other occupant's: time for the last
/// instant room to be unlocked (the others wait for their own room's creator anyway).
pub const ROOM_CREATE_GRACE_NS: u64 = 1_000_000_000;

/// XEP-0045 namespaces.
pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
pub const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
pub const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";

/// Who occupies which room: users 1..=rooms × occupants; user `u` is occupant
/// `(u − 1) mod occupants` of room `(u − 1) / occupants`, and occupant 0 creates the room.
/// Users beyond the rooms stay online without joining.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub rooms: u64,
    pub occupants: u64,
}

impl Layout {
    pub fn occupant_count(&self) -> u64 {
        self.rooms * self.occupants
    }

    /// The room of `user` (1-based), if it occupies one.
    pub fn room_of(&self, user: u64) -> Option<u64> {
        (user >= 1 && user <= self.occupant_count()).then(|| (user - 1) / self.occupants)
    }

    /// The user who creates `room`.
    pub fn creator(&self, room: u64) -> u64 {
        room * self.occupants + 1
    }

    pub fn is_creator(&self, user: u64) -> bool {
        self.room_of(user).is_some_and(|room| self.creator(room) == user)
    }

    /// The worker (of `procs`) that plays `user`: whole rooms per worker, round-robin, so a
    /// room's creator and occupants share one process; other users round-robin.
    pub fn worker_of(&self, user: u64, procs: u64) -> u64 {
        match self.room_of(user) {
            Some(room) => room % procs.max(1),
            None => (user - 1) % procs.max(1),
        }
    }
}

/// The room's local part (the room JID is `<name>@<service>`).
pub fn room_name(room: u64) -> String {
    format!("loadgen-room-{room}")
}

/// When everyone joins and posts. Creators join first, at `join_rate` from `join_start_ns`;
/// the other occupants follow at `join_rate` after `ROOM_CREATE_GRACE_NS` (and after their
/// own room's creator is done); the posts start `join_grace_ns` after the last join is due.
#[derive(Clone, Copy, Debug)]
pub struct Timeline {
    pub layout: Layout,
    pub join_start_ns: u64,
    pub join_rate: f64,
    /// Between the last join due and the first post. Each join broadcasts the newcomer's
    /// presence to every occupant already there (§7.2.3), so filling a room of n costs the
    /// service n²/2 presence copies, and a big room's joins leave a backlog to drain.
    pub join_grace_ns: u64,
    /// Seconds between one occupant's posts, in ns.
    pub interval_ns: u64,
    /// Length of the posting phase.
    pub duration_ns: u64,
}

impl Timeline {
    /// When `user` (an occupant) is due to send its join presence.
    pub fn join_ns(&self, user: u64) -> Option<u64> {
        let room = self.layout.room_of(user)?;
        let slot = if self.layout.is_creator(user) {
            room
        } else {
            // The other occupants, rooms interleaved: every room fills at the same pace.
            let position = (user - 1) % self.layout.occupants; // 1..occupants
            (position - 1) * self.layout.rooms + room
        };
        let base = if self.layout.is_creator(user) { self.join_start_ns } else { self.members_start_ns() };
        Some(base + self.after(slot))
    }

    fn members_start_ns(&self) -> u64 {
        self.join_start_ns + self.after(self.layout.rooms) + ROOM_CREATE_GRACE_NS
    }

    /// The first post is due here: every join is due (and has had a grace) before it.
    pub fn phase_start_ns(&self) -> u64 {
        let members = self.layout.rooms * self.layout.occupants.saturating_sub(1);
        self.members_start_ns() + self.after(members) + self.join_grace_ns
    }

    /// Every post `user` makes: open loop, every `interval` from an offset within the first
    /// interval. The offsets spread the occupants evenly (rooms interleaved), so the posts of
    /// all occupants together arrive at a steady rooms × occupants / interval per second.
    pub fn posts_ns(&self, user: u64) -> Vec<u64> {
        let Some(room) = self.layout.room_of(user) else { return Vec::new() };
        let position = (user - 1) % self.layout.occupants;
        let slot = position * self.layout.rooms + room;
        let offset = (slot as u128 * self.interval_ns as u128 / self.layout.occupant_count().max(1) as u128) as u64;
        let start = self.phase_start_ns();
        let mut posts = Vec::new();
        let mut at = offset;
        while at < self.duration_ns {
            posts.push(start + at);
            if self.interval_ns == 0 {
                break;
            }
            at += self.interval_ns;
        }
        posts
    }

    fn after(&self, slots: u64) -> u64 {
        (slots as f64 / self.join_rate.max(0.001) * 1e9) as u64
    }
}

/// XEP-0045 §7.2.1: enter `room_jid` as `nick`, asking for no discussion history (§7.2.13),
/// so every groupchat message received afterwards is live.
pub fn join_presence(room_jid: &str, nick: &str) -> String {
    format!("<presence to='{room_jid}/{nick}'><x xmlns='{NS_MUC}'><history maxstanzas='0'/></x></presence>")
}

/// XEP-0045 §10.1.2: accept the default configuration, unlocking an instant room.
pub fn unlock_iq(room_jid: &str, id: &str) -> String {
    format!("<iq type='set' to='{room_jid}' id='{id}'><query xmlns='{NS_MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'/></query></iq>")
}

/// XEP-0045 §7.4: a message to every occupant.
pub fn groupchat(room_jid: &str, id: &str, body: &str) -> String {
    format!("<message type='groupchat' to='{room_jid}' id='{id}'><body>{body}</body></message>")
}

/// The service's answer to a join presence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JoinAnswer {
    /// Our own presence back (status 110, §7.2.3); `created`: status 201, a new room, locked
    /// until its owner configures it (§10.1.1).
    Joined { created: bool },
    /// An error presence from the room (§7.2.6–7.2.11); the defined condition.
    Refused(String),
}

/// Reads a presence received while joining `room_jid` as `nick`: the answer to our join, or
/// `None` for anything else (the presence of occupants already there, §7.2.3). Self-presence
/// is recognised by status 110 in the muc#user payload, or by coming from our own occupant JID
/// (servers that predate status 110).
pub fn join_answer(presence: &str, room_jid: &str, nick: &str) -> Option<JoinAnswer> {
    let start_tag = &presence[..presence.find('>')?];
    let from = im::attribute(start_tag, "from")?;
    let (bare, resource) = from.split_once('/').unwrap_or((from, ""));
    if !bare.eq_ignore_ascii_case(room_jid) {
        return None;
    }
    if im::attribute(start_tag, "type") == Some("error") {
        return Some(JoinAnswer::Refused(error_condition(presence).unwrap_or_else(|| "undefined-condition".into())));
    }
    if !presence.contains(NS_MUC_USER) {
        return None;
    }
    let codes = status_codes(presence);
    if codes.contains(&110) || resource == nick {
        return Some(JoinAnswer::Joined { created: codes.contains(&201) });
    }
    None
}

/// The `code` of every `<status code='…'/>` in a stanza (XEP-0045 §15.6.2).
pub fn status_codes(stanza: &str) -> Vec<u32> {
    stanza
        .match_indices("<status ")
        .filter_map(|(at, _)| {
            let tag = &stanza[at..];
            let tag = &tag[..tag.find('>')?];
            im::attribute(tag, "code")?.parse().ok()
        })
        .collect()
}

/// The defined condition of a stanza error (RFC 6120 §8.3.3): the first child of `<error>`.
pub fn error_condition(stanza: &str) -> Option<String> {
    let error = &stanza[stanza.find("<error")?..];
    let inside = &error[error.find('>')? + 1..];
    let child = inside.strip_prefix('<')?;
    let name: String = child.chars().take_while(|c| !matches!(c, ' ' | '/' | '>')).collect();
    (!name.is_empty()).then_some(name)
}

/// `(sender, sequence, intended ns)` of one of our groupchat messages delivered live: history
/// (`<delay/>`, XEP-0203) and subject changes (§8.1) are not copies of a post.
pub fn groupchat_token(message: &str) -> Option<(u64, u64, u64)> {
    if message.contains("<delay") || message.contains("<subject") {
        return None;
    }
    im::message_token(message)
}

/// What one received copy was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyKind {
    /// A first copy of another occupant's post, owed to this receiver.
    Fresh,
    /// A first copy of the receiver's own post (§7.4: the service reflects it).
    Reflection,
    /// The same (sender, sequence) already reached this receiver.
    Duplicate,
    /// A post this receiver was not owed: from another room, or before its own join counted.
    Unexpected,
}

/// One worker's delivery ledger: who joined, what each occupant posted and which copies
/// reached whom.
#[derive(Debug)]
pub struct Ledger {
    layout: Layout,
    joined: HashSet<u64>,
    joined_per_room: BTreeMap<u64, u64>,
    sent: HashMap<u64, u64>,
    seen: HashSet<(u64, u64, u64)>,
    fresh: u64,
    reflections: u64,
    duplicated: u64,
    unexpected: u64,
}

/// The ledger's totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// For every post, one copy per other occupant that had joined the room.
    pub expected: u64,
    /// Distinct owed copies received.
    pub received: u64,
    pub missing: u64,
    /// Copies (reflections included) received more than once at one receiver.
    pub duplicated: u64,
    pub unexpected: u64,
    /// Distinct reflections received, and posts whose reflection never came.
    pub reflections: u64,
    pub reflections_missing: u64,
}

impl Ledger {
    pub fn new(layout: Layout) -> Ledger {
        Ledger {
            layout,
            joined: HashSet::new(),
            joined_per_room: BTreeMap::new(),
            sent: HashMap::new(),
            seen: HashSet::new(),
            fresh: 0,
            reflections: 0,
            duplicated: 0,
            unexpected: 0,
        }
    }

    /// `user` is an occupant of its room from now on.
    pub fn joined(&mut self, user: u64) {
        if let Some(room) = self.layout.room_of(user) {
            if self.joined.insert(user) {
                *self.joined_per_room.entry(room).or_default() += 1;
            }
        }
    }

    /// `sender` posted one more message (sequences run 1, 2, …).
    pub fn sent(&mut self, sender: u64) {
        *self.sent.entry(sender).or_default() += 1;
    }

    /// `receiver` got the `sequence`-th post of `sender`.
    pub fn copy(&mut self, receiver: u64, sender: u64, sequence: u64) -> CopyKind {
        if !self.seen.insert((receiver, sender, sequence)) {
            self.duplicated += 1;
            return CopyKind::Duplicate;
        }
        let same_room = self.layout.room_of(sender).is_some() && self.layout.room_of(sender) == self.layout.room_of(receiver);
        if !same_room || !self.joined.contains(&receiver) {
            self.unexpected += 1;
            return CopyKind::Unexpected;
        }
        if sender == receiver {
            self.reflections += 1;
            return CopyKind::Reflection;
        }
        self.fresh += 1;
        CopyKind::Fresh
    }

    pub fn tally(&self) -> Tally {
        let mut expected = 0;
        let mut posts = 0;
        for (sender, sent) in &self.sent {
            let Some(room) = self.layout.room_of(*sender).filter(|_| self.joined.contains(sender)) else { continue };
            let others = self.joined_per_room.get(&room).copied().unwrap_or(0).saturating_sub(1);
            expected += sent * others;
            posts += sent;
        }
        Tally {
            expected,
            received: self.fresh,
            missing: expected.saturating_sub(self.fresh),
            duplicated: self.duplicated,
            unexpected: self.unexpected,
            reflections: self.reflections,
            reflections_missing: posts.saturating_sub(self.reflections),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYOUT: Layout = Layout { rooms: 3, occupants: 4 };

    #[test]
    fn users_fill_rooms_in_order_and_rooms_stay_in_one_worker() {
        assert_eq!(
            (1..=13).map(|u| LAYOUT.room_of(u)).collect::<Vec<_>>(),
            [Some(0), Some(0), Some(0), Some(0), Some(1), Some(1), Some(1), Some(1), Some(2), Some(2), Some(2), Some(2), None]
        );
        assert_eq!((0..3).map(|r| LAYOUT.creator(r)).collect::<Vec<_>>(), [1, 5, 9]);
        assert!(LAYOUT.is_creator(5) && !LAYOUT.is_creator(6) && !LAYOUT.is_creator(13));
        for user in 1..=12 {
            assert_eq!(LAYOUT.worker_of(user, 2), LAYOUT.worker_of(LAYOUT.creator(LAYOUT.room_of(user).expect("room")), 2));
        }
        assert_eq!([1, 5, 9].map(|u| LAYOUT.worker_of(u, 2)), [0, 1, 0]);
        assert_eq!([13, 14].map(|u| LAYOUT.worker_of(u, 2)), [0, 1], "users outside the rooms round-robin");
    }

    #[test]
    fn creators_join_first_and_posts_start_after_every_join() {
        let timeline = Timeline {
            layout: LAYOUT,
            join_start_ns: 1_000,
            join_rate: 10.0,
            join_grace_ns: 3_000_000_000,
            interval_ns: 2_000_000_000,
            duration_ns: 10_000_000_000,
        };
        let creators: Vec<u64> = (0..3).map(|r| timeline.join_ns(LAYOUT.creator(r)).expect("due")).collect();
        assert_eq!(creators, [1_000, 100_001_000, 200_001_000]);
        let mut members: Vec<u64> = (1..=12).filter(|u| !LAYOUT.is_creator(*u)).map(|u| timeline.join_ns(u).expect("due")).collect();
        assert!(members.iter().all(|m| *m >= creators[2] + ROOM_CREATE_GRACE_NS));
        members.sort_unstable();
        members.dedup();
        assert_eq!(members.len(), 9, "one join per slot");
        assert!(members.iter().all(|m| *m + timeline.join_grace_ns <= timeline.phase_start_ns()));
        assert_eq!(timeline.join_ns(13), None);
    }

    #[test]
    fn posts_add_up_to_the_total_rate_and_stay_in_the_phase() {
        // 12 occupants posting every 2 s: 6 posts/s, 60 in 10 s.
        let timeline = Timeline {
            layout: LAYOUT,
            join_start_ns: 0,
            join_rate: 100.0,
            join_grace_ns: 0,
            interval_ns: 2_000_000_000,
            duration_ns: 10_000_000_000,
        };
        let start = timeline.phase_start_ns();
        let mut all: Vec<u64> = (1..=13).flat_map(|u| timeline.posts_ns(u)).collect();
        assert_eq!(all.len(), 60);
        assert!(all.iter().all(|t| *t >= start && *t < start + 10_000_000_000));
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 60, "no two occupants share a slot");
        // Each occupant's posts are one interval apart.
        let posts = timeline.posts_ns(7);
        assert!(posts.windows(2).all(|w| w[1] - w[0] == 2_000_000_000), "{posts:?}");
    }

    #[test]
    fn stanzas_follow_xep_0045() {
        assert_eq!(
            join_presence("loadgen-room-0@conference.localhost", "user1"),
            "<presence to='loadgen-room-0@conference.localhost/user1'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x></presence>"
        );
        assert_eq!(
            unlock_iq("r@c", "u1"),
            "<iq type='set' to='r@c' id='u1'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>"
        );
        assert_eq!(groupchat("r@c", "g1", "hi"), "<message type='groupchat' to='r@c' id='g1'><body>hi</body></message>");
    }

    #[test]
    fn self_presence_is_recognised_with_and_without_201() {
        let room = "loadgen-room-0@conference.localhost";
        let created = "<presence xmlns=\"jabber:client\" from=\"loadgen-room-0@conference.localhost/user1\" to=\"user1@localhost/lg\"><x xmlns=\"http://jabber.org/protocol/muc#user\"><item affiliation=\"owner\" role=\"moderator\"/><status code=\"110\"/><status code=\"201\"/></x></presence>";
        assert_eq!(join_answer(created, room, "user1"), Some(JoinAnswer::Joined { created: true }));
        let joined = "<presence from='loadgen-room-0@conference.localhost/user2' to='user2@localhost/lg'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='participant'/><status code='110'/><status code='100'/></x></presence>";
        assert_eq!(join_answer(joined, room, "user2"), Some(JoinAnswer::Joined { created: false }));
        // Another occupant's presence, seen before ours, is not the answer.
        let other = "<presence from='loadgen-room-0@conference.localhost/user1' to='user2@localhost/lg'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='owner' role='moderator'/></x></presence>";
        assert_eq!(join_answer(other, room, "user2"), None);
        // A nick the service rewrote (§7.2.10) still carries 110.
        let renamed = "<presence from='loadgen-room-0@conference.localhost/user2 (2)'><x xmlns='http://jabber.org/protocol/muc#user'><status code='110'/><status code='210'/></x></presence>";
        assert_eq!(join_answer(renamed, room, "user2"), Some(JoinAnswer::Joined { created: false }));
        // Presence from elsewhere, or without the MUC payload, is not an answer.
        assert_eq!(join_answer("<presence from='user3@localhost/lg'/>", room, "user2"), None);
        assert_eq!(join_answer("<presence from='loadgen-room-0@conference.localhost/user2'/>", room, "user2"), None);
    }

    #[test]
    fn join_errors_carry_their_condition() {
        let room = "loadgen-room-0@conference.localhost";
        let locked = "<presence from='loadgen-room-0@conference.localhost/user2' type='error'><x xmlns='http://jabber.org/protocol/muc'/><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>";
        assert_eq!(join_answer(locked, room, "user2"), Some(JoinAnswer::Refused("item-not-found".into())));
        let full = "<presence from=\"loadgen-room-0@conference.localhost/user2\" type=\"error\"><error code=\"503\" type=\"wait\"><service-unavailable xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/><text>full</text></error></presence>";
        assert_eq!(join_answer(full, room, "user2"), Some(JoinAnswer::Refused("service-unavailable".into())));
        assert_eq!(
            join_answer("<presence from='loadgen-room-0@conference.localhost/u' type='error'/>", room, "u"),
            Some(JoinAnswer::Refused("undefined-condition".into()))
        );
    }

    #[test]
    fn only_live_posts_are_copies() {
        let body = format!("{}xxxx", im::message_marker(3, 2, 1_000));
        let live = format!("<message type='groupchat' from='r@c/user3' to='user4@l/lg' id='g2'><body>{body}</body><stanza-id xmlns='urn:xmpp:sid:0' id='1' by='r@c'/></message>");
        assert_eq!(groupchat_token(&live), Some((3, 2, 1_000)));
        let history = format!("<message type='groupchat' from='r@c/user3'><body>{body}</body><delay xmlns='urn:xmpp:delay' stamp='2024-01-01T00:00:00Z'/></message>");
        assert_eq!(groupchat_token(&history), None);
        assert_eq!(groupchat_token("<message type='groupchat' from='r@c'><subject/></message>"), None);
        assert_eq!(groupchat_token("<message type='groupchat' from='r@c'><body>This room is not anonymous</body></message>"), None);
    }

    #[test]
    fn ledger_counts_copies_reflections_duplicates_and_losses() {
        let mut ledger = Ledger::new(LAYOUT);
        // Room 0: users 1, 2, 3 joined, 4 did not. Room 1: user 5 alone.
        for user in [1, 2, 3, 5] {
            ledger.joined(user);
        }
        ledger.joined(2); // joining twice counts once
        ledger.sent(1);
        ledger.sent(1);
        ledger.sent(2);
        ledger.sent(5);
        // User 1's posts are owed to 2 and 3 (4 never joined): 4 copies; user 2's to 1 and 3.
        assert_eq!(ledger.copy(2, 1, 1), CopyKind::Fresh);
        assert_eq!(ledger.copy(3, 1, 1), CopyKind::Fresh);
        assert_eq!(ledger.copy(2, 1, 2), CopyKind::Fresh);
        assert_eq!(ledger.copy(2, 1, 2), CopyKind::Duplicate);
        assert_eq!(ledger.copy(1, 2, 1), CopyKind::Fresh);
        assert_eq!(ledger.copy(1, 1, 1), CopyKind::Reflection);
        assert_eq!(ledger.copy(1, 1, 1), CopyKind::Duplicate);
        assert_eq!(ledger.copy(5, 5, 1), CopyKind::Reflection);
        assert_eq!(ledger.copy(5, 1, 1), CopyKind::Unexpected, "another room's post");
        assert_eq!(ledger.copy(4, 1, 1), CopyKind::Unexpected, "not joined");
        let tally = ledger.tally();
        assert_eq!(
            tally,
            Tally { expected: 6, received: 4, missing: 2, duplicated: 2, unexpected: 2, reflections: 2, reflections_missing: 2 }
        );
    }
}
