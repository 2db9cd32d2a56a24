//! A session's inbox: the stanzas waiting for the session's connection task to write them,
//! bounded in stanzas (`SESSION_INBOX_STANZAS_MAX`) and in bytes (`limits.session_inbox_bytes`),
//! so a client that reads slowly or not at all pins a bounded amount of memory, whatever the
//! size of the stanzas sent to it.
//!
//! The sending side (`InboxSender`, held by the session table) refuses what does not fit and
//! remembers since when it has been refusing; the receiving side (`InboxReceiver`, held by the
//! connection task) clears that whenever it takes something out. A connection that cannot
//! write for `limits.stalled_reader_timeout_ms` while its inbox refuses is stalled: the
//! connection task ends it (`stalled_for`). Both sides live on the same shard thread; the
//! shared state is a `Cell`, no lock. This module decides nothing about what is dropped or
//! bounced when the inbox refuses: its callers do.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use confab_core::limits::SESSION_INBOX_STANZAS_MAX;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

use crate::shard::SessionMessage;

/// What both sides of one inbox share.
#[derive(Debug)]
struct State {
    /// Bytes of the stanzas waiting.
    bytes: Cell<usize>,
    bytes_max: usize,
    /// Since when stanzas have been refused without the receiver taking any out.
    full_since: Cell<Option<Instant>>,
}

/// The session table's side of an inbox.
#[derive(Debug)]
pub struct InboxSender {
    sender: LocalSender<SessionMessage>,
    state: Rc<State>,
}

/// The connection task's side of an inbox.
#[derive(Debug)]
pub struct InboxReceiver {
    receiver: LocalReceiver<SessionMessage>,
    state: Rc<State>,
}

/// A new inbox holding at most `bytes_max` bytes of stanzas.
pub fn inbox(bytes_max: usize) -> (InboxSender, InboxReceiver) {
    // Unbounded in type, bounded in use (`offer` checks): glommio's bounded channel
    // preallocates its whole capacity, which would cost every idle session tens of KiB.
    let (sender, receiver) = local_channel::new_unbounded();
    let state = Rc::new(State { bytes: Cell::new(0), bytes_max, full_since: Cell::new(None) });
    (InboxSender { sender, state: state.clone() }, InboxReceiver { receiver, state })
}

fn size(message: &SessionMessage) -> usize {
    match message {
        SessionMessage::Stanza(bytes) => bytes.len(),
        SessionMessage::Batch(stanzas) => stanzas.iter().map(Vec::len).sum(),
        SessionMessage::Kick(_) => 0,
    }
}

impl InboxSender {
    /// Queues `message` if it fits (a kick always does: it ends the session anyway); false when
    /// refused. A batch takes one stanza slot; its bytes all count.
    pub fn offer(&self, message: SessionMessage) -> bool {
        let bytes = size(&message);
        let fits = self.sender.len() < SESSION_INBOX_STANZAS_MAX && self.state.bytes.get() + bytes <= self.state.bytes_max;
        if !fits && !matches!(message, SessionMessage::Kick(_)) {
            if self.state.full_since.get().is_none() {
                self.state.full_since.set(Some(Instant::now()));
            }
            return false;
        }
        self.push(message, bytes)
    }

    /// Queues `message` past the bounds: for what is already bounded by its own limits and must
    /// arrive whole (a user's offline messages at login). False only when the session is gone.
    pub fn force(&self, message: SessionMessage) -> bool {
        let bytes = size(&message);
        self.push(message, bytes)
    }

    fn push(&self, message: SessionMessage, bytes: usize) -> bool {
        if self.sender.try_send(message).is_err() {
            return false;
        }
        self.state.bytes.set(self.state.bytes.get() + bytes);
        true
    }
}

impl InboxReceiver {
    /// The next message, waiting for one; `None` when the session table dropped the sender.
    pub async fn recv(&self) -> Option<SessionMessage> {
        let message = self.receiver.recv().await;
        self.took(message.as_ref());
        message
    }

    /// The next message if one is waiting now.
    pub fn try_recv(&self) -> Option<SessionMessage> {
        let message = futures_lite::future::block_on(futures_lite::future::poll_once(self.receiver.recv())).flatten();
        self.took(message.as_ref());
        message
    }

    /// How long the inbox has been refusing stanzas with none taken out, if it is.
    pub fn stalled_for(&self) -> Option<Duration> {
        self.state.full_since.get().map(|since| since.elapsed())
    }

    fn took(&self, message: Option<&SessionMessage>) {
        if let Some(message) = message {
            self.state.bytes.set(self.state.bytes.get().saturating_sub(size(message)));
            self.state.full_since.set(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_bytes_and_stanzas_with_kicks_always_fitting() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let (sender, receiver) = inbox(1000);
                assert!(sender.offer(SessionMessage::Stanza(vec![0; 600])));
                assert!(!sender.offer(SessionMessage::Stanza(vec![0; 600])), "past the byte bound");
                assert!(receiver.stalled_for().is_some(), "refusing since then");
                assert!(sender.offer(SessionMessage::Kick(confab_core::stream::StreamError::new("conflict"))));
                assert!(sender.force(SessionMessage::Stanza(vec![0; 600])), "forced past the bound");
                assert!(matches!(receiver.try_recv(), Some(SessionMessage::Stanza(bytes)) if bytes.len() == 600));
                assert!(receiver.stalled_for().is_none(), "taking one out clears the stall");
                assert!(receiver.try_recv().is_some() && receiver.try_recv().is_some());
                assert!(receiver.try_recv().is_none());
                assert!(sender.offer(SessionMessage::Batch(vec![vec![0; 500], vec![0; 500]])), "all bytes back");
                for _ in 0..SESSION_INBOX_STANZAS_MAX {
                    sender.force(SessionMessage::Stanza(Vec::new()));
                }
                assert!(!sender.offer(SessionMessage::Stanza(Vec::new())), "past the stanza bound");
            })
            .expect("executor")
            .join()
            .expect("test ran");
    }
}
