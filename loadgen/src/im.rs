//! The instant-messaging workloads' pure logic (scenarios `roster`, `presence`, `mam`,
//! `mixed`): who is whose contact (the roster graph provisioned through the admin API), which
//! user does what and when (one timetable every worker computes alike), how to recognise our
//! own stanzas among what a server sends, and the fan-out ledger that turns what the workers
//! saw into expected, missing and unexpected presence copies.
//!
//! No sockets and no clock reads: times come in as arguments, so every rule here is a unit
//! test. scenario.rs plays the timetable, main.rs provisions the graph and merges the ledger.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// Percent of the mixed scenario's events of each kind. Chat dominates real IM traffic;
/// presence changes (away, back, a new status) come about a third as often as messages and
/// each one fans out to every online contact, so they still carry the most stanzas; rosters
/// and history are fetched when a client (re)connects or a device catches up, rarer still.
pub const MIX_PERCENT: [(Action, u64); 4] = [(Action::Chat, 70), (Action::Presence, 20), (Action::RosterGet, 5), (Action::ArchiveQuery, 5)];
const _: () = assert!(MIX_PERCENT[0].1 + MIX_PERCENT[1].1 + MIX_PERCENT[2].1 + MIX_PERCENT[3].1 == 100);

/// Marker that opens the status text of our presence changes: `lgp <event> <intended ns>`.
pub const PRESENCE_MARKER: &str = "lgp ";
/// Marker that opens the body of our chat and groupchat messages:
/// `lg <sender> <sequence> <intended ns> ` followed by padding.
pub const MESSAGE_MARKER: &str = "lg ";

/// One kind of scheduled event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// A 1:1 chat message to one of the actor's contacts.
    Chat,
    /// `<presence><status>…</status></presence>`, broadcast to the actor's online contacts
    /// (RFC 6121 §4.4.2).
    Presence,
    /// `<iq type='get'><query xmlns='jabber:iq:roster'/></iq>` (RFC 6121 §2.2).
    RosterGet,
    /// The last page of the actor's archive (XEP-0313 with XEP-0059 `<before/>`).
    ArchiveQuery,
}

/// The mutual-contact graph: users 1..=n on a ring, each with the `contacts / 2` users on
/// either side as contacts. Symmetric by construction, so provisioning both directions with
/// subscription `both` makes every relationship mutual, and every user has exactly
/// `contacts` contacts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactGraph {
    users: u64,
    contacts: u64,
}

impl ContactGraph {
    pub fn new(users: u64, contacts: u64) -> Result<ContactGraph, String> {
        if !contacts.is_multiple_of(2) {
            return Err(format!(
                "--contacts {contacts}: must be even (each user's contacts are the nearest C/2 users on either side of a ring)"
            ));
        }
        if contacts > 0 && contacts >= users {
            return Err(format!("--contacts {contacts} needs more than {contacts} users (--users {users})"));
        }
        Ok(ContactGraph { users, contacts })
    }

    pub fn contacts(&self) -> u64 {
        self.contacts
    }

    /// The `k`-th contact of `user` (both 1-based users; `k < contacts`), nearest first,
    /// alternating sides: user+1, user−1, user+2, user−2, …
    pub fn contact(&self, user: u64, k: u64) -> u64 {
        debug_assert!(k < self.contacts && (1..=self.users).contains(&user));
        let n = self.users;
        let distance = k / 2 + 1;
        if k.is_multiple_of(2) {
            (user - 1 + distance) % n + 1
        } else {
            (user - 1 + n - distance) % n + 1
        }
    }

    /// Every contact of `user`.
    pub fn contacts_of(&self, user: u64) -> impl Iterator<Item = u64> + '_ {
        (0..self.contacts).map(move |k| self.contact(user, k))
    }

    #[cfg(test)]
    pub fn are_contacts(&self, a: u64, b: u64) -> bool {
        if a == b || self.contacts == 0 {
            return false;
        }
        let n = self.users;
        let forward = (b + n - a) % n;
        forward.min(n - forward) <= self.contacts / 2
    }

    /// Directed roster items to provision (`(owner, contact)`), `users × contacts` of them;
    /// `index` runs from 0.
    pub fn item(&self, index: u64) -> (u64, u64) {
        let owner = index / self.contacts + 1;
        (owner, self.contact(owner, index % self.contacts))
    }

    pub fn items(&self) -> u64 {
        self.users * self.contacts
    }
}

/// What happens in a measured phase: event `m` (from 0) is due at `start + m / rate`, played
/// by a pseudo-random user, of a kind drawn from the blend. Every worker computes the same
/// timetable and plays only the events of its own users.
#[derive(Clone, Copy, Debug)]
pub struct Timetable {
    pub start_ns: u64,
    pub rate: f64,
    pub events: u64,
    pub users: u64,
    pub seed: u64,
    /// `None`: the mixed blend (`MIX_PERCENT`); otherwise every event is this action.
    pub only: Option<Action>,
}

impl Timetable {
    pub fn due_ns(&self, event: u64) -> u64 {
        self.start_ns + (event as f64 / self.rate * 1e9) as u64
    }

    /// The user who plays event `event`.
    pub fn actor(&self, event: u64) -> u64 {
        mix64(self.seed ^ mix64(event)) % self.users.max(1) + 1
    }

    pub fn action(&self, event: u64) -> Action {
        if let Some(action) = self.only {
            return action;
        }
        let mut roll = mix64(self.seed.rotate_left(32) ^ mix64(event.wrapping_add(0x5151))) % 100;
        for (action, percent) in MIX_PERCENT {
            if roll < percent {
                return action;
            }
            roll -= percent;
        }
        unreachable!("MIX_PERCENT adds up to 100 (asserted at compile time)")
    }

    /// The events `user` plays, in order.
    #[cfg(test)]
    pub fn events_of(&self, user: u64) -> impl Iterator<Item = u64> + '_ {
        (0..self.events).filter(move |m| self.actor(*m) == user)
    }
}

/// The archive-filling messages of the `mam` scenario: each user sends `per_user` messages,
/// round-robin over its contacts. Global message `g = k × users + (user − 1)` (user's k-th)
/// is due at `start + g / rate`, so the senders interleave evenly.
#[derive(Clone, Copy, Debug)]
pub struct Fill {
    pub start_ns: u64,
    pub rate: f64,
    pub per_user: u64,
    pub users: u64,
}

impl Fill {
    pub fn due_ns(&self, user: u64, k: u64) -> u64 {
        let global = k * self.users + (user - 1);
        self.start_ns + (global as f64 / self.rate * 1e9) as u64
    }

    /// When the last filling message is due.
    pub fn end_ns(&self) -> u64 {
        self.start_ns + ((self.per_user * self.users) as f64 / self.rate * 1e9) as u64
    }
}

/// The opening of a message body from `sender`, its `sequence`-th message (per recipient in
/// chat, per room in MUC), intended at `due_ns`; padding may follow it.
pub fn message_marker(sender: u64, sequence: u64, due_ns: u64) -> String {
    format!("{MESSAGE_MARKER}{sender} {sequence} {due_ns} ")
}

/// `(sender, sequence, intended ns)` from a stanza whose body opens with our marker.
pub fn message_token(stanza: &str) -> Option<(u64, u64, u64)> {
    let rest = stanza.split_once(&format!("<body>{MESSAGE_MARKER}"))?.1;
    let mut fields = rest.split([' ', '<']);
    let sender = fields.next()?.parse().ok()?;
    let sequence = fields.next()?.parse().ok()?;
    let due = fields.next()?.parse().ok()?;
    Some((sender, sequence, due))
}

/// The status text of presence change `event`, intended at `due_ns`.
pub fn presence_status(event: u64, due_ns: u64) -> String {
    format!("{PRESENCE_MARKER}{event} {due_ns}")
}

/// `(event, intended ns)` from an available presence carrying our status marker. Presence
/// with a `type` is not a copy of a change: a server answers a probe for an offline contact
/// with its last unavailable presence and the status it left with (RFC 6121 §4.3.2), which
/// may carry a marker from an earlier run.
pub fn presence_token(stanza: &str) -> Option<(u64, u64)> {
    let start_tag = &stanza[..stanza.find('>')?];
    if start_tag.contains(" type=") {
        return None;
    }
    let rest = stanza.split_once(&format!("<status>{PRESENCE_MARKER}"))?.1;
    let text = rest.split('<').next()?;
    let mut fields = text.split(' ');
    let event = fields.next()?.parse().ok()?;
    let due = fields.next()?.parse().ok()?;
    Some((event, due))
}

/// The `queryid` of an archive result message (XEP-0313 §4.2), if this stanza is one.
pub fn archive_result_query_id(stanza: &str) -> Option<&str> {
    let start = stanza.find("<result")?;
    let tag = &stanza[start..];
    let tag = &tag[..tag.find('>')?];
    if !tag.contains("urn:xmpp:mam:2") {
        return None;
    }
    attribute(tag, "queryid")
}

/// `<count>` of the RSM set in a `<fin/>` (XEP-0059 §2.6), when the server gives it.
pub fn rsm_count(stanza: &str) -> Option<u64> {
    stanza.split_once("<count>")?.1.split('<').next()?.trim().parse().ok()
}

/// Items in a roster result (RFC 6121 §2.1.3).
pub fn roster_items(stanza: &str) -> u64 {
    stanza.matches("<item ").count() as u64
}

/// Results a complete archive page should have held: `max`, or fewer when the archive
/// (per the `<fin/>`'s count) holds fewer.
pub fn archive_page_expected(max: u64, count: Option<u64>) -> u64 {
    count.map_or(max, |count| count.min(max))
}

/// Value of attribute `name` in the text of one start tag (either quote style).
pub fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    for quote in ['\'', '"'] {
        let key = format!(" {name}={quote}");
        if let Some(at) = tag.find(&key) {
            let rest = &tag[at + key.len()..];
            return rest.find(quote).map(|end| &rest[..end]);
        }
    }
    None
}

/// Presence changes a worker sent: `(event, sender, actual send ns)`.
pub type SentLog = Vec<(u64, u64, u64)>;
/// When a worker's sessions were online: `(user, from ns, to ns)`.
pub type OnlineLog = Vec<(u64, u64, u64)>;

/// The presence fan-out ledger over all workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanoutTally {
    /// Copies the server owed: for each change, the sender's contacts online when it was sent.
    pub expected: u64,
    /// Distinct copies that arrived (duplicates are counted by the workers, not here).
    pub received: u64,
    /// Owed copies that never arrived.
    pub missing: u64,
    /// Copies beyond what was owed (e.g. to a contact not yet online).
    pub unexpected: u64,
}

/// Compares the copies owed with the copies received, change by change. `received` maps an
/// event to its distinct copies, summed over workers.
pub fn tally(graph: &ContactGraph, sent: &[(u64, u64, u64)], online: &[(u64, u64, u64)], received: &BTreeMap<u64, u64>) -> FanoutTally {
    let mut intervals: HashMap<u64, Vec<(u64, u64)>> = HashMap::new();
    for (user, from, to) in online {
        intervals.entry(*user).or_default().push((*from, *to));
    }
    let online_at = |user: u64, t: u64| intervals.get(&user).is_some_and(|spans| spans.iter().any(|(from, to)| *from <= t && t < *to));
    let mut tally = FanoutTally::default();
    let mut owed: BTreeMap<u64, u64> = BTreeMap::new();
    for (event, sender, sent_ns) in sent {
        let expected = graph.contacts_of(*sender).filter(|c| online_at(*c, *sent_ns)).count() as u64;
        *owed.entry(*event).or_default() += expected;
    }
    for (event, expected) in &owed {
        let got = received.get(event).copied().unwrap_or(0);
        tally.expected += expected;
        tally.missing += expected.saturating_sub(got);
        tally.unexpected += got.saturating_sub(*expected);
    }
    for (event, got) in received {
        tally.received += got;
        if !owed.contains_key(event) {
            tally.unexpected += got;
        }
    }
    tally
}

/// SplitMix64's finaliser: a cheap, well-mixed hash for reproducible draws.
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_graph_is_symmetric_with_exactly_c_distinct_contacts() {
        for (users, contacts) in [(5, 4), (7, 4), (101, 100), (200, 100), (10, 2)] {
            let graph = ContactGraph::new(users, contacts).expect("valid");
            for user in 1..=users {
                let mut mine: Vec<u64> = graph.contacts_of(user).collect();
                assert!(mine.iter().all(|c| (1..=users).contains(c) && *c != user), "{users}/{contacts} {user}: {mine:?}");
                mine.sort_unstable();
                mine.dedup();
                assert_eq!(mine.len() as u64, contacts, "{users}/{contacts} user {user}");
                for other in 1..=users {
                    assert_eq!(graph.are_contacts(user, other), mine.contains(&other), "{user} {other}");
                    assert_eq!(graph.are_contacts(user, other), graph.are_contacts(other, user));
                }
            }
        }
    }

    #[test]
    fn contacts_come_nearest_first_and_wrap_around() {
        let graph = ContactGraph::new(10, 4).expect("valid");
        assert_eq!(graph.contacts_of(1).collect::<Vec<_>>(), [2, 10, 3, 9]);
        assert_eq!(graph.contacts_of(10).collect::<Vec<_>>(), [1, 9, 2, 8]);
    }

    #[test]
    fn contact_graph_rejects_odd_or_too_many_contacts() {
        assert!(ContactGraph::new(10, 3).is_err());
        assert!(ContactGraph::new(100, 100).is_err());
        assert!(ContactGraph::new(1, 0).is_ok(), "no contacts at all is a valid (empty) roster");
    }

    #[test]
    fn provisioned_items_cover_every_directed_pair_once() {
        let graph = ContactGraph::new(9, 4).expect("valid");
        let mut items: Vec<(u64, u64)> = (0..graph.items()).map(|i| graph.item(i)).collect();
        assert_eq!(items.len(), 36);
        items.sort_unstable();
        items.dedup();
        assert_eq!(items.len(), 36);
        assert!(items.iter().all(|(a, b)| graph.are_contacts(*a, *b) && items.contains(&(*b, *a))));
    }

    #[test]
    fn timetable_splits_events_among_users_without_loss() {
        let table = Timetable { start_ns: 1_000, rate: 100.0, events: 1000, users: 7, seed: 3, only: Some(Action::Presence) };
        let mut all: Vec<u64> = (1..=7).flat_map(|u| table.events_of(u).collect::<Vec<_>>()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        assert_eq!(table.due_ns(0), 1_000);
        assert_eq!(table.due_ns(100), 1_000 + 1_000_000_000);
        // Every user gets a fair share (binomial around 143).
        assert!(
            (1..=7).all(|u| (100..190).contains(&table.events_of(u).count())),
            "{:?}",
            (1..=7).map(|u| table.events_of(u).count()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn mixed_blend_follows_the_documented_ratios() {
        let table = Timetable { start_ns: 0, rate: 1.0, events: 100_000, users: 10, seed: 1, only: None };
        let mut counts: HashMap<Action, u64> = HashMap::new();
        for m in 0..table.events {
            *counts.entry(table.action(m)).or_default() += 1;
        }
        for (action, percent) in MIX_PERCENT {
            let share = counts[&action] as f64 / 1000.0;
            assert!((share - percent as f64).abs() < 0.7, "{action:?}: {share}% instead of {percent}%");
        }
    }

    #[test]
    fn fill_interleaves_senders_and_ends_after_every_message() {
        let fill = Fill { start_ns: 0, rate: 10.0, per_user: 3, users: 4 };
        let mut dues: Vec<u64> = (1..=4).flat_map(|u| (0..3).map(move |k| fill.due_ns(u, k))).collect();
        dues.sort_unstable();
        dues.dedup();
        assert_eq!(dues.len(), 12, "one message per slot");
        assert_eq!(fill.due_ns(2, 0), 100_000_000);
        assert_eq!(fill.end_ns(), 1_200_000_000);
    }

    #[test]
    fn message_token_round_trips_with_or_without_padding() {
        let marker = message_marker(17, 3, 987_654_321);
        assert_eq!(message_token(&format!("<message type='chat'><body>{marker}xxxx</body></message>")), Some((17, 3, 987_654_321)));
        assert_eq!(message_token(&format!("<message><body>{}</body></message>", marker.trim_end())), Some((17, 3, 987_654_321)));
        assert_eq!(message_token("<message><body>hello</body></message>"), None);
        assert_eq!(message_token("<message><body>lg 1 x 3</body></message>"), None);
    }

    #[test]
    fn presence_token_round_trips_and_ignores_other_presence() {
        let status = presence_status(42, 123_456);
        let stanza =
            format!("<presence from='user3@localhost/lg' to='user4@localhost/lg' xml:lang='en'><status>{status}</status></presence>");
        assert_eq!(presence_token(&stanza), Some((42, 123_456)));
        assert_eq!(presence_token("<presence from='a@localhost/r'/>"), None);
        assert_eq!(presence_token("<presence><status>away</status></presence>"), None);
        let left = format!(
            "<presence type='unavailable' from='user3@localhost'><status>{status}</status><delay xmlns='urn:xmpp:delay'/></presence>"
        );
        assert_eq!(presence_token(&left), None, "a probe's answer about an offline contact is not a change");
    }

    #[test]
    fn archive_results_are_told_apart_from_chat_in_either_quote_style() {
        let confab = "<message to='a@localhost/lg'><result xmlns='urn:xmpp:mam:2' queryid='q7' id='12'><forwarded xmlns='urn:xmpp:forward:0'><message><body>lg 1 2 3 x</body></message></forwarded></result></message>";
        assert_eq!(archive_result_query_id(confab), Some("q7"));
        let ejabberd = "<message xmlns=\"jabber:client\" to=\"a@localhost/lg\"><result queryid=\"q9\" xmlns=\"urn:xmpp:mam:2\" id=\"1701\"><forwarded/></result></message>";
        assert_eq!(archive_result_query_id(ejabberd), Some("q9"));
        assert_eq!(archive_result_query_id("<message><body>lg 1 2 3 x</body></message>"), None);
        assert_eq!(archive_result_query_id("<iq><result xmlns='other' queryid='x'/></iq>"), None);
    }

    #[test]
    fn fin_count_and_roster_items_are_read() {
        let fin = "<iq type='result' id='q1'><fin xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><first>1</first><last>9</last><count>180</count></set></fin></iq>";
        assert_eq!(rsm_count(fin), Some(180));
        assert_eq!(archive_page_expected(50, rsm_count(fin)), 50);
        assert_eq!(archive_page_expected(50, Some(12)), 12);
        assert_eq!(archive_page_expected(50, None), 50);
        let roster = "<iq type='result' id='r'><query xmlns='jabber:iq:roster'><item jid='a@l' subscription='both'><group>g</group></item><item subscription='both' jid='b@l'/></query></iq>";
        assert_eq!(roster_items(roster), 2);
        assert_eq!(roster_items("<iq type='result' id='r'><query xmlns='jabber:iq:roster'/></iq>"), 0);
    }

    #[test]
    fn tally_counts_only_contacts_online_at_send_time() {
        let graph = ContactGraph::new(6, 2).expect("valid");
        // User 1's contacts are 2 and 6. 2 is online throughout, 6 only from t=50.
        let online = vec![(1, 0, 1000), (2, 0, 1000), (6, 50, 1000), (3, 0, 1000)];
        let sent = vec![(0, 1, 10), (1, 1, 60)];
        // Event 0: owed 1 (to user 2), got 1. Event 1: owed 2, got 1 (one missing).
        let received: BTreeMap<u64, u64> = [(0, 1), (1, 1)].into();
        let t = tally(&graph, &sent, &online, &received);
        assert_eq!(t, FanoutTally { expected: 3, received: 2, missing: 1, unexpected: 0 });
        // A copy of an event nobody sent, and one copy too many, are unexpected.
        let received: BTreeMap<u64, u64> = [(0, 2), (1, 2), (9, 1)].into();
        let t = tally(&graph, &sent, &online, &received);
        assert_eq!(t, FanoutTally { expected: 3, received: 5, missing: 0, unexpected: 2 });
    }
}
