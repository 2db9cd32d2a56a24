//! The `confab` command: `confab serve` runs the server, `confab ctl` calls its admin API.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use confab_shards::config::Config;

/// mimalloc, tuned by `tune_allocator`: with glibc's arenas the transient buffers of TLS
/// handshakes left ~23 KiB of RSS per idle session (idle scenario, 3,000 TLS sessions); with
/// mimalloc committing lazily and purging freed pages at once, ~9.5 KiB, and a 15 MiB
/// baseline instead of 44 MiB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc settings for the server: commit arena memory only when used, and return freed
/// pages to the system at once (idle shards never allocate again, so a delayed purge would
/// never run). mimalloc reads them before `main`, so the server re-executes itself once with
/// them in its environment; an operator's own MIMALLOC_* values are left alone.
const ALLOCATOR_ENVIRONMENT: [(&str, &str); 2] = [("MIMALLOC_ARENA_EAGER_COMMIT", "0"), ("MIMALLOC_PURGE_DELAY", "0")];

fn tune_allocator() {
    use std::os::unix::process::CommandExt as _;
    if ALLOCATOR_ENVIRONMENT.iter().all(|(key, _)| std::env::var_os(key).is_some()) {
        return;
    }
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let mut command = std::process::Command::new("/proc/self/exe");
    command.arg0(argv0).args(args);
    for (key, value) in ALLOCATOR_ENVIRONMENT {
        if std::env::var_os(key).is_none() {
            command.env(key, value);
        }
    }
    // exec only returns on failure; the server then runs with mimalloc's defaults.
    let error = command.exec();
    eprintln!("confab: could not apply allocator settings ({error}); continuing with defaults");
}

#[derive(Parser)]
#[command(name = "confab", version, about = "Confab: an XMPP server (thread-per-core, io_uring)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (embedded defaults when no --config is given: domain localhost,
    /// ports 5222/5223/5280 on 127.0.0.1, data in ./confab-data).
    Serve {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Call the admin API, like ejabberdctl: `confab ctl register alice localhost secret`.
    /// Commands: register, unregister, change_password, check_account, registered_users,
    /// connected_users_number, status.
    Ctl {
        /// Read the API address and token from this configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// API base URL (overrides the configuration), e.g. http://127.0.0.1:5280
        #[arg(long)]
        url: Option<String>,
        /// Bearer token (overrides the configuration).
        #[arg(long, env = "CONFAB_ADMIN_TOKEN")]
        token: Option<String>,
        command: String,
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            tune_allocator();
            let config = match load(config.as_deref()) {
                Ok(config) => config,
                Err(message) => {
                    eprintln!("confab: {message}");
                    return ExitCode::from(2);
                }
            };
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| config.log.level.as_str().into()))
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            match confab_shards::serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("confab: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Ctl { config, url, token, command, args } => {
            let loaded = match config.as_deref().map(|path| load(Some(path))).transpose() {
                Ok(loaded) => loaded.unwrap_or_default(),
                Err(message) => {
                    eprintln!("confab: {message}");
                    return ExitCode::from(2);
                }
            };
            let url = url.unwrap_or_else(|| match loaded.listen.http {
                Some(address) => format!("http://{address}"),
                None => "http://127.0.0.1:5280".into(),
            });
            let token = token.or(loaded.admin.token);
            match confab_shards::admin::ctl(&url, token.as_deref(), &command, &args) {
                Ok(text) => {
                    if !text.is_empty() {
                        println!("{text}");
                    }
                    ExitCode::SUCCESS
                }
                Err(message) => {
                    eprintln!("{message}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn load(path: Option<&std::path::Path>) -> Result<Config, String> {
    match path {
        Some(path) => Config::load(path).map_err(|e| e.to_string()),
        None => Config::parse("").map_err(|e| e.to_string()),
    }
}
