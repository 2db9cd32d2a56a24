//! XEP-0191 Blocking Command (v1.3, namespace `urn:xmpp:blocking`): parsing the blocklist iqs,
//! building the results and pushes, matching addresses against blocklist entries, and the
//! errors the server answers in place of a blocked party.
//!
//! This module owns the protocol rules: the request shapes (§3.2–§3.5), the push payloads, the
//! JID matching order (§6, the same as XEP-0016 §2.1) and what happens to a stanza that crosses
//! a block (§3.3). It deliberately does not own the stored blocklist, the set of resources that
//! asked for it (the push targets), or the presence side effects of §3.3/§3.4 (unavailable
//! presence on block, current presence on unblock): the runtime and the store hold those.
//! A user's own resources are never blocked from each other (§5 note): the caller checks that
//! before asking [`is_blocked`].

use std::collections::HashSet;

use crate::jid::Jid;
use crate::routing::{StanzaKind, STANZAS_NAMESPACE};
use crate::xml::{escape_attribute, Element};

/// The XEP-0191 namespace (§3.1).
pub const BLOCKING_NAMESPACE: &str = "urn:xmpp:blocking";
/// Namespace of the application-specific `<blocked/>` error condition (§3.3).
pub const BLOCKING_ERRORS_NAMESPACE: &str = "urn:xmpp:blocking:errors";

/// Entries in one user's blocklist, and items in one block or unblock request. A request with
/// more items is refused with `resource-constraint` before any JID is prepared, and so is a
/// block that would take the stored list past it (the store's check). Each entry costs at most
/// a full JID (3 KiB) in the store and in the user's home shard.
pub const BLOCKLIST_ITEMS_MAX: usize = 1000;

/// A blocklist iq from the user's client (§3.2–§3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockingRequest {
    /// `<blocklist/>` get (§3.2).
    List,
    /// `<block/>` set with at least one item (§3.3): prepared JIDs, duplicates removed, in
    /// request order.
    Block(Vec<String>),
    /// `<unblock/>` set (§3.4): prepared JIDs; empty means unblock everything (§3.5).
    Unblock(Vec<String>),
}

/// Parses the payload of an iq in [`BLOCKING_NAMESPACE`] of type `stanza_type`.
///
/// `Err` is the stanza error condition to answer with: `bad-request` for a payload that does
/// not fit the iq type, a `<block/>` without items (§3.3: "MUST return a bad-request error") or
/// an item without `jid`; `jid-malformed` for a JID that fails RFC 7622 preparation;
/// `resource-constraint` past [`BLOCKLIST_ITEMS_MAX`]; `service-unavailable` for a payload
/// this protocol does not define (RFC 6120 §8.4).
pub fn parse_request(stanza_type: &str, payload: &Element) -> Result<BlockingRequest, &'static str> {
    if payload.namespace != BLOCKING_NAMESPACE {
        return Err("service-unavailable");
    }
    match (stanza_type, payload.name.as_str()) {
        ("get", "blocklist") => Ok(BlockingRequest::List),
        ("set", "block") => {
            let jids = parse_items(payload)?;
            if jids.is_empty() {
                return Err("bad-request");
            }
            Ok(BlockingRequest::Block(jids))
        }
        ("set", "unblock") => Ok(BlockingRequest::Unblock(parse_items(payload)?)),
        (_, "blocklist" | "block" | "unblock") => Err("bad-request"),
        _ => Err("service-unavailable"),
    }
}

/// The `<blocklist/>` of an iq result (§3.2): one `<item jid='…'/>` per entry, empty when
/// nothing is blocked.
pub fn blocklist_element<'a>(items: impl Iterator<Item = &'a str>) -> Element {
    items.fold(Element::new("blocklist", BLOCKING_NAMESPACE), |list, jid| list.with_child(item(jid)))
}

/// A block or unblock push to one resource that asked for the blocklist (§3.3, §3.4, §3.5):
/// `<iq type='set' id='…' to='…'><block|unblock xmlns='urn:xmpp:blocking'><item jid='…'/>…`.
/// An unblock push with no JIDs is the "unblock all" push (§3.5); a block push always has some.
pub fn push_iq(id: &str, to: &str, block: bool, jids: &[String]) -> Vec<u8> {
    debug_assert!(!block || !jids.is_empty(), "a block push without items");
    let payload = jids
        .iter()
        .fold(Element::new(if block { "block" } else { "unblock" }, BLOCKING_NAMESPACE), |payload, jid| payload.with_child(item(jid)));
    let mut out = String::with_capacity(96 + 32 * jids.len());
    out.push_str("<iq type='set' id='");
    out.push_str(&escape_attribute(id));
    out.push_str("' to='");
    out.push_str(&escape_attribute(to));
    out.push_str("'>");
    out.push_str(&payload.to_xml());
    out.push_str("</iq>");
    out.into_bytes()
}

/// Whether blocklist `entry` matches `address` (§6, XEP-0016 §2.1), in order of specificity:
/// `user@domain/resource` (only that resource), `user@domain` (any resource), `domain/resource`
/// (only that resource), `domain` (the domain itself and every address at it). Subdomains do
/// not match.
///
/// Both are prepared JIDs (entries as [`parse_request`] returns them, addresses as the server
/// stamps them), so the comparison is byte for byte.
pub fn matches(entry: &str, address: &str) -> bool {
    let parts = AddressParts::of(address);
    if entry == address || entry == parts.bare || entry == parts.domain {
        return true;
    }
    match (parts.has_local(), parts.resource, entry.split_once('/')) {
        (true, Some(resource), Some((entry_domain, entry_resource))) => entry_domain == parts.domain && entry_resource == resource,
        _ => false,
    }
}

/// Whether any entry of a blocklist matches `address` (§6), given the list's membership test:
/// at most four lookups, whatever the list's size. `address` is prepared, as for [`matches`].
pub fn is_blocked(address: &str, contains: impl Fn(&str) -> bool) -> bool {
    let parts = AddressParts::of(address);
    if contains(address) || contains(parts.bare) || contains(parts.domain) {
        return true;
    }
    match (parts.has_local(), parts.resource) {
        (true, Some(resource)) => contains(&format!("{}/{resource}", parts.domain)),
        _ => false,
    }
}

/// The error a user gets back when they send to a blocked JID (§3.3): the server "MUST NOT
/// route the stanza" and returns `<not-acceptable/>` with `<blocked
/// xmlns='urn:xmpp:blocking:errors'/>`, type `cancel` as in the XEP's example.
///
/// `kind_name` is the stanza's element name (`message`, `presence` or `iq`); `from` is the
/// blocked JID the stanza was addressed to and `to` the user's full JID (the original
/// addresses, already swapped). Not for a stanza of type `error` (RFC 6120 §8.3.1: never answer
/// an error with an error): drop those.
pub fn blocked_error(kind_name: &str, id: Option<&str>, from: &str, to: &str) -> Vec<u8> {
    let kind = StanzaKind::from_name(kind_name);
    debug_assert!(kind.is_some(), "not a stanza: {kind_name}");
    let name = kind.unwrap_or(StanzaKind::Message).name();
    let mut out = String::with_capacity(256);
    out.push('<');
    out.push_str(name);
    out.push_str(" type='error'");
    if let Some(id) = id {
        out.push_str(" id='");
        out.push_str(&escape_attribute(id));
        out.push('\'');
    }
    out.push_str(" from='");
    out.push_str(&escape_attribute(from));
    out.push_str("' to='");
    out.push_str(&escape_attribute(to));
    out.push_str("'><error type='cancel'><not-acceptable xmlns='");
    out.push_str(STANZAS_NAMESPACE);
    out.push_str("'/><blocked xmlns='");
    out.push_str(BLOCKING_ERRORS_NAMESPACE);
    out.push_str("'/></error></");
    out.push_str(name);
    out.push('>');
    out.into_bytes()
}

/// What the user's server does with a stanza *from* a blocked JID (§3.3), which it "MUST NOT
/// deliver": `Some(condition)` to answer the sender with that stanza error, `None` to drop it
/// silently. Presence is dropped without a word; a message gets `service-unavailable` (so the
/// user appears offline) unless it is itself an error; an iq get or set gets
/// `service-unavailable`, a result or error is dropped.
pub fn inbound_blocked_condition(kind_name: &str, stanza_type: Option<&str>) -> Option<&'static str> {
    match (StanzaKind::from_name(kind_name), stanza_type) {
        (Some(StanzaKind::Message), Some("error")) => None,
        (Some(StanzaKind::Message), _) => Some("service-unavailable"),
        (Some(StanzaKind::Iq), Some("get" | "set")) => Some("service-unavailable"),
        _ => None,
    }
}

/// An address split into the forms §6 compares: the bare JID, the domain, and the resource.
struct AddressParts<'a> {
    bare: &'a str,
    domain: &'a str,
    resource: Option<&'a str>,
}

impl<'a> AddressParts<'a> {
    /// RFC 7622 §3.1: the resource is everything after the first `/`; of the rest, the
    /// localpart is everything before the first `@`.
    fn of(address: &'a str) -> Self {
        let (bare, resource) = match address.split_once('/') {
            Some((bare, resource)) => (bare, Some(resource)),
            None => (address, None),
        };
        let domain = bare.split_once('@').map_or(bare, |(_, domain)| domain);
        AddressParts { bare, domain, resource }
    }

    fn has_local(&self) -> bool {
        self.bare.len() != self.domain.len()
    }
}

/// The prepared JIDs of a block or unblock payload's `<item/>` children, duplicates removed.
fn parse_items(payload: &Element) -> Result<Vec<String>, &'static str> {
    let is_item = |child: &&Element| child.name == "item" && child.namespace == BLOCKING_NAMESPACE;
    // Count first, so that an oversized request costs no JID preparation.
    if payload.elements().filter(is_item).count() > BLOCKLIST_ITEMS_MAX {
        return Err("resource-constraint");
    }
    let items = payload.elements().filter(is_item);
    let mut seen = HashSet::new();
    let mut jids = Vec::new();
    for item in items {
        let jid = item.attribute("jid").ok_or("bad-request")?;
        let jid = Jid::parse(jid).map_err(|_| "jid-malformed")?;
        if seen.insert(jid.as_str().to_owned()) {
            jids.push(jid.as_str().to_owned());
        }
    }
    Ok(jids)
}

fn item(jid: &str) -> Element {
    Element::new("item", BLOCKING_NAMESPACE).with_attribute("jid", jid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framer::parse_element;

    fn element(xml: &str) -> Element {
        parse_element(xml.as_bytes()).unwrap_or_else(|e| panic!("{xml}: {e:?}"))
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap_or_else(|e| panic!("{e}"))
    }

    fn strings(jids: &[&str]) -> Vec<String> {
        jids.iter().map(|jid| (*jid).to_owned()).collect()
    }

    #[test]
    fn parse_requests() {
        let ok: &[(&str, &str, BlockingRequest)] = &[
            ("get", "<blocklist xmlns='urn:xmpp:blocking'/>", BlockingRequest::List),
            (
                "set",
                "<block xmlns='urn:xmpp:blocking'><item jid='Romeo@Montague.NET'/>\
                 <item jid='iago@shakespeare.lit/Evil'/><item jid='romeo@montague.net'/>\
                 <item jid='example.org'/></block>",
                BlockingRequest::Block(strings(&["romeo@montague.net", "iago@shakespeare.lit/Evil", "example.org"])),
            ),
            (
                "set",
                "<unblock xmlns='urn:xmpp:blocking'><item jid='romeo@montague.net'/></unblock>",
                BlockingRequest::Unblock(strings(&["romeo@montague.net"])),
            ),
            ("set", "<unblock xmlns='urn:xmpp:blocking'/>", BlockingRequest::Unblock(Vec::new())),
        ];
        for (stanza_type, xml, expected) in ok {
            assert_eq!(parse_request(stanza_type, &element(xml)).as_ref(), Ok(expected), "{xml}");
        }
    }

    #[test]
    fn parse_request_errors() {
        let bad: &[(&str, &str, &str)] = &[
            ("set", "<block xmlns='urn:xmpp:blocking'/>", "bad-request"),
            ("set", "<block xmlns='urn:xmpp:blocking'><other/></block>", "bad-request"),
            ("set", "<block xmlns='urn:xmpp:blocking'><item/></block>", "bad-request"),
            ("set", "<unblock xmlns='urn:xmpp:blocking'><item/></unblock>", "bad-request"),
            ("set", "<block xmlns='urn:xmpp:blocking'><item jid='a@b@c'/></block>", "jid-malformed"),
            ("set", "<block xmlns='urn:xmpp:blocking'><item jid=''/></block>", "jid-malformed"),
            ("set", "<unblock xmlns='urn:xmpp:blocking'><item jid='@x'/></unblock>", "jid-malformed"),
            ("get", "<block xmlns='urn:xmpp:blocking'><item jid='a@b'/></block>", "bad-request"),
            ("get", "<unblock xmlns='urn:xmpp:blocking'/>", "bad-request"),
            ("set", "<blocklist xmlns='urn:xmpp:blocking'/>", "bad-request"),
            ("get", "<query xmlns='urn:xmpp:blocking'/>", "service-unavailable"),
            ("get", "<blocklist xmlns='urn:xmpp:blocking:errors'/>", "service-unavailable"),
        ];
        for &(stanza_type, xml, condition) in bad {
            assert_eq!(parse_request(stanza_type, &element(xml)), Err(condition), "{xml}");
        }
    }

    #[test]
    fn oversized_request_is_refused_before_preparation() {
        let mut block = Element::new("block", BLOCKING_NAMESPACE);
        for n in 0..=BLOCKLIST_ITEMS_MAX {
            block = block.with_child(item(&format!("user{n}@example.org")));
        }
        assert_eq!(parse_request("set", &block), Err("resource-constraint"));
        block.children.pop();
        assert!(matches!(
            parse_request("set", &block),
            Ok(BlockingRequest::Block(jids)) if jids.len() == BLOCKLIST_ITEMS_MAX
        ));
    }

    #[test]
    fn builders() {
        assert_eq!(blocklist_element(std::iter::empty()).to_xml(), "<blocklist xmlns='urn:xmpp:blocking'/>");
        assert_eq!(
            blocklist_element(["romeo@montague.net", "iago@shakespeare.lit"].into_iter()).to_xml(),
            "<blocklist xmlns='urn:xmpp:blocking'><item jid='romeo@montague.net'/>\
             <item jid='iago@shakespeare.lit'/></blocklist>"
        );
        assert_eq!(
            text(push_iq("push1", "juliet@capulet.com/chamber", true, &strings(&["romeo@montague.net"]))),
            "<iq type='set' id='push1' to='juliet@capulet.com/chamber'>\
             <block xmlns='urn:xmpp:blocking'><item jid='romeo@montague.net'/></block></iq>"
        );
        assert_eq!(
            text(push_iq("p'5", "juliet@capulet.com/balcony", false, &[])),
            "<iq type='set' id='p&apos;5' to='juliet@capulet.com/balcony'>\
             <unblock xmlns='urn:xmpp:blocking'/></iq>"
        );
        // The push parses back to the same request.
        let push = element(&text(push_iq("x", "a@b/c", false, &strings(&["d@e"]))));
        let payload = push.elements().next().unwrap_or_else(|| panic!("no payload"));
        assert_eq!(parse_request("set", payload), Ok(BlockingRequest::Unblock(strings(&["d@e"]))));
    }

    #[test]
    fn matching_rules() {
        let address = "romeo@montague.net/orchard";
        // (entry, matches romeo@montague.net/orchard)
        let cases: &[(&str, bool)] = &[
            ("romeo@montague.net/orchard", true),
            ("romeo@montague.net/garden", false),
            ("romeo@montague.net", true),
            ("montague.net/orchard", true),
            ("montague.net/garden", false),
            ("montague.net", true),
            ("benvolio@montague.net", false),
            ("net", false),
            ("chat.montague.net", false),
            ("orchard", false),
            ("Romeo@montague.net", false),
        ];
        for &(entry, expected) in cases {
            assert_eq!(matches(entry, address), expected, "{entry}");
            assert_eq!(is_blocked(address, |key| key == entry), expected, "{entry}");
        }
        // A bare address matches only bare and domain entries.
        assert!(matches("romeo@montague.net", "romeo@montague.net"));
        assert!(matches("montague.net", "romeo@montague.net"));
        assert!(!matches("romeo@montague.net/orchard", "romeo@montague.net"));
        assert!(!matches("montague.net/orchard", "romeo@montague.net"));
        // Domain addresses: the domain entry and the exact domain/resource entry.
        assert!(matches("montague.net", "montague.net"));
        assert!(matches("montague.net", "montague.net/service"));
        assert!(matches("montague.net/service", "montague.net/service"));
        assert!(!matches("montague.net/other", "montague.net/service"));
        // Resources may contain '/' and '@'.
        assert!(matches("montague.net/a/b@c", "romeo@montague.net/a/b@c"));
        assert!(!matches("montague.net/a", "romeo@montague.net/a/b@c"));

        let list: HashSet<String> = strings(&["montague.net/orchard", "iago@shakespeare.lit"]).into_iter().collect();
        let blocked = |address: &str| is_blocked(address, |key| list.contains(key));
        assert!(blocked("romeo@montague.net/orchard"));
        assert!(!blocked("romeo@montague.net/garden"));
        assert!(blocked("iago@shakespeare.lit/x"));
        assert!(!blocked("shakespeare.lit"));
    }

    #[test]
    fn blocked_error_shape() {
        assert_eq!(
            text(blocked_error("message", Some("m1"), "romeo@montague.net", "juliet@capulet.com/balcony")),
            "<message type='error' id='m1' from='romeo@montague.net' to='juliet@capulet.com/balcony'>\
             <error type='cancel'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <blocked xmlns='urn:xmpp:blocking:errors'/></error></message>"
        );
        let iq = text(blocked_error("iq", Some("q'1"), "a@b", "c@d/e"));
        assert!(iq.starts_with("<iq type='error' id='q&apos;1' from='a@b' to='c@d/e'>"), "{iq}");
        assert!(iq.ends_with("</error></iq>"), "{iq}");
        let presence = text(blocked_error("presence", None, "a@b", "c@d/e"));
        assert!(presence.starts_with("<presence type='error' from='a@b' to='c@d/e'>"), "{presence}");
        // It parses, with both conditions in place.
        let tree = element(&iq);
        let error = tree.child("error", "jabber:client").unwrap_or_else(|| panic!("no error"));
        assert!(error.child("not-acceptable", STANZAS_NAMESPACE).is_some());
        assert!(error.child("blocked", BLOCKING_ERRORS_NAMESPACE).is_some());
    }

    #[test]
    fn inbound_from_blocked_jid() {
        let cases: &[(&str, Option<&str>, Option<&str>)] = &[
            ("presence", None, None),
            ("presence", Some("subscribe"), None),
            ("presence", Some("probe"), None),
            ("message", None, Some("service-unavailable")),
            ("message", Some("chat"), Some("service-unavailable")),
            ("message", Some("error"), None),
            ("iq", Some("get"), Some("service-unavailable")),
            ("iq", Some("set"), Some("service-unavailable")),
            ("iq", Some("result"), None),
            ("iq", Some("error"), None),
        ];
        for &(kind, stanza_type, expected) in cases {
            assert_eq!(inbound_blocked_condition(kind, stanza_type), expected, "{kind} {stanza_type:?}");
        }
    }
}
