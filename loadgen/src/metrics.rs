//! Measurements: HdrHistograms and counters per worker, their JSON form, and merging.
//!
//! Workers record into `Metrics`; the parent merges the workers' `Metrics` and adds what it
//! sampled itself (server RSS and CPU from /proc, its own CPU) into a `Summary`, the JSON
//! that `--json` writes and `compare` reads. This module does not schedule or talk XMPP.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::client::Stage;
use crate::im;

/// Highest value a histogram tracks: one hour in microseconds.
pub const HISTOGRAM_MAX_US: u64 = 3_600_000_000;
/// Significant digits kept by histograms (HdrHistogram precision).
pub const HISTOGRAM_SIGNIFICANT_DIGITS: u8 = 3;

/// Monotonic clock in nanoseconds, shared by all processes of the machine (CLOCK_MONOTONIC),
/// so a timestamp written by one worker is comparable in another.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we pass and nothing else.
    #[allow(unsafe_code)]
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, HISTOGRAM_SIGNIFICANT_DIGITS) {
        Ok(histogram) => histogram,
        Err(error) => unreachable!("constant histogram bounds are valid: {error}"),
    }
}

/// What one worker measured.
pub struct Metrics {
    pub login_us: Histogram<u64>,
    pub stage_us: BTreeMap<Stage, Histogram<u64>>,
    pub latency_us: Histogram<u64>,
    pub storm_login_us: Histogram<u64>,
    /// Roster get sent → result (at login in `roster`, from the intended time in `mixed`).
    pub roster_us: Histogram<u64>,
    /// Presence change intended → each contact's copy received.
    pub presence_us: Histogram<u64>,
    /// Archive query intended → `<fin/>` received.
    pub archive_us: Histogram<u64>,
    /// muc: post intended → each other occupant's copy received; → the sender's own
    /// reflection; join presence sent → self-presence received.
    pub muc_copy_us: Histogram<u64>,
    pub muc_reflection_us: Histogram<u64>,
    pub muc_join_us: Histogram<u64>,
    pub counters: Counters,
    /// Presence changes this worker sent: (event, sender, send ns).
    pub presence_sent: im::SentLog,
    /// Distinct presence copies this worker's users received, per event.
    pub presence_copies: BTreeMap<u64, u64>,
    /// When this worker's sessions were online: (user, from ns, to ns).
    pub online: im::OnlineLog,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Counters {
    pub logins_ok: u64,
    pub logins_failed: u64,
    pub failures_by_stage: BTreeMap<String, u64>,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub messages_duplicated: u64,
    pub messages_reordered: u64,
    pub message_errors: u64,
    pub roster_unsupported: u64,
    pub sessions_online: u64,
    pub errors: BTreeMap<String, u64>,
    /// Storm: microseconds from the drop until the last session was back.
    pub storm_recovery_us: u64,
    pub presence_sent: u64,
    /// Distinct presence copies received from contacts (our own reflection excluded).
    pub presence_received: u64,
    pub presence_duplicated: u64,
    pub roster_gets: u64,
    pub roster_results: u64,
    /// Roster results whose item count was not the provisioned number of contacts.
    pub roster_items_wrong: u64,
    pub roster_errors: u64,
    pub archive_queries: u64,
    /// Queries answered with a `<fin/>` (iq result).
    pub archive_answered: u64,
    /// Result messages received for our queries.
    pub archive_results: u64,
    /// Answered queries with fewer results than the page should hold (per the server's own
    /// `<count>`, and in mam at least the user's own filling messages).
    pub archive_incomplete: u64,
    /// Answered queries with fewer results than --page, whatever the count said.
    pub archive_short: u64,
    pub archive_errors: u64,
    /// muc: occupants whose join ended in their self-presence (XEP-0045 §7.2.3), those
    /// refused or timed out (or whose new room could not be unlocked), and joins completed
    /// after the posts had started.
    pub muc_joins_ok: u64,
    pub muc_joins_failed: u64,
    pub muc_joins_late: u64,
    /// Joins answered with status 201 (a new, locked room) and rooms unlocked as instant rooms.
    pub muc_rooms_created: u64,
    pub muc_rooms_unlocked: u64,
    pub muc_messages_sent: u64,
    /// Posts not sent: due before their sender's join completed, or its join failed.
    pub muc_posts_skipped: u64,
    /// Groupchat messages bounced back as errors.
    pub muc_message_errors: u64,
    /// Copies owed to other occupants (per post, the others joined in the room), distinct
    /// copies received, owed copies never received, copies received twice at one receiver,
    /// copies not owed.
    pub muc_copies_expected: u64,
    pub muc_copies_received: u64,
    pub muc_copies_missing: u64,
    pub muc_copies_duplicated: u64,
    pub muc_copies_unexpected: u64,
    /// The senders' own reflections received, and posts never reflected.
    pub muc_reflections_received: u64,
    pub muc_reflections_missing: u64,
}

/// A histogram as (value, count) pairs, mergeable by the parent.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Buckets(pub Vec<(u64, u64)>);

/// A worker's final report, as JSON on its stdout.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerReport {
    pub login_us: Buckets,
    pub stage_us: BTreeMap<String, Buckets>,
    pub latency_us: Buckets,
    pub storm_login_us: Buckets,
    pub roster_us: Buckets,
    pub presence_us: Buckets,
    pub archive_us: Buckets,
    pub muc_copy_us: Buckets,
    pub muc_reflection_us: Buckets,
    pub muc_join_us: Buckets,
    pub counters: Counters,
    pub presence_sent: im::SentLog,
    pub presence_copies: Vec<(u64, u64)>,
    pub online: im::OnlineLog,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            login_us: histogram(),
            stage_us: Stage::ALL.iter().map(|s| (*s, histogram())).collect(),
            latency_us: histogram(),
            storm_login_us: histogram(),
            roster_us: histogram(),
            presence_us: histogram(),
            archive_us: histogram(),
            muc_copy_us: histogram(),
            muc_reflection_us: histogram(),
            muc_join_us: histogram(),
            counters: Counters::default(),
            presence_sent: Vec::new(),
            presence_copies: BTreeMap::new(),
            online: Vec::new(),
        }
    }

    pub fn error(&mut self, kind: &str) {
        *self.counters.errors.entry(kind.to_owned()).or_default() += 1;
    }

    pub fn report(&self) -> WorkerReport {
        WorkerReport {
            login_us: buckets(&self.login_us),
            stage_us: self.stage_us.iter().map(|(s, h)| (s.name().to_owned(), buckets(h))).collect(),
            latency_us: buckets(&self.latency_us),
            storm_login_us: buckets(&self.storm_login_us),
            roster_us: buckets(&self.roster_us),
            presence_us: buckets(&self.presence_us),
            archive_us: buckets(&self.archive_us),
            muc_copy_us: buckets(&self.muc_copy_us),
            muc_reflection_us: buckets(&self.muc_reflection_us),
            muc_join_us: buckets(&self.muc_join_us),
            counters: self.counters.clone(),
            presence_sent: self.presence_sent.clone(),
            presence_copies: self.presence_copies.iter().map(|(k, v)| (*k, *v)).collect(),
            online: self.online.clone(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

pub fn record(histogram: &mut Histogram<u64>, us: u64) {
    histogram.saturating_record(us.clamp(1, HISTOGRAM_MAX_US));
}

fn buckets(histogram: &Histogram<u64>) -> Buckets {
    Buckets(histogram.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect())
}

/// Adds a worker's buckets into a histogram.
pub fn merge_into(histogram: &mut Histogram<u64>, buckets: &Buckets) {
    for (value, count) in &buckets.0 {
        let _ = histogram.record_n((*value).clamp(1, HISTOGRAM_MAX_US), *count);
    }
}

/// Adds counters (sums; the storm recovery is a maximum).
pub fn merge_counters(into: &mut Counters, from: &Counters) {
    into.logins_ok += from.logins_ok;
    into.logins_failed += from.logins_failed;
    for (k, v) in &from.failures_by_stage {
        *into.failures_by_stage.entry(k.clone()).or_default() += v;
    }
    into.messages_sent += from.messages_sent;
    into.messages_received += from.messages_received;
    into.messages_duplicated += from.messages_duplicated;
    into.messages_reordered += from.messages_reordered;
    into.message_errors += from.message_errors;
    into.roster_unsupported += from.roster_unsupported;
    into.sessions_online += from.sessions_online;
    for (k, v) in &from.errors {
        *into.errors.entry(k.clone()).or_default() += v;
    }
    into.storm_recovery_us = into.storm_recovery_us.max(from.storm_recovery_us);
    into.presence_sent += from.presence_sent;
    into.presence_received += from.presence_received;
    into.presence_duplicated += from.presence_duplicated;
    into.roster_gets += from.roster_gets;
    into.roster_results += from.roster_results;
    into.roster_items_wrong += from.roster_items_wrong;
    into.roster_errors += from.roster_errors;
    into.archive_queries += from.archive_queries;
    into.archive_answered += from.archive_answered;
    into.archive_results += from.archive_results;
    into.archive_incomplete += from.archive_incomplete;
    into.archive_short += from.archive_short;
    into.archive_errors += from.archive_errors;
    into.muc_joins_ok += from.muc_joins_ok;
    into.muc_joins_failed += from.muc_joins_failed;
    into.muc_joins_late += from.muc_joins_late;
    into.muc_rooms_created += from.muc_rooms_created;
    into.muc_rooms_unlocked += from.muc_rooms_unlocked;
    into.muc_messages_sent += from.muc_messages_sent;
    into.muc_posts_skipped += from.muc_posts_skipped;
    into.muc_message_errors += from.muc_message_errors;
    into.muc_copies_expected += from.muc_copies_expected;
    into.muc_copies_received += from.muc_copies_received;
    into.muc_copies_missing += from.muc_copies_missing;
    into.muc_copies_duplicated += from.muc_copies_duplicated;
    into.muc_copies_unexpected += from.muc_copies_unexpected;
    into.muc_reflections_received += from.muc_reflections_received;
    into.muc_reflections_missing += from.muc_reflections_missing;
}

/// Percentiles of a histogram, in milliseconds (`percentiles_ms`, the older login and chat
/// figures) or microseconds (`percentiles_us`, fields named `…_us`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

pub fn percentiles_ms(histogram: &Histogram<u64>) -> Percentiles {
    if histogram.is_empty() {
        return Percentiles::default();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Percentiles {
        count: histogram.len(),
        mean: histogram.mean() / 1000.0,
        p50: ms(histogram.value_at_quantile(0.50)),
        p90: ms(histogram.value_at_quantile(0.90)),
        p99: ms(histogram.value_at_quantile(0.99)),
        p999: ms(histogram.value_at_quantile(0.999)),
        max: ms(histogram.max()),
    }
}

pub fn percentiles_us(histogram: &Histogram<u64>) -> Percentiles {
    if histogram.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        count: histogram.len(),
        mean: histogram.mean(),
        p50: histogram.value_at_quantile(0.50) as f64,
        p90: histogram.value_at_quantile(0.90) as f64,
        p99: histogram.value_at_quantile(0.99) as f64,
        p999: histogram.value_at_quantile(0.999) as f64,
        max: histogram.max() as f64,
    }
}

/// One second of the run, as the parent saw it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Tick {
    pub t_s: f64,
    pub logins_per_s: f64,
    pub messages_per_s: f64,
    pub sessions: u64,
    pub server_rss_bytes: u64,
    pub server_cpu_percent: f64,
}

/// The merged result of a run: what `--json` writes and `compare` reads.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    pub scenario: String,
    pub label: String,
    pub server: String,
    pub command: String,
    pub started_unix_s: u64,
    pub users: u64,
    pub procs: u64,
    pub rate: f64,
    pub duration_s: f64,
    pub logins_ok: u64,
    pub logins_failed: u64,
    pub login_failures_by_stage: BTreeMap<String, u64>,
    pub login_ms: Percentiles,
    pub stage_ms: BTreeMap<String, Percentiles>,
    pub logins_per_s: f64,
    pub storm_login_ms: Percentiles,
    pub storm_recovery_ms: f64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub messages_lost: u64,
    pub messages_duplicated: u64,
    pub messages_reordered: u64,
    pub message_errors: u64,
    pub messages_per_s: f64,
    pub latency_ms: Percentiles,
    pub sessions_peak: u64,
    pub roster_unsupported: u64,
    pub server_rss_bytes: u64,
    pub server_rss_baseline_bytes: u64,
    /// (median RSS while holding the peak number of sessions − RSS before the run) ÷ that
    /// number.
    pub server_rss_bytes_per_session: f64,
    pub server_cpu_seconds: f64,
    /// Server CPU per delivered message; for chat, the CPU of the chat phase alone.
    pub server_cpu_us_per_message: f64,
    pub server_cpu_us_per_login: f64,
    pub loadgen_cpu_seconds: f64,
    pub errors: BTreeMap<String, u64>,
    pub timeline: Vec<Tick>,
    /// Contacts per user in the IM scenarios (roster, presence, mam, mixed).
    pub contacts: u64,
    /// Seconds and items of roster provisioning through add_rosteritem (0 when skipped).
    pub roster_provisioning_s: f64,
    pub roster_provisioning_items: u64,
    /// Roster get sent → result, µs.
    pub roster_load_us: Percentiles,
    pub roster_gets: u64,
    pub roster_results: u64,
    pub roster_items_wrong: u64,
    pub roster_errors: u64,
    /// Roster gets still unanswered when the run ended (their latency is not in the histogram).
    pub roster_unanswered: u64,
    /// Presence change intended → each contact's copy received, µs.
    pub presence_fanout_us: Percentiles,
    pub presence_sent: u64,
    pub presence_copies_expected: u64,
    pub presence_copies_received: u64,
    pub presence_copies_missing: u64,
    pub presence_copies_unexpected: u64,
    pub presence_copies_duplicated: u64,
    /// Archive query intended → `<fin/>`, µs.
    pub archive_query_us: Percentiles,
    pub archive_queries: u64,
    pub archive_answered: u64,
    pub archive_results: u64,
    pub archive_incomplete: u64,
    pub archive_short: u64,
    pub archive_errors: u64,
    /// Archive queries still unanswered when the run ended (their latency is not in the
    /// histogram: read the percentiles with this count beside them).
    pub archive_unanswered: u64,
    /// Server CPU over the measured phase (chat, presence, mam queries, mixed), and per unit.
    pub server_cpu_phase_seconds: f64,
    pub server_cpu_us_per_presence_copy: f64,
    pub server_cpu_us_per_archive_query: f64,
    /// muc (XEP-0045): rooms, occupants per room, seconds between one occupant's posts, the
    /// service's domain.
    pub muc_rooms: u64,
    pub muc_occupants: u64,
    pub muc_interval_s: f64,
    pub muc_domain: String,
    pub muc_joins_ok: u64,
    pub muc_joins_failed: u64,
    pub muc_joins_late: u64,
    pub muc_rooms_created: u64,
    pub muc_rooms_unlocked: u64,
    /// Join presence sent → self-presence received, µs.
    pub muc_join_us: Percentiles,
    pub muc_messages_sent: u64,
    pub muc_posts_skipped: u64,
    pub muc_message_errors: u64,
    pub muc_copies_expected: u64,
    pub muc_copies_received: u64,
    pub muc_copies_missing: u64,
    pub muc_copies_duplicated: u64,
    pub muc_copies_unexpected: u64,
    /// Post intended → each other occupant's copy, µs.
    pub muc_copy_us: Percentiles,
    pub muc_reflections_received: u64,
    pub muc_reflections_missing: u64,
    /// Post intended → the sender's own reflection, µs.
    pub muc_reflection_us: Percentiles,
    /// Posts sent and copies delivered to other occupants per second of --duration.
    pub muc_messages_per_s: f64,
    pub muc_copies_per_s: f64,
    /// Server CPU of the posting phase per copy delivered to another occupant.
    pub server_cpu_us_per_muc_copy: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_merge_back_to_the_same_percentiles() {
        let mut a = histogram();
        for v in 1..=1000 {
            record(&mut a, v * 10);
        }
        let mut merged = histogram();
        merge_into(&mut merged, &buckets(&a));
        merge_into(&mut merged, &buckets(&a));
        assert_eq!(merged.len(), 2000);
        let p = percentiles_ms(&merged);
        assert!((p.p50 - 5.0).abs() < 0.05, "{p:?}");
        assert!((p.max - 10.0).abs() < 0.02, "{p:?}");
    }

    #[test]
    fn counters_add_up() {
        let mut total = Counters::default();
        let one = Counters { logins_ok: 2, messages_sent: 5, storm_recovery_us: 7, ..Counters::default() };
        merge_counters(&mut total, &one);
        merge_counters(&mut total, &Counters { storm_recovery_us: 3, ..one.clone() });
        assert_eq!((total.logins_ok, total.messages_sent, total.storm_recovery_us), (4, 10, 7));
    }
}
