//! A real client library: python3-slixmpp logs in with SCRAM-SHA-256 over STARTTLS and chats
//! between two users on different shards.

use crate::support::{users_on_shards, Server, DOMAIN};

#[test]
fn slixmpp_clients_chat_over_starttls_with_scram() {
    let python = "/usr/bin/python3";
    let check = std::process::Command::new(python).args(["-c", "import slixmpp"]).status();
    assert!(
        check.is_ok_and(|s| s.success()),
        "python3-slixmpp is required (apt-get install python3-slixmpp); .ci/run installs it"
    );
    let server = Server::start();
    let users = users_on_shards("slix", &[0, 1]);
    for user in &users {
        server.register(user, "pw-slix");
    }
    let script = format!("{}/slixmpp_chat.py", env!("CARGO_MANIFEST_DIR"));
    let output = std::process::Command::new(python)
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
