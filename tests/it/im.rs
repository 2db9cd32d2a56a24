//! Instant messaging over the wire: rosters and subscriptions (RFC 6121), offline messages
//! (XEP-0160/0203), carbons (XEP-0280), the archive (XEP-0313), blocking (XEP-0191), stream
//! management (XEP-0198), client state indication (XEP-0352) and the small services
//! (vCard, private storage, version, time, last activity). Users are placed on different
//! shards so every flow crosses shards.

use std::time::Duration;

use crate::support::{users_on_shards, Client, Server};

const ROSTER_GET: &str = "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>";

fn add_contact(client: &mut Client, id: &str, contact: &str, group: &str) -> String {
    client.iq(
        id,
        &format!("<iq type='set' id='{id}'><query xmlns='jabber:iq:roster'><item jid='{contact}@localhost' name='{contact}'><group>{group}</group></item></query></iq>"),
    )
}

#[test]
fn roster_set_get_remove_push_and_versioning() {
    let server = Server::start();
    server.register("ann", "pw");
    let mut one = Client::bound(&server, "ann", "pw", "one");
    let mut two = Client::bound(&server, "ann", "pw", "two");
    let empty = one.iq("r1", ROSTER_GET);
    assert!(empty.contains("type='result'") && empty.contains("jabber:iq:roster") && !empty.contains("<item"), "{empty}");
    two.iq("r1", ROSTER_GET);

    // RFC 6121 §2.3.2: result to the requester, push to every interested resource.
    let result = add_contact(&mut one, "s1", "bob", "Friends");
    assert!(result.contains("type='result'"), "{result}");
    for client in [&mut one, &mut two] {
        let push = client.expect("type='set'");
        assert!(
            push.contains("jid='bob@localhost'") && push.contains("subscription='none'") && push.contains("<group>Friends</group>"),
            "{push}"
        );
        assert!(push.contains("ver='"), "versioned push: {push}");
    }
    let full = one.iq("r1", ROSTER_GET);
    assert!(full.contains("jid='bob@localhost'") && full.contains("name='bob'"), "{full}");
    let version = full.split("ver='").nth(1).and_then(|v| v.split('\'').next()).expect("ver").to_owned();

    // §2.6.3: a current version gets an empty result.
    let same = one.iq("r2", &format!("<iq type='get' id='r2'><query xmlns='jabber:iq:roster' ver='{version}'/></iq>"));
    assert!(same.contains("type='result'") && !same.contains("<item"), "{same}");
    let stale = one.iq("r3", "<iq type='get' id='r3'><query xmlns='jabber:iq:roster' ver='0'/></iq>");
    assert!(stale.contains("jid='bob@localhost'"), "{stale}");

    // §2.3.3 and §2.5.3 errors.
    let two_items = one
        .iq("e1", "<iq type='set' id='e1'><query xmlns='jabber:iq:roster'><item jid='x@localhost'/><item jid='y@localhost'/></query></iq>");
    assert!(two_items.contains("<bad-request"), "{two_items}");
    let duplicate_groups = one.iq(
        "e2",
        "<iq type='set' id='e2'><query xmlns='jabber:iq:roster'><item jid='x@localhost'><group>a</group><group>a</group></item></query></iq>",
    );
    assert!(duplicate_groups.contains("<bad-request"), "{duplicate_groups}");
    let empty_group =
        one.iq("e3", "<iq type='set' id='e3'><query xmlns='jabber:iq:roster'><item jid='x@localhost'><group></group></item></query></iq>");
    assert!(empty_group.contains("<not-acceptable"), "{empty_group}");
    let missing = one.iq(
        "e4",
        "<iq type='set' id='e4'><query xmlns='jabber:iq:roster'><item jid='nobody@localhost' subscription='remove'/></query></iq>",
    );
    assert!(missing.contains("<item-not-found"), "{missing}");
    let foreign = one.iq("e5", "<iq type='get' id='e5' to='bob@localhost'><query xmlns='jabber:iq:roster'/></iq>");
    assert!(foreign.contains("type='error'"), "another user's roster is not readable: {foreign}");

    // §2.5.2: removal pushes subscription='remove'.
    let removed = one
        .iq("s2", "<iq type='set' id='s2'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>");
    assert!(removed.contains("type='result'"), "{removed}");
    let push = two.expect("subscription='remove'");
    assert!(push.contains("jid='bob@localhost'"), "{push}");
    let after = one.iq("r4", "<iq type='get' id='r4'><query xmlns='jabber:iq:roster'/></iq>");
    assert!(!after.contains("bob@localhost"), "{after}");
}

#[test]
fn subscription_requested_while_offline_is_delivered_at_login_and_presence_flows() {
    let server = Server::start();
    let users = users_on_shards("sub", &[0, 1]);
    let (alice, bob) = (&users[0], &users[1]);
    server.register_all(&users, "pw");
    let mut a = Client::login(&server, alice, "pw", "a");
    a.iq("r1", ROSTER_GET);
    // Bob is offline: the request waits (RFC 6121 §3.1.3).
    a.send(&format!("<presence to='{bob}@localhost' type='subscribe'/>"));
    let push = a.expect("ask='subscribe'");
    assert!(push.contains(&format!("jid='{bob}@localhost'")), "{push}");

    let mut b = Client::bound(&server, bob, "pw", "b");
    b.iq("r1", ROSTER_GET);
    b.send("<presence><status>here</status></presence>");
    let request = b.expect("type='subscribe'");
    assert!(request.contains(&format!("from='{alice}@localhost'")), "{request}");
    b.send(&format!("<presence to='{alice}@localhost' type='subscribed'/>"));
    // §3.1.5–3.1.6: bob's roster gets alice (from); alice's gets bob (to) and bob's presence.
    let bob_push = b.expect("subscription='from'");
    assert!(bob_push.contains(&format!("jid='{alice}@localhost'")), "{bob_push}");
    // The approval first, then the push that records it (§3.1.6), then presence.
    a.expect("type='subscribed'");
    let alice_push = a.expect("subscription='to'");
    assert!(!alice_push.contains("ask="), "{alice_push}");
    let presence = a.expect("<status>here</status>");
    assert!(presence.contains(&format!("from='{bob}@localhost/b'")), "{presence}");

    // Bob leaves: alice hears it (§4.5.2). Bob comes back: alice sees him; a probe from
    // alice's new session gets his presence (§4.3).
    b.send("</stream:stream>");
    let gone = a.expect("type='unavailable'");
    assert!(gone.contains(&format!("from='{bob}@localhost/b'")), "{gone}");
    let mut b = Client::bound(&server, bob, "pw", "b2");
    b.send("<presence><show>away</show></presence>");
    a.expect("<show>away</show>");
    let mut a2 = Client::bound(&server, alice, "pw", "a2");
    a2.send("<presence/>");
    let probed = a2.expect("<show>away</show>");
    assert!(probed.contains(&format!("from='{bob}@localhost/b2'")), "{probed}");
    // Bob is only "from": he gets no presence from alice's new session beyond her own.
    let seen: Vec<String> = b.collect_for(Duration::from_millis(500));
    assert!(!seen.iter().any(|s| s.starts_with("<presence") && s.contains(&format!("from='{alice}@localhost/a2'"))), "{seen:?}");

    // Unsubscribed from bob cancels alice's subscription (§3.2).
    b.send(&format!("<presence to='{alice}@localhost' type='unsubscribed'/>"));
    let cancelled = a.expect("subscription='none'");
    assert!(cancelled.contains(&format!("jid='{bob}@localhost'")), "{cancelled}");
}

#[test]
fn unknown_account_subscription_is_refused_and_directed_presence_is_undone() {
    let server = Server::start();
    server.register("dee", "pw");
    server.register("eve", "pw");
    let mut d = Client::login(&server, "dee", "pw", "d");
    d.send("<presence to='ghost@localhost' type='subscribe'/>");
    let refused = d.expect("type='unsubscribed'");
    assert!(refused.contains("from='ghost@localhost'"), "{refused}");
    let mut e = Client::login(&server, "eve", "pw", "e");
    // Directed presence (§4.6) and its undoing when the sender goes offline (§4.6.3).
    d.send("<presence to='eve@localhost/e'><status>psst</status></presence>");
    e.expect("<status>psst</status>");
    d.send("<presence type='unavailable'/>");
    let gone = e.expect("type='unavailable'");
    assert!(gone.contains("from='dee@localhost/d'"), "{gone}");
}

#[test]
fn offline_messages_carry_a_delay_respect_the_cap_and_survive_a_restart() {
    let mut server = Server::start_with("[limits]\noffline_messages = 2\n");
    let users = users_on_shards("off", &[1, 0]);
    let (sender, recipient) = (&users[0], &users[1]);
    server.register_all(&users, "pw");
    {
        let mut s = Client::login(&server, sender, "pw", "s");
        s.send(&format!("<message to='{recipient}@localhost' type='chat' id='m1'><body>first</body></message>"));
        s.send(&format!("<message to='{recipient}@localhost' type='chat' id='m2'><body>second</body></message>"));
        // Chat states alone are not stored (nothing to read later), and get no error.
        s.send(&format!(
            "<message to='{recipient}@localhost' type='chat' id='cs'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
        ));
        s.send(&format!("<message to='{recipient}@localhost' type='chat' id='m3'><body>third</body></message>"));
        let full = s.expect("id='m3'");
        assert!(full.contains("type='error'") && full.contains("<service-unavailable"), "cap reached: {full}");
        let others = s.collect_for(Duration::from_millis(300));
        assert!(!others.iter().any(|o| o.contains("id='cs'")), "{others:?}");
    }
    // Stored means durable: a crash does not lose them.
    std::thread::sleep(Duration::from_millis(300));
    server.restart();
    let mut r = Client::bound(&server, recipient, "pw", "r");
    // Not before initial presence (XEP-0160 §3), and not to a negative priority.
    assert!(r.collect_for(Duration::from_millis(300)).iter().all(|s| !s.contains("<body>")));
    r.send("<presence><priority>-1</priority></presence>");
    assert!(r.collect_for(Duration::from_millis(300)).iter().all(|s| !s.contains("<body>")));
    r.send("<presence><priority>1</priority></presence>");
    let first = r.expect("<body>first</body>");
    assert!(first.contains("urn:xmpp:delay") && first.contains("stamp='20"), "XEP-0203 stamp: {first}");
    assert!(first.contains(&format!("from='{sender}@localhost/s'")), "{first}");
    r.expect("<body>second</body>");
    drop(r);
    // Delivered once: they are gone now.
    let mut again = Client::bound(&server, recipient, "pw", "r2");
    again.send("<presence/>");
    let seen = again.collect_for(Duration::from_millis(500));
    assert!(!seen.iter().any(|s| s.contains("<body>")), "{seen:?}");
}

#[test]
fn roster_and_vcard_survive_a_restart() {
    let mut server = Server::start();
    server.register("fay", "pw");
    {
        let mut f = Client::login(&server, "fay", "pw", "f");
        f.iq("r1", ROSTER_GET);
        add_contact(&mut f, "s1", "gus", "Work");
        let set = f.iq("v1", "<iq type='set' id='v1'><vCard xmlns='vcard-temp'><FN>Fay Test</FN></vCard></iq>");
        assert!(set.contains("type='result'"), "{set}");
        let private = f.iq("p1", "<iq type='set' id='p1'><query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'><theme>dark</theme></prefs></query></iq>");
        assert!(private.contains("type='result'"), "{private}");
    }
    server.restart();
    let mut f = Client::login(&server, "fay", "pw", "f");
    let roster = f.iq("r1", ROSTER_GET);
    assert!(roster.contains("jid='gus@localhost'") && roster.contains("<group>Work</group>"), "{roster}");
    let vcard = f.iq("v2", "<iq type='get' id='v2'><vCard xmlns='vcard-temp'/></iq>");
    assert!(vcard.contains("<FN>Fay Test</FN>"), "{vcard}");
    let private = f.iq("p2", "<iq type='get' id='p2'><query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'/></query></iq>");
    assert!(private.contains("<theme>dark</theme>"), "{private}");
}

#[test]
fn carbons_copy_sent_and_received_messages_to_other_resources() {
    let server = Server::start();
    let users = users_on_shards("carb", &[0, 1]);
    let (ann, bob) = (&users[0], &users[1]);
    server.register_all(&users, "pw");
    let mut one = Client::login(&server, ann, "pw", "one");
    let mut two = Client::login(&server, ann, "pw", "two");
    let mut b = Client::login(&server, bob, "pw", "b");
    for client in [&mut one, &mut two] {
        let enabled = client.iq("c1", "<iq type='set' id='c1'><enable xmlns='urn:xmpp:carbons:2'/></iq>");
        assert!(enabled.contains("type='result'"), "{enabled}");
    }
    b.send(&format!("<message to='{ann}@localhost/one' type='chat'><body>to one</body></message>"));
    one.expect("<body>to one</body>");
    let received = two.expect("urn:xmpp:carbons:2");
    assert!(
        received.contains("<received") && received.contains("<body>to one</body>") && received.contains("urn:xmpp:forward:0"),
        "{received}"
    );
    one.send(&format!("<message to='{bob}@localhost' type='chat'><body>from one</body></message>"));
    b.expect("<body>from one</body>");
    let sent = two.expect("<sent");
    assert!(sent.contains("<body>from one</body>") && sent.contains(&format!("from='{ann}@localhost/one'")), "{sent}");
    // <private/> opts out (XEP-0280 §7).
    one.send(&format!("<message to='{bob}@localhost' type='chat'><body>secret</body><private xmlns='urn:xmpp:carbons:2'/></message>"));
    b.expect("<body>secret</body>");
    let seen = two.collect_for(Duration::from_millis(400));
    assert!(!seen.iter().any(|s| s.contains("secret")), "{seen:?}");
}

#[test]
fn archive_query_pages_filters_and_rejects_unknown_ids() {
    let server = Server::start();
    let users = users_on_shards("mam", &[1, 0]);
    let (ann, bob) = (&users[0], &users[1]);
    server.register_all(&users, "pw");
    let mut a = Client::login(&server, ann, "pw", "a");
    let mut b = Client::login(&server, bob, "pw", "b");
    for n in 1..=5 {
        a.send(&format!("<message to='{bob}@localhost' type='chat'><body>m{n}</body></message>"));
        let delivered = b.expect(&format!("<body>m{n}</body>"));
        // XEP-0359: the recipient's archive id rides on the delivered message.
        assert!(delivered.contains("urn:xmpp:sid:0") && delivered.contains(&format!("by='{bob}@localhost'")), "{delivered}");
    }
    let features =
        a.iq("d1", &format!("<iq type='get' id='d1' to='{ann}@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"));
    assert!(features.contains("urn:xmpp:mam:2"), "{features}");

    // The last page of two (RSM <before/>).
    a.send("<iq type='set' id='q1'><query xmlns='urn:xmpp:mam:2' queryid='last'><set xmlns='http://jabber.org/protocol/rsm'><max>2</max><before/></set></query></iq>");
    let r4 = a.expect("queryid='last'");
    assert!(r4.contains("<body>m4</body>") && r4.contains("urn:xmpp:delay"), "{r4}");
    let r5 = a.expect("queryid='last'");
    assert!(r5.contains("<body>m5</body>"), "{r5}");
    let fin = a.expect("id='q1'");
    assert!(fin.contains("<fin") && fin.contains("<count>5</count>") && !fin.contains("complete='true'"), "{fin}");
    let first_id =
        fin.split("<first").nth(1).and_then(|f| f.split('>').nth(1)).and_then(|f| f.split('<').next()).expect("first id").to_owned();

    // The page before it, from its first id: m2, m3; then the first page is complete.
    a.send(&format!("<iq type='set' id='q2'><query xmlns='urn:xmpp:mam:2' queryid='prev'><set xmlns='http://jabber.org/protocol/rsm'><max>2</max><before>{first_id}</before></set></query></iq>"));
    a.expect("<body>m2</body>");
    a.expect("<body>m3</body>");
    let fin2 = a.expect("id='q2'");
    assert!(!fin2.contains("complete='true'"), "{fin2}");
    a.send("<iq type='set' id='q3'><query xmlns='urn:xmpp:mam:2' queryid='head'><set xmlns='http://jabber.org/protocol/rsm'><max>10</max></set></query></iq>");
    for n in 1..=5 {
        a.expect(&format!("<body>m{n}</body>"));
    }
    let fin3 = a.expect("id='q3'");
    assert!(fin3.contains("complete='true'"), "{fin3}");

    // Filter by `with` (a JID with no messages: empty and complete).
    let none = a.iq(
        "q4",
        "<iq type='set' id='q4'><query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field><field var='with'><value>nobody@localhost</value></field></x></query></iq>",
    );
    assert!(none.contains("<fin") && none.contains("complete='true'") && none.contains("<count>0</count>"), "{none}");
    // An unknown RSM id: item-not-found (XEP-0313 §4.3.2).
    let unknown = a.iq("q5", "<iq type='set' id='q5'><query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><after>999999</after></set></query></iq>");
    assert!(unknown.contains("<item-not-found"), "{unknown}");
    // Bob's side archived the same messages under his own ids.
    b.send("<iq type='set' id='qb'><query xmlns='urn:xmpp:mam:2' queryid='b'/></iq>");
    b.expect("<body>m1</body>");
    let fin_b = b.expect("id='qb'");
    assert!(fin_b.contains("<count>5</count>"), "{fin_b}");
    // Nobody reads another user's archive.
    let foreign = a.iq("q6", &format!("<iq type='set' id='q6' to='{bob}@localhost'><query xmlns='urn:xmpp:mam:2'/></iq>"));
    assert!(foreign.contains("<forbidden"), "{foreign}");
}

#[test]
fn blocked_contacts_cannot_reach_the_user_and_are_told() {
    let server = Server::start();
    let users = users_on_shards("blk", &[0, 1]);
    let (cat, bob) = (&users[0], &users[1]);
    server.register_all(&users, "pw");
    let mut c = Client::login(&server, cat, "pw", "c");
    let mut b = Client::login(&server, bob, "pw", "b");
    let list = c.iq("l1", "<iq type='get' id='l1'><blocklist xmlns='urn:xmpp:blocking'/></iq>");
    assert!(list.contains("<blocklist") && !list.contains("<item"), "{list}");
    let empty = c.iq("b0", "<iq type='set' id='b0'><block xmlns='urn:xmpp:blocking'/></iq>");
    assert!(empty.contains("<bad-request"), "{empty}");
    let blocked =
        c.iq("b1", &format!("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='{bob}@localhost'/></block></iq>"));
    assert!(blocked.contains("type='result'"), "{blocked}");
    c.expect("<block xmlns='urn:xmpp:blocking'>");

    b.send(&format!("<message to='{cat}@localhost' type='chat' id='x1'><body>let me in</body></message>"));
    let bounce = b.expect("id='x1'");
    assert!(bounce.contains("type='error'") && bounce.contains("<service-unavailable"), "{bounce}");
    b.send(&format!("<presence to='{cat}@localhost/c'/>"));
    let seen = c.collect_for(Duration::from_millis(400));
    assert!(!seen.iter().any(|s| s.contains("let me in") || s.contains(&format!("from='{bob}@localhost/b'"))), "{seen:?}");
    // The user cannot write to a blocked contact either (XEP-0191 §3.3).
    c.send(&format!("<message to='{bob}@localhost' type='chat' id='x2'><body>hi</body></message>"));
    let refused = c.expect("id='x2'");
    assert!(refused.contains("<not-acceptable") && refused.contains("urn:xmpp:blocking:errors"), "{refused}");

    let unblocked = c.iq("u1", "<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'/></iq>");
    assert!(unblocked.contains("type='result'"), "{unblocked}");
    b.send(&format!("<message to='{cat}@localhost' type='chat'><body>better now</body></message>"));
    c.expect("<body>better now</body>");
}

#[test]
fn stream_management_acks_and_resumes_without_losing_a_message() {
    let server = Server::start();
    let users = users_on_shards("sm", &[0, 1]);
    let (sam, bob) = (&users[0], &users[1]);
    server.register_all(&users, "pw");
    // <enable/> before bind is refused (XEP-0198 §3).
    let mut early = Client::authenticated(&server, sam, "pw");
    let features = early.open_stream();
    assert!(features.contains("urn:xmpp:sm:3") && features.contains("urn:xmpp:features:rosterver"), "{features}");
    early.send("<enable xmlns='urn:xmpp:sm:3'/>");
    assert!(early.expect("<failed").contains("unexpected-request"));
    drop(early);

    let mut s = Client::login(&server, sam, "pw", "phone");
    s.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
    let enabled = s.expect("<enabled");
    assert!(enabled.contains("<enabled") && enabled.contains("resume='true'"), "{enabled}");
    let previd = enabled.split("id='").nth(1).and_then(|v| v.split('\'').next()).expect("id").to_owned();
    s.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>");
    s.expect("id='p1'");
    s.send("<r xmlns='urn:xmpp:sm:3'/>");
    let answer = s.expect("<a ");
    assert!(answer.contains("h='1'"), "one stanza handled: {answer}");
    let mut b = Client::login(&server, bob, "pw", "b");
    b.send(&format!("<message to='{sam}@localhost/phone' type='chat'><body>before drop</body></message>"));
    s.expect("<body>before drop</body>");
    // The connection dies without a word; a message arrives meanwhile.
    s.drop_connection();
    std::thread::sleep(Duration::from_millis(300));
    b.send(&format!("<message to='{sam}@localhost/phone' type='chat'><body>while away</body></message>"));
    std::thread::sleep(Duration::from_millis(200));

    // A wrong previd is item-not-found; the right one resumes, resending what was not acked.
    let mut wrong = Client::authenticated(&server, sam, "pw");
    wrong.open_stream();
    wrong.send("<resume xmlns='urn:xmpp:sm:3' previd='nope' h='0'/>");
    assert!(wrong.expect("<failed").contains("item-not-found"));
    drop(wrong);
    let mut resumed = Client::authenticated(&server, sam, "pw");
    resumed.open_stream();
    resumed.send(&format!("<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='0'/>"));
    let ok = resumed.expect("<resumed");
    assert!(ok.contains(&format!("previd='{previd}'")) && ok.contains("h='1'"), "the server handled the ping: {ok}");
    // h=0: the message before the drop is resent, then the one that waited.
    resumed.expect("<body>before drop</body>");
    resumed.expect("<body>while away</body>");
    // The resumed stream carries the same session.
    b.send(&format!("<message to='{sam}@localhost/phone' type='chat'><body>after</body></message>"));
    resumed.expect("<body>after</body>");
    // An h beyond what was sent ends the stream (XEP-0198 §4).
    resumed.send("<a xmlns='urn:xmpp:sm:3' h='999'/>");
    let closed = resumed.read_to_close().join("");
    assert!(closed.contains("undefined-condition"), "{closed}");
}

#[test]
fn unresumed_session_sends_unacknowledged_messages_to_offline_storage() {
    let server = Server::start_with("[limits]\nresume_timeout_s = 1\n");
    server.register("tim", "pw");
    server.register("uma", "pw");
    let mut t = Client::login(&server, "tim", "pw", "t");
    t.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
    let enabled = t.expect("<enabled");
    assert!(enabled.contains("<enabled"), "{enabled}");
    let mut u = Client::login(&server, "uma", "pw", "u");
    u.send("<message to='tim@localhost/t' type='chat'><body>never acked</body></message>");
    t.expect("<body>never acked</body>");
    t.drop_connection();
    std::thread::sleep(Duration::from_millis(2_000));
    let mut again = Client::bound(&server, "tim", "pw", "t2");
    again.send("<presence/>");
    let stored = again.expect("<body>never acked</body>");
    assert!(stored.contains("urn:xmpp:delay"), "{stored}");
}

#[test]
fn inactive_clients_get_presence_later_and_messages_at_once() {
    let server = Server::start();
    server.register("ida", "pw");
    server.register("jon", "pw");
    let mut i = Client::login(&server, "ida", "pw", "i");
    let mut j = Client::login(&server, "jon", "pw", "j");
    i.send("<inactive xmlns='urn:xmpp:csi:0'/>");
    std::thread::sleep(Duration::from_millis(100));
    j.send("<presence to='ida@localhost/i'><status>held</status></presence>");
    let seen = i.collect_for(Duration::from_millis(400));
    assert!(!seen.iter().any(|s| s.contains("held")), "presence waits while inactive: {seen:?}");
    j.send("<message to='ida@localhost/i' type='chat'><body>urgent</body></message>");
    // The held presence comes first, then the message (order kept).
    i.expect("<status>held</status>");
    i.expect("<body>urgent</body>");
    i.send("<active xmlns='urn:xmpp:csi:0'/>");
    j.send("<presence to='ida@localhost/i'><status>live</status></presence>");
    i.expect("<status>live</status>");
}

#[test]
fn small_services_answer_as_their_xeps_say() {
    let server = Server::start();
    server.register("kay", "pw");
    server.register("lou", "pw");
    let mut k = Client::login(&server, "kay", "pw", "k");
    let info = k.iq("d", "<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    for feature in [
        "jabber:iq:roster",
        "vcard-temp",
        "urn:xmpp:carbons:2",
        "urn:xmpp:blocking",
        "jabber:iq:private",
        "jabber:iq:version",
        "urn:xmpp:time",
        "jabber:iq:last",
        "msgoffline",
    ] {
        assert!(info.contains(&format!("var='{feature}'")), "{feature} advertised: {info}");
    }
    let time = k.iq("t", "<iq type='get' id='t' to='localhost'><time xmlns='urn:xmpp:time'/></iq>");
    assert!(time.contains("<utc>20") && time.contains("<tzo>+00:00</tzo>"), "{time}");
    let uptime = k.iq("l", "<iq type='get' id='l' to='localhost'><query xmlns='jabber:iq:last'/></iq>");
    assert!(uptime.contains("seconds='"), "{uptime}");
    // Another user's vCard is readable, not writable.
    let mut l = Client::login(&server, "lou", "pw", "l");
    l.iq("v", "<iq type='set' id='v'><vCard xmlns='vcard-temp'><NICKNAME>Lou</NICKNAME></vCard></iq>");
    let other = k.iq("v2", "<iq type='get' id='v2' to='lou@localhost'><vCard xmlns='vcard-temp'/></iq>");
    assert!(other.contains("<NICKNAME>Lou</NICKNAME>") && other.contains("from='lou@localhost'"), "{other}");
    let write = k.iq("v3", "<iq type='set' id='v3' to='lou@localhost'><vCard xmlns='vcard-temp'><FN>x</FN></vCard></iq>");
    assert!(write.contains("<forbidden"), "{write}");
    // Last activity of a non-contact is refused (XEP-0012 §4).
    let last = k.iq("l2", "<iq type='get' id='l2' to='lou@localhost'><query xmlns='jabber:iq:last'/></iq>");
    assert!(last.contains("<forbidden"), "{last}");
    // jabber:* namespaces are not private storage (XEP-0049 §3).
    let reserved = k.iq("p", "<iq type='set' id='p'><query xmlns='jabber:iq:private'><x xmlns='jabber:iq:roster'/></query></iq>");
    assert!(reserved.contains("<not-acceptable"), "{reserved}");
}

#[test]
fn in_band_registration_creates_changes_and_removes_accounts_when_enabled() {
    // Off by default: not advertised, and a registration request is answered
    // service-unavailable (XEP-0077 §3.1) — the stream goes on, so a client that offers to
    // create the account (Pidgin, Prosody's test runner) logs in next. Any other iq before
    // authentication still ends the stream (RFC 6120 §4.9.3.12).
    let closed = Server::start();
    closed.register("existing", "pw");
    let mut c = Client::connect(&closed);
    let features = c.starttls();
    assert!(!features.contains("iq-register"), "{features}");
    c.send("<iq type='set' id='g'><query xmlns='jabber:iq:register'><username>existing</username><password>x</password></query></iq>");
    let refused = c.expect("id='g'");
    assert!(refused.contains("type='error'") && refused.contains("<service-unavailable"), "{refused}");
    assert!(c.scram("SCRAM-SHA-256", "existing", "pw").contains("<success"));
    let mut c = Client::connect(&closed);
    c.starttls();
    c.send("<iq type='get' id='v'><query xmlns='jabber:iq:version'/></iq>");
    assert!(c.read_to_close().join("").contains("not-authorized"));

    let server = Server::start_with("[registration]\nenabled = true\ninterval_s = 0\n");
    let mut c = Client::connect(&server);
    let features = c.starttls();
    assert!(features.contains("http://jabber.org/features/iq-register"), "{features}");
    let form = c.iq("g", "<iq type='get' id='g'><query xmlns='jabber:iq:register'/></iq>");
    assert!(form.contains("<username/>") && form.contains("<password/>"), "{form}");
    let missing = c.iq("m", "<iq type='set' id='m'><query xmlns='jabber:iq:register'><username>newbie</username></query></iq>");
    assert!(missing.contains("<not-acceptable"), "{missing}");
    let created = c.iq(
        "s",
        "<iq type='set' id='s'><query xmlns='jabber:iq:register'><username>newbie</username><password>first</password></query></iq>",
    );
    assert!(created.contains("type='result'"), "{created}");
    let again = c.iq(
        "s2",
        "<iq type='set' id='s2'><query xmlns='jabber:iq:register'><username>newbie</username><password>x</password></query></iq>",
    );
    assert!(again.contains("<conflict"), "{again}");
    drop(c);

    let mut n = Client::login(&server, "newbie", "first", "r");
    let changed = n.iq(
        "p",
        "<iq type='set' id='p'><query xmlns='jabber:iq:register'><username>newbie</username><password>second</password></query></iq>",
    );
    assert!(changed.contains("type='result'"), "{changed}");
    let mut n2 = Client::login(&server, "newbie", "second", "r2");
    let removed = n2.iq("x", "<iq type='set' id='x'><query xmlns='jabber:iq:register'><remove/></query></iq>");
    assert!(removed.contains("type='result'"), "{removed}");
    assert!(n2.read_to_close().join("").contains("not-authorized"), "sessions of a removed account end");
    let mut gone = Client::connect(&server);
    gone.starttls();
    assert!(gone.scram("SCRAM-SHA-256", "newbie", "second").contains("<failure"));
}

/// The XEP-0115 `ver` of a disco#info `<query/>` (XEP-0115 §5.1), computed independently
/// of the server with the sha1 crate.
fn caps_ver(query: &str) -> String {
    use base64::Engine as _;
    use sha1::Digest as _;
    let element = confab_core::framer::parse_element(query.as_bytes()).expect("query parses");
    let (string, _) = confab_core::pep::verification_string(&element).expect("well-formed query");
    base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(string.as_bytes()))
}

const NICK: &str = "http://jabber.org/protocol/nick";

#[test]
fn pep_notifies_interested_contacts_answers_by_access_model_and_keeps_bookmarks_in_sync() {
    let mut server = Server::start();
    let users = users_on_shards("pep", &[0, 1, 0]);
    let (ann, bob, carl) = (&users[0], &users[1], &users[2]);
    server.register_all(&users, "pw");
    for (a, b) in [(ann, bob), (bob, ann)] {
        let item = serde_json::json!({"localuser": a, "localhost": "localhost", "user": b, "host": "localhost", "nick": "", "group": "", "subs": "both"});
        assert_eq!(server.api("add_rosteritem", item).0, 200);
    }
    let mut a = Client::login(&server, ann, "pw", "a");
    let account =
        a.iq("d", &format!("<iq type='get' id='d' to='{ann}@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"));
    assert!(
        account.contains("category='pubsub'") && account.contains("type='pep'") && account.contains("urn:xmpp:bookmarks:1#compat"),
        "{account}"
    );

    // Bob's client announces caps; the server asks what they mean (XEP-0115 §6.3).
    let query = format!(
        "<query xmlns='http://jabber.org/protocol/disco#info'><identity category='client' type='pc' name='T'/><feature var='http://jabber.org/protocol/disco#info'/><feature var='{NICK}'/><feature var='{NICK}+notify'/></query>"
    );
    let ver = caps_ver(&query);
    let mut b = Client::bound(&server, bob, "pw", "b");
    b.send(&format!("<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='urn:test' ver='{ver}'/></presence>"));
    let disco = b.expect("http://jabber.org/protocol/disco#info");
    assert!(disco.contains(&format!("node='urn:test#{ver}'")), "{disco}");
    let disco_id = disco.split("id='").nth(1).and_then(|v| v.split('\'').next()).expect("id").to_owned();
    b.send(&format!(
        "<iq type='result' id='{disco_id}' to='localhost'>{}</iq>",
        query.replacen("<query ", &format!("<query node='urn:test#{ver}' "), 1)
    ));
    std::thread::sleep(Duration::from_millis(200));

    // Publishing notifies the interested contact (XEP-0163 §4.3.1), not for other nodes.
    let published = a.iq("p1", &format!("<iq type='set' id='p1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{NICK}'><item><nick xmlns='{NICK}'>Annie</nick></item></publish></pubsub></iq>"));
    assert!(published.contains("type='result'") && published.contains("<item id="), "{published}");
    let event = b.expect("http://jabber.org/protocol/pubsub#event");
    assert!(
        event.contains("<nick xmlns='http://jabber.org/protocol/nick'>Annie</nick>") && event.contains(&format!("from='{ann}@localhost'")),
        "{event}"
    );
    a.iq("p2", "<iq type='set' id='p2'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:xmpp:avatar:metadata'><item id='h1'><metadata xmlns='urn:xmpp:avatar:metadata'/></item></publish></pubsub></iq>");
    let seen = b.collect_for(Duration::from_millis(400));
    assert!(!seen.iter().any(|s| s.contains("avatar")), "no +notify, no event: {seen:?}");

    // Items by access model (XEP-0060 §6.5.9): a subscriber may read, a stranger may not.
    let items = b.iq("i1", &format!("<iq type='get' id='i1' to='{ann}@localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{NICK}'/></pubsub></iq>"));
    assert!(items.contains("Annie"), "{items}");
    let mut c = Client::login(&server, carl, "pw", "c");
    let refused = c.iq("i2", &format!("<iq type='get' id='i2' to='{ann}@localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{NICK}'/></pubsub></iq>"));
    assert!(refused.contains("<not-authorized") && refused.contains("presence-subscription-required"), "{refused}");
    let missing = b.iq("i3", &format!("<iq type='get' id='i3' to='{ann}@localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:nothing'/></pubsub></iq>"));
    assert!(missing.contains("<item-not-found"), "{missing}");
    let no_node = a.iq("e1", "<iq type='set' id='e1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish><item><x xmlns='urn:x'/></item></publish></pubsub></iq>");
    assert!(no_node.contains("nodeid-required"), "{no_node}");

    // XEP-0402 #compat: XEP-0048 bookmarks in private storage are the bookmarks node.
    let stored = a.iq(
        "b1",
        "<iq type='set' id='b1'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'><conference jid='team@conference.localhost' name='Team' autojoin='true'><nick>ann</nick></conference></storage></query></iq>",
    );
    assert!(stored.contains("type='result'"), "{stored}");
    let bookmarks = a.iq(
        "b2",
        "<iq type='get' id='b2'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:bookmarks:1'/></pubsub></iq>",
    );
    assert!(
        bookmarks.contains("id='team@conference.localhost'")
            && bookmarks.contains("urn:xmpp:bookmarks:1")
            && bookmarks.contains("name='Team'"),
        "{bookmarks}"
    );
    let legacy = a.iq("b3", "<iq type='get' id='b3'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>");
    assert!(legacy.contains("jid='team@conference.localhost'"), "{legacy}");
    // Bookmarks are private (whitelist): even a subscriber gets nothing.
    let private = b.iq("b4", &format!("<iq type='get' id='b4' to='{ann}@localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:bookmarks:1'/></pubsub></iq>"));
    assert!(private.contains("type='error'"), "{private}");
    // Publish-options that the node does not satisfy (XEP-0060 §7.1.5).
    let mismatch = a.iq(
        "b5",
        "<iq type='set' id='b5'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:xmpp:bookmarks:1'><item id='x@conference.localhost'><conference xmlns='urn:xmpp:bookmarks:1'/></item></publish><publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='pubsub#access_model'><value>open</value></field></x></publish-options></pubsub></iq>",
    );
    assert!(mismatch.contains("precondition-not-met"), "{mismatch}");
    // A second client with the same caps: known `ver`, no question, the last item at once.
    let mut b3 = Client::bound(&server, bob, "pw", "b3");
    b3.send(&format!("<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='urn:test' ver='{ver}'/></presence>"));
    let cached = b3.expect("Annie");
    assert!(cached.contains("pubsub#event"), "{cached}");
    drop(b);
    drop(b3);

    // Items survive a restart; a returning client with known caps gets the last item at once.
    server.restart();
    let mut b = Client::bound(&server, bob, "pw", "b2");
    b.send(&format!("<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='urn:test' ver='{ver}'/></presence>"));
    let disco = b.expect("http://jabber.org/protocol/disco#info");
    let disco_id = disco.split("id='").nth(1).and_then(|v| v.split('\'').next()).expect("id").to_owned();
    b.send(&format!("<iq type='result' id='{disco_id}' to='localhost'>{query}</iq>"));
    let last = b.expect("Annie");
    assert!(last.contains("pubsub#event") && last.contains("urn:xmpp:delay"), "last item on presence, with its stamp: {last}");
}

#[test]
fn a_forged_stanza_id_is_removed_even_from_messages_not_archived() {
    let server = Server::start();
    server.register("vic", "pw");
    server.register("mal", "pw");
    let mut v = Client::login(&server, "vic", "pw", "v");
    let mut m = Client::login(&server, "mal", "pw", "m");
    // XEP-0359 §3: a headline is not archived, but our `by` must still not be forgeable.
    m.send("<message to='vic@localhost/v' type='headline'><body>news</body><stanza-id xmlns='urn:xmpp:sid:0' by='vic@localhost' id='forged'/></message>");
    let got = v.expect("<body>news</body>");
    assert!(!got.contains("forged"), "{got}");
}

#[test]
fn probes_tell_non_subscribers_unsubscribed_and_subscribers_when_the_contact_was_last_seen() {
    let server = Server::start();
    for user in ["pia", "quin", "rex"] {
        server.register(user, "pw");
    }
    // quin's roster says pia is subscribed to her; rex's roster thinks it is too, quin's does not.
    for (local, contact, subs) in [("quin", "pia", "from"), ("pia", "quin", "to"), ("rex", "quin", "to")] {
        let item = serde_json::json!({"localuser": local, "localhost": "localhost", "user": contact, "host": "localhost", "nick": "", "group": "", "subs": subs});
        assert_eq!(server.api("add_rosteritem", item).0, 200);
    }
    {
        let mut q = Client::login(&server, "quin", "pw", "q");
        q.send("<presence type='unavailable'><status>at lunch</status></presence>");
        q.expect("type='unavailable'");
    }
    std::thread::sleep(Duration::from_millis(200));
    // RFC 6121 §4.3.2: the subscriber learns when quin left, with the status she left with.
    let mut p = Client::bound(&server, "pia", "pw", "p");
    p.send("<presence/>");
    let last = p.expect("from='quin@localhost'");
    assert!(last.contains("type='unavailable'") && last.contains("at lunch") && last.contains("urn:xmpp:delay"), "{last}");
    // The non-subscriber's probe gets `unsubscribed`, which puts its roster right.
    let mut r = Client::bound(&server, "rex", "pw", "r");
    r.iq("r1", ROSTER_GET);
    r.send("<presence/>");
    let push = r.expect("subscription='none'");
    assert!(push.contains("jid='quin@localhost'"), "{push}");
}

#[test]
fn a_replaced_session_is_announced_as_gone_to_contacts() {
    let server = Server::start();
    server.register("sue", "pw");
    server.register("ted", "pw");
    for (a, b) in [("sue", "ted"), ("ted", "sue")] {
        let item = serde_json::json!({"localuser": a, "localhost": "localhost", "user": b, "host": "localhost", "nick": "", "group": "", "subs": "both"});
        assert_eq!(server.api("add_rosteritem", item).0, 200);
    }
    let mut t = Client::login(&server, "ted", "pw", "t");
    let mut s1 = Client::bound(&server, "sue", "pw", "phone");
    s1.send("<presence><status>first</status></presence>");
    t.expect("<status>first</status>");
    // RFC 6120 §7.7.2.2: the same resource again replaces the session; RFC 6121 §4.5.2: the
    // old one's presence ends before the new one's begins.
    let _s2 = Client::bound(&server, "sue", "pw", "phone");
    let gone = t.expect("type='unavailable'");
    assert!(gone.contains("from='sue@localhost/phone'"), "{gone}");
    assert!(s1.read_to_close().join("").contains("conflict"));
}

#[test]
fn a_re_registered_account_starts_empty() {
    let server = Server::start();
    server.register("uli", "pw");
    {
        let mut u = Client::login(&server, "uli", "pw", "u");
        u.iq("r1", ROSTER_GET);
        add_contact(&mut u, "s1", "someone", "Old");
        u.iq("v1", "<iq type='set' id='v1'><vCard xmlns='vcard-temp'><FN>Old Uli</FN></vCard></iq>");
    }
    let (status, _) = server.api("unregister", serde_json::json!({"user": "uli", "host": "localhost"}));
    assert_eq!(status, 200);
    server.register("uli", "new");
    let mut u = Client::login(&server, "uli", "new", "u");
    let roster = u.iq("r1", ROSTER_GET);
    assert!(!roster.contains("someone"), "{roster}");
    let vcard = u.iq("v2", "<iq type='get' id='v2'><vCard xmlns='vcard-temp'/></iq>");
    assert!(!vcard.contains("Old Uli"), "{vcard}");
}

/// limits.account_bytes bounds everything one account stores (held in memory on its home
/// shard): past it a change that grows state is refused with resource-constraint, and an
/// offline message bounces; the state the account had stays.
#[test]
fn stored_state_is_bounded_in_bytes_per_account() {
    let server = Server::start_with("[limits]\naccount_bytes = 65536\n");
    server.register("budget", "pw");
    server.register("budget-friend", "pw");
    let mut client = Client::login(&server, "budget", "pw", "r");
    let small = "<iq type='set' id='v1'><vCard xmlns='vcard-temp'><FN>Small</FN></vCard></iq>";
    assert!(client.iq("v1", small).contains("type='result'"));
    let big = format!("<iq type='set' id='v2'><vCard xmlns='vcard-temp'><DESC>{}</DESC></vCard></iq>", "d".repeat(70 * 1024));
    let answer = client.iq("v2", &big);
    assert!(answer.contains("type='error'") && answer.contains("<resource-constraint"), "{answer}");
    let vcard = client.iq("v3", "<iq type='get' id='v3'><vCard xmlns='vcard-temp'/></iq>");
    assert!(vcard.contains("Small") && !vcard.contains("ddd"), "the vCard it had stays: {vcard}");
    let private = format!(
        "<iq type='set' id='p1'><query xmlns='jabber:iq:private'><x xmlns='urn:example:big'>{}</x></query></iq>",
        "p".repeat(70 * 1024)
    );
    assert!(client.iq("p1", &private).contains("<resource-constraint"));
    // One fragment named twice in a set is one fragment (the last wins), counted once.
    let twice = "<iq type='set' id='p2'><query xmlns='jabber:iq:private'><x xmlns='urn:example:dup'>a</x><x xmlns='urn:example:dup'>b</x></query></iq>";
    assert!(client.iq("p2", twice).contains("type='result'"));
    assert!(client.iq("p3", twice.replace("p2", "p3").as_str()).contains("type='result'"), "replacing it again works");
    // An offline message that would not fit bounces to its sender.
    drop(client);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server.api("connected_users_number", serde_json::json!({})).1["num_sessions"] != 0 {
        assert!(std::time::Instant::now() < deadline, "the session never ended");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut friend = Client::login(&server, "budget-friend", "pw", "r");
    friend.send(&format!("<message to='budget@localhost' id='o1' type='chat'><body>{}</body></message>", "o".repeat(70 * 1024)));
    let bounce = friend.expect("id='o1'");
    assert!(bounce.contains("type='error'"), "{bounce}");
}

/// What the peer suite (Prosody's scripts, tests/peer) showed, pinned here on its own: a
/// pre-approved subscription is answered in order (RFC 6120 §10.1: `subscribed`, its roster
/// push, then presence); one's own last activity carries the last unavailable status
/// (XEP-0012 §4); the account lists its PEP nodes on disco#items (XEP-0060 §5.2) and says so.
#[test]
fn preapproval_order_own_last_status_and_account_items() {
    let server = Server::start();
    let users = users_on_shards("peer", &[0, 1, 1]);
    server.register_all(&users, "pw");
    let (alice, bob, carol) = (&users[0], &users[1], &users[2]);
    let mut a = Client::bound(&server, alice, "pw", "a");
    a.iq("r1", ROSTER_GET);
    a.send("<presence><status>in</status></presence>");
    a.expect("<status>in</status>");
    // §3.4: alice pre-approves bob; bob's request is then approved without asking her.
    a.send(&format!("<presence to='{bob}@localhost' type='subscribed'/>"));
    a.expect("approved='true'");
    let mut b = Client::bound(&server, bob, "pw", "b");
    b.iq("r1", ROSTER_GET);
    b.send("<presence/>");
    b.expect("<presence");
    b.send(&format!("<presence to='{alice}@localhost' type='subscribe'/>"));
    let mut seen = Vec::new();
    while !seen.iter().any(|f: &String| f.contains("<status>in</status>")) {
        seen.push(b.next().expect("connection open"));
    }
    let at = |needle: &str| seen.iter().position(|f| f.contains(needle)).unwrap_or_else(|| panic!("no {needle}: {seen:#?}"));
    assert!(
        at("ask='subscribe'") < at("type='subscribed'")
            && at("type='subscribed'") < at("subscription='to'")
            && at("subscription='to'") < at("<status>in</status>"),
        "{seen:#?}"
    );
    let approval = &seen[at("type='subscribed'")];
    assert!(approval.contains(&format!("from='{alice}@localhost'")) && !approval.contains(&format!("{alice}@localhost/")), "{approval}");

    // XEP-0012 §4: asked of one's own account after going unavailable, the status left.
    b.send("<presence type='unavailable'><status>Goodbye</status></presence>");
    b.expect("type='unavailable'");
    let last = b.iq("l1", "<iq type='get' id='l1'><query xmlns='jabber:iq:last'/></iq>");
    assert!(last.contains(">Goodbye</query>"), "{last}");

    // XEP-0060 §5.2 on the account: its nodes, the ones the requester may access.
    let info = a.iq("i1", "<iq type='get' id='i1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    assert!(info.contains("var='http://jabber.org/protocol/disco#items'"), "{info}");
    a.iq("p1", "<iq type='set' id='p1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='http://jabber.org/protocol/tune'><item><tune xmlns='http://jabber.org/protocol/tune'/></item></publish></pubsub></iq>");
    let own = a.iq("d1", "<iq type='get' id='d1'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>");
    assert!(own.contains(&format!("jid='{alice}@localhost' node='http://jabber.org/protocol/tune'")), "{own}");
    let mut c = Client::bound(&server, carol, "pw", "c");
    let theirs =
        c.iq("d2", &format!("<iq type='get' id='d2' to='{alice}@localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"));
    assert!(theirs.contains("type='result'") && !theirs.contains("node="), "presence access model, no subscription: {theirs}");
    let subscriber =
        b.iq("d3", &format!("<iq type='get' id='d3' to='{alice}@localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"));
    assert!(subscriber.contains("node='http://jabber.org/protocol/tune'"), "{subscriber}");
}

/// RFC 6121 §3.1.3: a request made while the contact is offline reaches the contact at the
/// next login as it was sent — with its XEP-0172 `<nick/>` (what Conversations and Gajim show
/// for a stranger) — across a restart too; once answered, nothing of it is kept.
#[test]
fn a_waiting_subscription_request_keeps_what_it_carried() {
    let mut server = Server::start();
    let users = users_on_shards("keep", &[0, 1]);
    server.register_all(&users, "pw");
    let (alice, bob) = (&users[0], &users[1]);
    let mut a = Client::bound(&server, alice, "pw", "a");
    a.send(&format!(
        "<presence to='{bob}@localhost' type='subscribe'><nick xmlns='http://jabber.org/protocol/nick'>Alice A.</nick></presence>"
    ));
    a.iq("r1", ROSTER_GET);
    drop(a);
    server.restart();

    let mut b = Client::bound(&server, bob, "pw", "b");
    b.send("<presence/>");
    let request = b.expect("type='subscribe'");
    assert!(
        request.contains(&format!("from='{alice}@localhost'"))
            && request.contains("<nick xmlns='http://jabber.org/protocol/nick'>Alice A.</nick>"),
        "{request}"
    );
    b.send(&format!("<presence to='{alice}@localhost' type='subscribed'/>"));
    b.iq("r1", ROSTER_GET);
    drop(b);
    // Answered: a later login brings no request again.
    let mut b = Client::bound(&server, bob, "pw", "b2");
    b.send("<presence/>");
    let seen = b.collect_for(Duration::from_millis(500));
    assert!(!seen.iter().any(|f| f.contains("type='subscribe'")), "{seen:?}");
    assert!(!server.log().contains("unreadable stored item"), "{}", server.log());
}
