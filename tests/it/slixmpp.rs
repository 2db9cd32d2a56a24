//! A real client library: python3-slixmpp logs in with SCRAM-SHA-256 over STARTTLS and chats
//! between two users on different shards, then drives the IM features (rosters, carbons,
//! offline delivery, archive, blocking, stream resumption) and the account and personal-data
//! services (in-band registration, vCard, PEP with entity caps, bookmarks, version, time, last
//! activity, client state indication) through its plugins.

use crate::support::{users_on_shards, Server, DOMAIN};

/// Debian's interpreter, which is the one python3-slixmpp installs into.
const PYTHON: &str = "/usr/bin/python3";

#[test]
fn slixmpp_clients_chat_over_starttls_with_scram() {
    require_slixmpp();
    let server = Server::start();
    let users = users_on_shards("slix", &[0, 1]);
    server.register_all(&users, "pw-slix");
    let script = format!("{}/slixmpp_chat.py", env!("CARGO_MANIFEST_DIR"));
    let output = std::process::Command::new(PYTHON)
        .arg(script)
        .args(["127.0.0.1", &server.c2s.to_string()])
        .arg(server.data_dir.join("cert.pem"))
        .args([DOMAIN, &users[0], "pw-slix", &users[1], "pw-slix"])
        .output()
        .expect("run slixmpp script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "slixmpp failed:\n{stdout}\n{stderr}\nserver log:\n{}", server.log());
    assert!(stdout.contains("ok: both messages delivered"), "{stdout}");
    assert!(server.log().contains("authenticated"), "server logged the logins");
}

/// tests/slixmpp_im.py prints one "ok:"/"FAIL:" line per check and bounds itself to 60 s; run it
/// with SLIX_DEBUG=1 to trace every stanza per client.
#[test]
fn slixmpp_clients_use_roster_carbons_offline_archive_blocking_and_resumption() {
    require_slixmpp();
    let server = Server::start();
    // alice and carol live on shard 0, bob on shard 1: every message between two users crosses
    // shards, and alice's two resources share one.
    let users = users_on_shards("im", &[0, 1, 0]);
    server.register_all(&users, "pw-im");
    run_scenario(&server, "slixmpp_im.py", &[&users[0], "pw-im", &users[1], "pw-im", &users[2], "pw-im"]);
}

/// tests/slixmpp_services.py, in the same style: alice and bob exist, a third user registers in
/// band (so registration is switched on).
#[test]
fn slixmpp_clients_use_registration_vcard_pep_bookmarks_version_time_last_and_csi() {
    require_slixmpp();
    let server = Server::start_with("[registration]\nenabled = true\ninterval_s = 0\n");
    // alice on shard 0, bob and the newcomer on shard 1: PEP events, presence and last-activity
    // queries from alice cross shards.
    let users = users_on_shards("svc", &[0, 1, 1]);
    for user in &users[..2] {
        server.register(user, "pw-svc");
    }
    run_scenario(&server, "slixmpp_services.py", &[&users[0], "pw-svc", &users[1], "pw-svc", &users[2], "pw-new"]);
}

/// tests/slixmpp_muc.py: XEP-0045 with real clients. The owner creates a room, makes it
/// persistent and members-only, invites a member who joins and sees the history, grants a
/// participant membership, and kicks the participant, who receives 307.
#[test]
fn slixmpp_clients_create_configure_invite_talk_and_kick_in_a_room() {
    require_slixmpp();
    let server = Server::start();
    // The owner on shard 0, the member and the participant on shard 1: the room's fan-out
    // crosses shards wherever the room lives.
    let users = users_on_shards("muc", &[0, 1, 1]);
    server.register_all(&users, "pw-muc");
    run_scenario(&server, "slixmpp_muc.py", &[&users[0], "pw-muc", &users[1], "pw-muc", &users[2], "pw-muc"]);
}

/// tests/slixmpp_real_clients.py: programs nobody here wrote, in their default behaviour,
/// against the default configuration: a slixmpp receiver (SCRAM-*-PLUS with tls-unique first,
/// as it does for its users) gets messages from go-sendxmpp (Go) and sendxmpp (Perl) over
/// STARTTLS and direct TLS and a go-sendxmpp post to a room, and slixmpp logs in ten times in
/// a row from one address.
#[test]
fn go_sendxmpp_sendxmpp_and_slixmpp_work_with_the_defaults() {
    require_slixmpp();
    for program in ["go-sendxmpp", "sendxmpp"] {
        let found = std::process::Command::new("sh").args(["-c", &format!("command -v {program}")]).status();
        assert!(found.is_ok_and(|s| s.success()), "{program} is required (apt-get install go-sendxmpp sendxmpp); .ci/run installs it");
    }
    let server = Server::start();
    let users = users_on_shards("real", &[0, 1]);
    server.register_all(&users, "pw-real");
    let output = std::process::Command::new(PYTHON)
        .arg(format!("{}/slixmpp_real_clients.py", env!("CARGO_MANIFEST_DIR")))
        .args(["127.0.0.1", &server.c2s.to_string(), &server.c2s_tls.to_string()])
        .arg(server.data_dir.join("cert.pem"))
        .args([DOMAIN, &users[0], "pw-real", &users[1], "pw-real"])
        .output()
        .expect("run slixmpp_real_clients.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("ok: all "),
        "slixmpp_real_clients.py failed:\n{stdout}\n{stderr}\nserver log:\n{}",
        server.log()
    );
    assert!(!server.log().contains("banned"), "no address was banned:\n{}", server.log());
}

/// Runs a scenario script (HOST PORT CAFILE DOMAIN then `accounts`) and requires every check
/// to pass ("ok: all …"); on failure shows its output and the server's log.
fn run_scenario(server: &Server, script: &str, accounts: &[&str]) {
    let output = std::process::Command::new(PYTHON)
        .arg(format!("{}/{script}", env!("CARGO_MANIFEST_DIR")))
        .args(["127.0.0.1", &server.c2s.to_string()])
        .arg(server.data_dir.join("cert.pem"))
        .arg(DOMAIN)
        .args(accounts)
        .output()
        .expect("run slixmpp script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stdout.contains("ok: all "), "{script} failed:\n{stdout}\n{stderr}\nserver log:\n{}", server.log());
}

fn require_slixmpp() {
    let check = std::process::Command::new(PYTHON).args(["-c", "import slixmpp"]).status();
    assert!(check.is_ok_and(|s| s.success()), "python3-slixmpp is required (apt-get install python3-slixmpp); .ci/run installs it");
}
