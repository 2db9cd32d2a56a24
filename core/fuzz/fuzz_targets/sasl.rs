//! SASL messages from the network (RFC 5802 SCRAM client-first and client-final, RFC 4616
//! PLAIN): never panic, and an exchange never succeeds without the right proof.
#![no_main]

use confab_core::sasl::{parse_plain, ChannelBindings, Mechanism, ScramCredentials, ScramHash, ScramServer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_plain(data);
    // The input is split into a client-first and a client-final message at its first NUL.
    let (first, last) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let bindings = ChannelBindings { tls_exporter: Some(vec![7; 32]), tls_server_end_point: Some(vec![9; 32]) };
    for mechanism in [Mechanism::ScramSha256, Mechanism::ScramSha1Plus, Mechanism::ScramSha256Plus] {
        for plus_offered in [false, true] {
            let Ok((mut server, _start)) = ScramServer::start(mechanism, first, &bindings, plus_offered) else { continue };
            let hash = mechanism.hash().unwrap_or(ScramHash::Sha256);
            let credentials = ScramCredentials::fake(hash, "fuzz", b"secret", 4096);
            let _ = server.server_first(&credentials, "servernonce");
            // Fake credentials: no proof a fuzzer can guess may pass.
            assert!(server.finish(last).is_err(), "a proof for fake credentials verified");
        }
    }
});
