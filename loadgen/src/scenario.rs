//! Scenarios, run inside one worker process on one glommio executor.
//!
//! Open loop: every action has an intended time on a timetable fixed before the run (from the
//! shared monotonic `start_ns`), and latency counts from that intended time, so a slow server
//! cannot hide behind a slowed-down generator (no coordinated omission). Worker `k` of `p`
//! plays users `i` with `(i - 1) % p == k`. This module does not spawn processes or print
//! reports (main.rs does).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};

use crate::client::{self, ClientSettings, Session, Stage, TlsMode};
use crate::metrics::{self, now_ns, Metrics};

/// Grace between the end of the login phase and the first chat message.
const CHAT_GRACE_NS: u64 = 2_000_000_000;
/// Time given to messages in flight after the last one is sent.
const DRAIN_NS: u64 = 3_000_000_000;
/// Gaps remembered per (sender, receiver) pair to tell reordered from duplicated messages.
const GAPS_REMEMBERED_MAX: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Arrivals at --rate per second; each login is timed stage by stage.
    Login,
    /// Log --users in at --rate and hold them for --duration (the memory test).
    Idle,
    /// --users online; --rate messages per second in total to random online users.
    Chat,
    /// Log --users in, hold --duration, then all drop and reconnect at once.
    Storm,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Login => "login",
            Scenario::Idle => "idle",
            Scenario::Chat => "chat",
            Scenario::Storm => "storm",
        }
    }
}

/// Everything a worker needs, decided by the parent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub scenario: Scenario,
    pub server: std::net::SocketAddr,
    pub domain: String,
    /// Accounts used (user i is <prefix><i>, i from 1).
    pub users: u64,
    /// Arrivals: equal to `users`, except in the login scenario, where arrival k logs in as
    /// user ((k − 1) mod users) + 1, so a smaller set of accounts can be cycled and the
    /// generator's salted-password cache stays warm (it would otherwise pay PBKDF2 per login
    /// and measure itself).
    pub arrivals: u64,
    pub prefix: String,
    pub password_prefix: String,
    /// Arrivals per second (login, idle, storm) or messages per second in total (chat).
    pub rate: f64,
    /// Arrivals per second for the login phase of chat.
    pub login_rate: f64,
    pub duration_ns: u64,
    pub tls: String,
    pub mechanism: String,
    pub insecure: bool,
    pub ca: Option<std::path::PathBuf>,
    pub roster: bool,
    /// Login scenario: keep sessions open to the end instead of closing after login.
    pub stay: bool,
    pub sources: Vec<IpAddr>,
    pub keepalive_ns: u64,
    pub body_bytes: usize,
    pub timeout_ns: u64,
    pub procs: u64,
    pub worker: u64,
    pub start_ns: u64,
    pub seed: u64,
}

impl Plan {
    /// When the scenario's last action is due (the parent waits for workers past this).
    pub fn end_ns(&self) -> u64 {
        let logins = (self.arrivals as f64 / self.login_phase_rate() * 1e9) as u64;
        match self.scenario {
            Scenario::Login => self.start_ns + logins + self.timeout_ns.min(10_000_000_000),
            Scenario::Idle => self.start_ns + logins + self.duration_ns,
            Scenario::Chat => self.chat_start_ns() + self.duration_ns + DRAIN_NS,
            Scenario::Storm => self.storm_ns() + self.timeout_ns.min(30_000_000_000),
        }
    }

    fn login_phase_rate(&self) -> f64 {
        match self.scenario {
            Scenario::Chat => self.login_rate,
            _ => self.rate,
        }
        .max(0.001)
    }

    fn arrival_ns(&self, user: u64) -> u64 {
        self.start_ns + ((user - 1) as f64 / self.login_phase_rate() * 1e9) as u64
    }

    /// The chat phase, from the first message to the end of the drain.
    pub fn chat_window_ns(&self) -> (u64, u64) {
        let start = self.chat_start_ns();
        (start, start + self.duration_ns + DRAIN_NS)
    }

    fn chat_start_ns(&self) -> u64 {
        self.start_ns + (self.users as f64 / self.login_rate.max(0.001) * 1e9) as u64 + CHAT_GRACE_NS
    }

    fn storm_ns(&self) -> u64 {
        self.start_ns + (self.users as f64 / self.rate.max(0.001) * 1e9) as u64 + self.duration_ns
    }

    fn settings(&self) -> Result<ClientSettings, String> {
        let tls = match self.tls.as_str() {
            "starttls" => TlsMode::StartTls,
            "direct" => TlsMode::Direct,
            "none" => TlsMode::None,
            other => return Err(format!("unknown TLS mode {other}")),
        };
        let tls_config = match tls {
            TlsMode::None => None,
            _ => Some(client::tls_config(self.ca.as_deref(), self.insecure)?),
        };
        Ok(ClientSettings {
            server: self.server,
            domain: self.domain.clone(),
            tls,
            mechanism: self.mechanism.clone(),
            tls_config,
            roster: self.roster,
            timeout: Duration::from_nanos(self.timeout_ns),
        })
    }

    fn source(&self, user: u64) -> Option<IpAddr> {
        if self.sources.is_empty() {
            None
        } else {
            Some(self.sources[(user as usize) % self.sources.len()])
        }
    }

    /// The arrivals this worker plays.
    fn my_users(&self) -> impl Iterator<Item = u64> + '_ {
        (1..=self.arrivals).filter(move |i| (i - 1) % self.procs == self.worker)
    }

    /// The account arrival `k` logs in as.
    fn account(&self, arrival: u64) -> u64 {
        (arrival - 1) % self.users.max(1) + 1
    }
}

/// Shared state of one worker.
struct Worker {
    plan: Plan,
    settings: ClientSettings,
    metrics: RefCell<Metrics>,
    /// Per receiving user: per sender, highest sequence seen and the gaps below it.
    seen: RefCell<HashMap<u64, HashMap<u64, (u64, BTreeSet<u64>)>>>,
}

/// Runs the plan; returns the worker's metrics. `progress` is called about once a second.
pub fn run(plan: Plan, progress: impl Fn(&metrics::Counters) + 'static) -> Result<Metrics, String> {
    let settings = plan.settings()?;
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(256 * 1024)
        .make()
        .map_err(|e| e.to_string())?;
    executor.run(async move {
        let worker = Rc::new(Worker { plan, settings, metrics: RefCell::new(Metrics::new()), seen: RefCell::new(HashMap::new()) });
        let end = worker.plan.end_ns();
        let mut tasks = Vec::new();
        for user in worker.plan.my_users().collect::<Vec<_>>() {
            tasks.push(glommio::spawn_local(play(worker.clone(), user)));
        }
        let reporter = {
            let worker = worker.clone();
            glommio::spawn_local(async move {
                loop {
                    glommio::timer::sleep(Duration::from_secs(1)).await;
                    progress(&worker.metrics.borrow().counters);
                    if now_ns() > end + 60_000_000_000 {
                        break;
                    }
                }
            })
        };
        for task in tasks {
            task.await;
        }
        drop(reporter);
        let metrics = std::mem::take(&mut *worker.metrics.borrow_mut());
        Ok(metrics)
    })
}

async fn sleep_until(ns: u64) {
    let now = now_ns();
    if ns > now {
        glommio::timer::sleep(Duration::from_nanos(ns - now)).await;
    }
}

fn user_name(plan: &Plan, user: u64) -> (String, String) {
    (format!("{}{user}", plan.prefix), format!("{}{user}", plan.password_prefix))
}

/// Logs a user in at `intended_ns`, recording the login (from the intended time) and stages.
async fn log_in(worker: &Worker, user: u64, intended_ns: u64, storm: bool) -> Option<Session> {
    let (name, password) = user_name(&worker.plan, worker.plan.account(user));
    let result = client::login(&worker.settings, worker.plan.source(user), &name, &password, "lg").await;
    let mut metrics = worker.metrics.borrow_mut();
    match result {
        Ok((session, stages)) => {
            let us = (now_ns().saturating_sub(intended_ns)) / 1000;
            if storm {
                metrics::record(&mut metrics.storm_login_us, us);
            } else {
                metrics::record(&mut metrics.login_us, us);
                for (stage, duration) in stages {
                    if let Some(h) = metrics.stage_us.get_mut(&stage) {
                        metrics::record(h, duration.as_micros() as u64);
                    }
                }
            }
            metrics.counters.logins_ok += 1;
            metrics.counters.sessions_online += 1;
            if !session.roster_supported {
                metrics.counters.roster_unsupported += 1;
            }
            Some(session)
        }
        Err(error) => {
            metrics.counters.logins_failed += 1;
            *metrics.counters.failures_by_stage.entry(error.stage.name().to_owned()).or_default() += 1;
            let kind = format!("login_{}", error.stage.name());
            drop(metrics);
            worker.metrics.borrow_mut().error(&kind);
            if matches!(error.stage, Stage::Tcp) {
                tracing_stderr(&format!("user {user}: {error}"));
            }
            None
        }
    }
}

fn tracing_stderr(message: &str) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static PRINTED: AtomicU32 = AtomicU32::new(0);
    // A few examples are enough to diagnose; thousands would drown the terminal.
    if PRINTED.fetch_add(1, Ordering::Relaxed) < 5 {
        eprintln!("confab-loadgen: {message}");
    }
}

/// One user's whole life in the scenario.
async fn play(worker: Rc<Worker>, user: u64) {
    let plan = worker.plan.clone();
    let arrival = plan.arrival_ns(user);
    sleep_until(arrival).await;
    let Some(mut session) = log_in(&worker, user, arrival, false).await else { return };
    match plan.scenario {
        Scenario::Login if !plan.stay => {
            worker.metrics.borrow_mut().counters.sessions_online -= 1;
            session.close().await;
        }
        Scenario::Login | Scenario::Idle => {
            if hold(&worker, user, &mut session, plan.end_ns(), None).await.is_ok() {
                worker.metrics.borrow_mut().counters.sessions_online -= 1;
                session.close().await;
            }
        }
        Scenario::Chat => {
            if hold(&worker, user, &mut session, plan.end_ns(), Some(ChatSchedule::new(&plan, user))).await.is_ok() {
                worker.metrics.borrow_mut().counters.sessions_online -= 1;
                session.close().await;
            }
        }
        Scenario::Storm => {
            let storm = plan.storm_ns();
            if hold(&worker, user, &mut session, storm, None).await.is_err() {
                return;
            }
            worker.metrics.borrow_mut().counters.sessions_online -= 1;
            session.abort();
            let Some(session) = log_in(&worker, user, storm, true).await else { return };
            let recovered = (now_ns().saturating_sub(storm)) / 1000;
            {
                let mut metrics = worker.metrics.borrow_mut();
                metrics.counters.storm_recovery_us = metrics.counters.storm_recovery_us.max(recovered);
                metrics.counters.sessions_online -= 1;
            }
            session.close().await;
        }
    }
}

/// The messages one user sends in the chat phase: global message m (0-based, at
/// chat_start + m / rate) is sent by user (m % users) + 1.
struct ChatSchedule {
    next_m: u64,
    last_m: u64,
    rng: rand::rngs::StdRng,
    sequences: HashMap<u64, u64>,
}

impl ChatSchedule {
    fn new(plan: &Plan, user: u64) -> ChatSchedule {
        let total = (plan.rate * plan.duration_ns as f64 / 1e9) as u64;
        ChatSchedule { next_m: user - 1, last_m: total, rng: rand::rngs::StdRng::seed_from_u64(plan.seed ^ user), sequences: HashMap::new() }
    }

    fn due_ns(&self, plan: &Plan) -> Option<u64> {
        (self.next_m < self.last_m).then(|| plan.chat_start_ns() + (self.next_m as f64 / plan.rate * 1e9) as u64)
    }
}

/// Keeps a session until `until_ns`: answers nothing, reads everything, sends keepalives and
/// (chat) scheduled messages. Err when the session died.
async fn hold(worker: &Worker, user: u64, session: &mut Session, until_ns: u64, mut chat: Option<ChatSchedule>) -> Result<(), ()> {
    let plan = &worker.plan;
    let mut next_keepalive = now_ns() + plan.keepalive_ns;
    loop {
        let chat_due = chat.as_ref().and_then(|c| c.due_ns(plan));
        let wake = [Some(until_ns), Some(next_keepalive), chat_due].into_iter().flatten().min().unwrap_or(until_ns);
        let now = now_ns();
        if now >= until_ns {
            return Ok(());
        }
        if wake > now {
            let timer = async {
                glommio::timer::sleep(Duration::from_nanos(wake - now)).await;
                false
            };
            let readable = async { session.readable().await.is_ok() };
            if futures_lite::future::or(readable, timer).await {
                if let Err(error) = session.read_once(Duration::from_secs(5)).await {
                    lost(worker, &format!("session_{}", error.kind()));
                    return Err(());
                }
                loop {
                    match session.take_frame() {
                        Ok(Some(frame)) => receive(worker, user, &frame),
                        Ok(None) => break,
                        Err(_) => {
                            lost(worker, "session_closed_by_server");
                            return Err(());
                        }
                    }
                }
                continue;
            }
        }
        let now = now_ns();
        if let (Some(schedule), Some(due)) = (chat.as_mut(), chat_due) {
            if now >= due {
                let to = pick_recipient(&mut schedule.rng, plan.users, user);
                let sequence = schedule.sequences.entry(to).or_insert(0);
                *sequence += 1;
                let (to_name, _) = user_name(plan, to);
                let marker = format!("lg {user} {} {due} ", *sequence);
                let padding = "x".repeat(plan.body_bytes.saturating_sub(marker.len()));
                let stanza = format!("<message to='{to_name}@{}' type='chat'><body>{marker}{padding}</body></message>", plan.domain);
                schedule.next_m += plan.users;
                if session.send(stanza.as_bytes()).await.is_err() {
                    lost(worker, "send_failed");
                    return Err(());
                }
                worker.metrics.borrow_mut().counters.messages_sent += 1;
                continue;
            }
        }
        if now >= next_keepalive {
            // RFC 6120 §4.6.1 whitespace keepalive.
            if session.send(b" ").await.is_err() {
                lost(worker, "keepalive_failed");
                return Err(());
            }
            next_keepalive = now + plan.keepalive_ns;
        }
    }
}

fn lost(worker: &Worker, kind: &str) {
    let mut metrics = worker.metrics.borrow_mut();
    metrics.counters.sessions_online = metrics.counters.sessions_online.saturating_sub(1);
    metrics.error(kind);
}

fn pick_recipient(rng: &mut rand::rngs::StdRng, users: u64, me: u64) -> u64 {
    if users <= 1 {
        return me;
    }
    loop {
        let to = rng.random_range(1..=users);
        if to != me {
            return to;
        }
    }
}

/// Accounts for a received stanza: our chat messages (latency, duplicates, reordering) and
/// errors bounced back to us.
fn receive(worker: &Worker, me: u64, frame: &client::Incoming) {
    if frame.name != "message" {
        return;
    }
    if frame.kind.as_deref() == Some("error") {
        worker.metrics.borrow_mut().counters.message_errors += 1;
        return;
    }
    let text = String::from_utf8_lossy(&frame.bytes);
    let Some(rest) = text.split("<body>lg ").nth(1) else { return };
    let mut fields = rest.split(' ');
    let (Some(Ok(sender)), Some(Ok(sequence)), Some(Ok(sent_ns))) = (
        fields.next().map(str::parse::<u64>),
        fields.next().map(str::parse::<u64>),
        fields.next().map(str::parse::<u64>),
    ) else {
        return;
    };
    let latency_us = now_ns().saturating_sub(sent_ns) / 1000;
    let mut seen = worker.seen.borrow_mut();
    let (highest, gaps) = seen.entry(me).or_default().entry(sender).or_insert((0, BTreeSet::new()));
    let mut metrics = worker.metrics.borrow_mut();
    if sequence > *highest {
        for missing in (*highest + 1)..sequence {
            if gaps.len() < GAPS_REMEMBERED_MAX {
                gaps.insert(missing);
            }
        }
        *highest = sequence;
    } else if gaps.remove(&sequence) {
        metrics.counters.messages_reordered += 1;
    } else {
        metrics.counters.messages_duplicated += 1;
        return;
    }
    metrics.counters.messages_received += 1;
    metrics::record(&mut metrics.latency_us, latency_us);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(users: u64, procs: u64, worker: u64) -> Plan {
        Plan {
            scenario: Scenario::Chat,
            server: "127.0.0.1:5222".parse().expect("addr"),
            domain: "localhost".into(),
            users,
            arrivals: users,
            prefix: "user".into(),
            password_prefix: "pass".into(),
            rate: 100.0,
            login_rate: 50.0,
            duration_ns: 10_000_000_000,
            tls: "starttls".into(),
            mechanism: "SCRAM-SHA-256".into(),
            insecure: true,
            ca: None,
            roster: true,
            stay: false,
            sources: vec![],
            keepalive_ns: 1,
            body_bytes: 100,
            timeout_ns: 1,
            procs,
            worker,
            start_ns: 0,
            seed: 1,
        }
    }

    #[test]
    fn login_arrivals_cycle_over_the_accounts() {
        let mut p = plan(3, 2, 0);
        p.arrivals = 7;
        let accounts: Vec<u64> = (1..=7).map(|k| p.account(k)).collect();
        assert_eq!(accounts, [1, 2, 3, 1, 2, 3, 1]);
        assert_eq!(p.my_users().collect::<Vec<_>>(), [1, 3, 5, 7]);
    }

    #[test]
    fn workers_split_users_without_overlap() {
        let all: Vec<u64> = (0..3).flat_map(|w| plan(10, 3, w).my_users().collect::<Vec<_>>()).collect();
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(sorted, (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn chat_schedule_sends_rate_times_duration_messages_in_total() {
        let p = plan(7, 1, 0);
        let total: u64 = (1..=7)
            .map(|u| {
                let mut s = ChatSchedule::new(&p, u);
                let mut n = 0;
                while s.due_ns(&p).is_some() {
                    s.next_m += p.users;
                    n += 1;
                }
                n
            })
            .sum();
        assert_eq!(total, 1000);
        let first = ChatSchedule::new(&p, 1).due_ns(&p).expect("due");
        assert_eq!(first, p.chat_start_ns());
    }
}
