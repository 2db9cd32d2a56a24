//! XEP-0198 Stream Management (v1.6, namespace `urn:xmpp:sm:3`): the counters, the queue of
//! unacknowledged stanzas, parsing of the client's top-level SM elements and the server's replies.
//!
//! This module owns the arithmetic: the inbound handled count `h` (§4), the outbound sent count,
//! which stanzas an `<a h='…'/>` or `<resume h='…'/>` releases, what a resumed stream resends
//! (§5) and when the peer's `h` is impossible (§4, `<handled-count-too-high/>`).
//!
//! It deliberately does not own sockets, timers or session tables: the runtime decides when to
//! send `<r/>`, generates SM-IDs, keeps a detached session for [`SM_RESUME_TIMEOUT_S`], looks a
//! `previd` up, writes the stanza bytes, and sends the stream errors (their conditions come from
//! [`SmError::stream_condition`]). SM elements themselves are not stanzas and are never counted
//! (§1).

use std::collections::VecDeque;

use crate::limits::STANZA_BYTES_MAX;
use crate::routing::STANZAS_NAMESPACE;
use crate::xml::Element;

/// The XEP-0198 namespace (version 3, §2).
pub const SM_NAMESPACE: &str = "urn:xmpp:sm:3";

/// Unacknowledged stanzas kept per session. The XEP sets no limit; past this one
/// [`StreamManagement::sent_stanza`] returns [`SmError::TooManyUnacked`] and the stream is closed
/// with `resource-constraint` (RFC 6120 §4.9.3.17: the server lacks the resources to go on
/// serving a peer that does not acknowledge), as ejabberd and Prosody do. Each entry costs its
/// stanza's bytes; [`SM_UNACKED_BYTES_MAX`] bounds their sum.
pub const SM_UNACKED_STANZAS_MAX: usize = 1024;

/// Sum of the bytes of the unacknowledged stanzas kept per session; past it the same
/// [`SmError::TooManyUnacked`] applies. Without it the count limit alone would let one session
/// hold `SM_UNACKED_STANZAS_MAX * STANZA_BYTES_MAX` (256 MiB).
pub const SM_UNACKED_BYTES_MAX: usize = 8 * 1024 * 1024;

/// How long a detached resumable session waits, in seconds, advertised as `max` in
/// `<enabled/>` (§3, §5). The runtime's limit and this advertisement are the same number.
pub const SM_RESUME_TIMEOUT_S: u32 = crate::limits::RESUME_TIMEOUT_S;

/// Longest SM-ID the server may issue, in bytes (§5: "SHOULD NOT be longer than 4000 bytes").
pub const SM_ID_BYTES_MAX: usize = 4000;

const _: () = assert!(SM_UNACKED_STANZAS_MAX < u32::MAX as usize);
const _: () = assert!(SM_UNACKED_BYTES_MAX >= 2 * STANZA_BYTES_MAX);
const _: () = assert!(SM_RESUME_TIMEOUT_S > 0);

/// A top-level element in [`SM_NAMESPACE`] sent by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmElement {
    /// `<enable resume='…' max='…'/>` (§3): `max_s` is the client's preferred resumption time.
    Enable { resume: bool, max_s: Option<u32> },
    /// `<resume previd='…' h='…'/>` (§5).
    Resume { previd: String, h: u32 },
    /// `<r/>` (§4): the client asks for our inbound count.
    Request,
    /// `<a h='…'/>` (§4): the client's count of stanzas it handled from us.
    Answer { h: u32 },
}

/// Parses a top-level element in [`SM_NAMESPACE`] (name and attributes; children are ignored).
///
/// `Err` is a reason for logs. The runtime answers a bad `<enable/>` or `<resume/>` with
/// [`failed`]`("bad-request", None)` (§6: errors about those two are `<failed/>` with a stanza
/// condition) and a bad `<a/>` or `<r/>`, or an element only a server sends, with an
/// `undefined-condition` stream error (§6: misuse MAY terminate the stream).
pub fn parse(element: &Element) -> Result<SmElement, &'static str> {
    if element.namespace != SM_NAMESPACE {
        return Err("element is not in the urn:xmpp:sm:3 namespace");
    }
    match element.name.as_str() {
        "enable" => {
            // §3: 'resume' is an xs:boolean defaulting to false; 'max' is an xs:positiveInteger.
            let resume = match element.attribute("resume") {
                None => false,
                Some(value) => parse_boolean(value).ok_or("invalid 'resume' boolean on <enable/>")?,
            };
            let max_s = match element.attribute("max") {
                None => None,
                Some(value) => match parse_unsigned_int(value) {
                    Some(0) | None => return Err("invalid 'max' on <enable/>"),
                    Some(max) => Some(max),
                },
            };
            Ok(SmElement::Enable { resume, max_s })
        }
        "resume" => {
            // §5: both 'previd' and 'h' are REQUIRED (since v1.3).
            let previd = element.attribute("previd").filter(|previd| !previd.is_empty()).ok_or("<resume/> without 'previd'")?;
            let h = required_h(element).ok_or("<resume/> without a valid 'h'")?;
            Ok(SmElement::Resume { previd: previd.to_owned(), h })
        }
        // §4: <r/> has no defined attributes; any present are ignored.
        "r" => Ok(SmElement::Request),
        "a" => Ok(SmElement::Answer {
            // §4: "An <a/> element MUST possess an 'h' attribute."
            h: required_h(element).ok_or("<a/> without a valid 'h'")?,
        }),
        "enabled" | "resumed" | "failed" => Err("element only a server sends"),
        _ => Err("unknown stream management element"),
    }
}

/// Why stream management cannot go on with this peer; both close the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SmError {
    /// The queue of unacknowledged stanzas passed [`SM_UNACKED_STANZAS_MAX`] or
    /// [`SM_UNACKED_BYTES_MAX`]: the peer reads or acknowledges too slowly.
    #[error("too many unacknowledged stanzas")]
    TooManyUnacked,
    /// The peer acknowledged more stanzas than were sent to it (§4).
    #[error("peer acknowledged {h} stanzas but only {send_count} were sent")]
    HandledCountTooHigh { h: u32, send_count: u32 },
}

impl SmError {
    /// The stream error condition (RFC 6120 §4.9.3) to close the stream with. For
    /// [`SmError::HandledCountTooHigh`] the stream error also carries
    /// [`handled_count_too_high`] as its application-specific condition (§4).
    pub fn stream_condition(&self) -> &'static str {
        match self {
            SmError::TooManyUnacked => "resource-constraint",
            SmError::HandledCountTooHigh { .. } => "undefined-condition",
        }
    }
}

/// The stream management state of one session, from `<enabled/>` until the session ends
/// (it survives a detached stream and is carried over by `<resumed/>`, §5).
///
/// Counters are `u32` and wrap from 2^32−1 to 0 (§4). Invariant: `unacked.len()` equals
/// `sent_count − acked_count` modulo 2^32, and the oldest unacknowledged stanza is at the front.
#[derive(Debug, Default)]
pub struct StreamManagement {
    /// Stanzas handled from the client: the `h` we report in `<a/>` and `<resumed/>`.
    inbound_count: u32,
    /// Stanzas sent to the client since `<enabled/>`, modulo 2^32.
    sent_count: u32,
    /// The client's latest `h`: stanzas it has handled from us, modulo 2^32.
    acked_count: u32,
    /// Stanzas acknowledged over the whole SM session, not wrapped: bounds how far back a stale
    /// `h` may lie before it is read as one too high.
    acked_total: u64,
    /// Stanzas sent and not yet acknowledged, oldest first.
    unacked: VecDeque<Vec<u8>>,
    /// Sum of the lengths in `unacked`.
    unacked_bytes: usize,
}

impl StreamManagement {
    /// Counts a stanza from the client as handled (§4: `h` starts at zero when `<enabled/>` is
    /// sent and grows by one per stanza, wrapping at 2^32). Call it once the stanza has been
    /// processed or routed, i.e. once the server has taken responsibility for it.
    pub fn received_stanza(&mut self) {
        self.inbound_count = self.inbound_count.wrapping_add(1);
    }

    /// The inbound handled count `h`, for `<a/>` and `<resumed/>`.
    pub fn inbound_count(&self) -> u32 {
        self.inbound_count
    }

    /// Stanzas sent to the client so far, modulo 2^32 (the `send-count` of §4).
    pub fn outbound_count(&self) -> u32 {
        self.sent_count
    }

    /// Records a stanza sent (or about to be sent) to the client, keeping its bytes until the
    /// client acknowledges it.
    ///
    /// `Err(TooManyUnacked)` when this stanza takes the queue past [`SM_UNACKED_STANZAS_MAX`] or
    /// [`SM_UNACKED_BYTES_MAX`]: the stanza is still queued and counted (so nothing is lost:
    /// [`Self::take_unacked`] returns it for offline storage or a bounce), but the caller must
    /// close the stream with [`SmError::stream_condition`] and stop sending.
    pub fn sent_stanza(&mut self, bytes: Vec<u8>) -> Result<(), SmError> {
        // The caller was told to close the stream when the queue went over; queueing more would
        // make it unbounded, and keeping it bounded wins over this stanza.
        debug_assert!(!self.over_limits(), "sent_stanza called after TooManyUnacked");
        if self.over_limits() {
            return Err(SmError::TooManyUnacked);
        }
        self.unacked_bytes += bytes.len();
        self.unacked.push_back(bytes);
        self.sent_count = self.sent_count.wrapping_add(1);
        if self.over_limits() {
            return Err(SmError::TooManyUnacked);
        }
        Ok(())
    }

    /// Applies the client's `h` (§4 `<a/>`): drops every stanza it covers.
    ///
    /// An `h` that goes backwards (a stale or reordered ack, within the stanzas already
    /// acknowledged) changes nothing. An `h` beyond what was sent is
    /// [`SmError::HandledCountTooHigh`]: §4 says to close the stream with `undefined-condition`
    /// and [`handled_count_too_high`].
    pub fn acknowledge(&mut self, h: u32) -> Result<(), SmError> {
        let forward = h.wrapping_sub(self.acked_count);
        if forward as usize <= self.unacked.len() {
            for _ in 0..forward {
                if let Some(bytes) = self.unacked.pop_front() {
                    self.unacked_bytes -= bytes.len();
                }
            }
            self.acked_count = h;
            self.acked_total += u64::from(forward);
            return Ok(());
        }
        // Serial-number arithmetic (RFC 1982): read `h` as behind the last ack only when it is
        // less than half the number space behind and that many stanzas were ever acknowledged.
        let backward = self.acked_count.wrapping_sub(h);
        if backward < 1 << 31 && u64::from(backward) <= self.acked_total {
            return Ok(());
        }
        Err(SmError::HandledCountTooHigh { h, send_count: self.sent_count })
    }

    /// Stanzas sent and not yet acknowledged.
    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// Removes and returns the unacknowledged stanzas, oldest first, for the §4 "alternative
    /// action" when the session ends unresumed (offline storage, another resource, or an error
    /// to the sender). The counters are left as they are.
    pub fn take_unacked(&mut self) -> Vec<Vec<u8>> {
        self.unacked_bytes = 0;
        self.unacked.drain(..).collect()
    }

    /// Handles the `h` of an accepted `<resume/>` (§5): "as it would handle it on an `<a/>`
    /// element", then returns every stanza still unacknowledged, oldest first, to be re-sent
    /// after `<resumed/>`.
    ///
    /// The counters carry over (§5: "not reset for the new stream") and the re-sent stanzas are
    /// not counted again: they were counted when first sent, and the client's `h` will count
    /// them once it handles them. They stay in the queue until acknowledged.
    pub fn resume(&mut self, h: u32) -> Result<Vec<Vec<u8>>, SmError> {
        self.acknowledge(h)?;
        Ok(self.unacked.iter().cloned().collect())
    }

    fn over_limits(&self) -> bool {
        self.unacked.len() > SM_UNACKED_STANZAS_MAX || self.unacked_bytes > SM_UNACKED_BYTES_MAX
    }
}

/// `<enabled/>` (§3, §5). With an SM-ID the stream is resumable: `resume='true'`, and `max`
/// (seconds) when given. Without one, neither is written, since `max` only means something
/// for a resumable stream.
pub fn enabled(id: Option<&str>, max_s: Option<u32>) -> Vec<u8> {
    let mut element = Element::new("enabled", SM_NAMESPACE);
    if let Some(id) = id {
        debug_assert!(!id.is_empty() && id.len() <= SM_ID_BYTES_MAX, "bad SM-ID length");
        element = element.with_attribute("id", id).with_attribute("resume", "true");
        if let Some(max_s) = max_s {
            element = element.with_attribute("max", &max_s.to_string());
        }
    }
    element.to_xml().into_bytes()
}

/// `<resumed previd='…' h='…'/>` (§5): `h` is our inbound count.
pub fn resumed(previd: &str, h: u32) -> Vec<u8> {
    Element::new("resumed", SM_NAMESPACE).with_attribute("h", &h.to_string()).with_attribute("previd", previd).to_xml().into_bytes()
}

/// `<failed/>` with a stanza error condition (§6), e.g. `item-not-found` for an unknown or
/// expired `previd`, `feature-not-implemented`, `unexpected-request` for `<enable/>` before
/// bind or twice. `h` is the inbound count of a timed-out session that is still remembered
/// (§5: the server MAY include it).
pub fn failed(condition: &str, h: Option<u32>) -> Vec<u8> {
    debug_assert!(
        !condition.is_empty() && condition.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
        "not a stanza error condition: {condition}"
    );
    let mut element = Element::new("failed", SM_NAMESPACE);
    if let Some(h) = h {
        element = element.with_attribute("h", &h.to_string());
    }
    element.with_child(Element::new(condition, STANZAS_NAMESPACE)).to_xml().into_bytes()
}

/// `<a h='…'/>` (§4), answering a `<r/>` with our inbound count.
pub fn answer(h: u32) -> Vec<u8> {
    Element::new("a", SM_NAMESPACE).with_attribute("h", &h.to_string()).to_xml().into_bytes()
}

/// `<r/>` (§4), asking the client for its count.
pub fn request() -> Vec<u8> {
    Element::new("r", SM_NAMESPACE).to_xml().into_bytes()
}

/// The application-specific condition of the stream error for an `h` that is too high (§4):
/// `<handled-count-too-high xmlns='urn:xmpp:sm:3' h='…' send-count='…'/>`, to be put after
/// `<undefined-condition/>` inside `<stream:error/>`.
pub fn handled_count_too_high(h: u32, send_count: u32) -> String {
    Element::new("handled-count-too-high", SM_NAMESPACE)
        .with_attribute("h", &h.to_string())
        .with_attribute("send-count", &send_count.to_string())
        .to_xml()
}

/// The required `h` attribute of `<a/>` or `<resume/>`, an xs:unsignedInt (§4).
fn required_h(element: &Element) -> Option<u32> {
    element.attribute("h").and_then(parse_unsigned_int)
}

/// An xs:boolean (XML Schema Part 2 §3.2.2): `true`, `false`, `1` or `0`, surrounding
/// whitespace collapsed.
fn parse_boolean(value: &str) -> Option<bool> {
    match value.trim_matches(is_xml_space) {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// An xs:unsignedInt (XML Schema Part 2 §3.3.22): optional `+`, ASCII digits (leading zeros
/// allowed), at most 2^32−1, surrounding whitespace collapsed.
fn parse_unsigned_int(value: &str) -> Option<u32> {
    let value = value.trim_matches(is_xml_space);
    let digits = value.strip_prefix('+').unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
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

    fn stanza(n: u32) -> Vec<u8> {
        format!("<message id='{n}'/>").into_bytes()
    }

    #[test]
    fn parse_client_elements() {
        let cases: &[(&str, SmElement)] = &[
            ("<enable xmlns='urn:xmpp:sm:3'/>", SmElement::Enable { resume: false, max_s: None }),
            ("<enable xmlns='urn:xmpp:sm:3' resume='true' max='600'/>", SmElement::Enable { resume: true, max_s: Some(600) }),
            ("<enable xmlns='urn:xmpp:sm:3' resume='1'/>", SmElement::Enable { resume: true, max_s: None }),
            ("<enable xmlns='urn:xmpp:sm:3' resume=' 0 '/>", SmElement::Enable { resume: false, max_s: None }),
            ("<resume xmlns='urn:xmpp:sm:3' previd='abc' h='4294967295'/>", SmElement::Resume { previd: "abc".to_owned(), h: u32::MAX }),
            ("<r xmlns='urn:xmpp:sm:3'/>", SmElement::Request),
            ("<a xmlns='urn:xmpp:sm:3' h='+007'/>", SmElement::Answer { h: 7 }),
            ("<sm:a xmlns:sm='urn:xmpp:sm:3' h='0'/>", SmElement::Answer { h: 0 }),
        ];
        for (xml, expected) in cases {
            assert_eq!(parse(&element(xml)).as_ref(), Ok(expected), "{xml}");
        }
    }

    #[test]
    fn parse_rejects_bad_elements() {
        let bad = [
            "<enable xmlns='urn:xmpp:sm:2'/>",
            "<a h='1'/>",
            "<enable xmlns='urn:xmpp:sm:3' resume='yes'/>",
            "<enable xmlns='urn:xmpp:sm:3' max='0'/>",
            "<enable xmlns='urn:xmpp:sm:3' max='-5'/>",
            "<resume xmlns='urn:xmpp:sm:3' h='1'/>",
            "<resume xmlns='urn:xmpp:sm:3' previd='' h='1'/>",
            "<resume xmlns='urn:xmpp:sm:3' previd='x'/>",
            "<a xmlns='urn:xmpp:sm:3'/>",
            "<a xmlns='urn:xmpp:sm:3' h='4294967296'/>",
            "<a xmlns='urn:xmpp:sm:3' h='-1'/>",
            "<a xmlns='urn:xmpp:sm:3' h='1.0'/>",
            "<a xmlns='urn:xmpp:sm:3' h=''/>",
            "<enabled xmlns='urn:xmpp:sm:3'/>",
            "<t xmlns='urn:xmpp:sm:3'/>",
        ];
        for xml in bad {
            assert!(parse(&element(xml)).is_err(), "{xml}");
        }
    }

    #[test]
    fn inbound_count_wraps_at_2_pow_32() {
        let mut sm = StreamManagement { inbound_count: u32::MAX - 1, ..Default::default() };
        sm.received_stanza();
        assert_eq!(sm.inbound_count(), u32::MAX);
        sm.received_stanza();
        assert_eq!(sm.inbound_count(), 0);
        sm.received_stanza();
        assert_eq!(sm.inbound_count(), 1);
    }

    #[test]
    fn acknowledge_drops_covered_stanzas() {
        let mut sm = StreamManagement::default();
        for n in 0..5 {
            assert_eq!(sm.sent_stanza(stanza(n)), Ok(()));
        }
        assert_eq!(sm.outbound_count(), 5);
        assert_eq!(sm.acknowledge(0), Ok(()));
        assert_eq!(sm.unacked_len(), 5);
        assert_eq!(sm.acknowledge(3), Ok(()));
        assert_eq!(sm.unacked_len(), 2);
        // A repeated or stale h changes nothing.
        assert_eq!(sm.acknowledge(3), Ok(()));
        assert_eq!(sm.acknowledge(1), Ok(()));
        assert_eq!(sm.unacked_len(), 2);
        assert_eq!(sm.take_unacked(), vec![stanza(3), stanza(4)]);
        assert_eq!(sm.unacked_len(), 0);
        assert_eq!(sm.unacked_bytes, 0);
    }

    #[test]
    fn acknowledge_beyond_sent_is_handled_count_too_high() {
        let mut sm = StreamManagement::default();
        for n in 0..8 {
            assert_eq!(sm.sent_stanza(stanza(n)), Ok(()));
        }
        assert_eq!(sm.acknowledge(10), Err(SmError::HandledCountTooHigh { h: 10, send_count: 8 }));
        // Early in the session nothing can be "behind" zero: u32::MAX is too high, not stale.
        assert_eq!(sm.acknowledge(u32::MAX), Err(SmError::HandledCountTooHigh { h: u32::MAX, send_count: 8 }));
        assert_eq!(sm.unacked_len(), 8);
        assert_eq!(StreamManagement::default().acknowledge(1), Err(SmError::HandledCountTooHigh { h: 1, send_count: 0 }));
        assert_eq!(SmError::HandledCountTooHigh { h: 1, send_count: 0 }.stream_condition(), "undefined-condition");
        assert_eq!(handled_count_too_high(10, 8), "<handled-count-too-high xmlns='urn:xmpp:sm:3' h='10' send-count='8'/>");
    }

    #[test]
    fn outbound_counts_wrap_at_2_pow_32() {
        let mut sm = StreamManagement {
            sent_count: u32::MAX - 1,
            acked_count: u32::MAX - 1,
            acked_total: u64::from(u32::MAX - 1),
            ..Default::default()
        };
        for n in 0..4 {
            assert_eq!(sm.sent_stanza(stanza(n)), Ok(()));
        }
        assert_eq!(sm.outbound_count(), 2);
        assert_eq!(sm.acknowledge(u32::MAX), Ok(()));
        assert_eq!(sm.unacked_len(), 3);
        assert_eq!(sm.acknowledge(1), Ok(()));
        assert_eq!(sm.unacked_len(), 1);
        // Behind the last ack across the wrap: stale, ignored.
        assert_eq!(sm.acknowledge(u32::MAX - 3), Ok(()));
        assert_eq!(sm.unacked_len(), 1);
        assert_eq!(sm.acknowledge(3), Err(SmError::HandledCountTooHigh { h: 3, send_count: 2 }));
        assert_eq!(sm.acknowledge(2), Ok(()));
        assert_eq!(sm.unacked_len(), 0);
    }

    #[test]
    fn too_many_unacked_keeps_the_stanza_and_reports() {
        let mut sm = StreamManagement::default();
        for n in 0..SM_UNACKED_STANZAS_MAX as u32 {
            assert_eq!(sm.sent_stanza(stanza(n)), Ok(()));
        }
        assert_eq!(sm.sent_stanza(stanza(9999)), Err(SmError::TooManyUnacked));
        assert_eq!(SmError::TooManyUnacked.stream_condition(), "resource-constraint");
        let unacked = sm.take_unacked();
        assert_eq!(unacked.len(), SM_UNACKED_STANZAS_MAX + 1);
        assert_eq!(unacked.last(), Some(&stanza(9999)));
    }

    #[test]
    fn too_many_unacked_bytes() {
        let mut sm = StreamManagement::default();
        let big = vec![b'x'; STANZA_BYTES_MAX];
        let fit = SM_UNACKED_BYTES_MAX / STANZA_BYTES_MAX;
        for _ in 0..fit {
            assert_eq!(sm.sent_stanza(big.clone()), Ok(()));
        }
        assert_eq!(sm.sent_stanza(big), Err(SmError::TooManyUnacked));
        assert_eq!(sm.acknowledge(2), Ok(()));
        assert!(!sm.over_limits());
    }

    #[test]
    fn resume_acknowledges_then_resends_the_rest_without_recounting() {
        let mut sm = StreamManagement::default();
        for n in 0..5 {
            assert_eq!(sm.sent_stanza(stanza(n)), Ok(()));
        }
        sm.received_stanza();
        sm.received_stanza();
        assert_eq!(sm.acknowledge(1), Ok(()));
        assert_eq!(sm.resume(3), Ok(vec![stanza(3), stanza(4)]));
        // Counters carry over; the re-sent stanzas stay queued until acknowledged.
        assert_eq!(sm.outbound_count(), 5);
        assert_eq!(sm.inbound_count(), 2);
        assert_eq!(sm.unacked_len(), 2);
        assert_eq!(sm.acknowledge(5), Ok(()));
        assert_eq!(sm.unacked_len(), 0);
        // A resume whose h is stale resends everything unacknowledged.
        assert_eq!(sm.sent_stanza(stanza(5)), Ok(()));
        assert_eq!(sm.resume(4), Ok(vec![stanza(5)]));
        assert_eq!(sm.resume(7), Err(SmError::HandledCountTooHigh { h: 7, send_count: 6 }));
    }

    #[test]
    fn builders() {
        assert_eq!(text(enabled(None, Some(300))), "<enabled xmlns='urn:xmpp:sm:3'/>");
        assert_eq!(
            text(enabled(Some("a'b"), Some(SM_RESUME_TIMEOUT_S))),
            "<enabled xmlns='urn:xmpp:sm:3' id='a&apos;b' resume='true' max='300'/>"
        );
        assert_eq!(text(enabled(Some("x"), None)), "<enabled xmlns='urn:xmpp:sm:3' id='x' resume='true'/>");
        assert_eq!(text(resumed("x", 7)), "<resumed xmlns='urn:xmpp:sm:3' h='7' previd='x'/>");
        assert_eq!(
            text(failed("item-not-found", Some(3))),
            "<failed xmlns='urn:xmpp:sm:3' h='3'>\
             <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
        );
        assert_eq!(
            text(failed("unexpected-request", None)),
            "<failed xmlns='urn:xmpp:sm:3'>\
             <unexpected-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
        );
        assert_eq!(text(answer(u32::MAX)), "<a xmlns='urn:xmpp:sm:3' h='4294967295'/>");
        assert_eq!(text(request()), "<r xmlns='urn:xmpp:sm:3'/>");
        // What we build, we parse back.
        assert_eq!(parse(&element(&text(answer(9)))), Ok(SmElement::Answer { h: 9 }));
    }
}
