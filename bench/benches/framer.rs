//! Framer throughput on a realistic client stream (DESIGN.md target: ≥ 1 GB/s of typical
//! stanza streams on one core).
//!
//! Each iteration frames a fresh connection's worth of bytes: the stream header, then at
//! least 1 MiB of the mixed client traffic of `confab_bench::corpus` (chat messages with
//! ~100-byte bodies, chat states, receipts, presence with caps, iq pings, disco#info, roster,
//! MAM, keepalives), pushed in 16 KiB chunks (`READ_CHUNK_BYTES`) and drained after every
//! push until `Ok(None)`, exactly as a connection task does. The same work is reported twice:
//! in bytes (group `framer_bytes`) and in stanzas (group `framer_stanzas`). The `_with_from`
//! variant also stamps `from` on every `<message/>` (`Stanza::with_from`, the copy a
//! forwarded stanza costs). `baseline_memchr2_lt_gt_1MiB` counts the `<` and `>` of the
//! same bytes with memchr, a floor no framer gets under, measured in the same run so the
//! framer can be stated as a ratio to it (the conventions ask wall-clock figures to be).
//!
//! Times are the benchmark thread's CPU time (`confab_bench::clock`), not elapsed time: the
//! two cores of this machine are shared, and preemption is not the framer's cost.

use std::hint::black_box;

use confab_bench::clock::cpu_timed;
use confab_bench::corpus::{mixed_client_stream, Corpus};
use confab_bench::route::authenticated_limits;
use confab_core::framer::{Frame, Framer};
use confab_core::limits::READ_CHUNK_BYTES;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Bytes of stanzas per iteration (the header comes on top).
const STREAM_BYTES_MIN: usize = 1024 * 1024;
/// The sender's full JID stamped by the `_with_from` variant.
const SENDER: &str = "juliet42@example.com/Conversations.x7Yq";

/// Frames all of `corpus` like a connection task; returns (stanzas, keepalives, stamped bytes).
fn frame_stream(corpus: &Corpus, stamp_from: bool) -> (u64, u64, usize) {
    let mut framer = Framer::new(authenticated_limits());
    let (mut stanzas, mut keepalives, mut stamped) = (0, 0, 0);
    for chunk in corpus.bytes.chunks(READ_CHUNK_BYTES) {
        framer.push(chunk);
        loop {
            match framer.next_frame() {
                Ok(Some(Frame::Stanza(stanza))) => {
                    stanzas += 1;
                    if stamp_from && stanza.name == "message" {
                        stamped += black_box(stanza.with_from(SENDER)).len();
                    } else {
                        black_box(&stanza);
                    }
                }
                Ok(Some(Frame::Whitespace)) => keepalives += 1,
                Ok(Some(frame)) => {
                    black_box(frame);
                }
                Ok(None) => break,
                Err(error) => panic!("the corpus is valid: {error}"),
            }
        }
    }
    (stanzas, keepalives, stamped)
}

fn framer(c: &mut Criterion) {
    let corpus = mixed_client_stream(STREAM_BYTES_MIN, 0x00c0_ffee);
    // Checked once, untimed: the framer must find exactly what was generated.
    let (stanzas, keepalives, _) = frame_stream(&corpus, true);
    assert_eq!((stanzas, keepalives), (corpus.stanzas, corpus.keepalives), "framer disagrees with the corpus");
    eprintln!(
        "corpus: {} bytes, {} stanzas ({} messages), {} keepalives, {:.0} bytes/stanza",
        corpus.bytes.len(),
        corpus.stanzas,
        corpus.messages,
        corpus.keepalives,
        corpus.bytes.len() as f64 / corpus.stanzas as f64
    );

    let units = [("framer_bytes", Throughput::Bytes(corpus.bytes.len() as u64)), ("framer_stanzas", Throughput::Elements(corpus.stanzas))];
    for (group_name, throughput) in units {
        let mut group = c.benchmark_group(group_name);
        group.throughput(throughput);
        group.bench_function("framer_mixed_stream_1MiB_chunk16KiB", |b| {
            b.iter_custom(|iters| cpu_timed(iters, || frame_stream(black_box(&corpus), false)))
        });
        group.bench_function("framer_mixed_stream_1MiB_chunk16KiB_with_from", |b| {
            b.iter_custom(|iters| cpu_timed(iters, || frame_stream(black_box(&corpus), true)))
        });
        // The floor under any framer: find every '<' and '>' of the same bytes with memchr.
        group.bench_function("baseline_memchr2_lt_gt_1MiB", |b| {
            b.iter_custom(|iters| cpu_timed(iters, || memchr::memchr2_iter(b'<', b'>', black_box(&corpus.bytes)).count()))
        });
        group.finish();
    }
}

criterion_group!(benches, framer);
criterion_main!(benches);
