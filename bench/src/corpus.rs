//! Realistic client-to-server XMPP byte streams, generated deterministically.
//!
//! This module owns what a bound client sends after its stream header: 1:1 chat messages in
//! the shape modern clients send them (body of about 100 bytes, chat state, receipt request,
//! marker, origin-id), chat-state and receipt/marker messages, presence with show, status,
//! priority, entity caps and idle time, iq traffic (pings, disco#info queries and the large
//! disco#info results a client returns for caps, roster get/set, carbons, a MAM query) and
//! single-space whitespace keepalives. Bodies sometimes carry the five predefined entities,
//! numeric character references or raw non-ASCII UTF-8, so the framer's reference and UTF-8
//! checks are exercised as in real traffic.
//!
//! The mix is by stanza count and is a judgement, not a capture: about two thirds messages
//! (which dominate an active chat session), a tenth presence, the rest iq, and a keepalive
//! after one stanza in ten. It deliberately contains nothing the framer rejects; the error
//! paths are the unit tests' business, not a throughput figure's.

use std::fmt::Write as _;

/// The domain every generated address lives in.
pub const DOMAIN: &str = "example.com";

/// What a client sends first (RFC 6120 §4.7), with an XML declaration as most libraries do.
pub const STREAM_HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' xml:lang='en'>";

/// A generated stream and what a correct framer must find in it.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// The stream header followed by stanzas and keepalives; the stream is left open.
    pub bytes: Vec<u8>,
    /// Top-level elements after the header.
    pub stanzas: u64,
    /// How many of them are `<message/>`.
    pub messages: u64,
    /// Whitespace keepalive runs between stanzas (each one `Frame::Whitespace`).
    pub keepalives: u64,
}

/// A small deterministic generator (xorshift64*), so every run frames the same bytes.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (zero is replaced, xorshift would stay at zero).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 { 0x9e37_79b9_7f4a_7c15 } else { seed })
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..bound` (`bound` > 0); the modulo bias is irrelevant here.
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A client stream of at least `min_bytes` (header included), with the mix described in the
/// module documentation.
pub fn mixed_client_stream(min_bytes: usize, seed: u64) -> Corpus {
    let mut rng = Rng::new(seed);
    let mut out = String::with_capacity(min_bytes + 4096);
    out.push_str(std::str::from_utf8(STREAM_HEADER).unwrap_or_default());
    let (mut stanzas, mut messages, mut keepalives) = (0, 0, 0);
    while out.len() < min_bytes {
        let contact = contact(&mut rng);
        // Weights per 100 stanzas; see the module documentation.
        let roll = rng.below(100);
        let is_message = roll < 67;
        match roll {
            0..=39 => chat_message(&mut rng, &mut out, &contact),
            40..=54 => chat_state(&mut rng, &mut out, &contact),
            55..=66 => receipt_or_marker(&mut rng, &mut out, &contact),
            67..=76 => presence(&mut rng, &mut out),
            77..=84 => ping(&mut rng, &mut out),
            85..=88 => disco_info_result(&mut rng, &mut out, &contact),
            89..=91 => disco_info_get(&mut rng, &mut out),
            92..=93 => roster_set(&mut rng, &mut out, &contact),
            94 => roster_get(&mut rng, &mut out),
            95 => carbons_enable(&mut rng, &mut out),
            _ => mam_query(&mut rng, &mut out, &contact),
        }
        stanzas += 1;
        messages += u64::from(is_message);
        if rng.below(10) == 0 {
            // Most clients send a single space (RFC 6120 §4.6.1); some a newline.
            out.push(if rng.below(4) == 0 { '\n' } else { ' ' });
            keepalives += 1;
        }
    }
    Corpus { bytes: out.into_bytes(), stanzas, messages, keepalives }
}

/// Appends a 1:1 chat message to `to` as Conversations, Dino or Gajim send one: a body of
/// 80–120 bytes, chat state, receipt request, marker and origin-id (XEP-0085, -0184, -0333,
/// -0359). The attribute quote style alternates between stanzas, as it does between clients.
pub fn chat_message(rng: &mut Rng, out: &mut String, to: &str) {
    let id = id(rng);
    let body = body(rng);
    let q = if rng.below(2) == 0 { '\'' } else { '"' };
    let _ = write!(
        out,
        "<message type={q}chat{q} to={q}{to}{q} id={q}{id}{q}><body>{body}</body>\
<active xmlns={q}http://jabber.org/protocol/chatstates{q}/>\
<request xmlns={q}urn:xmpp:receipts{q}/><markable xmlns={q}urn:xmpp:chat-markers:0{q}/>\
<origin-id xmlns={q}urn:xmpp:sid:0{q} id={q}{id}{q}/></message>"
    );
}

/// A bare or full address of one of a user's contacts.
pub fn contact(rng: &mut Rng) -> String {
    let name = rng.pick(NAMES);
    let number = rng.below(500);
    match rng.below(3) {
        0 => format!("{name}{number}@{DOMAIN}/{}", resource(rng)),
        _ => format!("{name}{number}@{DOMAIN}"),
    }
}

/// A resource as clients generate them: `Conversations.AbCd`, `gajim.9F3K2L1Q` and so on.
pub fn resource(rng: &mut Rng) -> String {
    let client = rng.pick(&["Conversations", "gajim", "dino", "Monal", "profanity", "Psi"]);
    let mut suffix = String::new();
    for _ in 0..4 + rng.below(5) {
        suffix.push(*rng.pick(ALPHANUMERIC) as char);
    }
    format!("{client}.{suffix}")
}

/// A stanza id: a UUID (most clients) or a short random token (some libraries).
pub fn id(rng: &mut Rng) -> String {
    if rng.below(3) == 0 {
        let mut id = String::new();
        for _ in 0..10 {
            id.push(*rng.pick(ALPHANUMERIC) as char);
        }
        return id;
    }
    let hex = |rng: &mut Rng, n: usize| (0..n).map(|_| *rng.pick(b"0123456789abcdef") as char).collect::<String>();
    format!("{}-{}-4{}-{}-{}", hex(rng, 8), hex(rng, 4), hex(rng, 3), hex(rng, 4), hex(rng, 12))
}

/// Escaped character data of 80–120 bytes: 60% plain ASCII, 15% with predefined entities,
/// 10% with numeric character references, 15% with raw non-ASCII UTF-8.
fn body(rng: &mut Rng) -> String {
    let target = 80 + rng.below(41);
    let flavour = rng.below(100);
    let mut body = String::with_capacity(target + 16);
    while body.len() < target {
        if !body.is_empty() {
            body.push(' ');
        }
        let special = rng.below(4) == 0;
        let word = match flavour {
            60..=74 if special => *rng.pick(&["&amp;", "&lt;3", "&quot;ok&quot;", "it&apos;s", "a&gt;b"]),
            75..=84 if special => *rng.pick(&["caf&#233;", "&#x1F600;", "don&#8217;t", "&#x263A;"]),
            85..=99 if special => *rng.pick(&["café", "Grüße", "日本語", "🙂", "naïve", "Straße"]),
            _ => *rng.pick(WORDS),
        };
        body.push_str(word);
    }
    body
}

fn chat_state(rng: &mut Rng, out: &mut String, to: &str) {
    let state = rng.pick(&["composing", "paused", "active", "inactive"]);
    let id = id(rng);
    let _ = write!(
        out,
        "<message type='chat' to='{to}' id='{id}'><{state} xmlns='http://jabber.org/protocol/chatstates'/>\
<no-store xmlns='urn:xmpp:hints'/></message>"
    );
}

fn receipt_or_marker(rng: &mut Rng, out: &mut String, to: &str) {
    let (id, acked) = (id(rng), id(rng));
    if rng.below(2) == 0 {
        let _ = write!(
            out,
            "<message to='{to}' id='{id}'><received xmlns='urn:xmpp:receipts' id='{acked}'/>\
<store xmlns='urn:xmpp:hints'/></message>"
        );
    } else {
        let _ = write!(
            out,
            "<message type='chat' to='{to}' id='{id}'><displayed xmlns='urn:xmpp:chat-markers:0' id='{acked}'/>\
<store xmlns='urn:xmpp:hints'/></message>"
        );
    }
}

fn presence(rng: &mut Rng, out: &mut String) {
    let id = id(rng);
    let ver: String = (0..27).map(|_| *rng.pick(BASE64_ALPHABET) as char).collect();
    out.push_str("<presence id='");
    out.push_str(&id);
    out.push_str("'>");
    if rng.below(3) == 0 {
        let show = rng.pick(&["away", "chat", "dnd", "xa"]);
        let _ = write!(out, "<show>{show}</show>");
    }
    if rng.below(2) == 0 {
        let status = rng.pick(&["In a meeting until 3", "Working from home &amp; on calls", "On the train 🚆", "Back soon"]);
        let _ = write!(out, "<status>{status}</status>");
    }
    let priority = rng.pick(&[0, 1, 5, 10, 24, 50]);
    let node = rng.pick(&["https://conversations.im", "https://gajim.org", "https://dino.im"]);
    let _ = write!(
        out,
        "<priority>{priority}</priority><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' \
node='{node}' ver='{ver}='/>"
    );
    if rng.below(4) == 0 {
        out.push_str("<idle xmlns='urn:xmpp:idle:1' since='2024-05-01T12:34:56.000Z'/>");
    }
    out.push_str("</presence>");
}

fn ping(rng: &mut Rng, out: &mut String) {
    let id = id(rng);
    if rng.below(2) == 0 {
        let _ = write!(out, "<iq type='get' to='{DOMAIN}' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>");
    } else {
        // The answer to a server ping (XEP-0199 §4.2).
        let _ = write!(out, "<iq type='result' to='{DOMAIN}' id='{id}'/>");
    }
}

/// The reply a client gives to a caps query (XEP-0115 §6.2): its identity and ~25 features.
fn disco_info_result(rng: &mut Rng, out: &mut String, to: &str) {
    let id = id(rng);
    let ver: String = (0..27).map(|_| *rng.pick(BASE64_ALPHABET) as char).collect();
    let _ = write!(
        out,
        "<iq type='result' to='{to}' id='{id}'><query xmlns='http://jabber.org/protocol/disco#info' \
node='https://conversations.im#{ver}='><identity category='client' type='phone' name='Conversations'/>"
    );
    for feature in FEATURES {
        let _ = write!(out, "<feature var='{feature}'/>");
    }
    out.push_str("</query></iq>");
}

fn disco_info_get(rng: &mut Rng, out: &mut String) {
    let id = id(rng);
    let _ = write!(out, "<iq type='get' to='{DOMAIN}' id='{id}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
}

fn roster_get(rng: &mut Rng, out: &mut String) {
    let id = id(rng);
    let _ = write!(out, "<iq type='get' id='{id}'><query xmlns='jabber:iq:roster' ver='ver17'/></iq>");
}

fn roster_set(rng: &mut Rng, out: &mut String, contact: &str) {
    let id = id(rng);
    let bare = contact.split('/').next().unwrap_or(contact);
    let name = rng.pick(&["Juliet", "Romeo Montague", "Mercutio", "Nurse &amp; Friar"]);
    let _ = write!(
        out,
        "<iq type='set' id='{id}'><query xmlns='jabber:iq:roster'><item jid='{bare}' name='{name}'>\
<group>Friends</group><group>Work &amp; School</group></item></query></iq>"
    );
}

fn carbons_enable(rng: &mut Rng, out: &mut String) {
    let id = id(rng);
    let _ = write!(out, "<iq type='set' id='{id}'><enable xmlns='urn:xmpp:carbons:2'/></iq>");
}

fn mam_query(rng: &mut Rng, out: &mut String, contact: &str) {
    let (id, query) = (id(rng), id(rng));
    let bare = contact.split('/').next().unwrap_or(contact);
    let _ = write!(
        out,
        "<iq type='set' id='{id}'><query xmlns='urn:xmpp:mam:2' queryid='{query}'>\
<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
<field var='with'><value>{bare}</value></field></x>\
<set xmlns='http://jabber.org/protocol/rsm'><max>50</max><before/></set></query></iq>"
    );
}

const NAMES: &[&str] = &["juliet", "romeo", "mercutio", "benvolio", "tybalt", "rosaline", "paris", "nurse"];

const WORDS: &[&str] = &[
    "hey", "are", "we", "still", "on", "for", "lunch", "tomorrow", "I", "can", "bring", "the", "slides", "and", "meet", "you", "at",
    "station", "sounds", "good", "see", "later", "thanks", "just", "landed", "running", "late", "by", "ten", "minutes", "sorry", "about",
    "that",
];

const FEATURES: &[&str] = &[
    "http://jabber.org/protocol/caps",
    "http://jabber.org/protocol/chatstates",
    "http://jabber.org/protocol/disco#info",
    "http://jabber.org/protocol/disco#items",
    "http://jabber.org/protocol/muc",
    "http://jabber.org/protocol/nick",
    "http://jabber.org/protocol/nick+notify",
    "jabber:iq:version",
    "jabber:x:conference",
    "jabber:x:oob",
    "urn:xmpp:avatar:metadata+notify",
    "urn:xmpp:chat-markers:0",
    "urn:xmpp:jingle-message:0",
    "urn:xmpp:jingle:1",
    "urn:xmpp:jingle:apps:file-transfer:5",
    "urn:xmpp:jingle:apps:rtp:1",
    "urn:xmpp:jingle:apps:rtp:audio",
    "urn:xmpp:jingle:transports:ice-udp:1",
    "urn:xmpp:message-correct:0",
    "urn:xmpp:ping",
    "urn:xmpp:receipts",
    "urn:xmpp:reactions:0",
    "urn:xmpp:time",
    "eu.siacs.conversations.axolotl.devicelist+notify",
    "urn:xmpp:bookmarks:1+notify",
];

const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const BASE64_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

#[cfg(test)]
mod tests {
    use super::*;
    use confab_core::framer::{Frame, Framer, FramerLimits};
    use confab_core::limits::{ATTRIBUTES_MAX, ELEMENT_DEPTH_MAX, NAMESPACE_DECLARATIONS_MAX, STANZA_BYTES_MAX};

    #[test]
    fn mixed_stream_frames_into_what_was_generated_however_it_is_chunked() {
        let corpus = mixed_client_stream(64 * 1024, 7);
        assert!(corpus.bytes.len() >= 64 * 1024);
        assert!(corpus.messages * 2 > corpus.stanzas, "messages dominate");
        for chunk_bytes in [1, 7, 4096, 16 * 1024] {
            let mut framer = Framer::new(FramerLimits {
                stanza_bytes_max: STANZA_BYTES_MAX,
                depth_max: ELEMENT_DEPTH_MAX,
                attributes_max: ATTRIBUTES_MAX,
                namespace_declarations_max: NAMESPACE_DECLARATIONS_MAX,
            });
            let (mut opens, mut stanzas, mut keepalives) = (0, 0, 0);
            for chunk in corpus.bytes.chunks(chunk_bytes) {
                framer.push(chunk);
                while let Some(frame) = framer.next_frame().expect("the corpus is valid") {
                    match frame {
                        Frame::StreamOpen(_) => opens += 1,
                        Frame::Stanza(_) => stanzas += 1,
                        Frame::Whitespace => keepalives += 1,
                        Frame::StreamClose => panic!("the stream stays open"),
                    }
                }
            }
            assert_eq!((opens, stanzas, keepalives), (1, corpus.stanzas, corpus.keepalives), "{chunk_bytes}-byte chunks");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        assert_eq!(mixed_client_stream(4096, 3).bytes, mixed_client_stream(4096, 3).bytes);
        assert_ne!(mixed_client_stream(4096, 3).bytes, mixed_client_stream(4096, 4).bytes);
    }
}
