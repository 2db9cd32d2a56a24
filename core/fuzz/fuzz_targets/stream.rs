//! The client stream state machine fed what the framer makes of arbitrary bytes, with the
//! runtime's answers given as a runtime would: never panics, and nothing is routed before a
//! resource is bound.
#![no_main]

use confab_core::framer::{Framer, FramerLimits};
use confab_core::jid::BareJid;
use confab_core::sasl::{ChannelBindings, ScramCredentials};
use confab_core::stream::{Action, C2sStream, Entropy, StreamConfig};
use libfuzzer_sys::fuzz_target;

struct Counter(u32);
impl Entropy for Counter {
    fn token(&mut self) -> String {
        self.0 += 1;
        format!("tok{}", self.0)
    }
}

const LIMITS: FramerLimits = FramerLimits { stanza_bytes_max: 4096, depth_max: 8, attributes_max: 8, namespace_declarations_max: 4 };

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else { return };
    let mut config = StreamConfig::new("localhost".into(), b"secret".to_vec());
    config.tls_required = mode & 1 == 0;
    config.registration = mode & 2 != 0;
    let bindings = ChannelBindings { tls_exporter: Some(vec![7; 32]), tls_server_end_point: None };
    let mut stream = if mode & 4 != 0 { C2sStream::new_direct_tls(bindings.clone()) } else { C2sStream::new() };
    let mut framer = Framer::new(LIMITS);
    let mut entropy = Counter(0);
    framer.push(input);
    for _ in 0..10_000 {
        if stream.is_closed() {
            break;
        }
        let mut out = Vec::new();
        if !stream.is_waiting() {
            match framer.next_frame() {
                Ok(Some(frame)) => {
                    if stream.handle_frame(frame, &config, &mut entropy, &mut out).is_some() {
                        assert!(stream.bound().is_some() || stream.is_authenticated(), "routed before authentication");
                    }
                }
                Ok(None) => break,
                Err(error) => stream.framer_error(error, &config, &mut entropy, &mut out),
            }
        }
        // The runtime's side, answered at once.
        let mut more = Vec::new();
        for action in out {
            match action {
                Action::StartTls => {
                    framer.restart(true);
                    stream.tls_established(bindings.clone());
                }
                Action::RestartStream => framer.restart(false),
                Action::LookupCredentials { hash, .. } => {
                    let credentials = ScramCredentials::derive(hash, "pencil", b"saltsalt", 4096).ok();
                    stream.credentials(credentials, &config, &mut entropy, &mut more);
                }
                Action::VerifyPlain { .. } => stream.plain_checked(mode & 8 != 0, &config, &mut entropy, &mut more),
                Action::ConfirmVerdict(_) => stream.verdict_confirmed(mode & 16 != 0, &config, &mut entropy, &mut more),
                Action::Bind { jid, id } => {
                    let result = if mode & 32 != 0 { Ok(jid) } else { Err("conflict") };
                    stream.bind_result(result, &id, &mut more);
                }
                _ => {}
            }
        }
        let _ = BareJid::new(Some("x"), "localhost");
        if stream.is_waiting() && more.is_empty() {
            break;
        }
    }
});
