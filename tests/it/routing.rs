//! Stanza routing between users on the same and on different shards, and server iqs.

use crate::support::{users_on_shards, Client, Server};

#[test]
fn messages_cross_shards_and_stay_on_one() {
    let server = Server::start();
    let users = users_on_shards("user", &[0, 1, 0]);
    for user in &users {
        server.register(user, "pw");
    }
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
    for user in &users {
        server.register(user, "pw");
    }
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
