//! The embedded durable store: one redb file per shard, written only through `Record`s.
//!
//! Each shard owns `shard-<k>.redb` in the data directory. A mutation is a `Record`
//! (confab-core's rkyv type): it is appended to the partition's log table and applied to the
//! state tables in the same ACID transaction, so the log is exactly the stream a peer node will
//! replay. Writes run on glommio's blocking thread pool, batched (group commit), never on the
//! shard's event loop. This module does not decide what to store; shards do.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use confab_core::archive::{self, ArchiveQuery, ArchivedMessage};
use confab_core::records::{Account, ItemKind, Record};
use futures_channel::oneshot;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

/// Accounts by local part: the rkyv bytes of `Account`.
const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
/// The record log: sequence number → rkyv bytes of `Record`.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// Per-user state beside the account: (user, `ItemKind` code, key) → value.
const ITEMS: TableDefinition<(&str, u8, &str), &[u8]> = TableDefinition::new("items");
/// Message archives (XEP-0313): (user, archive id) → rkyv bytes of `ArchivedMessage`.
const ARCHIVE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("archive");
/// Messages in each archive, kept with every append so the archive's bound costs one
/// removal, whatever the gaps between ids (each run's ids start above its floor,
/// `advance_id_floor`).
const ARCHIVE_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("archive-counts");

/// Records kept in each partition's log. Older ones are trimmed in the same transaction that
/// appends, so the log (kept for replication catch-up) has a fixed worst-case size.
pub const LOG_RECORDS_KEPT: u64 = 100_000;

/// Records written in one transaction at most; a batch waits for the previous commit.
pub const COMMIT_BATCH_RECORDS_MAX: usize = 1024;

/// Longest a committed archive append may wait for its sync (ms): archive appends alone are
/// committed without one, so a crash loses at most this much of the archive (never an offline
/// message, a roster change or an account: those always sync).
pub const ARCHIVE_SYNC_INTERVAL_MS: u64 = 200;

/// A batch of archive appends alone smaller than this waits `ARCHIVE_BATCH_WAIT_MS` for more
/// before it is committed.
pub const ARCHIVE_BATCH_RECORDS_MIN: usize = 64;
pub const ARCHIVE_BATCH_WAIT_MS: u64 = 2;

/// Millisecond polls `Partition::settled` makes before it gives up waiting.
const SETTLE_POLLS_MAX: usize = 2_000;

/// Records waiting for a commit beyond which the partition reports congestion: callers then
/// refuse work that needs a write (a `wait` error the sender retries) instead of queueing
/// without bound behind a slow disk.
pub const PENDING_RECORDS_MAX: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("store {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("store write failed: {0}")]
    Write(String),
    #[error("store read failed: {0}")]
    Read(String),
}

/// What to put back in memory when a change never became durable (a failed commit). A change
/// is decided in memory first and written after; if the write fails, memory must return to
/// what the store holds, or the two drift apart: the shard applies these in reverse order.
#[derive(Debug)]
pub enum Undo {
    /// A user's item as it was before the change (`None`: it did not exist).
    Item { user: String, kind: ItemKind, key: String, value: Option<Vec<u8>> },
    /// A message accepted for offline storage that was never stored: its sender is told.
    Offline { bytes: Vec<u8> },
    /// A room's persistent state as it was before the change.
    Room(Box<confab_core::muc::RoomSnapshot>),
}

/// A record waiting for the next group commit: whom to tell when it is durable, and what to
/// undo in memory if it never is (both on a submission's last record).
struct PendingRecord {
    record: Record,
    reply: Option<oneshot::Sender<Result<(), String>>>,
    undo: Vec<Undo>,
    /// When the submission this record ends was made (its last record only).
    submitted_at: Option<std::time::Instant>,
}

/// The largest commit latency recorded, in microseconds (a minute; larger ones count as it).
/// Latencies are kept per partition, submission to durable, three significant digits, and
/// read (and reset) by the admin API's `store_latency`.
const COMMIT_LATENCY_US_MAX: u64 = 60_000_000;

/// Who puts memory back when changes failed (the shard, which owns the memory).
type FailureHook = Box<dyn Fn(Vec<Undo>)>;

/// One stored item of a user's state, as read at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredItem {
    pub user: String,
    pub kind: ItemKind,
    pub key: String,
    pub value: Vec<u8>,
}

/// An opened partition with the accounts and user state read from it.
pub struct OpenedPartition {
    pub database: Arc<Database>,
    /// The file, for reopening after an I/O error.
    pub path: PathBuf,
    pub accounts: Vec<Account>,
    pub items: Vec<StoredItem>,
    /// The newest archive id of each account that has an archive (ids are never reused).
    pub archive_last: Vec<(String, u64)>,
    /// Each stored room's newest archive id and last messages (its history on join).
    pub room_archives: Vec<crate::muc::RoomArchive>,
}

/// One shard's partition, owned by that shard's thread.
///
/// Store faults: a commit that fails (disk full, an I/O error) fails its batch and every
/// record queued behind it — they were decided on top of it — and each submitter hears so;
/// memory is put back through the undo data (`Undo`, handed to the failure hook), so memory
/// and disk never stay apart. The partition then stops taking writes (`is_writable` is false:
/// callers refuse what needs one, and a submission fails at once) while a recovery loop
/// reopens the database (redb refuses every write after an I/O error until reopened) and
/// probes it with a real write, backing off from `RECOVERY_BACKOFF_MIN_MS` to
/// `RECOVERY_BACKOFF_MAX_MS`; when a probe succeeds, writes resume without a restart.
pub struct Partition {
    path: PathBuf,
    /// `None` only while the recovery loop reopens it.
    database: Rc<RefCell<Option<Arc<Database>>>>,
    pending: Rc<RefCell<std::collections::VecDeque<PendingRecord>>>,
    writer_running: Rc<Cell<bool>>,
    /// Records submitted so far, and settled (committed or failed) so far, in submission
    /// order.
    submitted: Cell<u64>,
    committed: Rc<Cell<u64>>,
    writable: Rc<Cell<bool>>,
    /// Undo data of failed submissions not yet handed to the hook, oldest first.
    undone: Rc<RefCell<Vec<Undo>>>,
    hook: Rc<RefCell<Option<FailureHook>>>,
    /// Submission-to-commit latencies since the last `take_latencies`.
    latencies: Rc<RefCell<hdrhistogram::Histogram<u64>>>,
}

/// First wait of the recovery loop after a failed commit, doubled after each failed probe up
/// to `RECOVERY_BACKOFF_MAX_MS`.
pub const RECOVERY_BACKOFF_MIN_MS: u64 = 100;
pub const RECOVERY_BACKOFF_MAX_MS: u64 = 5_000;

/// Bytes the recovery probe writes (and deletes): enough to need fresh pages, so a probe on a
/// full disk fails like a real write would.
const PROBE_BYTES: usize = 256 * 1024;

/// Milliseconds the recovery loop waits for readers to release the database before reopening.
const REOPEN_WAIT_MS_MAX: u64 = 5_000;

impl Partition {
    pub fn new(database: Arc<Database>, path: PathBuf) -> Partition {
        Partition {
            path,
            database: Rc::new(RefCell::new(Some(database))),
            pending: Rc::new(RefCell::new(std::collections::VecDeque::new())),
            writer_running: Rc::new(Cell::new(false)),
            submitted: Cell::new(0),
            committed: Rc::new(Cell::new(0)),
            writable: Rc::new(Cell::new(true)),
            undone: Rc::new(RefCell::new(Vec::new())),
            hook: Rc::new(RefCell::new(None)),
            latencies: Rc::new(RefCell::new(new_latency_histogram())),
        }
    }

    /// The commit latencies (µs, from submission to durable) recorded since the last call.
    pub fn take_latencies(&self) -> hdrhistogram::Histogram<u64> {
        std::mem::replace(&mut *self.latencies.borrow_mut(), new_latency_histogram())
    }

    /// Installs what puts memory back after failed changes (see `Undo`).
    pub fn on_failure(&self, hook: FailureHook) {
        *self.hook.borrow_mut() = Some(hook);
    }

    /// False while the store cannot write (after a failed commit, until a probe succeeds):
    /// callers refuse what needs a write instead of accepting it.
    pub fn is_writable(&self) -> bool {
        self.writable.get()
    }

    /// The database, unless it is being reopened.
    fn database(&self) -> Option<Arc<Database>> {
        self.database.borrow().clone()
    }

    /// Resolves once every record submitted before the call is settled (readable from the
    /// store, or failed): a reader of the disk, such as an archive query, sees what the shard
    /// wrote.
    pub async fn settled(&self) {
        // Only what was submitted before now: later writes do not hold the reader up.
        let target = self.submitted.get();
        for _ in 0..SETTLE_POLLS_MAX {
            if self.committed.get() >= target {
                return;
            }
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
        tracing::warn!("store did not settle; reading anyway");
    }

    /// True when `PENDING_RECORDS_MAX` records already wait: check before `submit` on paths
    /// fed by the network.
    pub fn is_congested(&self) -> bool {
        self.pending.borrow().len() >= PENDING_RECORDS_MAX
    }

    /// Queues `records` for the next group commit now (so writes keep the order of calls,
    /// even from code that cannot wait) and returns what resolves when the last is durable.
    /// `undo` puts memory back if they never are (the submission fails as a whole).
    pub fn submit(&self, records: Vec<Record>, undo: Vec<Undo>) -> oneshot::Receiver<Result<(), String>> {
        let (reply, done) = oneshot::channel();
        let count = records.len();
        if count == 0 {
            let _ = reply.send(Ok(()));
            return done;
        }
        if !self.writable.get() {
            // Nothing can be written now: fail at once, and put memory back (later, from a
            // task of its own: the caller may hold the shard).
            let _ = reply.send(Err("the store cannot write now".into()));
            self.undone.borrow_mut().extend(undo);
            self.schedule_undo();
            return done;
        }
        self.submitted.set(self.submitted.get() + count as u64);
        {
            let mut pending = self.pending.borrow_mut();
            let mut reply = Some(reply);
            let mut undo = Some(undo);
            for (n, record) in records.into_iter().enumerate() {
                let last = n + 1 == count;
                pending.push_back(PendingRecord {
                    record,
                    reply: if last { reply.take() } else { None },
                    undo: if last { undo.take().unwrap_or_default() } else { Vec::new() },
                    submitted_at: last.then(std::time::Instant::now),
                });
            }
        }
        if !self.writer_running.replace(true) {
            glommio::spawn_local(Writer::from(self).run()).detach();
        }
        done
    }

    /// Hands queued undo data to the hook from a task of its own.
    fn schedule_undo(&self) {
        let undone = self.undone.clone();
        let hook = self.hook.clone();
        glommio::spawn_local(async move { hand_back(&undone, &hook) }).detach();
    }
}

/// Gives the failed changes' undo data to the hook, newest first (so a key changed twice ends
/// as it was before the first change).
fn hand_back(undone: &RefCell<Vec<Undo>>, hook: &RefCell<Option<FailureHook>>) {
    let mut undo = std::mem::take(&mut *undone.borrow_mut());
    if undo.is_empty() {
        return;
    }
    undo.reverse();
    match hook.borrow().as_ref() {
        Some(hook) => hook(undo),
        None => tracing::error!(changes = undo.len(), "failed changes with nobody to put memory back"),
    }
}

/// The partition's writer task: group commits in submission order, and the recovery loop.
struct Writer {
    path: PathBuf,
    database: Rc<RefCell<Option<Arc<Database>>>>,
    pending: Rc<RefCell<std::collections::VecDeque<PendingRecord>>>,
    running: Rc<Cell<bool>>,
    committed: Rc<Cell<u64>>,
    writable: Rc<Cell<bool>>,
    undone: Rc<RefCell<Vec<Undo>>>,
    hook: Rc<RefCell<Option<FailureHook>>>,
    latencies: Rc<RefCell<hdrhistogram::Histogram<u64>>>,
}

impl From<&Partition> for Writer {
    fn from(partition: &Partition) -> Writer {
        Writer {
            path: partition.path.clone(),
            database: partition.database.clone(),
            pending: partition.pending.clone(),
            running: partition.writer_running.clone(),
            committed: partition.committed.clone(),
            writable: partition.writable.clone(),
            undone: partition.undone.clone(),
            hook: partition.hook.clone(),
            latencies: partition.latencies.clone(),
        }
    }
}

fn new_latency_histogram() -> hdrhistogram::Histogram<u64> {
    // Valid bounds (1 ≤ low, high ≥ 2 × low, 3 significant digits): creation cannot fail.
    hdrhistogram::Histogram::new_with_bounds(1, COMMIT_LATENCY_US_MAX, 3).unwrap_or_else(|_| unreachable!("valid histogram bounds"))
}

impl Writer {
    async fn run(self) {
        // Since when archive appends have been committed without a sync, if they have.
        let mut unsynced_since: Option<std::time::Instant> = None;
        loop {
            // A few archive appends alone wait a moment for company: a transaction costs far
            // more than a record, and nothing waits on these.
            let small_archive_batch = {
                let queue = self.pending.borrow();
                !queue.is_empty()
                    && queue.len() < ARCHIVE_BATCH_RECORDS_MIN
                    && queue.iter().all(|pending| matches!(pending.record, Record::ArchiveAppend { .. }))
            };
            if small_archive_batch {
                glommio::timer::sleep(std::time::Duration::from_millis(ARCHIVE_BATCH_WAIT_MS)).await;
            }
            let batch: Vec<PendingRecord> = {
                let mut queue = self.pending.borrow_mut();
                let take = batch_len(queue.iter().map(|pending| pending.reply.is_some()));
                queue.drain(..take).collect()
            };
            if batch.is_empty() {
                if let Some(since) = unsynced_since {
                    // Nothing else waits: sync what is outstanding once the interval is up,
                    // but keep taking new records meanwhile (a reader may wait on them).
                    let deadline = since + std::time::Duration::from_millis(ARCHIVE_SYNC_INTERVAL_MS);
                    if std::time::Instant::now() < deadline {
                        glommio::timer::sleep(std::time::Duration::from_millis(ARCHIVE_BATCH_WAIT_MS)).await;
                        continue;
                    }
                    let database = self.database.borrow().clone();
                    let synced = match database {
                        Some(database) => glommio::executor().spawn_blocking(move || commit_with(&database, &[], true)).await,
                        None => Err(StorageError::Write("store unavailable".into())),
                    };
                    unsynced_since = None;
                    if let Err(error) = synced {
                        // The unsynced appends may be lost to a crash; nothing was acknowledged
                        // on them. The store is suspect: what was submitted meanwhile fails
                        // (nobody may wait through the recovery), then it recovers.
                        tracing::error!(%error, "store sync failed");
                        self.writable.set(false);
                        let queued: Vec<PendingRecord> = self.pending.borrow_mut().drain(..).collect();
                        self.fail(queued, &error.to_string());
                        self.recover().await;
                    }
                    continue;
                }
                self.running.set(false);
                break;
            }
            // Archive appends alone are committed without a sync (nothing waits on them, and
            // most batches under chat load are only those); anything else, or an unsynced
            // stretch older than the interval, syncs the lot.
            let only_archive = batch.iter().all(|pending| matches!(pending.record, Record::ArchiveAppend { .. }));
            let overdue = unsynced_since.is_some_and(|since| since.elapsed().as_millis() >= u128::from(ARCHIVE_SYNC_INTERVAL_MS));
            let sync = !only_archive || overdue;
            let records: Vec<Record> = batch.iter().map(|pending| pending.record.clone()).collect();
            let database = self.database.borrow().clone();
            let result = match database {
                Some(database) => {
                    glommio::executor().spawn_blocking(move || commit_with(&database, &records, sync).map_err(|e| e.to_string())).await
                }
                None => Err("store unavailable".to_owned()),
            };
            match result {
                Ok(()) => {
                    self.committed.set(self.committed.get() + batch.len() as u64);
                    unsynced_since = match (sync, unsynced_since) {
                        (true, _) => None,
                        (false, None) => Some(std::time::Instant::now()),
                        (false, since) => since,
                    };
                    let mut latencies = self.latencies.borrow_mut();
                    for pending in batch {
                        if let Some(submitted) = pending.submitted_at {
                            let micros = u64::try_from(submitted.elapsed().as_micros()).unwrap_or(u64::MAX);
                            latencies.saturating_record(micros.clamp(1, COMMIT_LATENCY_US_MAX));
                        }
                        if let Some(reply) = pending.reply {
                            let _ = reply.send(Ok(()));
                        }
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "store write failed; the changes are undone and writes refused until the store recovers");
                    self.writable.set(false);
                    // Everything queued behind the batch was decided on top of it: it fails too.
                    let mut failed = batch;
                    failed.extend(self.pending.borrow_mut().drain(..));
                    self.fail(failed, &error);
                    unsynced_since = None;
                    self.recover().await;
                }
            }
        }
    }

    /// Fails `records` (settled, their waiters told) and puts memory back at once: no await
    /// since the failure, so nothing was decided on top of it meanwhile.
    fn fail(&self, records: Vec<PendingRecord>, error: &str) {
        self.committed.set(self.committed.get() + records.len() as u64);
        for pending in records {
            if let Some(reply) = pending.reply {
                let _ = reply.send(Err(error.to_owned()));
            }
            self.undone.borrow_mut().extend(pending.undo);
        }
        hand_back(&self.undone, &self.hook);
    }

    /// Reopens the database and probes it with a real write until one succeeds, backing off;
    /// then writes are taken again.
    async fn recover(&self) {
        let mut backoff = RECOVERY_BACKOFF_MIN_MS;
        loop {
            glommio::timer::sleep(std::time::Duration::from_millis(backoff)).await;
            backoff = (backoff * 2).min(RECOVERY_BACKOFF_MAX_MS);
            // redb refuses every write after an I/O error until the database is reopened, and
            // a reopen needs the last reader gone.
            let old = self.database.borrow_mut().take();
            if let Some(old) = old {
                let mut waited = 0;
                while Arc::strong_count(&old) > 1 && waited < REOPEN_WAIT_MS_MAX {
                    glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                    waited += 1;
                }
                if Arc::strong_count(&old) > 1 {
                    *self.database.borrow_mut() = Some(old);
                    continue;
                }
                // Dropping a redb database writes: off the shard's thread.
                glommio::executor().spawn_blocking(move || drop(old)).await;
            }
            let path = self.path.clone();
            let reopened = glommio::executor()
                .spawn_blocking(move || open_database(&path).and_then(|database| probe(&database).map(|_| database)))
                .await;
            match reopened {
                Ok(database) => {
                    *self.database.borrow_mut() = Some(Arc::new(database));
                    // Changes refused while down are put back before any new one is taken,
                    // so no later change to the same key can be overwritten by an old undo.
                    hand_back(&self.undone, &self.hook);
                    self.writable.set(true);
                    tracing::warn!(path = %self.path.display(), "store writable again");
                    return;
                }
                Err(error) => tracing::warn!(%error, next_try_ms = backoff, "store still cannot write"),
            }
        }
    }
}

/// How many of the queued records the next transaction takes: up to
/// `COMMIT_BATCH_RECORDS_MAX`, and whole submissions only (`ends` says, per queued record,
/// whether it ends its submission): a submission split over two transactions could commit by
/// half, and its undo would then put back what is stored.
fn batch_len(ends: impl Iterator<Item = bool>) -> usize {
    let mut take = 0;
    for (n, end) in ends.enumerate() {
        if end {
            take = n + 1;
            if take >= COMMIT_BATCH_RECORDS_MAX {
                break;
            }
        }
    }
    take
}

/// A real write (and its removal), synced: succeeds only where a change would.
fn probe(database: &Database) -> Result<(), StorageError> {
    const PROBE: TableDefinition<&str, &[u8]> = TableDefinition::new("probe");
    let write = |e: &dyn std::fmt::Display| StorageError::Write(e.to_string());
    let filler = vec![0x5a; PROBE_BYTES];
    for value in [Some(filler.as_slice()), None] {
        let txn = database.begin_write().map_err(|e| write(&e))?;
        {
            let mut table = txn.open_table(PROBE).map_err(|e| write(&e))?;
            match value {
                Some(value) => table.insert("probe", value).map(|_| ()).map_err(|e| write(&e))?,
                None => table.remove("probe").map(|_| ()).map_err(|e| write(&e))?,
            }
        }
        txn.commit().map_err(|e| write(&e))?;
    }
    Ok(())
}

/// The file that keeps the archive id floor (`advance_id_floor`).
const ID_FLOOR_FILE: &str = "id-floor";

/// Moves the archive id floor `ID_FLOOR_STEP` past the previous run's (or to the clock in
/// microseconds, if that is higher, so ids stay roughly time-like), keeps it durably, and
/// returns it. Every owner's archive ids (and stanza-ids) this run count up from at least the
/// floor, and no owner gets `ID_FLOOR_STEP` ids in one run, so they exceed every id of earlier
/// runs — even ids a crash lost from the store before their commit — whatever the clock did.
/// Runs at start-up, before any shard serves.
pub fn advance_id_floor(data_dir: &Path, now_ms: u64) -> Result<u64, StorageError> {
    use std::io::Write as _;
    let path = data_dir.join(ID_FLOOR_FILE);
    let error = |e: std::io::Error| StorageError::Open { path: path.clone(), message: e.to_string() };
    let stored = std::fs::read_to_string(&path).ok().and_then(|text| text.trim().parse::<u64>().ok()).unwrap_or(0);
    let floor = now_ms.saturating_mul(1000).max(stored.saturating_add(ID_FLOOR_STEP));
    let staged = data_dir.join(format!("{ID_FLOOR_FILE}.new"));
    let mut file = std::fs::File::create(&staged).map_err(error)?;
    file.write_all(floor.to_string().as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)?;
    std::fs::rename(&staged, &path).map_err(error)?;
    std::fs::File::open(data_dir).and_then(|dir| dir.sync_all()).map_err(error)?;
    Ok(floor)
}

/// How far each start moves the id floor above the previous one at least: more ids than one
/// owner can get in a run (2^40: a million a second for twelve days), and 2^24 starts before
/// ids run out.
pub const ID_FLOOR_STEP: u64 = 1 << 40;

/// Opens (creating if needed) the partitions for `shards` shards, moving accounts whose home
/// shard changed since the last start (a different `shards` setting), and returns each
/// partition's database with its accounts loaded. Runs at start-up, before any shard serves.
pub fn open_partitions(data_dir: &Path, shards: usize, home: impl Fn(&str) -> usize) -> Result<Vec<OpenedPartition>, StorageError> {
    std::fs::create_dir_all(data_dir).map_err(|e| StorageError::Open { path: data_dir.into(), message: e.to_string() })?;
    let mut databases = Vec::with_capacity(shards);
    for k in 0..shards {
        databases.push(open_database(&partition_path(data_dir, k))?);
    }
    // Partitions beyond the configured count (the count went down) are drained, then removed.
    let mut extra = Vec::new();
    let mut k = shards;
    while partition_path(data_dir, k).exists() {
        extra.push((partition_path(data_dir, k), open_database(&partition_path(data_dir, k))?));
        k += 1;
    }
    let mut loaded: Vec<Vec<Account>> = vec![Vec::new(); shards];
    // (index into databases, or shards + index into extra; the account).
    let mut moves: Vec<(usize, Account)> = Vec::new();
    for (k, database) in databases.iter().enumerate() {
        for account in read_accounts(database)? {
            let target = home(&account.user);
            if target == k {
                loaded[k].push(account);
            } else {
                moves.push((k, account));
            }
        }
    }
    for (i, (_, database)) in extra.iter().enumerate() {
        for account in read_accounts(database)? {
            moves.push((shards + i, account));
        }
    }
    for (source, account) in moves {
        let target = home(&account.user);
        let from = if source < shards { databases.get(source) } else { extra.get(source - shards).map(|(_, d)| d) };
        // The account's state and archive travel with it, in the same order: copy, then
        // delete at the source, so a crash in between leaves a duplicate, never a loss.
        let mut copy = vec![Record::AccountPut(account.clone())];
        let mut archive = Vec::new();
        if let Some(from) = from {
            copy.extend(read_user_items(from, &account.user)?.into_iter().map(|item| Record::ItemPut {
                user: item.user,
                kind: item.kind,
                key: item.key,
                value: item.value,
            }));
            archive = read_archive(from, &account.user, 0, u64::MAX, usize::MAX, false)?;
        }
        commit(&databases[target], &copy)?;
        copy_archive(&databases[target], &account.user, &archive)?;
        if source < shards {
            commit(&databases[source], &[Record::AccountDelete { user: account.user.clone() }])?;
        }
        tracing::info!(user = %account.user, from = source, to = target, "moved account to its new home shard");
        loaded[target].push(account);
    }
    // Rooms (owners named by a bare JID) move the same way: items and archive, copy first.
    // Finding them reads every partition's items, so it is done only when the partitioning
    // may have changed since the last start that finished opening (the count it recorded).
    let layout_file = data_dir.join("shard-count");
    let recorded = std::fs::read_to_string(&layout_file).ok().and_then(|text| text.trim().parse::<usize>().ok());
    let layout_changed = recorded != Some(shards) || !extra.is_empty();
    let room_sources: Vec<(usize, &Database)> =
        databases.iter().enumerate().chain(extra.iter().enumerate().map(|(i, (_, d))| (shards + i, d))).collect();
    let mut room_moves = Vec::new();
    for (k, database) in room_sources.iter().filter(|_| layout_changed) {
        let rooms: std::collections::BTreeSet<String> =
            read_items(database)?.into_iter().map(|i| i.user).filter(|u| u.contains('@')).collect();
        for room in rooms {
            if home(&room) != *k {
                room_moves.push((*k, room));
            }
        }
    }
    for (source, room) in room_moves {
        let target = home(&room);
        let from = room_sources.iter().find(|(k, _)| *k == source).map(|(_, d)| *d);
        let Some(from) = from else { continue };
        let copy: Vec<Record> = read_user_items(from, &room)?
            .into_iter()
            .map(|item| Record::ItemPut { user: item.user, kind: item.kind, key: item.key, value: item.value })
            .collect();
        let archive = read_archive(from, &room, 0, u64::MAX, usize::MAX, false)?;
        commit(&databases[target], &copy)?;
        copy_archive(&databases[target], &room, &archive)?;
        if source < shards {
            commit(&databases[source], &[Record::AccountDelete { user: room.clone() }])?;
        }
        tracing::info!(%room, from = source, to = target, "moved room to its new home shard");
    }
    for (path, database) in extra {
        drop(database);
        std::fs::remove_file(&path).map_err(|e| StorageError::Open { path: path.clone(), message: e.to_string() })?;
    }
    let mut opened = Vec::with_capacity(shards);
    for (k, (database, accounts)) in databases.into_iter().zip(loaded).enumerate() {
        let items = read_items(&database)?;
        let mut archive_last = Vec::new();
        for account in &accounts {
            if let Some((id, _)) = read_archive(&database, &account.user, 0, u64::MAX, 1, true)?.pop() {
                archive_last.push((account.user.clone(), id));
            }
        }
        let rooms: std::collections::BTreeSet<&str> =
            items.iter().filter(|i| i.kind == ItemKind::RoomConfig).map(|i| i.user.as_str()).collect();
        let mut room_archives = Vec::new();
        for room in rooms {
            // Newest first from the store; history wants oldest first.
            let mut recent = Vec::new();
            let mut last = 0;
            for (id, bytes) in read_archive(&database, room, 0, u64::MAX, confab_core::muc::HISTORY_MAX as usize, true)? {
                last = last.max(id);
                match confab_core::archive::ArchivedMessage::decode(&bytes) {
                    Ok(message) => recent.push(message),
                    Err(error) => tracing::error!(%room, id, %error, "unreadable archived room message skipped"),
                }
            }
            recent.reverse();
            room_archives.push(crate::muc::RoomArchive { room: room.to_owned(), last, recent });
        }
        opened.push(OpenedPartition {
            database: Arc::new(database),
            path: partition_path(data_dir, k),
            accounts,
            items,
            archive_last,
            room_archives,
        });
    }
    std::fs::write(&layout_file, shards.to_string())
        .map_err(|e| StorageError::Open { path: layout_file.clone(), message: e.to_string() })?;
    Ok(opened)
}

fn read_items(database: &Database) -> Result<Vec<StoredItem>, StorageError> {
    let read = |e: &dyn std::fmt::Display| StorageError::Read(e.to_string());
    let txn = database.begin_read().map_err(|e| read(&e))?;
    let table = txn.open_table(ITEMS).map_err(|e| read(&e))?;
    let mut items = Vec::new();
    for entry in table.iter().map_err(|e| read(&e))? {
        let (key, value) = entry.map_err(|e| read(&e))?;
        let (user, code, item_key) = key.value();
        match ItemKind::from_code(code) {
            Some(kind) => items.push(StoredItem { user: user.to_owned(), kind, key: item_key.to_owned(), value: value.value().to_vec() }),
            None => tracing::error!(user, code, "stored item of an unknown kind left in place"),
        }
    }
    Ok(items)
}

/// One user's items: a range of the table, not a scan of it.
fn read_user_items(database: &Database, user: &str) -> Result<Vec<StoredItem>, StorageError> {
    let read = |e: &dyn std::fmt::Display| StorageError::Read(e.to_string());
    let txn = database.begin_read().map_err(|e| read(&e))?;
    let table = txn.open_table(ITEMS).map_err(|e| read(&e))?;
    let mut items = Vec::new();
    for entry in table.range((user, 0u8, "")..=(user, u8::MAX, "\u{10ffff}")).map_err(|e| read(&e))? {
        let (key, value) = entry.map_err(|e| read(&e))?;
        let (_, code, item_key) = key.value();
        if let Some(kind) = ItemKind::from_code(code) {
            items.push(StoredItem { user: user.to_owned(), kind, key: item_key.to_owned(), value: value.value().to_vec() });
        }
    }
    Ok(items)
}

fn copy_archive(database: &Database, user: &str, messages: &[(u64, Vec<u8>)]) -> Result<(), StorageError> {
    let write = |e: &dyn std::fmt::Display| StorageError::Write(e.to_string());
    let txn = database.begin_write().map_err(|e| write(&e))?;
    {
        let mut archive = txn.open_table(ARCHIVE).map_err(|e| write(&e))?;
        for (id, bytes) in messages {
            archive.insert((user, *id), bytes.as_slice()).map_err(|e| write(&e))?;
        }
        let count = archive.range((user, 0u64)..=(user, u64::MAX)).map_err(|e| write(&e))?.count() as u64;
        txn.open_table(ARCHIVE_COUNTS).map_err(|e| write(&e))?.insert(user, count).map_err(|e| write(&e))?;
    }
    txn.commit().map_err(|e| write(&e))
}

/// One row of the archive table as redb hands it out.
type ArchiveEntry<'a> = (redb::AccessGuard<'a, (&'static str, u64)>, redb::AccessGuard<'a, &'static [u8]>);

/// One page of a XEP-0313 query, read from the store (owned: it crosses from the blocking
/// pool to the shard).
#[derive(Debug, Default)]
pub struct ArchivePage {
    /// In the order to send: chronological, or newest first when flipped.
    pub items: Vec<ArchivedMessage>,
    pub complete: bool,
    pub count: usize,
    pub first_index: Option<usize>,
}

impl Partition {
    /// Answers a XEP-0313 query (with XEP-0059 paging) by walking the user's archive by id from
    /// the page's edge: memory holds at most one page, whatever the archive's size, and only
    /// content filters (`with`, `start`, `end`) need a pass over the whole id range to count.
    /// `Ok(Err(condition))` is the stanza error for the client (an RSM or id that does not
    /// exist: item-not-found, XEP-0313 §4.3.2).
    pub async fn archive_page(&self, user: &str, query: ArchiveQuery) -> Result<Result<ArchivePage, &'static str>, StorageError> {
        // The archive as the shard last wrote it: appends still queued or committing first.
        self.settled().await;
        let Some(database) = self.database() else { return Err(StorageError::Read("store unavailable".into())) };
        let user = user.to_owned();
        glommio::executor().spawn_blocking(move || query_archive(&database, &user, &query)).await
    }
}

fn query_archive(database: &Database, user: &str, query: &ArchiveQuery) -> Result<Result<ArchivePage, &'static str>, StorageError> {
    let read = |e: &dyn std::fmt::Display| StorageError::Read(e.to_string());
    let txn = database.begin_read().map_err(|e| read(&e))?;
    let table = txn.open_table(ARCHIVE).map_err(|e| read(&e))?;
    let named = query.after_id.iter().chain(&query.before_id).chain(&query.ids).chain(&query.after).chain(query.before.iter().flatten());
    for &id in named {
        if table.get((user, id)).map_err(|e| read(&e))?.is_none() {
            return Ok(Err("item-not-found"));
        }
    }
    // after-id and before-id are exclusive bounds (§4.1.3).
    let low = query.after_id.map_or(0, |id| id.saturating_add(1));
    let high = match query.before_id {
        Some(0) => return Ok(Ok(ArchivePage { complete: true, ..ArchivePage::default() })),
        Some(id) => id - 1,
        None => u64::MAX,
    };
    if low > high {
        return Ok(Ok(ArchivePage { complete: true, ..ArchivePage::default() }));
    }
    let ids: Option<std::collections::BTreeSet<u64>> =
        (!query.ids.is_empty()).then(|| query.ids.iter().copied().filter(|id| (low..=high).contains(id)).collect());
    let content = archive::has_content_filters(query);
    let wanted = |id: u64| ids.as_ref().is_none_or(|ids| ids.contains(&id));
    let decode = |bytes: &[u8]| ArchivedMessage::decode(bytes).map_err(|e| StorageError::Read(format!("archived message: {e}")));

    // The page: up to `max` matches walking from the paging edge, plus whether one more exists.
    let (from, to, descending) = match (query.after, query.before) {
        (Some(after), _) => (low.max(after.saturating_add(1)), high, false),
        (None, Some(Some(before))) => (low, high.min(before.saturating_sub(1)), true),
        (None, Some(None)) => (low, high, true),
        (None, None) => (low, high, false),
    };
    let mut items = Vec::new();
    let mut more = false;
    let empty_before = matches!(query.before, Some(Some(0)));
    if from <= to && !empty_before {
        let range = table.range((user, from)..=(user, to)).map_err(|e| read(&e))?;
        let mut visit = |entry: Result<ArchiveEntry<'_>, redb::StorageError>| -> Result<bool, StorageError> {
            let (key, value) = entry.map_err(|e| read(&e))?;
            let id = key.value().1;
            if !wanted(id) {
                return Ok(true);
            }
            if items.len() == query.max {
                // One more match beyond the page: only a content filter needs the message.
                if !content || archive::matches_content_filters(query, &decode(value.value())?) {
                    more = true;
                    return Ok(false);
                }
                return Ok(true);
            }
            let message = decode(value.value())?;
            if !content || archive::matches_content_filters(query, &message) {
                items.push(message);
            }
            Ok(true)
        };
        if descending {
            for entry in range.rev() {
                if !visit(entry)? {
                    break;
                }
            }
        } else {
            for entry in range {
                if !visit(entry)? {
                    break;
                }
            }
        }
    }
    if descending {
        items.reverse();
    }

    // <count/> and <first index/> (XEP-0059 §2.6): from keys alone unless content filters apply.
    let first_id = items.first().map(|m| m.id);
    let (count, before_first) = if content {
        let mut count = 0;
        let mut before_first = 0;
        for entry in table.range((user, low)..=(user, high)).map_err(|e| read(&e))? {
            let (key, value) = entry.map_err(|e| read(&e))?;
            let id = key.value().1;
            if wanted(id) && archive::matches_content_filters(query, &decode(value.value())?) {
                count += 1;
                if first_id.is_some_and(|first| id < first) {
                    before_first += 1;
                }
            }
        }
        (count, before_first)
    } else if let Some(ids) = &ids {
        (ids.len(), first_id.map_or(0, |first| ids.range(..first).count()))
    } else {
        let count = table.range((user, low)..=(user, high)).map_err(|e| read(&e))?.count();
        let before_first = match first_id {
            Some(first) if first > low => table.range((user, low)..=(user, first - 1)).map_err(|e| read(&e))?.count(),
            _ => 0,
        };
        (count, before_first)
    };
    let complete = !more;
    if query.flip {
        items.reverse();
    }
    let first_index = first_id.map(|_| before_first);
    Ok(Ok(ArchivePage { items, complete, count, first_index }))
}

fn read_archive(
    database: &Database,
    user: &str,
    first: u64,
    last: u64,
    limit: usize,
    newest_first: bool,
) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
    let read = |e: &dyn std::fmt::Display| StorageError::Read(e.to_string());
    if first > last {
        return Ok(Vec::new());
    }
    let txn = database.begin_read().map_err(|e| read(&e))?;
    let table = txn.open_table(ARCHIVE).map_err(|e| read(&e))?;
    let range = table.range((user, first)..=(user, last)).map_err(|e| read(&e))?;
    let mut out = Vec::new();
    let mut push = |entry: Result<ArchiveEntry<'_>, redb::StorageError>| -> Result<bool, StorageError> {
        let (key, value) = entry.map_err(|e| read(&e))?;
        out.push((key.value().1, value.value().to_vec()));
        Ok(out.len() < limit)
    };
    if newest_first {
        for entry in range.rev() {
            if !push(entry)? {
                break;
            }
        }
        out.reverse();
    } else {
        for entry in range {
            if !push(entry)? {
                break;
            }
        }
    }
    Ok(out)
}

fn partition_path(data_dir: &Path, shard: usize) -> PathBuf {
    data_dir.join(format!("shard-{shard}.redb"))
}

fn open_database(path: &Path) -> Result<Database, StorageError> {
    let database = Database::create(path).map_err(|e| StorageError::Open { path: path.into(), message: e.to_string() })?;
    // Make sure the tables exist so readers never see "table does not exist".
    let txn = database.begin_write().map_err(|e| StorageError::Open { path: path.into(), message: e.to_string() })?;
    {
        txn.open_table(ACCOUNTS).map_err(|e| StorageError::Open { path: path.into(), message: e.to_string() })?;
        txn.open_table(LOG).map_err(|e| StorageError::Open { path: path.into(), message: e.to_string() })?;
        txn.open_table(ITEMS).map_err(|e| StorageError::Open { path: path.into(), message: e.to_string() })?;
        txn.open_table(ARCHIVE).map_err(|e| StorageError::Open { path: path.into(), message: e.to_string() })?;
        txn.open_table(ARCHIVE_COUNTS).map_err(|e| StorageError::Open { path: path.into(), message: e.to_string() })?;
    }
    txn.commit().map_err(|e| StorageError::Open { path: path.into(), message: e.to_string() })?;
    Ok(database)
}

fn read_accounts(database: &Database) -> Result<Vec<Account>, StorageError> {
    let read = |e: &dyn std::fmt::Display| StorageError::Read(e.to_string());
    let txn = database.begin_read().map_err(|e| read(&e))?;
    let table = txn.open_table(ACCOUNTS).map_err(|e| read(&e))?;
    let mut accounts = Vec::with_capacity(table.len().map_err(|e| read(&e))? as usize);
    for entry in table.iter().map_err(|e| read(&e))? {
        let (key, value) = entry.map_err(|e| read(&e))?;
        match Account::decode(value.value()) {
            Ok(account) => accounts.push(account),
            // A record we cannot read is reported and skipped, never silently overwritten:
            // it stays in the file for an operator to inspect.
            Err(error) => tracing::error!(user = key.value(), %error, "unreadable account record left in place"),
        }
    }
    Ok(accounts)
}

/// Appends `records` to the log and applies them, in one durable transaction.
fn commit(database: &Database, records: &[Record]) -> Result<(), StorageError> {
    commit_with(database, records, true)
}

/// As `commit`; without `sync` the transaction is atomic and ordered but only reaches the
/// disk with the next synced one (redb `Durability::None`).
fn commit_with(database: &Database, records: &[Record], sync: bool) -> Result<(), StorageError> {
    let write = |e: &dyn std::fmt::Display| StorageError::Write(e.to_string());
    let mut txn = database.begin_write().map_err(|e| write(&e))?;
    if !sync {
        txn.set_durability(redb::Durability::None);
    }
    {
        let mut log = txn.open_table(LOG).map_err(|e| write(&e))?;
        let mut accounts = txn.open_table(ACCOUNTS).map_err(|e| write(&e))?;
        let mut items = txn.open_table(ITEMS).map_err(|e| write(&e))?;
        let mut archive = txn.open_table(ARCHIVE).map_err(|e| write(&e))?;
        let mut counts = txn.open_table(ARCHIVE_COUNTS).map_err(|e| write(&e))?;
        let first = match log.last().map_err(|e| write(&e))? {
            Some((seq, _)) => seq.value() + 1,
            None => 1,
        };
        for (next, record) in (first..).zip(records) {
            log.insert(next, record.encode().as_slice()).map_err(|e| write(&e))?;
            if next > LOG_RECORDS_KEPT {
                log.remove(next - LOG_RECORDS_KEPT).map_err(|e| write(&e))?;
            }
            match record {
                Record::AccountPut(account) => {
                    accounts.insert(account.user.as_str(), account.encode().as_slice()).map_err(|e| write(&e))?;
                }
                Record::AccountDelete { user } => {
                    accounts.remove(user.as_str()).map_err(|e| write(&e))?;
                    // Everything stored for the account goes with it.
                    let user = user.as_str();
                    items.retain_in((user, 0u8, "")..=(user, u8::MAX, "\u{10ffff}"), |_, _| false).map_err(|e| write(&e))?;
                    archive.retain_in((user, 0u64)..=(user, u64::MAX), |_, _| false).map_err(|e| write(&e))?;
                    counts.remove(user).map_err(|e| write(&e))?;
                }
                Record::ItemPut { user, kind, key, value } => {
                    items.insert((user.as_str(), kind.code(), key.as_str()), value.as_slice()).map_err(|e| write(&e))?;
                }
                Record::ItemDelete { user, kind, key } => {
                    items.remove((user.as_str(), kind.code(), key.as_str())).map_err(|e| write(&e))?;
                }
                Record::ArchiveAppend { user, id, kept, message } => {
                    let user = user.as_str();
                    let known = counts.get(user).map_err(|e| write(&e))?.map(|count| count.value());
                    let replaced = archive.insert((user, *id), message.as_slice()).map_err(|e| write(&e))?.is_some();
                    // An archive from before the counts were kept is counted once.
                    let mut count = match known {
                        Some(count) => count + u64::from(!replaced),
                        None => archive.range((user, 0u64)..=(user, u64::MAX)).map_err(|e| write(&e))?.count() as u64,
                    };
                    // The bound: the oldest messages go (usually one).
                    while count > *kept {
                        let oldest = archive
                            .range((user, 0u64)..=(user, u64::MAX))
                            .map_err(|e| write(&e))?
                            .next()
                            .transpose()
                            .map_err(|e| write(&e))?
                            .map(|(key, _)| key.value().1);
                        let Some(oldest) = oldest else { break };
                        archive.remove((user, oldest)).map_err(|e| write(&e))?;
                        count -= 1;
                    }
                    counts.insert(user, count).map_err(|e| write(&e))?;
                }
            }
        }
    }
    txn.commit().map_err(|e| write(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_core::records::StoredCredentials;

    fn account(user: &str) -> Account {
        let creds = StoredCredentials { salt: vec![1], iterations: 4096, stored_key: vec![2], server_key: vec![3] };
        Account { user: user.into(), sha1: creds.clone(), sha256: creds, created_ms: 1 }
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("confab-storage-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// The store walks the archive by id; `archive::select` is the specification over the
    /// whole archive in memory. Both must give the same page for every query.
    #[test]
    fn archive_pages_match_the_in_memory_specification() {
        let dir = scratch_dir("archive-pages");
        let partitions = open_partitions(&dir, 1, |_| 0).expect("open");
        let database = &partitions[0].database;
        let mut all = Vec::new();
        for id in 1..=30u64 {
            let with = if id % 3 == 0 { "carol@x" } else { "bob@x" };
            let bytes = format!("<message xmlns='jabber:client' to='{with}'><body>{id}</body></message>").into_bytes();
            let message = ArchivedMessage { id, stamp_ms: 1_000 * id, with: with.into(), bytes };
            commit(database, &[Record::ArchiveAppend { user: "a".into(), id, kept: 100, message: message.encode() }]).expect("append");
            all.push(message);
        }
        let base = ArchiveQuery::default();
        let mut queries = Vec::new();
        for max in [0usize, 1, 5, 50] {
            for (after, before) in
                [(None, None), (Some(7), None), (None, Some(None)), (None, Some(Some(20))), (Some(30), None), (None, Some(Some(1)))]
            {
                for filter in 0..5 {
                    let mut query = ArchiveQuery { max, after, before, ..base.clone() };
                    match filter {
                        1 => query.with = Some("carol@x".into()),
                        2 => (query.start_ms, query.end_ms) = (Some(5_000), Some(25_000)),
                        3 => query.ids = vec![2, 9, 12, 27],
                        4 => (query.after_id, query.before_id, query.flip) = (Some(3), Some(25), true),
                        _ => {}
                    }
                    queries.push(query);
                }
            }
        }
        queries.push(ArchiveQuery { after: Some(999), ..base.clone() });
        for query in queries {
            let stored = query_archive(database, "a", &query).expect("read");
            let expected = archive::select(&all, &query);
            match (stored, expected) {
                (Ok(page), Ok(spec)) => {
                    let ids: Vec<u64> = page.items.iter().map(|m| m.id).collect();
                    let spec_ids: Vec<u64> = spec.items.iter().map(|m| m.id).collect();
                    assert_eq!(ids, spec_ids, "{query:?}");
                    assert_eq!((page.complete, page.count, page.first_index), (spec.complete, spec.count, spec.first_index), "{query:?}");
                }
                (Err(condition), Err(spec)) => assert_eq!(condition, spec, "{query:?}"),
                (stored, spec) => panic!("{query:?}: store {stored:?}, specification {:?}", spec.map(|p| p.count)),
            }
        }
        drop(partitions);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unsynced_archive_appends_reach_the_disk_with_the_next_synced_commit() {
        let dir = scratch_dir("unsynced");
        let partitions = open_partitions(&dir, 1, |_| 0).expect("open");
        let database = partitions[0].database.clone();
        let append = Record::ArchiveAppend { user: "a".into(), id: 1, kept: 10, message: vec![1] };
        commit_with(&database, &[append], false).expect("unsynced commit");
        // Readable at once (ordered and atomic), durable once a synced commit follows.
        assert_eq!(read_archive(&database, "a", 0, u64::MAX, 10, false).expect("read").len(), 1);
        commit_with(&database, &[], true).expect("sync");
        drop(partitions);
        drop(database);
        let partitions = open_partitions(&dir, 1, |_| 0).expect("reopen");
        assert_eq!(read_archive(&partitions[0].database, "a", 0, u64::MAX, 10, false).expect("read"), vec![(1, vec![1])]);
        drop(partitions);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn archive_is_bounded_and_reads_from_either_end() {
        let dir = scratch_dir("archive");
        let partitions = open_partitions(&dir, 1, |_| 0).expect("open");
        let database = &partitions[0].database;
        for id in 1..=8u64 {
            commit(database, &[Record::ArchiveAppend { user: "a".into(), id, kept: 5, message: vec![id as u8] }]).expect("append");
        }
        let all = read_archive(database, "a", 0, u64::MAX, 100, false).expect("read");
        assert_eq!(all.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [4, 5, 6, 7, 8], "only the newest `kept` remain");
        let newest = read_archive(database, "a", 0, u64::MAX, 2, true).expect("read");
        assert_eq!(newest.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [7, 8]);
        let oldest = read_archive(database, "a", 5, 7, 2, false).expect("read");
        assert_eq!(oldest.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [5, 6]);
        assert!(read_archive(database, "b", 0, u64::MAX, 100, false).expect("read").is_empty());
        drop(partitions);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_batch_never_splits_a_submission() {
        let ends = |pattern: &[bool]| batch_len(pattern.iter().copied());
        assert_eq!(ends(&[]), 0);
        assert_eq!(ends(&[false, true, true]), 3);
        // A submission straddling the bound goes whole into the batch.
        let mut straddling = vec![true; COMMIT_BATCH_RECORDS_MAX - 1];
        straddling.extend([false, false, true, true]);
        assert_eq!(ends(&straddling), COMMIT_BATCH_RECORDS_MAX + 2);
        let exact = vec![true; COMMIT_BATCH_RECORDS_MAX + 5];
        assert_eq!(ends(&exact), COMMIT_BATCH_RECORDS_MAX);
    }

    /// Ids jump at each start (the id floor): the bound counts messages, not ids.
    #[test]
    fn the_archive_bound_counts_messages_whatever_the_gaps_between_ids() {
        let dir = scratch_dir("archive-gaps");
        let partitions = open_partitions(&dir, 1, |_| 0).expect("open");
        let database = &partitions[0].database;
        let ids = [1u64, 2, 3, 1 << 40, (1 << 40) + 1, 2 << 40, (2 << 40) + 1];
        for id in ids {
            commit(database, &[Record::ArchiveAppend { user: "a".into(), id, kept: 4, message: vec![1] }]).expect("append");
        }
        let kept: Vec<u64> = read_archive(database, "a", 0, u64::MAX, 100, false).expect("read").into_iter().map(|(id, _)| id).collect();
        assert_eq!(kept, ids[3..].to_vec(), "the four newest stay");
        // A replayed append (the same id again) neither duplicates nor miscounts.
        commit(database, &[Record::ArchiveAppend { user: "a".into(), id: (2 << 40) + 1, kept: 4, message: vec![2] }]).expect("replay");
        assert_eq!(read_archive(database, "a", 0, u64::MAX, 100, false).expect("read").len(), 4);
        // Deleting the account forgets its count with its archive.
        commit(database, &[Record::AccountDelete { user: "a".into() }]).expect("delete");
        commit(database, &[Record::ArchiveAppend { user: "a".into(), id: 9, kept: 4, message: vec![3] }]).expect("append");
        assert_eq!(read_archive(database, "a", 0, u64::MAX, 100, false).expect("read"), vec![(9, vec![3])]);
        drop(partitions);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_id_floor_only_grows_and_survives_restarts() {
        let dir = scratch_dir("id-floor");
        std::fs::create_dir_all(&dir).expect("dir");
        let first = advance_id_floor(&dir, 1_000).expect("first");
        assert_eq!(first, ID_FLOOR_STEP.max(1_000_000));
        // A clock that went back still gets a higher floor.
        let second = advance_id_floor(&dir, 1).expect("second");
        assert_eq!(second, first + ID_FLOOR_STEP);
        // A clock far ahead gives its microseconds.
        let third = advance_id_floor(&dir, 10_000_000_000).expect("third");
        assert_eq!(third, 10_000_000_000_000);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn accounts_survive_reopen_and_follow_a_shard_count_change() {
        let dir = scratch_dir("repartition");
        let users = ["a", "b", "c", "d", "e", "f"];
        let home2 = |u: &str| (u.as_bytes()[0] as usize) % 2;
        let partitions = open_partitions(&dir, 2, home2).expect("open");
        for user in users {
            let database = &partitions[home2(user)].database;
            commit(database, &[Record::AccountPut(account(user))]).expect("commit");
            let item = Record::ItemPut { user: user.into(), kind: ItemKind::Roster, key: "x@y".into(), value: vec![7] };
            commit(database, &[item]).expect("item");
            let message = Record::ArchiveAppend { user: user.into(), id: 1, kept: 10, message: vec![8] };
            commit(database, &[message]).expect("archive");
        }
        // A room (an owner named by its bare JID) with its configuration and archive.
        let room = "q@conference.example";
        let message =
            confab_core::archive::ArchivedMessage { id: 1, stamp_ms: 5, with: format!("{room}/n"), bytes: b"<message/>".to_vec() };
        commit(
            &partitions[home2(room)].database,
            &[
                Record::ItemPut { user: room.into(), kind: ItemKind::RoomConfig, key: String::new(), value: vec![1] },
                Record::ArchiveAppend { user: room.into(), id: 1, kept: 10, message: message.encode() },
            ],
        )
        .expect("room");
        commit(&partitions[home2("f")].database, &[Record::AccountDelete { user: "f".into() }]).expect("delete");
        assert!(read_user_items(&partitions[home2("f")].database, "f").expect("items").is_empty(), "deleting an account deletes its state");
        drop(partitions);

        let home3 = |u: &str| (u.as_bytes()[0] as usize) % 3;
        let partitions = open_partitions(&dir, 3, home3).expect("reopen with 3 shards");
        let mut seen = Vec::new();
        for (k, partition) in partitions.iter().enumerate() {
            for account in &partition.accounts {
                assert_eq!(home3(&account.user), k, "{} lives on its home shard", account.user);
                seen.push(account.user.clone());
                let items = read_user_items(&partition.database, &account.user).expect("items");
                assert_eq!(items.len(), 1, "{}'s roster moved with it", account.user);
                let archive = read_archive(&partition.database, &account.user, 0, u64::MAX, 100, false).expect("archive");
                assert_eq!(archive, vec![(1, vec![8])], "{}'s archive moved with it", account.user);
            }
        }
        seen.sort();
        assert_eq!(seen, ["a", "b", "c", "d", "e"]);
        assert_eq!(std::fs::read_to_string(dir.join("shard-count")).expect("marker"), "3", "the partitioning is recorded");
        let room_home = &partitions[home3(room)];
        assert_eq!(read_user_items(&room_home.database, room).expect("items").len(), 1, "the room moved to its home shard");
        assert!(
            matches!(&room_home.room_archives[..], [archive] if archive.room == room && archive.last == 1 && archive.recent == vec![message.clone()])
        );
        for (k, partition) in partitions.iter().enumerate() {
            if k != home3(room) {
                assert!(read_user_items(&partition.database, room).expect("items").is_empty(), "and left shard {k}");
            }
        }
        drop(partitions);

        let home1 = |_: &str| 0;
        let partitions = open_partitions(&dir, 1, home1).expect("reopen with 1 shard");
        assert_eq!(partitions[0].accounts.len(), 5);
        assert_eq!(partitions[0].items.len(), 6, "five rosters and the room");
        assert!(!partition_path(&dir, 1).exists(), "drained partitions are removed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
