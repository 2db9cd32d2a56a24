//! The admin API's commands, compatible with ejabberd's mod_http_api so existing ops scripts
//! work: `POST /api/<command>` with a JSON object body, answered with ejabberd's shapes (a JSON
//! value on success; `{"status":"error","code":…,"message":…}` with a 4xx/5xx on failure),
//! and `confab ctl`, which calls them like ejabberdctl.
//!
//! The commands run on the HTTP runtime (http.rs, which also does every check on the request
//! itself); password hashing goes to the hashing pool and requests reach the account's home
//! shard through its bounded inbox. This module does not touch accounts directly; shards do.

use std::time::{SystemTime, UNIX_EPOCH};

use confab_core::jid::{prepare_local, BareJid};
use confab_core::records::Account;
use confab_core::roster::{RosterItem, Subscription};
use confab_core::sasl::{ScramCredentials, ScramHash, SCRAM_SALT_BYTES};
use futures_channel::oneshot;
use rand::RngCore as _;
use serde_json::{json, Value};

use crate::shard::{AdminReply, AdminRequest, ShardMessage, Shared};

/// The commands the API knows, with their argument names in `confab ctl` order.
pub const COMMANDS: &[(&str, &[&str])] = &[
    ("register", &["user", "host", "password"]),
    ("unregister", &["user", "host"]),
    ("change_password", &["user", "host", "newpass"]),
    ("check_account", &["user", "host"]),
    ("registered_users", &["host"]),
    ("connected_users_number", &[]),
    ("add_rosteritem", &["localuser", "localhost", "user", "host", "nick", "group", "subs"]),
    ("get_roster", &["user", "host"]),
    ("counters", &[]),
    ("store_latency", &[]),
    ("status", &[]),
];

fn error(status: u16, code: u32, message: &str) -> (u16, Value) {
    (status, json!({"status": "error", "code": code, "message": message}))
}

/// Runs one API command with its JSON arguments; returns the HTTP status and the JSON answer
/// in ejabberd's shapes.
pub async fn call(command: &str, args: &serde_json::Map<String, Value>, shared: &Shared) -> (u16, Value) {
    let text = |key: &str| args.get(key).and_then(Value::as_str).map(str::to_owned);
    let host_ok = |host: Option<String>| host.as_deref().map(|h| h.to_ascii_lowercase()) == Some(shared.config.domain.clone());
    let user = || -> Result<(String, BareJid), (u16, Value)> {
        let raw = text("user").ok_or_else(|| error(400, 31, "Missing argument: user"))?;
        if !host_ok(text("host")) {
            return Err(error(400, 31, "Unknown host"));
        }
        let local = prepare_local(&raw).map_err(|_| error(400, 31, "Invalid user name"))?;
        let bare = BareJid::new(Some(&local), &shared.config.domain).map_err(|_| error(400, 31, "Invalid user name"))?;
        Ok((local, bare))
    };
    match command {
        "register" | "change_password" => {
            let (local, bare) = match user() {
                Ok(user) => user,
                Err(e) => return e,
            };
            let key = if command == "register" { "password" } else { "newpass" };
            let Some(password) = text(key).filter(|p| !p.is_empty()) else {
                return error(400, 31, &format!("Missing argument: {key}"));
            };
            // PBKDF2 on the hashing pool, like every other derivation.
            let iterations = shared.config.security.scram_iterations;
            let derived = match shared.hashes.run(move || make_account(&local, &password, iterations)) {
                Ok(derived) => derived.await,
                Err(_) => return error(503, 1, "Password hashing is saturated; try again"),
            };
            let account = match derived {
                Ok(Ok(account)) => account,
                Ok(Err(message)) => return error(400, 31, &message),
                Err(_) => return error(500, 1, "Password hashing stopped"),
            };
            let request = if command == "register" { AdminRequest::Register(account) } else { AdminRequest::ChangePassword(account) };
            match ask_async(shared, shared.home_of(&bare), request).await {
                AdminReply::Done if command == "register" => (200, json!(format!("User {bare} successfully registered"))),
                AdminReply::Done => (200, json!(0)),
                AdminReply::AlreadyExists => error(409, 10090, &format!("User {bare} already registered")),
                AdminReply::NoSuchAccount => (200, json!(1)),
                other => failed(other),
            }
        }
        "unregister" | "check_account" => {
            let (local, bare) = match user() {
                Ok(user) => user,
                Err(e) => return e,
            };
            let request = if command == "unregister" { AdminRequest::Unregister(local) } else { AdminRequest::CheckAccount(local) };
            match ask_async(shared, shared.home_of(&bare), request).await {
                AdminReply::Done => (200, json!(0)),
                // ejabberd's unregister answers 0 for an absent user too (nothing to remove).
                AdminReply::NoSuchAccount if command == "unregister" => (200, json!(0)),
                AdminReply::NoSuchAccount => (200, json!(1)),
                other => failed(other),
            }
        }
        "add_rosteritem" => {
            // ejabberd mod_admin_extra: one side of the relationship, subscription as given.
            let Some(local) = text("localuser").and_then(|u| prepare_local(&u).ok()) else {
                return error(400, 31, "Invalid localuser");
            };
            if !host_ok(text("localhost")) {
                return error(400, 31, "Unknown host");
            }
            let contact = match (text("user"), text("host")) {
                (Some(user), Some(host)) => match confab_core::jid::Jid::parse(&format!("{user}@{host}")) {
                    Ok(jid) => jid.bare(),
                    Err(_) => return error(400, 31, "Invalid contact"),
                },
                _ => return error(400, 31, "Missing argument: user or host"),
            };
            let subscription = match text("subs").as_deref() {
                Some("none") | None => Subscription::None,
                Some("to") => Subscription::To,
                Some("from") => Subscription::From,
                Some("both") => Subscription::Both,
                Some(_) => return error(400, 31, "subs must be none, to, from or both"),
            };
            let mut item = RosterItem::new(contact.as_str());
            item.name = text("nick").filter(|n| !n.is_empty());
            item.groups = text("group").filter(|g| !g.is_empty()).into_iter().collect();
            item.subscription = subscription;
            let Ok(bare) = BareJid::new(Some(&local), &shared.config.domain) else { return error(400, 31, "Invalid localuser") };
            match ask_async(shared, shared.home_of(&bare), AdminRequest::RosterPut(local, item)).await {
                AdminReply::Done => (200, json!(0)),
                AdminReply::NoSuchAccount => error(404, 33, "User does not exist"),
                other => failed(other),
            }
        }
        "get_roster" => {
            let (local, bare) = match user() {
                Ok(user) => user,
                Err(e) => return e,
            };
            match ask_async(shared, shared.home_of(&bare), AdminRequest::Roster(local)).await {
                AdminReply::Roster(items) => {
                    let items: Vec<Value> = items
                        .iter()
                        .map(|item| {
                            let subscription = match item.subscription {
                                Subscription::None => "none",
                                Subscription::To => "to",
                                Subscription::From => "from",
                                Subscription::Both => "both",
                            };
                            json!({
                                "jid": item.jid,
                                "nick": item.name.clone().unwrap_or_default(),
                                "subscription": subscription,
                                "ask": if item.pending_out { "subscribe" } else { "none" },
                                "group": item.groups.first().cloned().unwrap_or_default(),
                            })
                        })
                        .collect();
                    (200, json!(items))
                }
                AdminReply::NoSuchAccount => error(404, 33, "User does not exist"),
                other => failed(other),
            }
        }
        "registered_users" => {
            if !host_ok(text("host")) {
                return error(400, 31, "Unknown host");
            }
            let mut users = Vec::new();
            for shard in 0..shared.shard_count() {
                match ask_async(shared, shard, AdminRequest::RegisteredUsers).await {
                    AdminReply::Users(list) => users.extend(list),
                    other => return failed(other),
                }
            }
            users.sort();
            (200, json!(users))
        }
        "connected_users_number" => {
            let mut total = 0;
            for shard in 0..shared.shard_count() {
                match ask_async(shared, shard, AdminRequest::SessionCount).await {
                    AdminReply::Count(n) => total += n,
                    other => return failed(other),
                }
            }
            // ejabberd 23.01 (API v0) wraps integer results in their name.
            (200, json!({"num_sessions": total}))
        }
        "counters" => {
            // What the shards dropped, by reason, summed (see counters.rs).
            let mut totals: serde_json::Map<String, Value> = serde_json::Map::new();
            for shard in 0..shared.shard_count() {
                match ask_async(shared, shard, AdminRequest::Counters).await {
                    AdminReply::Counters(values) => {
                        for (name, value) in values {
                            let sum = totals.get(name).and_then(Value::as_u64).unwrap_or(0) + value;
                            totals.insert(name.to_owned(), json!(sum));
                        }
                    }
                    other => return failed(other),
                }
            }
            (200, Value::Object(totals))
        }
        "store_latency" => {
            // Commit latency (submission to durable) since the last call, all shards merged.
            let mut merged: Option<hdrhistogram::Histogram<u64>> = None;
            for shard in 0..shared.shard_count() {
                match ask_async(shared, shard, AdminRequest::StoreLatency).await {
                    AdminReply::Latency(histogram) => match &mut merged {
                        Some(merged) => {
                            let _ = merged.add(&*histogram);
                        }
                        None => merged = Some(*histogram),
                    },
                    other => return failed(other),
                }
            }
            let Some(h) = merged else { return (200, json!({"commits": 0})) };
            (
                200,
                json!({
                    "commits": h.len(),
                    "p50_us": h.value_at_quantile(0.5),
                    "p99_us": h.value_at_quantile(0.99),
                    "p999_us": h.value_at_quantile(0.999),
                    "max_us": h.max(),
                }),
            )
        }
        "status" => (
            200,
            json!(format!(
                "The node confab@{} is started with status: started\nconfab {} is running in that node",
                shared.config.domain,
                env!("CARGO_PKG_VERSION")
            )),
        ),
        _ => error(404, 40, &format!("Unknown command: {command}")),
    }
}

fn failed(reply: AdminReply) -> (u16, Value) {
    match reply {
        AdminReply::Failed(message) => error(500, 1, &message),
        other => error(500, 1, &format!("unexpected reply {other:?}")),
    }
}

/// Sends a request to a shard and waits for its answer without blocking the thread (from the
/// HTTP runtime, or from a shard task: the request may be for this very shard).
pub async fn ask_async(shared: &Shared, shard: usize, request: AdminRequest) -> AdminReply {
    let (reply, answer) = oneshot::channel();
    if shared.inboxes[shard].send(ShardMessage::Admin(request, reply)).await.is_err() {
        return AdminReply::Failed("shard unavailable".into());
    }
    answer.await.unwrap_or_else(|_| AdminReply::Failed("shard dropped the request".into()))
}

/// Derives the stored SCRAM secrets for both hashes (RFC 5802 §3) with fresh salts.
pub fn make_account(local: &str, password: &str, iterations: u32) -> Result<Account, String> {
    let mut rng = rand::rng();
    let mut salt = |_: ()| {
        let mut salt = vec![0u8; SCRAM_SALT_BYTES];
        rng.fill_bytes(&mut salt);
        salt
    };
    let sha1 = ScramCredentials::derive(ScramHash::Sha1, password, &salt(()), iterations).map_err(|_| "Invalid password".to_owned())?;
    let sha256 = ScramCredentials::derive(ScramHash::Sha256, password, &salt(()), iterations).map_err(|_| "Invalid password".to_owned())?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    Ok(Account::new(local.to_owned(), &sha1, &sha256, now))
}

/// `confab ctl`: calls the API like ejabberdctl, with positional arguments.
pub fn ctl(url: &str, token: Option<&str>, command: &str, args: &[String]) -> Result<String, String> {
    let Some((_, names)) = COMMANDS.iter().find(|(name, _)| *name == command) else {
        let known: Vec<&str> = COMMANDS.iter().map(|(name, _)| *name).collect();
        return Err(format!("unknown command {command:?}; known: {}", known.join(", ")));
    };
    if args.len() != names.len() {
        return Err(format!("usage: confab ctl {command} {}", names.iter().map(|n| n.to_uppercase()).collect::<Vec<_>>().join(" ")));
    }
    let body: serde_json::Map<String, Value> = names.iter().zip(args).map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut request = agent.post(&format!("{}/api/{command}", url.trim_end_matches('/')));
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    let mut response = request.send_json(Value::Object(body)).map_err(|e| format!("cannot reach {url}: {e}"))?;
    let status = response.status().as_u16();
    let value: Value = response.body_mut().read_json().map_err(|e| format!("bad response: {e}"))?;
    match (status, value) {
        (200, Value::String(text)) => Ok(text),
        (200, Value::Number(n)) if n.as_u64() == Some(0) => Ok(String::new()),
        (200, Value::Number(n)) => Err(format!("{command} failed (result {n})")),
        (200, Value::Array(items)) => Ok(items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("\n")),
        (200, Value::Object(map)) if map.len() == 1 => Ok(map.values().next().map(|v| v.to_string()).unwrap_or_default()),
        (200, other) => Ok(other.to_string()),
        (_, Value::Object(map)) => Err(map.get("message").and_then(Value::as_str).unwrap_or("error").to_owned()),
        (status, other) => Err(format!("HTTP {status}: {other}")),
    }
}
