//! Stanza routing between users on the same and on different shards, and server iqs.

use crate::support::{users_on_shards, Client, Server};

#[test]
fn messages_cross_shards_and_stay_on_one() {
    let server = Server::start();
    let users = users_on_shards("user", &[0, 1, 0]);
    server.register_all(&users, "pw");
    let mut a = Client::login(&server, &users[0], "pw", "r");
    let mut b = Client::login(&server, &users[1], "pw", "r");
    let mut c = Client::login(&server, &users[2], "pw", "r");
    // Different shards, full JID.
    a.send(&format!("<message to='{}@localhost/r' type='chat' id='m1'><body>hello across</body></message>", users[1]));
    let got = b.expect("hello across");
    assert!(got.contains(&format!("from='{}@localhost/r'", users[0])), "from is stamped: {got}");
    // Same shard, bare JID.
    a.send(&format!("<message to='{}@localhost' type='chat' id='m2'><body>hello same</body></message>", users[2]));
    let got = c.expect("hello same");
    assert!(got.contains(&format!("from='{}@localhost/r'", users[0])), "{got}");
    // And back across.
    b.send(&format!("<message to='{}@localhost' type='chat'><body>reply</body></message>", users[0]));
    a.expect("reply");
}

#[test]
fn bare_jid_messages_go_to_the_highest_priority_resource() {
    let server = Server::start();
    let users = users_on_shards("pri", &[0, 1]);
    server.register_all(&users, "pw");
    let mut sender = Client::login(&server, &users[0], "pw", "s");
    let mut low = Client::login(&server, &users[1], "pw", "low");
    let mut high = Client::login(&server, &users[1], "pw", "high");
    high.send("<presence><priority>5</priority></presence>");
    high.expect("<priority>5</priority>");
    low.expect("<priority>5</priority>");
    sender.send(&format!("<message to='{}@localhost' type='chat'><body>to the best</body></message>", users[1]));
    high.expect("to the best");
    // The low-priority resource must not get it: a ping proves its queue holds nothing before.
    low.send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>");
    let next = low.next().expect("ping answer");
    assert!(next.contains("id='p'"), "low got {next}");
}

#[test]
fn nonexistent_user_and_resource() {
    let server = Server::start();
    server.register("hal", "pw");
    server.register("ivy", "pw");
    let mut hal = Client::login(&server, "hal", "pw", "r");
    hal.send("<message to='ghost@localhost' type='chat' id='x1'><body>anyone?</body></message>");
    let error = hal.expect("id='x1'");
    assert!(error.contains("type='error'") && error.contains("<service-unavailable"), "{error}");
    assert!(error.contains("from='ghost@localhost'"), "{error}");
    hal.send("<iq to='ivy@localhost/nowhere' type='get' id='x2'><query xmlns='jabber:iq:version'/></iq>");
    let error = hal.expect("id='x2'");
    assert!(error.contains("<service-unavailable"), "{error}");
    hal.send("<message to='someone@elsewhere.example' id='x3'><body>far</body></message>");
    let error = hal.expect("id='x3'");
    assert!(error.contains("<remote-server-not-found"), "{error}");
    hal.send("<message to='not a jid@@' id='x4'><body>bad</body></message>");
    let error = hal.expect("id='x4'");
    assert!(error.contains("<jid-malformed"), "{error}");
}

#[test]
fn spoofed_from_closes_the_stream() {
    let server = Server::start();
    server.register("jay", "pw");
    server.register("kim", "pw");
    let mut jay = Client::login(&server, "jay", "pw", "r");
    let mut kim = Client::login(&server, "kim", "pw", "r");
    jay.send("<message to='kim@localhost' from='jay@localhost'><body>own bare from is fine</body></message>");
    let got = kim.expect("own bare from is fine");
    assert!(got.contains("from='jay@localhost/r'"), "{got}");
    jay.send("<message to='kim@localhost' from='boss@localhost/desk'><body>give me your password</body></message>");
    let seen = jay.read_to_close().join("");
    assert!(seen.contains("<invalid-from"), "{seen}");
    kim.send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>");
    let next = kim.next().expect("ping answer");
    assert!(next.contains("id='p'") && !next.contains("password"), "{next}");
}

#[test]
fn server_iqs() {
    let server = Server::start();
    server.register("lee", "pw");
    let mut lee = Client::login(&server, "lee", "pw", "r");
    lee.send("<iq to='localhost' type='get' id='ping1'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert!(lee.expect("id='ping1'").contains("type='result'"));
    lee.send("<iq to='localhost' type='get' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    let info = lee.expect("id='d1'");
    assert!(info.contains("category='server'") && info.contains("var='urn:xmpp:ping'"), "{info}");
    lee.send("<iq to='localhost' type='get' id='d2'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>");
    assert!(lee.expect("id='d2'").contains("type='result'"));
    lee.send("<iq type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>");
    assert!(lee.expect("id='v1'").contains("<name>Confab</name>"));
    lee.send("<iq type='get' id='u1'><query xmlns='urn:example:unknown'/></iq>");
    assert!(lee.expect("id='u1'").contains("<service-unavailable"));
    lee.send("<iq to='lee@localhost' type='get' id='d3'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    let account = lee.expect("id='d3'");
    assert!(account.contains("category='account'"), "{account}");
    // Whitespace keepalive is accepted.
    lee.send("  \n ");
    lee.send("<iq type='get' id='ping2'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert!(lee.expect("id='ping2'").contains("type='result'"));
}

/// What leaves the server is well-formed XML on the recipient's stream: a prefix the sender
/// declared on its own stream header only is declared on the forwarded copy (the test client's
/// framer checks namespace well-formedness and would reject it otherwise), and `]]>` in
/// character data is refused at the door.
#[test]
fn forwarded_stanzas_are_well_formed_for_their_recipient() {
    let server = Server::start();
    let users = users_on_shards("wf", &[0, 1]);
    server.register_all(&users, "pw");
    let mut receiver = Client::login(&server, &users[1], "pw", "r");
    let mut sender = Client::authenticated(&server, &users[0], "pw");
    sender.send(
        "<stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
         xmlns:ex='urn:example:ext' version='1.0'>",
    );
    sender.expect("<stream:features");
    sender.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>p</resource></bind></iq>");
    sender.expect("id='b'");
    sender.send(&format!("<message to='{}@localhost' type='chat'><body>prefixed</body><ex:data ex:v='1'>x</ex:data></message>", users[1]));
    let got = receiver.expect("prefixed");
    assert!(got.contains("xmlns:ex='urn:example:ext'") && got.contains("<ex:data ex:v='1'>"), "{got}");

    let mut bad = Client::login(&server, &users[0], "pw", "bad");
    bad.send(&format!("<message to='{}@localhost' type='chat'><body>a ]]> b</body></message>", users[1]));
    let seen = bad.read_to_close().join("");
    assert!(seen.contains("<not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"), "{seen}");
    let barrier = receiver.iq("after", "<iq type='get' id='after'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert!(barrier.contains("type='result'"), "{barrier}");
    assert!(receiver.collect_for(std::time::Duration::from_millis(200)).iter().all(|s| !s.contains("a ]]> b")));
}

/// RFC 6120 §8.2.3: an iq has an id and a known type; get and set carry exactly one payload,
/// result at most one; anything else is answered with bad-request and not routed. A `from`
/// that is the bound JID in another case is the bound JID (RFC 7622). An error the server
/// generates about a malformed address comes from the server (§8.3.1).
#[test]
fn iq_rules_normalised_from_and_the_origin_of_server_errors() {
    let server = Server::start();
    let users = users_on_shards("iqr", &[0, 1]);
    server.register_all(&users, "pw");
    let mut a = Client::login(&server, &users[0], "pw", "Phone");
    let mut b = Client::login(&server, &users[1], "pw", "r");
    let peer = format!("{}@localhost/r", users[1]);
    let cases = [
        ("t1", format!("<iq type='fetch' id='t1' to='{peer}'><ping xmlns='urn:xmpp:ping'/></iq>")),
        ("t2", format!("<iq type='get' id='t2' to='{peer}'><ping xmlns='urn:xmpp:ping'/><ping xmlns='urn:xmpp:ping'/></iq>")),
        ("t3", format!("<iq type='set' id='t3' to='{peer}'/>")),
        ("t4", format!("<iq type='result' id='t4' to='{peer}'><a xmlns='urn:x'/><b xmlns='urn:x'/></iq>")),
        ("t5", "<iq id='t5'><ping xmlns='urn:xmpp:ping'/></iq>".to_owned()),
    ];
    for (id, iq) in cases {
        let answer = a.iq(id, &iq);
        assert!(answer.contains("type='error'") && answer.contains("<bad-request"), "{id}: {answer}");
    }
    a.send("<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>");
    let answer = a.expect("id=''");
    assert!(answer.contains("<bad-request"), "an iq without an id: {answer}");
    // None of them reached b.
    let barrier = b.iq("bb", "<iq type='get' id='bb'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert!(barrier.contains("type='result'"));
    assert!(b.collect_for(std::time::Duration::from_millis(200)).iter().all(|s| !s.contains("id='t")), "nothing was routed");

    // The bound JID with its local and domain parts in capitals is still the bound JID.
    let shouting = format!("{}@LOCALHOST/Phone", users[0].to_uppercase());
    let answer = a.iq("f1", &format!("<iq type='get' id='f1' from='{shouting}'><ping xmlns='urn:xmpp:ping'/></iq>"));
    assert!(answer.contains("type='result'"), "{answer}");

    a.send("<message to='a@b@c' id='m1'><body>x</body></message>");
    let error = a.expect("id='m1'");
    assert!(error.contains("from='localhost'") && error.contains("<jid-malformed"), "{error}");
}
