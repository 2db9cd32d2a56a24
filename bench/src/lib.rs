//! Fixtures shared by Confab's criterion micro-benchmarks (`bench/benches/`).
//!
//! This crate owns the inputs and stand-ins the benchmarks need: CPU-time clocks
//! ([`clock`]), realistic client-to-server byte streams ([`corpus`]), the per-stanza routing
//! work of a sending and a home shard ([`route`]), the state a connection carries when it
//! moves shards ([`migrant`]), and a harness that runs two glommio executors as two shards
//! joined by a bounded channel ([`pair`]). It deliberately measures nothing itself and is not used by the server: the
//! numbers come from `cargo bench -p confab-bench` and are written up in `results/`.
//!
//! The bench does not depend on `confab-shards` (rustls with aws-lc and redb would make every
//! bench build slow); [`route::Envelope`] and [`migrant::Migrant`] mirror the shard types (each
//! says how closely) and must follow them when those change.

pub mod clock;
pub mod corpus;
pub mod migrant;
pub mod pair;
pub mod route;
