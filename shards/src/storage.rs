//! The embedded durable store: one redb file per shard, written only through `Record`s.
//!
//! Each shard owns `shard-<k>.redb` in the data directory. A mutation is a `Record`
//! (confab-core's rkyv type): it is appended to the partition's log table and applied to the
//! state tables in the same ACID transaction, so the log is exactly the stream a peer node will
//! replay. Writes run on glommio's blocking thread pool, batched (group commit), never on the
//! shard's event loop. This module does not decide what to store; shards do.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use confab_core::records::{Account, Record};
use futures_channel::oneshot;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

/// Accounts by local part: the rkyv bytes of `Account`.
const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
/// The record log: sequence number → rkyv bytes of `Record`.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");

/// Records kept in each partition's log. Older ones are trimmed in the same transaction that
/// appends, so the log (kept for replication catch-up) has a fixed worst-case size.
pub const LOG_RECORDS_KEPT: u64 = 100_000;

/// Records written in one transaction at most; a batch waits for the previous commit.
pub const COMMIT_BATCH_RECORDS_MAX: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("store {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("store write failed: {0}")]
    Write(String),
    #[error("store read failed: {0}")]
    Read(String),
}

/// A record waiting for the next group commit, with whom to tell when it is durable.
type PendingRecord = (Record, oneshot::Sender<Result<(), String>>);

/// An opened partition and the accounts read from it.
pub type OpenedPartition = (Arc<Database>, Vec<Account>);

/// One shard's partition, owned by that shard's thread.
pub struct Partition {
    database: Arc<Database>,
    pending: Rc<RefCell<Vec<PendingRecord>>>,
    writer_running: Rc<RefCell<bool>>,
}

impl Partition {
    /// Writes `record` durably (group commit with whatever else is pending). Resolves once
    /// the transaction that holds it has committed.
    pub async fn apply(&self, record: Record) -> Result<(), StorageError> {
        let (reply, done) = oneshot::channel();
        self.pending.borrow_mut().push((record, reply));
        let start_writer = !std::mem::replace(&mut *self.writer_running.borrow_mut(), true);
        if start_writer {
            let database = self.database.clone();
            let pending = self.pending.clone();
            let running = self.writer_running.clone();
            glommio::spawn_local(async move {
                loop {
                    let batch: Vec<_> = {
                        let mut queue = pending.borrow_mut();
                        let take = queue.len().min(COMMIT_BATCH_RECORDS_MAX);
                        queue.drain(..take).collect()
                    };
                    if batch.is_empty() {
                        *running.borrow_mut() = false;
                        break;
                    }
                    let (records, replies): (Vec<Record>, Vec<_>) = batch.into_iter().unzip();
                    let database = database.clone();
                    let result = glommio::executor()
                        .spawn_blocking(move || commit(&database, &records).map_err(|e| e.to_string()))
                        .await;
                    for reply in replies {
                        let _ = reply.send(result.clone());
                    }
                }
            })
            .detach();
        }
        match done.await {
            Ok(result) => result.map_err(StorageError::Write),
            Err(_) => Err(StorageError::Write("writer stopped".into())),
        }
    }
}

/// Opens (creating if needed) the partitions for `shards` shards, moving accounts whose home
/// shard changed since the last start (a different `shards` setting), and returns each
/// partition's database with its accounts loaded. Runs at start-up, before any shard serves.
pub fn open_partitions(
    data_dir: &Path,
    shards: usize,
    home: impl Fn(&str) -> usize,
) -> Result<Vec<OpenedPartition>, StorageError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| StorageError::Open { path: data_dir.into(), message: e.to_string() })?;
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
    for (_, database) in &extra {
        for account in read_accounts(database)? {
            moves.push((usize::MAX, account));
        }
    }
    for (source, account) in moves {
        let target = home(&account.user);
        commit(&databases[target], &[Record::AccountPut(account.clone())])?;
        if source != usize::MAX {
            commit(&databases[source], &[Record::AccountDelete { user: account.user.clone() }])?;
        }
        tracing::info!(user = %account.user, from = source, to = target, "moved account to its new home shard");
        loaded[target].push(account);
    }
    for (path, database) in extra {
        drop(database);
        std::fs::remove_file(&path).map_err(|e| StorageError::Open { path: path.clone(), message: e.to_string() })?;
    }
    Ok(databases.into_iter().map(Arc::new).zip(loaded).collect())
}

impl Partition {
    pub fn new(database: Arc<Database>) -> Partition {
        Partition { database, pending: Rc::new(RefCell::new(Vec::new())), writer_running: Rc::new(RefCell::new(false)) }
    }
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
    let write = |e: &dyn std::fmt::Display| StorageError::Write(e.to_string());
    let txn = database.begin_write().map_err(|e| write(&e))?;
    {
        let mut log = txn.open_table(LOG).map_err(|e| write(&e))?;
        let mut accounts = txn.open_table(ACCOUNTS).map_err(|e| write(&e))?;
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

    #[test]
    fn accounts_survive_reopen_and_follow_a_shard_count_change() {
        let dir = scratch_dir("repartition");
        let users = ["a", "b", "c", "d", "e", "f"];
        let home2 = |u: &str| (u.as_bytes()[0] as usize) % 2;
        let partitions = open_partitions(&dir, 2, home2).expect("open");
        for user in users {
            commit(&partitions[home2(user)].0, &[Record::AccountPut(account(user))]).expect("commit");
        }
        commit(&partitions[home2("f")].0, &[Record::AccountDelete { user: "f".into() }]).expect("delete");
        drop(partitions);

        let home3 = |u: &str| (u.as_bytes()[0] as usize) % 3;
        let partitions = open_partitions(&dir, 3, home3).expect("reopen with 3 shards");
        let mut seen = Vec::new();
        for (k, (_, accounts)) in partitions.iter().enumerate() {
            for account in accounts {
                assert_eq!(home3(&account.user), k, "{} lives on its home shard", account.user);
                seen.push(account.user.clone());
            }
        }
        seen.sort();
        assert_eq!(seen, ["a", "b", "c", "d", "e"]);
        drop(partitions);

        let home1 = |_: &str| 0;
        let partitions = open_partitions(&dir, 1, home1).expect("reopen with 1 shard");
        assert_eq!(partitions[0].1.len(), 5);
        assert!(!partition_path(&dir, 1).exists(), "drained partitions are removed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
