//! Rosters and presence subscriptions (RFC 6121 §2, §3 and Appendix A), decided without I/O.
//!
//! This module owns the stored shape of one roster entry ([`RosterItem`]) and its (checked) rkyv
//! encoding, the XML of roster items, roster results and roster pushes, the validation of a
//! client's roster set, and the subscription state machine: what the user's server does with an
//! outbound subscription stanza ([`outbound`], Appendix A.2) and what the contact's server does
//! with an inbound one ([`inbound`], Appendix A.3), including pre-approval (§3.4).
//!
//! It deliberately does not own: where entries are stored or how the roster version is counted
//! (the shard, with `records::ItemKind::Roster` / `RosterVersion`), which resources are
//! "interested" or "available" (the session layer), the storage and redelivery of a pending
//! inbound `subscribe` while the user is offline (§3.1.3; the shard), the presence probes and
//! `unavailable` notifications that accompany subscription changes (§3.1.5, §3.2.2, §3.3.3;
//! presence handling), the roster size limit (`limits::ROSTER_ITEMS_MAX`, checked by the shard
//! before it stores a new entry), or mapping condition names to stanza errors (routing).
//!
//! States are named as in Appendix A.1: a subscription (`none`, `to`, `from`, `both`) plus the
//! "Pending Out" (we asked, [`RosterItem::pending_out`]) and "Pending In" (they asked,
//! [`RosterItem::pending_in`]) sub-states.

use rkyv::{Archive, Deserialize, Serialize};

use crate::jid::{BareJid, Jid};
use crate::xml::Element;

/// The roster namespace (RFC 6121 §2.1).
pub const ROSTER_NAMESPACE: &str = "jabber:iq:roster";

/// Largest roster item name or group name, in bytes of UTF-8. A roster set beyond it is refused
/// with `not-acceptable` (RFC 6121 §2.3.3 lets a server limit both). Every entry is stored and
/// pushed whole, so this bounds the bytes one entry costs.
pub const ROSTER_NAME_BYTES_MAX: usize = 1024;

/// Most `<group/>` elements one roster item may carry (`not-acceptable` beyond, RFC 6121
/// §2.3.3). With [`ROSTER_NAME_BYTES_MAX`] it bounds a stored entry to about 64 KiB of names,
/// and it bounds the duplicate-group check of [`parse_roster_set`].
pub const ROSTER_GROUPS_PER_ITEM_MAX: usize = 64;

/// The 'subscription' attribute of a roster item (RFC 6121 §2.1.2.5): who receives whose presence.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscription {
    /// Neither receives the other's presence.
    None,
    /// The user receives the contact's presence.
    To,
    /// The contact receives the user's presence.
    From,
    /// Both receive each other's presence.
    Both,
}

impl Subscription {
    /// The attribute value (RFC 6121 §2.1.2.5).
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    /// The user is subscribed to the contact's presence (`to` or `both`).
    pub fn has_to(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }

    /// The contact is subscribed to the user's presence (`from` or `both`).
    pub fn has_from(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }

    fn with_to(self, to: bool) -> Subscription {
        Subscription::from_flags(to, self.has_from())
    }

    fn with_from(self, from: bool) -> Subscription {
        Subscription::from_flags(self.has_to(), from)
    }

    fn from_flags(to: bool, from: bool) -> Subscription {
        match (to, from) {
            (false, false) => Subscription::None,
            (true, false) => Subscription::To,
            (false, true) => Subscription::From,
            (true, true) => Subscription::Both,
        }
    }
}

/// One stored roster entry of a user: the contact, what the user named and grouped it as, and
/// the subscription state of Appendix A.1 in both directions.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RosterItem {
    /// The contact's bare JID, already prepared (RFC 7622 §3).
    pub jid: String,
    /// The user's handle for the contact (RFC 6121 §2.1.2.4).
    pub name: Option<String>,
    pub subscription: Subscription,
    /// The user sent `subscribe` and the contact has not answered: `ask='subscribe'`
    /// (RFC 6121 §2.1.2.2, "Pending Out").
    pub pending_out: bool,
    /// The contact sent `subscribe` and the user has not answered ("Pending In"); never shown
    /// in the roster itself (RFC 6121 §3.1.3).
    pub pending_in: bool,
    /// The user pre-approved a subscription from the contact: `approved='true'` (RFC 6121 §3.4).
    pub approved: bool,
    /// Group names (RFC 6121 §2.1.2.6), without duplicates.
    pub groups: Vec<String>,
    /// Server-side state only: an inbound request from a contact the user never added
    /// (RFC 6121 §3.1.3: the server "MUST NOT create a roster item" for it yet). Left out of
    /// roster results and pushes.
    pub hidden: bool,
}

crate::records::stored_codec!(RosterItem);

impl RosterItem {
    /// A visible entry for `jid` (a prepared bare JID) in state "None", with no name or group.
    pub fn new(jid: &str) -> RosterItem {
        RosterItem {
            jid: jid.to_owned(),
            name: None,
            subscription: Subscription::None,
            pending_out: false,
            pending_in: false,
            approved: false,
            groups: Vec::new(),
            hidden: false,
        }
    }

    /// The `<item/>` of RFC 6121 §2.1.2 in [`ROSTER_NAMESPACE`]: `jid`, `name`, `subscription`
    /// (always written: some clients misread its absence), `ask='subscribe'` for Pending Out,
    /// `approved='true'` for a pre-approval, and one `<group/>` per group. Pending In is not
    /// shown (§3.1.3), and `hidden` is the caller's to honour.
    pub fn to_element(&self) -> Element {
        let mut item = Element::new("item", ROSTER_NAMESPACE).with_attribute("jid", &self.jid);
        if let Some(name) = &self.name {
            item.set_attribute("name", name);
        }
        item.set_attribute("subscription", self.subscription.as_str());
        if self.pending_out {
            item.set_attribute("ask", "subscribe");
        }
        if self.approved {
            item.set_attribute("approved", "true");
        }
        for group in &self.groups {
            item = item.with_child(Element::new("group", ROSTER_NAMESPACE).with_text(group));
        }
        item
    }

    /// True when nothing about this contact needs keeping: subscription `none`, nothing pending
    /// either way, no pre-approval, and the user never added the contact (`hidden`). Such an
    /// entry is deleted rather than stored. A visible entry is only ever removed by the user
    /// (RFC 6121 §2.5), never by subscription processing.
    pub fn is_empty_state(&self) -> bool {
        self.subscription == Subscription::None && !self.pending_out && !self.pending_in && !self.approved && self.hidden
    }
}

/// The item of a removal push: `<item jid='…' subscription='remove'/>` (RFC 6121 §2.5.2).
pub fn removed_item_element(jid: &str) -> Element {
    Element::new("item", ROSTER_NAMESPACE).with_attribute("jid", jid).with_attribute("subscription", "remove")
}

/// A roster push to one resource (RFC 6121 §2.1.6): `<iq type='set' id to><query ver><item/>
/// </query></iq>`, `ver` only when versioning is in use (§2.6.1). The iq carries no `xmlns`:
/// it inherits the stream's `jabber:client`.
pub fn push_iq(id: &str, to: &str, version: Option<&str>, item: &Element) -> Vec<u8> {
    debug_assert!(item.name == "item" && item.namespace == ROSTER_NAMESPACE, "not a roster item: {item:?}");
    let query = query_element(version).with_child(item.clone());
    Element::new("iq", "")
        .with_attribute("type", "set")
        .with_attribute("id", id)
        .with_attribute("to", to)
        .with_child(query)
        .to_xml()
        .into_bytes()
}

/// The answer to a roster get (RFC 6121 §2.1.3): every item not `hidden`, with `ver` when given
/// (§2.6.3).
pub fn roster_result<'a>(id: &str, to: &str, version: Option<&str>, items: impl Iterator<Item = &'a RosterItem>) -> Vec<u8> {
    let mut query = query_element(version);
    for item in items.filter(|item| !item.hidden) {
        query = query.with_child(item.to_element());
    }
    Element::new("iq", "")
        .with_attribute("type", "result")
        .with_attribute("id", id)
        .with_attribute("to", to)
        .with_child(query)
        .to_xml()
        .into_bytes()
}

/// A valid roster set from the user (RFC 6121 §2.3, §2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RosterSet {
    /// Add the contact or replace its name and groups (§2.3, §2.4); the subscription state is
    /// the server's and is kept.
    Update { jid: BareJid, name: Option<String>, groups: Vec<String> },
    /// Delete the contact (§2.5), cancelling subscriptions both ways ([`removal_stanzas`]).
    Remove { jid: BareJid },
}

/// Parses and validates the `<query/>` of a roster set. The error is the stanza error condition
/// (RFC 6120 §8.3.3) to answer with:
///
/// - not exactly one `<item/>` (§2.3.3): `bad-request`;
/// - no `jid` (required, §2.1.2.3): `bad-request`; a `jid` that is not a JID: `jid-malformed`;
///   a full JID, since roster items are bare JIDs (§2.1.1): `bad-request`;
/// - duplicate group names (§2.3.3): `bad-request`;
/// - an empty group name, a name or group name over [`ROSTER_NAME_BYTES_MAX`] bytes, or more
///   than [`ROSTER_GROUPS_PER_ITEM_MAX`] groups (§2.3.3): `not-acceptable`.
///
/// `subscription` other than `remove` is ignored (§2.1.2.5), as are `ask` (§2.1.2.2) and
/// `approved` (§2.1.2.1): only the server sets them. An empty `name` means no name.
pub fn parse_roster_set(query: &Element) -> Result<RosterSet, &'static str> {
    debug_assert!(query.name == "query" && query.namespace == ROSTER_NAMESPACE, "not a roster query");
    if query.name != "query" || query.namespace != ROSTER_NAMESPACE {
        return Err("bad-request");
    }
    let mut items = query.elements().filter(|element| element.name == "item" && element.namespace == ROSTER_NAMESPACE);
    let item = match (items.next(), items.next()) {
        (Some(item), None) => item,
        _ => return Err("bad-request"),
    };

    let jid = match item.attribute("jid").map(Jid::parse) {
        None => return Err("bad-request"),
        Some(Err(_)) => return Err("jid-malformed"),
        Some(Ok(Jid::Full(_))) => return Err("bad-request"),
        Some(Ok(Jid::Bare(jid))) => jid,
    };

    if item.attribute("subscription") == Some("remove") {
        return Ok(RosterSet::Remove { jid });
    }

    let name = match item.attribute("name") {
        None | Some("") => None,
        Some(name) if name.len() > ROSTER_NAME_BYTES_MAX => return Err("not-acceptable"),
        Some(name) => Some(name.to_owned()),
    };

    let mut groups: Vec<String> = Vec::new();
    for group in item.elements().filter(|element| element.name == "group" && element.namespace == ROSTER_NAMESPACE) {
        // Counting first bounds the quadratic duplicate check below.
        if groups.len() == ROSTER_GROUPS_PER_ITEM_MAX {
            return Err("not-acceptable");
        }
        let group = group.text();
        if group.is_empty() || group.len() > ROSTER_NAME_BYTES_MAX {
            return Err("not-acceptable");
        }
        if groups.contains(&group) {
            return Err("bad-request");
        }
        groups.push(group);
    }
    Ok(RosterSet::Update { jid, name, groups })
}

/// The four presence types that manage subscriptions (RFC 6121 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionStanza {
    /// Request a subscription to the recipient's presence (§3.1).
    Subscribe,
    /// Approve the recipient's request, or pre-approve one (§3.1.4, §3.4).
    Subscribed,
    /// Cancel one's subscription to the recipient's presence (§3.3).
    Unsubscribe,
    /// Deny or cancel the recipient's subscription to one's presence (§3.2).
    Unsubscribed,
}

impl SubscriptionStanza {
    /// From a presence 'type' attribute; `None` for every other type.
    pub fn from_type(presence_type: &str) -> Option<SubscriptionStanza> {
        match presence_type {
            "subscribe" => Some(SubscriptionStanza::Subscribe),
            "subscribed" => Some(SubscriptionStanza::Subscribed),
            "unsubscribe" => Some(SubscriptionStanza::Unsubscribe),
            "unsubscribed" => Some(SubscriptionStanza::Unsubscribed),
            _ => None,
        }
    }

    /// The presence 'type' attribute.
    pub fn as_type(self) -> &'static str {
        match self {
            SubscriptionStanza::Subscribe => "subscribe",
            SubscriptionStanza::Subscribed => "subscribed",
            SubscriptionStanza::Unsubscribe => "unsubscribe",
            SubscriptionStanza::Unsubscribed => "unsubscribed",
        }
    }
}

/// What the user's server does with an outbound subscription stanza.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundEffect {
    /// The entry to store from now on; `None`: no entry (delete it if one was stored). The
    /// caller stores it when it differs from the current one, even with `changed` false
    /// (Pending In is stored but not shown).
    pub item: Option<RosterItem>,
    /// The user-visible item changed: push it to the user's interested resources.
    pub changed: bool,
    /// Route the stanza to the contact (stamped with the user's bare JID, §3.1.2).
    pub route: bool,
}

/// The user's server processing an outbound subscription stanza from the user to `contact` (a
/// prepared bare JID), given the stored entry for that contact (RFC 6121 §3.1.2, §3.1.5,
/// §3.2.2, §3.3.2, §3.4.1 and the tables of Appendix A.2).
pub fn outbound(current: Option<&RosterItem>, contact: &str, stanza: SubscriptionStanza) -> OutboundEffect {
    let mut item = starting_item(current, contact);
    let route = match stanza {
        // §3.1.2, A.2.1: "None" and "None + Pending In" gain Pending Out, as does "From"; a
        // user already subscribed sees no change. The request is routed in every state: the
        // server "SHOULD" route it even when the user is already subscribed, since the
        // contact's server may have lost the subscription.
        SubscriptionStanza::Subscribe => {
            if !item.subscription.has_to() {
                item.pending_out = true;
                // §3.1.2: the contact now appears in the user's roster with ask='subscribe',
                // including one the user had so far only received a request from.
                item.hidden = false;
            }
            true
        }
        // §3.3.2, A.2.2: drops "To" and Pending Out; routed in every state.
        SubscriptionStanza::Unsubscribe => {
            item.subscription = item.subscription.with_to(false);
            item.pending_out = false;
            true
        }
        SubscriptionStanza::Subscribed => {
            if item.subscription.has_from() {
                // §3.4.1 rule 1, A.2.3: already subscribed, silently ignored.
                false
            } else if item.pending_in {
                // §3.1.5, A.2.3: approval of a pending request. The contact now appears in
                // the roster with subscription 'from' even if the user never added it.
                item.subscription = item.subscription.with_from(true);
                item.pending_in = false;
                item.approved = false;
                item.hidden = false;
                true
            } else {
                // §3.4.1 rules 3 and 4, A.2.3 note: no request yet, so this is a pre-approval,
                // noted on the (possibly new) item and pushed, but "MUST NOT" be routed.
                item.approved = true;
                item.hidden = false;
                false
            }
        }
        SubscriptionStanza::Unsubscribed => {
            if item.subscription.has_from() || item.pending_in {
                // §3.2.2, A.2.4: cancels the contact's subscription or denies its request.
                item.subscription = item.subscription.with_from(false);
                item.pending_in = false;
                item.approved = false;
                true
            } else {
                // §3.2.2, A.2.4 ("None", "None + Pending Out", "To"): nothing to cancel but
                // perhaps a pre-approval, which is removed; either way the stanza is not routed.
                item.approved = false;
                false
            }
        }
    };
    let (item, changed) = settle(current, item);
    OutboundEffect { item, changed, route }
}

/// What the contact's server does with an inbound subscription stanza for one of its users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundEffect {
    /// The entry to store from now on; `None`: no entry (delete it if one was stored). The
    /// caller stores it when it differs from the current one, even with `changed` false.
    pub item: Option<RosterItem>,
    /// The user-visible item changed: push it to the user's interested resources.
    pub changed: bool,
    /// Deliver the stanza to the user's available resources. For `Subscribe` with none
    /// available, the shard keeps it and delivers it when one becomes available (§3.1.3).
    pub deliver: bool,
    /// A stanza the server sends to the contact on the user's behalf (§3.1.3, §3.4.2).
    pub auto_reply: Option<SubscriptionStanza>,
}

/// The user's server processing an inbound subscription stanza from `contact` (a prepared bare
/// JID) to the user, given the stored entry for that contact (RFC 6121 §3.1.3, §3.1.6, §3.2.3,
/// §3.3.3, §3.4.2 and the tables of Appendix A.3). Following Appendix A.3, a stanza is delivered
/// exactly when it changes the stored state; in every other case the server "SHOULD NOT"
/// deliver it, and `subscribe` from a contact that already has a subscription is answered.
pub fn inbound(current: Option<&RosterItem>, contact: &str, stanza: SubscriptionStanza) -> InboundEffect {
    let mut item = starting_item(current, contact);
    let mut auto_reply = None;
    let deliver = match stanza {
        SubscriptionStanza::Subscribe => {
            if item.subscription.has_from() {
                // §3.1.3 rule 2, A.3.1 ("From", "From + Pending Out", "Both"): already
                // subscribed; the server answers `subscribed` itself and does not deliver.
                auto_reply = Some(SubscriptionStanza::Subscribed);
                false
            } else if item.approved {
                // §3.4.2: pre-approved, so the subscription is established without asking the
                // user again; the flag has served its purpose.
                item.subscription = item.subscription.with_from(true);
                item.approved = false;
                auto_reply = Some(SubscriptionStanza::Subscribed);
                false
            } else if item.pending_in {
                // A.3.1 ("… + Pending In"): a repeated request, no state change, not
                // delivered; the shard still holds the first one for delivery (§3.1.3).
                false
            } else {
                // §3.1.3 rules 3 and 4, A.3.1: note the request. A contact the user never
                // added stays out of the roster until the user approves ("MUST NOT create a
                // roster item"); `starting_item` made that entry hidden.
                item.pending_in = true;
                true
            }
        }
        SubscriptionStanza::Unsubscribe => {
            if item.subscription.has_from() || item.pending_in {
                // §3.3.3, A.3.2: the contact cancels its subscription or withdraws its request
                // (a hidden entry then has nothing left and is deleted).
                item.subscription = item.subscription.with_from(false);
                item.pending_in = false;
                true
            } else {
                false
            }
        }
        SubscriptionStanza::Subscribed => {
            if item.pending_out && !item.subscription.has_to() {
                // §3.1.6, A.3.3: only an answer to a request the user made counts.
                item.subscription = item.subscription.with_to(true);
                item.pending_out = false;
                true
            } else {
                // §3.1.6: "MUST ignore" an unsolicited approval.
                false
            }
        }
        SubscriptionStanza::Unsubscribed => {
            if item.subscription.has_to() || item.pending_out {
                // §3.2.3, A.3.4: the contact cancels the user's subscription or denies the
                // user's request.
                item.subscription = item.subscription.with_to(false);
                item.pending_out = false;
                true
            } else {
                false
            }
        }
    };
    let (item, changed) = settle(current, item);
    InboundEffect { item, changed, deliver, auto_reply }
}

/// What the user's server sends the contact when the user removes it from the roster
/// (RFC 6121 §2.5.2), in this order: `unsubscribe` when the user is subscribed or has asked to
/// be (so the contact's server stops sending presence and forgets the request), then
/// `unsubscribed` when the contact is subscribed or has asked to be (cancelling or denying it).
pub fn removal_stanzas(item: &RosterItem) -> Vec<SubscriptionStanza> {
    let mut stanzas = Vec::with_capacity(2);
    if item.subscription.has_to() || item.pending_out {
        stanzas.push(SubscriptionStanza::Unsubscribe);
    }
    if item.subscription.has_from() || item.pending_in {
        stanzas.push(SubscriptionStanza::Unsubscribed);
    }
    stanzas
}

/// The `<query/>` of a roster result or push, with `ver` when versioning is in use.
fn query_element(version: Option<&str>) -> Element {
    let query = Element::new("query", ROSTER_NAMESPACE);
    match version {
        Some(version) => query.with_attribute("ver", version),
        None => query,
    }
}

/// The entry a transition starts from: the stored one, or a hidden "None" entry standing for
/// "not in the roster" (Appendix A.1 treats both as "None"), which `settle` drops again if
/// nothing was noted on it.
fn starting_item(current: Option<&RosterItem>, contact: &str) -> RosterItem {
    match current {
        Some(item) => {
            debug_assert_eq!(item.jid, contact, "roster item for another contact");
            item.clone()
        }
        None => RosterItem { hidden: true, ..RosterItem::new(contact) },
    }
}

/// The entry to store after a transition (none when it holds nothing) and whether what the user
/// sees of it, and therefore a roster push, changed.
fn settle(current: Option<&RosterItem>, item: RosterItem) -> (Option<RosterItem>, bool) {
    let visible = |item: Option<&RosterItem>| item.filter(|item| !item.hidden).map(RosterItem::to_element);
    let next = if item.is_empty_state() { None } else { Some(item) };
    let changed = visible(current) != visible(next.as_ref());
    (next, changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framer::parse_element;

    const CONTACT: &str = "juliet@example.com";

    /// The nine states of Appendix A.1, as (name, subscription, pending out, pending in).
    const STATES: [(&str, Subscription, bool, bool); 9] = [
        ("None", Subscription::None, false, false),
        ("None + Pending Out", Subscription::None, true, false),
        ("None + Pending In", Subscription::None, false, true),
        ("None + Pending Out+In", Subscription::None, true, true),
        ("To", Subscription::To, false, false),
        ("To + Pending In", Subscription::To, false, true),
        ("From", Subscription::From, false, false),
        ("From + Pending Out", Subscription::From, true, false),
        ("Both", Subscription::Both, false, false),
    ];

    fn state(name: &str) -> (Subscription, bool, bool) {
        match STATES.iter().find(|(state, ..)| *state == name) {
            Some(&(_, subscription, pending_out, pending_in)) => (subscription, pending_out, pending_in),
            None => panic!("no state {name}"),
        }
    }

    fn visible_item(name: &str) -> RosterItem {
        let (subscription, pending_out, pending_in) = state(name);
        RosterItem { subscription, pending_out, pending_in, ..RosterItem::new(CONTACT) }
    }

    fn state_name(item: &RosterItem) -> &'static str {
        let key = (item.subscription, item.pending_out, item.pending_in);
        match STATES.iter().find(|(_, s, o, i)| (*s, *o, *i) == key) {
            Some((name, ..)) => name,
            None => panic!("undefined state {key:?}"),
        }
    }

    /// Checks one stanza against every state of Appendix A. Each row: existing state, route or
    /// deliver, new state ("" for no state change).
    fn check_table(
        direction: &str,
        stanza: SubscriptionStanza,
        rows: [(&str, bool, &str); 9],
        run: impl Fn(&RosterItem) -> (Option<RosterItem>, bool, bool),
    ) {
        for (existing, forwarded, new_state) in rows {
            let current = visible_item(existing);
            let (item, forwarded_actual, changed) = run(&current);
            // Subscription processing never deletes an entry the user can see.
            let item = item.unwrap_or_else(|| panic!("{direction} {stanza:?} in {existing} deleted the item"));
            let expected = if new_state.is_empty() { existing } else { new_state };
            let context = format!("{direction} {stanza:?} in {existing}");
            assert_eq!(state_name(&item), expected, "{context}: new state");
            assert_eq!(forwarded_actual, forwarded, "{context}: route/deliver");
            assert!(!item.hidden, "{context}: hidden");
            assert_eq!(item.jid, CONTACT);
            // Pending In is not shown, so only changes of the subscription or of ask push.
            let visible_change = (item.subscription, item.pending_out) != (current.subscription, current.pending_out);
            assert_eq!(changed, visible_change, "{context}: changed");
        }
    }

    fn check_outbound(stanza: SubscriptionStanza, rows: [(&str, bool, &str); 9]) {
        check_table("outbound", stanza, rows, |current| {
            let effect = outbound(Some(current), CONTACT, stanza);
            (effect.item, effect.route, effect.changed)
        });
    }

    fn check_inbound(stanza: SubscriptionStanza, rows: [(&str, bool, &str); 9]) {
        check_table("inbound", stanza, rows, |current| {
            let effect = inbound(Some(current), CONTACT, stanza);
            let from_before = current.subscription.has_from();
            let expected_reply = (stanza == SubscriptionStanza::Subscribe && from_before).then_some(SubscriptionStanza::Subscribed);
            assert_eq!(effect.auto_reply, expected_reply, "inbound {stanza:?} auto reply");
            (effect.item, effect.deliver, effect.changed)
        });
    }

    #[test]
    fn outbound_subscribe_table_a_2_1() {
        check_outbound(
            SubscriptionStanza::Subscribe,
            [
                ("None", true, "None + Pending Out"),
                ("None + Pending Out", true, ""),
                ("None + Pending In", true, "None + Pending Out+In"),
                ("None + Pending Out+In", true, ""),
                ("To", true, ""),
                ("To + Pending In", true, ""),
                ("From", true, "From + Pending Out"),
                ("From + Pending Out", true, ""),
                ("Both", true, ""),
            ],
        );
    }

    #[test]
    fn outbound_unsubscribe_table_a_2_2() {
        check_outbound(
            SubscriptionStanza::Unsubscribe,
            [
                ("None", true, ""),
                ("None + Pending Out", true, "None"),
                ("None + Pending In", true, ""),
                ("None + Pending Out+In", true, "None + Pending In"),
                ("To", true, "None"),
                ("To + Pending In", true, "None + Pending In"),
                ("From", true, ""),
                ("From + Pending Out", true, "From"),
                ("Both", true, "From"),
            ],
        );
    }

    #[test]
    fn outbound_subscribed_table_a_2_3() {
        // The "None", "None + Pending Out" and "To" rows also note a pre-approval (§3.4.1),
        // checked separately below; here only the Appendix A state is compared.
        check_table(
            "outbound",
            SubscriptionStanza::Subscribed,
            [
                ("None", false, ""),
                ("None + Pending Out", false, ""),
                ("None + Pending In", true, "From"),
                ("None + Pending Out+In", true, "From + Pending Out"),
                ("To", false, ""),
                ("To + Pending In", true, "Both"),
                ("From", false, ""),
                ("From + Pending Out", false, ""),
                ("Both", false, ""),
            ],
            |current| {
                let effect = outbound(Some(current), CONTACT, SubscriptionStanza::Subscribed);
                let preapproval = !current.subscription.has_from() && !current.pending_in;
                let item = effect.item.clone();
                if let Some(item) = &item {
                    assert_eq!(item.approved, preapproval, "approved after subscribed in {current:?}");
                }
                // A pre-approval is visible (approved='true'), so it pushes although the
                // Appendix A state is unchanged; compensate so the generic check holds.
                let changed = if preapproval {
                    assert!(effect.changed);
                    false
                } else {
                    effect.changed
                };
                (item, effect.route, changed)
            },
        );
    }

    #[test]
    fn outbound_unsubscribed_table_a_2_4() {
        check_outbound(
            SubscriptionStanza::Unsubscribed,
            [
                ("None", false, ""),
                ("None + Pending Out", false, ""),
                ("None + Pending In", true, "None"),
                ("None + Pending Out+In", true, "None + Pending Out"),
                ("To", false, ""),
                ("To + Pending In", true, "To"),
                ("From", true, "None"),
                ("From + Pending Out", true, "None + Pending Out"),
                ("Both", true, "To"),
            ],
        );
    }

    #[test]
    fn inbound_subscribe_table_a_3_1() {
        check_inbound(
            SubscriptionStanza::Subscribe,
            [
                ("None", true, "None + Pending In"),
                ("None + Pending Out", true, "None + Pending Out+In"),
                ("None + Pending In", false, ""),
                ("None + Pending Out+In", false, ""),
                ("To", true, "To + Pending In"),
                ("To + Pending In", false, ""),
                ("From", false, ""),
                ("From + Pending Out", false, ""),
                ("Both", false, ""),
            ],
        );
    }

    #[test]
    fn inbound_unsubscribe_table_a_3_2() {
        check_inbound(
            SubscriptionStanza::Unsubscribe,
            [
                ("None", false, ""),
                ("None + Pending Out", false, ""),
                ("None + Pending In", true, "None"),
                ("None + Pending Out+In", true, "None + Pending Out"),
                ("To", false, ""),
                ("To + Pending In", true, "To"),
                ("From", true, "None"),
                ("From + Pending Out", true, "None + Pending Out"),
                ("Both", true, "To"),
            ],
        );
    }

    #[test]
    fn inbound_subscribed_table_a_3_3() {
        check_inbound(
            SubscriptionStanza::Subscribed,
            [
                ("None", false, ""),
                ("None + Pending Out", true, "To"),
                ("None + Pending In", false, ""),
                ("None + Pending Out+In", true, "To + Pending In"),
                ("To", false, ""),
                ("To + Pending In", false, ""),
                ("From", false, ""),
                ("From + Pending Out", true, "Both"),
                ("Both", false, ""),
            ],
        );
    }

    #[test]
    fn inbound_unsubscribed_table_a_3_4() {
        check_inbound(
            SubscriptionStanza::Unsubscribed,
            [
                ("None", false, ""),
                ("None + Pending Out", true, "None"),
                ("None + Pending In", false, ""),
                ("None + Pending Out+In", true, "None + Pending In"),
                ("To", true, "None"),
                ("To + Pending In", true, "None + Pending In"),
                ("From", false, ""),
                ("From + Pending Out", true, "From"),
                ("Both", true, "From"),
            ],
        );
    }

    #[test]
    fn no_entry_behaves_as_none_and_stores_only_what_matters() {
        use SubscriptionStanza::*;
        // Inbound: only a request is noted, on a hidden entry (§3.1.3).
        let effect = inbound(None, CONTACT, Subscribe);
        let item = effect.item.expect("pending in noted");
        assert!(item.hidden && item.pending_in && item.subscription == Subscription::None);
        assert!(effect.deliver && !effect.changed && effect.auto_reply.is_none());
        for stanza in [Subscribed, Unsubscribe, Unsubscribed] {
            let effect = inbound(None, CONTACT, stanza);
            assert_eq!((effect.item, effect.changed, effect.deliver, effect.auto_reply), (None, false, false, None));
        }
        // Outbound subscribe creates a visible item with ask='subscribe' (§3.1.2).
        let effect = outbound(None, CONTACT, Subscribe);
        let item = effect.item.expect("item created");
        assert!(!item.hidden && item.pending_out && effect.changed && effect.route);
        // Outbound subscribed without a request: a pre-approval on a new item (§3.4.1 rule 4).
        let effect = outbound(None, CONTACT, Subscribed);
        let item = effect.item.expect("item created");
        assert!(!item.hidden && item.approved && item.subscription == Subscription::None);
        assert!(effect.changed && !effect.route);
        // Unsubscribe is routed even so; unsubscribed has nothing to cancel.
        let effect = outbound(None, CONTACT, Unsubscribe);
        assert_eq!((effect.item, effect.changed, effect.route), (None, false, true));
        let effect = outbound(None, CONTACT, Unsubscribed);
        assert_eq!((effect.item, effect.changed, effect.route), (None, false, false));
    }

    #[test]
    fn approving_a_request_from_a_stranger_adds_it_to_the_roster() {
        // §3.1.5: the contact was never added; approving makes it appear with 'from'.
        let pending = inbound(None, CONTACT, SubscriptionStanza::Subscribe).item;
        let effect = outbound(pending.as_ref(), CONTACT, SubscriptionStanza::Subscribed);
        let item = effect.item.expect("item kept");
        assert_eq!(item.subscription, Subscription::From);
        assert!(!item.hidden && !item.pending_in);
        assert!(effect.changed && effect.route);
    }

    #[test]
    fn denying_or_withdrawn_request_from_a_stranger_leaves_nothing() {
        let pending = inbound(None, CONTACT, SubscriptionStanza::Subscribe).item;
        // The user denies (§3.2.2): routed, no push (the user never saw an item), deleted.
        let effect = outbound(pending.as_ref(), CONTACT, SubscriptionStanza::Unsubscribed);
        assert_eq!((effect.item, effect.changed, effect.route), (None, false, true));
        // The contact withdraws (§3.3.3): delivered so clients drop the request, deleted.
        let effect = inbound(pending.as_ref(), CONTACT, SubscriptionStanza::Unsubscribe);
        assert_eq!((effect.item, effect.changed, effect.deliver), (None, false, true));
    }

    #[test]
    fn subscribing_back_to_a_stranger_shows_the_item() {
        let pending = inbound(None, CONTACT, SubscriptionStanza::Subscribe).item;
        let effect = outbound(pending.as_ref(), CONTACT, SubscriptionStanza::Subscribe);
        let item = effect.item.expect("item kept");
        assert!(!item.hidden && item.pending_out && item.pending_in);
        assert!(effect.changed && effect.route);
    }

    #[test]
    fn pre_approval_is_used_by_the_next_request() {
        // §3.4: pre-approve in "None", "None + Pending Out" and "To"; the contact's request is
        // then answered by the server and not delivered.
        for (existing, after) in [("None", "From"), ("None + Pending Out", "From + Pending Out"), ("To", "Both")] {
            let approved = outbound(Some(&visible_item(existing)), CONTACT, SubscriptionStanza::Subscribed);
            let approved = approved.item.expect("item kept");
            assert!(approved.approved);
            assert_eq!(approved.to_element().attribute("approved"), Some("true"));

            let effect = inbound(Some(&approved), CONTACT, SubscriptionStanza::Subscribe);
            let item = effect.item.expect("item kept");
            assert_eq!(state_name(&item), after, "pre-approved subscribe in {existing}");
            assert!(!item.approved);
            assert_eq!(effect.auto_reply, Some(SubscriptionStanza::Subscribed));
            assert!(effect.changed && !effect.deliver);
        }
    }

    #[test]
    fn unsubscribed_cancels_a_pre_approval_without_routing() {
        let approved = outbound(None, CONTACT, SubscriptionStanza::Subscribed).item;
        let effect = outbound(approved.as_ref(), CONTACT, SubscriptionStanza::Unsubscribed);
        let item = effect.item.expect("visible item kept");
        assert!(!item.approved);
        assert!(effect.changed && !effect.route);
        // Pre-approving twice changes nothing the second time.
        let again = outbound(approved.as_ref(), CONTACT, SubscriptionStanza::Subscribed);
        assert!(!again.changed && !again.route);
    }

    #[test]
    fn name_and_groups_survive_subscription_changes() {
        let mut current = visible_item("None + Pending Out");
        current.name = Some("Juliet".into());
        current.groups = vec!["Friends".into()];
        let item = inbound(Some(&current), CONTACT, SubscriptionStanza::Subscribed).item.expect("kept");
        assert_eq!(item.name.as_deref(), Some("Juliet"));
        assert_eq!(item.groups, ["Friends"]);
    }

    #[test]
    fn removal_cancels_both_directions() {
        use SubscriptionStanza::*;
        for (existing, expected) in [
            ("None", vec![]),
            ("None + Pending Out", vec![Unsubscribe]),
            ("None + Pending In", vec![Unsubscribed]),
            ("None + Pending Out+In", vec![Unsubscribe, Unsubscribed]),
            ("To", vec![Unsubscribe]),
            ("To + Pending In", vec![Unsubscribe, Unsubscribed]),
            ("From", vec![Unsubscribed]),
            ("From + Pending Out", vec![Unsubscribe, Unsubscribed]),
            ("Both", vec![Unsubscribe, Unsubscribed]),
        ] {
            assert_eq!(removal_stanzas(&visible_item(existing)), expected, "{existing}");
        }
    }

    #[test]
    fn subscription_stanza_types_round_trip() {
        use SubscriptionStanza::*;
        for stanza in [Subscribe, Subscribed, Unsubscribe, Unsubscribed] {
            assert_eq!(SubscriptionStanza::from_type(stanza.as_type()), Some(stanza));
        }
        for other in ["", "available", "unavailable", "probe", "error", "Subscribe"] {
            assert_eq!(SubscriptionStanza::from_type(other), None);
        }
    }

    #[test]
    fn item_element() {
        let mut item = visible_item("From + Pending Out");
        item.name = Some("Juliet & co".into());
        item.groups = vec!["Friends".into(), "<Lovers>".into()];
        item.approved = true;
        assert_eq!(
            item.to_element().to_xml(),
            "<item xmlns='jabber:iq:roster' jid='juliet@example.com' name='Juliet &amp; co' \
             subscription='from' ask='subscribe' approved='true'><group>Friends</group>\
             <group>&lt;Lovers&gt;</group></item>"
        );
        assert_eq!(
            RosterItem::new(CONTACT).to_element().to_xml(),
            "<item xmlns='jabber:iq:roster' jid='juliet@example.com' subscription='none'/>"
        );
        assert_eq!(
            removed_item_element(CONTACT).to_xml(),
            "<item xmlns='jabber:iq:roster' jid='juliet@example.com' subscription='remove'/>"
        );
    }

    #[test]
    fn push_iq_xml() {
        let push = push_iq("push1", "romeo@example.net/orchard", Some("ver7"), &visible_item("Both").to_element());
        assert_eq!(
            String::from_utf8(push.clone()).expect("utf-8"),
            "<iq type='set' id='push1' to='romeo@example.net/orchard'><query xmlns='jabber:iq:roster' \
             ver='ver7'><item jid='juliet@example.com' subscription='both'/></query></iq>"
        );
        let parsed = parse_element(&push).expect("well-formed");
        let query = parsed.child("query", ROSTER_NAMESPACE).expect("query");
        assert_eq!(query.child("item", ROSTER_NAMESPACE).and_then(|item| item.attribute("jid")), Some(CONTACT));

        let removal = push_iq("push2", "romeo@example.net/orchard", None, &removed_item_element(CONTACT));
        assert_eq!(
            String::from_utf8(removal).expect("utf-8"),
            "<iq type='set' id='push2' to='romeo@example.net/orchard'><query xmlns='jabber:iq:roster'>\
             <item jid='juliet@example.com' subscription='remove'/></query></iq>"
        );
    }

    #[test]
    fn roster_result_skips_hidden_items() {
        let visible = visible_item("To");
        let mut other = RosterItem::new("nurse@example.com");
        other.name = Some("Nurse".into());
        let hidden = RosterItem { hidden: true, pending_in: true, ..RosterItem::new("tybalt@example.com") };
        let result = roster_result("r1", "romeo@example.net/orchard", Some("v2"), [&visible, &hidden, &other].into_iter());
        assert_eq!(
            String::from_utf8(result).expect("utf-8"),
            "<iq type='result' id='r1' to='romeo@example.net/orchard'><query xmlns='jabber:iq:roster' ver='v2'>\
             <item jid='juliet@example.com' subscription='to'/>\
             <item jid='nurse@example.com' name='Nurse' subscription='none'/></query></iq>"
        );
        let empty = roster_result("r2", "romeo@example.net/orchard", None, std::iter::empty());
        assert_eq!(
            String::from_utf8(empty).expect("utf-8"),
            "<iq type='result' id='r2' to='romeo@example.net/orchard'><query xmlns='jabber:iq:roster'/></iq>"
        );
    }

    #[test]
    fn encode_decode_round_trip() {
        let mut item = visible_item("None + Pending Out+In");
        item.name = Some("Juliet".into());
        item.groups = vec!["Friends".into(), "Family".into()];
        for item in [item, RosterItem::new(CONTACT), RosterItem { hidden: true, pending_in: true, ..RosterItem::new(CONTACT) }] {
            let bytes = item.encode();
            assert_eq!(RosterItem::decode(&bytes).expect("decodes"), item);
            // Unaligned input decodes too.
            let mut shifted = vec![0u8];
            shifted.extend_from_slice(&bytes);
            assert_eq!(RosterItem::decode(&shifted[1..]).expect("decodes unaligned"), item);
        }
        assert!(RosterItem::decode(&[0xff; 7]).is_err());
        assert!(RosterItem::decode(&[]).is_err());
    }

    fn set(xml: &str) -> Result<RosterSet, &'static str> {
        let iq = format!("<iq type='set' id='s'><query xmlns='jabber:iq:roster'>{xml}</query></iq>");
        let iq = parse_element(iq.as_bytes()).expect("well-formed");
        let query = iq.child("query", ROSTER_NAMESPACE).expect("query").clone();
        parse_roster_set(&query)
    }

    fn bare(jid: &str) -> BareJid {
        jid.parse().expect("valid bare JID")
    }

    #[test]
    fn roster_set_update() {
        assert_eq!(
            set("<item jid='Juliet@Example.com' name='Juliet' subscription='both' ask='subscribe' \
                 approved='true'><group>Friends</group><group>Lovers</group></item>"),
            Ok(RosterSet::Update {
                jid: bare("juliet@example.com"),
                name: Some("Juliet".into()),
                groups: vec!["Friends".into(), "Lovers".into()],
            })
        );
        assert_eq!(
            set("<item jid='example.com' name=''/>"),
            Ok(RosterSet::Update { jid: bare("example.com"), name: None, groups: vec![] })
        );
        // A subscription value other than 'remove' is ignored, even one that is not defined.
        assert_eq!(
            set("<item jid='juliet@example.com' subscription='bogus'/>"),
            Ok(RosterSet::Update { jid: bare("juliet@example.com"), name: None, groups: vec![] })
        );
    }

    #[test]
    fn roster_set_remove() {
        assert_eq!(
            set("<item jid='juliet@example.com' subscription='remove'><group>Friends</group></item>"),
            Ok(RosterSet::Remove { jid: bare("juliet@example.com") })
        );
    }

    #[test]
    fn roster_set_errors() {
        let long = "x".repeat(ROSTER_NAME_BYTES_MAX + 1);
        let just_fits = "x".repeat(ROSTER_NAME_BYTES_MAX);
        let groups = |count: usize| (0..count).map(|n| format!("<group>g{n}</group>")).collect::<String>();
        let cases: Vec<(String, Result<(), &str>)> = vec![
            (String::new(), Err("bad-request")),
            ("<item jid='a@b'/><item jid='c@d'/>".into(), Err("bad-request")),
            ("<item/>".into(), Err("bad-request")),
            ("<item name='x'/>".into(), Err("bad-request")),
            ("<item jid=''/>".into(), Err("jid-malformed")),
            ("<item jid='@example.com'/>".into(), Err("jid-malformed")),
            ("<item jid='a b@example.com'/>".into(), Err("jid-malformed")),
            ("<item jid='juliet@example.com/balcony'/>".into(), Err("bad-request")),
            ("<item jid='a@b'><group>x</group><group>x</group></item>".into(), Err("bad-request")),
            ("<item jid='a@b'><group/></item>".into(), Err("not-acceptable")),
            ("<item jid='a@b'><group></group></item>".into(), Err("not-acceptable")),
            (format!("<item jid='a@b' name='{long}'/>"), Err("not-acceptable")),
            (format!("<item jid='a@b' name='{just_fits}'/>"), Ok(())),
            (format!("<item jid='a@b'><group>{long}</group></item>"), Err("not-acceptable")),
            (format!("<item jid='a@b'><group>{just_fits}</group></item>"), Ok(())),
            (format!("<item jid='a@b'>{}</item>", groups(ROSTER_GROUPS_PER_ITEM_MAX)), Ok(())),
            (format!("<item jid='a@b'>{}</item>", groups(ROSTER_GROUPS_PER_ITEM_MAX + 1)), Err("not-acceptable")),
            // Removal ignores what would be wrong in an update.
            (format!("<item jid='a@b' subscription='remove' name='{long}'><group/></item>"), Ok(())),
            // Elements of other namespaces are not items or groups.
            ("<item jid='a@b'><group xmlns='urn:other'/></item><item xmlns='urn:other'/>".into(), Ok(())),
        ];
        for (xml, expected) in cases {
            let shown = &xml[..xml.len().min(80)];
            assert_eq!(set(&xml).map(|_| ()), expected, "{shown}");
        }
    }
}
