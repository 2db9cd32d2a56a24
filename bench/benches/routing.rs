//! What routing a 1:1 message costs, on one shard and across two, and what moving a
//! connection to its user's home shard costs instead (ARCHITECTURE.md's "move the connection
//! vs forward every stanza"; DESIGN.md target: ≤ 5 µs of server CPU per delivered message).
//!
//! Group `route_message` (one element = one chat message, ~380 bytes with a ~100-byte body):
//! - `route_message_same_shard`: on one thread, the sender's per-stanza work (frame the read
//!   chunk, parse `to`, pick the home shard, stamp `from`, build the envelope) and the home
//!   shard's (look the recipient up among 10,000 accounts, `deliver_to_account` over its
//!   sessions, push into each chosen session's bounded inbox). See `confab_bench::route`.
//!   Timed in the thread's CPU time, like every `_cpu` benchmark here.
//! - `route_message_cross_shard_{wall,cpu}`: the same work split over two glommio executors
//!   (Placement::Unbound) joined by a bounded `async_channel` of `SHARD_INBOX_MESSAGES_MAX`,
//!   N messages streamed through. `_wall` is elapsed time per message with both threads
//!   working in parallel; `_cpu` is the CPU time of both threads per message, the figure to
//!   compare with `same_shard` and with the 5 µs budget. Both sides run at once, so the home
//!   shard often drains the channel and parks, and the sender pays to wake it.
//! - `route_message_cross_shard_backlogged_cpu`: the same, but the home shard starts only
//!   after the sender has filled the channel (8,192 messages), so it never parks: the best a
//!   hop can do, as when the home shard is busy anyway. Each run prints how often either side
//!   waited for the other.
//!
//! Group `cross_shard_hop`: `cross_shard_pingpong_roundtrip_{wall,cpu}`, one token bounced
//! between two executors that park between hops: two hops with a wake-up each, what a hop
//! costs when shards are not busy enough to batch.
//!
//! Group `connection_move` (one element = one move): `connection_move_8KiB_tls_{wall,cpu}`,
//! the sending shard's `fcntl(F_DUPFD_CLOEXEC)` of a real loopback TCP socket, closing its own
//! descriptor and boxing framer + stream state + an 8 KiB TLS stand-in, one trip through the
//! same kind of channel, and the home shard rebuilding a glommio `TcpStream` from the
//! descriptor and reading the TLS state once. Moves go in batches of 64 (one wake-up of the
//! parked home shard per batch, as under a burst of logins); the `_unbatched` variants move
//! one connection at a time, each waking the parked home shard, as a lone login does. See
//! `confab_bench::migrant`.

use std::hint::black_box;

use confab_bench::clock::cpu_timed;
use confab_bench::migrant::{Adopted, Departing, LoopbackConnection, Migrant};
use confab_bench::pair::{Consumer, PingPong, Producer, ShardPair};
use confab_bench::route::{Envelope, HomeSide, Population, SenderSide};
use confab_core::limits::SHARD_INBOX_MESSAGES_MAX;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const POPULATION_SEED: u64 = 0x5eed_0001;
/// Distinct read chunks cycled through; ~100 KB, so they stay in cache as a just-read chunk would.
const CHUNKS: usize = 256;
/// Moves per batch; see the module documentation.
const MOVES_PER_BATCH: usize = 64;

fn route_message(c: &mut Criterion) {
    let population = Population::new(POPULATION_SEED);
    let mut group = c.benchmark_group("route_message");
    group.throughput(Throughput::Elements(1));

    {
        let chunks = population.chat_chunks_to(0, CHUNKS, 1);
        let mut sender = SenderSide::new();
        let mut home = HomeSide::new(0, &population);
        let mut next = 0;
        group.bench_function("route_message_same_shard", |b| {
            b.iter_custom(|iters| {
                cpu_timed(iters, || {
                    let (shard, envelope) = sender.route(&chunks[next % CHUNKS]);
                    next += 1;
                    assert_eq!(shard, 0, "the recipient is homed here");
                    home.deliver(envelope)
                })
            })
        });
        eprintln!("same shard: {} messages, {} session deliveries", next, home.delivered());
    }

    {
        let chunks = population.chat_chunks_to(1, CHUNKS, 2);
        let home_population = population.clone();
        let pair = ShardPair::start(
            SHARD_INBOX_MESSAGES_MAX,
            move || StanzaProducer { sender: SenderSide::new(), chunks, next: 0 },
            move || StanzaConsumer { home: HomeSide::new(1, &home_population) },
        );
        pair.take_totals();
        group.bench_function("route_message_cross_shard_wall", |b| b.iter_custom(|iters| pair.run(iters, usize::MAX).wall));
        report_waits("route_message_cross_shard_wall", &pair);
        group.bench_function("route_message_cross_shard_cpu", |b| b.iter_custom(|iters| pair.run(iters, usize::MAX).cpu));
        report_waits("route_message_cross_shard_cpu", &pair);
        group.bench_function("route_message_cross_shard_backlogged_cpu", |b| b.iter_custom(|iters| pair.run_backlogged(iters).cpu));
        report_waits("route_message_cross_shard_backlogged_cpu", &pair);
    }
    group.finish();
}

fn cross_shard_hop(c: &mut Criterion) {
    let mut group = c.benchmark_group("cross_shard_hop");
    group.throughput(Throughput::Elements(1));
    let ping_pong = PingPong::start();
    group.bench_function("cross_shard_pingpong_roundtrip_wall", |b| b.iter_custom(|rounds| ping_pong.run(rounds).wall));
    group.bench_function("cross_shard_pingpong_roundtrip_cpu", |b| b.iter_custom(|rounds| ping_pong.run(rounds).cpu));
    group.finish();
}

fn connection_move(c: &mut Criterion) {
    let mut group = c.benchmark_group("connection_move");
    group.throughput(Throughput::Elements(1));
    let pair = ShardPair::start(
        SHARD_INBOX_MESSAGES_MAX,
        || MoveProducer { connection: LoopbackConnection::open().expect("a loopback TCP connection"), departing: Vec::new(), seed: 0 },
        || MoveConsumer { adopted: Vec::with_capacity(MOVES_PER_BATCH), touched: 0 },
    );
    group.bench_function("connection_move_8KiB_tls_wall", |b| b.iter_custom(|moves| pair.run(moves, MOVES_PER_BATCH).wall));
    report_waits("connection_move_8KiB_tls_wall", &pair);
    group.bench_function("connection_move_8KiB_tls_cpu", |b| b.iter_custom(|moves| pair.run(moves, MOVES_PER_BATCH).cpu));
    report_waits("connection_move_8KiB_tls_cpu", &pair);
    // One move at a time: the home shard is parked and must be woken for every one.
    group.bench_function("connection_move_8KiB_tls_unbatched_wall", |b| b.iter_custom(|moves| pair.run(moves, 1).wall));
    report_waits("connection_move_8KiB_tls_unbatched_wall", &pair);
    group.bench_function("connection_move_8KiB_tls_unbatched_cpu", |b| b.iter_custom(|moves| pair.run(moves, 1).cpu));
    report_waits("connection_move_8KiB_tls_unbatched_cpu", &pair);
    group.finish();
}

/// Prints, for the benchmark just run, how often each side of the pair waited for the other
/// and the mean CPU per item over all its runs (warm-up included), to explain the figures.
fn report_waits(name: &str, pair: &ShardPair) {
    let totals = pair.take_totals();
    if totals.items == 0 {
        return;
    }
    let items = totals.items as f64;
    eprintln!(
        "{name}: {} items; per item: {:.3} producer waits (channel full), {:.3} consumer waits \
         (channel empty), {:.0} ns CPU, {:.0} ns wall",
        totals.items,
        totals.producer_waits as f64 / items,
        totals.consumer_waits as f64 / items,
        totals.cpu.as_nanos() as f64 / items,
        totals.wall.as_nanos() as f64 / items,
    );
}

/// The sending shard of `route_message_cross_shard`: routes a read chunk into an envelope.
struct StanzaProducer {
    sender: SenderSide,
    chunks: Vec<Vec<u8>>,
    next: usize,
}

impl Producer for StanzaProducer {
    type Item = Envelope;

    fn produce(&mut self) -> Envelope {
        let (shard, envelope) = self.sender.route(&self.chunks[self.next % self.chunks.len()]);
        self.next += 1;
        assert_eq!(shard, 1, "the recipient is homed on the other shard");
        envelope
    }
}

/// The home shard of `route_message_cross_shard`: delivers envelopes to session inboxes.
struct StanzaConsumer {
    home: HomeSide,
}

impl Consumer<Envelope> for StanzaConsumer {
    fn consume(&mut self, envelope: Envelope) {
        black_box(self.home.deliver(envelope));
    }
}

/// The sending shard of `connection_move`: connections mid-SASL, prepared untimed.
struct MoveProducer {
    connection: LoopbackConnection,
    departing: Vec<Departing>,
    seed: u64,
}

impl Producer for MoveProducer {
    type Item = Box<Migrant>;

    fn prepare(&mut self, count: usize) {
        for _ in 0..count {
            self.seed += 1;
            self.departing.push(self.connection.departing(self.seed));
        }
    }

    fn produce(&mut self) -> Box<Migrant> {
        self.departing.pop().expect("prepared").into_migrant()
    }
}

/// The home shard of `connection_move`: adopts, and closes the batch's sockets untimed
/// (closing belongs to the end of a session, not to the move).
struct MoveConsumer {
    adopted: Vec<Adopted>,
    touched: u64,
}

impl Consumer<Box<Migrant>> for MoveConsumer {
    fn consume(&mut self, migrant: Box<Migrant>) {
        let adopted = migrant.adopt();
        self.touched = self.touched.wrapping_add(adopted.touched);
        self.adopted.push(adopted);
    }

    fn finish_batch(&mut self) {
        black_box(self.touched);
        self.adopted.clear();
    }
}

criterion_group!(benches, route_message, cross_shard_hop, connection_move);
criterion_main!(benches);
