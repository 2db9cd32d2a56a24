//! Every limit of the protocol core, as a named constant with its unit and what it costs.
//!
//! These are the defaults; the runtime's configuration may override the ones marked
//! "config key". Nothing here reads configuration itself: this module only states the numbers
//! and the relations between them that must hold.

/// Largest top-level element (or stream header) accepted before authentication, in bytes.
/// Config key `limits.stanza_bytes_preauth`. An unauthenticated peer can make us buffer this
/// much per connection, so it is small (RFC 6120 §13.12 ¶4 asks servers to limit it).
pub const STANZA_BYTES_PREAUTH_MAX: usize = 8 * 1024;

/// Largest stanza accepted from an authenticated user, in bytes (config key
/// `limits.stanza_bytes`). Bounds the per-connection receive buffer while a stanza is partial.
pub const STANZA_BYTES_MAX: usize = 256 * 1024;

/// Deepest element nesting accepted inside a stanza (the stanza itself is depth 1).
/// Real payloads (pubsub items, data forms) stay well below 20; this bounds the parser's stack.
pub const ELEMENT_DEPTH_MAX: usize = 64;

/// Most attributes accepted on one element, namespace declarations included.
pub const ATTRIBUTES_MAX: usize = 64;

/// Most namespace declarations accepted on one element.
pub const NAMESPACE_DECLARATIONS_MAX: usize = 16;

/// Time a connection may take from accept to successful authentication, in milliseconds
/// (config key `limits.preauth_timeout_ms`). Bounds how long a silent peer holds a socket.
pub const PREAUTH_TIMEOUT_MS: u64 = 30_000;

/// Time an authenticated connection may stay silent before it is closed, in milliseconds
/// (config key `limits.idle_timeout_ms`). Any byte, including a whitespace keepalive
/// (RFC 6120 §4.6.1), resets it.
pub const IDLE_TIMEOUT_MS: u64 = 600_000;

/// Most simultaneous sessions (bound resources) per account (config key
/// `limits.sessions_per_user`). RFC 6120 §7.6.2.1: past it, bind answers `resource-constraint`.
pub const SESSIONS_PER_USER_MAX: usize = 16;

/// SASL attempts allowed on one stream before it is closed (RFC 6120 §6.4.5 asks for a
/// configurable number, at least 2).
pub const SASL_ATTEMPTS_MAX: u32 = 3;

/// SASL negotiations that may fail on one stream before it is closed: a mechanism or
/// channel-binding type the server does not support, a malformed message, an abort, a
/// throttled attempt. Clients walk through several on their way to one that works (slixmpp
/// tries both `-PLUS` mechanisms first), so these do not use up `SASL_ATTEMPTS_MAX`; the bound
/// only keeps a looping client from holding the stream forever.
pub const SASL_NEGOTIATION_FAILURES_MAX: u32 = 10;

/// Bytes read from a socket in one go; the framer's buffer is bounded by this plus the
/// stanza limit.
pub const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Stanzas that may wait in one session's inbox for its connection task to write them.
/// Past it the sender gets `resource-constraint` (RFC 6120 §8.3.3.18): a slow reader never
/// makes the server buffer without bound.
pub const SESSION_INBOX_STANZAS_MAX: usize = 1024;

/// Bytes of stanzas that may wait in one session's inbox (config key
/// `limits.session_inbox_bytes`): what a client that reads slowly or not at all can pin,
/// whatever the size of what is sent to it. At least one stanza of `STANZA_BYTES_MAX`.
pub const SESSION_INBOX_BYTES_MAX: usize = 1024 * 1024;

/// Milliseconds a connection may be unable to write while its inbox refuses stanzas (config
/// key `limits.stalled_reader_timeout_ms`); then it is closed, and what it never acknowledged
/// goes where XEP-0198 §5 says (resumption, another resource, offline storage).
pub const STALLED_READER_TIMEOUT_MS: u64 = 30_000;

/// Bytes of stored state one account may keep, all kinds together (config key
/// `limits.account_bytes`): held in memory on the home shard, so it bounds what one account
/// costs; each kind has its own bound too (roster items, PEP bytes, offline bytes…).
pub const ACCOUNT_BYTES_MAX: usize = 2 * 1024 * 1024;

/// Bytes of presence held for an inactive client (XEP-0352) before they are flushed anyway.
pub const CSI_HELD_BYTES_MAX: usize = 256 * 1024;

/// Bytes of private XML (XEP-0049) one account may keep.
pub const PRIVATE_BYTES_MAX: usize = 256 * 1024;

const _: () = assert!(SESSION_INBOX_BYTES_MAX >= STANZA_BYTES_MAX);

/// Messages that may wait in one shard's inbox from other shards and the admin thread.
pub const SHARD_INBOX_MESSAGES_MAX: usize = 8192;

/// Wrong passwords for one account from one address before that account is locked for that
/// address (config key `security.auth_failures_per_account`; see `throttle`).
pub const AUTH_FAILURES_PER_ACCOUNT: u32 = 5;

/// Distinct accounts with a wrong password from one address before the address is banned
/// (config key `security.auth_failed_accounts_per_address`): a password spray. Hundreds of
/// people may share one NAT address; one person's typos count once.
pub const AUTH_FAILED_ACCOUNTS_PER_ADDRESS: u32 = 20;

/// Password checks (SASL PLAIN: the server hashes) in flight at once from one address, per
/// shard (config key `security.auth_concurrent_per_address`). Beyond, `temporary-auth-failure`:
/// the client retries. SCRAM attempts need no hashing and are not capped here.
pub const AUTH_CONCURRENT_PER_ADDRESS: u32 = 64;

/// How long failures are remembered and a lock or ban lasts, in milliseconds (config key
/// `security.ban_ms`).
pub const AUTH_BAN_MS: u64 = 300_000;

/// Length of a resource part the server generates when the client lets it choose.
pub const GENERATED_RESOURCE_CHARS: usize = 16;

const _: () = assert!(STANZA_BYTES_PREAUTH_MAX <= STANZA_BYTES_MAX);
const _: () = assert!(SASL_ATTEMPTS_MAX >= 2);
const _: () = assert!(READ_CHUNK_BYTES <= STANZA_BYTES_MAX);

/// Roster entries per user (RFC 6121 §2; visible items plus pending requests). A roster set
/// beyond it is refused with `resource-constraint`; an inbound subscription request beyond it
/// is dropped. Each entry costs ~200 bytes of memory on the user's home shard.
pub const ROSTER_ITEMS_MAX: usize = 2_000;

/// Offline messages kept per user (XEP-0160). Past it the sender gets `service-unavailable`.
pub const OFFLINE_MESSAGES_MAX: usize = 500;

/// Messages kept in each user's archive (XEP-0313); the oldest is dropped past it. A query
/// with filters reads at most this many messages from disk.
pub const ARCHIVE_MESSAGES_MAX: u64 = 10_000;

/// Entities one session sent directed presence to and must tell of its unavailability
/// (RFC 6121 §4.6.3). Past it the oldest is forgotten (and not told).
pub const DIRECTED_PRESENCE_MAX: usize = 256;

/// Private XML storage entries (XEP-0049) per user.
pub const PRIVATE_ITEMS_MAX: usize = 64;

/// Presence stanzas held for an inactive client (XEP-0352) before they are flushed anyway.
pub const CSI_HELD_STANZAS_MAX: usize = 256;

/// Seconds a dropped session with stream management enabled waits for the client to resume it
/// (XEP-0198 §5); after that its unacknowledged messages go to offline storage.
pub const RESUME_TIMEOUT_S: u32 = 300;

/// Seconds between two in-band registrations (XEP-0077) from one address.
pub const REGISTRATION_INTERVAL_S: u64 = 600;

/// Addresses remembered for the registration interval; past it the oldest are forgotten.
pub const REGISTRATION_ADDRESSES_MAX: usize = 65_536;

/// Distinct XEP-0115 `ver` strings whose `+notify` nodes a shard caches; past it the cache is
/// cleared (clients then get asked again). Each entry holds up to `pep::CAPS_FEATURES_MAX`
/// node names.
pub const CAPS_CACHE_ENTRIES_MAX: usize = 4_096;

/// XEP-0115 disco#info queries in flight per shard; past it new announcements wait for the
/// next presence.
pub const CAPS_QUERIES_PENDING_MAX: usize = 1_024;

/// PEP bytes (item payloads) one user may keep across all nodes; a publish past it is refused
/// with `not-acceptable` + `<payload-too-big/>`. Nodes are held in memory on the home shard.
pub const PEP_USER_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Largest message kept in an archive (XEP-0313), serialised. Larger messages are delivered
/// but not archived, so one archive page (at most 250 messages) stays under 16 MiB.
pub const ARCHIVED_MESSAGE_BYTES_MAX: usize = 64 * 1024;

/// Bytes of offline messages kept per user (XEP-0160): they are held in memory on the home
/// shard, so the count limit alone would let one sender park 500 × 256 KiB at a victim.
pub const OFFLINE_BYTES_MAX: usize = 512 * 1024;

/// Bytes of a pending subscription request's extension children kept for its delivery at the
/// contact's next login (RFC 6121 §3.1.3); a request with more is kept without them.
pub const SUBSCRIPTION_REQUEST_BYTES_MAX: usize = 4 * 1024;

/// Bytes of `+notify` node names kept for one caps `ver`; an announcement with more is not
/// cached (its sessions get no PEP notifications), so the cache stays within
/// `CAPS_CACHE_ENTRIES_MAX` × this.
pub const CAPS_NOTIFY_BYTES_MAX: usize = 16 * 1024;

/// XEP-0045: occupants one room may hold unless configured otherwise (ejabberd's default).
/// Joining a room sends the joiner every occupant's presence in one batch, so this bounds
/// that batch too.
pub const MUC_USERS_MAX: u32 = 200;

/// XEP-0045 §7.2.15: messages a new room keeps for history on join.
pub const MUC_HISTORY_SIZE: u32 = 20;

/// Groupchat and private messages per second one room occupant may send (sustained), and the
/// burst above it; beyond, the room answers `resource-constraint`.
pub const MUC_OCCUPANT_MESSAGES_PER_S: f64 = 5.0;
pub const MUC_OCCUPANT_BURST: f64 = 20.0;

/// Rooms one session may be in at once (each costs a presence on its departure).
pub const MUC_ROOMS_PER_SESSION_MAX: usize = 100;

/// Rooms one shard holds (persistent ones included); creation beyond answers
/// `resource-constraint`.
pub const MUC_ROOMS_PER_SHARD_MAX: usize = 100_000;

/// HTTP connections (admin API) served at once (config key `admin.connections_max`); more are
/// closed at accept. Each holds a task and its buffers until it finishes or times out.
pub const HTTP_CONNECTIONS_MAX: usize = 256;

/// Time an HTTP client has to send a request's headers (config key `admin.header_timeout_ms`),
/// including the wait for the next request on a kept-alive connection.
pub const HTTP_HEADER_TIMEOUT_MS: u64 = 10_000;

/// Time an HTTP client has to send a request's body once its headers came (config key
/// `admin.body_timeout_ms`).
pub const HTTP_BODY_TIMEOUT_MS: u64 = 10_000;

/// Largest request body the admin API reads, in bytes; a larger announced `Content-Length`
/// is refused (413) before anything is read or allocated.
pub const HTTP_BODY_BYTES_MAX: usize = 64 * 1024;

/// Largest request head (request line and headers) an HTTP client may send, in bytes.
pub const HTTP_HEAD_BYTES_MAX: usize = 16 * 1024;
