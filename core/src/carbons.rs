//! XEP-0280 Message Carbons (v1.0, namespace `urn:xmpp:carbons:2`): which messages are copied,
//! how a copy is wrapped (XEP-0297 forwarding), and the enable/disable toggle.
//!
//! This module owns the §6.1 eligibility rules (with the XEP-0334 `<no-copy/>` hint), the §7/§8
//! `<received/>`/`<sent/>` wrapper and the §9 `<private/>` handling. It deliberately does not own
//! the per-session "carbons enabled" flag, the choice of which resources get a copy (§7: every
//! carbons-enabled resource that did not get the original under RFC 6121 §8.5.3; §8: every one
//! except the sender), or any MUC state: the runtime holds those and asks this module.

use crate::xml::{escape_attribute, Element, Node};

/// The XEP-0280 namespace (§3).
pub const CARBONS_NAMESPACE: &str = "urn:xmpp:carbons:2";
/// XEP-0334 message processing hints.
pub const HINTS_NAMESPACE: &str = "urn:xmpp:hints";
/// XEP-0297 stanza forwarding.
pub const FORWARD_NAMESPACE: &str = "urn:xmpp:forward:0";
/// XEP-0045 §7.5 (v1.28+): occupants and the room mark private messages with an `<x/>` here.
pub const MUC_USER_NAMESPACE: &str = "http://jabber.org/protocol/muc#user";
/// XEP-0249 direct MUC invitations.
pub const CONFERENCE_NAMESPACE: &str = "jabber:x:conference";
/// XEP-0085 chat state notifications.
pub const CHAT_STATES_NAMESPACE: &str = "http://jabber.org/protocol/chatstates";
/// XEP-0184 message delivery receipts.
pub const RECEIPTS_NAMESPACE: &str = "urn:xmpp:receipts";
/// XEP-0333 chat markers.
pub const CHAT_MARKERS_NAMESPACE: &str = "urn:xmpp:chat-markers:0";

/// Which way a message went relative to the carbons user: `Sent` by one of their resources
/// (§8, wrapped in `<sent/>`), or `Received` by them (§7, wrapped in `<received/>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Sent,
    Received,
}

/// Whether a message is eligible for carbons in either direction: [`is_eligible_for`] with
/// [`Direction::Received`], the stricter of the two (they differ only for MUC private
/// messages, which are copied when sent but not when received).
pub fn is_eligible(message: &Element) -> bool {
    is_eligible_for(Direction::Received, message)
}

/// The §6.1 recommended rules, in the order that decides:
///
/// 1. Never a message that already carries a carbons `<sent/>` or `<received/>`: copying a copy
///    would duplicate it (or loop), and such a message from a client is a forgery anyway (§11).
/// 2. Never one marked `<private xmlns='urn:xmpp:carbons:2'/>` (§9) or
///    `<no-copy xmlns='urn:xmpp:hints'/>` (XEP-0334 §4: "should not be copied to addresses other
///    than the one to which it is addressed, for example through Message Carbons").
/// 3. MUC: never type `groupchat`; always a direct (XEP-0249) or mediated (XEP-0045 `<invite/>`)
///    invitation; a private message (marked with a muc#user `<x/>`) only when `Sent` — a
///    received one is already replicated by the room to every joined client.
/// 4. Type `chat`; type `normal` (absent or unknown types count as normal, RFC 6121 §5.2.2)
///    with a `<body/>`; or any type carrying IM payloads: chat states (XEP-0085), receipts
///    (XEP-0184) or chat markers (XEP-0333).
///
/// Type `error` is never eligible: §6.1 allows it only in reply to an eligible message, which
/// would need tracking, and an error echoing the original's payload must not qualify by rule 4.
pub fn is_eligible_for(direction: Direction, message: &Element) -> bool {
    if message.name != "message" {
        return false;
    }
    let carries = |name: &str, namespace: &str| message.child(name, namespace).is_some();
    if carries("sent", CARBONS_NAMESPACE) || carries("received", CARBONS_NAMESPACE) {
        return false;
    }
    if carries("private", CARBONS_NAMESPACE) || carries("no-copy", HINTS_NAMESPACE) {
        return false;
    }
    let message_type = message_type(message);
    if message_type == "groupchat" || message_type == "error" {
        return false;
    }
    if carries("x", CONFERENCE_NAMESPACE) {
        return true;
    }
    if let Some(muc) = message.child("x", MUC_USER_NAMESPACE) {
        if muc.child("invite", MUC_USER_NAMESPACE).is_some() {
            return true;
        }
        return direction == Direction::Sent;
    }
    if message_type == "chat" {
        return true;
    }
    if message_type == "normal" && message.child("body", &message.namespace).is_some() {
        return true;
    }
    message.elements().any(|child| matches!(child.namespace.as_str(), CHAT_STATES_NAMESPACE | RECEIPTS_NAMESPACE | CHAT_MARKERS_NAMESPACE))
}

/// The carbon copy of `original` for one resource (§7 received, §8 sent):
///
/// `<message xmlns='jabber:client' from='{owner_bare}' to='{to_full}' type='{original's}'>`
/// `<sent|received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>`
/// `{original}</forwarded></…></message>`
///
/// §7/§8: `from` MUST be the user's bare JID, `to` the full JID receiving the copy, and the
/// wrapper SHOULD keep the original's `type` (left out when the original has none or an
/// unknown one, both meaning `normal`). `original` is a complete serialised `<message/>` that
/// declares `xmlns='jabber:client'` itself (XEP-0297: the forwarded stanza keeps its
/// namespace, and inside `<forwarded/>` the default namespace is not `jabber:client`); the
/// caller guarantees it.
pub fn wrap(direction: Direction, owner_bare: &str, to_full: &str, original: &[u8]) -> Vec<u8> {
    debug_assert!(original.starts_with(b"<message"), "not a message");
    let wrapper = match direction {
        Direction::Sent => "sent",
        Direction::Received => "received",
    };
    let mut out = Vec::with_capacity(original.len() + 256);
    out.extend_from_slice(b"<message xmlns='jabber:client' from='");
    out.extend_from_slice(escape_attribute(owner_bare).as_bytes());
    out.extend_from_slice(b"' to='");
    out.extend_from_slice(escape_attribute(to_full).as_bytes());
    out.push(b'\'');
    if let Some(message_type) = root_attribute(original, b"type").and_then(known_type) {
        out.extend_from_slice(b" type='");
        out.extend_from_slice(message_type.as_bytes());
        out.push(b'\'');
    }
    out.extend_from_slice(b"><");
    out.extend_from_slice(wrapper.as_bytes());
    out.extend_from_slice(b" xmlns='");
    out.extend_from_slice(CARBONS_NAMESPACE.as_bytes());
    out.extend_from_slice(b"'><forwarded xmlns='");
    out.extend_from_slice(FORWARD_NAMESPACE.as_bytes());
    out.extend_from_slice(b"'>");
    out.extend_from_slice(original);
    out.extend_from_slice(b"</forwarded></");
    out.extend_from_slice(wrapper.as_bytes());
    out.extend_from_slice(b"></message>");
    out
}

/// Removes every `<private xmlns='urn:xmpp:carbons:2'/>` child of a message; true when one was
/// there. §9: the receiving server SHOULD remove it before delivering to the recipient (the
/// sending side keeps it, so that the recipient's server, maybe us, still sees it). Not on the
/// hot path: only for a message that [`is_eligible_for`] already refused.
pub fn remove_private(message: &mut Element) -> bool {
    let before = message.children.len();
    message.children.retain(|node| {
        !matches!(node, Node::Element(child)
            if child.name == "private" && child.namespace == CARBONS_NAMESPACE)
    });
    message.children.len() != before
}

/// The payload of a carbons iq-set (§4, §5): `<enable/>` is `Some(true)`, `<disable/>` is
/// `Some(false)`, anything else `None` (not ours: the router answers as for any unknown
/// payload). Enabling twice or disabling twice is not an error (§10.1); the runtime answers
/// each with a result. The iq type (`set`) is the caller's check.
pub fn parse_toggle(payload: &Element) -> Option<bool> {
    if payload.namespace != CARBONS_NAMESPACE {
        return None;
    }
    match payload.name.as_str() {
        "enable" => Some(true),
        "disable" => Some(false),
        _ => None,
    }
}

/// The message's `type`, with RFC 6121 §5.2.2 applied: absent or not understood is `normal`.
fn message_type(message: &Element) -> &str {
    match message.attribute("type") {
        Some(value @ ("chat" | "error" | "groupchat" | "headline" | "normal")) => value,
        _ => "normal",
    }
}

/// A message type as written in a `type` attribute, when it is one of RFC 6121 §5.2.2's.
fn known_type(value: &[u8]) -> Option<&'static str> {
    match value {
        b"chat" => Some("chat"),
        b"error" => Some("error"),
        b"groupchat" => Some("groupchat"),
        b"headline" => Some("headline"),
        b"normal" => Some("normal"),
        _ => None,
    }
}

/// The raw (still escaped) value of attribute `name` on the root start tag of `element`, which
/// must be well-formed (it went through the framer). Reads only the start tag: cheaper than
/// building a tree for one attribute. Well-formed XML puts no `<`, and no quote of the kind that
/// delimits it, inside an attribute value, so scanning from quote to quote is exact.
fn root_attribute<'a>(element: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let is_space = |byte: u8| matches!(byte, b' ' | b'\t' | b'\r' | b'\n');
    let mut rest = element.strip_prefix(b"<")?;
    // Skip the element's qualified name.
    let name_end = rest.iter().position(|&byte| is_space(byte) || byte == b'>' || byte == b'/')?;
    rest = &rest[name_end..];
    loop {
        let start = rest.iter().position(|&byte| !is_space(byte))?;
        rest = &rest[start..];
        if matches!(rest.first(), Some(b'>' | b'/') | None) {
            return None;
        }
        let equals = rest.iter().position(|&byte| byte == b'=')?;
        let attribute = rest[..equals].trim_ascii_end();
        rest = rest[equals + 1..].trim_ascii_start();
        let (&quote, after_quote) = rest.split_first()?;
        if quote != b'\'' && quote != b'"' {
            return None;
        }
        let value_end = after_quote.iter().position(|&byte| byte == quote)?;
        if attribute == name {
            return Some(&after_quote[..value_end]);
        }
        rest = &after_quote[value_end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framer::parse_element;

    fn element(xml: &str) -> Element {
        parse_element(xml.as_bytes()).unwrap_or_else(|e| panic!("{xml}: {e:?}"))
    }

    #[test]
    fn eligibility_table() {
        // (message, eligible when sent, eligible when received)
        let cases: &[(&str, bool, bool)] = &[
            ("<message type='chat'><body>hi</body></message>", true, true),
            ("<message type='chat'/>", true, true),
            ("<message type='normal'><body>hi</body></message>", true, true),
            ("<message><body>hi</body></message>", true, true),
            ("<message type='bogus'><body>hi</body></message>", true, true),
            ("<message type='normal'/>", false, false),
            ("<message><subject>s</subject></message>", false, false),
            ("<message type='headline'><body>news</body></message>", false, false),
            ("<message><composing xmlns='http://jabber.org/protocol/chatstates'/></message>", true, true),
            ("<message><received xmlns='urn:xmpp:receipts' id='1'/></message>", true, true),
            ("<message><displayed xmlns='urn:xmpp:chat-markers:0' id='1'/></message>", true, true),
            ("<message type='headline'><request xmlns='urn:xmpp:receipts'/></message>", true, true),
            ("<message type='error'><body>hi</body></message>", false, false),
            ("<message type='error'><active xmlns='http://jabber.org/protocol/chatstates'/></message>", false, false),
            ("<message type='groupchat'><body>hi</body></message>", false, false),
            ("<message type='chat'><body>hi</body><private xmlns='urn:xmpp:carbons:2'/></message>", false, false),
            ("<message type='chat'><body>hi</body><no-copy xmlns='urn:xmpp:hints'/></message>", false, false),
            // A no-store hint says nothing about copies.
            ("<message type='chat'><body>hi</body><no-store xmlns='urn:xmpp:hints'/></message>", true, true),
            (
                "<message type='chat'><sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'/></sent></message>",
                false,
                false,
            ),
            ("<message type='chat'><received xmlns='urn:xmpp:carbons:2'/></message>", false, false),
            // MUC private messages: copied when sent, not when received.
            ("<message type='chat'><body>pm</body><x xmlns='http://jabber.org/protocol/muc#user'/></message>", true, false),
            // Invitations, direct and mediated.
            ("<message><x xmlns='jabber:x:conference' jid='room@muc.example'/></message>", true, true),
            ("<message><x xmlns='http://jabber.org/protocol/muc#user'><invite from='a@example'/></x></message>", true, true),
            ("<message type='groupchat'><x xmlns='jabber:x:conference' jid='r@m'/></message>", false, false),
        ];
        for &(xml, sent, received) in cases {
            let message = element(xml);
            assert_eq!(is_eligible_for(Direction::Sent, &message), sent, "sent: {xml}");
            assert_eq!(is_eligible_for(Direction::Received, &message), received, "received: {xml}");
            assert_eq!(is_eligible(&message), received, "{xml}");
        }
        assert!(!is_eligible(&element("<iq type='set'/>")));
    }

    #[test]
    fn wrap_output() {
        let original = b"<message xmlns='jabber:client' from='juliet@capulet.example/balcony' \
                         to='romeo@montague.example/garden' type='chat'><body>Hi</body></message>";
        let wrapped = wrap(Direction::Received, "romeo@montague.example", "romeo@montague.example/home", original);
        let expected = format!(
            "<message xmlns='jabber:client' from='romeo@montague.example' \
             to='romeo@montague.example/home' type='chat'><received xmlns='urn:xmpp:carbons:2'>\
             <forwarded xmlns='urn:xmpp:forward:0'>{}</forwarded></received></message>",
            String::from_utf8_lossy(original)
        );
        assert_eq!(String::from_utf8_lossy(&wrapped), expected);

        // The copy parses, and the forwarded message keeps jabber:client.
        let tree = parse_element(&wrapped).unwrap_or_else(|e| panic!("{e:?}"));
        let forwarded = tree
            .child("received", CARBONS_NAMESPACE)
            .and_then(|received| received.child("forwarded", FORWARD_NAMESPACE))
            .and_then(|forwarded| forwarded.child("message", "jabber:client"));
        assert_eq!(forwarded.and_then(|message| message.attribute("to")), Some("romeo@montague.example/garden"));
        // A copy is never copied again.
        assert!(!is_eligible_for(Direction::Sent, &tree));
    }

    #[test]
    fn wrap_sent_keeps_type_only_when_known_and_escapes_addresses() {
        let sent = |original: &[u8]| String::from_utf8_lossy(&wrap(Direction::Sent, "a'b@x", "a'b@x/r", original)).into_owned();
        let untyped = sent(b"<message xmlns='jabber:client' to='c@x'><body>1</body></message>");
        assert!(
            untyped.starts_with("<message xmlns='jabber:client' from='a&apos;b@x' to='a&apos;b@x/r'><sent xmlns='urn:xmpp:carbons:2'>"),
            "{untyped}"
        );
        let typed = sent(b"<message\n to = \"c@x\"\ttype=\"normal\" xmlns='jabber:client'/>");
        assert!(typed.contains("to='a&apos;b@x/r' type='normal'><sent"), "{typed}");
        let bogus = sent(b"<message type='x&amp;y' xmlns='jabber:client'/>");
        assert!(bogus.contains("to='a&apos;b@x/r'><sent"), "{bogus}");
        // A 'type' inside a child is not the message's.
        let nested = sent(b"<message xmlns='jabber:client'><x type='chat'/></message>");
        assert!(nested.contains("to='a&apos;b@x/r'><sent"), "{nested}");
    }

    #[test]
    fn root_attribute_reads_only_the_start_tag() {
        assert_eq!(root_attribute(b"<m a='1' type='chat'>", b"type"), Some(&b"chat"[..]));
        assert_eq!(root_attribute(b"<m a='>' type=\"x'y\"/>", b"type"), Some(&b"x'y"[..]));
        assert_eq!(root_attribute(b"<m/>", b"type"), None);
        assert_eq!(root_attribute(b"<m>", b"type"), None);
        assert_eq!(root_attribute(b"<m xtype='1'/>", b"type"), None);
        assert_eq!(root_attribute(b"<m type='unterminated", b"type"), None);
        assert_eq!(root_attribute(b"m type='1'", b"type"), None);
        assert_eq!(root_attribute(b"", b"type"), None);
    }

    #[test]
    fn private_is_removed_for_delivery() {
        let mut message = element("<message type='chat'><body>hi</body><private xmlns='urn:xmpp:carbons:2'/></message>");
        assert!(remove_private(&mut message));
        assert!(message.child("private", CARBONS_NAMESPACE).is_none());
        assert!(message.child("body", "jabber:client").is_some());
        assert!(!remove_private(&mut message));
    }

    #[test]
    fn toggle() {
        assert_eq!(parse_toggle(&element("<enable xmlns='urn:xmpp:carbons:2'/>")), Some(true));
        assert_eq!(parse_toggle(&element("<disable xmlns='urn:xmpp:carbons:2'/>")), Some(false));
        assert_eq!(parse_toggle(&element("<enable xmlns='urn:xmpp:carbons:1'/>")), None);
        assert_eq!(parse_toggle(&element("<private xmlns='urn:xmpp:carbons:2'/>")), None);
    }
}
