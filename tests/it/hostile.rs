//! Hostile input: each gets the RFC's stream error, and the server keeps serving others.

use crate::support::{Client, Server, DOMAIN};

const HEADER: &str = "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

/// Sends `input` on a fresh connection (after STARTTLS and a stream header when `tls`, so
/// the input continues an open stream) and returns all it saw.
fn attack(server: &Server, tls: bool, input: &[u8]) -> String {
    let mut client = Client::connect(server);
    if tls {
        client.starttls();
    }
    client.send_bytes(input);
    client.read_to_close().join("")
}

fn assert_condition(seen: &str, condition: &str) {
    assert!(seen.contains(&format!("<{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>")), "expected <{condition}/>, saw {seen}");
    assert!(seen.ends_with("</stream:stream>"), "stream closed properly: {seen}");
}

/// Two logged-in users can still talk: the attacks did not hurt anyone else.
fn still_serving(server: &Server, a: &mut Client, b: &mut Client, marker: &str) {
    let _ = server;
    a.send(&format!("<message to='hostile-b@{DOMAIN}' type='chat'><body>{marker}</body></message>"));
    b.expect(marker);
}

#[test]
fn hostile_inputs_get_their_stream_errors_and_others_keep_talking() {
    let server = Server::start();
    server.register("hostile-a", "pw");
    server.register("hostile-b", "pw");
    let mut a = Client::login(&server, "hostile-a", "pw", "r");
    let mut b = Client::login(&server, "hostile-b", "pw", "r");

    let bomb =
        "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>]>";
    let cases: Vec<(&str, bool, Vec<u8>, &str)> = vec![
        ("entity bomb in a DOCTYPE", false, format!("{bomb}<stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>&lol2;").into_bytes(), "restricted-xml"),
        ("DOCTYPE after the header", false, format!("{HEADER}<!DOCTYPE x>").into_bytes(), "restricted-xml"),
        ("comment", false, format!("{HEADER}<!-- hello -->").into_bytes(), "restricted-xml"),
        ("processing instruction", false, format!("{HEADER}<?evil data?>").into_bytes(), "restricted-xml"),
        ("undefined entity", true, b"<message><body>&xxe;</body></message>".to_vec(), "restricted-xml"),
        ("invalid UTF-8", false, [HEADER.as_bytes(), b"<message><body>\xff\xfe</body></message>"].concat(), "not-well-formed"),
        ("mismatched tags", false, format!("{HEADER}<message><body></message>").into_bytes(), "not-well-formed"),
        ("oversized stanza before auth", true, format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>", "A".repeat(9 * 1024)).into_bytes(), "policy-violation"),
        ("stanza before auth", true, b"<message to='hostile-b@localhost'><body>sneak</body></message>".to_vec(), "not-authorized"),
        ("stanza before TLS", false, format!("{HEADER}<message to='hostile-b@localhost'><body>sneak</body></message>").into_bytes(), "not-authorized"),
        ("wrong host", false, HEADER.replace("to='localhost'", "to='evil.example'").into_bytes(), "host-unknown"),
        ("wrong namespace", false, HEADER.replace("jabber:client", "jabber:server").into_bytes(), "invalid-namespace"),
        ("deep nesting", true, "<a>".repeat(100).into_bytes(), "policy-violation"),
        ("text at stream level", false, format!("{HEADER}hello").into_bytes(), "bad-format"),
    ];
    for (name, tls, input, condition) in cases {
        let seen = attack(&server, tls, &input);
        assert!(seen.contains(&format!("<{condition} ")), "{name}: expected {condition}, saw {seen}");
        assert_condition(&seen, condition);
        still_serving(&server, &mut a, &mut b, name);
    }
    // Nothing of the sneaked message reached b.
    b.send("<iq type='get' id='last'><ping xmlns='urn:xmpp:ping'/></iq>");
    let next = b.next().expect("ping answer");
    assert!(next.contains("id='last'"), "{next}");
}

#[test]
fn oversized_stanza_after_auth_is_a_policy_violation() {
    let server = Server::start();
    server.register("big", "pw");
    server.register("hostile-b", "pw");
    let mut big = Client::login(&server, "big", "pw", "r");
    let body = "x".repeat(257 * 1024);
    big.send(&format!("<message to='hostile-b@localhost'><body>{body}</body></message>"));
    let seen = big.read_to_close().join("");
    assert_condition(&seen, "policy-violation");
    // Just under the limit passes.
    let mut big = Client::login(&server, "big", "pw", "r2");
    let mut b = Client::login(&server, "hostile-b", "pw", "r");
    let body = "y".repeat(250 * 1024);
    big.send(&format!("<message to='hostile-b@localhost'><body>{body}</body></message>"));
    let got = b.expect("yyyy");
    assert!(got.len() > 250 * 1024);
}

/// A TLS close_notify followed by more bytes in one segment (rustls reads nothing after the
/// alert): the connection ends, and the shard — the only one — keeps serving everyone else
/// instead of spinning on bytes it can never consume.
#[test]
fn close_notify_followed_by_bytes_ends_only_that_connection() {
    let server = Server::start_with("shards = 1\n");
    server.register("hostile-a", "pw");
    server.register("hostile-b", "pw");
    let mut a = Client::login(&server, "hostile-a", "pw", "r");
    let mut b = Client::login(&server, "hostile-b", "pw", "r");
    for (n, authenticated) in [false, true].into_iter().enumerate() {
        let mut attacker = Client::connect(&server);
        attacker.starttls();
        if authenticated {
            assert!(attacker.scram("SCRAM-SHA-256", "hostile-a", "pw").contains("<success"));
            attacker.bind("attacker");
        }
        attacker.close_notify_then(&[b'x'; 8 * 1024]);
        still_serving(&server, &mut a, &mut b, &format!("after close_notify {n}"));
        let mut fresh = Client::connect(&server);
        assert!(fresh.open_stream().contains("starttls"), "a new connection is answered");
        let before = server.cpu_ms();
        std::thread::sleep(std::time::Duration::from_millis(1000));
        let used = server.cpu_ms() - before;
        assert!(used < 500, "the server used {used} ms of CPU in an idle second: something spins");
    }
}

#[test]
fn a_byte_at_a_time_still_works() {
    let server = Server::start();
    server.register("slow", "pw");
    let mut client = Client::connect(&server);
    for byte in HEADER.as_bytes() {
        client.send_bytes(std::slice::from_ref(byte));
    }
    client.expect("<stream:stream");
    let features = client.expect("<stream:features");
    assert!(features.contains("starttls"), "{features}");
}

#[test]
fn many_partial_stanzas_keep_memory_bounded() {
    let server = Server::start();
    let pid = server.pid();
    let before = rss_kib(pid);
    // 200 connections each parked mid-stanza, just under the pre-auth limit.
    let mut clients = Vec::new();
    for _ in 0..200 {
        let mut client = Client::connect(&server);
        client.send(HEADER);
        client.send(&format!("<message><body>{}", "z".repeat(7 * 1024)));
        clients.push(client);
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let during = rss_kib(pid);
    // Each connection may hold its 8 KiB stanza buffer plus a read chunk; far less than
    // 100 KiB each means nothing grows without bound.
    assert!(during.saturating_sub(before) < 200 * 100, "RSS grew from {before} KiB to {during} KiB");
    drop(clients);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn silent_peers_time_out_and_whitespace_keeps_a_session_alive() {
    let server = Server::start_with("[limits]\npreauth_timeout_ms = 600\nidle_timeout_ms = 1500\n");
    server.register("quiet", "pw");
    // Pre-auth: a connection that never authenticates is closed.
    let mut silent = Client::connect(&server);
    let seen = silent.read_to_close().join("");
    assert_condition(&seen, "connection-timeout");
    // Authenticated and pinging with whitespace: survives past the idle timeout.
    let mut pinging = Client::login(&server, "quiet", "pw", "pinging");
    let mut idle = Client::login(&server, "quiet", "pw", "idle");
    for _ in 0..8 {
        std::thread::sleep(std::time::Duration::from_millis(300));
        pinging.send(" ");
    }
    pinging.send("<iq type='get' id='alive'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert!(pinging.expect("id='alive'").contains("type='result'"));
    let seen = idle.read_to_close().join("");
    assert_condition(&seen, "connection-timeout");
}

/// The `#n#` markers of the test messages in `frames`.
fn markers(frames: &[String]) -> std::collections::BTreeSet<usize> {
    let mut found = std::collections::BTreeSet::new();
    for frame in frames {
        for piece in frame.split('#').skip(1).step_by(2) {
            if let Ok(n) = piece.parse() {
                found.insert(n);
            }
        }
    }
    found
}

/// A client that stops reading: its inbox is bounded in bytes, so senders are told
/// (resource-constraint) instead of the server buffering without bound; after
/// limits.stalled_reader_timeout_ms the server closes it, and what it never acknowledged goes
/// to offline storage or back to its sender (XEP-0198 §5). Every message sent is accounted
/// for: bounced, received before the close, or delivered at the next login.
#[test]
fn a_client_that_stops_reading_pins_bounded_memory_and_nothing_is_lost_silently() {
    let server = Server::start_with("[limits]\nsession_inbox_bytes = 262144\nstalled_reader_timeout_ms = 1500\n");
    server.register("hostile-sender", "pw");
    server.register("sleeper", "pw");
    let mut sleeper = Client::login(&server, "sleeper", "pw", "r");
    sleeper.send("<enable xmlns='urn:xmpp:sm:3'/>");
    sleeper.expect("<enabled");
    let mut sender = Client::login(&server, "hostile-sender", "pw", "s");
    let before = rss_kib(server.pid());
    const SENT: usize = 500;
    let filler = "x".repeat(32 * 1024);
    for n in 0..SENT {
        sender.send(&format!("<message to='sleeper@localhost' type='chat' id='m{n}'><body>#{n}# {filler}</body></message>"));
    }
    // The sleeper's session ends once the server notices it stopped reading.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.api("connected_users_number", serde_json::json!({})).1["num_sessions"] != 1 {
        assert!(std::time::Instant::now() < deadline, "the stalled client was never closed:\n{}", server.log());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let during = rss_kib(server.pid());
    assert!(during.saturating_sub(before) < 64 * 1024, "RSS grew from {before} KiB to {during} KiB");
    let received_before_close = markers(&sleeper.read_to_close());
    let mut bounced: std::collections::BTreeSet<usize> = std::collections::BTreeSet::new();
    for frame in sender.collect_for(std::time::Duration::from_secs(3)) {
        if frame.contains("type='error'") {
            if let Some(n) = frame.split("id='m").nth(1).and_then(|rest| rest.split('\'').next()).and_then(|n| n.parse().ok()) {
                bounced.insert(n);
            }
        }
    }
    assert!(!bounced.is_empty(), "the byte bound refused something");
    let mut again = Client::login(&server, "sleeper", "pw", "again");
    let offline = markers(&again.collect_for(std::time::Duration::from_secs(2)));
    let missing: Vec<usize> =
        (0..SENT).filter(|n| !bounced.contains(n) && !received_before_close.contains(n) && !offline.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "lost without a trace: {missing:?} (bounced {}, received {}, offline {})",
        bounced.len(),
        received_before_close.len(),
        offline.len()
    );
    eprintln!("bounced {}, received before the close {}, offline {}", bounced.len(), received_before_close.len(), offline.len());
    let (status, counters) = server.api("counters", serde_json::json!({}));
    assert_eq!(status, 200, "{counters}");
    assert!(counters.get("dropped_session_inbox_full").is_some(), "{counters}");
}

/// The shards listen with SO_REUSEPORT: without a check, a second server started on the same
/// port (a stale one, a second start by mistake) would silently take a share of the
/// connections — each with its own accounts and rooms, the first users' rooms "vanishing"
/// for half of the others. It refuses to start instead, and the first keeps serving.
#[test]
fn a_second_server_on_the_same_port_refuses_to_start() {
    let server = Server::start();
    server.register("solo", "pw");
    let dir = std::env::temp_dir().join(format!("confab-it-second-{}-{}", std::process::id(), server.c2s));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let http = crate::support::free_port();
    let tls = crate::support::free_port();
    std::fs::write(
        dir.join("confab.toml"),
        format!(
            "domain = \"{DOMAIN}\"\ndata_dir = \"{}\"\n[listen]\nc2s = \"127.0.0.1:{}\"\nc2s_tls = \"127.0.0.1:{tls}\"\nhttp = \"127.0.0.1:{http}\"\n",
            dir.display(),
            server.c2s
        ),
    )
    .expect("config");
    let mut second = std::process::Command::new(crate::support::binary())
        .args(["serve", "--config"])
        .arg(dir.join("confab.toml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = second.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second server started on port {} beside the first", server.c2s);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().expect("stderr"), &mut stderr).expect("read");
    assert!(!status.success() && stderr.contains(&format!("127.0.0.1:{}", server.c2s)) && stderr.contains("in use"), "{status:?} {stderr}");
    // Every connection still reaches the one server (its account is there every time).
    for _ in 0..8 {
        Client::bound(&server, "solo", "pw", "r");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
