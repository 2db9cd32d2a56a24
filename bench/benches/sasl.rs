//! What authentication costs the server: SCRAM verification vs PLAIN over SCRAM-stored
//! credentials (DESIGN.md: ≥ 3,000 full logins/s on this box; Prosody pays ~12 ms of PBKDF2
//! per PLAIN login).
//!
//! Group `scram_server`: one whole server side of a SCRAM exchange, `ScramServer::start` on
//! the client-first-message, `server_first` with the user's stored credentials, `finish` on
//! the client-final-message, for 4096-iteration credentials. The client messages are computed
//! once outside the timed loop (the client runs PBKDF2; the server never does for SCRAM), and
//! the fixed server nonce makes the precomputed proof valid on every iteration. Credential
//! lookup and base64 of the element text are not included.
//!
//! Group `pbkdf2_4096i`: `ScramCredentials::verify_password`, the whole cost of checking a
//! PLAIN password against SCRAM-stored credentials, and `ScramCredentials::derive`, the cost
//! of registering or changing a password. Both run PBKDF2 with 4096 iterations.
//!
//! Times are the benchmark thread's CPU time (`confab_bench::clock`), not elapsed time: the
//! two cores of this machine are shared, and preemption is not the server's cost.

use std::hint::black_box;
use std::time::Duration;

use confab_bench::clock::cpu_timed;
use confab_core::sasl::{
    ChannelBindingType, ChannelBindings, ClientBinding, Mechanism, ScramClient, ScramCredentials, ScramHash, ScramServer, ScramStart,
    SCRAM_ITERATIONS_DEFAULT,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const USERNAME: &str = "juliet42";
const PASSWORD: &str = "correct horse battery staple";
const SALT: &[u8; 16] = b"\x8e\x12\x9c\x4a\x01\xf7\x33\x5d\xa0\x6b\x2e\x91\x0c\xd4\x58\x7f";
const CLIENT_NONCE: &str = "fyko+d2lbbFgONRv9qkxdawL";
const SERVER_NONCE: &str = "3rfcNHYJY1ZVvWVs7j0x8Q";

/// One precomputed exchange: what the server needs and what the client sent.
struct Exchange {
    mechanism: Mechanism,
    credentials: ScramCredentials,
    bindings: ChannelBindings,
    plus_offered: bool,
    client_first: Vec<u8>,
    client_final: Vec<u8>,
}

impl Exchange {
    fn new(mechanism: Mechanism) -> Exchange {
        let hash = mechanism.hash().expect("a SCRAM mechanism");
        let credentials = ScramCredentials::derive(hash, PASSWORD, SALT, SCRAM_ITERATIONS_DEFAULT).expect("valid credentials");
        // -PLUS binds to the 32-byte tls-exporter value (RFC 9266), as over TLS 1.3.
        let (bindings, binding, plus_offered) = if mechanism.is_plus() {
            let exporter = vec![0x5a; 32];
            let bindings = ChannelBindings { tls_exporter: Some(exporter.clone()), tls_server_end_point: None };
            (bindings, ClientBinding::Use(ChannelBindingType::TlsExporter, exporter), true)
        } else {
            (ChannelBindings::default(), ClientBinding::NotSupported, false)
        };
        let mut client = ScramClient::new(hash, USERNAME, PASSWORD, binding, CLIENT_NONCE);
        let client_first = client.client_first();
        let mut exchange = Exchange { mechanism, credentials, bindings, plus_offered, client_first, client_final: Vec::new() };
        let (mut server, _) = exchange.start();
        let server_first = server.server_first(&exchange.credentials, SERVER_NONCE);
        exchange.client_final = client.handle_server_first(&server_first).expect("the client accepts");
        let server_final = server.finish(&exchange.client_final).expect("the proof verifies");
        client.verify_server_final(&server_final).expect("the server proves itself");
        // And once more through the timed path, so a broken fixture fails before measuring.
        assert!(exchange.verify().starts_with(b"v="));
        exchange
    }

    fn start(&self) -> (ScramServer, ScramStart) {
        ScramServer::start(self.mechanism, &self.client_first, &self.bindings, self.plus_offered)
            .expect("the client-first-message is valid")
    }

    /// The server's whole side of the exchange; returns the server-final-message.
    fn verify(&self) -> Vec<u8> {
        let (mut server, start) = self.start();
        debug_assert_eq!(start.username, USERNAME);
        let server_first = server.server_first(&self.credentials, SERVER_NONCE);
        black_box(server_first);
        server.finish(&self.client_final).expect("the proof verifies")
    }
}

fn scram_server(c: &mut Criterion) {
    let mut group = c.benchmark_group("scram_server");
    group.throughput(Throughput::Elements(1));
    for (name, mechanism) in [
        ("scram_sha256_server_verify_4096i", Mechanism::ScramSha256),
        ("scram_sha256_plus_server_verify_4096i", Mechanism::ScramSha256Plus),
        ("scram_sha1_server_verify_4096i", Mechanism::ScramSha1),
    ] {
        let exchange = Exchange::new(mechanism);
        group.bench_function(name, |b| b.iter_custom(|iters| cpu_timed(iters, || black_box(&exchange).verify())));
    }
    group.finish();
}

fn pbkdf2(c: &mut Criterion) {
    let mut group = c.benchmark_group("pbkdf2_4096i");
    group.throughput(Throughput::Elements(1));
    // Milliseconds per call: 20 samples keep a short run within its measurement time.
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    for (suffix, hash) in [("sha256", ScramHash::Sha256), ("sha1", ScramHash::Sha1)] {
        let credentials = ScramCredentials::derive(hash, PASSWORD, SALT, SCRAM_ITERATIONS_DEFAULT).expect("valid credentials");
        assert!(credentials.verify_password(PASSWORD) && !credentials.verify_password("wrong"));
        group.bench_function(format!("plain_verify_password_{suffix}_4096i"), |b| {
            b.iter_custom(|iters| cpu_timed(iters, || assert!(black_box(&credentials).verify_password(black_box(PASSWORD)))))
        });
        group.bench_function(format!("scram_credentials_derive_{suffix}_4096i"), |b| {
            b.iter_custom(|iters| cpu_timed(iters, || ScramCredentials::derive(hash, black_box(PASSWORD), SALT, SCRAM_ITERATIONS_DEFAULT)))
        });
    }
    group.finish();
}

criterion_group!(benches, scram_server, pbkdf2);
criterion_main!(benches);
