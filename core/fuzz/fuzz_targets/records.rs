//! Stored and replicated records from arbitrary bytes: rkyv's checked access refuses what is
//! not a valid record, never panics, and what decodes encodes back to something that decodes
//! to the same value.
#![no_main]

use confab_core::archive::{ArchivedMessage, Preferences};
use confab_core::records::{Account, Record};
use confab_core::roster::RosterItem;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = Record::decode(data) {
        assert_eq!(Record::decode(&record.encode()).ok(), Some(record));
    }
    if let Ok(account) = Account::decode(data) {
        assert_eq!(Account::decode(&account.encode()).ok(), Some(account));
    }
    if let Ok(message) = ArchivedMessage::decode(data) {
        assert_eq!(ArchivedMessage::decode(&message.encode()).ok(), Some(message));
    }
    let _ = RosterItem::decode(data);
    let _ = Preferences::decode(data);
});
