//! Confab's integration tests: the real `confab` binary, driven over TCP and TLS.
//!
//! One binary with a module per area (the ripgrep layout). Every test starts its own server on
//! free ports, so tests are independent and can run in parallel.

mod admin;
mod hostile;
mod im;
mod layout;
mod loadgen;
mod login;
mod muc;
mod routing;
mod slixmpp;
mod storage;
mod support;
