//! Authentication and binding: every SASL mechanism, failures, bans, conflicts.

use confab_core::sasl::{ChannelBindingType, ClientBinding, ScramHash};

use crate::support::{Client, Server};

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

#[test]
fn repeated_failures_ban_the_address() {
    let server = Server::start_with("[security]\nauth_failures_before_ban = 3\nban_ms = 60000\n");
    server.register("dave", "secret");
    for _ in 0..3 {
        let mut client = Client::connect(&server);
        client.starttls();
        let answer = client.plain("dave", "guess");
        assert!(answer.contains("not-authorized"), "{answer}");
    }
    // The ban reaches every shard; a new connection is refused before any password work.
    std::thread::sleep(std::time::Duration::from_millis(200));
    for _ in 0..4 {
        let mut client = Client::connect(&server);
        let seen = client.read_to_close().join("");
        assert!(seen.contains("<policy-violation"), "{seen}");
    }
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
