//! Load generator for hms-guard benchmarks (docs/BENCHMARKS.md; `benches/run.sh` drives it).
//!
//! Run as `cargo bench --bench loadgen -- <subcommand> ...`:
//!
//! - `load`: latency (p50/p99) and calls/s of `getVersion`, `get_table`, `get_all_tables`,
//!   `get_partition_names` or `get_partitions_by_filter` over N concurrent connections, against several targets (direct, haproxy, hms-guard) interleaved in rounds so
//!   drift on a noisy machine hits every target alike; per-round comparisons and their medians.
//! - `big-upstream`: a scripted metastore answering every call (but `set_ugi`, `getVersion` and
//!   oneway calls) with one REPLY of M MiB generated on the fly.
//! - `big-call`: one call, the whole reply read and validated with the project's scanner; MiB/s.
//! - `idle`: N connections, each doing `set_ugi` + `getVersion`, then held idle.
//!
//! Every client here speaks what Hive's Java client speaks: plain TCP, unframed strict binary,
//! `set_ugi` first, sequence ids from 1, one call in flight per connection.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use clap::{Args, Parser, Subcommand, ValueEnum};
use hms_guard::wire::codec::header::write_message_begin;
use hms_guard::wire::codec::{Limits, MessageType, Protocol, Scan, Scanner};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
#[command(
    name = "loadgen",
    bin_name = "cargo bench --bench loadgen --",
    about = "hms-guard benchmarks: load, big replies, idle connections"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Latency and calls/s of one method against several targets, interleaved in rounds.
    Load(LoadArgs),
    /// A scripted metastore whose replies (but set_ugi/getVersion) are M MiB, made on the fly.
    BigUpstream(BigUpstreamArgs),
    /// One call; reads and validates the whole reply; prints MiB/s.
    BigCall(BigCallArgs),
    /// Opens N connections (set_ugi + getVersion on each), then holds them idle.
    Idle(IdleArgs),
    /// In-process warm-cache decisions of `get_table` through the proxy's own policy stage
    /// (`Guard::check`, facts from a real metastore): thread CPU per decision.
    Decide(DecideArgs),
    /// Connection set-up time (connect, TLS handshake for `tls://` targets, set_ugi and a first
    /// getVersion), sequential connections, targets interleaved in rounds.
    Handshake(HandshakeArgs),
    /// The analysis of one view text of about 10 KB (`decision::views`): time per analysis.
    Views(ViewsArgs),
    /// In-process `get_table` of a table read whole (a grant) and of the same table narrowed
    /// (a view; its analysis cached): decision and reply, rounds interleaved.
    Narrow(NarrowArgs),
}

#[derive(Args)]
struct NarrowArgs {
    /// The metastore, table and a user who reads it whole (`--user`), as for `decide`.
    #[command(flatten)]
    call: DecideArgs,
    /// A user who reads it narrowed (SELECT on a view of it).
    #[arg(long)]
    narrowed_user: String,
}

/// The metastore's whole reply to one request (unframed binary).
async fn fetch_reply(metastore: &str, msg: &[u8]) -> io::Result<BytesMut> {
    let mut s = TcpStream::connect(metastore).await?;
    s.write_all(msg).await?;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut scanner = Scanner::new(Protocol::Binary, client_limits());
    loop {
        if s.read_buf(&mut buf).await? == 0 {
            return Err(io_err("the metastore closed before its reply was whole"));
        }
        scanner.reset();
        if let Scan::Complete(n) = scanner.advance(&buf).map_err(io_err_of)? {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn narrow(n: NarrowArgs) -> io::Result<()> {
    use hms_guard::decision::{Action, ReplyCheck};
    use hms_guard::listener::identity::{Identity, IdentitySource};
    let a = &n.call;
    let p = InProcess::new(&a.metastore, &a.db, &a.table).await?;
    let reply = fetch_reply(&a.metastore, &p.msg).await?;
    let whole = Identity::new(&a.user, &[], IdentitySource::SetUgi);
    let part = Identity::new(&n.narrowed_user, &[], IdentitySource::SetUgi);
    // One call: decided, then its reply as the connection hands it back.
    let one = |id| {
        let (p, reply) = (&p, &reply);
        async move {
            let d = p.decide(id).await?;
            let Action::Forward(f) = d.action else {
                return Err(io_err(format!("not allowed: {:?}", d.record)));
            };
            let r = p
                .guard
                .reply(&f.reply, p.transport, p.method, &p.header, reply.clone())
                .await
                .map_err(io_err_of)?;
            Ok::<_, io::Error>((matches!(f.reply, ReplyCheck::Narrow { .. }), r.bytes.len()))
        }
    };
    let (narrowed, full_len) = one(&whole).await?;
    if narrowed {
        return Err(io_err(format!("{} reads the table narrowed", a.user)));
    }
    let (narrowed, part_len) = one(&part).await?;
    if !narrowed || part_len >= full_len {
        return Err(io_err(format!(
            "{} does not read the table narrowed ({part_len} of {full_len} bytes)",
            n.narrowed_user
        )));
    }
    let facts_before = facts_calls(&p.metrics);
    let (mut plain_ns, mut narrow_ns) = (Vec::new(), Vec::new());
    for _ in 0..a.rounds {
        for (id, out) in [(&whole, &mut plain_ns), (&part, &mut narrow_ns)] {
            let t = Instant::now();
            for _ in 0..a.iterations {
                std::hint::black_box(one(id).await?);
            }
            out.push(t.elapsed().as_nanos() as f64 / f64::from(a.iterations));
        }
    }
    let facts = facts_calls(&p.metrics) - facts_before;
    let (plain_us, narrow_us) = (median(&plain_ns) / 1000.0, median(&narrow_ns) / 1000.0);
    println!(
        "narrow: get_table of a {} KB reply, decided and handed back, {} rounds of {} calls: read \
         whole (SELECT) median {:.2} us; narrowed (a view, its analysis cached; {} bytes left) \
         median {:.2} us; difference {:.2} us; facts calls during the run: {}",
        full_len / 1024,
        a.rounds,
        a.iterations,
        plain_us,
        part_len,
        narrow_us,
        narrow_us - plain_us,
        facts
    );
    let doc = json!({"kind": "narrow", "plain_us": plain_us, "narrowed_us": narrow_us,
        "difference_us": narrow_us - plain_us, "reply_bytes": full_len,
        "narrowed_bytes": part_len, "facts_calls": facts});
    write_json(&a.json_out, &doc)?;
    if facts != 0 {
        return Err(io_err(format!(
            "{facts} facts calls during warm-cache calls"
        )));
    }
    Ok(())
}

#[derive(Args)]
struct ViewsArgs {
    /// Analyses per round.
    #[arg(long, default_value_t = 200)]
    iterations: u32,
    #[arg(long, default_value_t = 10)]
    rounds: u32,
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
}

/// A qualifying view text of about 10 KB as Hive writes it: 236 qualified, quoted columns, a
/// filter on two partition columns with an IN list, one UNION ALL.
fn ten_kb_view() -> String {
    let cols: Vec<String> = (0..236)
        .map(|i| format!("`wide`.`column_{i:03}`"))
        .collect();
    let branch = |region: &str| {
        format!(
            "SELECT {} FROM `demo`.`wide` WHERE `wide`.`region` = '{region}' AND `wide`.`ds` IN \
             ('2026-01-01', '2026-01-02', '2026-01-03')",
            cols.join(", ")
        )
    };
    format!("{} UNION ALL {}", branch("eu"), branch("us"))
}

fn views(a: ViewsArgs) -> io::Result<()> {
    use hms_guard::decision::views::{analyze, ViewText};
    let text = ten_kb_view();
    let view = ViewText::HiveExpanded {
        text: &text,
        db: "demo",
    };
    let shape = analyze(&view).map_err(|e| io::Error::other(format!("the bench view: {e}")))?;
    assert_eq!(shape.branches.len(), 2);
    let mut per_round_us = Vec::new();
    for _ in 0..a.rounds {
        let t0 = Instant::now();
        for _ in 0..a.iterations {
            std::hint::black_box(analyze(std::hint::black_box(&view)).is_ok());
        }
        per_round_us.push(t0.elapsed().as_secs_f64() * 1e6 / a.iterations as f64);
    }
    let mut sorted = per_round_us.clone();
    sorted.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let median_us = sorted[sorted.len() / 2];
    println!(
        "views: analysis of a {} byte view text (236 columns, a partition filter, UNION ALL): \
         median per round {median_us:.1} us each",
        text.len()
    );
    let doc = json!({"kind": "views", "bytes": text.len(), "median_us": median_us,
        "per_round_us": per_round_us});
    write_json(&a.json_out, &doc)?;
    Ok(())
}

#[derive(Args)]
struct HandshakeArgs {
    /// NAME=HOST:PORT, or NAME=tls://HOST:PORT (TLS client settings from LOADGEN_TLS_CA,
    /// LOADGEN_TLS_CERT, LOADGEN_TLS_KEY; the server name is `localhost`), or
    /// NAME=krb://HOST:PORT / NAME=krb-conf://HOST:PORT (Kerberos: LOADGEN_KRB_PRINCIPAL,
    /// LOADGEN_KRB_SERVICE, tickets in KRB5CCNAME).
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// Connections per target per round.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    #[arg(long, default_value = "bench")]
    user: String,
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
}

#[derive(Args)]
struct DecideArgs {
    /// The metastore the facts come from (host:port).
    #[arg(long)]
    metastore: String,
    #[arg(long, default_value = "bench")]
    db: String,
    #[arg(long, default_value = "t")]
    table: String,
    /// The deciding user (set_ugi identity).
    #[arg(long, default_value = "bench")]
    user: String,
    /// Decisions per round.
    #[arg(long, default_value_t = 20_000)]
    iterations: u32,
    #[arg(long, default_value_t = 10)]
    rounds: u32,
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
}

/// utime + stime of this process in clock ticks (Linux /proc; USER_HZ = 100). The loop runs
/// on a current-thread runtime, so its wall time per decision is CPU time unless the machine
/// preempts it; both are reported.
fn process_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // After the name: state is field 3; utime and stime are fields 14 and 15.
    let n = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    n(14) + n(15)
}

/// An in-process policy stage with its facts from a real metastore, and one `get_table`
/// request, for the in-process measures (`decide`, `narrow`).
struct InProcess {
    guard: hms_guard::decision::Guard,
    metrics: Arc<hms_guard::ops::metrics::Metrics>,
    msg: BytesMut,
    header: hms_guard::wire::codec::MessageHeader,
    method: Option<&'static hms_guard::wire::router::Method>,
    limits: hms_guard::wire::schema::ReadLimits,
    transport: hms_guard::wire::transport::Transport,
}

impl InProcess {
    async fn new(metastore: &str, db: &str, table: &str) -> io::Result<InProcess> {
        use hms_guard::decision::Guard;
        use hms_guard::wire::codec::writer::Writer;
        let text =
            format!("[upstream]\nuris = [\"thrift://{metastore}\"]\n[storage]\nenabled = false\n");
        let settings = hms_guard::config::Config::parse(&text)
            .and_then(hms_guard::settings::Settings::resolve)
            .map_err(|e| io::Error::other(format!("config: {e:?}")))?;
        let metrics = Arc::new(hms_guard::ops::metrics::Metrics::new());
        let storage =
            hms_guard::decision::storage::StorageGuard::new(&settings.storage, metrics.clone())
                .await;
        let up = hms_guard::upstream::Upstreams::from_settings(&settings, metrics.clone(), None);
        let guard = Guard::new(
            &settings.authz,
            settings.limits.request.max_depth,
            settings.storage.read_only_external,
            up,
            metrics.clone(),
            storage,
        );
        let mut w = Writer::new(Protocol::Binary);
        w.message("get_table", MessageType::Call, 1).struct_begin();
        w.field(hms_guard::wire::codec::Ty::String, 1)
            .string(db.as_bytes());
        w.field(hms_guard::wire::codec::Ty::String, 2)
            .string(table.as_bytes());
        w.struct_end();
        Ok(InProcess {
            guard,
            metrics,
            msg: w.finish(false),
            header: hms_guard::wire::codec::MessageHeader {
                name: "get_table".into(),
                kind: MessageType::Call,
                seqid: 1,
                len: 0,
            },
            method: hms_guard::wire::router::route(
                "get_table",
                hms_guard::wire::schema::types::ALL_VERSIONS,
            ),
            limits: hms_guard::wire::schema::ReadLimits {
                versions: hms_guard::wire::schema::types::ALL_VERSIONS,
                max_depth: 64,
                max_name_bytes: 1024,
            },
            transport: hms_guard::wire::transport::Transport {
                protocol: Protocol::Binary,
                framed: false,
            },
        })
    }

    /// The request read schema-exact (as the connection reads it) and decided.
    async fn decide(
        &self,
        id: &hms_guard::listener::identity::Identity,
    ) -> io::Result<hms_guard::decision::Decision> {
        let call =
            hms_guard::wire::schema::read_request(Protocol::Binary, &self.msg, self.limits, true)
                .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(self
            .guard
            .decide(
                hms_guard::decision::Call {
                    identity: id,
                    entry: self.method,
                    header: &self.header,
                    args: &call.args,
                    bytes: self.msg.clone().freeze(),
                    transport: self.transport,
                },
                false,
            )
            .await)
    }
}

async fn decide(a: DecideArgs) -> io::Result<()> {
    use hms_guard::decision::Action;
    use hms_guard::listener::identity::{Identity, IdentitySource};
    let p = InProcess::new(&a.metastore, &a.db, &a.table).await?;
    let (metrics, msg, limits) = (&p.metrics, &p.msg, p.limits);
    let id = Identity::new(&a.user, &[], IdentitySource::SetUgi);
    // Warm the caches; the decision must allow (the user must own or be granted the table).
    let first = p.decide(&id).await?;
    if !matches!(first.action, Action::Forward(_)) {
        return Err(io::Error::other(format!(
            "the warm-up decision did not allow: {:?}",
            first.record
        )));
    }
    let facts_before = facts_calls(metrics);
    let mut per_round_ns = Vec::new();
    let cpu0 = process_cpu_ticks();
    let t_all = Instant::now();
    for _ in 0..a.rounds {
        let t = Instant::now();
        for _ in 0..a.iterations {
            // The request is read schema-exact once per call, as the connection does.
            let c = p.decide(&id).await?;
            std::hint::black_box(&c);
        }
        per_round_ns.push(t.elapsed().as_nanos() as f64 / f64::from(a.iterations));
    }
    let wall = t_all.elapsed().as_secs_f64();
    let ticks = process_cpu_ticks() - cpu0;
    let tck = 100.0; // Linux USER_HZ
    let n = f64::from(a.iterations) * f64::from(a.rounds);
    let facts_calls = facts_calls(metrics) - facts_before;
    per_round_ns.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let median_us = per_round_ns[per_round_ns.len() / 2] / 1000.0;
    let cpu_us = ticks as f64 / tck * 1e6 / n;
    // The schema-exact read alone, in rounds interleaved with the decisions' measure above.
    let mut read_ns = Vec::new();
    for _ in 0..a.rounds {
        let t = Instant::now();
        for _ in 0..a.iterations {
            let call = hms_guard::wire::schema::read_request(Protocol::Binary, msg, limits, true)
                .map_err(|e| io::Error::other(e.to_string()))?;
            std::hint::black_box(&call);
        }
        read_ns.push(t.elapsed().as_nanos() as f64 / f64::from(a.iterations));
    }
    read_ns.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let read_us = read_ns[read_ns.len() / 2] / 1000.0;
    println!(
        "decide: {} warm-cache get_table decisions as {}: median per round {:.2} us each (schema-exact \
         read + decision; one thread, current-thread runtime); process CPU {:.2} us each over {:.1} s; \
         facts calls during the run: {}; the schema-exact read alone: median {:.3} us",
        n as u64, a.user, median_us, cpu_us, wall, facts_calls, read_us
    );
    let doc = json!({"kind": "decide", "decisions": n as u64, "median_us": median_us,
        "cpu_us": cpu_us, "facts_calls": facts_calls, "read_us": read_us, "per_round_us":
        per_round_ns.iter().map(|v| v / 1000.0).collect::<Vec<_>>()});
    write_json(&a.json_out, &doc)?;
    if facts_calls != 0 {
        return Err(io::Error::other(format!(
            "{facts_calls} facts calls during warm-cache decisions"
        )));
    }
    Ok(())
}

fn facts_calls(m: &hms_guard::ops::metrics::Metrics) -> u64 {
    m.encode()
        .lines()
        .filter(|l| l.starts_with("hms_guard_facts_calls_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
#[allow(clippy::enum_variant_names)] // the metastore's method names
enum Method {
    #[value(name = "getVersion")]
    GetVersion,
    #[value(name = "get_table")]
    GetTable,
    /// A listing of every table of `--db` (filtered by hms-guard to what the user may see).
    #[value(name = "get_all_tables")]
    GetAllTables,
    /// The partition names of `--db`.`--table` (at most `--max-parts`).
    #[value(name = "get_partition_names")]
    GetPartitionNames,
    /// The partitions of `--db`.`--table` that `--filter` selects (at most `--max-parts`).
    #[value(name = "get_partitions_by_filter")]
    GetPartitionsByFilter,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::GetVersion => "getVersion",
            Method::GetTable => "get_table",
            Method::GetAllTables => "get_all_tables",
            Method::GetPartitionNames => "get_partition_names",
            Method::GetPartitionsByFilter => "get_partitions_by_filter",
        }
    }
}

#[derive(Args)]
struct LoadArgs {
    /// `name=host:port` (repeatable). Comparisons are made against every earlier target.
    #[arg(long = "target", required = true, value_parser = parse_target)]
    targets: Vec<Target>,
    #[arg(long, value_enum, default_value = "getVersion")]
    method: Method,
    /// Database of `get_table`.
    #[arg(long, default_value = "bench")]
    db: String,
    /// Table of `get_table` and the partition calls.
    #[arg(long, default_value = "t")]
    table: String,
    /// Filter of `get_partitions_by_filter`, in the metastore's filter language (a string
    /// partition key compared with a string literal is pushed down to the database).
    #[arg(long, default_value = "ds >= \"2019-01-01\"")]
    filter: String,
    /// `max_parts` of the partition calls (-1: all).
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    max_parts: i16,
    /// Concurrent connections, one call in flight on each.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Measured seconds per target per round.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Rounds; each round runs every target once (order rotated each round).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Unmeasured load on each target before the first round (JIT, caches, connections).
    #[arg(long, default_value_t = 2.0)]
    warmup_secs: f64,
    /// Unmeasured start of every phase (after connections are open and set_ugi done).
    #[arg(long, default_value_t = 250)]
    phase_warmup_ms: u64,
    /// User sent with set_ugi.
    #[arg(long, default_value = "bench")]
    user: String,
    /// Runtime worker threads of the load generator; 1 = a single-threaded runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Append the JSON result line to this file.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
}

#[derive(Args)]
struct BigUpstreamArgs {
    #[arg(long)]
    listen: SocketAddr,
    /// Size of every big reply, in MiB (the reply is at least this large; fractions allowed).
    #[arg(long, default_value_t = 256.0)]
    reply_mib: f64,
    /// Size of each string of the reply's list<string>, in KiB.
    #[arg(long, default_value_t = 64)]
    string_kib: usize,
}

#[derive(Args)]
struct BigCallArgs {
    #[arg(long)]
    target: String,
    /// Method called (the scripted upstream answers any method but set_ugi/getVersion big).
    #[arg(long, default_value = "get_partitions")]
    method: String,
    #[arg(long, default_value = "bench")]
    db: String,
    #[arg(long, default_value = "t")]
    table: String,
    #[arg(long, default_value = "bench")]
    user: String,
    /// Read no faster than this many MiB/s (a slow client); 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    rate_mib: f64,
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
}

#[derive(Args)]
struct IdleArgs {
    #[arg(long)]
    target: String,
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    #[arg(long, default_value_t = 10.0)]
    hold_secs: f64,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    parallel: usize,
    #[arg(long, default_value = "bench")]
    user: String,
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
}

#[derive(Clone, Debug)]
struct Target {
    name: String,
    addr: String,
}

fn parse_target(s: &str) -> Result<Target, String> {
    let (name, addr) = match s.split_once('=') {
        Some((n, a)) => (n.to_string(), a.to_string()),
        None => (s.to_string(), s.to_string()),
    };
    if name.is_empty() || !addr.contains(':') {
        return Err(format!("expected name=host:port, got {s:?}"));
    }
    Ok(Target { name, addr })
}

fn main() {
    // `cargo bench` appends `--bench` to the arguments of a harness-less bench.
    let args = std::env::args_os().filter(|a| a != "--bench");
    let cli = Cli::parse_from(args);
    let threads = match &cli.cmd {
        Cmd::Load(a) => a.threads,
        Cmd::Decide(_) | Cmd::Views(_) | Cmd::Narrow(_) => 1,
        _ => 2,
    };
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    let code = rt.block_on(async move {
        match cli.cmd {
            Cmd::Load(a) => load(a).await,
            Cmd::BigUpstream(a) => big_upstream(a).await,
            Cmd::BigCall(a) => big_call(a).await,
            Cmd::Idle(a) => idle(a).await,
            Cmd::Decide(a) => decide(a).await,
            Cmd::Handshake(a) => handshake(a).await,
            Cmd::Views(a) => views(a),
            Cmd::Narrow(a) => narrow(a).await,
        }
    });
    std::process::exit(match code {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("loadgen: {e}");
            1
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Thrift client: unframed strict binary, one call in flight.

const READ_CHUNK: usize = 64 * 1024;

fn client_limits() -> Limits {
    Limits {
        max_message_bytes: 1 << 40,
        max_depth: 64,
        max_name_bytes: 1024,
    }
}

fn put_string(out: &mut BytesMut, s: &[u8]) {
    out.put_i32(s.len() as i32);
    out.put_slice(s);
}

fn put_string_field(out: &mut BytesMut, id: i16, s: &str) {
    out.put_u8(11);
    out.put_i16(id);
    put_string(out, s.as_bytes());
}

fn put_i16_field(out: &mut BytesMut, id: i16, v: i16) {
    out.put_u8(6);
    out.put_i16(id);
    out.put_i16(v);
}

fn put_string_list_field(out: &mut BytesMut, id: i16, items: &[&str]) {
    out.put_u8(15);
    out.put_i16(id);
    out.put_u8(11);
    out.put_i32(items.len() as i32);
    for s in items {
        put_string(out, s.as_bytes());
    }
}

/// What a finished reply looked like.
#[derive(Debug)]
struct Reply {
    kind: MessageType,
    name: String,
    seqid: i32,
    /// Type and id of the result struct's first field; `None` for an empty (void) result.
    first_field: Option<(u8, i16)>,
    /// Elements of that field when it is a list (partitions, names).
    list_len: Option<i32>,
    bytes: u64,
}

impl Reply {
    /// A REPLY whose result is the success field (id 0) or void.
    fn is_success(&self) -> bool {
        self.kind == MessageType::Reply && self.first_field.is_none_or(|(_, id)| id == 0)
    }
}

fn io_err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

fn io_err_of(e: impl std::fmt::Display) -> io::Error {
    io_err(e.to_string())
}

/// The TLS client configuration of `tls://` targets: trusts LOADGEN_TLS_CA, presents
/// LOADGEN_TLS_CERT / LOADGEN_TLS_KEY when set. Built once.
fn tls_client() -> io::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    let built = CONFIG.get_or_init(|| {
        let env = |k: &str| std::env::var(k).map_err(|_| format!("{k} is not set"));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(env("LOADGEN_TLS_CA")?).map_err(|e| e.to_string())? {
            roots
                .add(c.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match (env("LOADGEN_TLS_CERT"), env("LOADGEN_TLS_KEY")) {
            (Ok(cert), Ok(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| e.to_string())?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| e.to_string())?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| e.to_string())?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    });
    built.clone().map_err(io_err)
}

/// Connection set-up time per target: connect (+ TLS), set_ugi, getVersion; sequential.
async fn handshake(a: HandshakeArgs) -> io::Result<()> {
    let targets: Vec<(String, String)> = a
        .targets
        .iter()
        .map(|t| {
            t.split_once('=')
                .map(|(n, addr)| (n.to_string(), addr.to_string()))
                .ok_or_else(|| io_err(format!("target `{t}`: expected NAME=ADDR")))
        })
        .collect::<io::Result<_>>()?;
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    for round in 0..a.rounds {
        for i in 0..targets.len() {
            let k = (i + round) % targets.len();
            let (name, addr) = &targets[k];
            for _ in 0..a.connections {
                let t = Instant::now();
                let mut c = Client::open(addr, &a.user).await?;
                let r = c.call("getVersion", |_| {}).await?;
                if !r.is_success() {
                    return Err(io_err(format!("{name}: getVersion failed: {r:?}")));
                }
                samples[k].push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    let mut results = Vec::new();
    for ((name, addr), s) in targets.iter().zip(samples.iter_mut()) {
        s.sort_by(|x, y| x.total_cmp(y));
        let p = |q: f64| s[((s.len() as f64 - 1.0) * q).round() as usize];
        println!(
            "handshake {name:<16} {addr:<28} connections {:>5}  p50 {:>8.1} us  p99 {:>8.1} us",
            s.len(),
            p(0.5),
            p(0.99)
        );
        results.push(json!({"name": name, "addr": addr, "connections": s.len(),
                            "p50_us": p(0.5), "p99_us": p(0.99)}));
    }
    let line = json!({"kind": "handshake", "targets": results});
    println!("BENCH_JSON {line}");
    if let Some(path) = &a.json_out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(f, "{line}")?;
    }
    Ok(())
}

struct Client {
    stream: hms_guard::upstream::Stream,
    buf: BytesMut,
    out: BytesMut,
    scanner: Scanner,
    seqid: i32,
}

impl Client {
    /// `addr` is HOST:PORT, tls://HOST:PORT for a TLS connection (`tls_client`), or
    /// krb://HOST:PORT (krb-conf://HOST:PORT) for Kerberos with the `auth` (`auth-conf`)
    /// security layer: the principal LOADGEN_KRB_PRINCIPAL (its tickets in the default
    /// credential cache, KRB5CCNAME) to the service LOADGEN_KRB_SERVICE.
    async fn connect(addr: &str) -> io::Result<Client> {
        use hms_guard::auth::kerberos::Qop;
        use hms_guard::upstream::Stream;
        let (kerberos, addr) = match (
            addr.strip_prefix("krb://"),
            addr.strip_prefix("krb-conf://"),
        ) {
            (Some(rest), _) => (Some(Qop::Auth), rest),
            (_, Some(rest)) => (Some(Qop::AuthConf), rest),
            _ => (None, addr),
        };
        let (tls, host_port) = match addr.strip_prefix("tls://") {
            Some(rest) => (true, rest),
            None => (false, addr),
        };
        let tcp = TcpStream::connect(host_port).await?;
        tcp.set_nodelay(true)?;
        if let Some(qop) = kerberos {
            let env = |k: &str| std::env::var(k).map_err(|_| io_err(format!("{k} is not set")));
            let (s, _) = hms_guard::auth::sasl::connect_gssapi(
                Stream::Plain(tcp),
                &env("LOADGEN_KRB_PRINCIPAL")?,
                &env("LOADGEN_KRB_SERVICE")?,
                &[qop],
                Duration::from_secs(10),
                64 << 20,
            )
            .await
            .map_err(io_err_of)?;
            return Ok(Client {
                stream: Stream::Sasl(Box::new(s)),
                buf: BytesMut::with_capacity(READ_CHUNK),
                out: BytesMut::with_capacity(256),
                scanner: Scanner::new(Protocol::Binary, client_limits()),
                seqid: 0,
            });
        }
        let stream = if tls {
            let name = rustls::pki_types::ServerName::try_from("localhost").map_err(io_err_of)?;
            let s = tokio_rustls::TlsConnector::from(tls_client()?)
                .connect(name, tcp)
                .await?;
            Stream::Tls(Box::new(s))
        } else {
            Stream::Plain(tcp)
        };
        Ok(Client {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            out: BytesMut::with_capacity(256),
            scanner: Scanner::new(Protocol::Binary, client_limits()),
            seqid: 0,
        })
    }

    /// Connects and calls `set_ugi(user, [])`, as Hive clients do first.
    async fn open(addr: &str, user: &str) -> io::Result<Client> {
        let mut c = Client::connect(addr).await?;
        let reply = c
            .call("set_ugi", |out| {
                put_string_field(out, 1, user);
                put_string_list_field(out, 2, &[]);
            })
            .await?;
        if !reply.is_success() {
            return Err(io_err(format!("set_ugi failed: {reply:?}")));
        }
        Ok(c)
    }

    fn encode(&mut self, method: &str, args: impl FnOnce(&mut BytesMut)) {
        self.seqid = self.seqid.wrapping_add(1);
        self.out.clear();
        write_message_begin(
            &mut self.out,
            Protocol::Binary,
            method,
            MessageType::Call,
            self.seqid,
        );
        args(&mut self.out);
        self.out.put_u8(0);
    }

    async fn send(&mut self, method: &str, args: impl FnOnce(&mut BytesMut)) -> io::Result<()> {
        self.encode(method, args);
        self.stream.write_all(&self.out).await?;
        self.stream.flush().await
    }

    async fn call(&mut self, method: &str, args: impl FnOnce(&mut BytesMut)) -> io::Result<Reply> {
        self.send(method, args).await?;
        let reply = self.read_reply(0.0).await?;
        self.check(method, &reply)?;
        Ok(reply)
    }

    fn check(&self, method: &str, reply: &Reply) -> io::Result<()> {
        if reply.name != method || reply.seqid != self.seqid {
            return Err(io_err(format!(
                "reply {}#{} does not match call {method}#{}",
                reply.name, reply.seqid, self.seqid
            )));
        }
        Ok(())
    }

    /// Reads one message to its end with the scanner, dropping walked bytes as it goes (memory
    /// stays at one read chunk whatever the reply size). `rate_mib` > 0 paces the reading.
    async fn read_reply(&mut self, rate_mib: f64) -> io::Result<Reply> {
        self.scanner.reset();
        let started = Instant::now();
        let mut prefix: Vec<u8> = Vec::with_capacity(64);
        let mut total = 0u64;
        loop {
            if !self.buf.is_empty() {
                let scan = self
                    .scanner
                    .advance(&self.buf)
                    .map_err(|e| io_err(format!("bad reply: {e}")))?;
                let (n, done) = match scan {
                    Scan::Complete(n) => (n, true),
                    Scan::NeedMore(n) => (n, false),
                };
                if prefix.len() < 64 {
                    let take = (64 - prefix.len()).min(n);
                    prefix.extend_from_slice(&self.buf[..take]);
                }
                self.buf.advance(n);
                total += n as u64;
                if done {
                    break;
                }
            }
            if rate_mib > 0.0 {
                let due = Duration::from_secs_f64(total as f64 / (rate_mib * 1048576.0));
                let spent = started.elapsed();
                if due > spent {
                    tokio::time::sleep(due - spent).await;
                }
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed after {total} bytes of a reply"),
                ));
            }
        }
        let h = self
            .scanner
            .header()
            .cloned()
            .ok_or_else(|| io_err("complete reply without a header"))?;
        let first_field = match prefix.get(h.len) {
            None | Some(0) => None,
            Some(&ty) => {
                let id = prefix
                    .get(h.len + 1..h.len + 3)
                    .map(|b| i16::from_be_bytes([b[0], b[1]]))
                    .unwrap_or(-1);
                Some((ty, id))
            }
        };
        let list_len = match first_field {
            Some((15, _)) => prefix
                .get(h.len + 4..h.len + 8)
                .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]])),
            _ => None,
        };
        Ok(Reply {
            kind: h.kind,
            name: h.name,
            seqid: h.seqid,
            first_field,
            list_len,
            bytes: total,
        })
    }
}

fn write_json(path: &Option<std::path::PathBuf>, v: &Value) -> io::Result<()> {
    let line = v.to_string();
    println!("BENCH_JSON {line}");
    if let Some(p) = path {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)?;
        writeln!(f, "{line}")?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// load

#[derive(Default)]
struct Phase {
    /// Latencies of measured calls, in nanoseconds.
    lat_ns: Vec<u64>,
    errors: u64,
    failed_conns: Vec<String>,
    /// Bytes of the measured replies.
    reply_bytes: u64,
    /// Fewest and most list elements in a successful reply (partitions, names, tables).
    items: Option<(i32, i32)>,
}

fn widen(a: Option<(i32, i32)>, b: Option<(i32, i32)>) -> Option<(i32, i32)> {
    match (a, b) {
        (Some((lo, hi)), Some((l, h))) => Some((lo.min(l), hi.max(h))),
        (x, None) | (None, x) => x,
    }
}

struct Spec {
    method: Method,
    db: String,
    table: String,
    filter: String,
    max_parts: i16,
    user: String,
}

/// Opens `n` connections (set_ugi on each), then runs calls on all of them: the first `warmup`
/// unmeasured, then `measure` measured (calls sent and answered inside the window).
async fn phase(
    addr: &str,
    spec: &Arc<Spec>,
    n: usize,
    warmup: Duration,
    measure: Duration,
) -> Phase {
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..n {
        let addr = addr.to_string();
        let spec = spec.clone();
        opening.spawn(async move { Client::open(&addr, &spec.user).await });
    }
    let mut result = Phase::default();
    let mut clients = Vec::with_capacity(n);
    while let Some(r) = opening.join_next().await {
        match r.expect("task") {
            Ok(c) => clients.push(c),
            Err(e) => result.failed_conns.push(format!("open: {e}")),
        }
    }
    let start = Instant::now() + warmup;
    let end = start + measure;
    let mut running = tokio::task::JoinSet::new();
    for mut c in clients {
        let spec = spec.clone();
        running.spawn(async move {
            let mut lat = Vec::with_capacity(4096);
            let mut errors = 0u64;
            let mut bytes = 0u64;
            let mut items: Option<(i32, i32)> = None;
            let method = spec.method.name();
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let r = match spec.method {
                    Method::GetVersion => c.call(method, |_| {}).await,
                    Method::GetTable => {
                        c.call(method, |out| {
                            put_string_field(out, 1, &spec.db);
                            put_string_field(out, 2, &spec.table);
                        })
                        .await
                    }
                    Method::GetAllTables => {
                        c.call(method, |out| put_string_field(out, 1, &spec.db))
                            .await
                    }
                    Method::GetPartitionNames => {
                        c.call(method, |out| {
                            put_string_field(out, 1, &spec.db);
                            put_string_field(out, 2, &spec.table);
                            put_i16_field(out, 3, spec.max_parts);
                        })
                        .await
                    }
                    Method::GetPartitionsByFilter => {
                        c.call(method, |out| {
                            put_string_field(out, 1, &spec.db);
                            put_string_field(out, 2, &spec.table);
                            put_string_field(out, 3, &spec.filter);
                            put_i16_field(out, 4, spec.max_parts);
                        })
                        .await
                    }
                };
                let done = Instant::now();
                match r {
                    Ok(reply) => {
                        if !reply.is_success() {
                            errors += 1;
                        } else if let Some(n) = reply.list_len {
                            items = widen(items, Some((n, n)));
                        }
                        if sent >= start && done <= end {
                            lat.push((done - sent).as_nanos() as u64);
                            bytes += reply.bytes;
                        }
                    }
                    Err(e) => return (lat, errors, bytes, items, Some(e.to_string())),
                }
            }
            (lat, errors, bytes, items, None)
        });
    }
    while let Some(r) = running.join_next().await {
        let (lat, errors, bytes, items, failed) = r.expect("task");
        result.lat_ns.extend(lat);
        result.errors += errors;
        result.reply_bytes += bytes;
        result.items = widen(result.items, items);
        if let Some(f) = failed {
            result.failed_conns.push(f);
        }
    }
    result
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64
}

fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

#[derive(Clone, Copy, Default)]
struct Summary {
    calls_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

fn summarize(lat_ns: &mut [u64], seconds: f64) -> Summary {
    lat_ns.sort_unstable();
    Summary {
        calls_per_s: lat_ns.len() as f64 / seconds,
        p50_us: percentile(lat_ns, 0.50) / 1000.0,
        p99_us: percentile(lat_ns, 0.99) / 1000.0,
    }
}

fn r1(x: f64) -> Value {
    if x.is_finite() {
        json!((x * 10.0).round() / 10.0)
    } else {
        Value::Null
    }
}

fn r3(x: f64) -> Value {
    if x.is_finite() {
        json!((x * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

async fn load(a: LoadArgs) -> io::Result<()> {
    let spec = Arc::new(Spec {
        method: a.method,
        db: a.db.clone(),
        table: a.table.clone(),
        filter: a.filter.clone(),
        max_parts: a.max_parts,
        user: a.user.clone(),
    });
    let t = a.targets.len();
    let measure = Duration::from_secs_f64(a.seconds);
    let phase_warmup = Duration::from_millis(a.phase_warmup_ms);
    eprintln!(
        "load: {} over {} connection(s), {} round(s) x {} s per target, targets: {}",
        a.method.name(),
        a.connections,
        a.rounds,
        a.seconds,
        a.targets
            .iter()
            .map(|t| format!("{}={}", t.name, t.addr))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if a.warmup_secs > 0.0 {
        for target in &a.targets {
            let p = phase(
                &target.addr,
                &spec,
                a.connections,
                Duration::ZERO,
                Duration::from_secs_f64(a.warmup_secs),
            )
            .await;
            if let Some(f) = p.failed_conns.first() {
                return Err(io_err(format!("warmup of {} failed: {f}", target.name)));
            }
            if p.lat_ns.is_empty() {
                return Err(io_err(format!(
                    "warmup of {}: no call answered",
                    target.name
                )));
            }
            if p.errors > 0 {
                eprintln!(
                    "warning: warmup of {}: {} error replies (does {}.{} exist?)",
                    target.name, p.errors, a.db, a.table
                );
            }
        }
    }
    // per target: pooled latencies, per-round summaries, errors, connection failures
    let mut pooled: Vec<Vec<u64>> = vec![Vec::new(); t];
    let mut rounds: Vec<Vec<Summary>> = vec![Vec::new(); t];
    let mut errors = vec![0u64; t];
    let mut failures: Vec<Vec<String>> = vec![Vec::new(); t];
    let mut reply_bytes = vec![0u64; t];
    let mut items: Vec<Option<(i32, i32)>> = vec![None; t];
    for round in 0..a.rounds {
        for k in 0..t {
            let i = (round + k) % t;
            let target = &a.targets[i];
            let mut p = phase(&target.addr, &spec, a.connections, phase_warmup, measure).await;
            let s = summarize(&mut p.lat_ns, a.seconds);
            eprintln!(
                "  round {:>2} {:<12} {:>9.0} calls/s  p50 {:>8.1} us  p99 {:>8.1} us{}{}",
                round + 1,
                target.name,
                s.calls_per_s,
                s.p50_us,
                s.p99_us,
                if p.errors > 0 {
                    format!("  errors {}", p.errors)
                } else {
                    String::new()
                },
                if p.failed_conns.is_empty() {
                    String::new()
                } else {
                    format!("  failed connections {}", p.failed_conns.len())
                }
            );
            rounds[i].push(s);
            errors[i] += p.errors;
            failures[i].append(&mut p.failed_conns);
            reply_bytes[i] += p.reply_bytes;
            items[i] = widen(items[i], p.items);
            pooled[i].extend(p.lat_ns);
        }
    }
    let total_secs = a.seconds * a.rounds as f64;
    let overall: Vec<Summary> = pooled
        .iter_mut()
        .map(|l| summarize(l, total_secs))
        .collect();

    println!();
    println!(
        "{} | {} connection(s) | {} rounds x {} s per target, interleaved",
        a.method.name(),
        a.connections,
        a.rounds,
        a.seconds
    );
    println!(
        "{:<12} {:>10} {:>10} {:>10} | {:>12} {:>10} {:>10} {:>7}",
        "target", "calls/s", "p50 us", "p99 us", "med calls/s", "med p50", "med p99", "errors"
    );
    let mut targets_json = Vec::new();
    for i in 0..t {
        let o = overall[i];
        let med = |f: fn(&Summary) -> f64| median(&rounds[i].iter().map(f).collect::<Vec<_>>());
        let (mc, m50, m99) = (med(|s| s.calls_per_s), med(|s| s.p50_us), med(|s| s.p99_us));
        println!(
            "{:<12} {:>10.0} {:>10.1} {:>10.1} | {:>12.0} {:>10.1} {:>10.1} {:>7}",
            a.targets[i].name, o.calls_per_s, o.p50_us, o.p99_us, mc, m50, m99, errors[i]
        );
        if let (Some((lo, hi)), false) = (items[i], pooled[i].is_empty()) {
            println!(
                "{:<12}   replies of {lo}..{hi} items, {} bytes on average",
                "",
                reply_bytes[i] / pooled[i].len() as u64
            );
        }
        targets_json.push(json!({
            "name": a.targets[i].name,
            "addr": a.targets[i].addr,
            "calls": pooled[i].len(),
            "errors": errors[i],
            "failed_connections": failures[i].len(),
            "failures": failures[i].iter().take(5).collect::<Vec<_>>(),
            "reply_bytes_mean": if pooled[i].is_empty() { Value::Null } else { json!(reply_bytes[i] / pooled[i].len() as u64) },
            "reply_items": items[i].map(|(lo, hi)| json!({"min": lo, "max": hi})),
            "pooled": {"calls_per_s": r1(o.calls_per_s), "p50_us": r1(o.p50_us), "p99_us": r1(o.p99_us)},
            "median_of_rounds": {"calls_per_s": r1(mc), "p50_us": r1(m50), "p99_us": r1(m99)},
            "rounds": rounds[i].iter().map(|s| json!({
                "calls_per_s": r1(s.calls_per_s), "p50_us": r1(s.p50_us), "p99_us": r1(s.p99_us)
            })).collect::<Vec<_>>(),
        }));
    }
    println!("comparisons (median over rounds of the per-round figure; pooled in brackets):");
    let mut comparisons = Vec::new();
    for i in 1..t {
        for j in 0..i {
            let per_round = |f: &dyn Fn(&Summary, &Summary) -> f64| {
                median(
                    &rounds[i]
                        .iter()
                        .zip(&rounds[j])
                        .map(|(x, y)| f(x, y))
                        .collect::<Vec<_>>(),
                )
            };
            let thr = per_round(&|x, y| x.calls_per_s / y.calls_per_s);
            let d50 = per_round(&|x, y| x.p50_us - y.p50_us);
            let d99 = per_round(&|x, y| x.p99_us - y.p99_us);
            let (oi, oj) = (overall[i], overall[j]);
            println!(
                "  {} vs {}: throughput {:.3}x [{:.3}x], p50 {:+.1} us [{:+.1}], p99 {:+.1} us [{:+.1}]",
                a.targets[i].name,
                a.targets[j].name,
                thr,
                oi.calls_per_s / oj.calls_per_s,
                d50,
                oi.p50_us - oj.p50_us,
                d99,
                oi.p99_us - oj.p99_us
            );
            comparisons.push(json!({
                "target": a.targets[i].name,
                "vs": a.targets[j].name,
                "median_of_rounds": {
                    "throughput_ratio": r3(thr), "p50_added_us": r1(d50), "p99_added_us": r1(d99)
                },
                "pooled": {
                    "throughput_ratio": r3(oi.calls_per_s / oj.calls_per_s),
                    "p50_added_us": r1(oi.p50_us - oj.p50_us),
                    "p99_added_us": r1(oi.p99_us - oj.p99_us)
                },
                "per_round": {
                    "throughput_ratio": rounds[i].iter().zip(&rounds[j]).map(|(x, y)| r3(x.calls_per_s / y.calls_per_s)).collect::<Vec<_>>(),
                    "p50_added_us": rounds[i].iter().zip(&rounds[j]).map(|(x, y)| r1(x.p50_us - y.p50_us)).collect::<Vec<_>>(),
                    "p99_added_us": rounds[i].iter().zip(&rounds[j]).map(|(x, y)| r1(x.p99_us - y.p99_us)).collect::<Vec<_>>(),
                }
            }));
        }
    }
    write_json(
        &a.json_out,
        &json!({
            "kind": "load",
            "method": a.method.name(),
            "connections": a.connections,
            "seconds_per_phase": a.seconds,
            "rounds": a.rounds,
            "loadgen_threads": a.threads,
            "targets": targets_json,
            "comparisons": comparisons,
        }),
    )?;
    if let Some(i) = (0..t).find(|&i| pooled[i].is_empty()) {
        return Err(io_err(format!(
            "target {} answered no call",
            a.targets[i].name
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// big-upstream

async fn big_upstream(a: BigUpstreamArgs) -> io::Result<()> {
    let listener = TcpListener::bind(a.listen).await?;
    let string_len = a.string_kib * 1024;
    let target = (a.reply_mib * 1048576.0).ceil() as u64;
    let count = target.div_ceil(4 + string_len as u64);
    // One list element (length prefix + body), shared by every reply: the server holds this
    // and nothing proportional to the reply size.
    let mut elem = BytesMut::with_capacity(4 + string_len);
    elem.put_i32(string_len as i32);
    elem.extend((0..string_len).map(|i| b'a' + (i % 26) as u8));
    let elem = elem.freeze();
    println!(
        "big-upstream listening on {} (replies: list<string> of {count} x {} KiB = {:.1} MiB)",
        listener.local_addr()?,
        a.string_kib,
        (count * (4 + string_len as u64)) as f64 / 1048576.0
    );
    io::stdout().flush()?;
    loop {
        let (stream, _) = listener.accept().await?;
        let elem = elem.clone();
        tokio::spawn(async move {
            let _ = serve_big(stream, elem, count).await;
        });
    }
}

/// Serves one connection of the scripted upstream.
async fn serve_big(mut stream: TcpStream, elem: bytes::Bytes, count: u64) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = BytesMut::with_capacity(4096);
    let mut scanner = Scanner::new(Protocol::Binary, Limits::default());
    loop {
        // Read one whole request (they are small).
        scanner.reset();
        let len = loop {
            if !buf.is_empty() {
                // Requests are re-walked from their start: the scanner gets the whole prefix
                // each time, so reset it before every attempt.
                scanner.reset();
                match scanner
                    .advance(&buf)
                    .map_err(|e| io_err(format!("bad request: {e}")))?
                {
                    Scan::Complete(n) => break n,
                    Scan::NeedMore(_) => {}
                }
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        let h = scanner.header().cloned().expect("header");
        let request = buf.split_to(len);
        if h.kind == MessageType::Oneway || h.name == "shutdown" {
            continue;
        }
        let mut out = BytesMut::with_capacity(256);
        write_message_begin(
            &mut out,
            Protocol::Binary,
            &h.name,
            MessageType::Reply,
            h.seqid,
        );
        match h.name.as_str() {
            "set_ugi" => {
                // Answer like the metastore: the groups, then the user.
                let user = first_string_arg(&request[h.len..]).unwrap_or_default();
                put_string_list_field(&mut out, 0, &[&user]);
                out.put_u8(0);
                stream.write_all(&out).await?;
            }
            "getVersion" => {
                put_string_field(&mut out, 0, "big-upstream");
                out.put_u8(0);
                stream.write_all(&out).await?;
            }
            _ => {
                out.put_u8(15);
                out.put_i16(0);
                out.put_u8(11);
                out.put_i32(count as i32);
                if count * (elem.len() as u64) <= 1 << 20 {
                    // A small reply goes out in one write, as a metastore's would.
                    for _ in 0..count {
                        out.put_slice(&elem);
                    }
                    out.put_u8(0);
                    stream.write_all(&out).await?;
                } else {
                    stream.write_all(&out).await?;
                    for _ in 0..count {
                        stream.write_all(&elem).await?;
                    }
                    stream.write_all(&[0]).await?;
                }
            }
        }
    }
}

/// The string at field 1 of an args struct (binary), if it comes first.
fn first_string_arg(body: &[u8]) -> Option<String> {
    if body.len() < 7 || body[0] != 11 || body[1..3] != [0, 1] {
        return None;
    }
    let n = i32::from_be_bytes(body[3..7].try_into().ok()?);
    let s = body.get(7..7 + usize::try_from(n).ok()?)?;
    Some(String::from_utf8_lossy(s).into_owned())
}

// ---------------------------------------------------------------------------------------------
// big-call

async fn big_call(a: BigCallArgs) -> io::Result<()> {
    let mut c = Client::open(&a.target, &a.user).await?;
    let started = Instant::now();
    let (db, table) = (a.db.clone(), a.table.clone());
    c.send(&a.method, |out| {
        put_string_field(out, 1, &db);
        put_string_field(out, 2, &table);
        out.put_u8(6); // 3: i16 max_parts = -1
        out.put_i16(3);
        out.put_i16(-1);
    })
    .await?;
    let reply = c.read_reply(a.rate_mib).await?;
    let secs = started.elapsed().as_secs_f64();
    c.check(&a.method, &reply)?;
    if !reply.is_success() {
        return Err(io_err(format!("not a success reply: {reply:?}")));
    }
    let mib = reply.bytes as f64 / 1048576.0;
    println!(
        "big-call {}: {:.1} MiB in {:.2} s = {:.0} MiB/s",
        a.target,
        mib,
        secs,
        mib / secs
    );
    write_json(
        &a.json_out,
        &json!({
            "kind": "big_call",
            "target": a.target,
            "method": a.method,
            "reply_bytes": reply.bytes,
            "seconds": r3(secs),
            "mib_per_s": r1(mib / secs),
            "rate_limit_mib_per_s": a.rate_mib,
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// idle

async fn idle(a: IdleArgs) -> io::Result<()> {
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(a.parallel.max(1)));
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..a.connections {
        let (addr, user, sem) = (a.target.clone(), a.user.clone(), sem.clone());
        opening.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore");
            let mut c = Client::open(&addr, &user).await?;
            let r = c.call("getVersion", |_| {}).await?;
            if !r.is_success() {
                return Err(io_err(format!("getVersion failed: {r:?}")));
            }
            Ok::<_, io::Error>(c)
        });
    }
    let mut held = Vec::with_capacity(a.connections);
    let mut failed = Vec::new();
    while let Some(r) = opening.join_next().await {
        match r.expect("task") {
            Ok(c) => held.push(c),
            Err(e) => failed.push(e.to_string()),
        }
    }
    let open_secs = started.elapsed().as_secs_f64();
    println!(
        "IDLE_READY {} connections open ({} failed) in {:.2} s; holding {} s",
        held.len(),
        failed.len(),
        open_secs,
        a.hold_secs
    );
    io::stdout().flush()?;
    tokio::time::sleep(Duration::from_secs_f64(a.hold_secs)).await;
    // Still alive after the hold? One more call on a sample of them says so.
    let mut alive_checked = 0;
    for c in held.iter_mut().step_by(100) {
        c.call("getVersion", |_| {}).await?;
        alive_checked += 1;
    }
    write_json(
        &a.json_out,
        &json!({
            "kind": "idle",
            "target": a.target,
            "connections": held.len(),
            "failed": failed.len(),
            "failures": failed.iter().take(5).collect::<Vec<_>>(),
            "open_seconds": r3(open_secs),
            "hold_seconds": a.hold_secs,
            "checked_alive_after_hold": alive_checked,
        }),
    )?;
    if !failed.is_empty() {
        return Err(io_err(format!(
            "{} connections failed: {}",
            failed.len(),
            failed[0]
        )));
    }
    Ok(())
}
