//! Output for people: the merged summary, the terminal table, the markdown report with SVG
//! charts, and `compare`'s side-by-side table with ratios.
//!
//! SVG is written by hand (a few polylines and bars need no plotting library). This module
//! does not measure anything; it formats `Summary`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::metrics::{self, histogram, merge_counters, merge_into, percentiles_ms, percentiles_us, Counters, Summary, WorkerReport};

/// Merges the workers' reports into a summary (histograms and counters only; the presence
/// fan-out ledger needs the contact graph and is tallied by the caller).
pub fn merge(reports: &[WorkerReport]) -> Summary {
    let mut login = histogram();
    let mut latency = histogram();
    let mut storm = histogram();
    let (mut roster, mut presence, mut archive) = (histogram(), histogram(), histogram());
    let (mut muc_copy, mut muc_reflection, mut muc_join) = (histogram(), histogram(), histogram());
    let mut stages: std::collections::BTreeMap<String, hdrhistogram::Histogram<u64>> = Default::default();
    let mut counters = Counters::default();
    for report in reports {
        merge_into(&mut login, &report.login_us);
        merge_into(&mut latency, &report.latency_us);
        merge_into(&mut storm, &report.storm_login_us);
        merge_into(&mut roster, &report.roster_us);
        merge_into(&mut presence, &report.presence_us);
        merge_into(&mut archive, &report.archive_us);
        merge_into(&mut muc_copy, &report.muc_copy_us);
        merge_into(&mut muc_reflection, &report.muc_reflection_us);
        merge_into(&mut muc_join, &report.muc_join_us);
        for (stage, buckets) in &report.stage_us {
            merge_into(stages.entry(stage.clone()).or_insert_with(histogram), buckets);
        }
        merge_counters(&mut counters, &report.counters);
    }
    Summary {
        logins_ok: counters.logins_ok,
        logins_failed: counters.logins_failed,
        login_failures_by_stage: counters.failures_by_stage.clone(),
        login_ms: percentiles_ms(&login),
        stage_ms: stages.iter().map(|(k, h)| (k.clone(), percentiles_ms(h))).collect(),
        storm_login_ms: percentiles_ms(&storm),
        storm_recovery_ms: counters.storm_recovery_us as f64 / 1000.0,
        messages_sent: counters.messages_sent,
        messages_received: counters.messages_received,
        messages_lost: counters.messages_sent.saturating_sub(counters.messages_received),
        messages_duplicated: counters.messages_duplicated,
        messages_reordered: counters.messages_reordered,
        message_errors: counters.message_errors,
        latency_ms: percentiles_ms(&latency),
        roster_unsupported: counters.roster_unsupported,
        roster_load_us: percentiles_us(&roster),
        roster_gets: counters.roster_gets,
        roster_results: counters.roster_results,
        roster_items_wrong: counters.roster_items_wrong,
        roster_errors: counters.roster_errors,
        roster_unanswered: counters.roster_gets.saturating_sub(counters.roster_results + counters.roster_errors),
        presence_fanout_us: percentiles_us(&presence),
        presence_sent: counters.presence_sent,
        presence_copies_received: counters.presence_received,
        presence_copies_duplicated: counters.presence_duplicated,
        archive_query_us: percentiles_us(&archive),
        archive_queries: counters.archive_queries,
        archive_answered: counters.archive_answered,
        archive_results: counters.archive_results,
        archive_incomplete: counters.archive_incomplete,
        archive_short: counters.archive_short,
        archive_errors: counters.archive_errors,
        archive_unanswered: counters.archive_queries.saturating_sub(counters.archive_answered + counters.archive_errors),
        muc_joins_ok: counters.muc_joins_ok,
        muc_joins_failed: counters.muc_joins_failed,
        muc_joins_late: counters.muc_joins_late,
        muc_rooms_created: counters.muc_rooms_created,
        muc_rooms_unlocked: counters.muc_rooms_unlocked,
        muc_join_us: percentiles_us(&muc_join),
        muc_messages_sent: counters.muc_messages_sent,
        muc_posts_skipped: counters.muc_posts_skipped,
        muc_message_errors: counters.muc_message_errors,
        muc_copies_expected: counters.muc_copies_expected,
        muc_copies_received: counters.muc_copies_received,
        muc_copies_missing: counters.muc_copies_missing,
        muc_copies_duplicated: counters.muc_copies_duplicated,
        muc_copies_unexpected: counters.muc_copies_unexpected,
        muc_copy_us: percentiles_us(&muc_copy),
        muc_reflections_received: counters.muc_reflections_received,
        muc_reflections_missing: counters.muc_reflections_missing,
        muc_reflection_us: percentiles_us(&muc_reflection),
        errors: counters.errors,
        ..Summary::default()
    }
}

/// The summary as a plain table for the terminal.
pub fn table(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "scenario {} against {} ({}), {} users, {} procs", s.scenario, s.server, s.label, s.users, s.procs);
    let p = |p: &metrics::Percentiles| {
        format!("p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2} ms", p.p50, p.p90, p.p99, p.p999, p.max)
    };
    let _ = writeln!(
        out,
        "  logins        {} ok, {} failed {:?}, {:.1}/s",
        s.logins_ok, s.logins_failed, s.login_failures_by_stage, s.logins_per_s
    );
    if s.login_ms.count > 0 {
        let _ = writeln!(out, "  login time    {}", p(&s.login_ms));
        for (stage, percentiles) in &s.stage_ms {
            if percentiles.count > 0 {
                let _ = writeln!(out, "    {stage:<10}  {}", p(percentiles));
            }
        }
    }
    if s.storm_login_ms.count > 0 {
        let _ = writeln!(out, "  storm relogin {}; all back after {:.0} ms", p(&s.storm_login_ms), s.storm_recovery_ms);
    }
    if s.messages_sent > 0 {
        let _ = writeln!(
            out,
            "  messages      {} sent, {} received, {} lost, {} duplicated, {} reordered, {} errors, {:.0}/s",
            s.messages_sent,
            s.messages_received,
            s.messages_lost,
            s.messages_duplicated,
            s.messages_reordered,
            s.message_errors,
            s.messages_per_s
        );
        let _ = writeln!(out, "  latency       {}", p(&s.latency_ms));
    }
    let us = |p: &metrics::Percentiles| {
        format!("p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0} µs", p.p50, p.p90, p.p99, p.p999, p.max)
    };
    if s.roster_gets > 0 {
        let _ = writeln!(
            out,
            "  roster gets   {} sent, {} results, {} with a wrong item count (expected {}), {} errors, {} unanswered",
            s.roster_gets, s.roster_results, s.roster_items_wrong, s.contacts, s.roster_errors, s.roster_unanswered
        );
        let _ = writeln!(out, "  roster load   {}", us(&s.roster_load_us));
    }
    if s.presence_sent > 0 {
        let _ = writeln!(
            out,
            "  presence      {} changes, {} copies owed, {} received, {} missing, {} unexpected, {} duplicated",
            s.presence_sent,
            s.presence_copies_expected,
            s.presence_copies_received,
            s.presence_copies_missing,
            s.presence_copies_unexpected,
            s.presence_copies_duplicated
        );
        let _ = writeln!(out, "  fan-out       {}", us(&s.presence_fanout_us));
    }
    if s.archive_queries > 0 {
        let _ = writeln!(
            out,
            "  archive       {} queries, {} answered, {} results, {} incomplete pages, {} short of --page, {} errors, {} unanswered",
            s.archive_queries,
            s.archive_answered,
            s.archive_results,
            s.archive_incomplete,
            s.archive_short,
            s.archive_errors,
            s.archive_unanswered
        );
        let _ = writeln!(out, "  query → fin   {}", us(&s.archive_query_us));
    }
    if s.muc_rooms > 0 {
        let _ = writeln!(
            out,
            "  muc joins     {} rooms of {}: {} joined ({} late), {} failed; {} rooms created, {} unlocked",
            s.muc_rooms, s.muc_occupants, s.muc_joins_ok, s.muc_joins_late, s.muc_joins_failed, s.muc_rooms_created, s.muc_rooms_unlocked
        );
        let _ = writeln!(out, "  join → self   {}", us(&s.muc_join_us));
        let _ = writeln!(
            out,
            "  muc posts     {} sent ({} skipped, {} errors), {:.0}/s; copies {} owed, {} received, {} missing, {} duplicated, {} unexpected, {:.0}/s",
            s.muc_messages_sent,
            s.muc_posts_skipped,
            s.muc_message_errors,
            s.muc_messages_per_s,
            s.muc_copies_expected,
            s.muc_copies_received,
            s.muc_copies_missing,
            s.muc_copies_duplicated,
            s.muc_copies_unexpected,
            s.muc_copies_per_s
        );
        let _ = writeln!(out, "  copy latency  {}", us(&s.muc_copy_us));
        let _ = writeln!(out, "  reflection    {} ({} missing)", us(&s.muc_reflection_us), s.muc_reflections_missing);
        if s.server_cpu_us_per_muc_copy > 0.0 {
            let _ = writeln!(out, "  server CPU    {:.1} µs per delivered copy", s.server_cpu_us_per_muc_copy);
        }
    }
    if s.roster_provisioning_items > 0 {
        let _ = writeln!(out, "  provisioning  {} roster items in {:.1} s", s.roster_provisioning_items, s.roster_provisioning_s);
    }
    if s.server_rss_bytes > 0 {
        let _ = writeln!(
            out,
            "  server        peak RSS {:.1} MiB (baseline {:.1} MiB), {:.0} bytes/session at {} sessions, CPU {:.2} s ({:.1} µs/message, {:.0} µs/login, {:.2} s in the measured phase)",
            s.server_rss_bytes as f64 / 1048576.0,
            s.server_rss_baseline_bytes as f64 / 1048576.0,
            s.server_rss_bytes_per_session,
            s.sessions_peak,
            s.server_cpu_seconds,
            s.server_cpu_us_per_message,
            s.server_cpu_us_per_login,
            s.server_cpu_phase_seconds
        );
    }
    let _ = writeln!(out, "  loadgen CPU   {:.2} s", s.loadgen_cpu_seconds);
    if !s.errors.is_empty() {
        let _ = writeln!(out, "  errors        {:?}", s.errors);
    }
    out
}

/// Writes `summary.md`, `summary.json` and SVG charts into `dir`.
pub fn write_report(dir: &Path, s: &Summary) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("summary.json"), serde_json::to_string_pretty(s).map_err(std::io::Error::other)?)?;
    let mut md = String::new();
    let _ = writeln!(md, "# {} scenario: {}\n", s.label, s.scenario);
    let _ = writeln!(md, "Command: `{}`\n", s.command);
    let _ = writeln!(md, "```\n{}```\n", table(s));
    let mut charts = Vec::new();
    // The chart is in ms; the IM figures are kept in µs.
    let in_ms = |p: &metrics::Percentiles| metrics::Percentiles {
        p50: p.p50 / 1000.0,
        p90: p.p90 / 1000.0,
        p99: p.p99 / 1000.0,
        p999: p.p999 / 1000.0,
        max: p.max / 1000.0,
        ..p.clone()
    };
    let percentile_rows = [
        ("login", s.login_ms.clone()),
        ("latency", s.latency_ms.clone()),
        ("storm relogin", s.storm_login_ms.clone()),
        ("roster load", in_ms(&s.roster_load_us)),
        ("fan-out", in_ms(&s.presence_fanout_us)),
        ("archive query", in_ms(&s.archive_query_us)),
        ("muc copy", in_ms(&s.muc_copy_us)),
        ("muc reflection", in_ms(&s.muc_reflection_us)),
    ];
    let bars: Vec<(String, f64)> = percentile_rows
        .iter()
        .filter(|(_, p)| p.count > 0)
        .flat_map(|(name, p)| {
            [("p50", p.p50), ("p90", p.p90), ("p99", p.p99), ("p99.9", p.p999), ("max", p.max)].map(|(q, v)| (format!("{name} {q}"), v))
        })
        .collect();
    if !bars.is_empty() {
        charts.push(("percentiles.svg", bar_chart("Latency percentiles (ms)", &bars)));
    }
    let t: Vec<f64> = s.timeline.iter().map(|k| k.t_s).collect();
    charts.push((
        "throughput.svg",
        line_chart(
            "Throughput per second",
            &t,
            &[
                ("logins/s", s.timeline.iter().map(|k| k.logins_per_s).collect()),
                ("messages/s", s.timeline.iter().map(|k| k.messages_per_s).collect()),
            ],
        ),
    ));
    charts
        .push(("sessions.svg", line_chart("Online sessions", &t, &[("sessions", s.timeline.iter().map(|k| k.sessions as f64).collect())])));
    if s.server_rss_bytes > 0 {
        charts.push((
            "server.svg",
            line_chart(
                "Server RSS (MiB) and CPU (%)",
                &t,
                &[
                    ("RSS MiB", s.timeline.iter().map(|k| k.server_rss_bytes as f64 / 1048576.0).collect()),
                    ("CPU %", s.timeline.iter().map(|k| k.server_cpu_percent).collect()),
                ],
            ),
        ));
    }
    for (name, svg) in charts {
        std::fs::write(dir.join(name), svg)?;
        let _ = writeln!(md, "![{name}]({name})\n");
    }
    std::fs::write(dir.join("summary.md"), md)
}

/// `compare`: one column per file, ratios against the first.
pub fn compare(files: &[PathBuf]) -> Result<String, String> {
    if files.is_empty() {
        return Err("give at least one JSON file".into());
    }
    let summaries: Vec<Summary> = files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .map_err(|e| format!("{}: {e}", f.display()))
                .and_then(|t| serde_json::from_str(&t).map_err(|e| format!("{}: {e}", f.display())))
        })
        .collect::<Result<_, _>>()?;
    type Metric = (&'static str, fn(&Summary) -> f64);
    let rows: &[Metric] = &[
        ("logins ok", |s| s.logins_ok as f64),
        ("logins failed", |s| s.logins_failed as f64),
        ("logins/s", |s| s.logins_per_s),
        ("login p50 ms", |s| s.login_ms.p50),
        ("login p99 ms", |s| s.login_ms.p99),
        ("login max ms", |s| s.login_ms.max),
        ("messages/s", |s| s.messages_per_s),
        ("messages lost", |s| s.messages_lost as f64),
        ("latency p50 ms", |s| s.latency_ms.p50),
        ("latency p99 ms", |s| s.latency_ms.p99),
        ("latency p99.9 ms", |s| s.latency_ms.p999),
        ("sessions peak", |s| s.sessions_peak as f64),
        ("server RSS MiB", |s| s.server_rss_bytes as f64 / 1048576.0),
        ("server bytes/session", |s| s.server_rss_bytes_per_session),
        ("server CPU s", |s| s.server_cpu_seconds),
        ("server CPU µs/message", |s| s.server_cpu_us_per_message),
        ("server CPU µs/login", |s| s.server_cpu_us_per_login),
        ("roster gets", |s| s.roster_gets as f64),
        ("roster items wrong", |s| s.roster_items_wrong as f64),
        ("roster errors", |s| s.roster_errors as f64),
        ("roster gets unanswered", |s| s.roster_unanswered as f64),
        ("roster load p50 µs", |s| s.roster_load_us.p50),
        ("roster load p99 µs", |s| s.roster_load_us.p99),
        ("roster load p99.9 µs", |s| s.roster_load_us.p999),
        ("roster load max µs", |s| s.roster_load_us.max),
        ("presence changes", |s| s.presence_sent as f64),
        ("presence copies owed", |s| s.presence_copies_expected as f64),
        ("presence copies missing", |s| s.presence_copies_missing as f64),
        ("presence copies duplicated", |s| s.presence_copies_duplicated as f64),
        ("presence copies unexpected", |s| s.presence_copies_unexpected as f64),
        ("fan-out p50 µs", |s| s.presence_fanout_us.p50),
        ("fan-out p99 µs", |s| s.presence_fanout_us.p99),
        ("fan-out p99.9 µs", |s| s.presence_fanout_us.p999),
        ("fan-out max µs", |s| s.presence_fanout_us.max),
        ("archive queries answered", |s| s.archive_answered as f64),
        ("archive results", |s| s.archive_results as f64),
        ("archive pages incomplete", |s| s.archive_incomplete as f64),
        ("archive pages short of --page", |s| s.archive_short as f64),
        ("archive errors", |s| s.archive_errors as f64),
        ("archive queries unanswered", |s| s.archive_unanswered as f64),
        ("archive query p50 µs", |s| s.archive_query_us.p50),
        ("archive query p99 µs", |s| s.archive_query_us.p99),
        ("archive query p99.9 µs", |s| s.archive_query_us.p999),
        ("archive query max µs", |s| s.archive_query_us.max),
        ("server CPU s in phase", |s| s.server_cpu_phase_seconds),
        ("server CPU µs/presence copy", |s| s.server_cpu_us_per_presence_copy),
        ("server CPU µs/archive query", |s| s.server_cpu_us_per_archive_query),
        ("muc rooms", |s| s.muc_rooms as f64),
        ("muc occupants per room", |s| s.muc_occupants as f64),
        ("muc joins ok", |s| s.muc_joins_ok as f64),
        ("muc joins failed", |s| s.muc_joins_failed as f64),
        ("muc join p99 µs", |s| s.muc_join_us.p99),
        ("muc messages sent", |s| s.muc_messages_sent as f64),
        ("muc messages/s", |s| s.muc_messages_per_s),
        ("muc copies owed", |s| s.muc_copies_expected as f64),
        ("muc copies/s delivered", |s| s.muc_copies_per_s),
        ("muc copies missing", |s| s.muc_copies_missing as f64),
        ("muc copies duplicated", |s| s.muc_copies_duplicated as f64),
        ("muc message errors", |s| s.muc_message_errors as f64),
        ("muc copy p50 µs", |s| s.muc_copy_us.p50),
        ("muc copy p99 µs", |s| s.muc_copy_us.p99),
        ("muc copy p99.9 µs", |s| s.muc_copy_us.p999),
        ("muc copy max µs", |s| s.muc_copy_us.max),
        ("muc reflection p50 µs", |s| s.muc_reflection_us.p50),
        ("muc reflection p99 µs", |s| s.muc_reflection_us.p99),
        ("server CPU µs/muc copy", |s| s.server_cpu_us_per_muc_copy),
        ("roster provisioning s", |s| s.roster_provisioning_s),
        ("loadgen CPU s", |s| s.loadgen_cpu_seconds),
    ];
    let mut out = String::new();
    let _ = write!(out, "| metric |");
    for (i, s) in summaries.iter().enumerate() {
        let _ = write!(out, " {} ({}) |", s.label, s.scenario);
        if i > 0 {
            let _ = write!(out, " ratio {}/{} |", s.label, summaries[0].label);
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "|---|{}", "---|".repeat(summaries.len() * 2 - 1));
    for (name, value) in rows {
        if summaries.iter().all(|s| value(s) == 0.0) {
            continue;
        }
        let _ = write!(out, "| {name} |");
        let base = value(&summaries[0]);
        for (i, s) in summaries.iter().enumerate() {
            let v = value(s);
            let _ = write!(out, " {} |", format_number(v));
            if i > 0 {
                let ratio = if base != 0.0 { format!("{:.2}×", v / base) } else { "–".into() };
                let _ = write!(out, " {ratio} |");
            }
        }
        let _ = writeln!(out);
    }
    Ok(out)
}

fn format_number(v: f64) -> String {
    // Whole numbers and large ones read best without decimals.
    if (v.fract() == 0.0 && v.abs() < 1e15) || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 300.0;
const MARGIN: f64 = 50.0;
const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

fn line_chart(title: &str, x: &[f64], series: &[(&str, Vec<f64>)]) -> String {
    let x_max = x.iter().cloned().fold(1.0, f64::max);
    let y_max = series.iter().flat_map(|(_, v)| v.iter().cloned()).fold(1.0, f64::max) * 1.1;
    let mut svg = header(title);
    axes(&mut svg, x_max, y_max, "seconds");
    for (i, (name, values)) in series.iter().enumerate() {
        let points: Vec<String> = x
            .iter()
            .zip(values)
            .map(|(x, y)| {
                format!("{:.1},{:.1}", MARGIN + x / x_max * (WIDTH - 2.0 * MARGIN), HEIGHT - MARGIN - y / y_max * (HEIGHT - 2.0 * MARGIN))
            })
            .collect();
        let colour = COLOURS[i % COLOURS.len()];
        let _ = writeln!(svg, "<polyline fill='none' stroke='{colour}' stroke-width='2' points='{}'/>", points.join(" "));
        let _ = writeln!(
            svg,
            "<text x='{}' y='{}' fill='{colour}' font-size='12'>{name}</text>",
            WIDTH - MARGIN - 100.0,
            MARGIN + 15.0 * i as f64
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn bar_chart(title: &str, bars: &[(String, f64)]) -> String {
    let y_max = bars.iter().map(|(_, v)| *v).fold(0.001, f64::max) * 1.1;
    let mut svg = header(title);
    axes(&mut svg, bars.len() as f64, y_max, "");
    let slot = (WIDTH - 2.0 * MARGIN) / bars.len().max(1) as f64;
    for (i, (name, value)) in bars.iter().enumerate() {
        let h = value / y_max * (HEIGHT - 2.0 * MARGIN);
        let x = MARGIN + slot * i as f64 + slot * 0.1;
        let _ = writeln!(
            svg,
            "<rect x='{x:.1}' y='{:.1}' width='{:.1}' height='{h:.1}' fill='{}'/>",
            HEIGHT - MARGIN - h,
            slot * 0.8,
            COLOURS[(i / 5) % COLOURS.len()]
        );
        let _ = writeln!(svg, "<text x='{x:.1}' y='{:.1}' font-size='9'>{value:.2}</text>", HEIGHT - MARGIN - h - 3.0);
        let _ = writeln!(
            svg,
            "<text x='{x:.1}' y='{:.1}' font-size='9' transform='rotate(30 {x:.1},{:.1})'>{name}</text>",
            HEIGHT - MARGIN + 12.0,
            HEIGHT - MARGIN + 12.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn header(title: &str) -> String {
    format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{}' font-family='sans-serif'>\n<rect width='100%' height='100%' fill='white'/>\n<text x='{MARGIN}' y='25' font-size='16'>{}</text>\n",
        HEIGHT + 30.0,
        confab_core::xml::escape_text(title)
    )
}

fn axes(svg: &mut String, x_max: f64, y_max: f64, x_label: &str) {
    let (left, bottom, right, top) = (MARGIN, HEIGHT - MARGIN, WIDTH - MARGIN, MARGIN);
    let _ = writeln!(svg, "<line x1='{left}' y1='{bottom}' x2='{right}' y2='{bottom}' stroke='black'/>");
    let _ = writeln!(svg, "<line x1='{left}' y1='{bottom}' x2='{left}' y2='{top}' stroke='black'/>");
    for i in 0..=4 {
        let y = bottom - (bottom - top) * i as f64 / 4.0;
        let _ = writeln!(svg, "<text x='5' y='{y:.1}' font-size='10'>{}</text>", format_number(y_max * i as f64 / 4.0));
    }
    if !x_label.is_empty() {
        let _ = writeln!(svg, "<text x='{right}' y='{}' font-size='10'>{} {x_label}</text>", bottom + 15.0, format_number(x_max));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_puts_ratios_against_the_first() {
        let dir = std::env::temp_dir().join(format!("confab-loadgen-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let a = Summary { label: "confab".into(), scenario: "chat".into(), messages_per_s: 1000.0, ..Summary::default() };
        let b = Summary { label: "ejabberd".into(), scenario: "chat".into(), messages_per_s: 250.0, ..Summary::default() };
        let (pa, pb) = (dir.join("a.json"), dir.join("b.json"));
        std::fs::write(&pa, serde_json::to_string(&a).expect("json")).expect("write");
        std::fs::write(&pb, serde_json::to_string(&b).expect("json")).expect("write");
        let table = compare(&[pa, pb]).expect("compare");
        assert!(table.contains("| messages/s | 1000 | 250 | 0.25× |"), "{table}");
        assert!(!table.contains("logins ok"), "all-zero rows are left out: {table}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn report_writes_markdown_and_svg() {
        let dir = std::env::temp_dir().join(format!("confab-loadgen-report-{}", std::process::id()));
        let mut s = Summary { label: "confab".into(), scenario: "login".into(), server_rss_bytes: 1 << 20, ..Summary::default() };
        s.login_ms = metrics::Percentiles { count: 3, mean: 1.0, p50: 1.0, p90: 2.0, p99: 3.0, p999: 3.0, max: 3.0 };
        s.timeline = vec![metrics::Tick { t_s: 1.0, logins_per_s: 10.0, ..Default::default() }];
        write_report(&dir, &s).expect("report");
        let md = std::fs::read_to_string(dir.join("summary.md")).expect("md");
        assert!(md.contains("percentiles.svg") && md.contains("server.svg"), "{md}");
        assert!(std::fs::read_to_string(dir.join("throughput.svg")).expect("svg").starts_with("<svg"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
