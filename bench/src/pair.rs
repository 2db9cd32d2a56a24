//! Two glommio executors standing in for two shards, joined by a bounded `async_channel`
//! as shards are (`shards/src/lib.rs`: one bounded inbox of `SHARD_INBOX_MESSAGES_MAX` per
//! shard), and the clocks to time them.
//!
//! [`ShardPair`] runs a [`Producer`] on one executor and a [`Consumer`] on the other and
//! moves items from one to the other in batches on request, returning the wall time from the
//! first send to the last item consumed, the CPU time both threads spent on it (each thread
//! reads its own `CLOCK_THREAD_CPUTIME_ID`) and how often either side had to wait for the
//! other, which is what decides how many executor wake-ups a hop costs. [`PingPong`] bounces one token between
//! two executors, which pays a wake-up of a parked executor on every hop: the cost of a
//! cross-shard hop when the shards are not busy.
//!
//! Placement is `Unbound` and each executor gets [`IO_MEMORY_BYTES`] of io memory, because
//! memlock is 8 MiB on this machine. The benchmark's main thread only sends commands and
//! waits, so it does not compete for the two cores while a batch runs. This module does not
//! decide what is moved or what a batch means; the benchmarks do.

use std::cell::Cell;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender, TryRecvError, TrySendError};
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use crate::clock::{clock_time, own_cpu_clock, thread_cpu_time};

/// io_uring buffer memory per executor (the server's default, `io_memory_bytes`).
pub const IO_MEMORY_BYTES: usize = 512 * 1024;

/// What one batch cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Measurement {
    /// Pipelined: from the producer's first send to the consumer's last item. Backlogged:
    /// the producer's time plus the consumer's.
    pub wall: Duration,
    /// CPU time of both executor threads over the batch.
    pub cpu: Duration,
    /// Items moved.
    pub items: u64,
    /// Sends that found the channel full and waited for the consumer.
    pub producer_waits: u64,
    /// Receives that found the channel empty and waited (the consumer parks, unless the
    /// item arrives first): roughly the wake-ups the producer had to pay for.
    pub consumer_waits: u64,
}

impl std::ops::AddAssign for Measurement {
    fn add_assign(&mut self, other: Measurement) {
        self.wall += other.wall;
        self.cpu += other.cpu;
        self.items += other.items;
        self.producer_waits += other.producer_waits;
        self.consumer_waits += other.consumer_waits;
    }
}

/// One side's account of a batch.
#[derive(Debug, Clone, Copy)]
struct Report {
    start: Instant,
    end: Instant,
    cpu: Duration,
    waits: u64,
}

/// The sending shard's side. Built on its executor thread, so it may hold `!Send` state.
pub trait Producer: 'static {
    type Item: Send + 'static;
    /// Untimed set-up for the next `count` items.
    fn prepare(&mut self, _count: usize) {}
    /// One item, timed.
    fn produce(&mut self) -> Self::Item;
}

/// The receiving shard's side. Built on its executor thread.
pub trait Consumer<T>: 'static {
    /// One item, timed.
    fn consume(&mut self, item: T);
    /// Untimed clean-up after a batch.
    fn finish_batch(&mut self) {}
}

/// Two executors with a bounded channel between them; see the module documentation.
pub struct ShardPair {
    to_producer: Sender<usize>,
    to_consumer: Sender<usize>,
    from_producer: Receiver<Report>,
    from_consumer: Receiver<Report>,
    capacity: usize,
    totals: Cell<Measurement>,
    handles: Vec<ExecutorJoinHandle<()>>,
}

impl ShardPair {
    /// Starts both executors; `capacity` bounds the channel between them.
    pub fn start<P, C>(
        capacity: usize,
        make_producer: impl FnOnce() -> P + Send + 'static,
        make_consumer: impl FnOnce() -> C + Send + 'static,
    ) -> ShardPair
    where
        P: Producer,
        C: Consumer<P::Item>,
    {
        let (items_in, items_out) = async_channel::bounded::<P::Item>(capacity);
        let (to_producer, producer_commands) = async_channel::bounded::<usize>(1);
        let (to_consumer, consumer_commands) = async_channel::bounded::<usize>(1);
        let (producer_reports, from_producer) = async_channel::bounded(1);
        let (consumer_reports, from_consumer) = async_channel::bounded(1);
        let producer = executor("bench-shard-0").spawn(move || async move {
            let mut producer = make_producer();
            while let Ok(count) = producer_commands.recv().await {
                producer.prepare(count);
                let cpu = thread_cpu_time();
                let start = Instant::now();
                let mut waits = 0;
                for _ in 0..count {
                    let item = match items_in.try_send(producer.produce()) {
                        Ok(()) => continue,
                        Err(TrySendError::Full(item)) => item,
                        Err(TrySendError::Closed(_)) => return,
                    };
                    waits += 1;
                    if items_in.send(item).await.is_err() {
                        return;
                    }
                }
                let end = Instant::now();
                let cpu = thread_cpu_time().saturating_sub(cpu);
                if producer_reports.send(Report { start, end, cpu, waits }).await.is_err() {
                    return;
                }
            }
        });
        let consumer = executor("bench-shard-1").spawn(move || async move {
            let mut consumer = make_consumer();
            while let Ok(count) = consumer_commands.recv().await {
                let cpu = thread_cpu_time();
                let start = Instant::now();
                let mut waits = 0;
                for _ in 0..count {
                    let item = match items_out.try_recv() {
                        Ok(item) => item,
                        Err(TryRecvError::Empty) => {
                            waits += 1;
                            match items_out.recv().await {
                                Ok(item) => item,
                                Err(_) => return,
                            }
                        }
                        Err(TryRecvError::Closed) => return,
                    };
                    consumer.consume(item);
                }
                let end = Instant::now();
                let cpu = thread_cpu_time().saturating_sub(cpu);
                consumer.finish_batch();
                if consumer_reports.send(Report { start, end, cpu, waits }).await.is_err() {
                    return;
                }
            }
        });
        let handles = vec![producer.expect("the producer executor starts"), consumer.expect("the consumer executor starts")];
        ShardPair { to_producer, to_consumer, from_producer, from_consumer, capacity, totals: Cell::new(Measurement::default()), handles }
    }

    /// Moves `count` items in batches of at most `batch_max`, producer and consumer running
    /// at the same time (pipelined), and sums what the batches cost.
    pub fn run(&self, count: u64, batch_max: usize) -> Measurement {
        self.batches(count, batch_max, |batch| {
            self.to_consumer.send_blocking(batch).expect("the consumer runs");
            self.to_producer.send_blocking(batch).expect("the producer runs");
            let producer = self.from_producer.recv_blocking().expect("the producer reports");
            let consumer = self.from_consumer.recv_blocking().expect("the consumer reports");
            (producer, consumer, consumer.end.saturating_duration_since(producer.start))
        })
    }

    /// Moves `count` items in batches that fit the channel, the consumer starting only once
    /// the producer has sent the whole batch: the consumer always finds a backlog and never
    /// parks, the best case for a hop (a busy home shard).
    pub fn run_backlogged(&self, count: u64) -> Measurement {
        self.batches(count, self.capacity, |batch| {
            self.to_producer.send_blocking(batch).expect("the producer runs");
            let producer = self.from_producer.recv_blocking().expect("the producer reports");
            self.to_consumer.send_blocking(batch).expect("the consumer runs");
            let consumer = self.from_consumer.recv_blocking().expect("the consumer reports");
            let wall = producer.end.saturating_duration_since(producer.start) + consumer.end.saturating_duration_since(consumer.start);
            (producer, consumer, wall)
        })
    }

    /// Everything moved since the last call, then starts counting afresh.
    pub fn take_totals(&self) -> Measurement {
        self.totals.take()
    }

    fn batches(&self, count: u64, batch_max: usize, mut batch: impl FnMut(usize) -> (Report, Report, Duration)) -> Measurement {
        let mut total = Measurement::default();
        let mut left = count;
        while left > 0 {
            let size = left.min(batch_max.max(1) as u64) as usize;
            left -= size as u64;
            let (producer, consumer, wall) = batch(size);
            total += Measurement {
                wall,
                cpu: producer.cpu + consumer.cpu,
                items: size as u64,
                producer_waits: producer.waits,
                consumer_waits: consumer.waits,
            };
        }
        let mut totals = self.totals.get();
        totals += total;
        self.totals.set(totals);
        total
    }
}

impl Drop for ShardPair {
    fn drop(&mut self) {
        self.to_producer.close();
        self.to_consumer.close();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

/// Two executors bouncing a token; see the module documentation.
pub struct PingPong {
    commands: Sender<u64>,
    reports: Receiver<Measurement>,
    handles: Vec<ExecutorJoinHandle<()>>,
}

impl PingPong {
    /// Starts the two executors; both park until the first round.
    pub fn start() -> PingPong {
        let (ping_in, ping_out) = async_channel::bounded::<u64>(1);
        let (pong_in, pong_out) = async_channel::bounded::<u64>(1);
        let (clock_in, clock_out) = async_channel::bounded::<libc::clockid_t>(1);
        let (commands, commands_out) = async_channel::bounded::<u64>(1);
        let (reports_in, reports) = async_channel::bounded(1);
        let echo = executor("bench-pong").spawn(move || async move {
            if clock_in.send(own_cpu_clock()).await.is_err() {
                return;
            }
            while let Ok(token) = ping_out.recv().await {
                if pong_in.send(token).await.is_err() {
                    return;
                }
            }
        });
        let pinger = executor("bench-ping").spawn(move || async move {
            let Ok(echo_clock) = clock_out.recv().await else { return };
            while let Ok(rounds) = commands_out.recv().await {
                let (own, other) = (thread_cpu_time(), clock_time(echo_clock));
                let start = Instant::now();
                for token in 0..rounds {
                    if ping_in.send(token).await.is_err() || pong_out.recv().await != Ok(token) {
                        return;
                    }
                }
                let wall = start.elapsed();
                let cpu = thread_cpu_time().saturating_sub(own) + clock_time(echo_clock).saturating_sub(other);
                let measurement = Measurement { wall, cpu, items: rounds, ..Measurement::default() };
                if reports_in.send(measurement).await.is_err() {
                    return;
                }
            }
        });
        let handles = vec![echo.expect("the echo executor starts"), pinger.expect("the ping executor starts")];
        PingPong { commands, reports, handles }
    }

    /// `rounds` round trips (two cross-shard hops each).
    pub fn run(&self, rounds: u64) -> Measurement {
        self.commands.send_blocking(rounds).expect("the ping executor runs");
        self.reports.recv_blocking().expect("the ping executor reports")
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        self.commands.close();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

fn executor(name: &str) -> LocalExecutorBuilder {
    LocalExecutorBuilder::new(Placement::Unbound).name(name).io_memory(IO_MEMORY_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrant::{Adopted, Departing, LoopbackConnection, Migrant};

    struct Counter(u64);
    impl Producer for Counter {
        type Item = u64;
        fn produce(&mut self) -> u64 {
            self.0 += 1;
            self.0
        }
    }

    /// Checks that items arrive in order and reports their count on drop.
    struct Checker(u64, Sender<u64>);
    impl Consumer<u64> for Checker {
        fn consume(&mut self, item: u64) {
            assert_eq!(item, self.0 + 1, "in order");
            self.0 = item;
        }
    }
    impl Drop for Checker {
        fn drop(&mut self) {
            let _ = self.1.try_send(self.0);
        }
    }

    #[test]
    fn every_item_arrives_pipelined_and_backlogged() {
        let (seen_in, seen) = async_channel::bounded(1);
        let pair = ShardPair::start(64, || Counter(0), move || Checker(0, seen_in));
        let pipelined = pair.run(1000, 300);
        assert_eq!(pipelined.items, 1000);
        assert!(pipelined.wall > Duration::ZERO && pipelined.cpu > Duration::ZERO);
        assert_eq!(pair.run_backlogged(1000).items, 1000);
        // Backlogged batches fit the channel, so neither side ever waits.
        assert_eq!(pair.run_backlogged(64).consumer_waits, 0);
        assert_eq!(pair.take_totals().items, 2064);
        drop(pair);
        assert_eq!(seen.recv_blocking(), Ok(2064));
    }

    #[test]
    fn ping_pong_counts_rounds() {
        let ping_pong = PingPong::start();
        let measurement = ping_pong.run(100);
        assert_eq!(measurement.items, 100);
        assert!(measurement.cpu > Duration::ZERO);
    }

    struct Mover(LoopbackConnection, Vec<Departing>);
    impl Producer for Mover {
        type Item = Box<Migrant>;
        fn prepare(&mut self, count: usize) {
            for seed in 0..count {
                self.1.push(self.0.departing(seed as u64));
            }
        }
        fn produce(&mut self) -> Box<Migrant> {
            self.1.pop().expect("prepared").into_migrant()
        }
    }

    struct Adopter(Vec<Adopted>);
    impl Consumer<Box<Migrant>> for Adopter {
        fn consume(&mut self, migrant: Box<Migrant>) {
            let adopted = migrant.adopt();
            assert!(adopted.socket.peer_addr().is_ok(), "the adopted socket is the connection");
            assert_ne!(adopted.touched, 0);
            self.0.push(adopted);
        }
        fn finish_batch(&mut self) {
            self.0.clear();
        }
    }

    #[test]
    fn moved_connections_arrive_with_a_working_socket() {
        let pair = ShardPair::start(16, || Mover(LoopbackConnection::open().expect("loopback"), Vec::new()), || Adopter(Vec::new()));
        assert_eq!(pair.run(40, 8).items, 40);
    }
}
