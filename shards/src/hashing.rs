//! The password-hashing pool: every PBKDF2 derivation (a PLAIN login's check, the secrets of a
//! new account or a new password) runs here, on a few dedicated threads at idle scheduling
//! priority, behind a bounded queue.
//!
//! Why its own threads: a shard's event loop must never run PBKDF2 (milliseconds each), and
//! glommio's blocking pool is where the store commits; sharing it let a login storm queue
//! hundreds of hashes in front of a durable write. Here a storm fills this queue instead, and
//! past `HASH_QUEUE_JOBS_MAX` new requests are refused at once (`temporary-auth-failure`, a
//! busy admin API) rather than waiting without bound. The idle priority (`SCHED_IDLE`) gives
//! shard threads and store commits the CPU whenever they want it: under CPU pressure logins
//! wait (and past the queue bound are refused), sessions and durable writes do not
//! (`results/login-storm-2026-12-03`). This module knows nothing about SASL or accounts: it
//! runs closures.

use futures_channel::oneshot;

/// Hash jobs that may wait for a thread; past it `run` refuses. Each is one PBKDF2 (about a
/// millisecond at 4096 iterations), so a full queue is under a second of work per thread.
pub const HASH_QUEUE_JOBS_MAX: usize = 1024;

/// The niceness of hashing threads where `SCHED_IDLE` is refused (Linux: per thread): the
/// lowest priority short of idle.
pub const HASH_THREAD_NICE: i32 = 19;

type Job = Box<dyn FnOnce() + Send>;

/// A handle to the pool; cheap to clone, shared by shards and the HTTP runtime.
#[derive(Clone)]
pub struct HashPool {
    jobs: crossbeam_channel::Sender<Job>,
    threads: usize,
}

/// The queue is full: try again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("password hashing is saturated")]
pub struct Saturated;

impl HashPool {
    /// Starts `threads` hashing threads (at least one).
    pub fn start(threads: usize) -> std::io::Result<HashPool> {
        let threads = threads.max(1);
        let (jobs, queue) = crossbeam_channel::bounded::<Job>(HASH_QUEUE_JOBS_MAX);
        for n in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new().name(format!("hash-{n}")).spawn(move || {
                lower_priority();
                // Ends when every sender is gone (the process is stopping).
                while let Ok(job) = queue.recv() {
                    job();
                }
            })?;
        }
        Ok(HashPool { jobs, threads })
    }

    /// Queues `work`; the receiver resolves with its result. `Err(Saturated)` when the queue
    /// is full (nothing was queued).
    pub fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<oneshot::Receiver<T>, Saturated> {
        let (reply, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            // The asker may have gone (its connection closed); the result is then dropped.
            let _ = reply.send(work());
        });
        match self.jobs.try_send(job) {
            Ok(()) => Ok(result),
            Err(_) => Err(Saturated),
        }
    }

    /// Jobs waiting for a thread.
    pub fn queued(&self) -> usize {
        self.jobs.len()
    }

    pub fn threads(&self) -> usize {
        self.threads
    }
}

/// Lowers the calling thread's scheduling priority: `SCHED_IDLE` (Linux, per thread), so a
/// hashing thread runs only on CPU time no other thread of the machine wants; if that is
/// refused, niceness `HASH_THREAD_NICE`; if that is refused too, the default.
fn lower_priority() {
    #[allow(unsafe_code)]
    // SAFETY: the parameter is a valid, initialised `sched_param` that outlives the call;
    // gettid and setpriority take no pointers. A failure only leaves the priority as it was.
    let result = unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) == 0 {
            return;
        }
        let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, thread, HASH_THREAD_NICE)
    };
    if result != 0 {
        tracing::debug!("could not lower the hashing thread's priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_jobs_and_refuses_past_the_queue_bound() {
        let pool = HashPool::start(1).expect("start");
        let answer = pool.run(|| 6 * 7).expect("queued");
        assert_eq!(futures_lite::future::block_on(answer), Ok(42));
        // Hold the one thread, then fill the queue.
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let _held = pool.run(move || hold.recv()).expect("queued");
        while pool.queued() > 0 {
            std::thread::yield_now();
        }
        let mut waiting = Vec::new();
        for _ in 0..HASH_QUEUE_JOBS_MAX {
            waiting.push(pool.run(|| ()).expect("room in the queue"));
        }
        assert_eq!(pool.run(|| ()).err(), Some(Saturated));
        release.send(()).expect("release");
        for answer in waiting {
            assert_eq!(futures_lite::future::block_on(answer), Ok(()));
        }
    }
}
