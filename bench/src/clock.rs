//! CPU-time clocks for benchmarks on a shared machine.
//!
//! This box has two cores that other work also uses. Elapsed time of a single-threaded
//! benchmark then includes whatever time the thread spent preempted; the thread's own CPU
//! time (`CLOCK_THREAD_CPUTIME_ID`) does not, so the single-threaded benchmarks report it
//! through criterion's `iter_custom` ([`cpu_timed`]). It still includes what a noisy
//! neighbour costs in shared caches, and time the hypervisor steals from the virtual CPU.
//! This module does not decide which benchmarks use it; each bench file's `//!` says.

use std::hint::black_box;
use std::time::Duration;

/// CPU time the calling thread has used.
pub fn thread_cpu_time() -> Duration {
    clock_time(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// Runs `routine` `iterations` times and returns the CPU time the calling thread spent, for
/// criterion's `Bencher::iter_custom`.
pub fn cpu_timed<R>(iterations: u64, mut routine: impl FnMut() -> R) -> Duration {
    let start = thread_cpu_time();
    for _ in 0..iterations {
        black_box(routine());
    }
    thread_cpu_time().saturating_sub(start)
}

/// The calling thread's CPU-time clock, readable from other threads.
pub fn own_cpu_clock() -> libc::clockid_t {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `pthread_self` is always valid for the calling thread and `clock` is a valid
    // place to write the id.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
    assert_eq!(rc, 0, "pthread_getcpuclockid");
    clock
}

/// The current value of `clock`.
pub fn clock_time(clock: libc::clockid_t) -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec to write; an invalid clock is reported, not UB.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(clock, &mut now) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}
