//! Personal Eventing Protocol: the XEP-0163 profile of XEP-0060 publish-subscribe that turns every
//! account into a virtual pubsub service, with the XEP-0115 entity capabilities it filters
//! notifications by, the XEP-0223 private-storage profile (publish-options) and the XEP-0402
//! bookmarks compatibility mapping to XEP-0048 `storage:bookmarks`.
//!
//! This module owns the stored form of a node ([`Node`], [`NodeConfig`], [`PepItem`]) with its
//! checked rkyv encoding; parsing a pubsub iq payload into a [`PubsubRequest`] with the exact
//! XEP-0060 error for each malformed request ([`PubsubError`]); node configuration and the
//! publish-options preconditions ([`configure`], [`options_match`], [`publish_options_config`]);
//! applying a publish or retraction to a node and choosing the items a request returns; the
//! access-model check ([`check_access`]); the bytes of every reply and event notification; the
//! XEP-0115 §5 verification of a disco#info result against a caps `ver` and the `+notify`
//! interests it declares (XEP-0163 §4.2); and the XEP-0402 `#compat` conversion in both directions.
//!
//! It deliberately does not own: the per-user set of nodes or how they are stored, item id
//! generation, who is online, the roster or presence subscriptions, the caps cache, deciding who
//! gets a notification or when the last item is sent (XEP-0163 §4.3), or the XEP-0049 private
//! storage that `storage:bookmarks` lives in. The runtime holds all of that and asks this module.
//! There are no explicit subscriptions (XEP-0060 §6.1): PEP's presence-based auto-subscribe
//! (XEP-0163 §4.1) replaces them, so `<subscribe/>` and friends answer `feature-not-implemented`.
//! There is no collection node, no RSM paging of items (an over-long result is truncated, which
//! XEP-0060 §6.5.4 allows) and no item `publisher` attribute.
//!
//! Payloads such as XEP-0084 avatars (`urn:xmpp:avatar:data`, `urn:xmpp:avatar:metadata`) and
//! XEP-0172 nicknames (`http://jabber.org/protocol/nick`) need nothing node-specific here: they
//! are ordinary PEP nodes, bounded by [`PEP_ITEM_BYTES_MAX`] like any other.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rkyv::{Archive, Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::forms::{parse_boolean, DATA_FORMS_NAMESPACE};
use crate::framer::parse_element;
use crate::jid::{Jid, JID_PART_BYTES_MAX};
use crate::limits::STANZA_BYTES_MAX;
use crate::routing::{error_type, iq_result, DISCO_INFO_NAMESPACE, STANZAS_NAMESPACE};
use crate::time::delay_element;
use crate::xml::{push_attribute, Element};

/// XEP-0060 `http://jabber.org/protocol/pubsub`: publish, retract, items, create.
pub const PUBSUB_NAMESPACE: &str = "http://jabber.org/protocol/pubsub";
/// XEP-0060 event notifications.
pub const PUBSUB_EVENT_NAMESPACE: &str = "http://jabber.org/protocol/pubsub#event";
/// XEP-0060 owner use cases: configure, delete, purge.
pub const PUBSUB_OWNER_NAMESPACE: &str = "http://jabber.org/protocol/pubsub#owner";
/// XEP-0060 application-specific error conditions (§7.1.3 and the rest of the error cases).
pub const PUBSUB_ERRORS_NAMESPACE: &str = "http://jabber.org/protocol/pubsub#errors";
/// FORM_TYPE of the XEP-0060 §7.1.5 `<publish-options/>` form.
pub const PUBLISH_OPTIONS_FORM_TYPE: &str = "http://jabber.org/protocol/pubsub#publish-options";
/// FORM_TYPE of the XEP-0060 §8.2 node configuration form.
pub const NODE_CONFIG_FORM_TYPE: &str = "http://jabber.org/protocol/pubsub#node_config";
/// XEP-0115 entity capabilities.
pub const CAPS_NAMESPACE: &str = "http://jabber.org/protocol/caps";
/// XEP-0402 PEP native bookmarks: the node name and the `<conference/>` namespace.
pub const BOOKMARKS2_NAMESPACE: &str = "urn:xmpp:bookmarks:1";
/// XEP-0402 "Compatibility": advertised on the account by a server that keeps XEP-0049 private storage
/// `storage:bookmarks` and the [`BOOKMARKS2_NAMESPACE`] node in step.
pub const BOOKMARKS2_COMPAT_FEATURE: &str = "urn:xmpp:bookmarks:1#compat";
/// XEP-0048 bookmark storage, as kept in XEP-0049 private XML storage.
pub const LEGACY_BOOKMARKS_NAMESPACE: &str = "storage:bookmarks";

/// The XEP-0115 §5.1 hash every implementation must support, as named in the IANA registry.
pub const CAPS_HASH_SHA1: &str = "sha-1";

/// The pubsub features an account advertises in its disco#info (XEP-0163 §6.1, together with the
/// `pubsub`/`pep` identity): what this module and the runtime around it implement. Not
/// [`BOOKMARKS2_COMPAT_FEATURE`]: that one depends on the runtime wiring private storage to
/// [`bookmarks_from_legacy`] and [`legacy_from_bookmarks`].
pub const PEP_FEATURES: &[&str] = &[
    PUBSUB_NAMESPACE,
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-roster",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#auto-subscribe",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#create-and-configure",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#delete-items",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#filtered-notifications",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#multi-items",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#purge-nodes",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-items",
];

/// Nodes one account may hold. Past it, creating another (explicitly or by publishing) fails
/// with `not-allowed` + `<max-nodes-exceeded/>`. Worst case a user holds
/// `PEP_NODES_PER_USER_MAX × PEP_ITEMS_PER_NODE_MAX × PEP_ITEM_BYTES_MAX` bytes of items (2 GiB);
/// real nodes keep one small item (the default `max_items` is 1), so the runtime should also
/// bound a user's total if it keeps all nodes in memory.
pub const PEP_NODES_PER_USER_MAX: usize = 64;
/// Items one node keeps, whatever `pubsub#max_items` asks; `"max"` means this (the
/// XEP-0060 registry's `pubsub#max_items` value for "the most the service allows").
/// Each item costs its serialised payload (up to [`PEP_ITEM_BYTES_MAX`]) in memory and storage.
pub const PEP_ITEMS_PER_NODE_MAX: usize = 256;
/// Largest serialised item payload, in bytes. Past it a publish fails with `not-acceptable` +
/// `<payload-too-big/>` (XEP-0060 §7.1.3.4). Large enough for XEP-0084 avatar data.
pub const PEP_ITEM_BYTES_MAX: usize = 128 * 1024;
/// Longest node name, in bytes; a longer one is refused with `not-acceptable`. Node names are
/// namespaces (XEP-0163 §7.2), some with a device id appended (XEP-0384 bundles).
pub const PEP_NODE_NAME_BYTES_MAX: usize = 1024;
/// Longest item id, in bytes; a longer one is refused with `not-acceptable`. XEP-0402 uses room
/// JIDs as item ids, so any JID must fit.
pub const PEP_ITEM_ID_BYTES_MAX: usize = 3 * JID_PART_BYTES_MAX + 2;
/// Roster groups one node's `pubsub#roster_groups_allowed` may list; more is `not-acceptable`.
/// Each contact's groups are compared against them when the access model is `roster`.
pub const PEP_ROSTER_GROUPS_PER_NODE_MAX: usize = 64;
/// Serialised payload bytes one items result (XEP-0060 §6.5) carries at most: older items past
/// it are left out (§6.5.4 allows truncating), so the reply stays one acceptable stanza.
pub const PEP_ITEMS_RESULT_BYTES_MAX: usize = 192 * 1024;
/// Features kept from one disco#info result; a result with more is not cached as caps. The
/// runtime caches one such list per distinct `ver`, so this bounds each cache entry.
pub const CAPS_FEATURES_MAX: usize = 512;

/// Room for the stanza around an item: the envelope, the node name and the item id.
const ITEM_ENVELOPE_BYTES_MAX: usize = 512 + PEP_NODE_NAME_BYTES_MAX + PEP_ITEM_ID_BYTES_MAX;

// One item, in a notification or a result, must fit in a stanza the server itself accepts.
const _: () = assert!(PEP_ITEM_BYTES_MAX <= PEP_ITEMS_RESULT_BYTES_MAX);
const _: () = assert!(PEP_ITEMS_RESULT_BYTES_MAX + ITEM_ENVELOPE_BYTES_MAX <= STANZA_BYTES_MAX);
const _: () = assert!(PEP_ITEMS_PER_NODE_MAX <= u32::MAX as usize);

/// Who may retrieve a node's items and receive its notifications (XEP-0060 §4.5). `authorize`
/// is not supported (XEP-0163 §5 does not require it).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessModel {
    /// Contacts with a presence subscription to the owner (`from` or `both`): the PEP default.
    Presence,
    /// Anyone.
    Open,
    /// Only the owner: PEP never lets anyone else onto the whitelist (XEP-0223 §2).
    Whitelist,
    /// Contacts with a presence subscription who are in one of the node's allowed roster groups.
    Roster,
}

impl AccessModel {
    /// The `pubsub#access_model` value.
    pub fn name(self) -> &'static str {
        match self {
            AccessModel::Presence => "presence",
            AccessModel::Open => "open",
            AccessModel::Whitelist => "whitelist",
            AccessModel::Roster => "roster",
        }
    }

    pub fn from_name(name: &str) -> Option<AccessModel> {
        [AccessModel::Presence, AccessModel::Open, AccessModel::Whitelist, AccessModel::Roster]
            .into_iter()
            .find(|model| model.name() == name)
    }
}

/// When the last published item is sent without being asked for (XEP-0060 §4.3,
/// `pubsub#send_last_published_item`). PEP has no explicit subscriptions, so `on_sub` never
/// fires here; only `on_sub_and_presence` makes the runtime send it when a contact comes online.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendLastPublishedItem {
    Never,
    OnSub,
    /// The XEP-0163 §4.3.4 default: on every newly available resource of an interested contact.
    OnSubAndPresence,
}

impl SendLastPublishedItem {
    /// The `pubsub#send_last_published_item` value.
    pub fn name(self) -> &'static str {
        match self {
            SendLastPublishedItem::Never => "never",
            SendLastPublishedItem::OnSub => "on_sub",
            SendLastPublishedItem::OnSubAndPresence => "on_sub_and_presence",
        }
    }

    pub fn from_name(name: &str) -> Option<SendLastPublishedItem> {
        [SendLastPublishedItem::Never, SendLastPublishedItem::OnSub, SendLastPublishedItem::OnSubAndPresence]
            .into_iter()
            .find(|when| when.name() == name)
    }
}

/// A node's configuration: the XEP-0060 §16.4.3 fields this server honours. Every other field
/// has one fixed value (payloads and notifications always delivered, headline notifications,
/// only the owner publishes).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub access_model: AccessModel,
    /// Items kept, 1 ..= [`PEP_ITEMS_PER_NODE_MAX`]; the oldest go first (XEP-0060 §7.1.2).
    pub max_items: u32,
    /// Whether items outlive a restart: the runtime writes items of a node with `false` to
    /// memory only (XEP-0060 §4.3 transient node, still keeping the last items for delivery).
    pub persist_items: bool,
    pub send_last_published_item: SendLastPublishedItem,
    /// Groups whose members may access a node with the `roster` access model; sorted, unique.
    pub roster_groups_allowed: Vec<String>,
}

impl Default for NodeConfig {
    /// XEP-0163 §5: access model `presence`, the last published item sent on presence; items
    /// persisted, and one of them kept: a PEP node usually holds one current state (a tune,
    /// a mood), and clients that want more ask with `pubsub#max_items`.
    fn default() -> NodeConfig {
        NodeConfig {
            access_model: AccessModel::Presence,
            max_items: 1,
            persist_items: true,
            send_last_published_item: SendLastPublishedItem::OnSubAndPresence,
            roster_groups_allowed: Vec::new(),
        }
    }
}

/// One published item.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PepItem {
    /// The ItemID, unique within its node (XEP-0060 §7.1.1).
    pub id: String,
    /// The payload element as written by [`Element::to_xml`]: it declares its own namespace,
    /// so it can be embedded in any stanza as is.
    pub payload: String,
    /// When it was published, Unix milliseconds (for the XEP-0203 stamp on delayed delivery).
    pub published_ms: u64,
}

/// One node of an account's virtual pubsub service.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The NodeID, by convention the payload namespace (XEP-0163 §7.2).
    pub name: String,
    pub config: NodeConfig,
    /// Oldest first, at most `config.max_items` of them, ids unique.
    pub items: Vec<PepItem>,
}

crate::records::stored_codec!(Node);

impl Node {
    /// An empty node.
    pub fn new(name: &str, config: NodeConfig) -> Node {
        Node { name: name.to_owned(), config, items: Vec::new() }
    }

    /// The item with this id.
    pub fn item(&self, id: &str) -> Option<&PepItem> {
        self.items.iter().find(|item| item.id == id)
    }

    /// The last published item (XEP-0060 §4.3, XEP-0163 §4.3.4).
    pub fn last_item(&self) -> Option<&PepItem> {
        self.items.last()
    }
}

/// A parsed pubsub iq (XEP-0060 §6.5, §7.1, §7.2, §8.1, §8.2, §8.4, §8.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PubsubRequest {
    /// §7.1: publish one item; `item_id` is `None` when the service must generate it.
    /// `options` are the §7.1.5 publish-options fields (FORM_TYPE removed), one pair per value.
    Publish { node: String, item_id: Option<String>, payload: Element, options: Vec<(String, String)> },
    /// §7.2: delete items; `notify` is the request's `notify` attribute (§7.2.2.1).
    Retract { node: String, item_ids: Vec<String>, notify: bool },
    /// §6.5: retrieve items: all, the `max_items` most recent (§6.5.7) or the listed ids (§6.5.8).
    Items { node: String, max_items: Option<usize>, item_ids: Vec<String> },
    /// §8.4: delete the node.
    Delete { node: String },
    /// §8.5: delete all items of the node.
    Purge { node: String },
    /// §8.1: create a node, with the §8.1.3 create-and-configure fields if any.
    Create { node: String, config: Vec<(String, String)> },
    /// §8.2: ask for the configuration form.
    ConfigureGet { node: String },
    /// §8.2.4: submit configuration fields (none when the form was cancelled, §8.2.4 end).
    ConfigureSet { node: String, config: Vec<(String, String)> },
}

impl PubsubRequest {
    /// The node the request changes, if it changes one (reading requests change none).
    pub fn changed_node(&self) -> Option<&str> {
        match self {
            PubsubRequest::Publish { node, .. }
            | PubsubRequest::Retract { node, .. }
            | PubsubRequest::Delete { node }
            | PubsubRequest::Purge { node }
            | PubsubRequest::Create { node, .. }
            | PubsubRequest::ConfigureSet { node, .. } => Some(node),
            PubsubRequest::Items { .. } | PubsubRequest::ConfigureGet { .. } => None,
        }
    }
}

/// A pubsub error: a stanza error condition (RFC 6120 §8.3.3) and the XEP-0060 application
/// condition that goes with it, as listed in each use case's error cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubsubError {
    /// The RFC 6120 condition, e.g. `"bad-request"`.
    pub condition: &'static str,
    /// The `pubsub#errors` child, e.g. `"nodeid-required"`.
    pub app: Option<&'static str>,
    /// The `feature` attribute of an `<unsupported/>` application condition.
    pub feature: Option<&'static str>,
}

impl PubsubError {
    /// A condition with no application condition.
    pub const fn new(condition: &'static str) -> PubsubError {
        PubsubError { condition, app: None, feature: None }
    }

    /// A condition with a `pubsub#errors` application condition.
    pub const fn with_app(condition: &'static str, app: &'static str) -> PubsubError {
        PubsubError { condition, app: Some(app), feature: None }
    }

    /// `feature-not-implemented` + `<unsupported feature='…'/>` (XEP-0060 §7.1.3.2 and others).
    pub const fn unsupported(feature: &'static str) -> PubsubError {
        PubsubError { condition: "feature-not-implemented", app: Some("unsupported"), feature: Some(feature) }
    }

    /// `item-not-found`: the node (§6.5.9.11, §8.4.3.2) or the item (§7.2.3.2) does not exist.
    pub const fn not_found() -> PubsubError {
        PubsubError::new("item-not-found")
    }

    /// `conflict` + `<precondition-not-met/>`: publish-options that the node's configuration
    /// does not satisfy (XEP-0060 §7.1.5).
    pub const fn precondition_not_met() -> PubsubError {
        PubsubError::with_app("conflict", "precondition-not-met")
    }

    /// `conflict`: the node to create already exists (XEP-0060 §8.1.1).
    pub const fn node_exists() -> PubsubError {
        PubsubError::new("conflict")
    }

    /// `not-allowed` + `<max-nodes-exceeded/>`: the account already has
    /// [`PEP_NODES_PER_USER_MAX`] nodes.
    pub const fn max_nodes_exceeded() -> PubsubError {
        PubsubError::with_app("not-allowed", "max-nodes-exceeded")
    }
}

/// Parses the `<pubsub/>` payload of an iq of type `stanza_type` (`get` or `set`), in either the
/// [`PUBSUB_NAMESPACE`] or the [`PUBSUB_OWNER_NAMESPACE`]. Errors, as XEP-0060 gives them:
/// - no `node` (§7.1, §7.2.3.3, §6.5, §8.2.3.3, …): `bad-request` + `<nodeid-required/>`, except
///   for create, where instant nodes are unsupported: `not-acceptable` + `<nodeid-required/>`
///   (§8.1.1);
/// - publish without an item: `bad-request` + `<item-required/>` (§7.1.3.6); an item without a
///   payload: `bad-request` + `<payload-required/>` (§7.1.3.6); several items (batch publishing
///   was removed in 1.13) or payloads, text beside the payload or a payload in no namespace:
///   `bad-request` + `<invalid-payload/>` (§7.1.3.5); a payload over [`PEP_ITEM_BYTES_MAX`]:
///   `not-acceptable` + `<payload-too-big/>` (§7.1.3.4);
/// - retract without an item, or with an item without id: `bad-request` + `<item-required/>`
///   (§7.2.3.4);
/// - a form that is not of type `submit` (or `cancel` for configure), a field without `var` or
///   a FORM_TYPE other than the expected one: `bad-request`; a `<configure/>` with a `node`
///   next to `<create/>`: `bad-request` (§8.1.3);
/// - subscriptions, affiliations and the other use cases PEP does without:
///   `feature-not-implemented` + `<unsupported feature='…'/>`; anything else unknown:
///   `feature-not-implemented`; a known request with the wrong iq type: `bad-request`;
/// - a node name, item id or list past its limit: `not-acceptable`.
pub fn parse_request(stanza_type: &str, payload: &Element) -> Result<PubsubRequest, PubsubError> {
    let owner = match payload.namespace.as_str() {
        PUBSUB_NAMESPACE => false,
        PUBSUB_OWNER_NAMESPACE => true,
        _ => return Err(bad_request()),
    };
    if payload.name != "pubsub" {
        return Err(bad_request());
    }
    // <publish-options/> and a <configure/> beside <create/> qualify the request; the first
    // other child says what it is.
    let action = payload
        .elements()
        .filter(|child| child.namespace == payload.namespace)
        .find(|child| owner || !matches!(child.name.as_str(), "publish-options" | "configure"))
        .ok_or_else(bad_request)?;
    match (owner, stanza_type, action.name.as_str()) {
        (false, "set", "publish") => parse_publish(payload, action),
        (false, "set", "retract") => parse_retract(action),
        (false, "get", "items") => parse_items(action),
        (false, "set", "create") => parse_create(payload, action),
        (true, "get", "configure") => Ok(PubsubRequest::ConfigureGet { node: node_attribute(action)? }),
        (true, "set", "configure") => parse_configure_set(action),
        (true, "set", "delete") => Ok(PubsubRequest::Delete { node: node_attribute(action)? }),
        (true, "set", "purge") => Ok(PubsubRequest::Purge { node: node_attribute(action)? }),
        (false, _, "publish" | "retract" | "items" | "create") | (true, _, "configure" | "delete" | "purge") => Err(bad_request()),
        (_, _, name) => Err(match unsupported_feature(owner, name) {
            Some(feature) => PubsubError::unsupported(feature),
            None => PubsubError::new("feature-not-implemented"),
        }),
    }
}

/// Applies node configuration fields (XEP-0060 §8.1.3 create-and-configure, §8.2.4 form
/// submission) to `config`, all or nothing. Honoured fields: `pubsub#access_model`,
/// `pubsub#max_items` (a number, clamped to [`PEP_ITEMS_PER_NODE_MAX`], or `"max"`),
/// `pubsub#persist_items`, `pubsub#send_last_published_item` and
/// `pubsub#roster_groups_allowed`. Fields this server keeps fixed are accepted only with their
/// fixed value. Errors: `not-acceptable` + `<unsupported-access-model/>` for an access model
/// other than the four PEP ones (§8.1.2), plain `not-acceptable` for any other value that cannot
/// be applied (§8.2.5.2). Other fields are ignored: XEP-0060 requires refusing unknown fields
/// only for publish-options (§7.1.5, see [`options_match`]), and clients routinely submit
/// cosmetic ones such as `pubsub#title`.
pub fn configure(config: &mut NodeConfig, fields: &[(String, String)]) -> Result<(), PubsubError> {
    let mut updated = config.clone();
    let mut groups = None;
    for (var, value) in fields {
        apply_field(&mut updated, &mut groups, var, value)?;
    }
    finish_groups(&mut updated, groups);
    *config = updated;
    Ok(())
}

/// Whether publish-options `fields` hold as preconditions on an existing node (XEP-0060 §7.1.5
/// steps 1 and 2): every field must be one this server knows and applying it must leave `config`
/// as it is. `"max"` and numbers above [`PEP_ITEMS_PER_NODE_MAX`] therefore match a node
/// keeping that many items, which is what XEP-0402 clients ask for. An unknown field never
/// matches (§7.1.5: a service "MUST reject publications with unknown fields"), so the caller
/// answers [`PubsubError::precondition_not_met`] whenever this is false.
pub fn options_match(config: &NodeConfig, fields: &[(String, String)]) -> bool {
    let mut candidate = config.clone();
    let mut groups = None;
    for (var, value) in fields {
        if !matches!(apply_field(&mut candidate, &mut groups, var, value), Ok(true)) {
            return false;
        }
    }
    finish_groups(&mut candidate, groups);
    candidate == *config
}

/// The configuration of a node auto-created by a publish with `fields` as publish-options
/// (XEP-0060 §7.1.5 step 3, XEP-0163 §3, XEP-0223 §3): the default configuration except where the
/// options say otherwise. An unknown field or a value that cannot be applied is a precondition
/// that cannot hold: [`PubsubError::precondition_not_met`].
pub fn publish_options_config(fields: &[(String, String)]) -> Result<NodeConfig, PubsubError> {
    let mut config = NodeConfig::default();
    let mut groups = None;
    for (var, value) in fields {
        if !matches!(apply_field(&mut config, &mut groups, var, value), Ok(true)) {
            return Err(PubsubError::precondition_not_met());
        }
    }
    finish_groups(&mut config, groups);
    Ok(config)
}

/// Applies a publish to `node`: an item with the same id is replaced (XEP-0060 §7.1.3: "re-
/// publication is equivalent to modification") and becomes the newest; then the oldest items
/// beyond `max_items` are dropped (§7.1.2, first in first out). `item_id` is the request's id or
/// one the caller generated. Returns the stored item. The payload was checked against
/// [`PEP_ITEM_BYTES_MAX`] by [`parse_request`].
pub fn publish(node: &mut Node, item_id: String, payload: &Element, now_ms: u64) -> PepItem {
    let item = PepItem { id: item_id, payload: payload.to_xml(), published_ms: now_ms };
    node.items.retain(|existing| existing.id != item.id);
    node.items.push(item.clone());
    trim(node);
    item
}

/// Drops the oldest items beyond the node's `max_items` (after a publish, or after a
/// configuration change lowered it) and returns them, oldest first.
pub fn trim(node: &mut Node) -> Vec<PepItem> {
    let keep = usize::try_from(node.config.max_items).unwrap_or(PEP_ITEMS_PER_NODE_MAX).clamp(1, PEP_ITEMS_PER_NODE_MAX);
    let excess = node.items.len().saturating_sub(keep);
    node.items.drain(..excess).collect()
}

/// Deletes the items with these ids (XEP-0060 §7.2), all or nothing: if one does not exist the
/// node is left unchanged and the error is `item-not-found` (§7.2.3.2).
pub fn retract(node: &mut Node, item_ids: &[String]) -> Result<(), PubsubError> {
    if !item_ids.iter().all(|id| node.item(id).is_some()) {
        return Err(PubsubError::not_found());
    }
    node.items.retain(|item| !item_ids.contains(&item.id));
    Ok(())
}

/// The items an items request returns (XEP-0060 §6.5), oldest first: the listed ids that exist
/// (§6.5.8; missing ones are skipped, §6.5.9.12), or else the `max_items` most recent (§6.5.7),
/// or else all. Older items beyond [`PEP_ITEMS_RESULT_BYTES_MAX`] of payload are left out
/// (§6.5.4); the newest selected item is always included.
pub fn select_items<'a>(node: &'a Node, max_items: Option<usize>, item_ids: &[String]) -> Vec<&'a PepItem> {
    let mut selected: Vec<&PepItem> = if item_ids.is_empty() {
        let wanted = max_items.unwrap_or(usize::MAX);
        node.items.iter().rev().take(wanted).collect()
    } else {
        node.items.iter().rev().filter(|item| item_ids.contains(&item.id)).collect()
    };
    // Newest first here, so the budget keeps the most recent items.
    let mut bytes = 0;
    let mut kept = 0;
    for item in &selected {
        bytes += item.payload.len();
        if kept > 0 && bytes > PEP_ITEMS_RESULT_BYTES_MAX {
            break;
        }
        kept += 1;
    }
    selected.truncate(kept);
    selected.reverse();
    selected
}

/// How the requester relates to the node's owner, for [`check_access`].
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    /// The requester is the account itself (any of its resources).
    pub owner: bool,
    /// The requester's bare JID has a presence subscription to the owner (`from` or `both` in
    /// the owner's roster, RFC 6121 §2.1.2.5).
    pub presence_subscribed: bool,
    /// The requester's groups in the owner's roster.
    pub groups: &'a [String],
}

/// Whether the requester may retrieve the node's items and receive its notifications
/// (XEP-0060 §4.5, §6.5.1; XEP-0163 §4 applies the same model to notifications). The owner always may.
/// Errors (§6.5.9): `presence` without a subscription: `not-authorized` +
/// `<presence-subscription-required/>`; `roster` outside the allowed groups: `not-authorized` +
/// `<not-in-roster-group/>`; `whitelist`: `not-allowed` + `<closed-node/>`.
pub fn check_access(config: &NodeConfig, requester: &Requester<'_>) -> Result<(), PubsubError> {
    if requester.owner {
        return Ok(());
    }
    match config.access_model {
        AccessModel::Open => Ok(()),
        AccessModel::Presence if requester.presence_subscribed => Ok(()),
        AccessModel::Presence => Err(PubsubError::with_app("not-authorized", "presence-subscription-required")),
        AccessModel::Roster
            if requester.presence_subscribed && requester.groups.iter().any(|group| config.roster_groups_allowed.contains(group)) =>
        {
            Ok(())
        }
        AccessModel::Roster => Err(PubsubError::with_app("not-authorized", "not-in-roster-group")),
        AccessModel::Whitelist => Err(PubsubError::with_app("not-allowed", "closed-node")),
    }
}

/// An event notification with payloads (XEP-0060 §7.1.2.1), from the owner's bare JID
/// (XEP-0163 §4.3.1) as a headline: `<message from to type='headline'><event
/// xmlns='…#event'><items node><item id>payload</item>…</items></event></message>`.
pub fn event_message(owner_bare: &str, to: &str, node: &str, items: &[PepItem]) -> Vec<u8> {
    let mut out = event_head(owner_bare, to);
    push_items(&mut out, node, items.iter());
    out.push_str("</event></message>");
    out.into_bytes()
}

/// The last published item sent when an interested resource comes online (XEP-0163 §4.3.4): an
/// event notification with an XEP-0203 `<delay/>` stamped with the publication time.
pub fn last_item_event(owner_bare: &str, to: &str, node: &str, item: &PepItem) -> Vec<u8> {
    let mut out = event_head(owner_bare, to);
    push_items(&mut out, node, std::iter::once(item));
    out.push_str("</event>");
    out.push_str(&delay_element(owner_bare, item.published_ms, None).to_xml());
    out.push_str("</message>");
    out.into_bytes()
}

/// An item deletion notification (XEP-0060 §7.2.2.1): `<items node><retract id/>…</items>`.
pub fn retract_event(owner_bare: &str, to: &str, node: &str, ids: &[String]) -> Vec<u8> {
    let mut out = event_head(owner_bare, to);
    out.push_str("<items");
    push_attribute(&mut out, "node", node);
    out.push('>');
    for id in ids {
        out.push_str("<retract");
        push_attribute(&mut out, "id", id);
        out.push_str("/>");
    }
    out.push_str("</items></event></message>");
    out.into_bytes()
}

/// A purge notification (XEP-0060 §8.5.2): one empty `<purge node/>`, not one retraction per item.
pub fn purge_event(owner_bare: &str, to: &str, node: &str) -> Vec<u8> {
    node_event(owner_bare, to, "purge", node)
}

/// A node deletion notification (XEP-0060 §8.4.2), without a redirect.
pub fn delete_event(owner_bare: &str, to: &str, node: &str) -> Vec<u8> {
    node_event(owner_bare, to, "delete", node)
}

/// The result of an items request (XEP-0060 §6.5.3); an empty list gives an empty `<items/>`
/// (§6.5.9.12).
pub fn items_result(id: &str, from: Option<&str>, to: &str, node: &str, items: &[&PepItem]) -> Vec<u8> {
    let mut out = iq_head("result", id, from, to);
    out.push_str("<pubsub");
    push_attribute(&mut out, "xmlns", PUBSUB_NAMESPACE);
    out.push('>');
    push_items(&mut out, node, items.iter().copied());
    out.push_str("</pubsub></iq>");
    out.into_bytes()
}

/// The result of a publish (XEP-0060 §7.1.2), naming the item id (which the publisher needs
/// when the service generated it).
pub fn publish_result(id: &str, to: &str, node: &str, item_id: &str) -> Vec<u8> {
    let publish = Element::new("publish", PUBSUB_NAMESPACE)
        .with_attribute("node", node)
        .with_child(Element::new("item", PUBSUB_NAMESPACE).with_attribute("id", item_id));
    iq_result(id, None, to, Some(&Element::new("pubsub", PUBSUB_NAMESPACE).with_child(publish)))
}

/// An iq error carrying the stanza condition and, when there is one, the `pubsub#errors`
/// application condition (RFC 6120 §8.3.2, XEP-0060 error cases). The error type follows
/// [`error_type`].
pub fn error_iq(id: &str, from: Option<&str>, to: &str, error: &PubsubError) -> Vec<u8> {
    let mut out = iq_head("error", id, from, to);
    out.push_str("<error");
    push_attribute(&mut out, "type", error_type(error.condition));
    out.push_str("><");
    out.push_str(error.condition);
    push_attribute(&mut out, "xmlns", STANZAS_NAMESPACE);
    out.push_str("/>");
    if let Some(app) = error.app {
        out.push('<');
        out.push_str(app);
        push_attribute(&mut out, "xmlns", PUBSUB_ERRORS_NAMESPACE);
        if let Some(feature) = error.feature {
            push_attribute(&mut out, "feature", feature);
        }
        out.push_str("/>");
    }
    out.push_str("</error></iq>");
    out.into_bytes()
}

/// The configuration form for the owner (XEP-0060 §8.2.2) with the node's current values: the
/// fields [`configure`] honours.
pub fn config_form_result(id: &str, to: &str, node: &str, config: &NodeConfig) -> Vec<u8> {
    let value = |text: &str| Element::new("value", DATA_FORMS_NAMESPACE).with_text(text);
    let field = |var: &str, kind: &str, label: &str| {
        Element::new("field", DATA_FORMS_NAMESPACE).with_attribute("var", var).with_attribute("type", kind).with_attribute("label", label)
    };
    let options = |mut field: Element, names: &[&str]| {
        for name in names {
            field = field.with_child(Element::new("option", DATA_FORMS_NAMESPACE).with_child(value(name)));
        }
        field
    };
    let mut groups = field("pubsub#roster_groups_allowed", "list-multi", "Roster groups allowed to subscribe");
    for group in &config.roster_groups_allowed {
        groups = groups.with_child(value(group));
    }
    let form = Element::new("x", DATA_FORMS_NAMESPACE)
        .with_attribute("type", "form")
        .with_child(
            Element::new("field", DATA_FORMS_NAMESPACE)
                .with_attribute("var", "FORM_TYPE")
                .with_attribute("type", "hidden")
                .with_child(value(NODE_CONFIG_FORM_TYPE)),
        )
        .with_child(
            options(
                field("pubsub#access_model", "list-single", "Specify the subscriber model"),
                &["open", "presence", "roster", "whitelist"],
            )
            .with_child(value(config.access_model.name())),
        )
        .with_child(groups)
        .with_child(field("pubsub#max_items", "text-single", "Max # of items to persist").with_child(value(&config.max_items.to_string())))
        .with_child(field("pubsub#persist_items", "boolean", "Persist items to storage").with_child(value(if config.persist_items {
            "true"
        } else {
            "false"
        })))
        .with_child(
            options(
                field("pubsub#send_last_published_item", "list-single", "When to send the last published item"),
                &["never", "on_sub", "on_sub_and_presence"],
            )
            .with_child(value(config.send_last_published_item.name())),
        );
    let configure = Element::new("configure", PUBSUB_OWNER_NAMESPACE).with_attribute("node", node).with_child(form);
    iq_result(id, None, to, Some(&Element::new("pubsub", PUBSUB_OWNER_NAMESPACE).with_child(configure)))
}

/// An XEP-0115 caps announcement: the `<c/>` of a presence.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caps {
    /// The hash function (§5.1, IANA name); empty for a legacy (pre-1.4) announcement, which
    /// cannot be verified.
    pub hash: String,
    /// The software's URI.
    pub node: String,
    /// The verification string: base64 of the hash (§5.1).
    pub ver: String,
}

/// The caps in a presence stanza (XEP-0115 §4): its `<c xmlns='http://jabber.org/protocol/caps'/>`
/// with a non-empty `node` and `ver`.
pub fn parse_caps(presence: &Element) -> Option<Caps> {
    let c = presence.child("c", CAPS_NAMESPACE)?;
    let node = c.attribute("node").filter(|node| !node.is_empty())?;
    let ver = c.attribute("ver").filter(|ver| !ver.is_empty())?;
    Some(Caps { hash: c.attribute("hash").unwrap_or("").to_owned(), node: node.to_owned(), ver: ver.to_owned() })
}

/// The disco#info request that resolves caps (XEP-0115 §6.2): sent to the announcing full JID,
/// for the node `node#ver`.
pub fn disco_request(id: &str, from: &str, to: &str, caps: &Caps) -> Vec<u8> {
    let mut out = String::with_capacity(256);
    out.push_str("<iq type='get'");
    push_attribute(&mut out, "id", id);
    push_attribute(&mut out, "from", from);
    push_attribute(&mut out, "to", to);
    out.push_str("><query");
    push_attribute(&mut out, "xmlns", DISCO_INFO_NAMESPACE);
    push_attribute(&mut out, "node", &format!("{}#{}", caps.node, caps.ver));
    out.push_str("/></iq>");
    out.into_bytes()
}

/// Verifies a disco#info `<query/>` against the caps it answers (XEP-0115 §5.4) and returns
/// its features, sorted, when it holds: the hash must be `sha-1` (the only one §5.4 requires;
/// results for other hashes cannot be checked and must not be cached globally, see
/// [`disco_features`]); the response must be well-formed (no duplicate identity, feature or
/// FORM_TYPE, §5.4 steps 3.3–3.5); a `node` on the query, if present, must be `node#ver`; and
/// the §5.1 verification string must hash to `ver`. `None` otherwise, or when it lists more than
/// [`CAPS_FEATURES_MAX`] features.
pub fn verify(caps: &Caps, query: &Element) -> Option<Vec<String>> {
    if caps.hash != CAPS_HASH_SHA1 || query.name != "query" || query.namespace != DISCO_INFO_NAMESPACE {
        return None;
    }
    if let Some(node) = query.attribute("node") {
        if node.strip_prefix(caps.node.as_str()).and_then(|rest| rest.strip_prefix('#')) != Some(caps.ver.as_str()) {
            return None;
        }
    }
    let (string, features) = verification_string(query)?;
    let ver = BASE64.encode(Sha1::digest(string.as_bytes()));
    (ver == caps.ver && features.len() <= CAPS_FEATURES_MAX).then_some(features)
}

/// The XEP-0115 §5.1 verification string of a disco#info `<query/>` (steps 1–7), or `None`
/// when §5.4 calls the response ill-formed: two identities with the same
/// category/type/lang/name, two equal features, a feature without `var`, two forms with the same
/// FORM_TYPE, or a FORM_TYPE with differing values. A form whose FORM_TYPE is missing or not
/// `hidden` is ignored (§5.4 step 3.6). Also returns the sorted features.
pub fn verification_string(query: &Element) -> Option<(String, Vec<String>)> {
    let mut identities = Vec::new();
    let mut features = Vec::new();
    let mut forms = Vec::new();
    for child in query.elements() {
        match (child.name.as_str(), child.namespace.as_str()) {
            ("identity", DISCO_INFO_NAMESPACE) => identities.push((
                child.attribute("category").unwrap_or(""),
                child.attribute("type").unwrap_or(""),
                child.attribute("xml:lang").unwrap_or(""),
                child.attribute("name").unwrap_or(""),
            )),
            ("feature", DISCO_INFO_NAMESPACE) => features.push(child.attribute("var")?.to_owned()),
            ("x", DATA_FORMS_NAMESPACE) => {
                if let Some(form) = caps_form(child)? {
                    forms.push(form);
                }
            }
            _ => {}
        }
    }
    // All sorting is by bytes ("i;octet", §5.1): the order of str comparison.
    identities.sort_unstable();
    features.sort_unstable();
    forms.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let form_types: Vec<&String> = forms.iter().map(|(form_type, _)| form_type).collect();
    if has_duplicates(&identities) || has_duplicates(&features) || has_duplicates(&form_types) {
        return None;
    }
    let mut string = String::new();
    for (category, kind, lang, name) in &identities {
        string.push_str(&format!("{category}/{kind}/{lang}/{name}<"));
    }
    for feature in &features {
        string.push_str(feature);
        string.push('<');
    }
    for (form_type, fields) in &forms {
        string.push_str(form_type);
        string.push('<');
        for (var, values) in fields {
            string.push_str(var);
            string.push('<');
            for value in values {
                string.push_str(value);
                string.push('<');
            }
        }
    }
    Some((string, features))
}

/// The features of a disco#info `<query/>` without verification, sorted and unique, at most
/// [`CAPS_FEATURES_MAX`]: for caps that cannot be verified (another hash, legacy caps), which
/// XEP-0115 §5.4 allows using for that one JID but not caching by `ver`.
pub fn disco_features(query: &Element) -> Vec<String> {
    let mut features: Vec<String> = query
        .elements()
        .filter(|child| child.name == "feature" && child.namespace == DISCO_INFO_NAMESPACE)
        .filter_map(|child| child.attribute("var"))
        .map(str::to_owned)
        .collect();
    features.sort_unstable();
    features.dedup();
    features.truncate(CAPS_FEATURES_MAX);
    features
}

/// The nodes a client wants notifications for (XEP-0163 §4.2): its features ending in
/// `+notify`, with the suffix removed, unique.
pub fn notify_nodes(features: &[String]) -> Vec<String> {
    let mut nodes: Vec<String> =
        features.iter().filter_map(|feature| feature.strip_suffix("+notify")).filter(|node| !node.is_empty()).map(str::to_owned).collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes
}

/// XEP-0402 "Compatibility", legacy to native: the bookmarks items for a XEP-0048
/// `<storage xmlns='storage:bookmarks'/>`, as `(item id = room JID, <conference
/// xmlns='urn:xmpp:bookmarks:1'/>)`. `name`, `autojoin` (as `true` when set), `<nick/>` and
/// `<password/>` carry over; child elements in other namespaces go into `<extensions/>`.
/// Conferences without a valid bare `jid` and repeats of a JID are skipped, as are XEP-0048 URL
/// bookmarks (XEP-0402 §1 drops them); at most [`PEP_ITEMS_PER_NODE_MAX`] come back.
pub fn bookmarks_from_legacy(storage: &Element) -> Vec<(String, Element)> {
    let mut bookmarks: Vec<(String, Element)> = Vec::new();
    if storage.name != "storage" || storage.namespace != LEGACY_BOOKMARKS_NAMESPACE {
        return bookmarks;
    }
    let conferences = storage.elements().filter(|child| child.name == "conference" && child.namespace == LEGACY_BOOKMARKS_NAMESPACE);
    for legacy in conferences {
        if bookmarks.len() == PEP_ITEMS_PER_NODE_MAX {
            break;
        }
        let Some(room) = legacy.attribute("jid").and_then(|jid| Jid::parse(jid).ok()) else {
            continue;
        };
        if room.resource().is_some() || bookmarks.iter().any(|(id, _)| id == room.as_str()) {
            continue;
        }
        let mut conference = Element::new("conference", BOOKMARKS2_NAMESPACE);
        if let Some(name) = legacy.attribute("name") {
            conference.set_attribute("name", name);
        }
        if legacy.attribute("autojoin").is_some_and(is_true) {
            conference.set_attribute("autojoin", "true");
        }
        let mut extensions = Element::new("extensions", BOOKMARKS2_NAMESPACE);
        for child in legacy.elements() {
            match (child.name.as_str(), child.namespace.as_str()) {
                (name @ ("nick" | "password"), LEGACY_BOOKMARKS_NAMESPACE) => {
                    let copy = Element::new(name, BOOKMARKS2_NAMESPACE).with_text(&child.text());
                    conference = conference.with_child(copy);
                }
                (_, LEGACY_BOOKMARKS_NAMESPACE) => {}
                _ => extensions = extensions.with_child(child.clone()),
            }
        }
        if !extensions.children.is_empty() {
            conference = conference.with_child(extensions);
        }
        bookmarks.push((room.as_str().to_owned(), conference));
    }
    bookmarks
}

/// XEP-0402 "Compatibility", native to legacy: the XEP-0048 `<storage
/// xmlns='storage:bookmarks'/>` that the bookmarks node's items amount to, "casting them into
/// the 'storage:bookmarks' namespace and setting the jid attribute to the item id". The
/// `<extensions/>` children become children of the legacy `<conference/>`. Items whose payload
/// is not a bookmarks `<conference/>` are skipped.
pub fn legacy_from_bookmarks(items: &[PepItem]) -> Element {
    let mut storage = Element::new("storage", LEGACY_BOOKMARKS_NAMESPACE);
    for item in items {
        let Ok(bookmark) = parse_element(item.payload.as_bytes()) else {
            continue;
        };
        if bookmark.name != "conference" || bookmark.namespace != BOOKMARKS2_NAMESPACE {
            continue;
        }
        let mut conference = Element::new("conference", LEGACY_BOOKMARKS_NAMESPACE);
        if let Some(name) = bookmark.attribute("name") {
            conference.set_attribute("name", name);
        }
        if bookmark.attribute("autojoin").is_some_and(is_true) {
            conference.set_attribute("autojoin", "true");
        }
        conference.set_attribute("jid", &item.id);
        for name in ["nick", "password"] {
            if let Some(child) = bookmark.child(name, BOOKMARKS2_NAMESPACE) {
                let copy = Element::new(name, LEGACY_BOOKMARKS_NAMESPACE).with_text(&child.text());
                conference = conference.with_child(copy);
            }
        }
        if let Some(extensions) = bookmark.child("extensions", BOOKMARKS2_NAMESPACE) {
            for extension in extensions.elements() {
                conference = conference.with_child(extension.clone());
            }
        }
        storage = storage.with_child(conference);
    }
    storage
}

fn bad_request() -> PubsubError {
    PubsubError::new("bad-request")
}

/// XEP-0060 §7.1: the `<publish/>` with its single item and payload, and the publish-options.
fn parse_publish(pubsub: &Element, publish: &Element) -> Result<PubsubRequest, PubsubError> {
    let node = node_attribute(publish)?;
    let mut items = publish.elements().filter(|child| child.name == "item" && child.namespace == PUBSUB_NAMESPACE);
    let item = items.next().ok_or(PubsubError::with_app("bad-request", "item-required"))?;
    if items.next().is_some() {
        return Err(PubsubError::with_app("bad-request", "invalid-payload"));
    }
    let item_id = item_id_attribute(item)?;
    let mut payloads = item.elements();
    let payload = payloads.next().ok_or(PubsubError::with_app("bad-request", "payload-required"))?;
    // A payload in no namespace would take the namespace of whatever <item/> it is copied into.
    if payloads.next().is_some() || !item.text().trim().is_empty() || payload.namespace.is_empty() {
        return Err(PubsubError::with_app("bad-request", "invalid-payload"));
    }
    if payload.to_xml().len() > PEP_ITEM_BYTES_MAX {
        return Err(PubsubError::with_app("not-acceptable", "payload-too-big"));
    }
    let options = match pubsub.child("publish-options", PUBSUB_NAMESPACE) {
        None => Vec::new(),
        Some(options) => match options.child("x", DATA_FORMS_NAMESPACE) {
            Some(form) => form_fields(form, PUBLISH_OPTIONS_FORM_TYPE)?,
            None if options.elements().next().is_none() => Vec::new(),
            None => return Err(bad_request()),
        },
    };
    Ok(PubsubRequest::Publish { node, item_id, payload: payload.clone(), options })
}

/// XEP-0060 §7.2: `<retract node notify?><item id/>…</retract>`.
fn parse_retract(retract: &Element) -> Result<PubsubRequest, PubsubError> {
    let node = node_attribute(retract)?;
    let notify = match retract.attribute("notify") {
        None => false,
        Some(value) => parse_boolean(value).ok_or_else(bad_request)?,
    };
    let item_ids = item_ids(retract)?;
    if item_ids.is_empty() {
        return Err(PubsubError::with_app("bad-request", "item-required"));
    }
    Ok(PubsubRequest::Retract { node, item_ids, notify })
}

/// XEP-0060 §6.5: `<items node max_items?><item id/>*</items>`.
fn parse_items(items: &Element) -> Result<PubsubRequest, PubsubError> {
    let node = node_attribute(items)?;
    let max_items = match items.attribute("max_items") {
        None => None,
        Some(value) => Some(value.trim().parse::<usize>().ok().filter(|max| *max > 0).ok_or_else(bad_request)?),
    };
    Ok(PubsubRequest::Items { node, max_items, item_ids: item_ids(items)? })
}

/// XEP-0060 §8.1: `<create node/>` and an optional `<configure/>` without a node (§8.1.3).
fn parse_create(pubsub: &Element, create: &Element) -> Result<PubsubRequest, PubsubError> {
    if create.attribute("node").is_none_or(str::is_empty) {
        return Err(PubsubError::with_app("not-acceptable", "nodeid-required"));
    }
    let node = node_attribute(create)?;
    let config = match pubsub.child("configure", PUBSUB_NAMESPACE) {
        None => Vec::new(),
        Some(configure) if configure.attribute("node").is_some() => return Err(bad_request()),
        Some(configure) => match configure.child("x", DATA_FORMS_NAMESPACE) {
            Some(form) => form_fields(form, NODE_CONFIG_FORM_TYPE)?,
            None => Vec::new(),
        },
    };
    Ok(PubsubRequest::Create { node, config })
}

/// XEP-0060 §8.2.4: the submitted (or cancelled) configuration form.
fn parse_configure_set(configure: &Element) -> Result<PubsubRequest, PubsubError> {
    let node = node_attribute(configure)?;
    let form = configure.child("x", DATA_FORMS_NAMESPACE).ok_or_else(bad_request)?;
    let config = match form.attribute("type") {
        // §8.2.4: on cancel "the existing configuration MUST be applied", i.e. nothing changes.
        Some("cancel") => Vec::new(),
        _ => form_fields(form, NODE_CONFIG_FORM_TYPE)?,
    };
    Ok(PubsubRequest::ConfigureSet { node, config })
}

/// The `node` attribute: required (`bad-request` + `<nodeid-required/>`) and bounded.
fn node_attribute(element: &Element) -> Result<String, PubsubError> {
    let node = element.attribute("node").filter(|node| !node.is_empty()).ok_or(PubsubError::with_app("bad-request", "nodeid-required"))?;
    if node.len() > PEP_NODE_NAME_BYTES_MAX {
        return Err(PubsubError::new("not-acceptable"));
    }
    Ok(node.to_owned())
}

/// An item's optional `id` (empty counts as absent), bounded.
fn item_id_attribute(item: &Element) -> Result<Option<String>, PubsubError> {
    match item.attribute("id").filter(|id| !id.is_empty()) {
        Some(id) if id.len() > PEP_ITEM_ID_BYTES_MAX => Err(PubsubError::new("not-acceptable")),
        id => Ok(id.map(str::to_owned)),
    }
}

/// The ids of the `<item/>` children, each required (`bad-request` + `<item-required/>`,
/// XEP-0060 §7.2.3.4), at most [`PEP_ITEMS_PER_NODE_MAX`] (no node holds more).
fn item_ids(parent: &Element) -> Result<Vec<String>, PubsubError> {
    let mut ids = Vec::new();
    for item in parent.elements().filter(|child| child.name == "item" && child.namespace == PUBSUB_NAMESPACE) {
        let id = item_id_attribute(item)?.ok_or(PubsubError::with_app("bad-request", "item-required"))?;
        if ids.len() == PEP_ITEMS_PER_NODE_MAX {
            return Err(PubsubError::new("not-acceptable"));
        }
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// The fields of a submitted data form (XEP-0004 §3.1), one `(var, value)` pair per `<value/>`
/// and `(var, "")` for a field without one. A FORM_TYPE, if given, must be `form_type`
/// (XEP-0068); it is not returned.
fn form_fields(form: &Element, form_type: &str) -> Result<Vec<(String, String)>, PubsubError> {
    if form.attribute("type") != Some("submit") {
        return Err(bad_request());
    }
    let mut fields = Vec::new();
    for field in form.elements().filter(|child| child.name == "field" && child.namespace == DATA_FORMS_NAMESPACE) {
        let var = field.attribute("var").ok_or_else(bad_request)?;
        let values: Vec<String> =
            field.elements().filter(|value| value.name == "value" && value.namespace == DATA_FORMS_NAMESPACE).map(Element::text).collect();
        if var == "FORM_TYPE" {
            if values.len() != 1 || values[0].trim() != form_type {
                return Err(bad_request());
            }
            continue;
        }
        if values.is_empty() {
            fields.push((var.to_owned(), String::new()));
        }
        fields.extend(values.into_iter().map(|value| (var.to_owned(), value)));
    }
    Ok(fields)
}

/// Node configuration fields this server does not let change, with the one value it supports:
/// payloads and notifications are always delivered as headlines, only the owner publishes, and
/// nothing is purged when the owner goes offline (XEP-0163 §5 defaults).
const FIXED_FIELDS: &[(&str, FixedValue)] = &[
    ("pubsub#deliver_payloads", FixedValue::Boolean(true)),
    ("pubsub#deliver_notifications", FixedValue::Boolean(true)),
    ("pubsub#purge_offline", FixedValue::Boolean(false)),
    ("pubsub#notification_type", FixedValue::Text("headline")),
    ("pubsub#publish_model", FixedValue::Text("publishers")),
    ("pubsub#node_type", FixedValue::Text("leaf")),
];

#[derive(Clone, Copy)]
enum FixedValue {
    Boolean(bool),
    Text(&'static str),
}

/// Applies one configuration field. `Ok(true)` when the field is known (and applied),
/// `Ok(false)` when it is not one this server knows; `not-acceptable` for a value it cannot
/// apply. Roster groups accumulate in `groups`, applied by [`finish_groups`].
fn apply_field(config: &mut NodeConfig, groups: &mut Option<Vec<String>>, var: &str, value: &str) -> Result<bool, PubsubError> {
    let not_acceptable = PubsubError::new("not-acceptable");
    let trimmed = value.trim();
    match var {
        "pubsub#access_model" => {
            config.access_model =
                AccessModel::from_name(trimmed).ok_or(PubsubError::with_app("not-acceptable", "unsupported-access-model"))?;
        }
        "pubsub#max_items" => {
            config.max_items = if trimmed == "max" {
                PEP_ITEMS_PER_NODE_MAX as u32
            } else {
                let requested: u64 = trimmed.parse().map_err(|_| not_acceptable)?;
                if requested == 0 {
                    return Err(not_acceptable);
                }
                // The constant fits in u32 (asserted above), so the minimum does too.
                requested.min(PEP_ITEMS_PER_NODE_MAX as u64) as u32
            };
        }
        "pubsub#persist_items" => config.persist_items = parse_boolean(trimmed).ok_or(not_acceptable)?,
        "pubsub#send_last_published_item" => {
            config.send_last_published_item = SendLastPublishedItem::from_name(trimmed).ok_or(not_acceptable)?;
        }
        "pubsub#roster_groups_allowed" => {
            let list = groups.get_or_insert_with(Vec::new);
            if !value.is_empty() {
                if list.len() == PEP_ROSTER_GROUPS_PER_NODE_MAX {
                    return Err(not_acceptable);
                }
                list.push(value.to_owned());
            }
        }
        _ => {
            let Some((_, fixed)) = FIXED_FIELDS.iter().find(|(name, _)| *name == var) else {
                return Ok(false);
            };
            let holds = match fixed {
                FixedValue::Boolean(expected) => parse_boolean(trimmed) == Some(*expected),
                FixedValue::Text(expected) => trimmed == *expected,
            };
            if !holds {
                return Err(not_acceptable);
            }
        }
    }
    Ok(true)
}

/// Stores the roster groups a form listed, sorted and unique so that equal lists compare equal.
fn finish_groups(config: &mut NodeConfig, groups: Option<Vec<String>>) {
    if let Some(mut groups) = groups {
        groups.sort_unstable();
        groups.dedup();
        config.roster_groups_allowed = groups;
    }
}

fn is_true(value: &str) -> bool {
    parse_boolean(value) == Some(true)
}

/// The XEP-0060 feature named in `<unsupported/>` for the use cases PEP does without.
fn unsupported_feature(owner: bool, name: &str) -> Option<&'static str> {
    Some(match (owner, name) {
        (false, "subscribe" | "unsubscribe") => "subscribe",
        (false, "options") => "subscription-options",
        (false, "subscriptions") => "retrieve-subscriptions",
        (false, "affiliations") => "retrieve-affiliations",
        (true, "default") => "retrieve-default",
        (true, "subscriptions") => "manage-subscriptions",
        (true, "affiliations") => "modify-affiliations",
        _ => return None,
    })
}

/// An extended-information form as the verification string sees it: FORM_TYPE, then
/// `(var, sorted values)` sorted by var.
type CapsForm = (String, Vec<(String, Vec<String>)>);

/// One extended-information form for the verification string (XEP-0115 §5.1 step 7): its
/// FORM_TYPE and its other fields with sorted values, sorted by var. `Ok(None)` for a form to
/// ignore (§5.4 step 3.6), `None` for an ill-formed response (§5.4 step 3.5).
fn caps_form(form: &Element) -> Option<Option<CapsForm>> {
    let mut form_type = None;
    let mut fields = Vec::new();
    for field in form.elements().filter(|child| child.name == "field" && child.namespace == DATA_FORMS_NAMESPACE) {
        let var = field.attribute("var").unwrap_or("");
        let mut values: Vec<String> =
            field.elements().filter(|value| value.name == "value" && value.namespace == DATA_FORMS_NAMESPACE).map(Element::text).collect();
        if var == "FORM_TYPE" {
            if field.attribute("type") != Some("hidden") {
                return Some(None);
            }
            values.dedup();
            if values.len() > 1 && values.iter().any(|value| *value != values[0]) {
                return None;
            }
            form_type = values.into_iter().next();
            continue;
        }
        values.sort_unstable();
        fields.push((var.to_owned(), values));
    }
    fields.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Some(form_type.map(|form_type| (form_type, fields)))
}

/// Whether a sorted list holds two equal entries.
fn has_duplicates<T: PartialEq>(sorted: &[T]) -> bool {
    sorted.windows(2).any(|pair| pair[0] == pair[1])
}

/// `<message from to type='headline'><event xmlns='…#event'>`.
fn event_head(owner_bare: &str, to: &str) -> String {
    let mut out = String::with_capacity(512);
    out.push_str("<message");
    push_attribute(&mut out, "from", owner_bare);
    push_attribute(&mut out, "to", to);
    push_attribute(&mut out, "type", "headline");
    out.push_str("><event");
    push_attribute(&mut out, "xmlns", PUBSUB_EVENT_NAMESPACE);
    out.push('>');
    out
}

/// A notification whose event is one empty element naming the node.
fn node_event(owner_bare: &str, to: &str, name: &str, node: &str) -> Vec<u8> {
    let mut out = event_head(owner_bare, to);
    out.push('<');
    out.push_str(name);
    push_attribute(&mut out, "node", node);
    out.push_str("/></event></message>");
    out.into_bytes()
}

/// `<iq type id from? to>`.
fn iq_head(kind: &str, id: &str, from: Option<&str>, to: &str) -> String {
    let mut out = String::with_capacity(512);
    out.push_str("<iq");
    push_attribute(&mut out, "type", kind);
    push_attribute(&mut out, "id", id);
    if let Some(from) = from {
        push_attribute(&mut out, "from", from);
    }
    push_attribute(&mut out, "to", to);
    out.push('>');
    out
}

/// `<items node><item id>payload</item>…</items>`; the payloads are already serialised.
fn push_items<'a>(out: &mut String, node: &str, items: impl Iterator<Item = &'a PepItem>) {
    out.push_str("<items");
    push_attribute(out, "node", node);
    out.push('>');
    for item in items {
        out.push_str("<item");
        push_attribute(out, "id", &item.id);
        out.push('>');
        out.push_str(&item.payload);
        out.push_str("</item>");
    }
    out.push_str("</items>");
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: &str = "juliet@capulet.lit";
    const TUNE: &str = "http://jabber.org/protocol/tune";

    fn element(xml: &str) -> Element {
        parse_element(xml.as_bytes()).expect("test input is valid")
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).expect("test input is valid")
    }

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(var, value)| (var.to_string(), value.to_string())).collect()
    }

    fn parse(stanza_type: &str, xml: &str) -> Result<PubsubRequest, PubsubError> {
        parse_request(stanza_type, &element(xml))
    }

    fn tune(title: &str) -> Element {
        Element::new("tune", TUNE).with_child(Element::new("title", TUNE).with_text(title))
    }

    fn node_with(max_items: u32, ids: &[&str]) -> Node {
        let mut node = Node::new(TUNE, NodeConfig { max_items, ..NodeConfig::default() });
        for (index, id) in ids.iter().enumerate() {
            publish(&mut node, id.to_string(), &tune(id), index as u64);
        }
        node
    }

    fn ids(node: &Node) -> Vec<&str> {
        node.items.iter().map(|item| item.id.as_str()).collect()
    }

    #[test]
    fn parses_publish_with_options() {
        let request = parse(
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'>\
               <publish node='urn:xmpp:bookmarks:1'>\
                 <item id='theplay@conference.shakespeare.lit'>\
                   <conference xmlns='urn:xmpp:bookmarks:1' name='The Play' autojoin='true'/>\
                 </item>\
               </publish>\
               <publish-options><x xmlns='jabber:x:data' type='submit'>\
                 <field var='FORM_TYPE' type='hidden'>\
                   <value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
                 <field var='pubsub#persist_items'><value>true</value></field>\
                 <field var='pubsub#max_items'><value>max</value></field>\
                 <field var='pubsub#access_model'><value>whitelist</value></field>\
               </x></publish-options>\
             </pubsub>",
        );
        let Ok(PubsubRequest::Publish { node, item_id, payload, options }) = request else {
            panic!("not a publish: {request:?}");
        };
        assert_eq!(node, BOOKMARKS2_NAMESPACE);
        assert_eq!(item_id.as_deref(), Some("theplay@conference.shakespeare.lit"));
        assert_eq!((payload.name.as_str(), payload.namespace.as_str()), ("conference", BOOKMARKS2_NAMESPACE));
        assert_eq!(options, fields(&[("pubsub#persist_items", "true"), ("pubsub#max_items", "max"), ("pubsub#access_model", "whitelist")]));

        // No id, no options: the service generates the id.
        let request = parse(
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item><p xmlns='p'/></item></publish></pubsub>",
        );
        assert!(matches!(request, Ok(PubsubRequest::Publish { item_id: None, ref options, .. }) if options.is_empty()));
    }

    #[test]
    fn publish_errors_follow_xep_0060() {
        let publish = |inner: &str| {
            parse("set", &format!("<pubsub xmlns='http://jabber.org/protocol/pubsub'>{inner}</pubsub>")).expect_err("the request fails")
        };
        let app = |condition, app| PubsubError::with_app(condition, app);
        assert_eq!(publish("<publish><item><p xmlns='p'/></item></publish>"), app("bad-request", "nodeid-required"));
        assert_eq!(publish("<publish node=''><item><p xmlns='p'/></item></publish>"), app("bad-request", "nodeid-required"));
        assert_eq!(publish("<publish node='n'/>"), app("bad-request", "item-required"));
        assert_eq!(publish("<publish node='n'><item id='a'/></publish>"), app("bad-request", "payload-required"));
        assert_eq!(publish("<publish node='n'><item><p xmlns='p'/><q xmlns='q'/></item></publish>"), app("bad-request", "invalid-payload"));
        assert_eq!(publish("<publish node='n'><item>text<p xmlns='p'/></item></publish>"), app("bad-request", "invalid-payload"));
        assert_eq!(
            publish("<publish node='n'><item><p xmlns='p'/></item><item><p xmlns='p'/></item></publish>"),
            app("bad-request", "invalid-payload")
        );
        assert_eq!(publish("<publish node='n'><item><p xmlns=''/></item></publish>"), app("bad-request", "invalid-payload"));
        let big = "x".repeat(PEP_ITEM_BYTES_MAX);
        assert_eq!(
            publish(&format!("<publish node='n'><item><p xmlns='p'>{big}</p></item></publish>")),
            app("not-acceptable", "payload-too-big")
        );
        let long_node = "n".repeat(PEP_NODE_NAME_BYTES_MAX + 1);
        assert_eq!(
            publish(&format!("<publish node='{long_node}'><item><p xmlns='p'/></item></publish>")),
            PubsubError::new("not-acceptable")
        );
        // A publish-options form of the wrong FORM_TYPE or type.
        assert_eq!(
            publish(
                "<publish node='n'><item><p xmlns='p'/></item></publish><publish-options>\
                 <x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>wrong</value></field></x>\
                 </publish-options>"
            ),
            PubsubError::new("bad-request")
        );
        assert_eq!(
            publish(
                "<publish node='n'><item><p xmlns='p'/></item></publish><publish-options>\
                 <x xmlns='jabber:x:data' type='form'/></publish-options>"
            ),
            PubsubError::new("bad-request")
        );
        // Publishing is a set.
        assert_eq!(
            parse("get", "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'/></pubsub>"),
            Err(PubsubError::new("bad-request"))
        );
    }

    #[test]
    fn parses_retract_items_create_and_owner_requests() {
        let ps = |inner: &str| format!("<pubsub xmlns='http://jabber.org/protocol/pubsub'>{inner}</pubsub>");
        let owner = |inner: &str| format!("<pubsub xmlns='http://jabber.org/protocol/pubsub#owner'>{inner}</pubsub>");
        let strings = |ids: &[&str]| ids.iter().map(|id| id.to_string()).collect::<Vec<_>>();

        assert_eq!(
            parse("set", &ps("<retract node='n' notify='1'><item id='a'/><item id='b'/><item id='a'/></retract>")),
            Ok(PubsubRequest::Retract { node: "n".into(), item_ids: strings(&["a", "b"]), notify: true })
        );
        assert_eq!(
            parse("set", &ps("<retract node='n'><item id='a'/></retract>")),
            Ok(PubsubRequest::Retract { node: "n".into(), item_ids: strings(&["a"]), notify: false })
        );
        assert_eq!(parse("set", &ps("<retract node='n'/>")), Err(PubsubError::with_app("bad-request", "item-required")));
        assert_eq!(parse("set", &ps("<retract node='n'><item/></retract>")), Err(PubsubError::with_app("bad-request", "item-required")));
        assert_eq!(parse("set", &ps("<retract><item id='a'/></retract>")), Err(PubsubError::with_app("bad-request", "nodeid-required")));
        assert_eq!(parse("set", &ps("<retract node='n' notify='maybe'><item id='a'/></retract>")), Err(bad_request()));

        assert_eq!(
            parse("get", &ps("<items node='n' max_items='2'/>")),
            Ok(PubsubRequest::Items { node: "n".into(), max_items: Some(2), item_ids: Vec::new() })
        );
        assert_eq!(
            parse("get", &ps("<items node='n'><item id='x'/></items>")),
            Ok(PubsubRequest::Items { node: "n".into(), max_items: None, item_ids: strings(&["x"]) })
        );
        assert_eq!(parse("get", &ps("<items node='n' max_items='0'/>")), Err(bad_request()));
        assert_eq!(parse("get", &ps("<items/>")), Err(PubsubError::with_app("bad-request", "nodeid-required")));

        assert_eq!(
            parse(
                "set",
                &ps("<create node='n'/><configure><x xmlns='jabber:x:data' type='submit'>\
                     <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field>\
                     <field var='pubsub#access_model'><value>whitelist</value></field>\
                     <field var='pubsub#roster_groups_allowed'><value>a</value><value>b</value></field>\
                     <field var='pubsub#title'/></x></configure>")
            ),
            Ok(PubsubRequest::Create {
                node: "n".into(),
                config: fields(&[
                    ("pubsub#access_model", "whitelist"),
                    ("pubsub#roster_groups_allowed", "a"),
                    ("pubsub#roster_groups_allowed", "b"),
                    ("pubsub#title", ""),
                ]),
            })
        );
        assert_eq!(parse("set", &ps("<create node='n'/>")), Ok(PubsubRequest::Create { node: "n".into(), config: Vec::new() }));
        // No instant nodes (XEP-0060 §8.1.1), and <configure/> must not name a node (§8.1.3).
        assert_eq!(parse("set", &ps("<create/>")), Err(PubsubError::with_app("not-acceptable", "nodeid-required")));
        assert_eq!(parse("set", &ps("<create node='n'/><configure node='n'/>")), Err(bad_request()));

        assert_eq!(parse("get", &owner("<configure node='n'/>")), Ok(PubsubRequest::ConfigureGet { node: "n".into() }));
        assert_eq!(parse("get", &owner("<configure/>")), Err(PubsubError::with_app("bad-request", "nodeid-required")));
        assert_eq!(
            parse(
                "set",
                &owner(
                    "<configure node='n'><x xmlns='jabber:x:data' type='submit'>\
                        <field var='pubsub#max_items'><value>10</value></field></x></configure>"
                )
            ),
            Ok(PubsubRequest::ConfigureSet { node: "n".into(), config: fields(&[("pubsub#max_items", "10")]) })
        );
        assert_eq!(
            parse("set", &owner("<configure node='n'><x xmlns='jabber:x:data' type='cancel'/></configure>")),
            Ok(PubsubRequest::ConfigureSet { node: "n".into(), config: Vec::new() })
        );
        assert_eq!(parse("set", &owner("<configure node='n'/>")), Err(bad_request()));
        assert_eq!(parse("set", &owner("<delete node='n'/>")), Ok(PubsubRequest::Delete { node: "n".into() }));
        assert_eq!(parse("set", &owner("<purge node='n'/>")), Ok(PubsubRequest::Purge { node: "n".into() }));
        assert_eq!(parse("set", &owner("<purge/>")), Err(PubsubError::with_app("bad-request", "nodeid-required")));
    }

    #[test]
    fn unsupported_use_cases_name_their_feature() {
        assert_eq!(
            parse("set", "<pubsub xmlns='http://jabber.org/protocol/pubsub'><subscribe node='n' jid='a@b'/></pubsub>"),
            Err(PubsubError::unsupported("subscribe"))
        );
        assert_eq!(
            parse("get", "<pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><affiliations node='n'/></pubsub>"),
            Err(PubsubError::unsupported("modify-affiliations"))
        );
        assert_eq!(
            parse("get", "<pubsub xmlns='http://jabber.org/protocol/pubsub'><nonsense/></pubsub>"),
            Err(PubsubError::new("feature-not-implemented"))
        );
        assert_eq!(parse("get", "<pubsub xmlns='http://jabber.org/protocol/pubsub'/>"), Err(bad_request()));
        assert_eq!(parse("get", "<query xmlns='http://jabber.org/protocol/pubsub'/>"), Err(bad_request()));
        assert_eq!(parse("get", "<pubsub xmlns='urn:other'/>"), Err(bad_request()));
    }

    #[test]
    fn default_config_is_the_pep_profile() {
        let config = NodeConfig::default();
        assert_eq!(config.access_model, AccessModel::Presence);
        assert_eq!(config.max_items, 1);
        assert!(config.persist_items);
        assert_eq!(config.send_last_published_item, SendLastPublishedItem::OnSubAndPresence);
    }

    #[test]
    fn configure_applies_known_fields_all_or_nothing() {
        let mut config = NodeConfig::default();
        configure(
            &mut config,
            &fields(&[
                ("pubsub#access_model", "roster"),
                ("pubsub#max_items", "max"),
                ("pubsub#persist_items", "0"),
                ("pubsub#send_last_published_item", "never"),
                ("pubsub#roster_groups_allowed", "Friends"),
                ("pubsub#roster_groups_allowed", "Family"),
                ("pubsub#roster_groups_allowed", "Friends"),
                ("pubsub#deliver_payloads", "1"),
                ("pubsub#title", "ignored"),
            ]),
        )
        .expect("test input is valid");
        assert_eq!(
            config,
            NodeConfig {
                access_model: AccessModel::Roster,
                max_items: PEP_ITEMS_PER_NODE_MAX as u32,
                persist_items: false,
                send_last_published_item: SendLastPublishedItem::Never,
                roster_groups_allowed: vec!["Family".into(), "Friends".into()],
            }
        );

        configure(&mut config, &fields(&[("pubsub#max_items", "10000")])).expect("test input is valid");
        assert_eq!(config.max_items, PEP_ITEMS_PER_NODE_MAX as u32);
        configure(&mut config, &fields(&[("pubsub#max_items", " 5 "), ("pubsub#roster_groups_allowed", "")])).expect("test input is valid");
        assert_eq!(config.max_items, 5);
        assert!(config.roster_groups_allowed.is_empty());

        let before = config.clone();
        let refused = |pairs: &[(&str, &str)]| {
            let mut config = before.clone();
            let error = configure(&mut config, &fields(pairs)).expect_err("the request fails");
            assert_eq!(config, before, "a refused form changes nothing");
            error
        };
        assert_eq!(
            refused(&[("pubsub#max_items", "7"), ("pubsub#access_model", "authorize")]),
            PubsubError::with_app("not-acceptable", "unsupported-access-model")
        );
        assert_eq!(refused(&[("pubsub#max_items", "0")]), PubsubError::new("not-acceptable"));
        assert_eq!(refused(&[("pubsub#max_items", "many")]), PubsubError::new("not-acceptable"));
        assert_eq!(refused(&[("pubsub#persist_items", "yes")]), PubsubError::new("not-acceptable"));
        assert_eq!(refused(&[("pubsub#deliver_payloads", "false")]), PubsubError::new("not-acceptable"));
        assert_eq!(refused(&[("pubsub#publish_model", "open")]), PubsubError::new("not-acceptable"));
        let too_many: Vec<(String, String)> =
            (0..=PEP_ROSTER_GROUPS_PER_NODE_MAX).map(|index| ("pubsub#roster_groups_allowed".to_string(), format!("g{index}"))).collect();
        let mut config = before.clone();
        assert_eq!(configure(&mut config, &too_many), Err(PubsubError::new("not-acceptable")));
    }

    #[test]
    fn options_match_only_a_node_that_already_has_them() {
        let default = NodeConfig::default();
        assert!(options_match(&default, &[]));
        assert!(options_match(&default, &fields(&[("pubsub#access_model", "presence"), ("pubsub#max_items", "1")])));
        assert!(options_match(&default, &fields(&[("pubsub#persist_items", "true"), ("pubsub#deliver_payloads", "1")])));
        assert!(!options_match(&default, &fields(&[("pubsub#access_model", "open")])));
        assert!(!options_match(&default, &fields(&[("pubsub#max_items", "max")])));
        // XEP-0060 §7.1.5: unknown fields are refused, as are values that cannot be applied.
        assert!(!options_match(&default, &fields(&[("pubsub#title", "x")])));
        assert!(!options_match(&default, &fields(&[("pubsub#access_model", "authorize")])));

        // The XEP-0402 options create a node they then match on every later publish, including
        // an old client's numeric max_items above the limit.
        let bookmarks = fields(&[
            ("pubsub#persist_items", "true"),
            ("pubsub#max_items", "max"),
            ("pubsub#send_last_published_item", "never"),
            ("pubsub#access_model", "whitelist"),
        ]);
        let config = publish_options_config(&bookmarks).expect("test input is valid");
        assert_eq!(config.access_model, AccessModel::Whitelist);
        assert_eq!(config.max_items, PEP_ITEMS_PER_NODE_MAX as u32);
        assert_eq!(config.send_last_published_item, SendLastPublishedItem::Never);
        assert!(options_match(&config, &bookmarks));
        assert!(options_match(&config, &fields(&[("pubsub#max_items", "10000")])));
        assert!(!options_match(&default, &bookmarks));

        assert_eq!(publish_options_config(&fields(&[("pubsub#title", "x")])), Err(PubsubError::precondition_not_met()));
        assert_eq!(publish_options_config(&fields(&[("pubsub#access_model", "authorize")])), Err(PubsubError::precondition_not_met()));
        assert_eq!(publish_options_config(&[]), Ok(NodeConfig::default()));
    }

    #[test]
    fn publish_replaces_then_trims_oldest() {
        let mut node = node_with(2, &["a", "b", "c"]);
        assert_eq!(ids(&node), ["b", "c"]);
        let item = publish(&mut node, "b".into(), &tune("again"), 99);
        assert_eq!(ids(&node), ["c", "b"], "a republished item becomes the newest");
        assert_eq!(item.payload, "<tune xmlns='http://jabber.org/protocol/tune'><title>again</title></tune>");
        assert_eq!(node.item("b"), Some(&item));
        assert_eq!(node.last_item().map(|item| item.published_ms), Some(99));

        let mut node = node_with(PEP_ITEMS_PER_NODE_MAX as u32, &["a", "b", "c", "d"]);
        node.config.max_items = 2;
        let dropped: Vec<String> = trim(&mut node).into_iter().map(|item| item.id).collect();
        assert_eq!(dropped, ["a", "b"]);
        assert_eq!(ids(&node), ["c", "d"]);
        assert!(trim(&mut node).is_empty());
    }

    #[test]
    fn retract_is_all_or_nothing() {
        let mut node = node_with(10, &["a", "b", "c"]);
        assert_eq!(retract(&mut node, &["a".into(), "x".into()]), Err(PubsubError::not_found()));
        assert_eq!(ids(&node), ["a", "b", "c"]);
        assert_eq!(retract(&mut node, &["a".into(), "c".into()]), Ok(()));
        assert_eq!(ids(&node), ["b"]);
    }

    #[test]
    fn select_items_by_id_count_and_size() {
        let node = node_with(10, &["a", "b", "c", "d"]);
        let selected = |max, wanted: &[&str]| -> Vec<String> {
            let wanted: Vec<String> = wanted.iter().map(|id| id.to_string()).collect();
            select_items(&node, max, &wanted).into_iter().map(|item| item.id.clone()).collect()
        };
        assert_eq!(selected(None, &[]), ["a", "b", "c", "d"]);
        assert_eq!(selected(Some(2), &[]), ["c", "d"]);
        assert_eq!(selected(Some(9), &[]), ["a", "b", "c", "d"]);
        assert_eq!(selected(None, &["d", "x", "b"]), ["b", "d"]);

        // Big items: the result keeps the newest that fit in the budget.
        let mut node = Node::new("big", NodeConfig { max_items: 10, ..NodeConfig::default() });
        for id in ["a", "b", "c"] {
            let payload = Element::new("p", "p").with_text(&"x".repeat(PEP_ITEM_BYTES_MAX - 64));
            publish(&mut node, id.into(), &payload, 0);
        }
        let kept: Vec<&str> = select_items(&node, None, &[]).into_iter().map(|item| item.id.as_str()).collect();
        assert_eq!(kept, ["c"]);
    }

    #[test]
    fn access_models() {
        let groups = ["Friends".to_string()];
        let owner = Requester { owner: true, presence_subscribed: false, groups: &[] };
        let contact = Requester { owner: false, presence_subscribed: true, groups: &groups };
        let stranger = Requester { owner: false, presence_subscribed: false, groups: &groups };
        let with = |access_model, allowed: &[&str]| NodeConfig {
            access_model,
            roster_groups_allowed: allowed.iter().map(|group| group.to_string()).collect(),
            ..NodeConfig::default()
        };
        for model in [AccessModel::Presence, AccessModel::Open, AccessModel::Whitelist, AccessModel::Roster] {
            assert_eq!(check_access(&with(model, &[]), &owner), Ok(()));
        }
        assert_eq!(check_access(&with(AccessModel::Open, &[]), &stranger), Ok(()));
        assert_eq!(check_access(&with(AccessModel::Presence, &[]), &contact), Ok(()));
        assert_eq!(
            check_access(&with(AccessModel::Presence, &[]), &stranger),
            Err(PubsubError::with_app("not-authorized", "presence-subscription-required"))
        );
        assert_eq!(check_access(&with(AccessModel::Roster, &["Friends"]), &contact), Ok(()));
        assert_eq!(
            check_access(&with(AccessModel::Roster, &["Family"]), &contact),
            Err(PubsubError::with_app("not-authorized", "not-in-roster-group"))
        );
        assert_eq!(
            check_access(&with(AccessModel::Roster, &["Friends"]), &stranger),
            Err(PubsubError::with_app("not-authorized", "not-in-roster-group"))
        );
        assert_eq!(check_access(&with(AccessModel::Whitelist, &[]), &contact), Err(PubsubError::with_app("not-allowed", "closed-node")));
    }

    #[test]
    fn event_notifications_are_exact() {
        let mut node = Node::new(TUNE, NodeConfig::default());
        let item = publish(&mut node, "current".into(), &tune("Soliloquy"), 0);
        assert_eq!(
            text(event_message(OWNER, "romeo@montague.lit/orchard", TUNE, std::slice::from_ref(&item))),
            "<message from='juliet@capulet.lit' to='romeo@montague.lit/orchard' type='headline'>\
             <event xmlns='http://jabber.org/protocol/pubsub#event'>\
             <items node='http://jabber.org/protocol/tune'><item id='current'>\
             <tune xmlns='http://jabber.org/protocol/tune'><title>Soliloquy</title></tune>\
             </item></items></event></message>"
        );
        assert_eq!(
            text(last_item_event(OWNER, "romeo@montague.lit/orchard", TUNE, &item)),
            "<message from='juliet@capulet.lit' to='romeo@montague.lit/orchard' type='headline'>\
             <event xmlns='http://jabber.org/protocol/pubsub#event'>\
             <items node='http://jabber.org/protocol/tune'><item id='current'>\
             <tune xmlns='http://jabber.org/protocol/tune'><title>Soliloquy</title></tune>\
             </item></items></event>\
             <delay xmlns='urn:xmpp:delay' from='juliet@capulet.lit' stamp='1970-01-01T00:00:00.000Z'/></message>"
        );
        assert_eq!(
            text(retract_event(OWNER, "juliet@capulet.lit/balcony", "n&'", &["a".into(), "b".into()])),
            "<message from='juliet@capulet.lit' to='juliet@capulet.lit/balcony' type='headline'>\
             <event xmlns='http://jabber.org/protocol/pubsub#event'><items node='n&amp;&apos;'>\
             <retract id='a'/><retract id='b'/></items></event></message>"
        );
        assert_eq!(
            text(purge_event(OWNER, "r@m.lit", "n")),
            "<message from='juliet@capulet.lit' to='r@m.lit' type='headline'>\
             <event xmlns='http://jabber.org/protocol/pubsub#event'><purge node='n'/></event></message>"
        );
        assert_eq!(
            text(delete_event(OWNER, "r@m.lit", "n")),
            "<message from='juliet@capulet.lit' to='r@m.lit' type='headline'>\
             <event xmlns='http://jabber.org/protocol/pubsub#event'><delete node='n'/></event></message>"
        );
        // The notification parses back with the payload in its own namespace.
        let parsed = element(&text(event_message(OWNER, "r@m.lit", TUNE, &[item])));
        let payload = parsed
            .child("event", PUBSUB_EVENT_NAMESPACE)
            .and_then(|event| event.child("items", PUBSUB_EVENT_NAMESPACE))
            .and_then(|items| items.child("item", PUBSUB_EVENT_NAMESPACE))
            .and_then(|item| item.child("tune", TUNE));
        assert!(payload.is_some());
    }

    #[test]
    fn replies_are_exact() {
        let node = node_with(5, &["a", "b"]);
        let items: Vec<&PepItem> = node.items.iter().collect();
        assert_eq!(
            text(items_result("i1", Some(OWNER), "romeo@montague.lit/orchard", TUNE, &items)),
            "<iq type='result' id='i1' from='juliet@capulet.lit' to='romeo@montague.lit/orchard'>\
             <pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='http://jabber.org/protocol/tune'>\
             <item id='a'><tune xmlns='http://jabber.org/protocol/tune'><title>a</title></tune></item>\
             <item id='b'><tune xmlns='http://jabber.org/protocol/tune'><title>b</title></tune></item>\
             </items></pubsub></iq>"
        );
        assert_eq!(
            text(items_result("i2", None, "j@c.lit/b", "n", &[])),
            "<iq type='result' id='i2' to='j@c.lit/b'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
             <items node='n'></items></pubsub></iq>"
        );
        assert_eq!(
            text(publish_result("p1", "j@c.lit/b", "n", "generated")),
            "<iq type='result' id='p1' to='j@c.lit/b'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
             <publish node='n'><item id='generated'/></publish></pubsub></iq>"
        );
        assert_eq!(
            text(error_iq("p1", None, "j@c.lit/b", &PubsubError::with_app("bad-request", "nodeid-required"))),
            "<iq type='error' id='p1' to='j@c.lit/b'><error type='modify'>\
             <bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <nodeid-required xmlns='http://jabber.org/protocol/pubsub#errors'/></error></iq>"
        );
        assert_eq!(
            text(error_iq("s1", Some(OWNER), "j@c.lit/b", &PubsubError::unsupported("subscribe"))),
            "<iq type='error' id='s1' from='juliet@capulet.lit' to='j@c.lit/b'><error type='cancel'>\
             <feature-not-implemented xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <unsupported xmlns='http://jabber.org/protocol/pubsub#errors' feature='subscribe'/></error></iq>"
        );
        assert_eq!(
            text(error_iq("p2", None, "j@c.lit/b", &PubsubError::precondition_not_met())),
            "<iq type='error' id='p2' to='j@c.lit/b'><error type='cancel'>\
             <conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <precondition-not-met xmlns='http://jabber.org/protocol/pubsub#errors'/></error></iq>"
        );
        assert_eq!(
            text(error_iq("p3", None, "j@c.lit/b", &PubsubError::not_found())),
            "<iq type='error' id='p3' to='j@c.lit/b'><error type='cancel'>\
             <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        );
    }

    #[test]
    fn config_form_round_trips_through_configure_set() {
        let config = NodeConfig {
            access_model: AccessModel::Roster,
            max_items: 7,
            persist_items: false,
            send_last_published_item: SendLastPublishedItem::Never,
            roster_groups_allowed: vec!["Friends".into()],
        };
        let reply = element(&text(config_form_result("c1", "j@c.lit/b", "n", &config)));
        assert_eq!((reply.attribute("type"), reply.attribute("id")), (Some("result"), Some("c1")));
        let mut form = reply
            .child("pubsub", PUBSUB_OWNER_NAMESPACE)
            .and_then(|pubsub| pubsub.child("configure", PUBSUB_OWNER_NAMESPACE))
            .filter(|configure| configure.attribute("node") == Some("n"))
            .and_then(|configure| configure.child("x", DATA_FORMS_NAMESPACE))
            .cloned()
            .expect("test input is valid");
        assert_eq!(form.attribute("type"), Some("form"));
        // Submitting the form as it came back reproduces the configuration. Option values are
        // children of <option/>, not values of the field, so they do not count.
        form.set_attribute("type", "submit");
        let submitted = form_fields(&form, NODE_CONFIG_FORM_TYPE).expect("test input is valid");
        let mut round_trip = NodeConfig::default();
        configure(&mut round_trip, &submitted).expect("test input is valid");
        assert_eq!(round_trip, config);
    }

    #[test]
    fn node_encoding_round_trips() {
        let mut node = node_with(3, &["a", "b"]);
        node.config.roster_groups_allowed = vec!["Friends".into()];
        let bytes = node.encode();
        assert_eq!(Node::decode(&bytes), Ok(node));
        // Unaligned input decodes too.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        assert!(Node::decode(&shifted[1..]).is_ok());
        assert!(Node::decode(b"not a node").is_err());
    }

    /// XEP-0115 §5.2.
    const SIMPLE_QUERY: &str = "<query xmlns='http://jabber.org/protocol/disco#info' \
        node='http://code.google.com/p/exodus#QgayPKawpkPSDYmwT/WM94uAlu0='>\
        <identity category='client' name='Exodus 0.9.1' type='pc'/>\
        <feature var='http://jabber.org/protocol/caps'/>\
        <feature var='http://jabber.org/protocol/disco#info'/>\
        <feature var='http://jabber.org/protocol/disco#items'/>\
        <feature var='http://jabber.org/protocol/muc'/></query>";

    /// XEP-0115 §5.3, with elements shuffled: the order must not matter.
    const COMPLEX_QUERY: &str = "<query xmlns='http://jabber.org/protocol/disco#info' \
        node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>\
        <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>\
        <identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>\
        <feature var='http://jabber.org/protocol/muc'/>\
        <feature var='http://jabber.org/protocol/caps'/>\
        <feature var='http://jabber.org/protocol/disco#info'/>\
        <feature var='http://jabber.org/protocol/disco#items'/>\
        <x xmlns='jabber:x:data' type='result'>\
          <field var='os'><value>Mac</value></field>\
          <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>\
          <field var='ip_version'><value>ipv6</value><value>ipv4</value></field>\
          <field var='os_version'><value>10.5.1</value></field>\
          <field var='software'><value>Psi</value></field>\
          <field var='software_version'><value>0.11</value></field>\
        </x></query>";

    fn caps(node: &str, ver: &str) -> Caps {
        Caps { hash: CAPS_HASH_SHA1.into(), node: node.into(), ver: ver.into() }
    }

    #[test]
    fn caps_simple_example_verifies() {
        let simple = caps("http://code.google.com/p/exodus", "QgayPKawpkPSDYmwT/WM94uAlu0=");
        let query = element(SIMPLE_QUERY);
        assert_eq!(
            verification_string(&query).map(|(string, _)| string).as_deref(),
            Some(
                "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<\
                 http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<"
            )
        );
        let features = verify(&simple, &query).expect("test input is valid");
        assert_eq!(features.len(), 4);
        assert_eq!(features[0], "http://jabber.org/protocol/caps");

        // Another ver, another hash, a mismatching node, or a duplicate feature: no.
        assert_eq!(verify(&caps("http://code.google.com/p/exodus", "AAAAKawpkPSDYmwT/WM94uAlu0="), &query), None);
        assert_eq!(verify(&Caps { hash: "sha-256".into(), ..simple.clone() }, &query), None);
        assert_eq!(verify(&Caps { node: "http://other".into(), ..simple.clone() }, &query), None);
        let mut duplicate = query.clone();
        duplicate =
            duplicate.with_child(Element::new("feature", DISCO_INFO_NAMESPACE).with_attribute("var", "http://jabber.org/protocol/muc"));
        assert_eq!(verify(&simple, &duplicate), None);
        // A query without a node attribute is still checked by its hash.
        let mut anonymous = query.clone();
        anonymous.attributes.clear();
        assert!(verify(&simple, &anonymous).is_some());
    }

    #[test]
    fn caps_complex_example_verifies() {
        let complex = caps("http://psi-im.org", "q07IKJEyjvHSyhy//CH0CxmKi8w=");
        let query = element(COMPLEX_QUERY);
        assert_eq!(
            verification_string(&query).map(|(string, _)| string).as_deref(),
            Some(
                "client/pc/el/Ψ 0.11<client/pc/en/Psi 0.11<http://jabber.org/protocol/caps<\
                 http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<\
                 http://jabber.org/protocol/muc<urn:xmpp:dataforms:softwareinfo<ip_version<ipv4<ipv6<\
                 os<Mac<os_version<10.5.1<software<Psi<software_version<0.11<"
            )
        );
        assert!(verify(&complex, &query).is_some());

        // A second form with the same FORM_TYPE makes the response ill-formed (§5.4 step 3.5).
        let form = query.child("x", DATA_FORMS_NAMESPACE).cloned().expect("test input is valid");
        assert_eq!(verify(&complex, &query.clone().with_child(form.clone())), None);
        // A FORM_TYPE with two different values is ill-formed; two equal ones are not.
        let with_form_type_values = |values: &[&str]| {
            let mut form = form.clone();
            for field in form.children.iter_mut() {
                if let crate::xml::Node::Element(field) = field {
                    if field.attribute("var") == Some("FORM_TYPE") {
                        field.children.clear();
                        for value in values {
                            field.children.push(crate::xml::Node::Element(Element::new("value", DATA_FORMS_NAMESPACE).with_text(value)));
                        }
                    }
                }
            }
            let mut query = query.clone();
            query.children.retain(|child| !matches!(child, crate::xml::Node::Element(e) if e.name == "x"));
            query.with_child(form)
        };
        assert_eq!(verify(&complex, &with_form_type_values(&["urn:xmpp:dataforms:softwareinfo", "other"])), None);
        assert!(verify(&complex, &with_form_type_values(&["urn:xmpp:dataforms:softwareinfo", "urn:xmpp:dataforms:softwareinfo"])).is_some());
        // A form whose FORM_TYPE is not hidden is ignored: the string is the simple kind.
        let visible = element(&COMPLEX_QUERY.replace("type='hidden'", "type='text-single'"));
        let (string, _) = verification_string(&visible).expect("test input is valid");
        assert!(string.ends_with("http://jabber.org/protocol/muc<"));
        assert_eq!(verify(&complex, &visible), None);
    }

    #[test]
    fn caps_parsing_and_disco() {
        let presence = element(
            "<presence from='romeo@montague.lit/orchard'>\
             <c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://code.google.com/p/exodus' \
             ver='QgayPKawpkPSDYmwT/WM94uAlu0='/></presence>",
        );
        let found = parse_caps(&presence).expect("test input is valid");
        assert_eq!(found, caps("http://code.google.com/p/exodus", "QgayPKawpkPSDYmwT/WM94uAlu0="));
        assert_eq!(
            text(disco_request("d1", OWNER, "romeo@montague.lit/orchard", &found)),
            "<iq type='get' id='d1' from='juliet@capulet.lit' to='romeo@montague.lit/orchard'>\
             <query xmlns='http://jabber.org/protocol/disco#info' \
             node='http://code.google.com/p/exodus#QgayPKawpkPSDYmwT/WM94uAlu0='/></iq>"
        );
        let legacy = element("<presence><c xmlns='http://jabber.org/protocol/caps' node='n' ver='1.0'/></presence>");
        assert_eq!(parse_caps(&legacy).map(|caps| caps.hash), Some(String::new()));
        assert_eq!(parse_caps(&element("<presence><c xmlns='http://jabber.org/protocol/caps' node='n'/></presence>")), None);
        assert_eq!(parse_caps(&element("<presence/>")), None);

        let query = element(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <feature var='http://jabber.org/protocol/tune+notify'/>\
             <feature var='http://jabber.org/protocol/tune'/>\
             <feature var='urn:xmpp:bookmarks:1+notify'/>\
             <feature var='urn:xmpp:bookmarks:1+notify'/>\
             <feature var='+notify'/></query>",
        );
        let features = disco_features(&query);
        assert_eq!(features.len(), 4);
        assert_eq!(notify_nodes(&features), [TUNE, BOOKMARKS2_NAMESPACE]);
    }

    #[test]
    fn bookmarks_from_legacy_storage() {
        let storage = element(
            "<storage xmlns='storage:bookmarks'>\
               <conference name='The Play&apos;s the Thing' autojoin='true' jid='theplay@conference.shakespeare.lit'>\
                 <nick>JC</nick><password>Gl0b3</password><minimize xmlns='urn:example'/>\
               </conference>\
               <conference jid='Orchard@Conference.Shakespeare.lit' autojoin='0'/>\
               <conference jid='theplay@conference.shakespeare.lit' name='duplicate'/>\
               <conference jid='room@conference.shakespeare.lit/nick' name='full JID'/>\
               <conference name='no jid'/>\
               <url name='Homepage' url='https://example.com/'/>\
             </storage>",
        );
        let bookmarks = bookmarks_from_legacy(&storage);
        let rendered: Vec<(&str, String)> = bookmarks.iter().map(|(id, conference)| (id.as_str(), conference.to_xml())).collect();
        assert_eq!(
            rendered,
            [
                (
                    "theplay@conference.shakespeare.lit",
                    "<conference xmlns='urn:xmpp:bookmarks:1' name='The Play&apos;s the Thing' autojoin='true'>\
                     <nick>JC</nick><password>Gl0b3</password>\
                     <extensions><minimize xmlns='urn:example'/></extensions></conference>"
                        .to_string()
                ),
                ("orchard@conference.shakespeare.lit", "<conference xmlns='urn:xmpp:bookmarks:1'/>".to_string()),
            ]
        );
        assert!(bookmarks_from_legacy(&element("<storage xmlns='storage:rosternotes'/>")).is_empty());
    }

    #[test]
    fn legacy_storage_from_bookmarks_and_back() {
        let mut node = Node::new(BOOKMARKS2_NAMESPACE, NodeConfig { max_items: 10, ..NodeConfig::default() });
        let conference = element(
            "<conference xmlns='urn:xmpp:bookmarks:1' name='The Play' autojoin='1'>\
             <nick>JC</nick><extensions><minimize xmlns='urn:example'/></extensions></conference>",
        );
        publish(&mut node, "theplay@conference.shakespeare.lit".into(), &conference, 0);
        publish(&mut node, "orchard@conference.shakespeare.lit".into(), &Element::new("conference", BOOKMARKS2_NAMESPACE), 1);
        publish(&mut node, "junk".into(), &Element::new("other", "urn:other"), 2);
        let storage = legacy_from_bookmarks(&node.items);
        assert_eq!(
            storage.to_xml(),
            "<storage xmlns='storage:bookmarks'>\
             <conference name='The Play' autojoin='true' jid='theplay@conference.shakespeare.lit'>\
             <nick>JC</nick><minimize xmlns='urn:example'/></conference>\
             <conference jid='orchard@conference.shakespeare.lit'/></storage>"
        );
        // And back: the same bookmarks, with the boolean normalised.
        let back = bookmarks_from_legacy(&storage);
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].0, "theplay@conference.shakespeare.lit");
        assert_eq!(
            back[0].1.to_xml(),
            "<conference xmlns='urn:xmpp:bookmarks:1' name='The Play' autojoin='true'>\
             <nick>JC</nick><extensions><minimize xmlns='urn:example'/></extensions></conference>"
        );
        assert_eq!(legacy_from_bookmarks(&[]).to_xml(), "<storage xmlns='storage:bookmarks'/>");
    }
}
