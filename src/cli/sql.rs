//! `hms-guard sql`: a shell for Hive's authorization statements (README.md, "Administering
//! grants"). Statements from `-e`, `-f`, standard input or an interactive prompt (line
//! editing, history) run through `grants::Session`; `--plan`/`--apply`/`--export` through
//! `grants::plan`.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::auth::tls::UpstreamTlsSettings;
use crate::config::ThriftUri;
use crate::grants::client::{Client, Target};
use crate::grants::grammar::{parse_script, SyntaxError};
use crate::grants::plan;
use crate::grants::session::Session;
use crate::grants::statement::Located;

/// Scripts larger than this are refused before they are read.
const MAX_SCRIPT_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, clap::Args)]
pub struct SqlArgs {
    /// The metastore address to connect to: hms-guard's listener (or a metastore).
    #[arg(long, env = "HMS_GUARD_URI", default_value = "thrift://127.0.0.1:9083")]
    pub uri: String,
    /// The user to act as, sent with set_ugi (hms-guard in set_ugi mode; default: $USER).
    /// With a client certificate or Kerberos, the name used as grantor and by SET ROLE.
    #[arg(long, env = "HMS_GUARD_USER")]
    pub user: Option<String>,
    /// Connect with TLS, trusting this CA (PEM).
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) to identify with (certificate mode), with --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The server name to verify (default: the URI's host).
    #[arg(long)]
    pub tls_server_name: Option<String>,
    /// Authenticate with Kerberos (SASL/GSSAPI) to this service principal, e.g.
    /// hive/_HOST@EXAMPLE.COM (_HOST: the URI's host); the ticket comes from the user's
    /// ticket cache (kinit).
    #[arg(long)]
    pub kerberos: Option<String>,
    /// Bound on connecting and on each call.
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// Run these statements (`;`-separated) and exit.
    #[arg(short = 'e', long = "execute", conflicts_with_all = ["file", "plan", "apply", "export"])]
    pub execute: Option<String>,
    /// Run the statements of FILE (`-` for standard input) and exit.
    #[arg(short = 'f', long = "file", conflicts_with_all = ["plan", "apply", "export"])]
    pub file: Option<PathBuf>,
    /// Print what running FILE would change against the current grants: added (+),
    /// changed (~), removed (-) and unchanged (=). Changes nothing.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["apply", "export"])]
    pub plan: Option<PathBuf>,
    /// Make exactly the changes --plan prints for FILE (a second apply changes nothing).
    #[arg(long, value_name = "FILE", conflicts_with = "export")]
    pub apply: Option<PathBuf>,
    /// With --plan/--apply: FILE is the whole truth for the roles it creates or grants and
    /// the objects it grants on; other grants there are revoked.
    #[arg(long)]
    pub prune: bool,
    /// Write the current grants (of --db, or of every database) as statements.
    #[arg(long)]
    pub export: bool,
    /// The database --export writes.
    #[arg(long, requires = "export")]
    pub db: Option<String>,
    /// Interactive history file (default: ~/.hms_guard_sql_history).
    #[arg(long, env = "HMS_GUARD_SQL_HISTORY")]
    pub history: Option<PathBuf>,
}

/// Runs the command; exit 0 done, 1 a statement failed (refused, missing object), 2 usage,
/// syntax or connection error.
pub fn main(args: SqlArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hms-guard sql: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failed::Statement(m)) => {
            eprintln!("{m}");
            ExitCode::from(1)
        }
        Err(Failed::Usage(m)) => {
            eprintln!("hms-guard sql: {m}");
            ExitCode::from(2)
        }
    }
}

enum Failed {
    Usage(String),
    Statement(String),
}

fn target(args: &SqlArgs) -> Result<Target, Failed> {
    let uri = ThriftUri::parse(&args.uri).map_err(|e| Failed::Usage(format!("--uri: {e}")))?;
    let tls = if args.tls_ca.is_some() || args.tls_cert.is_some() {
        let Some(ca) = args.tls_ca.clone() else {
            return Err(Failed::Usage("--tls-cert needs --tls-ca".into()));
        };
        Some(UpstreamTlsSettings {
            ca,
            cert: args.tls_cert.clone(),
            key: args.tls_key.clone(),
            server_name: args.tls_server_name.clone(),
        })
    } else {
        None
    };
    let proven = args.kerberos.is_some() || args.tls_cert.is_some();
    let user = args
        .user
        .clone()
        .or_else(|| (!proven).then(|| std::env::var("USER").ok()).flatten());
    Ok(Target {
        uri,
        user,
        tls,
        kerberos: args.kerberos.clone(),
        timeout: Duration::from_millis(args.timeout_ms),
    })
}

fn read_script(path: &std::path::Path) -> Result<String, Failed> {
    let mut text = String::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin()
            .take(MAX_SCRIPT_BYTES + 1)
            .read_to_string(&mut text)
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_SCRIPT_BYTES + 1).read_to_string(&mut text))
    };
    read.map_err(|e| Failed::Usage(format!("cannot read {}: {e}", path.display())))?;
    if text.len() as u64 > MAX_SCRIPT_BYTES {
        return Err(Failed::Usage(format!(
            "{} is larger than {MAX_SCRIPT_BYTES} bytes",
            path.display()
        )));
    }
    Ok(text)
}

fn parse(source: &str, name: &str) -> Result<Vec<Located>, Failed> {
    parse_script(source).map_err(|e: SyntaxError| Failed::Usage(format!("{name}: {e}")))
}

async fn connect(args: &SqlArgs) -> Result<Client, Failed> {
    let t = target(args)?;
    Client::connect(&t)
        .await
        .map_err(|e| Failed::Usage(format!("cannot connect to {}: {e}", t.uri)))
}

async fn run(args: SqlArgs) -> Result<(), Failed> {
    if args.prune && args.plan.is_none() && args.apply.is_none() {
        return Err(Failed::Usage("--prune goes with --plan or --apply".into()));
    }
    if let Some(file) = args.plan.clone().or(args.apply.clone()) {
        let statements = parse(&read_script(&file)?, &file.display().to_string())?;
        let mut session = Session::new(connect(&args).await?);
        let effects = plan::effects(&mut session, &statements)
            .await
            .map_err(|(line, e)| {
                Failed::Statement(format!("{}: line {line}: {e}", file.display()))
            })?;
        let planned = plan::plan(&mut session.client, &effects, args.prune)
            .await
            .map_err(|e| Failed::Statement(format!("reading the current grants: {e}")))?;
        print!("{}", planned.render());
        if args.apply.is_some() {
            match plan::apply(&mut session.client, &planned).await {
                Ok(n) => println!("Applied {n} change(s)."),
                Err((i, e)) => {
                    return Err(Failed::Statement(format!(
                        "applied {i} of {} change(s); then {}: {e}",
                        planned.changes.len(),
                        planned.changes[i].text()
                    )))
                }
            }
        }
        return Ok(());
    }
    if args.export {
        let mut client = connect(&args).await?;
        let text = plan::export(&mut client, args.db.as_deref())
            .await
            .map_err(|e| Failed::Statement(format!("export: {e}")))?;
        print!("{text}");
        return Ok(());
    }
    let script = match (&args.execute, &args.file) {
        (Some(e), _) => Some((e.clone(), "-e".to_string())),
        (None, Some(f)) => Some((read_script(f)?, f.display().to_string())),
        (None, None) if !std::io::stdin().is_terminal() => Some((
            read_script(std::path::Path::new("-"))?,
            "(stdin)".to_string(),
        )),
        (None, None) => None,
    };
    match script {
        Some((text, name)) => {
            let statements = parse(&text, &name)?;
            let mut session = Session::new(connect(&args).await?);
            for s in &statements {
                match session.run(s).await {
                    Ok(out) => print!("{out}"),
                    Err(e) => {
                        return Err(Failed::Statement(format!(
                            "{name}: line {}: {}: {e}",
                            s.line, s.text
                        )))
                    }
                }
            }
            Ok(())
        }
        None => interactive(&args).await,
    }
}

/// The prompt: a statement ends with `;` (it may span lines); `exit;`/`quit;` or end of
/// input (Ctrl-D) leave. Errors are printed and the shell goes on.
async fn interactive(args: &SqlArgs) -> Result<(), Failed> {
    use rustyline::error::ReadlineError;
    let mut session = Session::new(connect(args).await?);
    let mut editor = rustyline::DefaultEditor::new()
        .map_err(|e| Failed::Usage(format!("cannot start the line editor: {e}")))?;
    let history = args.history.clone().or_else(|| {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".hms_guard_sql_history"))
    });
    if let Some(h) = &history {
        // A missing history file is the first session's.
        let _ = editor.load_history(h);
    }
    println!(
        "hms-guard sql: connected to {} as {}. Statements end with `;`; exit; or Ctrl-D leaves.",
        args.uri,
        if session.client.user.is_empty() {
            "the proven identity"
        } else {
            &session.client.user
        }
    );
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "hms-guard> "
        } else {
            "         > "
        };
        let line = match editor.readline(prompt) {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(Failed::Usage(format!("reading input: {e}"))),
        };
        buffer.push_str(&line);
        buffer.push('\n');
        let trimmed = buffer.trim();
        if trimmed.is_empty() {
            buffer.clear();
            continue;
        }
        if !trimmed.ends_with(';') {
            continue;
        }
        let _ = editor.add_history_entry(trimmed);
        let text = std::mem::take(&mut buffer);
        let word = text
            .trim()
            .trim_end_matches(';')
            .trim()
            .to_ascii_lowercase();
        if word == "exit" || word == "quit" {
            break;
        }
        match parse_script(&text) {
            Err(e) => eprintln!("{e}"),
            Ok(statements) => {
                for s in &statements {
                    match session.run(s).await {
                        Ok(out) => print!("{out}"),
                        Err(e) => {
                            eprintln!("FAILED: {}: {e}", s.text);
                            break;
                        }
                    }
                }
            }
        }
    }
    if let Some(h) = &history {
        if let Err(e) = editor.save_history(h) {
            eprintln!("hms-guard sql: history not saved to {}: {e}", h.display());
        }
    }
    Ok(())
}
