//! Scenarios, run inside one worker process on one glommio executor.
//!
//! Open loop: every action has an intended time on a timetable fixed before the run (from the
//! shared monotonic `start_ns`), and latency counts from that intended time, so a slow server
//! cannot hide behind a slowed-down generator (no coordinated omission). Worker `k` of `p`
//! plays users `i` with `(i - 1) % p == k`. The IM scenarios (roster, presence, mam, mixed)
//! take their contact graph and timetable from im.rs, the `muc` scenario its rooms, timeline and
//! delivery ledger from muc.rs (there a worker plays whole rooms: `muc::Layout::worker_of`).
//! This module does not spawn processes, provision accounts or print reports (main.rs does).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};

use crate::client::{self, ClientSettings, Session, Stage, TlsMode};
use crate::im::{self, Action, ContactGraph, Fill, Timetable};
use crate::metrics::{self, now_ns, Metrics};
use crate::muc::{self, CopyKind, JoinAnswer};

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
    /// Logins as in `login`, each account holding --contacts roster items: roster load time
    /// (roster get sent → result) and full login time.
    Roster,
    /// --users online, each with --contacts mutual contacts among them; --rate presence
    /// changes per second in total: fan-out latency per delivered copy, missing and
    /// duplicated copies.
    Presence,
    /// --users online; each first sends --messages messages to its contacts (at --fill-rate in
    /// total), then --rate archive queries per second in total for the last --page messages:
    /// query → `<fin/>` latency, results per page.
    Mam,
    /// --users online; --rate events per second in total, blended as im::MIX_PERCENT says:
    /// chat, presence changes, roster gets, archive queries, each measured as above.
    Mixed,
    /// XEP-0045: --rooms rooms of --occupants occupants each (users 1..=R×S, room by room),
    /// each occupant posting every --interval: end-to-end latency per delivered copy, missing
    /// and duplicated copies, the sender's own reflections apart.
    Muc,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Login => "login",
            Scenario::Idle => "idle",
            Scenario::Chat => "chat",
            Scenario::Storm => "storm",
            Scenario::Roster => "roster",
            Scenario::Presence => "presence",
            Scenario::Mam => "mam",
            Scenario::Mixed => "mixed",
            Scenario::Muc => "muc",
        }
    }

    /// Scenarios whose accounts need provisioned rosters.
    pub fn uses_contacts(self) -> bool {
        matches!(self, Scenario::Roster | Scenario::Presence | Scenario::Mam | Scenario::Mixed)
    }

    /// Scenarios that log everyone in at --login-rate and then run a timed phase.
    pub fn has_phase(self) -> bool {
        matches!(self, Scenario::Chat | Scenario::Presence | Scenario::Mam | Scenario::Mixed | Scenario::Muc)
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
    /// Roster contacts per account (IM scenarios; see im::ContactGraph).
    pub contacts: u64,
    /// mam: messages each user sends to fill the archives before the queries.
    pub messages: u64,
    /// mam: filling messages per second in total.
    pub fill_rate: f64,
    /// Archive page size asked for (RSM `<max>`).
    pub page: u64,
    /// muc: rooms, occupants per room, time between one occupant's posts, the MUC service's
    /// domain and joins per second.
    pub rooms: u64,
    pub occupants: u64,
    pub interval_ns: u64,
    pub muc_domain: String,
    pub join_rate: f64,
    /// muc: between the last join due and the first post.
    pub join_grace_ns: u64,
}

impl Plan {
    /// When the scenario's last action is due (the parent waits for workers past this).
    pub fn end_ns(&self) -> u64 {
        let logins = (self.arrivals as f64 / self.login_phase_rate() * 1e9) as u64;
        match self.scenario {
            Scenario::Login | Scenario::Roster => self.start_ns + logins + self.timeout_ns.min(10_000_000_000),
            Scenario::Idle => self.start_ns + logins + self.duration_ns,
            Scenario::Chat | Scenario::Presence | Scenario::Mam | Scenario::Mixed | Scenario::Muc => self.phase_window_ns().1,
            Scenario::Storm => self.storm_ns() + self.timeout_ns.min(30_000_000_000),
        }
    }

    fn login_phase_rate(&self) -> f64 {
        if self.scenario.has_phase() { self.login_rate } else { self.rate }.max(0.001)
    }

    fn arrival_ns(&self, user: u64) -> u64 {
        self.start_ns + ((user - 1) as f64 / self.login_phase_rate() * 1e9) as u64
    }

    /// The measured phase (chat messages, presence changes, archive queries, the mixed
    /// blend), from its first event to the end of the drain.
    pub fn phase_window_ns(&self) -> (u64, u64) {
        let start = match self.scenario {
            Scenario::Mam => self.fill().end_ns() + DRAIN_NS,
            Scenario::Muc => self.muc_timeline().phase_start_ns(),
            _ => self.chat_start_ns(),
        };
        (start, start + self.duration_ns + DRAIN_NS)
    }

    /// After the logins and a grace: the first chat message, or the first filling message.
    fn chat_start_ns(&self) -> u64 {
        self.start_ns + (self.users as f64 / self.login_rate.max(0.001) * 1e9) as u64 + CHAT_GRACE_NS
    }

    /// muc: who occupies which room.
    pub fn layout(&self) -> muc::Layout {
        muc::Layout { rooms: self.rooms, occupants: self.occupants.max(1) }
    }

    /// muc: the joins after the logins and a grace, then the posts.
    pub fn muc_timeline(&self) -> muc::Timeline {
        muc::Timeline {
            layout: self.layout(),
            join_start_ns: self.chat_start_ns(),
            join_rate: self.join_rate,
            join_grace_ns: self.join_grace_ns,
            interval_ns: self.interval_ns,
            duration_ns: self.duration_ns,
        }
    }

    /// The bare JID of `room`.
    pub fn room_jid(&self, room: u64) -> String {
        format!("{}@{}", muc::room_name(room), self.muc_domain)
    }

    /// The worker that plays arrival `user`: round-robin, except that in muc a room's
    /// occupants share one worker.
    fn worker_of(&self, user: u64) -> u64 {
        match self.scenario {
            Scenario::Muc => self.layout().worker_of(user, self.procs),
            _ => (user - 1) % self.procs,
        }
    }

    /// The roster graph the accounts were provisioned with.
    pub fn graph(&self) -> Result<ContactGraph, String> {
        ContactGraph::new(self.users, self.contacts)
    }

    /// mam: the archive-filling messages before the queries.
    pub fn fill(&self) -> Fill {
        Fill { start_ns: self.chat_start_ns(), rate: self.fill_rate.max(0.001), per_user: self.messages, users: self.users }
    }

    /// The measured phase's events (IM scenarios other than roster).
    pub fn timetable(&self) -> Option<Timetable> {
        let only = match self.scenario {
            Scenario::Presence => Some(Action::Presence),
            Scenario::Mam => Some(Action::ArchiveQuery),
            Scenario::Mixed => None,
            _ => return None,
        };
        let events = (self.rate * self.duration_ns as f64 / 1e9) as u64;
        Some(Timetable { start_ns: self.phase_window_ns().0, rate: self.rate, events, users: self.users, seed: self.seed, only })
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
        (1..=self.arrivals).filter(move |i| self.worker_of(*i) == self.worker)
    }

    /// The account arrival `k` logs in as.
    fn account(&self, arrival: u64) -> u64 {
        (arrival - 1) % self.users.max(1) + 1
    }
}

/// For one (receiver, sender) pair: the highest sequence seen and the gaps below it.
type PairProgress = (u64, BTreeSet<u64>);

/// Shared state of one worker.
struct Worker {
    plan: Plan,
    settings: ClientSettings,
    metrics: RefCell<Metrics>,
    /// Per receiving user: per sender, highest sequence seen and the gaps below it.
    seen: RefCell<HashMap<u64, HashMap<u64, PairProgress>>>,
    timetable: Option<Timetable>,
    /// (receiving user, presence event) pairs seen, to tell duplicates.
    presence_seen: RefCell<HashSet<(u64, u64)>>,
    /// muc: who joined, what was posted and which copies arrived, for this worker's rooms.
    muc: RefCell<muc::Ledger>,
    /// muc: per room, whether its creator is done (joined and unlocked, or failed).
    rooms_ready: RefCell<HashMap<u64, Rc<Cell<bool>>>>,
}

impl Worker {
    fn room_ready(&self, room: u64) -> Rc<Cell<bool>> {
        self.rooms_ready.borrow_mut().entry(room).or_default().clone()
    }
}

/// Held by a room's creator from before its login until its room is ready: dropping it, on
/// whatever path, lets the room's other occupants join.
struct RoomOpener(Rc<Cell<bool>>);

impl Drop for RoomOpener {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

/// Runs the plan; returns the worker's metrics. `progress` is called about once a second.
pub fn run(plan: Plan, progress: impl Fn(&metrics::Counters) + 'static) -> Result<Metrics, String> {
    let settings = plan.settings()?;
    let executor =
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).io_memory(256 * 1024).make().map_err(|e| e.to_string())?;
    let graph = if plan.scenario.uses_contacts() { plan.graph()? } else { ContactGraph::new(plan.users, 0)? };
    let timetable = plan.timetable();
    let mut planned = planned_actions(&plan, &graph);
    let layout = plan.layout();
    executor.run(async move {
        let worker = Rc::new(Worker {
            plan,
            settings,
            metrics: RefCell::new(Metrics::new()),
            seen: RefCell::new(HashMap::new()),
            timetable,
            presence_seen: RefCell::new(HashSet::new()),
            muc: RefCell::new(muc::Ledger::new(layout)),
            rooms_ready: RefCell::new(HashMap::new()),
        });
        let end = worker.plan.end_ns();
        let mut tasks = Vec::new();
        for user in worker.plan.my_users().collect::<Vec<_>>() {
            let actions = planned.remove(&user).unwrap_or_default();
            tasks.push(glommio::spawn_local(play(worker.clone(), user, actions)));
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
        let mut metrics = std::mem::take(&mut *worker.metrics.borrow_mut());
        if worker.plan.scenario == Scenario::Muc {
            let tally = worker.muc.borrow().tally();
            let counters = &mut metrics.counters;
            debug_assert_eq!(
                (counters.muc_copies_received, counters.muc_copies_duplicated, counters.muc_reflections_received),
                (tally.received, tally.duplicated, tally.reflections)
            );
            counters.muc_copies_expected = tally.expected;
            counters.muc_copies_missing = tally.missing;
            counters.muc_copies_unexpected = tally.unexpected;
            counters.muc_reflections_missing = tally.reflections_missing;
        }
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
                for (stage, duration) in &stages {
                    if let Some(h) = metrics.stage_us.get_mut(stage) {
                        metrics::record(h, duration.as_micros() as u64);
                    }
                }
            }
            if worker.plan.scenario == Scenario::Roster {
                // The roster stage is exactly roster get sent → result received.
                let roster = stages.iter().find(|(stage, _)| *stage == Stage::Roster).map(|(_, d)| d.as_micros() as u64);
                metrics.counters.roster_gets += 1;
                if let (Some(us), true) = (roster, session.roster_supported) {
                    metrics.counters.roster_results += 1;
                    metrics::record(&mut metrics.roster_us, us);
                    if session.roster_items != worker.plan.contacts {
                        metrics.counters.roster_items_wrong += 1;
                        tracing_stderr(&format!(
                            "user {user}: roster with {} items at login, expected {}",
                            session.roster_items, worker.plan.contacts
                        ));
                    }
                } else {
                    metrics.counters.roster_errors += 1;
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

/// One user's whole life in the scenario. `actions`: the user's part of the IM timetable.
async fn play(worker: Rc<Worker>, user: u64, actions: VecDeque<(u64, Planned)>) {
    let plan = worker.plan.clone();
    let arrival = plan.arrival_ns(user);
    // A creator that never gets to its room still lets the room's other occupants try.
    let opener = (plan.scenario == Scenario::Muc && plan.layout().is_creator(user))
        .then(|| plan.layout().room_of(user).map(|room| RoomOpener(worker.room_ready(room))))
        .flatten();
    sleep_until(arrival).await;
    let Some(mut session) = log_in(&worker, user, arrival, false).await else { return };
    let mut state = UserState::default();
    match plan.scenario {
        Scenario::Login | Scenario::Roster if !plan.stay => {
            worker.metrics.borrow_mut().counters.sessions_online -= 1;
            session.close().await;
        }
        Scenario::Login | Scenario::Roster | Scenario::Idle => {
            if hold(&worker, user, &mut session, plan.end_ns(), None, &mut state).await.is_ok() {
                worker.metrics.borrow_mut().counters.sessions_online -= 1;
                session.close().await;
            }
        }
        Scenario::Chat => {
            let schedule = Schedule::Chat(Box::new(ChatSchedule::new(&plan, user)));
            if hold(&worker, user, &mut session, plan.end_ns(), Some(schedule), &mut state).await.is_ok() {
                worker.metrics.borrow_mut().counters.sessions_online -= 1;
                session.close().await;
            }
        }
        Scenario::Presence | Scenario::Mam | Scenario::Mixed => {
            // Online from the reflected initial presence (the end of login) until the session
            // ends: the window in which contacts' presence changes are owed to this user.
            let online_from = now_ns();
            let held = hold(&worker, user, &mut session, plan.end_ns(), Some(Schedule::Planned(actions)), &mut state).await;
            worker.metrics.borrow_mut().online.push((user, online_from, now_ns()));
            if held.is_ok() {
                worker.metrics.borrow_mut().counters.sessions_online -= 1;
                session.close().await;
            }
        }
        Scenario::Muc => {
            if occupy(&worker, user, &mut session, opener, actions, &mut state).await.is_ok() {
                worker.metrics.borrow_mut().counters.sessions_online -= 1;
                session.close().await;
            }
        }
        Scenario::Storm => {
            let storm = plan.storm_ns();
            if hold(&worker, user, &mut session, storm, None, &mut state).await.is_err() {
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

/// Something a user does at a planned time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Planned {
    Chat {
        to: u64,
    },
    Presence {
        event: u64,
    },
    RosterGet {
        event: u64,
    },
    ArchiveQuery {
        event: u64,
    },
    /// A post to the user's room.
    Groupchat,
}

/// What a user has yet to do: the chat scenario's lazily drawn messages, or the IM
/// scenarios' precomputed actions (sorted by due time).
enum Schedule {
    Chat(Box<ChatSchedule>),
    Planned(VecDeque<(u64, Planned)>),
}

impl Schedule {
    fn due_ns(&self, plan: &Plan) -> Option<u64> {
        match self {
            Schedule::Chat(chat) => chat.due_ns(plan),
            Schedule::Planned(actions) => actions.front().map(|(due, _)| *due),
        }
    }

    /// Takes the next action (call only when `due_ns` is `Some`).
    fn take(&mut self, plan: &Plan, user: u64) -> Option<Planned> {
        match self {
            Schedule::Chat(chat) => {
                let to = pick_recipient(&mut chat.rng, plan.users, user);
                chat.next_m += plan.users;
                Some(Planned::Chat { to })
            }
            Schedule::Planned(actions) => actions.pop_front().map(|(_, action)| action),
        }
    }
}

/// Every action of this worker's users, per user, in due order: the archive-filling
/// messages (mam), then the timetable's events (presence, mam, mixed).
fn planned_actions(plan: &Plan, graph: &ContactGraph) -> HashMap<u64, VecDeque<(u64, Planned)>> {
    let mut actions: HashMap<u64, VecDeque<(u64, Planned)>> = HashMap::new();
    let mine = |user: u64| plan.worker_of(user) == plan.worker;
    if plan.scenario == Scenario::Muc {
        let timeline = plan.muc_timeline();
        for user in (1..=plan.layout().occupant_count().min(plan.users)).filter(|u| mine(*u)) {
            actions.entry(user).or_default().extend(timeline.posts_ns(user).into_iter().map(|due| (due, Planned::Groupchat)));
        }
    }
    let mut rngs: HashMap<u64, rand::rngs::StdRng> = HashMap::new();
    let mut recipient = |user: u64, k: Option<u64>| -> u64 {
        let rng = rngs.entry(user).or_insert_with(|| rand::rngs::StdRng::seed_from_u64(plan.seed ^ user.rotate_left(17)));
        match (graph.contacts(), k) {
            (0, _) => pick_recipient(rng, plan.users, user),
            (c, Some(k)) => graph.contact(user, k % c),
            (c, None) => graph.contact(user, rng.random_range(0..c)),
        }
    };
    if plan.scenario == Scenario::Mam {
        let fill = plan.fill();
        for user in (1..=plan.users).filter(|u| mine(*u)) {
            for k in 0..plan.messages {
                let to = recipient(user, Some(k));
                actions.entry(user).or_default().push_back((fill.due_ns(user, k), Planned::Chat { to }));
            }
        }
    }
    if let Some(table) = plan.timetable() {
        for event in 0..table.events {
            let user = table.actor(event);
            if !mine(user) {
                continue;
            }
            let action = match table.action(event) {
                Action::Chat => Planned::Chat { to: recipient(user, None) },
                Action::Presence => Planned::Presence { event },
                Action::RosterGet => Planned::RosterGet { event },
                Action::ArchiveQuery => Planned::ArchiveQuery { event },
            };
            actions.entry(user).or_default().push_back((table.due_ns(event), action));
        }
    }
    actions
}

/// A user's session state while held: chat sequence numbers per recipient, and the iq
/// queries awaiting their answer (by timetable event).
#[derive(Default)]
struct UserState {
    sequences: HashMap<u64, u64>,
    /// muc: posts sent so far (the sequence of the next one, less one).
    posts: u64,
    pending: HashMap<u64, Pending>,
}

struct Pending {
    action: Action,
    due_ns: u64,
    /// Archive result messages received so far.
    results: u64,
}

/// The messages one user sends in the chat phase: global message m (0-based, at
/// chat_start + m / rate) is sent by user (m % users) + 1.
struct ChatSchedule {
    next_m: u64,
    last_m: u64,
    rng: rand::rngs::StdRng,
}

impl ChatSchedule {
    fn new(plan: &Plan, user: u64) -> ChatSchedule {
        let total = (plan.rate * plan.duration_ns as f64 / 1e9) as u64;
        ChatSchedule { next_m: user - 1, last_m: total, rng: rand::rngs::StdRng::seed_from_u64(plan.seed ^ user) }
    }

    fn due_ns(&self, plan: &Plan) -> Option<u64> {
        (self.next_m < self.last_m).then(|| plan.chat_start_ns() + (self.next_m as f64 / plan.rate * 1e9) as u64)
    }
}

/// Keeps a session until `until_ns`: answers nothing, reads everything, sends keepalives and
/// the scheduled actions. Err when the session died.
async fn hold(
    worker: &Worker,
    user: u64,
    session: &mut Session,
    until_ns: u64,
    mut schedule: Option<Schedule>,
    state: &mut UserState,
) -> Result<(), ()> {
    let plan = &worker.plan;
    let mut next_keepalive = now_ns() + plan.keepalive_ns;
    loop {
        let action_due = schedule.as_ref().and_then(|s| s.due_ns(plan));
        let wake = [Some(until_ns), Some(next_keepalive), action_due].into_iter().flatten().min().unwrap_or(until_ns);
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
                        Ok(Some(frame)) => receive(worker, user, &frame, state),
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
        if let (Some(schedule), Some(due)) = (schedule.as_mut(), action_due) {
            if now >= due {
                let Some(action) = schedule.take(plan, user) else { continue };
                if perform(worker, user, session, state, due, action).await.is_err() {
                    lost(worker, "send_failed");
                    return Err(());
                }
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

/// Sends one planned action, intended at `due`.
async fn perform(
    worker: &Worker,
    user: u64,
    session: &mut Session,
    state: &mut UserState,
    due: u64,
    action: Planned,
) -> std::io::Result<()> {
    let plan = &worker.plan;
    match action {
        Planned::Chat { to } => {
            let sequence = state.sequences.entry(to).or_insert(0);
            *sequence += 1;
            let (to_name, _) = user_name(plan, to);
            let marker = im::message_marker(user, *sequence, due);
            let padding = "x".repeat(plan.body_bytes.saturating_sub(marker.len()));
            let stanza = format!("<message to='{to_name}@{}' type='chat'><body>{marker}{padding}</body></message>", plan.domain);
            session.send(stanza.as_bytes()).await?;
            worker.metrics.borrow_mut().counters.messages_sent += 1;
        }
        Planned::Presence { event } => {
            // RFC 6121 §4.4.2: the server broadcasts it to every online contact with a
            // subscription from us (and reflects it to us).
            let stanza = format!("<presence><status>{}</status></presence>", im::presence_status(event, due));
            let sent_ns = now_ns();
            session.send(stanza.as_bytes()).await?;
            let mut metrics = worker.metrics.borrow_mut();
            metrics.counters.presence_sent += 1;
            metrics.presence_sent.push((event, user, sent_ns));
        }
        Planned::RosterGet { event } => {
            state.pending.insert(event, Pending { action: Action::RosterGet, due_ns: due, results: 0 });
            session.send(format!("<iq type='get' id='r{event}'><query xmlns='jabber:iq:roster'/></iq>").as_bytes()).await?;
            worker.metrics.borrow_mut().counters.roster_gets += 1;
        }
        Planned::ArchiveQuery { event } => {
            // XEP-0313 §4 with XEP-0059 §2.5: the last page, newest messages.
            state.pending.insert(event, Pending { action: Action::ArchiveQuery, due_ns: due, results: 0 });
            let stanza = format!(
                "<iq type='set' id='q{event}'><query xmlns='urn:xmpp:mam:2' queryid='q{event}'><set xmlns='http://jabber.org/protocol/rsm'><max>{}</max><before/></set></query></iq>",
                plan.page
            );
            session.send(stanza.as_bytes()).await?;
            worker.metrics.borrow_mut().counters.archive_queries += 1;
        }
        Planned::Groupchat => {
            let Some(room) = plan.layout().room_of(user) else { return Ok(()) };
            state.posts += 1;
            let marker = im::message_marker(user, state.posts, due);
            let padding = "x".repeat(plan.body_bytes.saturating_sub(marker.len()));
            let stanza = muc::groupchat(&plan.room_jid(room), &format!("g{}", state.posts), &format!("{marker}{padding}"));
            session.send(stanza.as_bytes()).await?;
            worker.metrics.borrow_mut().counters.muc_messages_sent += 1;
            worker.muc.borrow_mut().sent(user);
        }
    }
    Ok(())
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

/// Accounts for a received stanza: our chat messages (latency, duplicates, reordering),
/// errors bounced back to us, contacts' presence changes, archive results and the answers
/// to our roster and archive queries.
fn receive(worker: &Worker, me: u64, frame: &client::Incoming, state: &mut UserState) {
    match frame.name.as_str() {
        "message" if worker.plan.scenario == Scenario::Muc => receive_groupchat(worker, me, frame),
        "message" => receive_message(worker, me, frame, state),
        "presence" => receive_presence(worker, me, frame),
        "iq" => receive_answer(worker, me, frame, state),
        _ => {}
    }
}

fn receive_message(worker: &Worker, me: u64, frame: &client::Incoming, state: &mut UserState) {
    if frame.kind.as_deref() == Some("error") {
        worker.metrics.borrow_mut().counters.message_errors += 1;
        return;
    }
    let text = String::from_utf8_lossy(&frame.bytes);
    // An archive result forwards one of our chat messages: it must not count as a delivery.
    if let Some(query_id) = im::archive_result_query_id(&text) {
        if let Some(pending) = query_id.strip_prefix('q').and_then(|e| e.parse::<u64>().ok()).and_then(|e| state.pending.get_mut(&e)) {
            pending.results += 1;
        }
        return;
    }
    let Some((sender, sequence, sent_ns)) = im::message_token(&text) else { return };
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

fn receive_presence(worker: &Worker, me: u64, frame: &client::Incoming) {
    let text = String::from_utf8_lossy(&frame.bytes);
    let Some((event, due_ns)) = im::presence_token(&text) else { return };
    // Our own change reflected back (RFC 6121 §4.4.2) is not a fan-out copy.
    if worker.timetable.is_some_and(|t| t.actor(event) == me) {
        return;
    }
    let latency_us = now_ns().saturating_sub(due_ns) / 1000;
    let fresh = worker.presence_seen.borrow_mut().insert((me, event));
    let mut metrics = worker.metrics.borrow_mut();
    if !fresh {
        metrics.counters.presence_duplicated += 1;
        return;
    }
    metrics.counters.presence_received += 1;
    *metrics.presence_copies.entry(event).or_default() += 1;
    metrics::record(&mut metrics.presence_us, latency_us);
}

fn receive_answer(worker: &Worker, me: u64, frame: &client::Incoming, state: &mut UserState) {
    let Some(event) = frame.id.as_deref().filter(|id| id.starts_with(['r', 'q'])).and_then(|id| id[1..].parse::<u64>().ok()) else {
        return;
    };
    let Some(pending) = state.pending.remove(&event) else { return };
    let latency_us = now_ns().saturating_sub(pending.due_ns) / 1000;
    let ok = frame.kind.as_deref() == Some("result");
    let text = String::from_utf8_lossy(&frame.bytes);
    let plan = &worker.plan;
    let mut metrics = worker.metrics.borrow_mut();
    match (pending.action, ok) {
        (Action::RosterGet, true) => {
            metrics.counters.roster_results += 1;
            metrics::record(&mut metrics.roster_us, latency_us);
            let items = im::roster_items(&text);
            if items != plan.contacts {
                metrics.counters.roster_items_wrong += 1;
                let excerpt: String = text.chars().take(300).collect();
                tracing_stderr(&format!("user {me}: roster result with {items} items, expected {}: {excerpt}", plan.contacts));
            }
        }
        (Action::RosterGet, false) => metrics.counters.roster_errors += 1,
        (Action::ArchiveQuery, true) => {
            metrics.counters.archive_answered += 1;
            metrics.counters.archive_results += pending.results;
            metrics::record(&mut metrics.archive_us, latency_us);
            // In mam every archive holds at least the user's own filling messages, whatever
            // count the server claims; elsewhere the page holds what the archive has.
            let count = im::rsm_count(&text);
            let mut expected = im::archive_page_expected(plan.page, count);
            if plan.scenario == Scenario::Mam {
                expected = expected.max(plan.page.min(plan.messages));
            }
            if pending.results < expected {
                metrics.counters.archive_incomplete += 1;
            }
            if pending.results < plan.page {
                metrics.counters.archive_short += 1;
                let excerpt: String = text.chars().take(400).collect();
                tracing_stderr(&format!("user {me}: archive page with {} results, count {count:?}: {excerpt}", pending.results));
            }
        }
        (Action::ArchiveQuery, false) => metrics.counters.archive_errors += 1,
        (Action::Chat | Action::Presence, _) => {}
    }
}

/// An occupant's life after login: join its room (the creator first, unlocking it; the others
/// once their creator is done), then post on the timeline until the end. Err when the session
/// died. Users outside the rooms just stay online.
async fn occupy(
    worker: &Worker,
    user: u64,
    session: &mut Session,
    opener: Option<RoomOpener>,
    mut actions: VecDeque<(u64, Planned)>,
    state: &mut UserState,
) -> Result<(), ()> {
    let plan = &worker.plan;
    let timeline = plan.muc_timeline();
    let (Some(room), Some(join_ns)) = (plan.layout().room_of(user), timeline.join_ns(user)) else {
        return hold(worker, user, session, plan.end_ns(), None, state).await;
    };
    sleep_until(join_ns).await;
    if opener.is_none() {
        let ready = worker.room_ready(room);
        while !ready.get() {
            glommio::timer::sleep(ROOM_READY_POLL).await;
        }
    }
    let joined = join_room(worker, user, session, room).await;
    drop(opener);
    let now = now_ns();
    let planned = actions.len() as u64;
    match joined {
        Joined::Yes => actions.retain(|(due, _)| *due >= now),
        Joined::No => actions.clear(),
        Joined::SessionLost => return Err(()),
    }
    worker.metrics.borrow_mut().counters.muc_posts_skipped += planned - actions.len() as u64;
    hold(worker, user, session, plan.end_ns(), Some(Schedule::Planned(actions)), state).await
}

/// How often an occupant looks whether its room's creator is done.
const ROOM_READY_POLL: Duration = Duration::from_millis(10);

enum Joined {
    Yes,
    /// Refused, timed out or not unlocked: counted, the session goes on without posting.
    No,
    SessionLost,
}

/// XEP-0045 §7.2: sends the join presence and waits for our own presence back; a room just
/// created (status 201, §10.1.1) is unlocked as an instant room (§10.1.2) before it counts.
async fn join_room(worker: &Worker, user: u64, session: &mut Session, room: u64) -> Joined {
    let plan = &worker.plan;
    let room_jid = plan.room_jid(room);
    let (nick, _) = user_name(plan, user);
    let sent_ns = now_ns();
    if session.send(muc::join_presence(&room_jid, &nick).as_bytes()).await.is_err() {
        lost(worker, "send_failed");
        return Joined::SessionLost;
    }
    let deadline = sent_ns + plan.timeout_ns;
    let created = loop {
        let frame = match session.next(Duration::from_nanos(deadline.saturating_sub(now_ns()))).await {
            Ok(frame) => frame,
            Err(error) if error.kind() == std::io::ErrorKind::TimedOut => return join_failed(worker, user, "muc_join_timeout", ""),
            Err(error) => {
                lost(worker, &format!("session_{}", error.kind()));
                return Joined::SessionLost;
            }
        };
        if frame.name != "presence" {
            continue;
        }
        let text = String::from_utf8_lossy(&frame.bytes);
        match muc::join_answer(&text, &room_jid, &nick) {
            Some(JoinAnswer::Joined { created }) => break created,
            Some(JoinAnswer::Refused(condition)) => return join_failed(worker, user, &format!("muc_join_{condition}"), &text),
            None => {}
        }
    };
    metrics::record(&mut worker.metrics.borrow_mut().muc_join_us, now_ns().saturating_sub(sent_ns) / 1000);
    if created {
        worker.metrics.borrow_mut().counters.muc_rooms_created += 1;
        let id = format!("unlock{room}");
        if session.send(muc::unlock_iq(&room_jid, &id).as_bytes()).await.is_err() {
            lost(worker, "send_failed");
            return Joined::SessionLost;
        }
        let answer = loop {
            match session.next(Duration::from_nanos(deadline.saturating_sub(now_ns()))).await {
                Ok(frame) if frame.name == "iq" && frame.id.as_deref() == Some(id.as_str()) => break frame,
                Ok(_) => {}
                Err(error) if error.kind() == std::io::ErrorKind::TimedOut => return join_failed(worker, user, "muc_unlock_timeout", ""),
                Err(error) => {
                    lost(worker, &format!("session_{}", error.kind()));
                    return Joined::SessionLost;
                }
            }
        };
        let text = String::from_utf8_lossy(&answer.bytes);
        if answer.kind.as_deref() != Some("result") {
            let condition = muc::error_condition(&text).unwrap_or_else(|| "undefined-condition".into());
            return join_failed(worker, user, &format!("muc_unlock_{condition}"), &text);
        }
        worker.metrics.borrow_mut().counters.muc_rooms_unlocked += 1;
    }
    worker.muc.borrow_mut().joined(user);
    let mut metrics = worker.metrics.borrow_mut();
    metrics.counters.muc_joins_ok += 1;
    if now_ns() > plan.phase_window_ns().0 {
        metrics.counters.muc_joins_late += 1;
    }
    Joined::Yes
}

fn join_failed(worker: &Worker, user: u64, kind: &str, stanza: &str) -> Joined {
    let mut metrics = worker.metrics.borrow_mut();
    metrics.counters.muc_joins_failed += 1;
    metrics.error(kind);
    drop(metrics);
    let excerpt: String = stanza.chars().take(300).collect();
    tracing_stderr(&format!("user {user}: {kind} {excerpt}"));
    Joined::No
}

/// Accounts for a message received in muc: a copy of a post (latency from its intended time,
/// duplicates, the sender's own reflection apart), or an error bounced back.
fn receive_groupchat(worker: &Worker, me: u64, frame: &client::Incoming) {
    match frame.kind.as_deref() {
        Some("groupchat") => {}
        Some("error") => {
            let text = String::from_utf8_lossy(&frame.bytes);
            let condition = muc::error_condition(&text).unwrap_or_else(|| "undefined-condition".into());
            let mut metrics = worker.metrics.borrow_mut();
            metrics.counters.muc_message_errors += 1;
            metrics.error(&format!("muc_message_{condition}"));
            return;
        }
        _ => return,
    }
    let text = String::from_utf8_lossy(&frame.bytes);
    let Some((sender, sequence, due_ns)) = muc::groupchat_token(&text) else { return };
    let latency_us = now_ns().saturating_sub(due_ns) / 1000;
    let kind = worker.muc.borrow_mut().copy(me, sender, sequence);
    let mut metrics = worker.metrics.borrow_mut();
    match kind {
        CopyKind::Fresh => {
            metrics.counters.muc_copies_received += 1;
            metrics::record(&mut metrics.muc_copy_us, latency_us);
        }
        CopyKind::Reflection => {
            metrics.counters.muc_reflections_received += 1;
            metrics::record(&mut metrics.muc_reflection_us, latency_us);
        }
        CopyKind::Duplicate => metrics.counters.muc_copies_duplicated += 1,
        CopyKind::Unexpected => metrics.counters.muc_copies_unexpected += 1,
    }
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
            contacts: 0,
            messages: 0,
            fill_rate: 100.0,
            page: 50,
            rooms: 0,
            occupants: 0,
            interval_ns: 0,
            muc_domain: "conference.localhost".into(),
            join_rate: 100.0,
            join_grace_ns: 1_000_000_000,
        }
    }

    fn im_plan(scenario: Scenario, users: u64, procs: u64, worker: u64) -> Plan {
        Plan { scenario, contacts: 4, messages: 6, rate: 20.0, duration_ns: 5_000_000_000, ..plan(users, procs, worker) }
    }

    /// Every worker's planned actions, merged: (user, due, action).
    fn all_actions(scenario: Scenario, users: u64, procs: u64) -> Vec<(u64, u64, Planned)> {
        let mut all = Vec::new();
        for worker in 0..procs {
            let p = im_plan(scenario, users, procs, worker);
            for (user, actions) in planned_actions(&p, &p.graph().expect("graph")) {
                assert_eq!((user - 1) % procs, worker, "a worker plans only its own users");
                assert!(actions.iter().zip(actions.iter().skip(1)).all(|(a, b)| a.0 <= b.0), "due order");
                all.extend(actions.into_iter().map(|(due, action)| (user, due, action)));
            }
        }
        all
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

    #[test]
    fn presence_plan_sends_rate_times_duration_changes_once_each() {
        let all = all_actions(Scenario::Presence, 10, 3);
        let mut events: Vec<u64> = all
            .iter()
            .map(|(_, _, action)| match action {
                Planned::Presence { event } => *event,
                other => panic!("only presence changes: {other:?}"),
            })
            .collect();
        events.sort_unstable();
        assert_eq!(events, (0..100).collect::<Vec<_>>());
        let p = im_plan(Scenario::Presence, 10, 3, 0);
        assert!(all.iter().all(|(_, due, _)| *due >= p.phase_window_ns().0 && *due < p.phase_window_ns().1));
    }

    #[test]
    fn mam_plan_fills_archives_through_contacts_before_the_queries() {
        let all = all_actions(Scenario::Mam, 10, 2);
        let p = im_plan(Scenario::Mam, 10, 2, 0);
        let graph = p.graph().expect("graph");
        let (query_start, _) = p.phase_window_ns();
        let fills: Vec<_> = all.iter().filter(|(_, _, a)| matches!(a, Planned::Chat { .. })).collect();
        assert_eq!(fills.len(), 60, "messages per user × users");
        for (user, due, action) in &fills {
            let Planned::Chat { to } = action else { unreachable!() };
            assert!(graph.are_contacts(*user, *to), "{user} → {to}");
            assert!(*due < p.fill().end_ns() && p.fill().end_ns() < query_start);
        }
        // Round-robin: user 1 writes to each of its 4 contacts, the first two twice.
        let mut to_of_1: Vec<u64> =
            fills.iter().filter(|(u, _, _)| *u == 1).map(|(_, _, a)| if let Planned::Chat { to } = a { *to } else { 0 }).collect();
        to_of_1.sort_unstable();
        assert_eq!(to_of_1, [2, 2, 3, 9, 10, 10]);
        let queries = all.iter().filter(|(_, due, a)| matches!(a, Planned::ArchiveQuery { .. }) && *due >= query_start).count();
        assert_eq!(queries, 100);
    }

    #[test]
    fn mam_plan_without_messages_queries_the_archives_already_there() {
        let p = Plan { messages: 0, ..im_plan(Scenario::Mam, 10, 1, 0) };
        let actions: Vec<(u64, Planned)> = planned_actions(&p, &p.graph().expect("graph")).into_values().flatten().collect();
        assert_eq!(actions.len(), 100);
        assert!(actions.iter().all(|(_, a)| matches!(a, Planned::ArchiveQuery { .. })));
        assert_eq!(p.phase_window_ns().0, p.chat_start_ns() + DRAIN_NS, "no filling phase to wait for");
    }

    #[test]
    fn muc_workers_play_whole_rooms_and_post_rate_times_duration() {
        // 5 rooms of 4, plus 2 users outside the rooms; 20 occupants posting every 2 s for
        // 10 s: 100 posts.
        let muc_plan = |worker| Plan { scenario: Scenario::Muc, rooms: 5, occupants: 4, interval_ns: 2_000_000_000, ..plan(22, 2, worker) };
        let mut users = Vec::new();
        let mut posts = 0;
        for worker in 0..2 {
            let p = muc_plan(worker);
            let mine: Vec<u64> = p.my_users().collect();
            for user in 1..=20 {
                let room = p.layout().room_of(user).expect("room");
                assert_eq!(mine.contains(&user), mine.contains(&p.layout().creator(room)), "user {user} is with its room's creator");
            }
            let actions = planned_actions(&p, &ContactGraph::new(22, 0).expect("graph"));
            assert!(actions.keys().all(|u| mine.contains(u) && *u <= 20));
            posts += actions.values().map(|a| a.len()).sum::<usize>();
            assert!(actions.values().flatten().all(|(due, a)| *a == Planned::Groupchat && *due >= p.phase_window_ns().0));
            users.extend(mine);
        }
        users.sort_unstable();
        assert_eq!(users, (1..=22).collect::<Vec<_>>());
        assert_eq!(posts, 100);
        let p = muc_plan(0);
        assert_eq!(p.room_jid(3), "loadgen-room-3@conference.localhost");
        assert!(p.muc_timeline().join_ns(1).expect("due") >= p.chat_start_ns());
    }

    #[test]
    fn mixed_plan_chats_only_with_contacts() {
        let all = all_actions(Scenario::Mixed, 12, 2);
        assert_eq!(all.len(), 100);
        let graph = im_plan(Scenario::Mixed, 12, 2, 0).graph().expect("graph");
        for (user, _, action) in &all {
            if let Planned::Chat { to } = action {
                assert!(graph.are_contacts(*user, *to), "{user} → {to}");
            }
        }
        assert!(all.iter().any(|(_, _, a)| matches!(a, Planned::RosterGet { .. })));
        assert!(all.iter().any(|(_, _, a)| matches!(a, Planned::ArchiveQuery { .. })));
    }
}
