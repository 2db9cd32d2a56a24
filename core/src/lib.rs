//! Confab's protocol core: everything about XMPP that can be decided without I/O.
//!
//! This crate owns the framer, the stanza views, JIDs, SASL mechanisms, the client stream
//! state machine, routing rules, limits and the durable record types. It deliberately owns no
//! sockets, files, clocks or threads: bytes and `now` are passed in, events and actions come
//! out, so every protocol edge case is a fast, exact unit test (the quinn-proto model).

pub mod archive;
pub mod blocking;
pub mod carbons;
pub mod forms;
pub mod framer;
pub mod jid;
pub mod limits;
pub mod muc;
pub mod pep;
pub mod records;
pub mod roster;
pub mod routing;
pub mod sasl;
pub mod sm;
pub mod stream;
pub mod throttle;
pub mod time;
pub mod xml;
