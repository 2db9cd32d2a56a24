//! Durable records: every mutation of stored state is one `Record`, serialised with rkyv.
//!
//! The same bytes go to the local store's log and, later, to the peer node for replication and
//! catch-up, so a record is self-contained (it names the account it touches). This module owns
//! the record types and their (checked) encoding; it does not know where records are stored.

use rkyv::{Archive, Deserialize, Serialize};

use crate::sasl::{ScramCredentials, ScramHash};

/// SCRAM secrets for one hash (RFC 5802 §3): never the password itself.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StoredCredentials {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// One account: its local part and its SCRAM secrets for both supported hashes.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Local part of the bare JID, already prepared (RFC 7622 §3.3).
    pub user: String,
    pub sha1: StoredCredentials,
    pub sha256: StoredCredentials,
    /// Milliseconds since the Unix epoch when the account was created.
    pub created_ms: u64,
}

/// The kinds of per-user state kept beside the account, each a keyed collection.
///
/// The numeric codes are part of the storage format (they prefix keys on disk): never reuse
/// or renumber one.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemKind {
    /// Roster entries (RFC 6121 §2), keyed by the contact's bare JID; value: `RosterItem`.
    Roster,
    /// The roster version counter (RFC 6121 §2.6), key "": value: u64 little-endian.
    RosterVersion,
    /// Blocked JIDs (XEP-0191), keyed by JID; empty value.
    Block,
    /// Private XML storage (XEP-0049), keyed by "{namespace} {name}"; value: the element.
    Private,
    /// The vCard (XEP-0054), key "": value: the `<vCard/>` element.
    Vcard,
    /// Archiving preferences (XEP-0313 §6), key "": value: `Preferences`.
    ArchivePreferences,
    /// Offline messages (XEP-0160), keyed by a zero-padded sequence: value: the stanza.
    Offline,
    /// Last logout (XEP-0012), key "": value: u64 ms little-endian then the status text.
    LastActivity,
    /// A PEP node (XEP-0163) with its configuration and items, keyed by node name: value:
    /// `pep::Node`.
    PepNode,
    /// A persistent room's configuration and subject (XEP-0045 §10.2), key "", owned by the
    /// room's bare JID: value: `muc::RoomConfig`.
    RoomConfig,
    /// A room affiliation (XEP-0045 §5.2), keyed by the affiliated bare JID, owned by the
    /// room's bare JID: value: `muc::AffiliationEntry`.
    RoomAffiliation,
    /// The extension children (serialised XML) of a contact's pending subscription request
    /// (RFC 6121 §3.1.3: delivered when the user next comes online, as it was sent: a
    /// XEP-0172 `<nick/>`, say), keyed by the contact's bare JID.
    SubscriptionRequest,
}

impl ItemKind {
    pub const ALL: [ItemKind; 12] = [
        ItemKind::Roster,
        ItemKind::RosterVersion,
        ItemKind::Block,
        ItemKind::Private,
        ItemKind::Vcard,
        ItemKind::ArchivePreferences,
        ItemKind::Offline,
        ItemKind::LastActivity,
        ItemKind::PepNode,
        ItemKind::RoomConfig,
        ItemKind::RoomAffiliation,
        ItemKind::SubscriptionRequest,
    ];

    /// The on-disk code.
    pub fn code(self) -> u8 {
        match self {
            ItemKind::Roster => 1,
            ItemKind::RosterVersion => 2,
            ItemKind::Block => 3,
            ItemKind::Private => 4,
            ItemKind::Vcard => 5,
            ItemKind::ArchivePreferences => 6,
            ItemKind::Offline => 7,
            // 8 is reserved (never reuse a code).
            ItemKind::LastActivity => 9,
            ItemKind::PepNode => 10,
            ItemKind::RoomConfig => 11,
            ItemKind::RoomAffiliation => 12,
            ItemKind::SubscriptionRequest => 13,
        }
    }

    pub fn from_code(code: u8) -> Option<ItemKind> {
        ItemKind::ALL.into_iter().find(|kind| kind.code() == code)
    }
}

/// A durable mutation.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Create or replace an account (register, change_password).
    AccountPut(Account),
    /// Remove an account (unregister) and everything stored for it.
    AccountDelete { user: String },
    /// Create or replace one item of a user's state.
    ItemPut { user: String, kind: ItemKind, key: String, value: Vec<u8> },
    /// Remove one item of a user's state (absent is not an error).
    ItemDelete { user: String, kind: ItemKind, key: String },
    /// Append a message to the user's archive under `id`, and drop the entry `id - kept` so
    /// an archive never holds more than `kept` messages (XEP-0313 storage, bounded).
    ArchiveAppend { user: String, id: u64, kept: u64, message: Vec<u8> },
}

/// A record's bytes could not be read back: corrupt or from an incompatible version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record bytes are invalid: {0}")]
pub struct RecordError(pub(crate) String);

/// Gives a stored type its checked rkyv encoding: `encode` (owned data into a growable
/// buffer, which cannot fail: rkyv only errors on allocation failure or on fallible
/// serialisers, which these types do not have) and `decode`, through rkyv's checked access,
/// since bytes from disk or the network are never trusted; they need not be aligned (a store
/// or a socket buffer gives no such guarantee), so they are copied into an aligned buffer.
macro_rules! stored_codec {
    ($type:ty) => {
        impl $type {
            pub fn encode(&self) -> Vec<u8> {
                match rkyv::to_bytes::<rkyv::rancor::Error>(self) {
                    Ok(bytes) => bytes.into_vec(),
                    Err(error) => unreachable!("rkyv serialisation of owned data failed: {error}"),
                }
            }

            pub fn decode(bytes: &[u8]) -> Result<$type, $crate::records::RecordError> {
                rkyv::from_bytes::<$type, rkyv::rancor::Error>(&$crate::records::aligned(bytes))
                    .map_err(|error| $crate::records::RecordError(error.to_string()))
            }
        }
    };
}
pub(crate) use stored_codec;

stored_codec!(Record);
stored_codec!(Account);

impl From<RecordError> for String {
    fn from(error: RecordError) -> String {
        error.to_string()
    }
}

impl Record {
    /// The account a record touches; the store partitions by it.
    pub fn user(&self) -> &str {
        match self {
            Record::AccountPut(account) => &account.user,
            Record::AccountDelete { user }
            | Record::ItemPut { user, .. }
            | Record::ItemDelete { user, .. }
            | Record::ArchiveAppend { user, .. } => user,
        }
    }
}

impl Account {
    /// Builds an account from credentials derived for both hashes.
    pub fn new(user: String, sha1: &ScramCredentials, sha256: &ScramCredentials, created_ms: u64) -> Account {
        debug_assert_eq!(sha1.hash, ScramHash::Sha1);
        debug_assert_eq!(sha256.hash, ScramHash::Sha256);
        Account { user, sha1: StoredCredentials::from(sha1), sha256: StoredCredentials::from(sha256), created_ms }
    }

    pub fn credentials(&self, hash: ScramHash) -> ScramCredentials {
        let stored = match hash {
            ScramHash::Sha1 => &self.sha1,
            ScramHash::Sha256 => &self.sha256,
        };
        ScramCredentials {
            hash,
            salt: stored.salt.clone(),
            iterations: stored.iterations,
            stored_key: stored.stored_key.clone(),
            server_key: stored.server_key.clone(),
        }
    }
}

/// rkyv's archived types need their natural alignment; copy into an aligned buffer.
pub(crate) fn aligned(bytes: &[u8]) -> rkyv::util::AlignedVec<16> {
    let mut buffer = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    buffer.extend_from_slice(bytes);
    buffer
}

impl From<&ScramCredentials> for StoredCredentials {
    fn from(credentials: &ScramCredentials) -> Self {
        StoredCredentials {
            salt: credentials.salt.clone(),
            iterations: credentials.iterations,
            stored_key: credentials.stored_key.clone(),
            server_key: credentials.server_key.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Account {
        let creds =
            |hash| ScramCredentials { hash, salt: vec![1, 2, 3], iterations: 4096, stored_key: vec![4; 32], server_key: vec![5; 32] };
        Account::new("alice".into(), &creds(ScramHash::Sha1), &creds(ScramHash::Sha256), 7)
    }

    #[test]
    fn record_round_trips() {
        for record in [
            Record::AccountPut(account()),
            Record::AccountDelete { user: "bob".into() },
            Record::ItemPut { user: "bob".into(), kind: ItemKind::Roster, key: "c@x".into(), value: vec![1, 2] },
            Record::ItemDelete { user: "bob".into(), kind: ItemKind::Offline, key: "0001".into() },
            Record::ArchiveAppend { user: "bob".into(), id: 9, kept: 5, message: b"<message/>".to_vec() },
        ] {
            let bytes = record.encode();
            assert_eq!(Record::decode(&bytes).expect("decodes"), record);
        }
    }

    #[test]
    fn item_kind_codes_are_distinct_and_round_trip() {
        for kind in ItemKind::ALL {
            assert_eq!(ItemKind::from_code(kind.code()), Some(kind));
        }
        let mut codes: Vec<u8> = ItemKind::ALL.iter().map(|k| k.code()).collect();
        codes.dedup();
        assert_eq!(codes.len(), ItemKind::ALL.len());
        assert_eq!(ItemKind::from_code(0), None);
    }

    #[test]
    fn unaligned_bytes_decode() {
        let bytes = Record::AccountPut(account()).encode();
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        assert_eq!(Record::decode(&shifted[1..]).expect("decodes"), Record::AccountPut(account()));
    }

    #[test]
    fn corrupt_record_is_an_error_not_a_panic() {
        let mut bytes = Record::AccountPut(account()).encode();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        bytes.truncate(last - 3);
        assert!(Record::decode(&bytes).is_err());
        assert!(Record::decode(&[]).is_err());
        assert!(Account::decode(&[0xff; 7]).is_err());
    }
}
