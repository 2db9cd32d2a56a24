//! Message Archive Management for user archives: XEP-0313 (`urn:xmpp:mam:2`, v1.x) with
//! XEP-0059 Result Set Management paging, and the archiving preferences that XEP-0441 split out
//! of XEP-0313 (same namespace).
//!
//! This module owns the stored form of an archived message ([`ArchivedMessage`]) and of the
//! preferences ([`Preferences`]) with their checked rkyv encodings; parsing a query (its data
//! form and RSM `<set/>`) into an [`ArchiveQuery`]; choosing one page from an archive
//! ([`select`]); the bytes of the result messages, the final `<fin/>` iq, the fields form and
//! the metadata reply; and the rules for which messages a user archive keeps
//! ([`is_archivable`], [`should_archive`]).
//!
//! It deliberately does not store anything, assign archive ids or decide who may query an
//! archive (the shard's storage does the first two through `Record::ArchiveAppend`; only the
//! account itself is ever given its archive). It has no MUC or pubsub archives (XEP-0313 §3.3.2,
//! XEP-0442), no `include-groupchat` field (§4.1.4: groupchat is never stored here) and does not
//! add XEP-0359 `<stanza-id/>` to live messages.
//!
//! Archive ids are `u64` in ascending (chronological, §3.1) order, written on the wire as
//! canonical decimal strings that clients treat as opaque (§6.2). Because id order is archive
//! order, RSM positions are found by comparing ids, never by scanning for a UID.

use rkyv::{Archive, Deserialize, Serialize};

use crate::framer::parse_element;
use crate::jid::Jid;
use crate::routing::iq_result;
use crate::time::{format_timestamp, parse_timestamp, DELAY_NAMESPACE};
use crate::xml::{escape_attribute, Element};

/// The XEP-0313 namespace: queries, results, `<fin/>`, and the XEP-0441 `<prefs/>`.
pub const MAM_NAMESPACE: &str = "urn:xmpp:mam:2";
/// The disco feature for `before-id`, `after-id`, `ids`, flipped pages and archive metadata
/// (XEP-0313 §7), all of which this module implements.
pub const MAM_EXTENDED_FEATURE: &str = "urn:xmpp:mam:2#extended";
/// XEP-0059 Result Set Management.
pub const RSM_NAMESPACE: &str = "http://jabber.org/protocol/rsm";
/// XEP-0297 Stanza Forwarding.
pub const FORWARD_NAMESPACE: &str = "urn:xmpp:forward:0";
/// XEP-0004 Data Forms.
pub use crate::forms::DATA_FORMS_NAMESPACE;

/// Page size when the client gives no RSM `<max/>`.
pub const ARCHIVE_PAGE_DEFAULT: usize = 50;
/// The most results one query returns, whatever `<max/>` asks (XEP-0313 §4.3.1 lets the server
/// limit pages). Each result is one stanza of up to a stored message's size queued to the
/// client, so this bounds the output one query can produce.
pub const ARCHIVE_PAGE_MAX: usize = 250;
/// The most values the `ids` field may carry: more could never fit in one page.
pub const ARCHIVE_IDS_MAX: usize = ARCHIVE_PAGE_MAX;
/// The most JIDs in each of the `<always/>` and `<never/>` preference lists (XEP-0441 §2.1).
/// Both lists are scanned for every archived message, so this bounds that work and the stored
/// preferences' size.
pub const PREFERENCES_JIDS_MAX: usize = 256;

const _: () = assert!(ARCHIVE_PAGE_DEFAULT <= ARCHIVE_PAGE_MAX);

/// XEP-0334 Message Processing Hints.
const HINTS_NAMESPACE: &str = "urn:xmpp:hints";
/// XEP-0280 Message Carbons.
const CARBONS_NAMESPACE: &str = "urn:xmpp:carbons:2";
/// XEP-0122 Data Forms Validation, for the open `ids` list (XEP-0313 §4.1.5).
const DATA_VALIDATE_NAMESPACE: &str = "http://jabber.org/protocol/xdata-validate";
/// The namespace stored messages are in; declared on them when they come without it.
const CLIENT_NAMESPACE: &str = "jabber:client";

/// One message in a user's archive (XEP-0313 §3: timestamp, remote JID, UID, the stanza).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ArchivedMessage {
    /// The archive id: unique, never reused, ascending in archive order (§3.1, §6.2).
    pub id: u64,
    /// When the server received (incoming) or sent (outgoing) the message, Unix milliseconds.
    pub stamp_ms: u64,
    /// The bare JID of the other party: `to` of an outgoing message, `from` of an incoming one.
    /// The account's own bare JID for messages it sent to itself (§4.1.1).
    pub with: String,
    /// The complete stanza, `<message xmlns='jabber:client' …>…</message>`.
    pub bytes: Vec<u8>,
}

crate::records::stored_codec!(ArchivedMessage);

impl ArchivedMessage {
    /// The id as clients see it (XEP-0313 §4.2 `<result id=…/>`, RSM UIDs).
    pub fn id_string(&self) -> String {
        self.id.to_string()
    }
}

/// Parses an archive id as written by [`ArchivedMessage::id_string`]: canonical decimal only
/// (no sign, no leading zero), so that every id has exactly one spelling.
pub fn parse_id(text: &str) -> Option<u64> {
    let canonical = !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    if canonical {
        text.parse().ok()
    } else {
        None
    }
}

/// A parsed archive query: the data-form filters of XEP-0313 §4.1 and the RSM paging of
/// XEP-0059 §2. Ids that cannot exist are refused while parsing; ids that might exist are
/// checked against the archive by [`select`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveQuery {
    /// The `queryid` attribute, echoed in every result (§4.2).
    pub query_id: Option<String>,
    /// The `with` field, prepared (RFC 7622). A bare JID matches the other party's bare JID;
    /// a full JID matches only messages to or from exactly that JID (§4.1.1).
    pub with: Option<String>,
    /// The `start` field: only messages stamped at or after it (§4.1.2).
    pub start_ms: Option<u64>,
    /// The `end` field: only messages stamped at or before it (§4.1.2).
    pub end_ms: Option<u64>,
    /// The `after-id` field: only messages after this one, exclusive (§4.1.3).
    pub after_id: Option<u64>,
    /// The `before-id` field: only messages before this one, exclusive (§4.1.3).
    pub before_id: Option<u64>,
    /// The `ids` field: only these messages (§4.1.3); empty means no such filter.
    pub ids: Vec<u64>,
    /// Page size: RSM `<max/>`, [`ARCHIVE_PAGE_DEFAULT`] when absent, at most [`ARCHIVE_PAGE_MAX`].
    pub max: usize,
    /// RSM `<after/>`: the page that starts just after this id (XEP-0059 §2.2).
    pub after: Option<u64>,
    /// RSM `<before/>`: `Some(Some(id))` is the page that ends just before `id` (XEP-0059
    /// §2.3); `Some(None)`, an empty `<before/>`, is the last page (§2.5).
    pub before: Option<Option<u64>>,
    /// `<flip-page/>`: send the page newest first (XEP-0313 §4.3.4).
    pub flip: bool,
}

impl Default for ArchiveQuery {
    /// Everything, first page of the default size.
    fn default() -> ArchiveQuery {
        ArchiveQuery {
            query_id: None,
            with: None,
            start_ms: None,
            end_ms: None,
            after_id: None,
            before_id: None,
            ids: Vec::new(),
            max: ARCHIVE_PAGE_DEFAULT,
            after: None,
            before: None,
            flip: false,
        }
    }
}

/// Parses `<query xmlns='urn:xmpp:mam:2'>` with its optional `jabber:x:data` form and RSM
/// `<set/>`. Errors are `(stanza error condition, text)`:
/// - `bad-request`: a form not of type `submit` or without FORM_TYPE `urn:xmpp:mam:2`
///   (XEP-0313 §4.1), a field without `var`, given twice or with several values, a `with`
///   that is not a JID, a timestamp that is not an XEP-0082 DateTime, a bad `<max/>`, or RSM
///   `<after/>` together with `<before/>` (§4.3.2 points to `after-id`/`before-id` instead);
/// - `feature-not-implemented`: a field this server does not know (§4.1.5), RSM `<index/>`
///   (XEP-0059 §2.6 allows refusing it), or a pubsub `node` (XEP-0442);
/// - `item-not-found`: an id that is not the spelling of any archive id (§4.1.3, §4.3.2);
/// - `policy-violation`: more than [`ARCHIVE_IDS_MAX`] `ids`.
pub fn parse_query(query: &Element) -> Result<ArchiveQuery, (&'static str, String)> {
    if query.name != "query" || query.namespace != MAM_NAMESPACE {
        return Err(("bad-request", "expected <query xmlns='urn:xmpp:mam:2'/>".to_owned()));
    }
    if query.attribute("node").is_some() {
        return Err(("feature-not-implemented", "pubsub node archives are not supported".to_owned()));
    }
    let mut parsed = ArchiveQuery {
        query_id: query.attribute("queryid").map(str::to_owned),
        flip: query.child("flip-page", MAM_NAMESPACE).is_some(),
        ..ArchiveQuery::default()
    };
    if let Some(form) = query.child("x", DATA_FORMS_NAMESPACE) {
        parse_form(form, &mut parsed)?;
    }
    if let Some(set) = query.child("set", RSM_NAMESPACE) {
        parse_rsm(set, &mut parsed)?;
    }
    Ok(parsed)
}

/// One page of an archive query's results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<'a> {
    /// The page, in the order to send it: chronological, or newest first when flipped.
    pub items: Vec<&'a ArchivedMessage>,
    /// Whether this page reaches the end of the result set in the paging direction: the last
    /// match when paging forwards, the first when paging backwards (XEP-0313 §4.3.2).
    pub complete: bool,
    /// How many messages match the filters, over all pages (XEP-0059 `<count/>`).
    pub count: usize,
    /// Position of the chronologically first item of the page among all matches (XEP-0059
    /// `<first index=…/>`); `None` when the page is empty.
    pub first_index: Option<usize>,
}

/// Selects one page from `messages`, which are sorted by ascending id (archive order).
///
/// The form filters are applied first (`with`, `start`, `end`, `ids`, `after-id`,
/// `before-id`); then RSM picks the page among the matches: after `<after/>`, the page
/// starting just after that id; with `<before>id</before>`, the page ending just before it;
/// with an empty `<before/>`, the last page; otherwise the first page. Paging ids need not
/// match the filters themselves, only exist. Returns `Err("item-not-found")` when an id the
/// client named (RSM or form) is not in the archive (XEP-0313 §4.1.3, §4.3.2; XEP-0059 §2.4).
pub fn select<'a>(messages: &'a [ArchivedMessage], query: &ArchiveQuery) -> Result<Page<'a>, &'static str> {
    debug_assert!(messages.windows(2).all(|pair| pair[0].id < pair[1].id), "archive not sorted by ascending unique id");
    let position = |id: u64| messages.binary_search_by_key(&id, |message| message.id);
    let named = query.after_id.iter().chain(&query.before_id).chain(&query.ids).chain(&query.after).chain(query.before.iter().flatten());
    for &id in named {
        if position(id).is_err() {
            return Err("item-not-found");
        }
    }

    // after-id and before-id are exclusive bounds on the id, hence on the position.
    let low = query.after_id.map_or(0, |id| messages.partition_point(|message| message.id <= id));
    let high = query.before_id.map_or(messages.len(), |id| messages.partition_point(|message| message.id < id));
    let window = messages.get(low..high).unwrap_or(&[]);
    let keep = |message: &&ArchivedMessage| {
        query.start_ms.is_none_or(|start| message.stamp_ms >= start)
            && query.end_ms.is_none_or(|end| message.stamp_ms <= end)
            && query.with.as_deref().is_none_or(|with| matches_with(message, with))
    };
    let matching: Vec<&ArchivedMessage> = if query.ids.is_empty() {
        window.iter().filter(keep).collect()
    } else {
        // Visit only the named messages, in archive order and once each.
        let mut ids = query.ids.clone();
        ids.sort_unstable();
        ids.dedup();
        ids.iter()
            .filter_map(|&id| position(id).ok().and_then(|index| messages.get(index)))
            .filter(|message| window.first().is_some_and(|first| message.id >= first.id))
            .filter(|message| window.last().is_some_and(|last| message.id <= last.id))
            .filter(keep)
            .collect()
    };

    let count = matching.len();
    let (start, end, complete) = match (query.after, query.before) {
        (Some(after), _) => {
            let start = matching.partition_point(|message| message.id <= after);
            let end = count.min(start.saturating_add(query.max));
            (start, end, end == count)
        }
        (None, Some(before)) => {
            let end = before.map_or(count, |before| matching.partition_point(|message| message.id < before));
            let start = end.saturating_sub(query.max);
            (start, end, start == 0)
        }
        (None, None) => {
            let end = count.min(query.max);
            (0, end, end == count)
        }
    };
    let mut items = matching.get(start..end).map(<[_]>::to_vec).unwrap_or_default();
    if query.flip {
        items.reverse();
    }
    let first_index = (!items.is_empty()).then_some(start);
    Ok(Page { items, complete, count, first_index })
}

/// One result message (XEP-0313 §4.2): the stored stanza wrapped in an XEP-0297
/// `<forwarded/>` with an XEP-0203 `<delay/>` giving when it was archived. It has no `from`:
/// it comes from the account's own archive, and RFC 6120 §8.1.2.1 lets the server omit the
/// account's bare JID on stanzas it generates for it. The stanza `id` is the archive id.
pub fn result_message(to: &str, query_id: Option<&str>, item: &ArchivedMessage) -> Vec<u8> {
    let id = item.id_string();
    let mut head = String::with_capacity(256);
    head.push_str("<message to='");
    head.push_str(&escape_attribute(to));
    head.push_str("' id='");
    head.push_str(&id);
    head.push_str("'><result xmlns='");
    head.push_str(MAM_NAMESPACE);
    head.push('\'');
    if let Some(query_id) = query_id {
        head.push_str(" queryid='");
        head.push_str(&escape_attribute(query_id));
        head.push('\'');
    }
    head.push_str(" id='");
    head.push_str(&id);
    head.push_str("'><forwarded xmlns='");
    head.push_str(FORWARD_NAMESPACE);
    head.push_str("'>");
    head.push_str(&Element::new("delay", DELAY_NAMESPACE).with_attribute("stamp", &format_timestamp(item.stamp_ms)).to_xml());

    let tail = "</forwarded></result></message>";
    let mut out = Vec::with_capacity(head.len() + item.bytes.len() + tail.len() + 32);
    out.extend_from_slice(head.as_bytes());
    // Inside <forwarded/> an unprefixed <message> without its own declaration would fall in
    // the forwarding namespace (XEP-0297 §3 requires jabber:client), so declare it if the
    // stored bytes rely on a stream's default namespace.
    match start_tag(&item.bytes) {
        Some((name_end, false)) if !item.bytes[1..name_end].contains(&b':') => {
            out.extend_from_slice(&item.bytes[..name_end]);
            out.extend_from_slice(b" xmlns='");
            out.extend_from_slice(CLIENT_NAMESPACE.as_bytes());
            out.push(b'\'');
            out.extend_from_slice(&item.bytes[name_end..]);
        }
        _ => out.extend_from_slice(&item.bytes),
    }
    out.extend_from_slice(tail.as_bytes());
    out
}

/// The iq result that ends a query (XEP-0313 §4.3): `<fin complete='true'>` only when the page
/// is complete, and an RSM `<set/>` with the page's first (with its index) and last ids, in
/// archive order even for a flipped page, and the count. An empty page carries only
/// `<count/>` (XEP-0059 §2.2).
pub fn fin_iq(id: &str, to: &str, page: &Page<'_>) -> Vec<u8> {
    let mut set = Element::new("set", RSM_NAMESPACE);
    let first = page.items.iter().min_by_key(|item| item.id);
    let last = page.items.iter().max_by_key(|item| item.id);
    if let (Some(first), Some(last)) = (first, last) {
        let mut first_element = Element::new("first", RSM_NAMESPACE);
        if let Some(index) = page.first_index {
            first_element.set_attribute("index", &index.to_string());
        }
        set = set
            .with_child(first_element.with_text(&first.id_string()))
            .with_child(Element::new("last", RSM_NAMESPACE).with_text(&last.id_string()));
    }
    set = set.with_child(Element::new("count", RSM_NAMESPACE).with_text(&page.count.to_string()));
    let mut fin = Element::new("fin", MAM_NAMESPACE);
    if page.complete {
        fin.set_attribute("complete", "true");
    }
    iq_result(id, None, to, Some(&fin.with_child(set)))
}

/// The reply to `<iq type='get'><query xmlns='urn:xmpp:mam:2'/></iq>`: the form of supported
/// fields (XEP-0313 §4.1.5), none marked required (§4.1), `ids` open to any value (XEP-0122).
pub fn fields_iq(id: &str, to: &str) -> Vec<u8> {
    let field = |var: &str, kind: &str| Element::new("field", DATA_FORMS_NAMESPACE).with_attribute("type", kind).with_attribute("var", var);
    let form = Element::new("x", DATA_FORMS_NAMESPACE)
        .with_attribute("type", "form")
        .with_child(field("FORM_TYPE", "hidden").with_child(Element::new("value", DATA_FORMS_NAMESPACE).with_text(MAM_NAMESPACE)))
        .with_child(field("with", "jid-single"))
        .with_child(field("start", "text-single"))
        .with_child(field("end", "text-single"))
        .with_child(field("before-id", "text-single"))
        .with_child(field("after-id", "text-single"))
        .with_child(
            field("ids", "list-multi").with_child(
                Element::new("validate", DATA_VALIDATE_NAMESPACE)
                    .with_attribute("datatype", "xs:string")
                    .with_child(Element::new("open", DATA_VALIDATE_NAMESPACE)),
            ),
        );
    iq_result(id, None, to, Some(&Element::new("query", MAM_NAMESPACE).with_child(form)))
}

/// The reply to `<iq type='get'><metadata xmlns='urn:xmpp:mam:2'/></iq>` (XEP-0313 §5): the id
/// and timestamp of the first and last archived messages; an empty `<metadata/>` when the
/// archive is empty. `messages` is the archive in ascending id order.
pub fn metadata_iq(id: &str, to: &str, messages: &[ArchivedMessage]) -> Vec<u8> {
    let mut metadata = Element::new("metadata", MAM_NAMESPACE);
    if let (Some(first), Some(last)) = (messages.first(), messages.last()) {
        for (name, message) in [("start", first), ("end", last)] {
            metadata = metadata.with_child(
                Element::new(name, MAM_NAMESPACE)
                    .with_attribute("id", &message.id_string())
                    .with_attribute("timestamp", &format_timestamp(message.stamp_ms)),
            );
        }
    }
    iq_result(id, None, to, Some(&metadata))
}

/// The default archiving policy for JIDs on neither list (XEP-0441 §2.1.1).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultPolicy {
    /// Archive every message.
    Always,
    /// Archive nothing.
    Never,
    /// Archive only messages with contacts whose bare JID is in the roster.
    Roster,
}

impl DefaultPolicy {
    /// The value of the `default` attribute.
    pub fn name(self) -> &'static str {
        match self {
            DefaultPolicy::Always => "always",
            DefaultPolicy::Never => "never",
            DefaultPolicy::Roster => "roster",
        }
    }

    pub fn from_name(name: &str) -> Option<DefaultPolicy> {
        [DefaultPolicy::Always, DefaultPolicy::Never, DefaultPolicy::Roster].into_iter().find(|policy| policy.name() == name)
    }
}

/// A user's archiving preferences (XEP-0441 §2.1): JIDs always archived, JIDs never archived,
/// and the default for the rest. JIDs are prepared; each list holds at most
/// [`PREFERENCES_JIDS_MAX`], without duplicates.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Preferences {
    pub default: DefaultPolicy,
    pub always: Vec<String>,
    pub never: Vec<String>,
}

crate::records::stored_codec!(Preferences);

impl Default for Preferences {
    /// Archive everything: what a user who never set preferences gets.
    fn default() -> Preferences {
        Preferences { default: DefaultPolicy::Always, always: Vec::new(), never: Vec::new() }
    }
}

impl Preferences {}

/// Parses a `<prefs xmlns='urn:xmpp:mam:2'/>` from an iq set (XEP-0441 §2.1). A missing
/// `<always/>` or `<never/>` is an empty list (§2.1.2, §2.1.3). Errors: `bad-request` for a
/// missing or unknown `default` (§2.1.1), `jid-malformed` for a listed JID that does not
/// prepare, `policy-violation` for a list longer than [`PREFERENCES_JIDS_MAX`].
pub fn parse_prefs(prefs: &Element) -> Result<Preferences, &'static str> {
    if prefs.name != "prefs" || prefs.namespace != MAM_NAMESPACE {
        return Err("bad-request");
    }
    let default = prefs.attribute("default").and_then(DefaultPolicy::from_name).ok_or("bad-request")?;
    let list = |name: &str| -> Result<Vec<String>, &'static str> {
        let mut jids: Vec<String> = Vec::new();
        let Some(list) = prefs.child(name, MAM_NAMESPACE) else {
            return Ok(jids);
        };
        for item in list.elements().filter(|item| item.name == "jid" && item.namespace == MAM_NAMESPACE) {
            let jid = Jid::parse(item.text().trim()).map_err(|_| "jid-malformed")?;
            if jids.iter().any(|known| known == jid.as_str()) {
                continue;
            }
            if jids.len() == PREFERENCES_JIDS_MAX {
                return Err("policy-violation");
            }
            jids.push(jid.as_str().to_owned());
        }
        Ok(jids)
    };
    Ok(Preferences { default, always: list("always")?, never: list("never")? })
}

/// The `<prefs/>` element for a get or set reply; `<always/>` and `<never/>` are always
/// present, even empty (XEP-0441 §2.1).
pub fn prefs_element(prefs: &Preferences) -> Element {
    let list = |name: &str, jids: &[String]| {
        jids.iter().fold(Element::new(name, MAM_NAMESPACE), |list, jid| list.with_child(Element::new("jid", MAM_NAMESPACE).with_text(jid)))
    };
    Element::new("prefs", MAM_NAMESPACE)
        .with_attribute("default", prefs.default.name())
        .with_child(list("always", &prefs.always))
        .with_child(list("never", &prefs.never))
}

/// Whether a message exchanged with `with` is archived under `prefs` (XEP-0441 §2.1, §2.3).
/// `with` is the target JID (`to` of an outgoing, `from` of an incoming message), prepared,
/// bare or full. A listed bare JID matches the target's bare JID, a listed full JID only that
/// full JID. The never-list wins over the always-list, which wins over the default; `Roster`
/// archives only when `in_roster` (the caller looks up the target's bare JID).
pub fn should_archive(prefs: &Preferences, with: &str, in_roster: bool) -> bool {
    let with_bare = with.split_once('/').map_or(with, |(bare, _)| bare);
    let listed = |jids: &[String]| jids.iter().any(|jid| if jid.contains('/') { jid == with } else { jid == with_bare });
    if listed(&prefs.never) {
        return false;
    }
    if listed(&prefs.always) {
        return true;
    }
    match prefs.default {
        DefaultPolicy::Always => true,
        DefaultPolicy::Never => false,
        DefaultPolicy::Roster => in_roster,
    }
}

/// Whether a user archive stores this (parsed) message (XEP-0313 §6.1.1): a conversation
/// message with a `<body/>` — type `chat` or `normal`, where a missing or unknown type counts
/// as `normal` (RFC 6121 §5.2.2) — or one carrying the XEP-0334 `<store/>` hint. Never
/// `error`, `headline` or `groupchat`; never a message with a `<no-store/>` or
/// `<no-permanent-store/>` hint (XEP-0334 §4); never a copy the server wrapped in
/// `<forwarded/>` — a carbon (XEP-0280: the original is archived, once, §6.1.1) or an
/// archive result (§4.2).
pub fn is_archivable(message: &Element) -> bool {
    if message.name != "message" {
        return false;
    }
    if matches!(message.attribute("type"), Some("error" | "headline" | "groupchat")) {
        return false;
    }
    let has = |name: &str, namespace: &str| message.child(name, namespace).is_some();
    if has("no-store", HINTS_NAMESPACE) || has("no-permanent-store", HINTS_NAMESPACE) {
        return false;
    }
    if has("sent", CARBONS_NAMESPACE) || has("received", CARBONS_NAMESPACE) || has("result", MAM_NAMESPACE) {
        return false;
    }
    has("body", &message.namespace) || has("store", HINTS_NAMESPACE)
}

/// Reads the query's data form into `parsed` (XEP-0313 §4.1, XEP-0004 §3).
fn parse_form(form: &Element, parsed: &mut ArchiveQuery) -> Result<(), (&'static str, String)> {
    if form.attribute("type") != Some("submit") {
        return Err(("bad-request", "the query form must be of type 'submit'".to_owned()));
    }
    let mut seen: Vec<&str> = Vec::new();
    let mut form_type = false;
    for field in form.elements().filter(|field| field.name == "field" && field.namespace == DATA_FORMS_NAMESPACE) {
        let Some(var) = field.attribute("var") else {
            return Err(("bad-request", "a submitted field has no 'var'".to_owned()));
        };
        // Every accepted var is one of the few below (others are refused at once), so this
        // list stays short however many fields the form holds.
        if seen.contains(&var) {
            return Err(("bad-request", format!("field '{var}' is given twice")));
        }
        seen.push(var);
        let values: Vec<String> = field
            .elements()
            .filter(|value| value.name == "value" && value.namespace == DATA_FORMS_NAMESPACE)
            .map(|value| value.text().trim().to_owned())
            .filter(|value| !value.is_empty())
            .collect();
        let single = || -> Result<Option<&str>, (&'static str, String)> {
            match values.as_slice() {
                [] => Ok(None),
                [value] => Ok(Some(value.as_str())),
                _ => Err(("bad-request", format!("field '{var}' takes one value"))),
            }
        };
        let timestamp = |value: Option<&str>| -> Result<Option<u64>, (&'static str, String)> {
            value
                .map(|text| parse_timestamp(text).ok_or_else(|| ("bad-request", format!("field '{var}' is not an XEP-0082 DateTime"))))
                .transpose()
        };
        match var {
            "FORM_TYPE" => {
                if single()? != Some(MAM_NAMESPACE) {
                    return Err(("bad-request", format!("FORM_TYPE must be '{MAM_NAMESPACE}'")));
                }
                form_type = true;
            }
            "with" => {
                parsed.with = single()?
                    .map(|text| {
                        Jid::parse(text)
                            .map(|jid| jid.as_str().to_owned())
                            .map_err(|_| ("bad-request", "field 'with' is not a valid JID".to_owned()))
                    })
                    .transpose()?;
            }
            "start" => parsed.start_ms = timestamp(single()?)?,
            "end" => parsed.end_ms = timestamp(single()?)?,
            "after-id" => parsed.after_id = single()?.map(archive_id).transpose()?,
            "before-id" => parsed.before_id = single()?.map(archive_id).transpose()?,
            "ids" => {
                if values.len() > ARCHIVE_IDS_MAX {
                    return Err(("policy-violation", format!("at most {ARCHIVE_IDS_MAX} ids per query")));
                }
                parsed.ids = values.iter().map(|value| archive_id(value)).collect::<Result<_, _>>()?;
            }
            _ => return Err(("feature-not-implemented", format!("unknown field '{var}'"))),
        }
    }
    if !form_type {
        return Err(("bad-request", format!("the form has no FORM_TYPE '{MAM_NAMESPACE}'")));
    }
    Ok(())
}

/// Reads the RSM `<set/>` into `parsed` (XEP-0059 §2).
fn parse_rsm(set: &Element, parsed: &mut ArchiveQuery) -> Result<(), (&'static str, String)> {
    if set.child("index", RSM_NAMESPACE).is_some() {
        return Err(("feature-not-implemented", "RSM <index/> is not supported; page by id".to_owned()));
    }
    if let Some(max) = set.child("max", RSM_NAMESPACE) {
        let text = max.text();
        let text = text.trim();
        parsed.max = match text.parse::<u64>() {
            Ok(value) => usize::try_from(value).unwrap_or(usize::MAX).min(ARCHIVE_PAGE_MAX),
            // A number too large for u64 is still a valid request for "as many as allowed".
            Err(_) if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) => ARCHIVE_PAGE_MAX,
            Err(_) => return Err(("bad-request", "RSM <max/> is not a non-negative integer".to_owned())),
        };
    }
    let after = set.child("after", RSM_NAMESPACE);
    let before = set.child("before", RSM_NAMESPACE);
    if after.is_some() && before.is_some() {
        return Err(("bad-request", "RSM <after/> with <before/>: use 'after-id' and 'before-id'".to_owned()));
    }
    if let Some(after) = after {
        parsed.after = Some(archive_id(after.text().trim())?);
    }
    if let Some(before) = before {
        let text = before.text();
        let text = text.trim();
        parsed.before = Some(if text.is_empty() { None } else { Some(archive_id(text)?) });
    }
    Ok(())
}

/// An id named by the client; one that no archive id is spelled as cannot be in the archive,
/// which XEP-0313 §4.1.3 and §4.3.2 answer with item-not-found.
fn archive_id(text: &str) -> Result<u64, (&'static str, String)> {
    parse_id(text).ok_or_else(|| ("item-not-found", format!("no archived message has id '{text}'")))
}

/// Whether an archived message matches the `with` filter (XEP-0313 §4.1.1). A full JID needs
/// the stanza's own addresses, so the stored bytes are parsed, but only for messages whose
/// bare JID already matches.
/// Whether the query filters on what is inside a message (`with`, `start`, `end`), which a
/// store must read the message to decide; ids alone are decided from keys.
pub fn has_content_filters(query: &ArchiveQuery) -> bool {
    query.with.is_some() || query.start_ms.is_some() || query.end_ms.is_some()
}

/// The `with`, `start` and `end` filters of XEP-0313 §4.1 applied to one message (ids and
/// id bounds are the caller's, who walks the archive by id).
pub fn matches_content_filters(query: &ArchiveQuery, message: &ArchivedMessage) -> bool {
    query.start_ms.is_none_or(|start| message.stamp_ms >= start)
        && query.end_ms.is_none_or(|end| message.stamp_ms <= end)
        && query.with.as_deref().is_none_or(|with| matches_with(message, with))
}

fn matches_with(message: &ArchivedMessage, with: &str) -> bool {
    let Some((bare, _)) = with.split_once('/') else {
        return message.with == with;
    };
    if message.with != bare {
        return false;
    }
    let Ok(stanza) = parse_element(&message.bytes) else {
        return false;
    };
    ["from", "to"]
        .into_iter()
        .filter_map(|name| stanza.attribute(name))
        .any(|address| Jid::parse(address).is_ok_and(|jid| jid.as_str() == with))
}

/// For the root start tag of `bytes`: the offset just past its name, and whether it declares
/// a default namespace (an attribute named exactly `xmlns`). `None` if there is no complete
/// start tag.
fn start_tag(bytes: &[u8]) -> Option<(usize, bool)> {
    if bytes.first() != Some(&b'<') {
        return None;
    }
    let is_space = |byte: &u8| matches!(byte, b' ' | b'\t' | b'\r' | b'\n');
    let name_end = 1 + bytes[1..].iter().take_while(|byte| !is_space(byte) && !matches!(byte, b'/' | b'>')).count();
    let mut declares = false;
    let mut quote = None;
    for (index, &byte) in bytes.iter().enumerate().skip(name_end) {
        match quote {
            Some(open) if byte == open => quote = None,
            Some(_) => {}
            None => match byte {
                b'\'' | b'"' => quote = Some(byte),
                b'>' => return Some((name_end, declares)),
                b'x' if bytes.get(index.wrapping_sub(1)).is_some_and(is_space) && bytes[index..].starts_with(b"xmlns") => {
                    let after_name = bytes[index + 5..].iter().find(|byte| !is_space(byte));
                    declares |= after_name == Some(&b'=');
                }
                _ => {}
            },
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "juliet@capulet.lit/balcony";

    /// Ten messages with ids 10, 20 … 100, stamped one second apart from t=1000 s; odd ones
    /// with romeo (incoming, from his 'orchard' resource), even ones with nurse (outgoing).
    fn archive() -> Vec<ArchivedMessage> {
        (1..=10u64)
            .map(|n| {
                let (with, bytes) = if n % 2 == 1 {
                    (
                        "romeo@montague.lit",
                        format!(
                            "<message xmlns='jabber:client' from='romeo@montague.lit/orchard' \
                             to='{ME}' type='chat'><body>{n}</body></message>"
                        ),
                    )
                } else {
                    (
                        "nurse@capulet.lit",
                        format!(
                            "<message xmlns='jabber:client' from='{ME}' to='nurse@capulet.lit' \
                             type='chat'><body>{n}</body></message>"
                        ),
                    )
                };
                ArchivedMessage { id: n * 10, stamp_ms: 1_000_000 + n * 1000, with: with.to_owned(), bytes: bytes.into_bytes() }
            })
            .collect()
    }

    fn ids(page: &Page<'_>) -> Vec<u64> {
        page.items.iter().map(|item| item.id).collect()
    }

    fn query(max: usize) -> ArchiveQuery {
        ArchiveQuery { max, ..ArchiveQuery::default() }
    }

    fn parse(xml: &str) -> Result<ArchiveQuery, (&'static str, String)> {
        parse_query(&parse_element(xml.as_bytes()).expect("test XML parses"))
    }

    fn form(fields: &str) -> String {
        format!(
            "<query xmlns='urn:xmpp:mam:2' queryid='q1'><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>{fields}</x></query>"
        )
    }

    fn condition(xml: &str) -> &'static str {
        match parse(xml) {
            Ok(parsed) => panic!("expected an error, parsed {parsed:?}"),
            Err((condition, _)) => condition,
        }
    }

    #[test]
    fn archived_message_round_trips_and_rejects_corruption() {
        let message = archive().remove(0);
        let bytes = message.encode();
        assert_eq!(ArchivedMessage::decode(&bytes).expect("decodes"), message);
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        assert_eq!(ArchivedMessage::decode(&shifted[1..]).expect("decodes unaligned"), message);
        assert!(ArchivedMessage::decode(&bytes[..bytes.len() - 5]).is_err());
        assert!(ArchivedMessage::decode(&[]).is_err());
        assert_eq!(message.id_string(), "10");
    }

    #[test]
    fn ids_have_one_spelling() {
        assert_eq!(parse_id("0"), Some(0));
        assert_eq!(parse_id("18446744073709551615"), Some(u64::MAX));
        for text in ["", "+1", "-1", "01", " 1", "1 ", "1e3", "18446744073709551616", "a"] {
            assert_eq!(parse_id(text), None, "{text:?}");
        }
    }

    #[test]
    fn parses_every_field_and_rsm() {
        let parsed = parse(
            &form(
                "<field var='with'><value> Romeo@Montague.lit </value></field>\
                 <field var='start'><value>1970-01-01T00:16:41Z</value></field>\
                 <field var='end'><value>1970-01-01T01:16:45+01:00</value></field>\
                 <field var='after-id'><value>10</value></field>\
                 <field var='before-id'><value>90</value></field>\
                 <field var='ids' type='list-multi'><value>30</value><value>50</value></field>",
            )
            .replace("</query>", "<set xmlns='http://jabber.org/protocol/rsm'><max>5</max><after>20</after></set><flip-page/></query>"),
        )
        .expect("parses");
        assert_eq!(
            parsed,
            ArchiveQuery {
                query_id: Some("q1".to_owned()),
                with: Some("romeo@montague.lit".to_owned()),
                start_ms: Some(1_001_000),
                end_ms: Some(1_005_000),
                after_id: Some(10),
                before_id: Some(90),
                ids: vec![30, 50],
                max: 5,
                after: Some(20),
                before: None,
                flip: true,
            }
        );
    }

    #[test]
    fn bare_query_gets_defaults_and_rsm_variants() {
        assert_eq!(parse("<query xmlns='urn:xmpp:mam:2'/>").expect("parses"), ArchiveQuery::default());
        let rsm =
            |set: &str| parse(&format!("<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>{set}</set></query>"));
        assert_eq!(rsm("<before/>").expect("parses").before, Some(None));
        assert_eq!(rsm("<before>70</before>").expect("parses").before, Some(Some(70)));
        assert_eq!(rsm("<max>0</max>").expect("parses").max, 0);
        assert_eq!(rsm("<max>1000</max>").expect("parses").max, ARCHIVE_PAGE_MAX);
        assert_eq!(rsm("<max>99999999999999999999999</max>").expect("parses").max, ARCHIVE_PAGE_MAX);
        assert_eq!(rsm("<max>-1</max>").map_err(|e| e.0), Err("bad-request"));
        assert_eq!(rsm("<max>ten</max>").map_err(|e| e.0), Err("bad-request"));
        assert_eq!(rsm("<max/>").map_err(|e| e.0), Err("bad-request"));
        assert_eq!(rsm("<after>1</after><before>5</before>").map_err(|e| e.0), Err("bad-request"));
        assert_eq!(rsm("<index>3</index>").map_err(|e| e.0), Err("feature-not-implemented"));
        assert_eq!(rsm("<after>x-1</after>").map_err(|e| e.0), Err("item-not-found"));
        assert_eq!(rsm("<before>007</before>").map_err(|e| e.0), Err("item-not-found"));
        // A field with no value is an unset field.
        let empty = parse(&form("<field var='with'/><field var='start'><value/></field>")).expect("parses");
        assert_eq!(empty.with, None);
        assert_eq!(empty.start_ms, None);
    }

    #[test]
    fn form_errors_follow_xep_0313() {
        assert_eq!(condition(&form("<field var='urn:example:free-text'><value>x</value></field>")), "feature-not-implemented");
        assert_eq!(condition(&form("<field var='include-groupchat'><value>true</value></field>")), "feature-not-implemented");
        assert_eq!(condition(&form("<field var='start'><value>2010-13-01T00:00:00Z</value></field>")), "bad-request");
        assert_eq!(condition(&form("<field var='end'><value>yesterday</value></field>")), "bad-request");
        assert_eq!(condition(&form("<field var='with'><value>a@b@c/</value></field>")), "bad-request");
        assert_eq!(condition(&form("<field var='with'><value>a@b</value><value>c@d</value></field>")), "bad-request");
        assert_eq!(condition(&form("<field var='with'><value>a@b</value></field><field var='with'/>")), "bad-request");
        assert_eq!(condition(&form("<field><value>x</value></field>")), "bad-request");
        assert_eq!(condition(&form("<field var='after-id'><value>abc</value></field>")), "item-not-found");
        assert_eq!(condition(&form("<field var='ids'><value>1</value><value>z</value></field>")), "item-not-found");
        let too_many: String = (0..=ARCHIVE_IDS_MAX).map(|n| format!("<value>{n}</value>")).collect();
        assert_eq!(condition(&form(&format!("<field var='ids'>{too_many}</field>"))), "policy-violation");
        assert_eq!(condition(&form("").replace("type='submit'", "type='form'")), "bad-request");
        assert_eq!(condition(&form("").replace("<value>urn:xmpp:mam:2</value>", "<value>urn:xmpp:mam:1</value>")), "bad-request");
        assert_eq!(condition("<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'/></query>"), "bad-request");
        assert_eq!(condition("<query xmlns='urn:xmpp:mam:1'/>"), "bad-request");
        assert_eq!(condition("<query xmlns='urn:xmpp:mam:2' node='princely_musings'/>"), "feature-not-implemented");
        let (_, text) = parse(&form("<field var='x-custom'/>")).expect_err("unknown field");
        assert!(text.contains("x-custom"), "{text}");
    }

    #[test]
    fn pages_forward_from_the_first_page_to_the_end() {
        let messages = archive();
        let first = select(&messages, &query(3)).expect("selects");
        assert_eq!((ids(&first), first.complete, first.count, first.first_index), (vec![10, 20, 30], false, 10, Some(0)));
        let middle = select(&messages, &ArchiveQuery { after: Some(30), ..query(3) }).expect("selects");
        assert_eq!((ids(&middle), middle.complete, middle.first_index), (vec![40, 50, 60], false, Some(3)));
        let last = select(&messages, &ArchiveQuery { after: Some(80), ..query(3) }).expect("selects");
        assert_eq!((ids(&last), last.complete, last.first_index), (vec![90, 100], true, Some(8)));
        let exact = select(&messages, &ArchiveQuery { after: Some(70), ..query(3) }).expect("selects");
        assert_eq!((ids(&exact), exact.complete), (vec![80, 90, 100], true));
        let all = select(&messages, &query(ARCHIVE_PAGE_DEFAULT)).expect("selects");
        assert_eq!((all.items.len(), all.complete), (10, true));
    }

    #[test]
    fn after_the_last_id_is_an_empty_complete_page() {
        let messages = archive();
        let page = select(&messages, &ArchiveQuery { after: Some(100), ..query(3) }).expect("selects");
        assert_eq!((ids(&page), page.complete, page.count, page.first_index), (vec![], true, 10, None));
    }

    #[test]
    fn pages_backward_from_the_last_page() {
        let messages = archive();
        let last = select(&messages, &ArchiveQuery { before: Some(None), ..query(3) }).expect("selects");
        assert_eq!((ids(&last), last.complete, last.first_index), (vec![80, 90, 100], false, Some(7)));
        let previous = select(&messages, &ArchiveQuery { before: Some(Some(50)), ..query(3) }).expect("selects");
        assert_eq!((ids(&previous), previous.complete, previous.first_index), (vec![20, 30, 40], false, Some(1)));
        let start = select(&messages, &ArchiveQuery { before: Some(Some(40)), ..query(3) }).expect("selects");
        assert_eq!((ids(&start), start.complete, start.first_index), (vec![10, 20, 30], true, Some(0)));
        let before_first = select(&messages, &ArchiveQuery { before: Some(Some(10)), ..query(3) }).expect("selects");
        assert_eq!((ids(&before_first), before_first.complete), (vec![], true));
        let whole = select(&messages, &ArchiveQuery { before: Some(None), ..query(50) }).expect("selects");
        assert_eq!((whole.items.len(), whole.complete), (10, true));
    }

    #[test]
    fn unknown_ids_are_item_not_found() {
        let messages = archive();
        for query in [
            ArchiveQuery { after: Some(35), ..query(3) },
            ArchiveQuery { before: Some(Some(5)), ..query(3) },
            ArchiveQuery { after_id: Some(101), ..query(3) },
            ArchiveQuery { before_id: Some(0), ..query(3) },
            ArchiveQuery { ids: vec![10, 11], ..query(3) },
        ] {
            assert_eq!(select(&messages, &query), Err("item-not-found"), "{query:?}");
        }
        assert_eq!(select(&[], &ArchiveQuery { after: Some(1), ..query(3) }), Err("item-not-found"));
    }

    #[test]
    fn max_zero_gives_only_the_count() {
        let messages = archive();
        let page = select(&messages, &query(0)).expect("selects");
        assert_eq!((page.items.len(), page.count, page.complete, page.first_index), (0, 10, false, None));
        let empty = select(&[], &query(0)).expect("selects");
        assert_eq!((empty.count, empty.complete), (0, true));
        assert_eq!(
            String::from_utf8(fin_iq("q", ME, &page)).expect("utf-8"),
            format!(
                "<iq type='result' id='q' to='{ME}'><fin xmlns='urn:xmpp:mam:2'>\
                 <set xmlns='http://jabber.org/protocol/rsm'><count>10</count></set></fin></iq>"
            )
        );
    }

    #[test]
    fn filters_by_with_time_and_ids() {
        let messages = archive();
        let with = |with: &str| ArchiveQuery { with: Some(with.to_owned()), ..query(50) };
        assert_eq!(ids(&select(&messages, &with("romeo@montague.lit")).expect("selects")), vec![10, 30, 50, 70, 90]);
        assert_eq!(ids(&select(&messages, &with("romeo@montague.lit/orchard")).expect("selects")), vec![10, 30, 50, 70, 90]);
        assert_eq!(ids(&select(&messages, &with("romeo@montague.lit/garden")).expect("selects")), Vec::<u64>::new());
        assert_eq!(ids(&select(&messages, &with("nurse@capulet.lit")).expect("selects")), vec![20, 40, 60, 80, 100]);
        assert_eq!(ids(&select(&messages, &with("capulet.lit")).expect("selects")), Vec::<u64>::new());

        // start and end are inclusive (§4.1.2).
        let window = ArchiveQuery { start_ms: Some(1_003_000), end_ms: Some(1_005_000), ..query(50) };
        assert_eq!(ids(&select(&messages, &window).expect("selects")), vec![30, 40, 50]);
        let inverted = ArchiveQuery { start_ms: Some(1_005_000), end_ms: Some(1_003_000), ..query(50) };
        assert_eq!(select(&messages, &inverted).expect("selects").count, 0);

        // after-id and before-id are exclusive (§4.1.3).
        let between = ArchiveQuery { after_id: Some(20), before_id: Some(60), ..query(50) };
        assert_eq!(ids(&select(&messages, &between).expect("selects")), vec![30, 40, 50]);
        let crossed = ArchiveQuery { after_id: Some(60), before_id: Some(20), ..query(50) };
        assert_eq!(ids(&select(&messages, &crossed).expect("selects")), Vec::<u64>::new());

        // ids: archive order, once each, still subject to the other filters.
        let named = ArchiveQuery { ids: vec![90, 20, 50, 20], ..query(50) };
        assert_eq!(ids(&select(&messages, &named).expect("selects")), vec![20, 50, 90]);
        let named_with =
            ArchiveQuery { ids: vec![90, 20, 50], with: Some("romeo@montague.lit".to_owned()), after_id: Some(50), ..query(50) };
        assert_eq!(ids(&select(&messages, &named_with).expect("selects")), vec![90]);
    }

    #[test]
    fn filtered_pages_use_positions_among_the_matches() {
        let messages = archive();
        let romeo = ArchiveQuery { with: Some("romeo@montague.lit".to_owned()), max: 2, ..ArchiveQuery::default() };
        let first = select(&messages, &romeo).expect("selects");
        assert_eq!((ids(&first), first.count, first.complete), (vec![10, 30], 5, false));
        // Paging after an id that exists but is filtered out continues from its position.
        let next = select(&messages, &ArchiveQuery { after: Some(40), ..romeo.clone() }).expect("selects");
        assert_eq!((ids(&next), next.first_index, next.complete), (vec![50, 70], Some(2), false));
        let last = select(&messages, &ArchiveQuery { before: Some(None), ..romeo }).expect("selects");
        assert_eq!((ids(&last), last.first_index, last.complete), (vec![70, 90], Some(3), false));
    }

    #[test]
    fn flipped_pages_reverse_order_not_content() {
        let messages = archive();
        let flipped = select(&messages, &ArchiveQuery { before: Some(None), flip: true, ..query(3) }).expect("selects");
        assert_eq!((ids(&flipped), flipped.first_index), (vec![100, 90, 80], Some(7)));
        // The RSM set still names the page in archive order.
        assert_eq!(
            String::from_utf8(fin_iq("q7", ME, &flipped)).expect("utf-8"),
            format!(
                "<iq type='result' id='q7' to='{ME}'><fin xmlns='urn:xmpp:mam:2'>\
                 <set xmlns='http://jabber.org/protocol/rsm'><first index='7'>80</first>\
                 <last>100</last><count>10</count></set></fin></iq>"
            )
        );
    }

    #[test]
    fn fin_marks_complete_pages() {
        let messages = archive();
        let page = select(&messages, &ArchiveQuery { after: Some(80), ..query(3) }).expect("selects");
        let fin = parse_element(&fin_iq("q8", ME, &page)).expect("parses");
        assert_eq!(fin.attribute("type"), Some("result"));
        let fin = fin.child("fin", MAM_NAMESPACE).expect("fin");
        assert_eq!(fin.attribute("complete"), Some("true"));
        let set = fin.child("set", RSM_NAMESPACE).expect("set");
        assert_eq!(
            set.child("first", RSM_NAMESPACE).map(|e| (e.text(), e.attribute("index").map(str::to_owned))),
            Some(("90".to_owned(), Some("8".to_owned())))
        );
        assert_eq!(set.child("last", RSM_NAMESPACE).map(Element::text).as_deref(), Some("100"));
        assert_eq!(set.child("count", RSM_NAMESPACE).map(Element::text).as_deref(), Some("10"));
    }

    #[test]
    fn result_message_forwards_the_stored_stanza() {
        let item = archive().remove(0);
        let bytes = result_message(ME, Some("f'27"), &item);
        let message = parse_element(&bytes).expect("parses");
        assert_eq!(message.attribute("to"), Some(ME));
        assert_eq!(message.attribute("from"), None);
        assert_eq!(message.attribute("id"), Some("10"));
        let result = message.child("result", MAM_NAMESPACE).expect("result");
        assert_eq!(result.attribute("queryid"), Some("f'27"));
        assert_eq!(result.attribute("id"), Some("10"));
        let forwarded = result.child("forwarded", FORWARD_NAMESPACE).expect("forwarded");
        let delay = forwarded.child("delay", DELAY_NAMESPACE).expect("delay");
        assert_eq!(delay.attribute("stamp"), Some("1970-01-01T00:16:41.000Z"));
        let original = forwarded.child("message", CLIENT_NAMESPACE).expect("original message");
        assert_eq!(original.attribute("from"), Some("romeo@montague.lit/orchard"));
        assert_eq!(original.child("body", CLIENT_NAMESPACE).map(Element::text).as_deref(), Some("1"));
        assert!(String::from_utf8(bytes).expect("utf-8").ends_with("<body>1</body></message></forwarded></result></message>"));

        let unnamed = parse_element(&result_message(ME, None, &item)).expect("parses");
        assert_eq!(unnamed.child("result", MAM_NAMESPACE).and_then(|r| r.attribute("queryid")), None);
    }

    #[test]
    fn result_message_declares_jabber_client_on_bare_stored_stanzas() {
        for stored in [&b"<message to='a@b' type='chat'><body>hi</body></message>"[..], b"<message/>", b"<message\nid='x>y'/>"] {
            let item = ArchivedMessage { id: 1, stamp_ms: 0, with: "a@b".to_owned(), bytes: stored.to_vec() };
            let message = parse_element(&result_message(ME, None, &item)).expect("parses");
            let forwarded =
                message.child("result", MAM_NAMESPACE).and_then(|result| result.child("forwarded", FORWARD_NAMESPACE)).expect("forwarded");
            assert!(forwarded.child("message", CLIENT_NAMESPACE).is_some(), "{:?}", String::from_utf8_lossy(stored));
        }
        assert_eq!(start_tag(b"<message xmlns='jabber:client'>"), Some((8, true)));
        assert_eq!(start_tag(b"<message xmlns = \"jabber:client\"/>"), Some((8, true)));
        assert_eq!(start_tag(b"<message xmlns:x='y' id='xmlns=z'>"), Some((8, false)));
        assert_eq!(start_tag(b"<message id='>"), None);
    }

    #[test]
    fn fields_form_lists_the_supported_fields() {
        let iq = parse_element(&fields_iq("form1", ME)).expect("parses");
        let form = iq.child("query", MAM_NAMESPACE).and_then(|query| query.child("x", DATA_FORMS_NAMESPACE)).expect("form");
        assert_eq!(form.attribute("type"), Some("form"));
        let vars: Vec<&str> = form.elements().filter_map(|field| field.attribute("var")).collect();
        assert_eq!(vars, ["FORM_TYPE", "with", "start", "end", "before-id", "after-id", "ids"]);
        let ids = form.elements().find(|field| field.attribute("var") == Some("ids")).expect("ids");
        assert!(ids.child("validate", DATA_VALIDATE_NAMESPACE).and_then(|v| v.child("open", DATA_VALIDATE_NAMESPACE)).is_some());
        assert!(form.elements().all(|field| field.child("required", DATA_FORMS_NAMESPACE).is_none()));
    }

    #[test]
    fn metadata_names_the_first_and_last_messages() {
        let messages = archive();
        let iq = parse_element(&metadata_iq("m", ME, &messages)).expect("parses");
        let metadata = iq.child("metadata", MAM_NAMESPACE).expect("metadata");
        let start = metadata.child("start", MAM_NAMESPACE).expect("start");
        assert_eq!((start.attribute("id"), start.attribute("timestamp")), (Some("10"), Some("1970-01-01T00:16:41.000Z")));
        assert_eq!(metadata.child("end", MAM_NAMESPACE).and_then(|end| end.attribute("id")), Some("100"));
        let empty = parse_element(&metadata_iq("m", ME, &[])).expect("parses");
        assert_eq!(empty.child("metadata", MAM_NAMESPACE).map(|m| m.children.len()), Some(0));
    }

    #[test]
    fn preferences_round_trip_through_xml_and_rkyv() {
        let xml = "<prefs xmlns='urn:xmpp:mam:2' default='roster'>\
                   <always><jid>Romeo@Montague.lit</jid><jid>romeo@montague.lit</jid></always>\
                   <never><jid>montague@montague.lit</jid><jid>tybalt@capulet.lit/sword</jid></never></prefs>";
        let prefs = parse_prefs(&parse_element(xml.as_bytes()).expect("parses")).expect("valid prefs");
        assert_eq!(
            prefs,
            Preferences {
                default: DefaultPolicy::Roster,
                always: vec!["romeo@montague.lit".to_owned()],
                never: vec!["montague@montague.lit".to_owned(), "tybalt@capulet.lit/sword".to_owned()],
            }
        );
        let element = prefs_element(&prefs);
        assert_eq!(parse_prefs(&element), Ok(prefs.clone()));
        assert_eq!(Preferences::decode(&prefs.encode()), Ok(prefs));
        assert!(Preferences::decode(&[1, 2, 3]).is_err());

        let defaults = Preferences::default();
        assert_eq!(prefs_element(&defaults).to_xml(), "<prefs xmlns='urn:xmpp:mam:2' default='always'><always/><never/></prefs>");
        assert_eq!(Preferences::decode(&defaults.encode()), Ok(defaults));
    }

    #[test]
    fn preferences_errors() {
        let parse = |xml: &str| parse_prefs(&parse_element(xml.as_bytes()).expect("parses"));
        assert_eq!(parse("<prefs xmlns='urn:xmpp:mam:2'/>"), Err("bad-request"));
        assert_eq!(parse("<prefs xmlns='urn:xmpp:mam:2' default='sometimes'/>"), Err("bad-request"));
        assert_eq!(parse("<prefs xmlns='urn:xmpp:mam:1' default='always'/>"), Err("bad-request"));
        assert_eq!(parse("<prefs xmlns='urn:xmpp:mam:2' default='never'><always><jid>@bad</jid></always></prefs>"), Err("jid-malformed"));
        let many: String = (0..=PREFERENCES_JIDS_MAX).map(|n| format!("<jid>u{n}@x</jid>")).collect();
        assert_eq!(parse(&format!("<prefs xmlns='urn:xmpp:mam:2' default='never'><never>{many}</never></prefs>")), Err("policy-violation"));
        let minimal = parse("<prefs xmlns='urn:xmpp:mam:2' default='never'/>").expect("valid");
        assert_eq!((minimal.always.len(), minimal.never.len()), (0, 0));
    }

    #[test]
    fn should_archive_applies_lists_then_default() {
        let prefs = Preferences {
            default: DefaultPolicy::Roster,
            always: vec!["romeo@montague.lit".to_owned(), "tybalt@capulet.lit".to_owned()],
            never: vec!["tybalt@capulet.lit".to_owned(), "nurse@capulet.lit/kitchen".to_owned()],
        };
        assert!(should_archive(&prefs, "romeo@montague.lit", false));
        assert!(should_archive(&prefs, "romeo@montague.lit/orchard", false));
        assert!(!should_archive(&prefs, "tybalt@capulet.lit", true), "never wins over always");
        assert!(!should_archive(&prefs, "nurse@capulet.lit/kitchen", true));
        assert!(should_archive(&prefs, "nurse@capulet.lit/garden", true), "a full entry matches only itself");
        assert!(!should_archive(&prefs, "nurse@capulet.lit", false));
        let always = Preferences::default();
        assert!(should_archive(&always, "anyone@x", false));
        let never = Preferences { default: DefaultPolicy::Never, ..Preferences::default() };
        assert!(!should_archive(&never, "anyone@x", true));
    }

    #[test]
    fn archivable_messages() {
        let archivable = |xml: &str| is_archivable(&parse_element(xml.as_bytes()).expect("parses"));
        assert!(archivable("<message type='chat'><body>hi</body></message>"));
        assert!(archivable("<message><body>hi</body></message>"));
        assert!(archivable("<message type='normal'><body/></message>"));
        assert!(archivable("<message type='bogus'><body>unknown type is normal</body></message>"));
        assert!(archivable(
            "<message type='chat'><store xmlns='urn:xmpp:hints'/><encrypted xmlns='eu.siacs.conversations.axolotl'/></message>"
        ));
        assert!(!archivable("<message type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"));
        assert!(!archivable("<message type='error'><body>x</body></message>"));
        assert!(!archivable("<message type='headline'><body>x</body></message>"));
        assert!(!archivable("<message type='groupchat'><body>x</body></message>"));
        assert!(!archivable("<message type='chat'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>"));
        assert!(!archivable("<message type='chat'><body>x</body><no-permanent-store xmlns='urn:xmpp:hints'/></message>"));
        assert!(!archivable("<message type='chat'><body xmlns='other'>x</body></message>"));
        assert!(!archivable(
            "<message><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>\
             <message xmlns='jabber:client' type='chat'><body>x</body></message></forwarded></received></message>"
        ));
        assert!(!archivable("<message><sent xmlns='urn:xmpp:carbons:2'/><body>x</body></message>"));
        assert!(!archivable("<message><result xmlns='urn:xmpp:mam:2' id='1'/><body>x</body></message>"));
        assert!(!archivable("<presence><body>x</body></presence>"));
    }
}
