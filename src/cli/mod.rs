//! Command line (README.md, command line): `serve`, `check-config`, `explain`, `access`, `sql`.

pub mod access;
pub mod explain;
pub mod sql;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, CONFIG_ENV};
use crate::settings::Settings;

#[derive(Debug, Parser)]
#[command(
    name = "hms-guard",
    version,
    about = "Authorization proxy for the Hive Metastore Thrift API"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Serve {
        /// Config file (TOML). Without it, defaults plus the flags below.
        #[arg(long, env = CONFIG_ENV)]
        config: Option<PathBuf>,
        /// Thrift listen address (overrides server.listen).
        #[arg(long)]
        listen: Option<String>,
        /// Metastore URI, repeatable, tried in order (overrides upstream.uris).
        #[arg(long = "upstream")]
        upstream: Vec<String>,
        /// Admin HTTP address (overrides admin.listen; empty disables).
        #[arg(long)]
        admin_listen: Option<String>,
    },
    /// Print the decision the proxy would make for a user, method and object, and why
    /// (asks the configured metastore for grants and owners). Exit 0 allowed, 1 denied,
    /// 2 usage or config error.
    Explain {
        #[arg(long, env = CONFIG_ENV)]
        config: PathBuf,
        /// The user (as `set_ugi` would claim it).
        #[arg(long)]
        user: String,
        /// A group of the user, repeatable (default: the groups the proxy's config gives).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Metastore method, e.g. get_table, create_table, alter_table, drop_table.
        #[arg(long)]
        method: String,
        #[arg(long)]
        db: String,
        #[arg(long)]
        table: Option<String>,
        /// Storage location (create/alter with a location).
        #[arg(long)]
        location: Option<String>,
        /// Role of grant_role / revoke_role / create_role / drop_role.
        #[arg(long)]
        role: Option<String>,
        /// Privilege(s) of grant_privileges / revoke_privileges, e.g. SELECT,INSERT.
        #[arg(long)]
        privilege: Option<String>,
    },
    /// Access review, read fresh from the configured metastore: who holds each privilege on a
    /// table (--table), or what a user may do and why (--user). Exit 0 done, 2 usage, config
    /// or metastore error.
    Access(access::Args),
    /// Run Hive's authorization statements (GRANT, REVOKE, CREATE ROLE, SHOW GRANT, …)
    /// through hms-guard, as the metastore calls Hive makes: interactively, from -e or -f,
    /// or as code (--plan, --apply, --export). Exit 0 done, 1 a statement failed, 2 usage,
    /// syntax or connection error.
    Sql(Box<sql::SqlArgs>),
    /// Validate a config file: exit 0 if valid, else print every error and exit 2.
    CheckConfig {
        #[arg(long, env = CONFIG_ENV)]
        config: PathBuf,
    },
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Sql(args) => sql::main(*args),
        Command::Explain {
            config,
            user,
            groups,
            method,
            db,
            table,
            location,
            role,
            privilege,
        } => {
            let request = crate::cli::explain::Request {
                user,
                groups,
                method,
                db,
                table,
                location,
                role,
                privilege,
            };
            explain(&config, &request)
        }
        Command::Access(args) => access_command(&args),
        Command::Serve {
            config,
            listen,
            upstream,
            admin_listen,
        } => serve(config.as_deref(), listen, upstream, admin_listen),
    }
}

/// `check-config`: exit 0 if the file is valid, else every error and exit 2.
fn check_config(config: &std::path::Path) -> ExitCode {
    match load(config) {
        Ok(_) => {
            println!("{}: valid", config.display());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `explain`: prints the decision; exit 0 allowed, 1 denied, 2 usage or config error.
fn explain(config: &std::path::Path, request: &crate::cli::explain::Request) -> ExitCode {
    let cfg = match load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(k) = &cfg.upstream_kerberos {
        // Before the runtime's threads: MIT krb5 is told through the environment.
        k.configure_process();
    }
    let runtime = match runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(crate::cli::explain::explain(&cfg, request)) {
        Ok(e) => {
            print!("{}", e.text);
            if e.allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("hms-guard explain: {e}");
            ExitCode::from(2)
        }
    }
}

/// `access`: prints the review; exit 0 done, 2 usage, config or metastore error.
fn access_command(args: &access::Args) -> ExitCode {
    let cfg = match load(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(k) = &cfg.upstream_kerberos {
        k.configure_process();
    }
    let runtime = match runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(access::access(&cfg, &args.request())) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hms-guard access: {e}");
            ExitCode::from(2)
        }
    }
}

/// `serve`: runs the proxy until it stops.
fn serve(
    config: Option<&std::path::Path>,
    listen: Option<String>,
    upstream: Vec<String>,
    admin_listen: Option<String>,
) -> ExitCode {
    let cfg = match serve_config(config, listen, upstream, admin_listen) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let source = source_name(config);
    let settings = match Settings::resolve(cfg.clone()) {
        Ok(s) => s,
        Err(errors) => {
            report(&source, &errors);
            return ExitCode::from(2);
        }
    };
    if let Err(code) = configure_kerberos(&settings) {
        return code;
    }
    crate::ops::telemetry::init(&cfg.logging);
    let runtime = match runtime(tokio::runtime::Builder::new_multi_thread()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(crate::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "hms-guard failed");
            eprintln!("hms-guard: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How errors name the config: its path, or `(defaults)` without one.
fn source_name(config: Option<&std::path::Path>) -> String {
    config.map_or_else(|| "(defaults)".to_string(), |p| p.display().to_string())
}

/// The config of `serve`: the file (or the defaults) parsed, then the flags over it; not yet
/// validated. On errors, prints them (exit code 2).
fn serve_config(
    config: Option<&std::path::Path>,
    listen: Option<String>,
    upstream: Vec<String>,
    admin_listen: Option<String>,
) -> Result<Config, ExitCode> {
    let text = match config {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("hms-guard: cannot read {}: {e}", path.display());
                return Err(ExitCode::from(2));
            }
        },
        None => String::new(),
    };
    let mut cfg = match Config::parse_unvalidated(&text) {
        Ok(c) => c,
        Err(errors) => {
            report(&source_name(config), &errors);
            return Err(ExitCode::from(2));
        }
    };
    if let Some(l) = listen {
        cfg.server.listen = l;
    }
    if !upstream.is_empty() {
        cfg.upstream.uris = upstream;
    }
    if let Some(a) = admin_listen {
        cfg.admin.listen = a;
    }
    Ok(cfg)
}

/// Configures Kerberos for the process (both sides) and checks the acceptor's keytab (exit
/// code 2 when it is unusable).
fn configure_kerberos(settings: &Settings) -> Result<(), ExitCode> {
    if let Some(k) = &settings.identity.kerberos {
        // Before any thread starts: MIT krb5 is told through the environment.
        k.configure_process();
        if let Err(e) = k.acceptor() {
            eprintln!("hms-guard: identity.kerberos: {e}");
            return Err(ExitCode::from(2));
        }
    }
    if let Some(k) = &settings.upstream_kerberos {
        k.configure_process();
    }
    Ok(())
}

/// Loads, validates and resolves a config file; on errors, prints every one (exit code 2).
fn load(path: &std::path::Path) -> Result<Settings, ExitCode> {
    Config::load(path)
        .and_then(Settings::resolve)
        .map_err(|errors| {
            report(&path.display().to_string(), &errors);
            ExitCode::from(2)
        })
}

fn runtime(mut builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("hms-guard: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

fn report(source: &str, errors: &[ConfigError]) {
    eprintln!("{source}: {} error(s)", errors.len());
    for e in errors {
        eprintln!("  {e}");
    }
}
