//! Routing rules: where a stanza goes and what the server answers in place of a recipient.
//!
//! Pure decisions from RFC 6120 §10 and RFC 6121 §8.5 over a snapshot of the recipient's
//! sessions, plus builders for the replies the server itself produces (stanza errors, the
//! server's own iq handlers). This module does not hold session tables or move bytes between
//! shards: the runtime asks it, then acts.

use crate::xml::{push_attribute, Element};

/// Namespace of stanza error conditions (RFC 6120 §8.3.3).
pub const STANZAS_NAMESPACE: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// XEP-0030 service discovery namespaces.
pub const DISCO_INFO_NAMESPACE: &str = "http://jabber.org/protocol/disco#info";
pub const DISCO_ITEMS_NAMESPACE: &str = "http://jabber.org/protocol/disco#items";
/// XEP-0199 ping.
pub const PING_NAMESPACE: &str = "urn:xmpp:ping";
/// RFC 3921 §3 session establishment, kept for old clients (RFC 6121 Appendix E).
pub const SESSION_NAMESPACE: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// RFC 6120 §7 resource binding.
pub const BIND_NAMESPACE: &str = "urn:ietf:params:xml:ns:xmpp-bind";

/// The home shard of a user: FNV-1a of the bare JID, modulo the shard count.
///
/// Stable across processes and restarts (the store is partitioned by it), unlike std's
/// randomly keyed hasher. Also used to pick the shard that counts an address's login failures.
pub fn home_shard(key: &str, shards: usize) -> usize {
    debug_assert!(shards > 0);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % shards.max(1) as u64) as usize
}

/// The three stanza kinds of RFC 6120 §8; anything else at the top level is not a stanza.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StanzaKind {
    Message,
    Presence,
    Iq,
}

impl StanzaKind {
    pub fn from_name(name: &str) -> Option<StanzaKind> {
        match name {
            "message" => Some(StanzaKind::Message),
            "presence" => Some(StanzaKind::Presence),
            "iq" => Some(StanzaKind::Iq),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StanzaKind::Message => "message",
            StanzaKind::Presence => "presence",
            StanzaKind::Iq => "iq",
        }
    }
}

/// What the router needs to know about one session of the recipient.
#[derive(Clone, Copy, Debug)]
pub struct SessionView<'a> {
    pub resource: &'a str,
    /// True once the session sent available presence (RFC 6121 §4.2); an unavailable session
    /// only receives stanzas addressed to its full JID.
    pub available: bool,
    pub priority: i8,
}

/// The router's verdict for a stanza addressed to a local account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Deliver to these sessions (indices into the slice given).
    Sessions(Vec<usize>),
    /// Answer the sender with this stanza error condition.
    Error(&'static str),
    /// Drop silently (the RFC says so for this case).
    Ignore,
    /// The server answers on behalf of the account (RFC 6121 §8.5.1 / §8.5.2.1.3 for iq).
    Server,
}

/// Decides delivery of a stanza to a local account, RFC 6121 §8.5.
///
/// `resource` is the resource part of the `to` address, if any; `stanza_type` the `type`
/// attribute. Offline storage does not exist yet, so a message with no eligible session gets
/// `service-unavailable` (RFC 6121 §8.5.2.2.1, option for servers without offline storage).
pub fn deliver_to_account(
    kind: StanzaKind,
    stanza_type: Option<&str>,
    resource: Option<&str>,
    account_exists: bool,
    sessions: &[SessionView<'_>],
) -> Delivery {
    if !account_exists {
        // RFC 6121 §8.5.1: no such account.
        return match kind {
            StanzaKind::Message if stanza_type == Some("error") => Delivery::Ignore,
            StanzaKind::Message => Delivery::Error("service-unavailable"),
            StanzaKind::Presence => Delivery::Ignore,
            StanzaKind::Iq if is_iq_response(stanza_type) => Delivery::Ignore,
            StanzaKind::Iq => Delivery::Error("service-unavailable"),
        };
    }
    if let Some(resource) = resource {
        if let Some(index) = sessions.iter().position(|s| s.resource == resource) {
            // RFC 6121 §8.5.3.1: the resource exists, deliver to it.
            return Delivery::Sessions(vec![index]);
        }
        // RFC 6121 §8.5.3.2: no such resource.
        return match kind {
            StanzaKind::Message => match stanza_type.unwrap_or("normal") {
                "error" => Delivery::Ignore,
                "groupchat" => Delivery::Error("service-unavailable"),
                // §8.5.3.2.1: normal, chat and headline are treated as if sent to the bare JID.
                other => deliver_message_to_bare(other, sessions),
            },
            StanzaKind::Presence => Delivery::Ignore,
            StanzaKind::Iq if is_iq_response(stanza_type) => Delivery::Ignore,
            StanzaKind::Iq => Delivery::Error("service-unavailable"),
        };
    }
    match kind {
        StanzaKind::Message => deliver_message_to_bare(stanza_type.unwrap_or("normal"), sessions),
        // §8.5.2.1.2: presence to the bare JID goes to every available resource.
        StanzaKind::Presence => {
            let targets: Vec<usize> = (0..sessions.len()).filter(|&i| sessions[i].available).collect();
            if targets.is_empty() {
                Delivery::Ignore
            } else {
                Delivery::Sessions(targets)
            }
        }
        // §8.5.2.1.3 / §8.5.2.2.3: an iq to the bare JID is handled by the server for the user.
        StanzaKind::Iq if is_iq_response(stanza_type) => Delivery::Ignore,
        StanzaKind::Iq => Delivery::Server,
    }
}

/// RFC 6121 §8.5.2.1.1 and §8.5.2.2.1: a message to a bare JID.
fn deliver_message_to_bare(stanza_type: &str, sessions: &[SessionView<'_>]) -> Delivery {
    let eligible = || (0..sessions.len()).filter(|&i| sessions[i].available && sessions[i].priority >= 0);
    match stanza_type {
        "error" => return Delivery::Ignore,
        // §8.5.2.1.1: groupchat to a bare JID is not meaningful; silently ignored.
        "groupchat" => return Delivery::Ignore,
        _ => {}
    }
    match stanza_type {
        // §8.5.2.1.1: headline goes to all non-negative resources.
        "headline" => {
            let all: Vec<usize> = eligible().collect();
            if all.is_empty() {
                Delivery::Ignore
            } else {
                Delivery::Sessions(all)
            }
        }
        // Normal and chat: the "most available" resources, i.e. those with the highest
        // non-negative priority (one of the two options §8.5.2.1.1 allows).
        _ => {
            let Some(top) = eligible().map(|i| sessions[i].priority).max() else {
                return Delivery::Error("service-unavailable");
            };
            Delivery::Sessions(eligible().filter(|&i| sessions[i].priority == top).collect())
        }
    }
}

fn is_iq_response(stanza_type: Option<&str>) -> bool {
    matches!(stanza_type, Some("result") | Some("error"))
}

/// RFC 6120 §8.3.2: the error type that goes with each condition we emit.
pub fn error_type(condition: &str) -> &'static str {
    match condition {
        "bad-request" | "jid-malformed" | "policy-violation" | "not-acceptable" => "modify",
        "not-authorized" | "forbidden" => "auth",
        "resource-constraint" | "internal-server-error" => "wait",
        _ => "cancel",
    }
}

/// Builds a stanza error reply (RFC 6120 §8.3.1): same kind and id, `to` and `from` swapped,
/// `type='error'`. The original payload is not echoed back (§8.3.1 makes that optional), so
/// the reply stays small whatever the sender sent.
pub fn error_reply(kind: StanzaKind, id: Option<&str>, from: Option<&str>, to: Option<&str>, condition: &str) -> Vec<u8> {
    let mut out = String::with_capacity(256);
    out.push('<');
    out.push_str(kind.name());
    push_attribute(&mut out, "type", "error");
    if let Some(id) = id {
        push_attribute(&mut out, "id", id);
    }
    if let Some(from) = from {
        push_attribute(&mut out, "from", from);
    }
    if let Some(to) = to {
        push_attribute(&mut out, "to", to);
    }
    out.push_str("><error type='");
    out.push_str(error_type(condition));
    out.push_str("'><");
    out.push_str(condition);
    out.push_str(" xmlns='");
    out.push_str(STANZAS_NAMESPACE);
    out.push_str("'/></error></");
    out.push_str(kind.name());
    out.push('>');
    out.into_bytes()
}

/// Builds an iq result (RFC 6120 §8.2.3) with an optional payload.
pub fn iq_result(id: &str, from: Option<&str>, to: &str, payload: Option<&Element>) -> Vec<u8> {
    let mut out = String::with_capacity(128);
    out.push_str("<iq type='result'");
    push_attribute(&mut out, "id", id);
    if let Some(from) = from {
        push_attribute(&mut out, "from", from);
    }
    push_attribute(&mut out, "to", to);
    match payload {
        Some(payload) => {
            out.push('>');
            out.push_str(&payload.to_xml());
            out.push_str("</iq>");
        }
        None => out.push_str("/>"),
    }
    out.into_bytes()
}

/// Features the server advertises in disco#info (XEP-0030 §3.1); only what works.
pub const SERVER_FEATURES: &[&str] = &[DISCO_INFO_NAMESPACE, DISCO_ITEMS_NAMESPACE, PING_NAMESPACE];

/// Answers an iq addressed to the server itself or handled on behalf of an account
/// (RFC 6120 §10.3, RFC 6121 §8.5.2.1.3). `payload` is the iq's first child element,
/// `account` is `Some(bare)` when the iq was addressed to that account's bare JID.
/// Returns the reply bytes: a result, or `service-unavailable` for anything unhandled
/// (RFC 6120 §8.4: an entity that does not understand an iq get/set must answer with an error).
pub fn server_iq(
    stanza_type: &str,
    id: &str,
    payload: Option<&Element>,
    reply_from: Option<&str>,
    reply_to: &str,
    account: Option<&str>,
) -> Vec<u8> {
    let unavailable = || error_reply(StanzaKind::Iq, Some(id), reply_from, Some(reply_to), "service-unavailable");
    let Some(payload) = payload else {
        // RFC 6120 §8.2.3: an iq get/set contains exactly one payload child.
        return error_reply(StanzaKind::Iq, Some(id), reply_from, Some(reply_to), "bad-request");
    };
    match (stanza_type, payload.name.as_str(), payload.namespace.as_str()) {
        ("get", "ping", PING_NAMESPACE) => iq_result(id, reply_from, reply_to, None),
        ("set", "session", SESSION_NAMESPACE) => iq_result(id, reply_from, reply_to, None),
        ("get", "query", DISCO_INFO_NAMESPACE) if payload.attribute("node").is_none() => {
            let mut query = Element::new("query", DISCO_INFO_NAMESPACE);
            let identity = match account {
                // XEP-0030 §3.1 / the registry: an account answers as account/registered.
                Some(_) => Element::new("identity", DISCO_INFO_NAMESPACE)
                    .with_attribute("category", "account")
                    .with_attribute("type", "registered"),
                None => Element::new("identity", DISCO_INFO_NAMESPACE)
                    .with_attribute("category", "server")
                    .with_attribute("type", "im")
                    .with_attribute("name", "Confab"),
            };
            query = query.with_child(identity);
            let features: &[&str] = if account.is_some() { &[DISCO_INFO_NAMESPACE] } else { SERVER_FEATURES };
            for feature in features {
                query = query.with_child(Element::new("feature", DISCO_INFO_NAMESPACE).with_attribute("var", feature));
            }
            iq_result(id, reply_from, reply_to, Some(&query))
        }
        ("get", "query", DISCO_ITEMS_NAMESPACE) if payload.attribute("node").is_none() => {
            // No sub-services yet (MUC arrives with its own issue): an empty list is the truth.
            iq_result(id, reply_from, reply_to, Some(&Element::new("query", DISCO_ITEMS_NAMESPACE)))
        }
        ("get", "query", DISCO_INFO_NAMESPACE | DISCO_ITEMS_NAMESPACE) => {
            error_reply(StanzaKind::Iq, Some(id), reply_from, Some(reply_to), "item-not-found")
        }
        _ => unavailable(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(resource: &str, available: bool, priority: i8) -> SessionView<'_> {
        SessionView { resource, available, priority }
    }

    #[test]
    fn home_shard_is_stable_and_spreads() {
        assert_eq!(home_shard("alice@localhost", 1), 0);
        assert_eq!(home_shard("alice@localhost", 7), home_shard("alice@localhost", 7));
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[home_shard(&format!("user{i}@localhost"), 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }

    #[test]
    fn unknown_account() {
        use StanzaKind::*;
        assert_eq!(deliver_to_account(Message, Some("chat"), None, false, &[]), Delivery::Error("service-unavailable"));
        assert_eq!(deliver_to_account(Message, Some("error"), None, false, &[]), Delivery::Ignore);
        assert_eq!(deliver_to_account(Presence, None, None, false, &[]), Delivery::Ignore);
        assert_eq!(deliver_to_account(Iq, Some("get"), Some("r"), false, &[]), Delivery::Error("service-unavailable"));
        assert_eq!(deliver_to_account(Iq, Some("result"), Some("r"), false, &[]), Delivery::Ignore);
    }

    #[test]
    fn full_jid_of_existing_resource_is_delivered_even_when_unavailable() {
        let sessions = [session("a", false, 0), session("b", true, 5)];
        assert_eq!(deliver_to_account(StanzaKind::Iq, Some("get"), Some("a"), true, &sessions), Delivery::Sessions(vec![0]));
    }

    #[test]
    fn missing_resource() {
        use StanzaKind::*;
        let sessions = [session("a", true, 1), session("b", true, 3), session("c", true, 3), session("d", true, -1)];
        assert_eq!(deliver_to_account(Message, Some("chat"), Some("x"), true, &sessions), Delivery::Sessions(vec![1, 2]));
        assert_eq!(deliver_to_account(Message, Some("groupchat"), Some("x"), true, &sessions), Delivery::Error("service-unavailable"));
        assert_eq!(deliver_to_account(Presence, None, Some("x"), true, &sessions), Delivery::Ignore);
        assert_eq!(deliver_to_account(Iq, Some("set"), Some("x"), true, &sessions), Delivery::Error("service-unavailable"));
    }

    #[test]
    fn bare_jid_messages_prefer_highest_non_negative_priority() {
        use StanzaKind::*;
        let sessions = [session("a", true, 1), session("b", true, 3), session("c", false, 9), session("d", true, -1)];
        assert_eq!(deliver_to_account(Message, None, None, true, &sessions), Delivery::Sessions(vec![1]));
        assert_eq!(deliver_to_account(Message, Some("headline"), None, true, &sessions), Delivery::Sessions(vec![0, 1]));
        assert_eq!(deliver_to_account(Presence, None, None, true, &sessions), Delivery::Sessions(vec![0, 1, 3]));
        assert_eq!(deliver_to_account(Iq, Some("get"), None, true, &sessions), Delivery::Server);
        let only_negative = [session("d", true, -1), session("e", false, 0)];
        assert_eq!(deliver_to_account(Message, Some("chat"), None, true, &only_negative), Delivery::Error("service-unavailable"));
        assert_eq!(deliver_to_account(Message, Some("headline"), None, true, &only_negative), Delivery::Ignore);
    }

    #[test]
    fn error_reply_swaps_addresses_and_escapes() {
        let bytes = error_reply(StanzaKind::Message, Some("a'1"), Some("bob@x"), Some("alice@x/r"), "service-unavailable");
        let text = String::from_utf8(bytes).expect("utf8");
        assert_eq!(
            text,
            "<message type='error' id='a&apos;1' from='bob@x' to='alice@x/r'><error type='cancel'>\
             <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
        );
    }

    #[test]
    fn server_iq_handlers() {
        let ping = Element::new("ping", PING_NAMESPACE);
        let reply = String::from_utf8(server_iq("get", "p1", Some(&ping), Some("localhost"), "a@localhost/r", None)).expect("utf8");
        assert_eq!(reply, "<iq type='result' id='p1' from='localhost' to='a@localhost/r'/>");
        let info = Element::new("query", DISCO_INFO_NAMESPACE);
        let reply = String::from_utf8(server_iq("get", "d", Some(&info), Some("localhost"), "a@localhost/r", None)).expect("utf8");
        assert!(reply.contains("category='server'") && reply.contains(PING_NAMESPACE), "{reply}");
        let unknown = Element::new("query", "jabber:iq:version");
        let reply = String::from_utf8(server_iq("get", "v", Some(&unknown), Some("localhost"), "a@localhost/r", None)).expect("utf8");
        assert!(reply.contains("service-unavailable"), "{reply}");
        let reply = String::from_utf8(server_iq("set", "x", None, Some("localhost"), "a@localhost/r", None)).expect("utf8");
        assert!(reply.contains("bad-request"), "{reply}");
    }
}
