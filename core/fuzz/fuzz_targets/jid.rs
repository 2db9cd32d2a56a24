//! JIDs (RFC 7622) from arbitrary strings: never panic; a parsed JID is prepared, so parsing
//! its text again gives the same JID (idempotence), and its parts stay within their bounds.
#![no_main]

use confab_core::jid::{Jid, JID_PART_BYTES_MAX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(jid) = Jid::parse(text) {
        let again = Jid::parse(jid.as_str()).expect("a prepared JID parses");
        assert_eq!(again.as_str(), jid.as_str(), "preparation is idempotent");
        assert!(jid.domain().len() <= JID_PART_BYTES_MAX);
        assert!(jid.local().map_or(0, str::len) <= JID_PART_BYTES_MAX);
        assert!(jid.resource().map_or(0, str::len) <= JID_PART_BYTES_MAX);
        assert_eq!(jid.bare().as_str(), Jid::parse(jid.bare_str()).expect("bare").as_str());
    }
});
