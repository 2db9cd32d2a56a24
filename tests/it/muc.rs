//! Multi-user chat over the wire (XEP-0045 at conference.localhost): creation, joining and
//! its errors, presence and status codes, groupchat, history, subject, private messages,
//! nickname changes, moderation (kick, ban, voice, lists), members-only and password rooms,
//! invitations (mediated and XEP-0249), configuration forms, destruction, persistence across a
//! restart with the room archive (XEP-0313), and the service's limits. Occupants are placed
//! on both shards, so every fan-out crosses shards.

use std::time::Duration;

use crate::support::{users_on_shards, Client, Server};

const SERVICE: &str = "conference.localhost";

/// Reads frames up to and including the first that contains `needle`.
fn until(client: &mut Client, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    while let Some(frame) = client.next() {
        let done = frame.contains(needle);
        seen.push(frame);
        if done {
            return seen;
        }
    }
    panic!("connection closed before {needle:?}; saw {seen:#?}");
}

/// Joins `room` as `nick` and returns everything the room sent up to the subject, which
/// ends a join (§7.2.15).
fn join(client: &mut Client, room: &str, nick: &str, extra: &str) -> Vec<String> {
    client.send(&format!("<presence to='{room}@{SERVICE}/{nick}'><x xmlns='http://jabber.org/protocol/muc'>{extra}</x></presence>"));
    until(client, "<subject")
}

/// Creates `room` as `nick` and unlocks it as an instant room (§10.1.2).
fn create(client: &mut Client, room: &str, nick: &str) -> Vec<String> {
    let frames = join(client, room, nick, "");
    let result = client.iq(
        "instant",
        &format!("<iq type='set' id='instant' to='{room}@{SERVICE}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>"),
    );
    assert!(result.contains("type='result'"), "{result}");
    // §10.2.1: the owner hears that the configuration changed (the room is open now).
    until(client, "code='104'");
    frames
}

/// Submits a configuration form; returns what arrived up to its answer, joined.
fn configure(client: &mut Client, room: &str, fields: &[(&str, &str)]) -> String {
    let mut form = String::from("<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>");
    for (var, value) in fields {
        form.push_str(&format!("<field var='{var}'><value>{value}</value></field>"));
    }
    // Everything up to the answer, then the room's notice to occupants (104), which every
    // accepted configuration gets (§10.2.1), after the answer (§10.2's order).
    client.send(&format!("<iq type='set' id='cfg' to='{room}@{SERVICE}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'>{form}</x></query></iq>"));
    let mut frames = until(client, "id='cfg'");
    if frames.last().is_some_and(|f| f.contains("type='result'")) {
        frames.extend(until(client, "code='104'"));
    }
    frames.join("\n")
}

fn admin(client: &mut Client, room: &str, id: &str, item: &str) -> String {
    client.iq(
        id,
        &format!("<iq type='set' id='{id}' to='{room}@{SERVICE}'><query xmlns='http://jabber.org/protocol/muc#admin'>{item}</query></iq>"),
    )
}

fn codes(frame: &str) -> Vec<u16> {
    frame.split("<status code='").skip(1).filter_map(|rest| rest.split('\'').next()?.parse().ok()).collect()
}

fn one_with<'a>(frames: &'a [String], needles: &[&str]) -> &'a String {
    frames.iter().find(|f| needles.iter().all(|n| f.contains(n))).unwrap_or_else(|| panic!("no frame with {needles:?} in {frames:#?}"))
}

#[test]
fn create_join_talk_history_subject_private_nick_change_and_leave() {
    let server = Server::start();
    let users = users_on_shards("mucu", &[0, 1, 1]);
    server.register_all(&users, "pw");
    let (ann, bob, cy) = (&users[0], &users[1], &users[2]);
    let mut a = Client::bound(&server, ann, "pw", "r");
    let mut b = Client::bound(&server, bob, "pw", "r");
    let mut c = Client::bound(&server, cy, "pw", "r");
    a.send("<presence/>");
    b.send("<presence/>");

    // §10.1.1: the creator gets 110 and 201, as owner and moderator; the room is locked
    // until configured (§10.1.2), so nobody else may enter.
    let frames = join(&mut a, "talk", "Ann", "");
    let own = one_with(&frames, &["from='talk@conference.localhost/Ann'", "<x xmlns='http://jabber.org/protocol/muc#user'"]);
    assert!(codes(own).contains(&110) && codes(own).contains(&201), "{own}");
    assert!(own.contains("affiliation='owner'") && own.contains("role='moderator'"), "{own}");
    let locked = join_error(&mut b, "talk", "Bob");
    assert!(locked.contains("<item-not-found"), "{locked}");
    let form =
        a.iq("f1", &format!("<iq type='get' id='f1' to='talk@{SERVICE}'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>"));
    assert!(form.contains("http://jabber.org/protocol/muc#roomconfig") && form.contains("muc#roomconfig_persistentroom"), "{form}");
    let result = a.iq("instant", &format!("<iq type='set' id='instant' to='talk@{SERVICE}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>"));
    assert!(result.contains("type='result'"), "{result}");

    // §7.2.1: a nickname is required; §7.2.9: a nickname in use is a conflict.
    b.send(&format!("<presence to='talk@{SERVICE}' id='nonick'><x xmlns='http://jabber.org/protocol/muc'/></presence>"));
    let malformed = b.expect("id='nonick'");
    assert!(malformed.contains("type='error'") && malformed.contains("<jid-malformed"), "{malformed}");
    let conflict = join_error(&mut b, "talk", "Ann");
    assert!(conflict.contains("<conflict"), "{conflict}");

    // §7.4: a non-occupant may not post.
    b.send(&format!("<message to='talk@{SERVICE}' type='groupchat' id='early'><body>hi</body></message>"));
    let refused = b.expect("id='early'");
    assert!(refused.contains("<not-acceptable"), "{refused}");

    // Ann posts before Bob joins: history.
    for i in 1..=3 {
        a.send(&format!("<message to='talk@{SERVICE}' type='groupchat' id='h{i}'><body>history {i}</body></message>"));
        let echo = a.expect(&format!("id='h{i}'"));
        assert!(echo.contains("from='talk@conference.localhost/Ann'") && echo.contains("type='groupchat'"), "§7.4 reflection: {echo}");
    }
    a.send(&format!("<message to='talk@{SERVICE}' type='groupchat' id='s1'><subject>Plans</subject></message>"));
    a.expect("<subject>Plans</subject>");

    // §7.2.3–7.2.15 in order: occupants' presence, own presence (110), history with delay,
    // then the subject. maxstanzas=2 keeps the last two.
    let frames = join(&mut b, "talk", "Bob", "<history maxstanzas='2'/>");
    let position = |needle: &str| frames.iter().position(|f| f.contains(needle)).unwrap_or_else(|| panic!("{needle} not in {frames:#?}"));
    let ann_presence = position("from='talk@conference.localhost/Ann'>");
    let own = position("code='110'");
    assert!(ann_presence < own, "{frames:#?}");
    assert!(!frames.iter().any(|f| f.contains("history 1")), "maxstanzas=2: {frames:#?}");
    let second = position("history 2");
    let third = position("history 3");
    let subject = position("<subject>Plans</subject>");
    assert!(own < second && second < third && third < subject, "{frames:#?}");
    assert!(
        frames[second].contains("<delay xmlns='urn:xmpp:delay'") && frames[second].contains("from='talk@conference.localhost'"),
        "{}",
        frames[second]
    );
    // Semi-anonymous room: Bob sees no real JIDs; Ann (moderator) sees Bob's.
    assert!(!frames[ann_presence].contains(" jid="), "{}", frames[ann_presence]);
    let bob_presence = a.expect("from='talk@conference.localhost/Bob'");
    assert!(bob_presence.contains(&format!("jid='{bob}@localhost/r'")) && bob_presence.contains("role='participant'"), "{bob_presence}");

    // maxchars=0: no history at all.
    let frames = join(&mut c, "talk", "Cy", "<history maxchars='0'/>");
    assert!(!frames.iter().any(|f| f.contains("history ")), "{frames:#?}");
    a.expect("from='talk@conference.localhost/Cy'");
    b.expect("from='talk@conference.localhost/Cy'");

    // Groupchat: every occupant gets it from the sender's nick, the sender included.
    b.send(&format!("<message to='talk@{SERVICE}' type='groupchat' id='g1'><body>hello room</body></message>"));
    for client in [&mut a, &mut b, &mut c] {
        let got = client.expect("hello room");
        assert!(got.contains("from='talk@conference.localhost/Bob'") && got.contains("type='groupchat'"), "{got}");
    }

    // §7.5: a private message, from the sender's nick; to a missing nick: item-not-found;
    // of type groupchat: bad-request.
    c.send(&format!("<message to='talk@{SERVICE}/Ann' type='chat' id='pm1'><body>psst</body></message>"));
    let pm = a.expect("psst");
    assert!(
        pm.contains("from='talk@conference.localhost/Cy'")
            && pm.contains("type='chat'")
            && pm.contains("http://jabber.org/protocol/muc#user"),
        "{pm}"
    );
    c.send(&format!("<message to='talk@{SERVICE}/Nobody' type='chat' id='pm2'><body>x</body></message>"));
    assert!(c.expect("id='pm2'").contains("<item-not-found"));
    c.send(&format!("<message to='talk@{SERVICE}/Ann' type='groupchat' id='pm3'><body>x</body></message>"));
    assert!(c.expect("id='pm3'").contains("<bad-request"));

    // §7.6: nickname change: 303 with the new nick, then presence from the new nick.
    c.send(&format!("<presence to='talk@{SERVICE}/Bob'/>"));
    let taken = c.expect("type='error'");
    assert!(taken.contains("<conflict"), "{taken}");
    c.send(&format!("<presence to='talk@{SERVICE}/Cyrus'/>"));
    let old = b.expect("from='talk@conference.localhost/Cy'");
    assert!(old.contains("type='unavailable'") && codes(&old).contains(&303) && old.contains("nick='Cyrus'"), "{old}");
    let new = b.expect("from='talk@conference.localhost/Cyrus'");
    assert!(!new.contains("type='unavailable'"), "{new}");
    let own_old = c.expect("from='talk@conference.localhost/Cy'");
    assert!(codes(&own_old).contains(&303) && codes(&own_old).contains(&110), "{own_old}");

    // §7.7 status change is rebroadcast with the payload.
    c.send(&format!("<presence to='talk@{SERVICE}/Cyrus'><show>away</show><status>lunch</status></presence>"));
    let away = a.expect("<status>lunch</status>");
    assert!(away.contains("from='talk@conference.localhost/Cyrus'") && away.contains("<show>away</show>"), "{away}");

    // disco#info and disco#items of the room (§6.4, §6.5) and of the service (§6.1, §6.3).
    let info =
        b.iq("d1", &format!("<iq type='get' id='d1' to='talk@{SERVICE}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"));
    for feature in [
        "http://jabber.org/protocol/muc",
        "muc_temporary",
        "muc_public",
        "muc_open",
        "muc_semianonymous",
        "muc_unsecured",
        "muc#roominfo_occupants",
    ] {
        assert!(info.contains(feature), "{feature}: {info}");
    }
    let items =
        b.iq("d2", &format!("<iq type='get' id='d2' to='talk@{SERVICE}'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"));
    assert!(items.contains("talk@conference.localhost/Ann") && items.contains("talk@conference.localhost/Cyrus"), "{items}");
    let service = b.iq("d3", &format!("<iq type='get' id='d3' to='{SERVICE}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"));
    assert!(service.contains("category='conference'") && service.contains("http://jabber.org/protocol/muc"), "{service}");
    let rooms = b.iq("d4", &format!("<iq type='get' id='d4' to='{SERVICE}'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"));
    assert!(rooms.contains("jid='talk@conference.localhost'"), "{rooms}");
    let server_items = b.iq("d5", "<iq type='get' id='d5' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>");
    assert!(server_items.contains("jid='conference.localhost'"), "the service is discoverable from the server: {server_items}");

    // §7.14: leaving; the others see unavailable, the leaver gets 110. Closing the stream
    // leaves too (the session's directed presence ends).
    b.send(&format!("<presence to='talk@{SERVICE}/Bob' type='unavailable'><status>bye</status></presence>"));
    let gone = a.expect("from='talk@conference.localhost/Bob'");
    assert!(gone.contains("type='unavailable'") && gone.contains("role='none'") && gone.contains("<status>bye</status>"), "{gone}");
    let own_gone = b.expect("from='talk@conference.localhost/Bob'");
    assert!(codes(&own_gone).contains(&110), "{own_gone}");
    c.drop_connection();
    let dropped = a.expect("from='talk@conference.localhost/Cyrus'");
    assert!(dropped.contains("type='unavailable'"), "{dropped}");
}

/// A join that must fail: the error presence.
fn join_error(client: &mut Client, room: &str, nick: &str) -> String {
    client.send(&format!("<presence to='{room}@{SERVICE}/{nick}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"));
    let error = client.expect("type='error'");
    assert!(error.contains(&format!("from='{room}@conference.localhost/{nick}'")), "{error}");
    error
}

#[test]
fn moderation_voice_kick_ban_lists_and_their_errors() {
    let server = Server::start();
    let users = users_on_shards("modu", &[0, 1, 0]);
    server.register_all(&users, "pw");
    let (owner, visitor, admin_user) = (&users[0], &users[1], &users[2]);
    let mut o = Client::bound(&server, owner, "pw", "r");
    let mut v = Client::bound(&server, visitor, "pw", "r");
    let mut d = Client::bound(&server, admin_user, "pw", "r");
    create(&mut o, "mod", "Owner");
    let result = configure(&mut o, "mod", &[("muc#roomconfig_moderatedroom", "1"), ("muc#roomconfig_whois", "anyone")]);
    assert!(result.contains("id='cfg' from='mod@conference.localhost'") || result.contains("type='result'"), "{result}");
    // §10.2.1: occupants hear of the change (104) and that the room is now non-anonymous (172).
    let notice = result.split('\n').find(|f| f.contains("code='104'")).unwrap_or_else(|| panic!("no 104 notice: {result}"));
    assert!(codes(notice).contains(&172), "{notice}");

    // A moderated room: an unaffiliated user enters as a visitor and may not speak (§7.4).
    let frames = join(&mut v, "mod", "Vic", "");
    let own = one_with(&frames, &["code='110'"]);
    assert!(own.contains("role='visitor'") && codes(own).contains(&100), "non-anonymous: 100 on join: {own}");
    v.send(&format!("<message to='mod@{SERVICE}' type='groupchat' id='mute'><body>may I?</body></message>"));
    assert!(v.expect("id='mute'").contains("<forbidden"));

    // §8.3: a moderator grants voice; the presence shows the new role.
    let granted = admin(&mut o, "mod", "voice", "<item nick='Vic' role='participant'/>");
    assert!(granted.contains("type='result'"), "{granted}");
    let update = v.expect("role='participant'");
    assert!(codes(&update).contains(&110), "{update}");
    v.send(&format!("<message to='mod@{SERVICE}' type='groupchat' id='talk'><body>thanks</body></message>"));
    o.expect("thanks");

    // Non-moderators may not change roles; §9.3/§10.3 lists and admin grants.
    let denied = admin(&mut v, "mod", "k0", "<item nick='Owner' role='none'/>");
    assert!(denied.contains("<forbidden"), "{denied}");
    let made_admin = admin(&mut o, "mod", "adm", &format!("<item affiliation='admin' jid='{admin_user}@localhost'/>"));
    assert!(made_admin.contains("type='result'"), "{made_admin}");
    join(&mut d, "mod", "Dee", "");
    let list = o.iq("l1", &format!("<iq type='get' id='l1' to='mod@{SERVICE}'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='admin'/></query></iq>"));
    assert!(list.contains(&format!("jid='{admin_user}@localhost'")), "{list}");
    let moderators = d.iq("l2", &format!("<iq type='get' id='l2' to='mod@{SERVICE}'><query xmlns='http://jabber.org/protocol/muc#admin'><item role='moderator'/></query></iq>"));
    assert!(moderators.contains("nick='Owner'") && moderators.contains("nick='Dee'"), "{moderators}");
    let visitor_list = v.iq("l3", &format!("<iq type='get' id='l3' to='mod@{SERVICE}'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='outcast'/></query></iq>"));
    assert!(visitor_list.contains("<forbidden"), "{visitor_list}");

    // §8.2: an admin cannot be kicked, nor may an admin make an owner (§10.3 owners only).
    let kick_admin = admin(&mut o, "mod", "k1", "<item nick='Dee' role='none'/>");
    assert!(kick_admin.contains("<not-allowed"), "{kick_admin}");
    let escalate = admin(&mut d, "mod", "k2", &format!("<item affiliation='owner' jid='{visitor}@localhost'/>"));
    assert!(escalate.contains("<not-allowed"), "{escalate}");
    // §10.6: the last owner cannot step down.
    let last = admin(&mut o, "mod", "k3", &format!("<item affiliation='none' jid='{owner}@localhost'/>"));
    assert!(last.contains("<conflict"), "{last}");
    let missing = admin(&mut o, "mod", "k4", "<item nick='Nobody' role='none'/>");
    assert!(missing.contains("<item-not-found"), "{missing}");

    // §8.2 kick: 307 with actor and reason to the kicked (with 110) and to the others.
    let kicked = admin(&mut d, "mod", "kick", "<item nick='Vic' role='none'><reason>spam</reason></item>");
    assert!(kicked.contains("type='result'"), "{kicked}");
    let gone = v.expect("type='unavailable'");
    assert!(
        codes(&gone).contains(&307)
            && codes(&gone).contains(&110)
            && gone.contains("<reason>spam</reason>")
            // A non-anonymous room (whois anyone): the actor's real JID too (XEP-0045 1.16+).
            && gone.contains(&format!("<actor nick='Dee' jid='{admin_user}@localhost/r'/>")),
        "{gone}"
    );
    let seen = o.expect("from='mod@conference.localhost/Vic' type='unavailable'");
    assert!(codes(&seen).contains(&307) && !codes(&seen).contains(&110), "{seen}");

    // The kicked may come back; a ban (§9.1) removes with 301 and keeps them out (§7.2.8).
    join(&mut v, "mod", "Vic", "");
    let banned =
        admin(&mut d, "mod", "ban", &format!("<item affiliation='outcast' jid='{visitor}@localhost'><reason>again</reason></item>"));
    assert!(banned.contains("type='result'"), "{banned}");
    let out = v.expect("type='unavailable'");
    assert!(codes(&out).contains(&301) && out.contains("affiliation='outcast'"), "{out}");
    let refused = join_error(&mut v, "mod", "Vic");
    assert!(refused.contains("<forbidden") && refused.contains("type='auth'"), "{refused}");
    let outcasts = d.iq("l4", &format!("<iq type='get' id='l4' to='mod@{SERVICE}'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='outcast'/></query></iq>"));
    assert!(outcasts.contains(&format!("jid='{visitor}@localhost'")) && outcasts.contains("<reason>again</reason>"), "{outcasts}");

    // A malformed admin request is a bad-request.
    let bad = admin(&mut o, "mod", "bad", "<item role='emperor' nick='Dee'/>");
    assert!(bad.contains("<bad-request"), "{bad}");
}

#[test]
fn members_only_password_capacity_and_invitations() {
    let server = Server::start();
    let users = users_on_shards("memu", &[0, 1, 1, 0]);
    server.register_all(&users, "pw");
    let (owner, friend, stranger, other) = (&users[0], &users[1], &users[2], &users[3]);
    let mut o = Client::bound(&server, owner, "pw", "r");
    let mut f = Client::bound(&server, friend, "pw", "r");
    let mut s = Client::bound(&server, stranger, "pw", "r");
    let mut x = Client::bound(&server, other, "pw", "r");
    for client in [&mut o, &mut f, &mut s, &mut x] {
        client.send("<presence/>");
    }
    create(&mut o, "club", "Owner");
    assert!(configure(&mut o, "club", &[("muc#roomconfig_membersonly", "1")]).contains("type='result'"));

    // §7.2.7: not a member → registration-required.
    let refused = join_error(&mut s, "club", "Stan");
    assert!(refused.contains("<registration-required") && refused.contains("type='auth'"), "{refused}");

    // §7.8.2: a mediated invitation reaches the invitee from the room, with the inviter, and
    // makes the invitee a member of a members-only room.
    o.send(&format!(
        "<message to='club@{SERVICE}' id='inv'><x xmlns='http://jabber.org/protocol/muc#user'><invite to='{friend}@localhost'><reason>join us</reason></invite></x></message>"
    ));
    let invitation = f.expect("<invite");
    assert!(
        invitation.contains("from='club@conference.localhost'")
            // The inviter by occupant JID: the room is semi-anonymous (§7.8.2 allows it).
            && invitation.contains(&format!("from='club@{SERVICE}/Owner'"))
            && invitation.contains("join us"),
        "{invitation}"
    );
    let frames = join(&mut f, "club", "Fred", "");
    assert!(one_with(&frames, &["code='110'"]).contains("affiliation='member'"), "{frames:#?}");

    // §7.8.3: a decline goes back to the inviter; without an invitation it goes nowhere (the
    // room sends nothing on anyone's behalf).
    let decline = format!("<message to='club@{SERVICE}'><x xmlns='http://jabber.org/protocol/muc#user'><decline to='{owner}@localhost/r'><reason>busy</reason></decline></x></message>");
    s.send(&decline);
    assert!(o.collect_for(Duration::from_millis(300)).iter().all(|f| !f.contains("<decline")), "uninvited decline forwarded");
    o.send(&format!(
        "<message to='club@{SERVICE}'><x xmlns='http://jabber.org/protocol/muc#user'><invite to='{stranger}@localhost'/></x></message>"
    ));
    s.expect("<invite");
    s.send(&decline);
    let declined = o.expect("<decline");
    assert!(declined.contains(&format!("from='{stranger}@localhost'")) && declined.contains("busy"), "{declined}");

    // A member may not invite unless the room allows it (§7.8.2 note).
    f.send(&format!("<message to='club@{SERVICE}' id='inv2'><x xmlns='http://jabber.org/protocol/muc#user'><invite to='{stranger}@localhost'/></x></message>"));
    assert!(f.expect("id='inv2'").contains("<forbidden"));

    // §9.4: revoking membership in a members-only room removes the occupant with 321.
    let revoked = admin(&mut o, "club", "rv", &format!("<item affiliation='none' jid='{friend}@localhost'/>"));
    assert!(revoked.contains("type='result'"), "{revoked}");
    let removed = f.expect("type='unavailable'");
    assert!(codes(&removed).contains(&321), "{removed}");

    // XEP-0249 direct invitation: routed between users as is.
    o.send(&format!(
        "<message to='{other}@localhost' id='direct'><x xmlns='jabber:x:conference' jid='club@{SERVICE}' reason='see you'/></message>"
    ));
    let direct = x.expect("jabber:x:conference");
    assert!(direct.contains("jid='club@conference.localhost'"), "{direct}");

    // §7.2.6 password: missing or wrong → not-authorized; right → in.
    create(&mut o, "vault", "Owner");
    let result = configure(
        &mut o,
        "vault",
        &[("muc#roomconfig_passwordprotectedroom", "1"), ("muc#roomconfig_roomsecret", "s3cret"), ("muc#roomconfig_maxusers", "2")],
    );
    assert!(result.contains("type='result'"), "{result}");
    assert!(join_error(&mut x, "vault", "Xe").contains("<not-authorized"));
    x.send(&format!(
        "<presence to='vault@{SERVICE}/Xe'><x xmlns='http://jabber.org/protocol/muc'><password>wrong</password></x></presence>"
    ));
    assert!(x.expect("type='error'").contains("<not-authorized"));
    let frames = join(&mut x, "vault", "Xe", "<password>s3cret</password>");
    assert!(frames.iter().any(|f| f.contains("code='110'")), "{frames:#?}");
    let info =
        x.iq("i1", &format!("<iq type='get' id='i1' to='vault@{SERVICE}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"));
    assert!(info.contains("muc_passwordprotected"), "{info}");

    // §7.2.10: full (max 2) → service-unavailable (wait).
    s.send(&format!(
        "<presence to='vault@{SERVICE}/Stan'><x xmlns='http://jabber.org/protocol/muc'><password>s3cret</password></x></presence>"
    ));
    let full = s.expect("type='error'");
    assert!(full.contains("<service-unavailable") && full.contains("type='wait'"), "{full}");

    // A bad configuration value is refused and changes nothing.
    let bad = configure(&mut o, "vault", &[("muc#roomconfig_maxusers", "999999")]);
    assert!(bad.contains("<not-acceptable"), "{bad}");
}

#[test]
fn persistent_room_survives_restart_with_members_history_and_archive() {
    let mut server = Server::start();
    let users = users_on_shards("peru", &[1, 0]);
    server.register_all(&users, "pw");
    let (owner, member) = (&users[0], &users[1]);
    {
        let mut o = Client::bound(&server, owner, "pw", "r");
        create(&mut o, "keep", "Owner");
        let result = configure(
            &mut o,
            "keep",
            &[("muc#roomconfig_persistentroom", "1"), ("muc#roomconfig_membersonly", "1"), ("muc#roomconfig_roomname", "Keepers")],
        );
        assert!(result.contains("type='result'"), "{result}");
        assert!(admin(&mut o, "keep", "m", &format!("<item affiliation='member' jid='{member}@localhost' nick='Mem'/>"))
            .contains("type='result'"));
        for i in 1..=3 {
            o.send(&format!("<message to='keep@{SERVICE}' type='groupchat' id='k{i}'><body>kept {i}</body></message>"));
            let echo = o.expect(&format!("id='k{i}'"));
            assert!(
                echo.contains("<stanza-id xmlns='urn:xmpp:sid:0'") && echo.contains("by='keep@conference.localhost'"),
                "XEP-0359 on archived rooms: {echo}"
            );
        }
        o.send(&format!("<message to='keep@{SERVICE}' type='groupchat'><subject>Kept topic</subject></message>"));
        o.expect("Kept topic");
    }
    server.restart();

    let mut m = Client::bound(&server, member, "pw", "r");
    // §7.12 the reserved nickname survives; another user cannot take it (§7.2.9).
    let reserved = m.iq(
        "rn",
        &format!(
            "<iq type='get' id='rn' to='keep@{SERVICE}'><query xmlns='http://jabber.org/protocol/disco#info' node='x-roomuser-item'/></iq>"
        ),
    );
    assert!(reserved.contains("name='Mem'"), "{reserved}");
    let frames = join(&mut m, "keep", "Mem", "");
    assert!(one_with(&frames, &["code='110'"]).contains("affiliation='member'"), "membership survived: {frames:#?}");
    for i in 1..=3 {
        one_with(&frames, &[&format!("kept {i}"), "urn:xmpp:delay"]);
    }
    assert!(frames.last().is_some_and(|f| f.contains("Kept topic")), "subject survived: {frames:#?}");
    let info = m.iq("i", &format!("<iq type='get' id='i' to='keep@{SERVICE}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"));
    assert!(
        info.contains("muc_persistent")
            && info.contains("muc_membersonly")
            && info.contains("name='Keepers'")
            && info.contains("urn:xmpp:mam:2"),
        "{info}"
    );

    // XEP-0313 on the room: results from the room's JID, all three, then the fin.
    m.send(&format!("<iq type='set' id='mam' to='keep@{SERVICE}'><query xmlns='urn:xmpp:mam:2' queryid='q1'/></iq>"));
    let frames = until(&mut m, "<fin");
    let results: Vec<&String> = frames.iter().filter(|f| f.contains("queryid='q1'")).collect();
    assert_eq!(results.len(), 3, "{frames:#?}");
    assert!(results.iter().all(|r| r.contains("from='keep@conference.localhost'")), "{results:#?}");
    assert!(results[0].contains("kept 1") && results[2].contains("kept 3"), "{results:#?}");
    assert!(frames.last().is_some_and(|f| f.contains("complete='true'")), "{frames:#?}");

    // New messages continue the archive (ids never reused after a restart).
    m.send(&format!("<message to='keep@{SERVICE}' type='groupchat' id='after'><body>after restart</body></message>"));
    m.expect("id='after'");
    m.send(&format!("<iq type='set' id='mam2' to='keep@{SERVICE}'><query xmlns='urn:xmpp:mam:2' queryid='q2'/></iq>"));
    let frames = until(&mut m, "<fin");
    assert_eq!(frames.iter().filter(|f| f.contains("queryid='q2'")).count(), 4, "{frames:#?}");
}

#[test]
fn destroy_with_alternate_venue_and_temporary_rooms_vanish() {
    let server = Server::start();
    let users = users_on_shards("desu", &[0, 1]);
    server.register_all(&users, "pw");
    let mut o = Client::bound(&server, &users[0], "pw", "r");
    let mut g = Client::bound(&server, &users[1], "pw", "r");
    create(&mut o, "old", "Owner");
    join(&mut g, "old", "Guest", "");
    let denied = g.iq(
        "x",
        &format!("<iq type='set' id='x' to='old@{SERVICE}'><query xmlns='http://jabber.org/protocol/muc#owner'><destroy/></query></iq>"),
    );
    assert!(denied.contains("<forbidden"), "only owners destroy: {denied}");
    let done = o.iq(
        "d",
        &format!("<iq type='set' id='d' to='old@{SERVICE}'><query xmlns='http://jabber.org/protocol/muc#owner'><destroy jid='new@{SERVICE}'><reason>moved</reason></destroy></query></iq>"),
    );
    assert!(done.contains("type='result'"), "{done}");
    // §10.9: occupants leave with the destroy notice naming the alternate venue.
    let notice = g.expect("<destroy");
    assert!(
        notice.contains("type='unavailable'")
            && notice.contains("jid='new@conference.localhost'")
            && notice.contains("<reason>moved</reason>"),
        "{notice}"
    );
    let gone = g.iq("q", &format!("<iq type='get' id='q' to='old@{SERVICE}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"));
    assert!(gone.contains("<item-not-found"), "{gone}");

    // A temporary room ends with its last occupant (§10.1.3 / §7.14): joining again creates
    // a new, locked room (201).
    create(&mut o, "brief", "Owner");
    o.send(&format!("<presence to='brief@{SERVICE}/Owner' type='unavailable'/>"));
    o.expect("type='unavailable'");
    let frames = join(&mut o, "brief", "Owner", "");
    assert!(one_with(&frames, &["code='110'"]).contains("code='201'"), "{frames:#?}");
}

#[test]
fn occupant_rate_and_rooms_per_session_are_limited() {
    let server = Server::start_with("[muc]\noccupant_messages_per_s = 0.5\noccupant_burst = 2\nrooms_per_session = 1\n");
    server.register("rate", "pw");
    server.register("lock", "pw");
    let mut r = Client::bound(&server, "rate", "pw", "r");
    let mut l = Client::bound(&server, "lock", "pw", "r");
    create(&mut r, "fast", "R");
    for i in 0..2 {
        r.send(&format!("<message to='fast@{SERVICE}' type='groupchat' id='b{i}'><body>burst {i}</body></message>"));
        assert!(r.expect(&format!("id='b{i}'")).contains("burst"));
    }
    r.send(&format!("<message to='fast@{SERVICE}' type='groupchat' id='over'><body>too much</body></message>"));
    let limited = r.expect("id='over'");
    assert!(limited.contains("<resource-constraint") && limited.contains("type='wait'"), "{limited}");

    // One room per session: a second join is refused before it reaches the room.
    r.send(&format!("<presence to='other@{SERVICE}/R'><x xmlns='http://jabber.org/protocol/muc'/></presence>"));
    let refused = r.expect("type='error'");
    assert!(refused.contains("<resource-constraint"), "{refused}");
    assert!(r.collect_for(Duration::from_millis(300)).iter().all(|f| !f.contains("code='201'")), "no room was created");

    // Leaving frees the place; a refused join (a room still locked by its creator) does not
    // take it.
    r.send(&format!("<presence to='fast@{SERVICE}/R' type='unavailable'/>"));
    r.expect("type='unavailable'");
    join(&mut l, "locked", "L", "");
    assert!(join_error(&mut r, "locked", "R").contains("<item-not-found"));
    let frames = join(&mut r, "free", "R", "");
    assert!(frames.iter().any(|f| f.contains("code='201'")), "{frames:#?}");
}

#[test]
fn iqs_reach_occupants_through_the_room_and_vcards_come_from_the_account() {
    let server = Server::start();
    let users = users_on_shards("iqu", &[0, 1]);
    server.register_all(&users, "pw");
    let mut a = Client::bound(&server, &users[0], "pw", "r");
    let mut b = Client::bound(&server, &users[1], "pw", "r");
    let set = b.iq("v", "<iq type='set' id='v'><vCard xmlns='vcard-temp'><FN>Bea</FN></vCard></iq>");
    assert!(set.contains("type='result'"), "{set}");
    create(&mut a, "iqs", "A");
    join(&mut b, "iqs", "B", "");

    // XEP-0054 through the room: the answer is the occupant's account's, from the nick.
    let card = a.iq("vc", &format!("<iq type='get' id='vc' to='iqs@{SERVICE}/B'><vCard xmlns='vcard-temp'/></iq>"));
    assert!(
        card.contains("type='result'") && card.contains("from='iqs@conference.localhost/B'") && card.contains("<FN>Bea</FN>"),
        "{card}"
    );

    // Other iqs go to the occupant's client from the asker's nick, and the answer comes back.
    a.send(&format!("<iq type='get' id='ver' to='iqs@{SERVICE}/B'><query xmlns='jabber:iq:version'/></iq>"));
    let asked = b.expect("id='ver'");
    assert!(asked.contains("from='iqs@conference.localhost/A'") && asked.contains("jabber:iq:version"), "{asked}");
    b.send(&format!("<iq type='result' id='ver' to='iqs@{SERVICE}/A'><query xmlns='jabber:iq:version'><name>test</name></query></iq>"));
    let answer = a.expect("id='ver'");
    assert!(answer.contains("from='iqs@conference.localhost/B'") && answer.contains("<name>test</name>"), "{answer}");

    // XEP-0410 self-ping answers for a joined occupant; strangers get not-acceptable.
    let ping = b.iq("sp", &format!("<iq type='get' id='sp' to='iqs@{SERVICE}/B'><ping xmlns='urn:xmpp:ping'/></iq>"));
    assert!(ping.contains("type='result'"), "{ping}");
    b.send(&format!("<presence to='iqs@{SERVICE}/B' type='unavailable'/>"));
    b.expect("type='unavailable'");
    let stranger = b.iq("sp2", &format!("<iq type='get' id='sp2' to='iqs@{SERVICE}/B'><ping xmlns='urn:xmpp:ping'/></iq>"));
    assert!(stranger.contains("<not-acceptable"), "{stranger}");
}

/// What the peer suite (Prosody's scripts, tests/peer) showed missing, pinned here on its
/// own: room registration (§7.10), nickname reservation, the out-of-room affiliation notice
/// (§9.3–§10.7 "MAY send a message from the room itself"), and who may read the lists.
#[test]
fn registration_reservation_and_out_of_room_affiliation_notices() {
    let server = Server::start();
    let users = users_on_shards("mreg", &[0, 1, 0, 1]);
    server.register_all(&users, "pw");
    let (owner, member, outsider, other) = (&users[0], &users[1], &users[2], &users[3]);
    let mut o = Client::bound(&server, owner, "pw", "r");
    let mut m = Client::bound(&server, member, "pw", "r");
    let mut x = Client::bound(&server, outsider, "pw", "r");
    create(&mut o, "reg", "Owner");
    join(&mut x, "reg", "Xan", "");
    o.expect("from='reg@conference.localhost/Xan'");

    // The member is not in the room: the moderator hears of the change, with the real JID;
    // an unaffiliated participant of this semi-anonymous room does not.
    o.send(&format!(
        "<iq type='set' id='a1' to='reg@{SERVICE}'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member' jid='{member}@localhost'/></query></iq>"
    ));
    let frames = until(&mut o, "id='a1'");
    assert!(frames.last().is_some_and(|f| f.contains("type='result'")), "{frames:#?}");
    let notice = one_with(&frames, &["<message", "affiliation='member'"]);
    assert!(notice.contains(&format!("jid='{member}@localhost'")), "{notice}");
    let quiet = x.collect_for(Duration::from_millis(300));
    assert!(!quiet.iter().any(|f| f.contains(&format!("{member}@localhost"))), "{quiet:?}");

    // §7.10: an unaffiliated user may not register; a member gets the form, registers a
    // nickname and is told it is registered.
    let refused = x.iq("g0", &format!("<iq type='get' id='g0' to='reg@{SERVICE}'><query xmlns='jabber:iq:register'/></iq>"));
    assert!(refused.contains("type='error'") && refused.contains("<not-allowed"), "{refused}");
    let form = m.iq("g1", &format!("<iq type='get' id='g1' to='reg@{SERVICE}'><query xmlns='jabber:iq:register'/></iq>"));
    assert!(form.contains("http://jabber.org/protocol/muc#register") && form.contains("var='muc#register_roomnick'"), "{form}");
    let submit = |nick: &str| {
        format!(
            "<iq type='set' id='s1' to='reg@{SERVICE}'><query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#register</value></field><field var='muc#register_roomnick'><value>{nick}</value></field></x></query></iq>"
        )
    };
    let taken = m.iq("s1", &submit("Xan"));
    assert!(taken.contains("<conflict"), "in use by another occupant: {taken}");
    let done = m.iq("s1", &submit("Emm"));
    assert!(done.contains("type='result'"), "{done}");
    let registered = m.iq("g2", &format!("<iq type='get' id='g2' to='reg@{SERVICE}'><query xmlns='jabber:iq:register'/></iq>"));
    assert!(registered.contains("<registered/>") && registered.contains("<username>Emm</username>"), "{registered}");
    let mine = m.iq(
        "n1",
        &format!(
            "<iq type='get' id='n1' to='reg@{SERVICE}'><query xmlns='http://jabber.org/protocol/disco#info' node='x-roomuser-item'/></iq>"
        ),
    );
    assert!(mine.contains("name='Emm'"), "§7.12: {mine}");
    // The reserved nickname is the member's: another user gets a conflict.
    let conflict = join_error(&mut x, "reg", "Emm");
    assert!(conflict.contains("<conflict"), "{conflict}");

    // Reserving a nickname someone else is using removes that occupant (307), so that its
    // holder can enter.
    let mut y = Client::bound(&server, other, "pw", "r");
    join(&mut y, "reg", "Yew", "");
    o.expect("from='reg@conference.localhost/Yew'");
    let reserve = admin(&mut o, "reg", "a2", &format!("<item affiliation='member' jid='{member}@localhost' nick='Yew'/>"));
    assert!(reserve.contains("type='result'"), "{reserve}");
    let evicted = y.expect("type='unavailable'");
    assert!(codes(&evicted).contains(&307) && evicted.contains("This nickname is reserved"), "{evicted}");

    // XEP-0077 §3.2 <remove/>: the member leaves the list; the moderator hears it.
    let removed =
        m.iq("u1", &format!("<iq type='set' id='u1' to='reg@{SERVICE}'><query xmlns='jabber:iq:register'><remove/></query></iq>"));
    assert!(removed.contains("type='result'"), "{removed}");
    let notice = o.expect("affiliation='none' jid=");
    assert!(notice.contains(&format!("jid='{member}@localhost'")), "{notice}");
    let again = m.iq("u2", &format!("<iq type='set' id='u2' to='reg@{SERVICE}'><query xmlns='jabber:iq:register'><remove/></query></iq>"));
    assert!(again.contains("<not-allowed"), "no longer a member: {again}");

    // Lists name real JIDs: in a semi-anonymous room only admins read them; once the room
    // is non-anonymous, members read the owner and member lists (§9.5 SHOULD), never bans.
    admin(&mut o, "reg", "a3", &format!("<item affiliation='member' jid='{outsider}@localhost'/>"));
    let list = |who: &mut Client, affiliation: &str| {
        who.iq("l1", &format!("<iq type='get' id='l1' to='reg@{SERVICE}'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='{affiliation}'/></query></iq>"))
    };
    assert!(list(&mut x, "owner").contains("<forbidden"));
    configure(&mut o, "reg", &[("muc#roomconfig_whois", "anyone")]);
    let owners = list(&mut x, "owner");
    assert!(owners.contains("type='result'") && owners.contains(&format!("jid='{owner}@localhost'")), "{owners}");
    assert!(list(&mut x, "member").contains(&format!("jid='{outsider}@localhost'")));
    assert!(list(&mut x, "outcast").contains("<forbidden"));
}

/// A second join from a session already in the room resynchronises it (others, itself,
/// history, subject); probes to an occupant JID (§17.3 MAY); a room secret alone protects
/// the room; a message with a subject and a body is a message (§8.1); one nickname from two
/// sessions lists both to moderators.
#[test]
fn rejoin_probes_secrets_subject_bodies_and_multi_session_nicks() {
    let server = Server::start();
    let users = users_on_shards("mrej", &[0, 1, 0]);
    server.register_all(&users, "pw");
    let (owner, guest, stranger) = (&users[0], &users[1], &users[2]);
    let mut o = Client::bound(&server, owner, "pw", "r");
    let mut g = Client::bound(&server, guest, "pw", "r");
    let mut s = Client::bound(&server, stranger, "pw", "r");
    create(&mut o, "sync", "Owner");
    join(&mut g, "sync", "Guest", "");
    o.expect("from='sync@conference.localhost/Guest'");

    // §8.1: "a message with a <subject/> and a <body/> ... SHALL NOT be interpreted as a
    // subject change": it is a message, kept in history; the subject stays empty.
    g.send(&format!("<message to='sync@{SERVICE}' type='groupchat'><subject>Greetings</subject><body>Hello all</body></message>"));
    o.expect("Hello all");
    g.send(&format!("<presence to='sync@{SERVICE}/Guest'><x xmlns='http://jabber.org/protocol/muc'/></presence>"));
    let frames = until(&mut g, "id='subject-");
    let others = frames.iter().position(|f| f.contains("from='sync@conference.localhost/Owner'")).expect("others first");
    let own = frames.iter().position(|f| f.contains("from='sync@conference.localhost/Guest'") && codes(f).contains(&110)).expect("own");
    let history = frames.iter().position(|f| f.contains("Hello all") && f.contains("urn:xmpp:delay")).expect("history");
    let subject = frames.iter().position(|f| f.contains("<subject></subject>") || f.contains("<subject/>")).expect("empty subject");
    assert!(others < own && own < history && history < subject, "{frames:#?}");
    // For the others the second join is a presence update.
    o.expect("from='sync@conference.localhost/Guest'");

    // Probes: an occupant gets the other's presence; a non-occupant learns nothing.
    o.send(&format!("<presence to='sync@{SERVICE}/Guest' type='probe'/>"));
    let probed = o.expect("from='sync@conference.localhost/Guest'");
    assert!(!probed.contains("type='error'") && probed.contains("role='participant'"), "{probed}");
    s.send(&format!("<presence to='sync@{SERVICE}/Guest' type='probe'/>"));
    let refused = s.expect("from='sync@conference.localhost/Guest'");
    assert!(refused.contains("type='error'") && refused.contains("<not-acceptable"), "{refused}");

    // Two sessions, one nickname: the moderator sees both sessions; when one leaves, one.
    let mut g2 = Client::bound(&server, guest, "pw", "r2");
    join(&mut g2, "sync", "Guest", "");
    let both = o.expect("from='sync@conference.localhost/Guest'");
    assert!(both.contains(&format!("jid='{guest}@localhost/r'")) && both.contains(&format!("jid='{guest}@localhost/r2'")), "{both}");
    g2.send(&format!("<presence to='sync@{SERVICE}/Guest' type='unavailable'/>"));
    let left = g2.expect("type='unavailable'");
    assert!(codes(&left).contains(&110), "{left}");
    let one = o.expect("from='sync@conference.localhost/Guest'");
    assert!(!one.contains("type='unavailable'") && !one.contains("/r2'") && one.contains(&format!("jid='{guest}@localhost/r'")), "{one}");

    // A room secret with no passwordprotectedroom field protects the room.
    configure(&mut o, "sync", &[("muc#roomconfig_roomsecret", "cauldron")]);
    let denied = join_error(&mut s, "sync", "Stan");
    assert!(denied.contains("<not-authorized"), "{denied}");
    let frames = join(&mut s, "sync", "Stan", "<password>cauldron</password>");
    assert!(frames.iter().any(|f| f.contains("from='sync@conference.localhost/Stan'") && codes(f).contains(&110)), "{frames:#?}");
}
