//! `confab-loadgen`: a standard-XMPP load generator.
//!
//! `run` provisions accounts (optional), starts `--procs` worker processes (one process holds
//! fewer than 20,000 descriptors here), samples the server's RSS and CPU from /proc while they
//! work, merges their histograms and prints, writes JSON and a report. `compare` puts several
//! JSON results side by side. Workers are this same binary, started with the hidden `worker`
//! command and a JSON plan.

mod client;
mod im;
mod metrics;
mod muc;
mod report;
mod scenario;

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::metrics::{now_ns, Counters, Tick, WorkerReport};
use crate::scenario::{Plan, Scenario};

/// Users per source address before another 127.0.0.x is added: well inside the 28k
/// ephemeral ports of one (source, destination) pair.
const USERS_PER_SOURCE_ADDRESS: u64 = 20_000;
/// Concurrent registrations during provisioning.
const PROVISIONING_THREADS: usize = 8;

#[derive(Parser)]
#[command(
    name = "confab-loadgen",
    version,
    about = "Standard-XMPP load generator: logins, idle sessions, chat, reconnect storms, \
roster loads, presence fan-out, archive (MAM) queries, a mixed IM blend and multi-user chat rooms; measures any compliant server (Confab, ejabberd, \
Prosody) with HDR histograms, open-loop."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a scenario against a server.
    Run(Box<RunArgs>),
    /// Print a side-by-side markdown table of several --json results, with ratios to the first.
    Compare {
        /// JSON files written by `run --json`.
        files: Vec<PathBuf>,
    },
    /// Internal: one worker process (started by `run`).
    #[command(hide = true)]
    Worker { plan: String },
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// login: arrivals at --rate/s, each login timed by stage. idle: log --users in at --rate/s
    /// and hold them for --duration (memory per session). chat: --users online, --rate
    /// messages/s in total to random online users, end-to-end latency, loss, duplicates,
    /// reordering. storm: log in, hold --duration, then all drop and reconnect at once.
    /// roster: logins as in login, each account with --contacts roster items; roster load
    /// time. presence: --users online with --contacts mutual contacts each, --rate presence
    /// changes/s in total; fan-out latency per copy, missing and duplicated copies. mam:
    /// --users online each send --messages messages to contacts, then --rate archive queries/s
    /// for the last --page; query → <fin/> latency, results per page. mixed: --rate events/s
    /// blending chat 70%, presence 20%, roster gets 5%, archive queries 5%. muc: --rooms
    /// rooms of --occupants (users 1..=R×S, room by room) each posting every --interval;
    /// latency and loss per delivered copy.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Server address (host:port): the c2s port for starttls/none, the TLS port for direct.
    #[arg(long)]
    server: String,
    /// XMPP domain of the accounts (the stream's `to`).
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// Number of accounts (user i is <prefix><i>, i from 1). For login, defaults to
    /// rate × duration.
    #[arg(long)]
    users: Option<u64>,
    #[arg(long, default_value = "user")]
    prefix: String,
    /// Password of user i is <password-prefix><i>.
    #[arg(long, default_value = "pass")]
    password_prefix: String,
    /// Create the accounts first through this ejabberd-compatible API
    /// (POST <url>/api/register); existing accounts are fine.
    #[arg(long)]
    register_api: Option<String>,
    /// Arrivals per second (login, idle, storm) or messages per second in total (chat).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Arrivals per second of the login phase before chat starts.
    #[arg(long, default_value_t = 200.0)]
    login_rate: f64,
    /// How long the measured phase lasts: arrivals (login), hold (idle, storm), messages
    /// (chat). Accepts 30s, 2m, 500ms.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// starttls (RFC 6120), direct (XEP-0368 TLS port) or none.
    #[arg(long, default_value = "starttls")]
    tls: String,
    /// SCRAM-SHA-256, SCRAM-SHA-1 or PLAIN (salted passwords are cached per user, so
    /// PBKDF2 is paid once per user per process).
    #[arg(long, default_value = "SCRAM-SHA-256")]
    mechanism: String,
    /// Accept any server certificate (self-signed test servers).
    #[arg(long)]
    insecure: bool,
    /// Trust this PEM CA file instead (ignored with --insecure).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Skip the roster request during login.
    #[arg(long)]
    no_roster: bool,
    /// login: keep each session open until the end instead of closing it after login.
    #[arg(long)]
    stay: bool,
    /// Worker processes (each holds < 20,000 descriptors here); default: one per core.
    #[arg(long)]
    procs: Option<u64>,
    /// Source addresses 127.0.0.1..=127.0.0.N for client sockets (loopback servers only);
    /// default: one per 20,000 users.
    #[arg(long)]
    source_addresses: Option<u8>,
    /// Whitespace keepalive interval while holding sessions.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    keepalive: Duration,
    /// Bytes of each chat message body.
    #[arg(long, default_value_t = 100)]
    body_bytes: usize,
    /// Give up on a login stage after this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// Server process to sample (RSS, CPU) from /proc; repeat for a cluster. Works for
    /// ejabberd's beam.smp too.
    #[arg(long = "server-pid")]
    server_pid: Vec<u32>,
    /// Name of this run in reports (e.g. confab, ejabberd).
    #[arg(long, default_value = "server")]
    label: String,
    /// Write the merged result as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a markdown summary and SVG charts into this directory.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Seed for recipient choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// IM scenarios: roster contacts per account. User i's contacts are the C/2 users on
    /// either side of it on a ring (1..=--users), all mutual (subscription both), so C must
    /// be even and below --users.
    #[arg(long, default_value_t = 100)]
    contacts: u64,
    /// Provision those rosters first through this ejabberd-compatible API
    /// (POST <url>/api/add_rosteritem, both directions, subs both); idempotent.
    #[arg(long)]
    roster_api: Option<String>,
    /// mam: messages each user sends to its contacts before the queries.
    #[arg(long, default_value_t = 100)]
    messages: u64,
    /// mam: archive-filling messages per second in total (not measured; the queries start
    /// after the last one plus a drain).
    #[arg(long, default_value_t = 500.0)]
    fill_rate: f64,
    /// mam, mixed: archive page asked for (RSM <max/> with <before/>: the last N messages).
    #[arg(long, default_value_t = 50)]
    page: u64,
    /// muc: rooms (loadgen-room-0, 1, …); the first --occupants users are room 0's.
    #[arg(long, default_value_t = 1)]
    rooms: u64,
    /// muc: occupants per room; --users defaults to, and must be at least, rooms × occupants.
    #[arg(long, default_value_t = 10)]
    occupants: u64,
    /// muc: time between one occupant's posts (30s, 500ms, or seconds); the total is
    /// rooms × occupants / interval posts per second, each delivered to occupants − 1 others.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    interval: Duration,
    /// muc: the MUC service (default conference.<domain>).
    #[arg(long)]
    muc_domain: Option<String>,
    /// muc: joins per second (each room's creator first, then the other occupants).
    #[arg(long, default_value_t = 100.0)]
    join_rate: f64,
    /// muc: wait between the last join due and the first post. Filling a room of n costs the
    /// server n²/2 presence copies (each newcomer's presence goes to everyone there): give a
    /// big room time to drain them, or its late joins are counted (muc_joins_late).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    join_grace: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.find(|c: char| c.is_ascii_alphabetic()).map(|i| text.split_at(i)).unwrap_or((text, "s"));
    let value: f64 = number.trim().parse().map_err(|_| format!("bad duration {text:?} (try 30s, 2m, 500ms)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("bad unit in {text:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Run(args) => match run(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("confab-loadgen: {message}");
                ExitCode::FAILURE
            }
        },
        Cmd::Compare { files } => match report::compare(&files) {
            Ok(table) => {
                print!("{table}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("confab-loadgen: {message}");
                ExitCode::FAILURE
            }
        },
        Cmd::Worker { plan } => worker(&plan),
    }
}

/// A worker: runs its share of the plan, prints progress lines and then its report as JSON.
fn worker(plan: &str) -> ExitCode {
    raise_descriptor_limit();
    let plan: Plan = match serde_json::from_str(plan) {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("confab-loadgen worker: bad plan: {error}");
            return ExitCode::FAILURE;
        }
    };
    let progress = |counters: &Counters| {
        let line = serde_json::json!({ "progress": counters });
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    match scenario::run(plan, progress) {
        Ok(metrics) => {
            let line = serde_json::json!({ "result": metrics.report() });
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("confab-loadgen worker: {message}");
            ExitCode::FAILURE
        }
    }
}

fn raise_descriptor_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn run(args: RunArgs) -> Result<(), String> {
    let server: SocketAddr = args
        .server
        .to_socket_addrs()
        .map_err(|e| format!("--server {}: {e}", args.server))?
        .next()
        .ok_or_else(|| format!("--server {} resolves to nothing", args.server))?;
    if args.rate <= 0.0 || args.login_rate <= 0.0 {
        return Err("--rate and --login-rate must be positive".into());
    }
    let login_arrivals = (args.rate * args.duration.as_secs_f64()).ceil() as u64;
    let arrivals_cycle = matches!(args.scenario, Scenario::Login | Scenario::Roster);
    let occupants = if args.scenario == Scenario::Muc {
        if args.rooms == 0 || args.occupants == 0 || args.interval.is_zero() || args.join_rate <= 0.0 {
            return Err("--rooms, --occupants, --interval and --join-rate must be positive".into());
        }
        Some(args.rooms * args.occupants)
    } else {
        None
    };
    let users = match (args.users, arrivals_cycle, occupants) {
        (Some(users), _, _) => users,
        (None, true, _) => login_arrivals,
        (None, false, Some(occupants)) => occupants,
        (None, false, None) => return Err("--users is required for this scenario".into()),
    };
    if let Some(occupants) = occupants.filter(|o| users < *o) {
        return Err(format!("--users {users} is fewer than --rooms × --occupants = {occupants}"));
    }
    if users == 0 {
        return Err("no users".into());
    }
    let graph = if args.scenario.uses_contacts() { Some(im::ContactGraph::new(users, args.contacts)?) } else { None };
    if args.scenario == Scenario::Roster && args.no_roster {
        return Err("the roster scenario measures the roster get: drop --no-roster".into());
    }
    if args.scenario == Scenario::Mam && (args.fill_rate <= 0.0 || args.page == 0) {
        return Err("--fill-rate and --page must be positive".into());
    }
    let arrivals = if arrivals_cycle { login_arrivals.max(1) } else { users };
    let cpus = std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1);
    let procs = args.procs.unwrap_or(cpus).clamp(1, arrivals);
    let sources = match (args.source_addresses, server.ip().is_loopback()) {
        (Some(0), _) | (None, false) => Vec::new(),
        (Some(n), true) => (1..=n).map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i))).collect(),
        (Some(_), false) => return Err("--source-addresses needs a loopback server".into()),
        (None, true) => {
            let n = users.div_ceil(USERS_PER_SOURCE_ADDRESS).clamp(1, 250) as u8;
            (1..=n).map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i))).collect()
        }
    };
    if let Some(url) = &args.register_api {
        provision(url, &args.domain, &args.prefix, &args.password_prefix, users)?;
    }
    let mut roster_provisioning = (0.0, 0);
    if let (Some(url), Some(graph)) = (&args.roster_api, &graph) {
        roster_provisioning = provision_rosters(url, &args.domain, &args.prefix, graph)?;
    }
    let baseline = sample(&args.server_pid);
    let start_ns = now_ns() + 1_000_000_000;
    let plan = Plan {
        scenario: args.scenario,
        server,
        domain: args.domain.clone(),
        users,
        arrivals,
        prefix: args.prefix.clone(),
        password_prefix: args.password_prefix.clone(),
        rate: args.rate,
        login_rate: args.login_rate,
        duration_ns: args.duration.as_nanos() as u64,
        tls: args.tls.clone(),
        mechanism: args.mechanism.clone(),
        insecure: args.insecure,
        ca: args.ca.clone(),
        roster: !args.no_roster,
        stay: args.stay,
        sources,
        keepalive_ns: args.keepalive.as_nanos().max(1) as u64,
        body_bytes: args.body_bytes,
        timeout_ns: args.timeout.as_nanos() as u64,
        procs,
        worker: 0,
        start_ns,
        seed: args.seed,
        contacts: if args.scenario.uses_contacts() { args.contacts } else { 0 },
        messages: args.messages,
        fill_rate: args.fill_rate,
        page: args.page,
        rooms: if args.scenario == Scenario::Muc { args.rooms } else { 0 },
        occupants: args.occupants,
        interval_ns: args.interval.as_nanos() as u64,
        muc_domain: args.muc_domain.clone().unwrap_or_else(|| format!("conference.{}", args.domain)),
        join_rate: args.join_rate,
        join_grace_ns: args.join_grace.as_nanos() as u64,
    };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let progress: Arc<Mutex<Vec<Counters>>> = Arc::new(Mutex::new(vec![Counters::default(); procs as usize]));
    let results: Arc<Mutex<Vec<Option<WorkerReport>>>> = Arc::new(Mutex::new((0..procs).map(|_| None).collect()));
    let mut children = Vec::new();
    let mut readers = Vec::new();
    for k in 0..procs {
        let plan = Plan { worker: k, ..plan.clone() };
        let json = serde_json::to_string(&plan).map_err(|e| e.to_string())?;
        let mut child = Command::new(&exe)
            .args(["worker", &json])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start worker: {e}"))?;
        let stdout = child.stdout.take().ok_or("worker stdout")?;
        let progress = progress.clone();
        let results = results.clone();
        readers.push(std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                if let Some(p) = value.get("progress").and_then(|p| serde_json::from_value::<Counters>(p.clone()).ok()) {
                    if let Ok(mut all) = progress.lock() {
                        all[k as usize] = p;
                    }
                } else if let Some(r) = value.get("result").and_then(|r| serde_json::from_value::<WorkerReport>(r.clone()).ok()) {
                    if let Ok(mut all) = results.lock() {
                        all[k as usize] = Some(r);
                    }
                }
            }
        }));
        children.push(child);
    }
    // Sample once a second until every worker is done.
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(arrivals);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} logins  {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut timeline = Vec::new();
    let mut previous = Counters::default();
    let mut previous_cpu = baseline.cpu_seconds;
    let mut peak_rss = baseline.rss_bytes;
    let mut peak_sessions = 0;
    // RSS samples taken while the peak number of sessions was held; their median is the
    // steady-state cost of the sessions (robust to the login-phase peak and to a sample
    // caught while sessions were already closing at the end).
    let mut steady_rss_samples: Vec<u64> = Vec::new();
    let mut cpu_samples: Vec<(u64, f64)> = vec![(now_ns(), baseline.cpu_seconds)];
    let clock = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let done = children.iter_mut().all(|c| matches!(c.try_wait(), Ok(Some(_))));
        let total = progress.lock().map(|all| sum(&all)).unwrap_or_default();
        let server = sample(&args.server_pid);
        cpu_samples.push((now_ns(), server.cpu_seconds));
        peak_rss = peak_rss.max(server.rss_bytes);
        if total.sessions_online > peak_sessions {
            peak_sessions = total.sessions_online;
            steady_rss_samples.clear();
        }
        if total.sessions_online == peak_sessions && peak_sessions > 0 {
            steady_rss_samples.push(server.rss_bytes);
        }
        let tick = Tick {
            t_s: clock.elapsed().as_secs_f64(),
            logins_per_s: (total.logins_ok.saturating_sub(previous.logins_ok)) as f64,
            // Chat messages, or in muc the copies delivered to other occupants.
            messages_per_s: (total.messages_received + total.muc_copies_received)
                .saturating_sub(previous.messages_received + previous.muc_copies_received) as f64,
            sessions: total.sessions_online,
            server_rss_bytes: server.rss_bytes,
            server_cpu_percent: (server.cpu_seconds - previous_cpu) * 100.0,
        };
        previous_cpu = server.cpu_seconds;
        if let Some(bar) = &bar {
            bar.set_position(total.logins_ok + total.logins_failed);
            bar.set_message(format!(
                "{:.0} logins/s  {:.0} msg/s  {} online  {} failed  server {:.0} MiB",
                tick.logins_per_s,
                tick.messages_per_s,
                tick.sessions,
                total.logins_failed,
                server.rss_bytes as f64 / 1048576.0
            ));
        }
        previous = total;
        timeline.push(tick);
        if done {
            break;
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    for reader in readers {
        let _ = reader.join();
    }
    let end = sample(&args.server_pid);
    let loadgen_cpu = children_cpu_seconds();
    let reports: Vec<WorkerReport> = results.lock().map_err(|_| "lock")?.drain(..).flatten().collect();
    if reports.len() != procs as usize {
        return Err(format!("{} of {procs} workers reported; see errors above", reports.len()));
    }
    let mut summary = report::merge(&reports);
    if let Some(graph) = &graph {
        let sent: Vec<_> = reports.iter().flat_map(|r| r.presence_sent.iter().copied()).collect();
        let online: Vec<_> = reports.iter().flat_map(|r| r.online.iter().copied()).collect();
        let mut copies = std::collections::BTreeMap::new();
        for (event, n) in reports.iter().flat_map(|r| r.presence_copies.iter()) {
            *copies.entry(*event).or_insert(0) += n;
        }
        let tally = im::tally(graph, &sent, &online, &copies);
        summary.presence_copies_expected = tally.expected;
        summary.presence_copies_received = tally.received;
        summary.presence_copies_missing = tally.missing;
        summary.presence_copies_unexpected = tally.unexpected;
        summary.contacts = graph.contacts();
    }
    (summary.roster_provisioning_s, summary.roster_provisioning_items) = roster_provisioning;
    summary.scenario = args.scenario.name().into();
    summary.label = args.label.clone();
    summary.server = args.server.clone();
    summary.command = std::env::args().collect::<Vec<_>>().join(" ");
    summary.started_unix_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    summary.users = users;
    summary.procs = procs;
    summary.rate = args.rate;
    summary.duration_s = args.duration.as_secs_f64();
    summary.sessions_peak = peak_sessions;
    summary.server_rss_bytes = peak_rss;
    summary.server_rss_baseline_bytes = baseline.rss_bytes;
    if peak_sessions > 0 && !args.server_pid.is_empty() {
        steady_rss_samples.sort_unstable();
        let steady_rss = steady_rss_samples.get(steady_rss_samples.len() / 2).copied().unwrap_or(peak_rss);
        summary.server_rss_bytes_per_session = steady_rss.saturating_sub(baseline.rss_bytes) as f64 / peak_sessions as f64;
    }
    summary.server_cpu_seconds = end.cpu_seconds - baseline.cpu_seconds;
    // In the IM scenarios messages are one load among several (mam's fill, mixed's blend):
    // the measured phase's CPU is reported instead.
    if summary.messages_received > 0 && !matches!(args.scenario, Scenario::Presence | Scenario::Mam | Scenario::Mixed) {
        summary.server_cpu_us_per_message = summary.server_cpu_seconds * 1e6 / summary.messages_received as f64;
    }
    if summary.logins_ok > 0 {
        summary.server_cpu_us_per_login = summary.server_cpu_seconds * 1e6 / summary.logins_ok as f64;
    }
    summary.loadgen_cpu_seconds = loadgen_cpu;
    let measured_s = match args.scenario {
        Scenario::Idle | Scenario::Storm => users as f64 / args.rate,
        _ => args.duration.as_secs_f64(),
    }
    .max(0.001);
    let login_phase_rate = if args.scenario.has_phase() { args.login_rate } else { args.rate };
    summary.logins_per_s = match args.scenario {
        Scenario::Login | Scenario::Roster => summary.logins_ok as f64 / measured_s,
        _ => summary.logins_ok.min(users) as f64 / (users as f64 / login_phase_rate).max(0.001),
    };
    if args.scenario.has_phase() && !args.server_pid.is_empty() {
        // CPU of the measured phase alone (logins and archive filling excluded), from the
        // per-second samples.
        let (from, to) = plan.phase_window_ns();
        let before = cpu_samples.iter().rev().find(|(t, _)| *t <= from).map(|(_, c)| *c).unwrap_or(baseline.cpu_seconds);
        let after = cpu_samples.iter().find(|(t, _)| *t >= to).map(|(_, c)| *c).unwrap_or(end.cpu_seconds);
        let phase = (after - before).max(0.0);
        summary.server_cpu_phase_seconds = phase;
        match args.scenario {
            Scenario::Chat if summary.messages_received > 0 => {
                summary.server_cpu_us_per_message = phase * 1e6 / summary.messages_received as f64
            }
            Scenario::Presence if summary.presence_copies_received > 0 => {
                summary.server_cpu_us_per_presence_copy = phase * 1e6 / summary.presence_copies_received as f64;
            }
            Scenario::Mam if summary.archive_answered > 0 => {
                summary.server_cpu_us_per_archive_query = phase * 1e6 / summary.archive_answered as f64
            }
            Scenario::Muc if summary.muc_copies_received > 0 => {
                summary.server_cpu_us_per_muc_copy = phase * 1e6 / summary.muc_copies_received as f64
            }
            _ => {}
        }
    }
    summary.messages_per_s = match args.scenario {
        // mam's messages are the archive filling, sent before the measured phase.
        Scenario::Mam => summary.messages_received as f64 / ((users * args.messages) as f64 / args.fill_rate).max(0.001),
        _ => summary.messages_received as f64 / measured_s,
    };
    if args.scenario == Scenario::Muc {
        summary.muc_rooms = plan.rooms;
        summary.muc_occupants = plan.occupants;
        summary.muc_interval_s = args.interval.as_secs_f64();
        summary.rate = (plan.rooms * plan.occupants) as f64 / args.interval.as_secs_f64();
        summary.muc_domain = plan.muc_domain.clone();
        summary.muc_messages_per_s = summary.muc_messages_sent as f64 / measured_s;
        summary.muc_copies_per_s = summary.muc_copies_received as f64 / measured_s;
    }
    summary.timeline = timeline;
    print!("{}", report::table(&summary));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
        std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(dir) = &args.report {
        report::write_report(dir, &summary).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

fn sum(all: &[Counters]) -> Counters {
    let mut total = Counters::default();
    for counters in all {
        metrics::merge_counters(&mut total, counters);
    }
    total
}

/// Registers users 1..=n through the ejabberd-compatible API, concurrently.
fn provision(url: &str, domain: &str, prefix: &str, password_prefix: &str, n: u64) -> Result<(), String> {
    let started = Instant::now();
    let (domain, prefix, password_prefix) = (domain.to_owned(), prefix.to_owned(), password_prefix.to_owned());
    let failures = call_api(url, "register", n, move |i| {
        let i = i + 1;
        (
            format!("{prefix}{i}"),
            serde_json::json!({"user": format!("{prefix}{i}"), "host": domain, "password": format!("{password_prefix}{i}")}),
        )
    });
    eprintln!("confab-loadgen: provisioned {n} accounts in {:.1}s", started.elapsed().as_secs_f64());
    match failures.first() {
        Some(first) => Err(format!("{} registrations failed, first: {first}", failures.len())),
        None => Ok(()),
    }
}

/// Gives every account its contacts through ejabberd mod_admin_extra's add_rosteritem (one
/// call per direction, subscription both: a mutual relationship without any XMPP
/// handshake). Returns the seconds it took and the items written.
fn provision_rosters(url: &str, domain: &str, prefix: &str, graph: &im::ContactGraph) -> Result<(f64, u64), String> {
    let started = Instant::now();
    let (domain, prefix, graph_copy) = (domain.to_owned(), prefix.to_owned(), *graph);
    let failures = call_api(url, "add_rosteritem", graph.items(), move |index| {
        let (owner, contact) = graph_copy.item(index);
        let body = serde_json::json!({
            "localuser": format!("{prefix}{owner}"), "localhost": domain,
            "user": format!("{prefix}{contact}"), "host": domain,
            "nick": format!("{prefix}{contact}"), "group": "loadgen", "subs": "both",
        });
        (format!("{prefix}{owner} → {prefix}{contact}"), body)
    });
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("confab-loadgen: provisioned {} roster items ({} contacts each) in {seconds:.1}s", graph.items(), graph.contacts());
    match failures.first() {
        Some(first) => Err(format!("{} add_rosteritem calls failed, first: {first}", failures.len())),
        None => Ok((seconds, graph.items())),
    }
}

/// Calls `POST <url>/api/<command>` for i in 0..n on PROVISIONING_THREADS threads; returns the
/// failures. A success is a 2xx answer whose body is not ejabberd's error code 1; 409
/// (already registered) counts as a success, since existing accounts are what we want.
fn call_api(url: &str, command: &str, n: u64, request: impl Fn(u64) -> (String, serde_json::Value) + Send + Sync + 'static) -> Vec<String> {
    let next = Arc::new(Mutex::new(0u64));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let request = Arc::new(request);
    let endpoint = format!("{}/api/{command}", url.trim_end_matches('/'));
    let threads: Vec<_> = (0..PROVISIONING_THREADS)
        .map(|_| {
            let (next, failures, request, endpoint) = (next.clone(), failures.clone(), request.clone(), endpoint.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
                loop {
                    let i = {
                        let Ok(mut next) = next.lock() else { return };
                        let i = *next;
                        *next += 1;
                        i
                    };
                    if i >= n {
                        return;
                    }
                    let (what, body) = request(i);
                    let problem = match agent.post(&endpoint).send_json(body) {
                        Ok(mut response) => {
                            let status = response.status();
                            let text = response.body_mut().read_to_string().unwrap_or_default();
                            if status.as_u16() == 409 || (status.is_success() && text.trim() != "1") {
                                None
                            } else {
                                Some(format!("HTTP {status}: {text}"))
                            }
                        }
                        Err(error) => Some(error.to_string()),
                    };
                    if let Some(problem) = problem {
                        if let Ok(mut failures) = failures.lock() {
                            failures.push(format!("{what}: {problem}"));
                        }
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
    failures.lock().map(|f| f.clone()).unwrap_or_default()
}

#[derive(Default)]
struct ProcessSample {
    rss_bytes: u64,
    cpu_seconds: f64,
}

/// RSS and CPU time (user + system) of the given processes, summed, from /proc.
fn sample(pids: &[u32]) -> ProcessSample {
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut total = ProcessSample::default();
    for pid in pids {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                total.rss_bytes += kb * 1024;
            }
        }
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // Fields after the parenthesised command name; utime and stime are 14th and 15th.
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let utime: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
                let stime: f64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
                total.cpu_seconds += (utime + stime) / ticks;
            }
        }
    }
    total
}

/// CPU seconds used by this process and its finished children (the workers).
fn children_cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    let mut total = 0.0;
    for who in [libc::RUSAGE_CHILDREN, libc::RUSAGE_SELF] {
        // SAFETY: getrusage fills the struct we pass.
        #[allow(unsafe_code)]
        let usage = unsafe {
            libc::getrusage(who, usage.as_mut_ptr());
            usage.assume_init()
        };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        total += tv(usage.ru_utime) + tv(usage.ru_stime);
    }
    total
}
