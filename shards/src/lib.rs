//! Confab's runtime: shards (glommio executors), sockets, TLS, storage and the admin API.
//!
//! `serve` loads what every shard shares, opens the store partitions, starts one executor per
//! shard and the admin threads, and waits. Protocol decisions live in `confab-core`; this
//! crate only moves bytes, owns state per shard and talks to the operating system.

pub mod admin;
pub mod config;
pub mod connection;
pub mod counters;
pub mod hashing;
pub mod http;
pub mod im;
pub mod inbox;
pub mod muc;
pub mod shard;
pub mod storage;
pub mod tls;

use std::cell::RefCell;
use std::io::Write as _;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use confab_core::limits::SHARD_INBOX_MESSAGES_MAX;
use confab_core::routing;
use confab_core::stream::StreamConfig;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::Config;
use crate::shard::{AdminReply, Shard, ShardMessage, ShardRef, Shared};

/// Bytes of the server secret that keys fake SCRAM salts (kept in the data directory so the
/// fake salts stay stable across restarts).
pub const SERVER_SECRET_BYTES: usize = 32;

/// Runs the server until the process is stopped.
pub fn serve(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    ports_free(&config)?;
    std::fs::create_dir_all(&config.data_dir)?;
    let secret = server_secret(&config.data_dir)?;
    let tls = tls::TlsContext::load(config.tls.cert.as_deref(), config.tls.key.as_deref(), &config.domain, &config.data_dir)?;
    let shards = config.shards;
    let domain = config.domain.clone();
    // An owner of stored state is an account (its local part) or a room (its bare JID).
    let partitions = storage::open_partitions(&config.data_dir, shards, |owner| {
        if owner.contains('@') {
            routing::home_shard(owner, shards)
        } else {
            routing::home_shard(&format!("{owner}@{domain}"), shards)
        }
    })?;
    let mut stream = StreamConfig::new(config.domain.clone(), secret);
    stream.tls_required = config.tls.required;
    stream.scram_iterations = config.security.scram_iterations;
    stream.sasl_attempts_max = config.security.sasl_attempts;
    stream.reject_channel_binding_downgrade = config.security.reject_channel_binding_downgrade;
    stream.registration = config.registration.enabled;
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..shards).map(|_| async_channel::bounded(SHARD_INBOX_MESSAGES_MAX)).unzip();
    let hashes = hashing::HashPool::start(config.security.hash_threads)?;
    let id_floor = storage::advance_id_floor(&config.data_dir, im::now_ms())?;
    let shared = Arc::new(Shared { config, stream, tls, inboxes: senders, started: Instant::now(), hashes, id_floor });

    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut handles = Vec::with_capacity(shards);
    for (k, (opened, inbox)) in partitions.into_iter().zip(receivers).enumerate() {
        let shared = shared.clone();
        let placement = if shared.config.pin_shards && shards <= cpus { Placement::Fixed(k) } else { Placement::Unbound };
        let handle = LocalExecutorBuilder::new(placement).name(&format!("shard-{k}")).io_memory(shared.config.io_memory_bytes).spawn(
            move || async move {
                let shard = Rc::new(RefCell::new(Shard::new(k, shared.clone(), opened)));
                // A change that cannot be stored is undone in memory (storage::Undo).
                let weak = Rc::downgrade(&shard);
                shard.borrow().partition.on_failure(Box::new(move |undo| {
                    if let Some(shard) = weak.upgrade() {
                        im::undo(&shard, undo);
                    }
                }));
                run_shard(shard, inbox).await;
            },
        )?;
        handles.push(handle);
    }
    if let Some(address) = shared.config.listen.http {
        http::start(address, shared.clone())?;
    }
    tracing::info!(domain = %shared.config.domain, shards, c2s = ?shared.config.listen.c2s, c2s_tls = ?shared.config.listen.c2s_tls, "confab started");
    for handle in handles {
        handle.join()?;
    }
    Ok(())
}

/// The shards listen with SO_REUSEPORT, which would let a second server on the same port (a
/// stale one, or a second start by mistake) silently take a share of the connections, each
/// with its own accounts and rooms. So a port that is busy is asked who is there: a live
/// server answers the bytes of a stream header (a stream header back, or a TLS alert and a
/// close) and this one refuses to start. A server that was just killed can leave its
/// listeners behind for as long as its clients keep their connections (io_uring tears the
/// ring down in the kernel after the process is gone): they accept but never answer, and a
/// restart after a crash goes on.
fn ports_free(config: &Config) -> Result<(), String> {
    use std::io::{Read as _, Write as _};
    for address in [config.listen.c2s, config.listen.c2s_tls].into_iter().flatten() {
        if std::net::TcpListener::bind(address).is_ok() {
            continue;
        }
        let wait = std::time::Duration::from_millis(PORT_PROBE_ANSWER_MS);
        let Ok(mut probe) = std::net::TcpStream::connect_timeout(&address, wait) else { continue };
        let header = format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{}' version='1.0'>",
            config.domain
        );
        let _ = probe.set_read_timeout(Some(wait));
        let _ = probe.write_all(header.as_bytes());
        let mut byte = [0u8; 1];
        if probe.read(&mut byte).is_ok() {
            return Err(format!(
                "cannot listen on {address}: address already in use by a server that answers (is another server running there?)"
            ));
        }
    }
    Ok(())
}

/// How long a busy client port's listener has to answer at start (see `ports_free`).
pub const PORT_PROBE_ANSWER_MS: u64 = 1_000;

/// One shard's life: listeners (SO_REUSEPORT spreads accepts over shards), and the inbox.
async fn run_shard(shard: ShardRef, inbox: async_channel::Receiver<ShardMessage>) {
    let shared = shard.borrow().shared.clone();
    for (address, direct_tls) in [(shared.config.listen.c2s, false), (shared.config.listen.c2s_tls, true)] {
        let Some(address) = address else { continue };
        let listener = match glommio::net::TcpListener::bind(address) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%address, %error, "cannot listen");
                std::process::exit(1);
            }
        };
        tracing::info!(%address, shard = shard.borrow().id, "listening");
        let shard = shard.clone();
        glommio::spawn_local(async move {
            loop {
                match listener.accept().await {
                    Ok(socket) => {
                        glommio::spawn_local(connection::accept(shard.clone(), socket, direct_tls)).detach();
                    }
                    Err(error) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        })
        .detach();
    }
    while let Ok(message) = inbox.recv().await {
        match message {
            ShardMessage::Adopt(migrant) => {
                glommio::spawn_local(connection::adopt(shard.clone(), migrant)).detach();
            }
            ShardMessage::Deliver(envelope) => shard::dispatch_now(&shard, envelope),
            ShardMessage::Room(delivery) => {
                let bounces = muc::deliver_to_sessions(&mut shard.borrow_mut(), delivery);
                for envelope in bounces {
                    shard::dispatch_now(&shard, envelope);
                }
            }
            ShardMessage::AuthFailure(address, account) => connection::handle_auth_failure(&shard, address, &account),
            ShardMessage::Ban(address, until) => shard.borrow_mut().ban(address, until),
            ShardMessage::Admin(request, reply) => {
                let (records, undo, answer) = shard.borrow_mut().admin(&request);
                if records.is_empty() {
                    let _ = reply.send(answer);
                    continue;
                }
                // The write is queued now (in order) and waited for in its own task: the inbox
                // keeps delivering stanzas while the disk commits.
                let durable = shard.borrow().partition.submit(records.clone(), undo);
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    let answer = match durable.await.unwrap_or_else(|_| Err("writer stopped".into())) {
                        Ok(()) => {
                            for record in records {
                                shard.borrow_mut().applied(record);
                            }
                            answer
                        }
                        Err(error) => AdminReply::Failed(error),
                    };
                    shard.borrow_mut().admin_settled(&request);
                    let _ = reply.send(answer);
                })
                .detach();
            }
        }
    }
}

/// Reads the server secret, creating it on first start.
fn server_secret(data_dir: &Path) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = data_dir.join("secret");
    if let Ok(secret) = std::fs::read(&path) {
        if secret.len() == SERVER_SECRET_BYTES {
            return Ok(secret);
        }
    }
    let mut secret = vec![0u8; SERVER_SECRET_BYTES];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path)?;
    file.write_all(&secret)?;
    Ok(secret)
}
