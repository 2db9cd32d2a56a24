//! The ejabberd-compatible admin API and `confab ctl`.

use serde_json::json;

use crate::support::{binary, Client, Server, DOMAIN};

#[test]
fn api_commands_answer_like_ejabberd() {
    let server = Server::start();
    let (status, body) = server.api("register", json!({"user": "Zed", "host": DOMAIN, "password": "pw"}));
    assert_eq!((status, body), (200, json!("User zed@localhost successfully registered")));
    let (status, body) = server.api("register", json!({"user": "zed", "host": DOMAIN, "password": "pw2"}));
    assert_eq!(status, 409);
    assert_eq!(body["status"], "error");
    assert_eq!(server.api("check_account", json!({"user": "zed", "host": DOMAIN})), (200, json!(0)));
    assert_eq!(server.api("check_account", json!({"user": "nobody", "host": DOMAIN})), (200, json!(1)));
    server.register("amy", "pw");
    assert_eq!(server.api("registered_users", json!({"host": DOMAIN})), (200, json!(["amy", "zed"])));
    assert_eq!(server.api("change_password", json!({"user": "zed", "host": DOMAIN, "newpass": "new"})), (200, json!(0)));
    let mut client = Client::connect(&server);
    client.starttls();
    assert!(client.scram("SCRAM-SHA-256", "zed", "pw").contains("<failure"), "old password no longer works");
    let _zed = Client::login(&server, "zed", "new", "r");
    assert_eq!(server.api("connected_users_number", json!({})), (200, json!({"num_sessions": 1})));
    let (status, body) = server.api("status", json!({}));
    assert_eq!(status, 200);
    assert!(body.as_str().is_some_and(|s| s.contains("started")), "{body}");
    let (status, body) = server.api("register", json!({"user": "x", "host": "other.example", "password": "pw"}));
    assert_eq!(status, 400, "{body}");
    let (status, _) = server.api("no_such_command", json!({}));
    assert_eq!(status, 404);
    assert_eq!(server.api("unregister", json!({"user": "amy", "host": DOMAIN})), (200, json!(0)));
    assert_eq!(server.api("registered_users", json!({"host": DOMAIN})), (200, json!(["zed"])));
}

#[test]
fn unregister_ends_the_users_sessions() {
    let server = Server::start();
    server.register("gone", "pw");
    let mut client = Client::login(&server, "gone", "pw", "r");
    assert_eq!(server.api("unregister", json!({"user": "gone", "host": DOMAIN})), (200, json!(0)));
    let seen = client.read_to_close().join("");
    assert!(seen.contains("<not-authorized"), "{seen}");
}

#[test]
fn accounts_survive_a_restart() {
    let server = Server::start();
    server.register("durable", "pw");
    let config = server.data_dir.join("confab.toml");
    // Restart the same data directory with the same config.
    let _ = std::process::Command::new("kill").arg("-9").arg(server.pid().to_string()).status();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut child = std::process::Command::new(binary())
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("restart");
    let start = std::time::Instant::now();
    loop {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        if let Ok(mut response) =
            agent.post(&format!("http://127.0.0.1:{}/api/check_account", server.http)).send_json(json!({"user": "durable", "host": DOMAIN}))
        {
            let body: serde_json::Value = response.body_mut().read_json().expect("json");
            assert_eq!(body, json!(0), "account still there after kill -9 and restart");
            break;
        }
        assert!(start.elapsed().as_secs() < 10, "restart failed");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn ctl_calls_the_api() {
    let server = Server::start();
    let url = format!("http://127.0.0.1:{}", server.http);
    let ctl = |args: &[&str]| {
        let output = std::process::Command::new(binary()).args(["ctl", "--url", &url]).args(args).output().expect("ctl runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).trim().to_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, out, _) = ctl(&["register", "ctluser", DOMAIN, "pw"]);
    assert!(ok && out.contains("successfully registered"), "{out}");
    let (ok, _, err) = ctl(&["register", "ctluser", DOMAIN, "pw"]);
    assert!(!ok && err.contains("already registered"), "{err}");
    let _session = Client::login(&server, "ctluser", "pw", "r");
    let (ok, out, _) = ctl(&["connected_users_number"]);
    assert!(ok);
    assert_eq!(out, "1");
    let (ok, _, err) = ctl(&["register", "only-two-args"]);
    assert!(!ok && err.contains("usage"), "{err}");
}

#[test]
fn add_rosteritem_sets_one_side_and_pushes_it() {
    let server = Server::start();
    server.register("rosa", "pw");
    server.register("sid", "pw");
    let mut rosa = Client::login(&server, "rosa", "pw", "r");
    rosa.iq("r1", "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>");
    let item = serde_json::json!({"localuser": "rosa", "localhost": DOMAIN, "user": "sid", "host": DOMAIN, "nick": "Sid", "group": "Ops", "subs": "both"});
    let (status, body) = server.api("add_rosteritem", item);
    assert_eq!((status, body), (200, serde_json::json!(0)));
    let push = rosa.expect("type='set'");
    assert!(push.contains("jid='sid@localhost'") && push.contains("subscription='both'") && push.contains("<group>Ops</group>"), "{push}");
    let (status, roster) = server.api("get_roster", serde_json::json!({"user": "rosa", "host": DOMAIN}));
    assert_eq!(status, 200);
    assert_eq!(roster[0]["jid"], "sid@localhost");
    assert_eq!(roster[0]["subscription"], "both");
    let (status, _) = server.api("add_rosteritem", serde_json::json!({"localuser": "nobody", "localhost": DOMAIN, "user": "sid", "host": DOMAIN, "nick": "", "group": "", "subs": "both"}));
    assert_eq!(status, 404);
    let (status, _) = server.api("add_rosteritem", serde_json::json!({"localuser": "rosa", "localhost": DOMAIN, "user": "sid", "host": DOMAIN, "nick": "", "group": "", "subs": "maybe"}));
    assert_eq!(status, 400);
}

/// Sends `request` as is on a fresh connection; returns what came back before the server closed
/// the connection or `wait` passed.
fn raw_http(port: u16, request: &[u8], wait: std::time::Duration) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(wait)).expect("timeout");
    let _ = stream.write_all(request);
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buffer) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

fn still_answers(server: &Server) {
    let (status, body) = server.api("status", json!({}));
    assert_eq!(status, 200, "the API still answers: {body}");
}

/// One request used to kill the process: a huge Content-Length made the old HTTP stack
/// allocate the announced body. It is refused before a byte of the body is read or allocated.
#[test]
fn a_huge_content_length_is_refused_before_reading() {
    let second = std::time::Duration::from_secs(2);
    let huge = |server: &Server, token: &str| {
        let request = format!(
            "POST /api/status HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n{token}Content-Length: 1152921504606846976\r\n\r\n{{",
            server.http
        );
        raw_http(server.http, request.as_bytes(), second)
    };
    let server = Server::start();
    let answer = huge(&server, "");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    still_answers(&server);
    // With a token configured and none given: refused even earlier, and alive.
    let server = Server::start_with("[admin]\ntoken = 's3cret'\n");
    let answer = huge(&server, "");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let answer = huge(&server, "Authorization: Bearer s3cret\r\n");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(server.is_running_now());
}

/// Only JSON (no browser-simple form posts), only this server's names in Host (no DNS
/// rebinding), a body that must come in time, and slow headers closed.
#[test]
fn requests_must_be_json_for_this_host_and_in_time() {
    let server = Server::start_with("[admin]\nheader_timeout_ms = 300\nbody_timeout_ms = 300\n");
    let port = server.http;
    let second = std::time::Duration::from_secs(2);
    let form = format!("POST /api/register HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 43\r\n\r\nuser=evil&host=localhost&password=password1");
    assert!(raw_http(port, form.as_bytes(), second).starts_with("HTTP/1.1 415"));
    let rebound = "POST /api/status HTTP/1.1\r\nHost: attacker.example\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    assert!(raw_http(port, rebound.as_bytes(), second).starts_with("HTTP/1.1 421"));
    let slow_body =
        format!("POST /api/status HTTP/1.1\r\nHost: localhost:{port}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{");
    let answer = raw_http(port, slow_body.as_bytes(), second);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // Headers that never end: the connection is closed after header_timeout_ms.
    let start = std::time::Instant::now();
    let _ = raw_http(port, b"POST /api/status HTTP/1.1\r\nHost: localhost\r\n", std::time::Duration::from_secs(5));
    assert!(start.elapsed() < std::time::Duration::from_secs(3), "slow headers held the connection for {:?}", start.elapsed());
    assert_eq!(server.api("check_account", json!({"user": "evil", "host": DOMAIN})), (200, json!(1)), "the form post created nothing");
    still_answers(&server);
}

/// Connections beyond admin.connections_max are closed at accept; the API serves again once
/// one is gone.
#[test]
fn http_connections_are_capped() {
    let server = Server::start_with("[admin]\nconnections_max = 2\n");
    // The start-up probe's connection must be gone before the two idle ones take the places.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let idle: Vec<std::net::TcpStream> =
        (0..2).map(|_| std::net::TcpStream::connect(("127.0.0.1", server.http)).expect("connect")).collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let request = "POST /api/status HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    let answer = raw_http(server.http, request.as_bytes(), std::time::Duration::from_secs(2));
    assert_eq!(answer, "", "a third connection is closed without an answer; log:\n{}", server.log());
    drop(idle);
    std::thread::sleep(std::time::Duration::from_millis(200));
    still_answers(&server);
}
