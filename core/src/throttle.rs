//! Authentication throttling: who may try a password now, and what a failure costs.
//!
//! This module owns the decisions that keep a login flood from guessing passwords or locking
//! honest people out: bans per (address, account) pair — one person's typos lock only their
//! own account, and only from that address, so the hundreds of people behind one NAT address
//! carry on — and per address, counted in distinct accounts — a password spray across
//! accounts from one host bans the host — with failures counted
//! when an attempt *starts* (an attempt in flight counts as a failure until it succeeds, so a
//! burst of parallel guesses cannot all be checked before the first is counted), and a cap on
//! the attempts in flight from one address. Only a wrong password or proof is a failure: a
//! mechanism or channel-binding negotiation that did not work out is not (RFC 6120 §6.4.5
//! retries are about credentials), so a standard client that tries `-PLUS` first is never
//! punished for it.
//!
//! Sans-I/O: the caller passes `now` (milliseconds on a monotonic clock the shards share) and
//! carries out bans (broadcasting an address ban to
//! every shard). One `AuthThrottle` lives on each shard; a pair is always decided on the
//! account's home shard, where its attempts run. Per-address failures are counted here for
//! the attempts this shard ran (to refuse at once) and, across shards, by the address's
//! counting shard (`address_failure`), which decides the address ban. Before its first
//! failure an address may have any number of attempts in flight (honest logins from one busy
//! address are never refused for each other; only PLAIN checks are capped, for the hashing
//! pool's sake), after it every attempt in flight counts; and once a shard has seen
//! `failed_accounts_per_address_max` failed accounts from an address, no verdict of an
//! attempt still in flight is given there (`still_allowed`). So one address gets at most
//! `shards × failed_accounts_per_address_max` wrong-password verdicts in a window.
//! It does not know about sockets, SASL mechanisms or which shard counts which address.

use std::collections::HashMap;
use std::net::IpAddr;

/// Addresses and (address, account) pairs a throttle remembers. Past it the oldest entries
/// with nothing in flight are forgotten, so a flood of spoofed sources or names cannot grow the
/// tables without bound; when every entry has an attempt in flight, new attempts wait.
pub const THROTTLE_ENTRIES_MAX: usize = 65_536;

/// The throttle's settings (config keys under `[security]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Wrong passwords for one account from one address (within `window`) before that pair is
    /// refused for `ban` (`security.auth_failures_per_account`).
    pub account_failures_max: u32,
    /// Distinct accounts with a wrong password from one address (within `window`) before the
    /// address is refused (`security.auth_failed_accounts_per_address`): a password spray
    /// from one host. Repeated typos of one person count once.
    pub failed_accounts_per_address_max: u32,
    /// Attempts from one address that need the server to hash a password (SASL PLAIN), in
    /// flight at once on one shard (`security.auth_concurrent_per_address`). SCRAM attempts
    /// cost the server no hashing and are bounded by the rules on failures instead.
    pub concurrent_per_address: u32,
    /// How long failures are remembered, and how long a ban lasts, in milliseconds
    /// (`security.ban_ms`).
    pub window_ms: u64,
}

/// Why an attempt may not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The address is banned: the stream ends (`policy-violation`).
    AddressBanned,
    /// This account may not be tried from this address for now.
    AccountLocked,
    /// Too many attempts from this address are in flight; try again shortly.
    Busy,
}

/// The per-shard throttle. See the module documentation.
#[derive(Debug)]
pub struct AuthThrottle {
    config: ThrottleConfig,
    addresses: HashMap<IpAddr, Address>,
    pairs: HashMap<(IpAddr, String), Pair>,
    /// When full tables were last swept: at most once per `SWEEP_INTERVAL_MS`, so a flood that
    /// keeps them full costs one sweep a second, not one per attempt.
    swept: Option<u64>,
}

/// Least time between two sweeps of full tables.
const SWEEP_INTERVAL_MS: u64 = 1_000;

#[derive(Debug, Default)]
struct Address {
    /// Accounts that failed in this shard's own attempts (to refuse at once), bounded by
    /// `failed_accounts_per_address_max`.
    failed: Vec<String>,
    since: Option<u64>,
    in_flight: u32,
    /// Of those, the attempts whose password the server hashes.
    hashing: u32,
    banned_until: Option<u64>,
    /// Accounts that failed on any shard, on the address's counting shard only (for the ban).
    reported: Vec<String>,
    reported_since: Option<u64>,
}

#[derive(Debug, Default)]
struct Pair {
    failures: u32,
    since: Option<u64>,
    in_flight: u32,
    banned_until: Option<u64>,
}

impl AuthThrottle {
    pub fn new(config: ThrottleConfig) -> AuthThrottle {
        AuthThrottle { config, addresses: HashMap::new(), pairs: HashMap::new(), swept: None }
    }

    /// Whether `address` is banned (checked at accept, before any work).
    pub fn is_banned(&self, address: IpAddr, now: u64) -> bool {
        self.addresses.get(&address).and_then(|a| a.banned_until).is_some_and(|until| until > now)
    }

    /// An attempt to authenticate `account` from `address` wants to start (credentials are about
    /// to be looked up, or — `hashing` — a password hashed and checked). On `Ok` the attempt is
    /// in flight and counts as a failure until `succeeded`, `failed` or `abandoned` settles it
    /// (with the same `hashing`).
    pub fn begin(&mut self, address: IpAddr, account: &str, hashing: bool, now: u64) -> Result<(), Refusal> {
        let window = self.config.window_ms;
        if self.is_banned(address, now) {
            return Err(Refusal::AddressBanned);
        }
        self.make_room(now);
        let key = (address, account.to_owned());
        if self.pairs.len() >= THROTTLE_ENTRIES_MAX && !self.pairs.contains_key(&key) {
            return Err(Refusal::Busy);
        }
        if self.addresses.len() >= THROTTLE_ENTRIES_MAX && !self.addresses.contains_key(&address) {
            return Err(Refusal::Busy);
        }
        let pair = self.pairs.entry(key).or_default();
        expire(&mut pair.failures, &mut pair.since, now, window);
        if pair.banned_until.is_some_and(|until| until > now) {
            return Err(Refusal::AccountLocked);
        }
        // Counted at the start: in-flight attempts are failures until they succeed.
        if pair.failures + pair.in_flight >= self.config.account_failures_max {
            return Err(Refusal::AccountLocked);
        }
        let entry = self.addresses.entry(address).or_default();
        expire_set(&mut entry.failed, &mut entry.since, now, window);
        if hashing && entry.hashing >= self.config.concurrent_per_address {
            return Err(Refusal::Busy);
        }
        let max = self.config.failed_accounts_per_address_max as usize;
        if entry.failed.len() >= max {
            return Err(Refusal::AddressBanned);
        }
        // Counted at the start here too, once the address has a failure to its name: an
        // attempt in flight for an account that has not failed yet may become one more failed
        // account, so it waits (it is no failure of its own). An address without any failure
        // — honest people behind one NAT logging in at once — meets only the cap above.
        let failed_before = entry.failed.iter().any(|failed| failed == account);
        if !entry.failed.is_empty() && !failed_before && entry.failed.len() + entry.in_flight as usize + 1 > max {
            return Err(Refusal::Busy);
        }
        entry.in_flight += 1;
        entry.hashing += u32::from(hashing);
        if let Some(pair) = self.pairs.get_mut(&(address, account.to_owned())) {
            pair.in_flight += 1;
        }
        Ok(())
    }

    /// SCRAM's final message or a finished PLAIN check: may the attempt's verdict still be
    /// given? False when the address or the pair was banned while it was in flight, or when
    /// this shard has seen enough failed accounts from the address for a ban.
    pub fn still_allowed(&self, address: IpAddr, account: &str, now: u64) -> bool {
        let pair_banned = self.pairs.get(&(address, account.to_owned())).and_then(|p| p.banned_until).is_some_and(|until| until > now);
        // Enough failed accounts seen here for a ban, which the counting shard may not have
        // broadcast yet: the verdicts still in flight are not given either.
        let window = self.config.window_ms;
        let spraying = self.addresses.get(&address).is_some_and(|entry| {
            entry.since.is_some_and(|start| now.saturating_sub(start) < window)
                && entry.failed.len() >= self.config.failed_accounts_per_address_max as usize
        });
        !self.is_banned(address, now) && !pair_banned && !spraying
    }

    /// The attempt succeeded: it no longer counts, and the pair's earlier typos are forgiven.
    pub fn succeeded(&mut self, address: IpAddr, account: &str, hashing: bool) {
        self.settle(address, account, hashing);
        if let Some(pair) = self.pairs.get_mut(&(address, account.to_owned())) {
            pair.failures = 0;
            pair.since = None;
        }
    }

    /// The attempt ended without a verdict on the credentials (aborted, malformed, connection
    /// lost, refused at the final check): it no longer counts.
    pub fn abandoned(&mut self, address: IpAddr, account: &str, hashing: bool) {
        self.settle(address, account, hashing);
    }

    /// A wrong password or proof. Returns the time until which the pair is now locked, if
    /// this failure locked it. The caller reports the failure to the address's counting shard
    /// (`address_failure`).
    pub fn failed(&mut self, address: IpAddr, account: &str, hashing: bool, now: u64) -> Option<u64> {
        self.settle(address, account, hashing);
        let window = self.config.window_ms;
        if let Some(entry) = self.addresses.get_mut(&address) {
            expire_set(&mut entry.failed, &mut entry.since, now, window);
            remember(&mut entry.failed, account, self.config.failed_accounts_per_address_max);
            entry.since.get_or_insert(now);
        }
        let pair = self.pairs.get_mut(&(address, account.to_owned()))?;
        expire(&mut pair.failures, &mut pair.since, now, window);
        pair.failures += 1;
        pair.since.get_or_insert(now);
        if pair.failures >= self.config.account_failures_max {
            let until = now.saturating_add(window);
            pair.banned_until = Some(until);
            pair.failures = 0;
            pair.since = None;
            return Some(until);
        }
        None
    }

    /// On the address's counting shard: a wrong password for `account` from `address`, on any
    /// shard. Returns the time until which the address is banned when this makes
    /// `failed_accounts_per_address_max` distinct accounts (the caller tells every shard, `ban`).
    pub fn address_failure(&mut self, address: IpAddr, account: &str, now: u64) -> Option<u64> {
        let window = self.config.window_ms;
        self.make_room(now);
        if self.addresses.len() >= THROTTLE_ENTRIES_MAX && !self.addresses.contains_key(&address) {
            return None;
        }
        let max = self.config.failed_accounts_per_address_max;
        let entry = self.addresses.entry(address).or_default();
        expire_set(&mut entry.reported, &mut entry.reported_since, now, window);
        remember(&mut entry.reported, account, max);
        entry.reported_since.get_or_insert(now);
        if entry.reported.len() >= max as usize {
            entry.reported.clear();
            entry.reported_since = None;
            return Some(now.saturating_add(window));
        }
        None
    }

    /// Refuses `address` until `until` (a ban decided by its counting shard).
    pub fn ban(&mut self, address: IpAddr, until: u64) {
        let entry = self.addresses.entry(address).or_default();
        entry.banned_until = Some(entry.banned_until.map_or(until, |current| current.max(until)));
    }

    /// Entries remembered (for tests and metrics).
    pub fn entries(&self) -> usize {
        self.addresses.len() + self.pairs.len()
    }

    fn settle(&mut self, address: IpAddr, account: &str, hashing: bool) {
        if let Some(entry) = self.addresses.get_mut(&address) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            entry.hashing = entry.hashing.saturating_sub(u32::from(hashing));
        }
        if let Some(pair) = self.pairs.get_mut(&(address, account.to_owned())) {
            pair.in_flight = pair.in_flight.saturating_sub(1);
        }
    }

    /// At the bound: forgets entries that hold nothing (no attempt in flight, no live ban, no
    /// failure within the window); if none qualify the tables stay full and new keys wait.
    fn make_room(&mut self, now: u64) {
        let full = self.pairs.len() >= THROTTLE_ENTRIES_MAX || self.addresses.len() >= THROTTLE_ENTRIES_MAX;
        if !full || self.swept.is_some_and(|swept| now.saturating_sub(swept) < SWEEP_INTERVAL_MS) {
            return;
        }
        self.swept = Some(now);
        let window = self.config.window_ms;
        let stale = |since: Option<u64>| since.is_none_or(|since| now.saturating_sub(since) >= window);
        let over = |until: Option<u64>| until.is_none_or(|until| until <= now);
        if self.pairs.len() >= THROTTLE_ENTRIES_MAX {
            self.pairs.retain(|_, p| p.in_flight > 0 || !over(p.banned_until) || !stale(p.since));
        }
        if self.addresses.len() >= THROTTLE_ENTRIES_MAX {
            self.addresses.retain(|_, a| a.in_flight > 0 || !over(a.banned_until) || !stale(a.since) || !stale(a.reported_since));
        }
    }
}

/// Forgets `count` once its window started longer ago than `window`.
fn expire(count: &mut u32, since: &mut Option<u64>, now: u64, window: u64) {
    if since.is_some_and(|start| now.saturating_sub(start) >= window) {
        *count = 0;
        *since = None;
    }
}

/// Forgets `accounts` once their window started longer ago than `window`.
fn expire_set(accounts: &mut Vec<String>, since: &mut Option<u64>, now: u64, window: u64) {
    if since.is_some_and(|start| now.saturating_sub(start) >= window) {
        accounts.clear();
        *since = None;
    }
}

/// Adds `account` to `accounts` once, keeping at most `max` (beyond it the ban is decided
/// anyway).
fn remember(accounts: &mut Vec<String>, account: &str, max: u32) {
    if accounts.len() < max as usize && !accounts.iter().any(|known| known == account) {
        accounts.push(account.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ThrottleConfig {
        ThrottleConfig { account_failures_max: 3, failed_accounts_per_address_max: 5, concurrent_per_address: 4, window_ms: 60_000 }
    }

    const NAT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn one_users_typos_lock_that_account_from_that_address_only() {
        let mut throttle = AuthThrottle::new(config());
        let now = 1_000_000;
        for attempt in 0..3 {
            assert_eq!(throttle.begin(NAT, "alice", false, now), Ok(()));
            let locked = throttle.failed(NAT, "alice", false, now);
            assert_eq!(locked.is_some(), attempt == 2, "the third failure locks the pair");
        }
        assert_eq!(throttle.begin(NAT, "alice", false, now), Err(Refusal::AccountLocked));
        // Everyone else behind the same address carries on, and alice from elsewhere too.
        assert_eq!(throttle.begin(NAT, "bob", false, now), Ok(()));
        throttle.succeeded(NAT, "bob", false);
        assert_eq!(throttle.begin(OTHER, "alice", false, now), Ok(()));
        throttle.succeeded(OTHER, "alice", false);
        assert!(!throttle.is_banned(NAT, now));
        // The lock ends with the window.
        assert_eq!(throttle.begin(NAT, "alice", false, now + 61_000), Ok(()));
    }

    #[test]
    fn many_typing_users_behind_one_address_do_not_ban_it() {
        let mut throttle = AuthThrottle::new(config());
        let now = 1_000_000;
        // Four people mistype twice each, then get it right: four accounts, not eight failures.
        for n in 0..4 {
            let account = format!("user{n}");
            for _ in 0..2 {
                throttle.begin(NAT, &account, false, now).expect("admitted");
                assert_eq!(throttle.failed(NAT, &account, false, now), None);
                assert_eq!(throttle.address_failure(NAT, &account, now), None);
            }
            throttle.begin(NAT, &account, false, now).expect("admitted");
            throttle.succeeded(NAT, &account, false);
        }
        assert_eq!(throttle.begin(NAT, "user9", false, now), Ok(()));
        assert!(!throttle.is_banned(NAT, now));
    }

    #[test]
    fn success_forgives_earlier_typos() {
        let mut throttle = AuthThrottle::new(config());
        let now = 1_000_000;
        for _ in 0..2 {
            throttle.begin(NAT, "alice", false, now).expect("admitted");
            assert_eq!(throttle.failed(NAT, "alice", false, now), None);
        }
        throttle.begin(NAT, "alice", false, now).expect("admitted");
        throttle.succeeded(NAT, "alice", false);
        throttle.begin(NAT, "alice", false, now).expect("admitted");
        assert_eq!(throttle.failed(NAT, "alice", false, now), None, "counting starts again after a success");
    }

    #[test]
    fn parallel_guesses_count_when_they_start() {
        let mut throttle = AuthThrottle::new(config());
        let now = 1_000_000;
        // Three guesses in flight at once for one account: the fourth is refused before any of
        // the three is verified.
        for _ in 0..3 {
            assert_eq!(throttle.begin(NAT, "alice", false, now), Ok(()));
        }
        assert_eq!(throttle.begin(NAT, "alice", false, now), Err(Refusal::AccountLocked));
        throttle.abandoned(NAT, "alice", false);
        assert_eq!(throttle.begin(NAT, "alice", false, now), Ok(()), "an abandoned attempt frees its place");
    }

    #[test]
    fn a_spray_across_accounts_is_refused_and_the_counting_shard_bans() {
        let mut throttle = AuthThrottle::new(config());
        let now = 1_000_000;
        let mut ban = None;
        for n in 0..5 {
            let account = format!("user{n}");
            throttle.begin(NAT, &account, false, now).expect("admitted");
            assert_eq!(throttle.failed(NAT, &account, false, now), None);
            ban = throttle.address_failure(NAT, &account, now);
        }
        assert_eq!(throttle.begin(NAT, "user9", false, now), Err(Refusal::AddressBanned), "refused locally at once");
        let until = ban.expect("the fifth failure bans the address");
        throttle.ban(NAT, until);
        assert!(throttle.is_banned(NAT, now));
        assert!(!throttle.still_allowed(NAT, "user1", now));
        assert!(!throttle.is_banned(NAT, until));
    }

    #[test]
    fn honest_logins_at_once_from_one_address_are_not_refused_for_each_other() {
        let mut throttle = AuthThrottle::new(ThrottleConfig { concurrent_per_address: 64, ..config() });
        let now = 1_000_000;
        // Thirty people behind one NAT start logging in at the same moment: no failure yet,
        // so nothing refuses them (not the spray threshold of five).
        for n in 0..30 {
            assert_eq!(throttle.begin(NAT, &format!("person{n}"), false, now), Ok(()), "person {n}");
        }
        for n in 0..30 {
            throttle.succeeded(NAT, &format!("person{n}"), false);
        }
        // Once the address has failures, attempts in flight count toward the spray threshold,
        // and the ones past it wait (Busy), without any ban.
        throttle.begin(NAT, "typo", false, now).expect("admitted");
        throttle.failed(NAT, "typo", false, now);
        for n in 0..4 {
            assert_eq!(throttle.begin(NAT, &format!("next{n}"), false, now), Ok(()));
        }
        assert_eq!(throttle.begin(NAT, "next9", false, now), Err(Refusal::Busy));
        assert_eq!(throttle.begin(NAT, "typo", false, now), Ok(()), "an account that failed already adds no new failed account");
        assert!(!throttle.is_banned(NAT, now));
    }

    #[test]
    fn verdicts_in_flight_stop_at_the_spray_threshold() {
        let mut throttle = AuthThrottle::new(config());
        let now = 1_000_000;
        // A fresh address starts thirty SCRAM exchanges at once (nothing refuses them: no
        // failure yet), then its proofs arrive.
        for n in 0..30 {
            throttle.begin(NAT, &format!("victim{n}"), false, now).expect("admitted");
        }
        let max = config().failed_accounts_per_address_max;
        for n in 0..max {
            let account = format!("victim{n}");
            assert!(throttle.still_allowed(NAT, &account, now), "verdict {n} is given");
            throttle.failed(NAT, &account, false, now);
        }
        // The threshold is reached on this shard: no further verdict, right or wrong, before
        // the ban's broadcast arrives.
        assert!(!throttle.still_allowed(NAT, &format!("victim{max}"), now));
        assert!(throttle.still_allowed(OTHER, "victim0", now));
        assert!(throttle.still_allowed(NAT, "victim0", now + config().window_ms), "failures expire");
    }

    #[test]
    fn password_hashing_in_flight_per_address_is_capped() {
        let mut throttle = AuthThrottle::new(ThrottleConfig { failed_accounts_per_address_max: 100, ..config() });
        let now = 1_000_000;
        for n in 0..4 {
            assert_eq!(throttle.begin(NAT, &format!("u{n}"), true, now), Ok(()));
        }
        assert_eq!(throttle.begin(NAT, "u9", true, now), Err(Refusal::Busy));
        assert_eq!(throttle.begin(NAT, "scram", false, now), Ok(()), "SCRAM costs the server no hashing");
        assert_eq!(throttle.begin(OTHER, "u9", true, now), Ok(()));
        throttle.succeeded(NAT, "u0", true);
        assert_eq!(throttle.begin(NAT, "u9", true, now), Ok(()));
    }

    #[test]
    fn a_ban_while_in_flight_stops_the_final_step() {
        let mut throttle = AuthThrottle::new(config());
        let now = 1_000_000;
        throttle.begin(NAT, "alice", false, now).expect("admitted");
        assert!(throttle.still_allowed(NAT, "alice", now));
        throttle.ban(NAT, now + 10_000);
        assert!(!throttle.still_allowed(NAT, "alice", now));
        throttle.abandoned(NAT, "alice", false);
    }

    #[test]
    fn tables_stay_bounded() {
        let mut throttle = AuthThrottle::new(config());
        let now = 1_000_000;
        for n in 0..(THROTTLE_ENTRIES_MAX + 10) {
            let address = IpAddr::V6(std::net::Ipv6Addr::from(n as u128));
            if throttle.begin(address, "x", false, now).is_ok() {
                throttle.succeeded(address, "x", false);
            }
        }
        assert!(throttle.entries() <= 2 * THROTTLE_ENTRIES_MAX);
    }
}
