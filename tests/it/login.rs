//! Authentication and binding: every SASL mechanism, failures, bans, conflicts.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use confab_core::sasl::{ChannelBindingType, ClientBinding, ScramClient, ScramHash};

use crate::support::{element_text, Client, Server, DOMAIN};

#[test]
fn every_mechanism_logs_in_over_starttls() {
    let server = Server::start();
    server.register("alice", "wonderland");
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-1", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"] {
        let mut client = Client::connect(&server);
        let features = client.starttls();
        assert!(features.contains(&format!("<mechanism>{mechanism}</mechanism>")), "{features}");
        let answer = client.scram(mechanism, "alice", "wonderland");
        assert!(answer.contains("<success"), "{mechanism}: {answer}");
        assert_eq!(client.bind("desk"), "alice@localhost/desk");
    }
    let mut client = Client::connect(&server);
    client.starttls();
    let answer = client.plain("alice", "wonderland");
    assert!(answer.contains("<success"), "PLAIN: {answer}");
    assert_eq!(client.bind("plain"), "alice@localhost/plain");
}

#[test]
fn tls_server_end_point_binding_and_direct_tls() {
    let server = Server::start();
    server.register("bob", "builder");
    let mut client = Client::connect_direct_tls(&server);
    let features = client.open_stream();
    assert!(features.contains("<channel-binding type='tls-server-end-point'/>"), "{features}");
    assert!(features.contains("<channel-binding type='tls-exporter'/>"), "{features}");
    let kind = ChannelBindingType::TlsServerEndPoint;
    let binding = ClientBinding::Use(kind, client.binding(kind));
    let answer = client.scram_with("SCRAM-SHA-256-PLUS", ScramHash::Sha256, "bob", "builder", binding);
    assert!(answer.contains("<success"), "{answer}");
    assert_eq!(client.bind("tls"), "bob@localhost/tls");
}

#[test]
fn wrong_binding_data_fails() {
    let server = Server::start();
    server.register("bob", "builder");
    let mut client = Client::connect(&server);
    client.starttls();
    let binding = ClientBinding::Use(ChannelBindingType::TlsExporter, vec![0u8; 32]);
    let answer = client.scram_with("SCRAM-SHA-256-PLUS", ScramHash::Sha256, "bob", "builder", binding);
    assert!(answer.contains("<failure"), "{answer}");
}

#[test]
fn plain_is_not_offered_before_tls_and_tls_is_required() {
    let server = Server::start();
    let mut client = Client::connect(&server);
    let features = client.open_stream();
    assert!(features.contains("<required/>") && !features.contains("PLAIN"), "{features}");
    client.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHg=</auth>");
    let rest = client.read_to_close().join("");
    assert!(rest.contains("<policy-violation"), "{rest}");
}

#[test]
fn wrong_password_and_unknown_user_look_the_same() {
    let server = Server::start();
    server.register("carol", "right");
    let mut answers = Vec::new();
    for (user, password) in [("carol", "wrong"), ("nobody", "whatever")] {
        let mut client = Client::connect(&server);
        client.starttls();
        answers.push(client.scram("SCRAM-SHA-256", user, password));
        let mut client = Client::connect(&server);
        client.starttls();
        answers.push(client.plain(user, password));
    }
    for answer in &answers {
        assert_eq!(answer, "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>");
    }
}

/// One person's typos lock that account from that address only: the people behind the same
/// NAT address keep logging in, and the right password is refused only for the locked account.
#[test]
fn wrong_passwords_lock_the_account_for_that_address_only() {
    let server = Server::start_with("[security]\nauth_failures_per_account = 3\nban_ms = 60000\n");
    server.register("dave", "secret");
    server.register("erin", "secret");
    for _ in 0..3 {
        let mut client = Client::connect(&server);
        client.starttls();
        let answer = client.plain("dave", "guess");
        assert!(answer.contains("not-authorized"), "{answer}");
    }
    let mut client = Client::connect(&server);
    client.starttls();
    let answer = client.scram("SCRAM-SHA-256", "dave", "secret");
    assert!(answer.contains("<temporary-auth-failure/>"), "locked, even with the right password: {answer}");
    for _ in 0..3 {
        let mut client = Client::connect(&server);
        client.starttls();
        assert!(client.scram("SCRAM-SHA-256", "erin", "secret").contains("<success"), "others behind the address log in");
    }
}

/// A password spray across accounts from one address bans the address on every shard, before
/// any password work.
#[test]
fn wrong_passwords_for_many_accounts_ban_the_address() {
    let server = Server::start_with("[security]\nauth_failed_accounts_per_address = 3\nban_ms = 60000\n");
    for user in ["spray0", "spray1", "spray2"] {
        let mut client = Client::connect(&server);
        client.starttls();
        let answer = client.plain(user, "guess");
        assert!(answer.contains("not-authorized"), "{answer}");
    }
    // The ban is broadcast to every shard (asynchronously: a connection that arrives first may
    // still be served); from then on a new connection is refused at once, on any shard.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let refused = |client: &mut Client| {
        client.send(&format!(
            "<stream:stream to='{DOMAIN}' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
        ));
        client.expect("<stream:stream");
        let next = client.next().unwrap_or_default();
        assert!(next.contains("<policy-violation") || next.contains("<stream:features"), "{next}");
        next.contains("<policy-violation")
    };
    while !refused(&mut Client::connect(&server)) {
        assert!(std::time::Instant::now() < deadline, "never banned");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Once the broadcast has reached the other shards (a cross-shard message: well under the
    // pause), every connection is refused, whichever shard accepts it.
    std::thread::sleep(std::time::Duration::from_millis(200));
    for _ in 0..8 {
        assert!(refused(&mut Client::connect(&server)), "banned on every shard");
    }
}

/// A client that negotiates a mechanism or channel binding we cannot do (python3-slixmpp's
/// SCRAM-*-PLUS with tls-unique) is not punished: ten such logins from one address, each
/// with two misses before it succeeds, with the default configuration.
#[test]
fn channel_binding_misses_are_not_failed_logins() {
    let server = Server::start();
    server.register("slix", "pw");
    for n in 0..10 {
        let mut client = Client::connect(&server);
        client.starttls();
        for mechanism in ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"] {
            let first = BASE64.encode(format!("p=tls-unique,,n=slix,r=nonce{n}"));
            client.send(&format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mechanism}'>{first}</auth>"));
            let answer = client.next().expect("answer");
            assert!(answer.contains("<malformed-request/>"), "{answer}");
        }
        let answer = client.scram("SCRAM-SHA-256", "slix", "pw");
        assert!(answer.contains("<success"), "login {n}: {answer}");
    }
}

/// Parallel guesses at one account are counted when they start: of many PLAIN attempts in
/// flight at once, at most `auth_failures_per_account` get their password checked.
#[test]
fn parallel_guesses_are_counted_when_they_start() {
    let server = Server::start_with("[security]\nauth_failures_per_account = 3\nban_ms = 60000\n");
    server.register("target", "secret");
    let mut clients: Vec<Client> = (0..8)
        .map(|_| {
            let mut client = Client::connect(&server);
            client.starttls();
            client
        })
        .collect();
    let payload = BASE64.encode("\0target\0guess");
    for client in &mut clients {
        client.send(&format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{payload}</auth>"));
    }
    let answers: Vec<String> = clients.iter_mut().map(|client| client.next().expect("answer")).collect();
    let checked = answers.iter().filter(|a| a.contains("<not-authorized/>")).count();
    let refused = answers.iter().filter(|a| a.contains("<temporary-auth-failure/>")).count();
    assert!(checked <= 3, "only three guesses may be checked: {answers:#?}");
    assert_eq!(checked + refused, 8, "{answers:#?}");
}

/// SCRAM's final message is checked against the bans: an exchange started before the address
/// was banned does not succeed after it, even with the right proof, and a wrong proof gets the
/// same answer (else the refusal would tell the sprayer which password was right).
#[test]
fn a_ban_stops_a_scram_exchange_in_flight() {
    let server = Server::start_with("[security]\nauth_failed_accounts_per_address = 2\nban_ms = 60000\n");
    server.register("patient", "secret");
    // Two exchanges reach server-first: one with the right password, one with a wrong one.
    let mut exchanges = Vec::new();
    for (password, nonce) in [("secret", "inflightright"), ("not-it", "inflightwrong")] {
        let mut client = Client::connect(&server);
        client.starttls();
        let mut scram = ScramClient::new(ScramHash::Sha256, "patient", password, ClientBinding::NotSupported, nonce);
        client.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{}</auth>",
            BASE64.encode(scram.client_first())
        ));
        let challenge = client.next().expect("challenge");
        let server_first = BASE64.decode(element_text(&challenge)).expect("base64");
        exchanges.push((client, scram.handle_server_first(&server_first).expect("server first")));
    }
    // Meanwhile the same address sprays two other accounts: it is banned.
    for user in ["spray-a", "spray-b"] {
        let mut sprayer = Client::connect(&server);
        sprayer.starttls();
        assert!(sprayer.plain(user, "guess").contains("not-authorized"));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut answers = Vec::new();
    for (mut client, client_final) in exchanges {
        client.send(&format!("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>", BASE64.encode(client_final)));
        answers.push(client.next().expect("answer"));
    }
    assert!(!answers[0].contains("<success"), "a banned address must not log in: {}", answers[0]);
    // The right and the wrong proof get the same answer: the ban is no password oracle.
    assert!(answers[0].contains("<temporary-auth-failure/>"), "{}", answers[0]);
    assert_eq!(answers[0], answers[1], "{}", server.log());
}

#[test]
fn rebinding_the_same_resource_replaces_the_old_session() {
    let server = Server::start();
    server.register("erin", "pw");
    let mut first = Client::login(&server, "erin", "pw", "phone");
    let _second = Client::login(&server, "erin", "pw", "phone");
    let seen = first.read_to_close().join("");
    assert!(seen.contains("<conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"), "{seen}");
}

#[test]
fn session_limit_answers_resource_constraint() {
    let server = Server::start_with("[limits]\nsessions_per_user = 2\n");
    server.register("fay", "pw");
    let _a = Client::login(&server, "fay", "pw", "a");
    let _b = Client::login(&server, "fay", "pw", "b");
    let mut c = Client::connect(&server);
    c.starttls();
    assert!(c.scram("SCRAM-SHA-256", "fay", "pw").contains("<success"));
    c.open_stream();
    c.send("<iq type='set' id='b3'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>c</resource></bind></iq>");
    let answer = c.expect("id='b3'");
    assert!(answer.contains("type='error'") && answer.contains("<resource-constraint"), "{answer}");
}

#[test]
fn server_generates_a_resource_and_answers_legacy_session() {
    let server = Server::start();
    server.register("gus", "pw");
    let mut client = Client::connect(&server);
    client.starttls();
    assert!(client.scram("SCRAM-SHA-1", "gus", "pw").contains("<success"));
    client.open_stream();
    client.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
    let answer = client.expect("id='b'");
    assert!(answer.contains("<jid>gus@localhost/"), "{answer}");
    client.send("<iq type='set' id='s'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>");
    let answer = client.expect("id='s'");
    assert!(answer.contains("type='result'"), "{answer}");
}
