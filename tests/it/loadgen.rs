//! confab-loadgen against a real Confab node: every login succeeds, every chat message
//! arrives exactly once, every roster holds the provisioned contacts, every presence copy owed
//! arrives once, every archive query gets its whole page; latencies are recorded.

use std::path::PathBuf;

use crate::support::Server;

fn loadgen() -> PathBuf {
    let path = crate::support::binary().with_file_name("confab-loadgen");
    assert!(path.exists(), "{} is missing: run `cargo build -p confab-loadgen` (scripts/test does)", path.display());
    path
}

fn run(server: &Server, args: &[&str]) -> serde_json::Value {
    let json = server.data_dir.join(format!("{}.json", args.join("_").replace(['/', ' ', ':'], "")));
    let pid = server_pid(server);
    let output = std::process::Command::new(loadgen())
        .args(["run", "--server", &format!("127.0.0.1:{}", server.c2s), "--insecure", "--procs", "2"])
        .args(["--register-api", &format!("http://127.0.0.1:{}", server.http)])
        .args(["--server-pid", &pid.to_string()])
        .arg("--json")
        .arg(&json)
        .args(args)
        .output()
        .expect("loadgen runs");
    assert!(
        output.status.success(),
        "loadgen failed:\n{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        server.log()
    );
    serde_json::from_str(&std::fs::read_to_string(&json).expect("json written")).expect("valid json")
}

fn server_pid(server: &Server) -> u32 {
    let data_dir = server.data_dir.display().to_string();
    std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .find(|pid| String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).contains(&data_dir))
        .expect("server pid")
}

#[test]
fn chat_scenario_delivers_every_message_exactly_once() {
    let server = Server::start();
    let result = run(&server, &["--scenario", "chat", "--users", "30", "--rate", "100", "--login-rate", "100", "--duration", "3s"]);
    assert_eq!(result["scenario"], "chat");
    assert_eq!(result["logins_ok"], 30, "{result}");
    assert_eq!(result["logins_failed"], 0);
    let sent = result["messages_sent"].as_u64().expect("sent");
    assert_eq!(sent, 300, "rate × duration messages: {result}");
    assert_eq!(result["messages_received"].as_u64(), Some(sent), "{result}");
    assert_eq!(result["messages_lost"], 0);
    assert_eq!(result["messages_duplicated"], 0);
    assert_eq!(result["latency_ms"]["count"].as_u64(), Some(sent));
    assert!(result["latency_ms"]["p99"].as_f64().expect("p99") > 0.0);
    assert!(result["server_rss_bytes"].as_u64().expect("rss") > 0);
    assert!(result["server_cpu_seconds"].as_f64().expect("cpu") > 0.0);
}

#[test]
fn login_and_storm_scenarios_count_every_login() {
    let server = Server::start();
    let login = run(&server, &["--scenario", "login", "--rate", "40", "--duration", "1s"]);
    assert_eq!(login["logins_ok"], 40, "{login}");
    assert_eq!(login["logins_failed"], 0);
    for stage in ["tcp", "tls", "sasl", "bind", "roster", "presence"] {
        assert_eq!(login["stage_ms"][stage]["count"], 40, "stage {stage}: {login}");
    }
    let storm = run(&server, &["--scenario", "storm", "--users", "30", "--rate", "60", "--duration", "1s"]);
    assert_eq!(storm["logins_ok"], 60, "30 logins and 30 relogins: {storm}");
    assert_eq!(storm["storm_login_ms"]["count"], 30);
    assert!(storm["storm_recovery_ms"].as_f64().expect("recovery") > 0.0);
}

#[test]
fn idle_scenario_measures_memory_per_session() {
    let server = Server::start();
    let idle = run(&server, &["--scenario", "idle", "--users", "40", "--rate", "100", "--duration", "4s", "--tls", "starttls"]);
    assert_eq!(idle["logins_ok"], 40, "{idle}");
    assert_eq!(idle["sessions_peak"], 40, "{idle}");
    assert!(idle["server_rss_bytes_per_session"].as_f64().expect("per session") > 0.0, "{idle}");
}

/// Accounts and rosters provisioned through the admin API (add_rosteritem, both directions).
fn im_run(server: &Server, args: &[&str]) -> serde_json::Value {
    let api = format!("http://127.0.0.1:{}", server.http);
    let mut all = vec!["--roster-api", api.as_str()];
    all.extend_from_slice(args);
    run(server, &all)
}

#[test]
fn roster_scenario_loads_every_provisioned_contact() {
    let server = Server::start();
    let result = im_run(&server, &["--scenario", "roster", "--users", "12", "--contacts", "4", "--rate", "20", "--duration", "1s"]);
    assert_eq!(result["logins_ok"], 20, "arrivals cycle over the 12 accounts: {result}");
    assert_eq!(result["logins_failed"], 0);
    assert_eq!(result["roster_provisioning_items"], 48, "12 users × 4 contacts: {result}");
    assert_eq!(result["roster_gets"], 20);
    assert_eq!(result["roster_results"], 20);
    assert_eq!(result["roster_items_wrong"], 0, "every roster holds its 4 contacts: {result}");
    assert_eq!(result["roster_unanswered"], 0);
    assert_eq!(result["roster_load_us"]["count"], 20);
    assert!(result["roster_load_us"]["p50"].as_f64().expect("p50") > 0.0);
    let (status, roster) = server.api("get_roster", serde_json::json!({"user": "user1", "host": crate::support::DOMAIN}));
    assert_eq!(status, 200);
    let mut jids: Vec<&str> = roster.as_array().expect("items").iter().map(|i| i["jid"].as_str().expect("jid")).collect();
    jids.sort_unstable();
    assert_eq!(
        jids,
        ["user11@localhost", "user12@localhost", "user2@localhost", "user3@localhost"],
        "the two nearest on either side of a ring of 12"
    );
    assert!(roster.as_array().expect("items").iter().all(|i| i["subscription"] == "both"), "{roster}");
}

#[test]
fn presence_scenario_delivers_every_owed_copy_exactly_once() {
    let server = Server::start();
    let result = im_run(
        &server,
        &["--scenario", "presence", "--users", "12", "--contacts", "4", "--rate", "20", "--login-rate", "50", "--duration", "2s"],
    );
    assert_eq!(result["logins_ok"], 12, "{result}");
    assert_eq!(result["presence_sent"], 40, "rate × duration changes: {result}");
    assert_eq!(result["presence_copies_expected"], 160, "4 online contacts per change: {result}");
    assert_eq!(result["presence_copies_received"], 160, "{result}");
    assert_eq!(result["presence_copies_missing"], 0);
    assert_eq!(result["presence_copies_unexpected"], 0);
    assert_eq!(result["presence_copies_duplicated"], 0);
    assert_eq!(result["presence_fanout_us"]["count"], 160);
    assert!(result["server_cpu_us_per_presence_copy"].as_f64().expect("cpu") >= 0.0);
}

#[test]
fn mam_scenario_gets_every_page_whole() {
    let server = Server::start();
    let result = im_run(
        &server,
        &[
            "--scenario",
            "mam",
            "--users",
            "10",
            "--contacts",
            "4",
            "--messages",
            "60",
            "--fill-rate",
            "300",
            "--rate",
            "10",
            "--login-rate",
            "50",
            "--duration",
            "2s",
        ],
    );
    assert_eq!(result["logins_ok"], 10, "{result}");
    assert_eq!(result["messages_sent"], 600, "10 users × 60 filling messages: {result}");
    assert_eq!(result["messages_received"], 600);
    assert_eq!(result["archive_queries"], 20, "rate × duration queries: {result}");
    assert_eq!(result["archive_answered"], 20);
    assert_eq!(result["archive_results"], 20 * 50, "a whole page of 50 each: {result}");
    assert_eq!(result["archive_incomplete"], 0);
    assert_eq!(result["archive_short"], 0);
    assert_eq!(result["archive_errors"], 0);
    assert_eq!(result["archive_unanswered"], 0);
    assert_eq!(result["archive_query_us"]["count"], 20);
}

#[test]
fn compare_prints_ratios() {
    let dir = std::env::temp_dir().join(format!("confab-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let a = dir.join("a.json");
    let b = dir.join("b.json");
    std::fs::write(&a, r#"{"label":"confab","scenario":"chat","messages_per_s":900.0}"#).expect("write");
    std::fs::write(&b, r#"{"label":"ejabberd","scenario":"chat","messages_per_s":300.0}"#).expect("write");
    let output = std::process::Command::new(loadgen()).arg("compare").arg(&a).arg(&b).output().expect("compare runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("| messages/s | 900 | 300 | 0.33× |"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
