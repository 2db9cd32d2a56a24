//! Counters of what a shard dropped or could not do: every place that drops a stanza without
//! bouncing an error to its sender counts it here and logs a rate-limited warning, so nothing
//! is lost without a trace. The admin API's `counters` command sums them over the shards (the
//! metrics endpoint will export them). ARCHITECTURE.md lists each place and what it does.
//!
//! Per shard and single-threaded: `Cell`s, no atomics; counting takes `&self`, so code that
//! only reads the shard can count.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// At most one warning per counter per this interval; the ones in between are summed into it.
pub const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// What was dropped (or skipped) and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// A presence for a session whose inbox was full (its subscribers see it later, or its
    /// client asks for it again).
    PresenceInboxFull,
    /// A roster or block-list push for a session whose inbox was full (the client resyncs with
    /// a roster or block-list get; roster versioning makes that cheap).
    PushInboxFull,
    /// A message carbon (XEP-0280) for a session whose inbox was full: a copy; the message
    /// itself was delivered.
    CarbonInboxFull,
    /// A PEP notification or last item (XEP-0163) for a session whose inbox was full.
    PepInboxFull,
    /// A stanza to one of several sessions of a user whose inbox was full (another took it).
    SessionInboxFull,
    /// A room's stanza for a session whose inbox was full (the other occupants got it; a
    /// client that stops reading for good is closed, `limits.stalled_reader_timeout_ms`).
    RoomInboxFull,
    /// A message for another shard that found its inbox full and the overflow queue at its
    /// bound (`PEER_OVERFLOW_MESSAGES_MAX`).
    PeerOverflow,
    /// A message for a shard whose inbox is closed (only while the server stops).
    PeerClosed,
    /// Replies to one delivery beyond `DISPATCH_ENVELOPES_MAX` (a loop).
    DispatchLimit,
    /// A stanza routed to no one: an address with no local part or of another domain, which
    /// routing never produces on purpose.
    Unroutable,
    /// A message delivered without being archived because the store could not write.
    ArchiveSkipped,
    /// Stale stanzas of a session that ended unacknowledged and are not redelivered (presence,
    /// carbons, notifications, archive results: XEP-0198 §5 redelivers messages only).
    StaleAfterSessionEnd,
}

impl Counter {
    pub const ALL: [Counter; 12] = [
        Counter::PresenceInboxFull,
        Counter::PushInboxFull,
        Counter::CarbonInboxFull,
        Counter::PepInboxFull,
        Counter::SessionInboxFull,
        Counter::RoomInboxFull,
        Counter::PeerOverflow,
        Counter::PeerClosed,
        Counter::DispatchLimit,
        Counter::Unroutable,
        Counter::ArchiveSkipped,
        Counter::StaleAfterSessionEnd,
    ];

    /// The counter's name in the admin API and in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Counter::PresenceInboxFull => "dropped_presence_inbox_full",
            Counter::PushInboxFull => "dropped_push_inbox_full",
            Counter::CarbonInboxFull => "dropped_carbon_inbox_full",
            Counter::PepInboxFull => "dropped_pep_inbox_full",
            Counter::SessionInboxFull => "dropped_session_inbox_full",
            Counter::RoomInboxFull => "dropped_room_inbox_full",
            Counter::PeerOverflow => "dropped_peer_overflow",
            Counter::PeerClosed => "dropped_peer_closed",
            Counter::DispatchLimit => "dropped_dispatch_limit",
            Counter::Unroutable => "dropped_unroutable",
            Counter::ArchiveSkipped => "archive_skipped_store_unwritable",
            Counter::StaleAfterSessionEnd => "dropped_stale_after_session_end",
        }
    }

    fn index(self) -> usize {
        Counter::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }
}

/// One shard's counters.
#[derive(Debug, Default)]
pub struct Counters {
    values: [Cell<u64>; Counter::ALL.len()],
    /// When each counter last warned, and how many counts since.
    warned: [Cell<Option<Instant>>; Counter::ALL.len()],
    unreported: [Cell<u64>; Counter::ALL.len()],
}

impl Counters {
    /// Counts one occurrence and warns, at most once per `WARNING_INTERVAL` per counter.
    pub fn count(&self, counter: Counter) {
        let index = counter.index();
        self.values[index].set(self.values[index].get() + 1);
        self.unreported[index].set(self.unreported[index].get() + 1);
        let due = self.warned[index].get().is_none_or(|last| last.elapsed() >= WARNING_INTERVAL);
        if due {
            let times = self.unreported[index].replace(0);
            self.warned[index].set(Some(Instant::now()));
            tracing::warn!(counter = counter.name(), times, total = self.values[index].get(), "dropped");
        }
    }

    /// Every counter's value, by name.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        Counter::ALL.iter().map(|counter| (counter.name(), self.values[counter.index()].get())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_occurrence() {
        let counters = Counters::default();
        for _ in 0..3 {
            counters.count(Counter::PeerOverflow);
        }
        counters.count(Counter::Unroutable);
        let snapshot = counters.snapshot();
        assert!(snapshot.contains(&("dropped_peer_overflow", 3)));
        assert!(snapshot.contains(&("dropped_unroutable", 1)));
        assert!(snapshot.contains(&("dropped_carbon_inbox_full", 0)));
        let names: std::collections::BTreeSet<_> = Counter::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), Counter::ALL.len(), "names are unique");
    }
}
