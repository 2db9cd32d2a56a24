//! The store under faults: a full disk, a crash right after a delivery.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{Client, Server};

/// A tmpfs of `size_mib` mounted for the test, unmounted when dropped. Needs root (CI runs as
/// root; the test fails, not skips, without it: a storage fault test that cannot run is no
/// test).
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(name: &str, size_mib: u32) -> Tmpfs {
        let path = std::env::temp_dir().join(format!("confab-tmpfs-{name}-{}", std::process::id()));
        let _ = std::process::Command::new("umount").arg(&path).status();
        std::fs::create_dir_all(&path).expect("mount point");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs needs root (the storage fault test fills a small file system)");
        Tmpfs { path }
    }

    /// Writes a file until the file system is full; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        // What is left in smaller pieces, to the last page.
        while file.write_all(&chunk[..512]).is_ok() {}
        let _ = file.sync_all();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

fn roster_set(client: &mut Client, id: &str, jid: &str) -> String {
    client.iq(id, &format!("<iq type='set' id='{id}'><query xmlns='jabber:iq:roster'><item jid='{jid}'/></query></iq>"))
}

fn roster_get(client: &mut Client, id: &str) -> String {
    client.iq(id, &format!("<iq type='get' id='{id}'><query xmlns='jabber:iq:roster'/></iq>"))
}

/// A full disk: a roster set is refused and absent, a message for an offline user bounces to
/// its sender; when space returns, both work again without a restart; after a kill -9 and a
/// restart, everything acknowledged is there.
#[test]
fn a_full_disk_refuses_changes_and_writes_resume_when_space_returns() {
    let disk = Tmpfs::mount("full", 24);
    let mut server = Server::start_storing_in("", Some(disk.path.join("data")));
    server.register("writer", "pw");
    server.register("away", "pw");
    let mut writer = Client::login(&server, "writer", "pw", "desk");
    assert!(roster_set(&mut writer, "r0", "before@localhost").contains("type='result'"));

    let filler = disk.fill();
    let answer = roster_set(&mut writer, "r1", "full@localhost");
    assert!(answer.contains("type='error'"), "a change the store could not keep is refused: {answer}");
    let roster = roster_get(&mut writer, "g1");
    assert!(!roster.contains("full@localhost"), "and it is not in the roster: {roster}");
    assert!(roster.contains("before@localhost"), "what was stored stays: {roster}");
    writer.send("<message to='away@localhost' id='m1' type='chat'><body>kept?</body></message>");
    let bounce = writer.expect("id='m1'");
    assert!(bounce.contains("type='error'") && bounce.contains("from='away@localhost'"), "the sender is told: {bounce}");

    std::fs::remove_file(&filler).expect("free the space");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let answer = roster_set(&mut writer, &format!("r2-{attempt}"), "later@localhost");
        if answer.contains("type='result'") {
            break;
        }
        assert!(Instant::now() < deadline, "writes never resumed: {answer}\n{}", server.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    writer.send("<message to='away@localhost' id='m2' type='chat'><body>stored now</body></message>");
    // Barrier: the ping's answer comes after any bounce of m2 would have.
    let after = writer.iq("p2", "<iq type='get' id='p2'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert!(after.contains("id='p2'"), "{after}");
    assert!(writer.collect_for(Duration::from_millis(300)).iter().all(|s| !s.contains("id='m2'")), "no bounce once the store writes");

    let log = server.log();
    assert!(log.contains("store write failed") && log.contains("store writable again"), "the fault and the recovery are logged:\n{log}");
    server.restart();
    let mut writer = Client::login(&server, "writer", "pw", "desk");
    let roster = roster_get(&mut writer, "g3");
    assert!(roster.contains("before@localhost") && roster.contains("later@localhost"), "acknowledged changes survive: {roster}");
    assert!(!roster.contains("full@localhost"), "the refused one never appears: {roster}");
    let mut away = Client::login(&server, "away", "pw", "phone");
    let offline = away.expect("stored now");
    assert!(offline.contains("urn:xmpp:delay"), "{offline}");
    drop(writer);
    drop(away);
    drop(server);
    assert!(Path::new(&disk.path).exists());
}

/// The `id` of our `<stanza-id/>` on a delivered message.
fn stanza_id(message: &str) -> String {
    let tag = message.split("<stanza-id").nth(1).unwrap_or_else(|| panic!("no stanza-id: {message}"));
    tag.split("id='").nth(1).and_then(|rest| rest.split('\'').next()).expect("id attribute").to_owned()
}

/// Archive appends commit unsynced (up to ARCHIVE_SYNC_INTERVAL_MS): a kill -9 right after a
/// delivery loses the last ids from the store. The ids a restarted server gives out still
/// differ from every id delivered before.
#[test]
fn stanza_ids_stay_unique_across_a_kill_right_after_delivery() {
    let mut server = Server::start();
    server.register("ids-from", "pw");
    server.register("ids-to", "pw");
    let mut seen = std::collections::HashSet::new();
    for round in 0..3 {
        let mut sender = Client::login(&server, "ids-from", "pw", "s");
        let mut receiver = Client::login(&server, "ids-to", "pw", "r");
        for n in 0..10 {
            let marker = format!("round {round} message {n}");
            sender.send(&format!("<message to='ids-to@localhost' type='chat'><body>{marker}</body></message>"));
            let got = receiver.expect(&marker);
            let id = stanza_id(&got);
            assert!(seen.insert(id.clone()), "stanza-id {id} was given out twice (round {round}, message {n})");
        }
        // Within a few milliseconds of the last delivery: nothing has synced it.
        server.restart();
    }
    assert_eq!(seen.len(), 30);
}
