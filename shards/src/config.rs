//! Server configuration: the TOML file's shape, its defaults and its validation.
//!
//! Every key has a default, so `confab serve` runs with no file at all. Unknown keys and bad
//! values are errors that name the key. The loaded `Config` is immutable and shared by all
//! shards (the only object they share). This module does not open sockets or files other than
//! the configuration file itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use confab_core::limits;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The XMPP domain served (RFC 7622 domainpart).
    pub domain: String,
    /// Directory for the store partitions, the generated certificate and the server secret.
    pub data_dir: PathBuf,
    /// Number of shards (executor threads); 0 means one per available core.
    pub shards: usize,
    /// Pin shard k to CPU k (when there are at least as many CPUs as shards).
    pub pin_shards: bool,
    /// Memory glommio reserves per shard for I/O buffers, in bytes. Locked memory is scarce
    /// here (memlock 8 MiB), and sockets do not use it.
    pub io_memory_bytes: usize,
    pub listen: Listen,
    pub tls: Tls,
    pub limits: Limits,
    pub security: Security,
    pub admin: Admin,
    pub registration: Registration,
    pub muc: Muc,
    pub log: Log,
}

/// XEP-0045 multi-user chat.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Muc {
    /// Serve rooms at `domain`.
    pub enabled: bool,
    /// The service's domain; empty means `conference.<domain>`.
    pub domain: String,
    /// The service's name in disco (XEP-0030 identity).
    pub name: String,
    /// Occupants a room may hold; also the default for new rooms (rooms may lower it).
    pub max_users: u32,
    /// History messages a new room keeps (XEP-0045 §7.2.15).
    pub history_size: u32,
    /// Messages per second one occupant may send, sustained, and its burst.
    pub occupant_messages_per_s: f64,
    pub occupant_burst: f64,
    /// Rooms one session may be in at once.
    pub rooms_per_session: usize,
    /// Rooms one shard holds.
    pub rooms_per_shard: usize,
}

impl Default for Muc {
    fn default() -> Self {
        Muc {
            enabled: true,
            domain: String::new(),
            name: "Chatrooms".into(),
            max_users: limits::MUC_USERS_MAX,
            history_size: limits::MUC_HISTORY_SIZE,
            occupant_messages_per_s: limits::MUC_OCCUPANT_MESSAGES_PER_S,
            occupant_burst: limits::MUC_OCCUPANT_BURST,
            rooms_per_session: limits::MUC_ROOMS_PER_SESSION_MAX,
            rooms_per_shard: limits::MUC_ROOMS_PER_SHARD_MAX,
        }
    }
}

impl Security {
    /// The authentication throttle's settings.
    pub fn throttle(&self) -> confab_core::throttle::ThrottleConfig {
        confab_core::throttle::ThrottleConfig {
            account_failures_max: self.auth_failures_per_account,
            failed_accounts_per_address_max: self.auth_failed_accounts_per_address,
            concurrent_per_address: self.auth_concurrent_per_address,
            window_ms: self.ban_ms,
        }
    }
}

impl Muc {
    pub fn settings(&self) -> confab_core::muc::Settings {
        confab_core::muc::Settings {
            max_users: self.max_users,
            history_size: self.history_size,
            occupant_messages_per_s: self.occupant_messages_per_s,
            occupant_burst: self.occupant_burst,
        }
    }
}

/// XEP-0077 in-band registration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Registration {
    /// Let anyone create an account from a client (off by default: accounts come from the
    /// admin API or the directory).
    pub enabled: bool,
    /// Seconds before the same address may create another account (as ejabberd's
    /// registration_timeout), so one host cannot mass-create accounts.
    pub interval_s: u64,
}

impl Default for Registration {
    fn default() -> Self {
        Registration { enabled: false, interval_s: confab_core::limits::REGISTRATION_INTERVAL_S }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// Client connections with STARTTLS (RFC 6120 §5).
    pub c2s: Option<SocketAddr>,
    /// Client connections with TLS from the first byte (XEP-0368).
    pub c2s_tls: Option<SocketAddr>,
    /// The admin HTTP API.
    pub http: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// PEM certificate chain; when absent a self-signed ECDSA certificate for the domain is
    /// generated at first start and kept in the data directory.
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`.
    pub key: Option<PathBuf>,
    /// Refuse everything but STARTTLS before TLS (RFC 6120 §5.3.1).
    pub required: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub stanza_bytes_preauth: usize,
    pub stanza_bytes: usize,
    pub element_depth: usize,
    pub attributes: usize,
    pub namespace_declarations: usize,
    pub preauth_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub sessions_per_user: usize,
    /// Roster entries per user (RFC 6121 §2).
    pub roster_items: usize,
    /// Offline messages kept per user (XEP-0160).
    pub offline_messages: usize,
    /// Messages kept in each user's archive (XEP-0313).
    pub archive_messages: u64,
    /// Seconds a dropped session with stream management may be resumed (XEP-0198 §5).
    pub resume_timeout_s: u32,
    /// Bytes of stanzas waiting for one session's connection; past it senders are refused
    /// (`resource-constraint`) or their copies counted as dropped.
    pub session_inbox_bytes: usize,
    /// Milliseconds a connection may be unable to write while its inbox refuses stanzas before
    /// it is closed (its unacknowledged stanzas then go where XEP-0198 §5 says).
    pub stalled_reader_timeout_ms: u64,
    /// Bytes of stored state one account may keep (roster, vCard, private XML, PEP, offline
    /// messages, …), all in memory on its home shard.
    pub account_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Security {
    /// Wrong passwords for one account from one address before that account is locked for
    /// that address (for `ban_ms`). Everyone else behind the address carries on.
    #[serde(alias = "auth_failures_before_ban")]
    pub auth_failures_per_account: u32,
    /// Distinct accounts with a wrong password from one address before the address is banned:
    /// a password spray. One person's repeated typos count once.
    pub auth_failed_accounts_per_address: u32,
    /// Password checks (SASL PLAIN) from one address in flight at once, per shard; beyond, the
    /// client is told `temporary-auth-failure` and retries.
    pub auth_concurrent_per_address: u32,
    /// Threads that hash passwords (PLAIN logins, new accounts and passwords), at idle CPU
    /// priority (they run on what the shards and the store leave); 0: one per shard.
    pub hash_threads: usize,
    /// How long failures are remembered and a lock or ban lasts, in milliseconds.
    pub ban_ms: u64,
    /// PBKDF2 iterations for newly stored SCRAM secrets (RFC 7677 §4 recommends ≥ 4096).
    pub scram_iterations: u32,
    /// SASL attempts per stream before it is closed.
    pub sasl_attempts: u32,
    /// Fail SCRAM logins that send the "y" channel-binding flag while -PLUS is offered
    /// (RFC 5802 §6). Off by default so clients supporting only tls-unique can log in.
    pub reject_channel_binding_downgrade: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Bearer token required from every client once set; without one, only loopback clients
    /// may call the API. An empty token is refused (it would be a password of nothing).
    pub token: Option<String>,
    /// Host names (optionally `name:port`) the API answers to, beside its listen address,
    /// `localhost` and the domain: a request naming any other host is refused, so a web page
    /// cannot reach the API through DNS rebinding.
    pub hosts: Vec<String>,
    /// HTTP connections served at once; more are closed at accept.
    pub connections_max: usize,
    /// Time a client has to send a request's headers, and then its body, in milliseconds.
    pub header_timeout_ms: u64,
    pub body_timeout_ms: u64,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            token: None,
            hosts: Vec::new(),
            connections_max: limits::HTTP_CONNECTIONS_MAX,
            header_timeout_ms: limits::HTTP_HEADER_TIMEOUT_MS,
            body_timeout_ms: limits::HTTP_BODY_TIMEOUT_MS,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// A `tracing` filter, e.g. "info" or "confab_shards=debug".
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            domain: "localhost".into(),
            data_dir: PathBuf::from("confab-data"),
            shards: 0,
            pin_shards: true,
            io_memory_bytes: 512 * 1024,
            listen: Listen::default(),
            tls: Tls::default(),
            limits: Limits::default(),
            security: Security::default(),
            admin: Admin::default(),
            registration: Registration::default(),
            muc: Muc::default(),
            log: Log::default(),
        }
    }
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            c2s: Some(SocketAddr::from(([127, 0, 0, 1], 5222))),
            c2s_tls: Some(SocketAddr::from(([127, 0, 0, 1], 5223))),
            http: Some(SocketAddr::from(([127, 0, 0, 1], 5280))),
        }
    }
}

impl Default for Tls {
    fn default() -> Self {
        Tls { cert: None, key: None, required: true }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            stanza_bytes_preauth: limits::STANZA_BYTES_PREAUTH_MAX,
            stanza_bytes: limits::STANZA_BYTES_MAX,
            element_depth: limits::ELEMENT_DEPTH_MAX,
            attributes: limits::ATTRIBUTES_MAX,
            namespace_declarations: limits::NAMESPACE_DECLARATIONS_MAX,
            preauth_timeout_ms: limits::PREAUTH_TIMEOUT_MS,
            idle_timeout_ms: limits::IDLE_TIMEOUT_MS,
            sessions_per_user: limits::SESSIONS_PER_USER_MAX,
            roster_items: limits::ROSTER_ITEMS_MAX,
            offline_messages: limits::OFFLINE_MESSAGES_MAX,
            archive_messages: limits::ARCHIVE_MESSAGES_MAX,
            resume_timeout_s: limits::RESUME_TIMEOUT_S,
            session_inbox_bytes: limits::SESSION_INBOX_BYTES_MAX,
            stalled_reader_timeout_ms: limits::STALLED_READER_TIMEOUT_MS,
            account_bytes: limits::ACCOUNT_BYTES_MAX,
        }
    }
}

impl Default for Security {
    fn default() -> Self {
        Security {
            auth_failures_per_account: limits::AUTH_FAILURES_PER_ACCOUNT,
            auth_failed_accounts_per_address: limits::AUTH_FAILED_ACCOUNTS_PER_ADDRESS,
            auth_concurrent_per_address: limits::AUTH_CONCURRENT_PER_ADDRESS,
            hash_threads: 0,
            ban_ms: limits::AUTH_BAN_MS,
            scram_iterations: confab_core::sasl::SCRAM_ITERATIONS_DEFAULT,
            sasl_attempts: limits::SASL_ATTEMPTS_MAX,
            reject_channel_binding_downgrade: false,
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Log { level: "info".into() }
    }
}

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

impl Config {
    /// Loads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let mut config = Config::parse(&text).map_err(|error| match error {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.into(), message },
            other => other,
        })?;
        // A relative data_dir is relative to the working directory, as for ejabberd's spool;
        // relative certificate paths are relative to the configuration file.
        let base = path.parent().unwrap_or(Path::new("."));
        for file in [&mut config.tls.cert, &mut config.tls.key].into_iter().flatten() {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        Ok(config)
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: PathBuf::from("config"), message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&mut self) -> Result<(), ConfigError> {
        self.domain = confab_core::jid::prepare_domain(&self.domain)
            .map_err(|e| ConfigError::Invalid { key: "domain", message: format!("{:?} is not a valid domain ({e})", self.domain) })?;
        if self.shards == 0 {
            self.shards = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        }
        if self.shards > 256 {
            return Err(ConfigError::Invalid { key: "shards", message: "at most 256 shards".into() });
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConfigError::Invalid { key: "tls.key", message: "tls.cert and tls.key go together".into() });
        }
        let l = &self.limits;
        let checks: [(&'static str, bool, &str); 11] = [
            ("limits.session_inbox_bytes", l.session_inbox_bytes >= l.stanza_bytes, "must be at least limits.stanza_bytes"),
            ("limits.stalled_reader_timeout_ms", l.stalled_reader_timeout_ms >= 100, "must be at least 100"),
            ("limits.account_bytes", l.account_bytes >= 64 * 1024, "must be at least 65536"),
            (
                "limits.stanza_bytes_preauth",
                (512..=l.stanza_bytes).contains(&l.stanza_bytes_preauth),
                "must be between 512 and limits.stanza_bytes",
            ),
            ("limits.stanza_bytes", (4096..=16 << 20).contains(&l.stanza_bytes), "must be between 4096 and 16 MiB"),
            ("limits.element_depth", (4..=1024).contains(&l.element_depth), "must be between 4 and 1024"),
            ("limits.attributes", (4..=4096).contains(&l.attributes), "must be between 4 and 4096"),
            ("limits.namespace_declarations", (2..=1024).contains(&l.namespace_declarations), "must be between 2 and 1024"),
            ("limits.preauth_timeout_ms", l.preauth_timeout_ms >= 100, "must be at least 100"),
            ("limits.idle_timeout_ms", l.idle_timeout_ms >= 1000, "must be at least 1000"),
            ("limits.sessions_per_user", l.sessions_per_user >= 1, "must be at least 1"),
        ];
        for (key, ok, message) in checks {
            if !ok {
                return Err(ConfigError::Invalid { key, message: message.into() });
            }
        }
        if self.security.scram_iterations < 4096 {
            return Err(ConfigError::Invalid { key: "security.scram_iterations", message: "must be at least 4096 (RFC 7677 §4)".into() });
        }
        if self.security.sasl_attempts < 2 {
            return Err(ConfigError::Invalid { key: "security.sasl_attempts", message: "must be at least 2 (RFC 6120 §6.4.5)".into() });
        }
        let s = &self.security;
        let security_checks: [(&'static str, bool, &str); 5] = [
            ("security.auth_failures_per_account", s.auth_failures_per_account >= 1, "must be at least 1"),
            (
                "security.auth_failed_accounts_per_address",
                (1..=10_000).contains(&s.auth_failed_accounts_per_address),
                "must be between 1 and 10000",
            ),
            ("security.auth_concurrent_per_address", s.auth_concurrent_per_address >= 1, "must be at least 1"),
            ("security.hash_threads", s.hash_threads <= 256, "must be at most 256"),
            ("security.ban_ms", (1_000..=30 * 24 * 3_600_000).contains(&s.ban_ms), "must be between 1000 and 30 days"),
        ];
        for (key, ok, message) in security_checks {
            if !ok {
                return Err(ConfigError::Invalid { key, message: message.into() });
            }
        }
        if self.security.hash_threads == 0 {
            self.security.hash_threads = self.shards;
        }
        if self.muc.domain.is_empty() {
            self.muc.domain = format!("conference.{}", self.domain);
        }
        self.muc.domain = confab_core::jid::prepare_domain(&self.muc.domain).map_err(|e| ConfigError::Invalid {
            key: "muc.domain",
            message: format!("{:?} is not a valid domain ({e})", self.muc.domain),
        })?;
        if self.muc.domain == self.domain {
            return Err(ConfigError::Invalid { key: "muc.domain", message: "must differ from domain".into() });
        }
        let m = &self.muc;
        let muc_checks: [(&'static str, bool, &str); 6] = [
            ("muc.max_users", (1..=100_000).contains(&m.max_users), "must be between 1 and 100000"),
            ("muc.history_size", m.history_size <= confab_core::muc::HISTORY_MAX, "must be at most 200"),
            ("muc.occupant_messages_per_s", m.occupant_messages_per_s > 0.0, "must be positive"),
            ("muc.occupant_burst", m.occupant_burst >= 1.0, "must be at least 1"),
            ("muc.rooms_per_session", m.rooms_per_session >= 1, "must be at least 1"),
            ("muc.rooms_per_shard", m.rooms_per_shard >= 1, "must be at least 1"),
        ];
        for (key, ok, message) in muc_checks {
            if !ok {
                return Err(ConfigError::Invalid { key, message: message.into() });
            }
        }
        if self.admin.token.as_deref().is_some_and(|token| token.trim().is_empty()) {
            return Err(ConfigError::Invalid {
                key: "admin.token",
                message: "must not be empty (remove the key to allow loopback clients only)".into(),
            });
        }
        let a = &self.admin;
        let admin_checks: [(&'static str, bool, &str); 3] = [
            ("admin.connections_max", (1..=65_536).contains(&a.connections_max), "must be between 1 and 65536"),
            ("admin.header_timeout_ms", a.header_timeout_ms >= 100, "must be at least 100"),
            ("admin.body_timeout_ms", a.body_timeout_ms >= 100, "must be at least 100"),
        ];
        for (key, ok, message) in admin_checks {
            if !ok {
                return Err(ConfigError::Invalid { key, message: message.into() });
            }
        }
        if self.io_memory_bytes < 64 * 1024 {
            return Err(ConfigError::Invalid { key: "io_memory_bytes", message: "must be at least 65536".into() });
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(ConfigError::Invalid { key: "log.level", message: format!("{:?} is not a tracing filter", self.log.level) });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_embedded_defaults() {
        let config = Config::parse("").expect("defaults are valid");
        assert_eq!(config.domain, "localhost");
        assert_eq!(config.listen.c2s, Some("127.0.0.1:5222".parse().expect("addr")));
        assert!(config.tls.required);
        assert!(config.shards >= 1);
        assert_eq!(config.muc.domain, "conference.localhost");
        assert!(config.muc.enabled);
    }

    #[test]
    fn the_documented_example_parses() {
        let text = r#"
            domain = "Example.COM"
            data_dir = "confab-data"
            shards = 2
            [listen]
            c2s = "127.0.0.1:5222"
            c2s_tls = "127.0.0.1:5223"
            http = "127.0.0.1:5280"
            [tls]
            cert = "cert.pem"
            key = "key.pem"
        "#;
        let config = Config::parse(text).expect("valid");
        assert_eq!(config.domain, "example.com");
        assert_eq!(config.shards, 2);
    }

    #[test]
    fn errors_name_the_key() {
        let unknown = Config::parse("domian = 'x'").expect_err("unknown key").to_string();
        assert!(unknown.contains("domian"), "{unknown}");
        let nested = Config::parse("[limits]\nstanza_bytez = 5").expect_err("unknown key").to_string();
        assert!(nested.contains("stanza_bytez"), "{nested}");
        let bad_type = Config::parse("shards = 'two'").expect_err("bad type").to_string();
        assert!(bad_type.contains("shards"), "{bad_type}");
        let bad_value = Config::parse("[limits]\nstanza_bytes = 10").expect_err("bad value").to_string();
        assert!(bad_value.contains("limits.stanza_bytes"), "{bad_value}");
        let bad_domain = Config::parse("domain = 'a b'").expect_err("bad domain").to_string();
        assert!(bad_domain.contains("`domain`"), "{bad_domain}");
        let half_tls = Config::parse("[tls]\ncert = 'c.pem'").expect_err("cert without key").to_string();
        assert!(half_tls.contains("tls.key"), "{half_tls}");
        let empty_token = Config::parse("[admin]\ntoken = ''").expect_err("empty token").to_string();
        assert!(empty_token.contains("admin.token"), "{empty_token}");
    }
}
