//! Test helpers shared by the socket and codec tests (tests/README.md): a tiny Thrift writer
//! for literal messages, a scripted upstream metastore, an in-process proxy and what reads its
//! answers and metrics; `authz` the enforce path's scripted facts, `tls` certificates and TLS
//! ends.
#![allow(dead_code)]

pub mod authz;
pub mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hms_guard::config::Config;
use hms_guard::wire::codec::{Limits, MessageHeader, Protocol, Scan, Scanner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub const CALL: u8 = 1;
pub const REPLY: u8 = 2;
pub const EXCEPTION: u8 = 3;
pub const ONEWAY: u8 = 4;

/// Writes Thrift values in the binary or compact protocol.
pub struct W {
    pub p: Protocol,
    pub b: Vec<u8>,
    last_field: Vec<i16>,
}

impl W {
    pub fn new(p: Protocol) -> Self {
        W {
            p,
            b: Vec::new(),
            last_field: vec![0],
        }
    }

    pub fn binary() -> Self {
        Self::new(Protocol::Binary)
    }

    pub fn compact() -> Self {
        Self::new(Protocol::Compact)
    }

    pub fn varint(&mut self, mut v: u64) -> &mut Self {
        while v >= 0x80 {
            self.b.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        self.b.push(v as u8);
        self
    }

    pub fn message(&mut self, name: &str, kind: u8, seqid: i32) -> &mut Self {
        match self.p {
            Protocol::Binary => {
                self.b
                    .extend_from_slice(&(0x8001_0000u32 | kind as u32).to_be_bytes());
                self.b.extend_from_slice(&(name.len() as i32).to_be_bytes());
                self.b.extend_from_slice(name.as_bytes());
                self.b.extend_from_slice(&seqid.to_be_bytes());
            }
            Protocol::Compact => {
                self.b.push(0x82);
                self.b.push((kind << 5) | 1);
                self.varint(seqid as u32 as u64);
                self.varint(name.len() as u64);
                self.b.extend_from_slice(name.as_bytes());
            }
        }
        self
    }

    /// Field header; `ty` in binary type ids (2 bool, 3 byte, 6 i16, 8 i32, 10 i64, 11 string,
    /// 12 struct, 13 map, 14 set, 15 list, 4 double).
    pub fn field(&mut self, ty: u8, id: i16) -> &mut Self {
        match self.p {
            Protocol::Binary => {
                self.b.push(ty);
                self.b.extend_from_slice(&id.to_be_bytes());
            }
            Protocol::Compact => {
                let ct = compact_type(ty);
                let last = *self.last_field.last().unwrap();
                let delta = id - last;
                if delta > 0 && delta <= 15 {
                    self.b.push(((delta as u8) << 4) | ct);
                } else {
                    self.b.push(ct);
                    self.varint(zigzag(id as i64));
                }
                *self.last_field.last_mut().unwrap() = id;
            }
        }
        self
    }

    /// A bool field (compact carries the value in the field header).
    pub fn bool_field(&mut self, id: i16, v: bool) -> &mut Self {
        match self.p {
            Protocol::Binary => {
                self.field(2, id);
                self.b.push(v as u8);
            }
            Protocol::Compact => {
                let last = *self.last_field.last().unwrap();
                let ct = if v { 1 } else { 2 };
                let delta = id - last;
                if delta > 0 && delta <= 15 {
                    self.b.push(((delta as u8) << 4) | ct);
                } else {
                    self.b.push(ct);
                    self.varint(zigzag(id as i64));
                }
                *self.last_field.last_mut().unwrap() = id;
            }
        }
        self
    }

    pub fn stop(&mut self) -> &mut Self {
        self.b.push(0);
        self
    }

    pub fn begin_struct(&mut self) -> &mut Self {
        self.last_field.push(0);
        self
    }

    pub fn end_struct(&mut self) -> &mut Self {
        self.stop();
        self.last_field.pop();
        self
    }

    pub fn string(&mut self, s: &[u8]) -> &mut Self {
        match self.p {
            Protocol::Binary => self.b.extend_from_slice(&(s.len() as i32).to_be_bytes()),
            Protocol::Compact => {
                self.varint(s.len() as u64);
            }
        }
        self.b.extend_from_slice(s);
        self
    }

    pub fn i32(&mut self, v: i32) -> &mut Self {
        match self.p {
            Protocol::Binary => self.b.extend_from_slice(&v.to_be_bytes()),
            Protocol::Compact => {
                self.varint(zigzag(v as i64));
            }
        }
        self
    }

    pub fn i64(&mut self, v: i64) -> &mut Self {
        match self.p {
            Protocol::Binary => self.b.extend_from_slice(&v.to_be_bytes()),
            Protocol::Compact => {
                self.varint(zigzag(v));
            }
        }
        self
    }

    pub fn double(&mut self, v: f64) -> &mut Self {
        match self.p {
            Protocol::Binary => self.b.extend_from_slice(&v.to_bits().to_be_bytes()),
            Protocol::Compact => self.b.extend_from_slice(&v.to_bits().to_le_bytes()),
        }
        self
    }

    pub fn list(&mut self, elem: u8, n: i32) -> &mut Self {
        match self.p {
            Protocol::Binary => {
                self.b.push(elem);
                self.b.extend_from_slice(&n.to_be_bytes());
            }
            Protocol::Compact => {
                let ct = compact_type(elem);
                if n < 15 {
                    self.b.push(((n as u8) << 4) | ct);
                } else {
                    self.b.push(0xf0 | ct);
                    self.varint(n as u32 as u64);
                }
            }
        }
        self
    }

    pub fn map(&mut self, k: u8, v: u8, n: i32) -> &mut Self {
        match self.p {
            Protocol::Binary => {
                self.b.push(k);
                self.b.push(v);
                self.b.extend_from_slice(&n.to_be_bytes());
            }
            Protocol::Compact => {
                self.varint(n as u32 as u64);
                if n != 0 {
                    self.b.push((compact_type(k) << 4) | compact_type(v));
                }
            }
        }
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.b.clone()
    }
}

fn compact_type(binary: u8) -> u8 {
    match binary {
        2 => 1,
        3 => 3,
        6 => 4,
        8 => 5,
        10 => 6,
        4 => 7,
        11 => 8,
        15 => 9,
        14 => 10,
        13 => 11,
        12 => 12,
        other => panic!("no compact type for {other}"),
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Prefixes a 4-byte frame length.
pub fn framed(msg: &[u8]) -> Vec<u8> {
    let mut v = (msg.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(msg);
    v
}

/// A call with string args (field ids 1..).
pub fn call(p: Protocol, name: &str, seqid: i32, args: &[&str]) -> Vec<u8> {
    let mut w = W::new(p);
    w.message(name, CALL, seqid).begin_struct();
    for (i, a) in args.iter().enumerate() {
        w.field(11, i as i16 + 1).string(a.as_bytes());
    }
    w.end_struct();
    w.bytes()
}

/// A REPLY whose success field (0) is a string.
pub fn string_reply(p: Protocol, name: &str, seqid: i32, value: &str) -> Vec<u8> {
    let mut w = W::new(p);
    w.message(name, REPLY, seqid)
        .begin_struct()
        .field(11, 0)
        .string(value.as_bytes())
        .end_struct();
    w.bytes()
}

/// Reads exactly one message (framed or not) from a stream; `None` on clean EOF.
pub async fn read_message(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    p: Protocol,
    framed: bool,
) -> Option<(MessageHeader, Vec<u8>)> {
    let mut scanner = Scanner::new(p, Limits::default());
    let mut walked = 0;
    let start = if framed { 4 } else { 0 };
    loop {
        if buf.len() > start + walked {
            match scanner
                .advance(&buf[start + walked..])
                .expect("valid message")
            {
                Scan::Complete(n) => {
                    let end = start + walked + n;
                    let msg: Vec<u8> = buf.drain(..end).collect();
                    return Some((scanner.header().unwrap().clone(), msg));
                }
                Scan::NeedMore(n) => walked += n,
            }
        }
        let mut chunk = [0u8; 65536];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// What a scripted upstream does with a call.
#[derive(Clone)]
pub enum Act {
    /// Reply with these bytes.
    Send(Vec<u8>),
    /// Send these bytes, then close the connection.
    SendThenClose(Vec<u8>),
    /// Never answer (hold the connection).
    Hang,
    /// No reply (oneway).
    Nothing,
}

pub type Script = Arc<dyn Fn(&MessageHeader, &[u8]) -> Act + Send + Sync>;

/// A scripted upstream metastore: records every request it receives.
pub struct Upstream {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Vec<u8>>>>,
    pub connections: Arc<Mutex<usize>>,
}

impl Upstream {
    pub async fn start(p: Protocol, framed: bool, script: Script) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (rec, conns) = (received.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                *conns.lock().unwrap() += 1;
                let (rec, script) = (rec.clone(), script.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while let Some((h, msg)) = read_message(&mut s, &mut buf, p, framed).await {
                        rec.lock().unwrap().push(msg.clone());
                        match script(&h, &msg) {
                            Act::Send(b) => {
                                if s.write_all(&b).await.is_err() {
                                    return;
                                }
                            }
                            Act::SendThenClose(b) => {
                                let _ = s.write_all(&b).await;
                                return;
                            }
                            Act::Hang => {
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                            }
                            Act::Nothing => {}
                        }
                    }
                });
            }
        });
        Upstream {
            addr,
            received,
            connections,
        }
    }

    /// Answers every call with a string reply naming the method (echo server).
    pub async fn echo(p: Protocol, framed: bool) -> Upstream {
        Upstream::start(
            p,
            framed,
            Arc::new(move |h: &MessageHeader, _: &[u8]| {
                if h.kind == hms_guard::wire::codec::MessageType::Oneway {
                    return Act::Nothing;
                }
                let r = string_reply(p, &h.name, h.seqid, &format!("echo:{}", h.name));
                Act::Send(if framed { self::framed(&r) } else { r })
            }),
        )
        .await
    }

    pub fn uri(&self) -> String {
        format!("thrift://{}", self.addr)
    }
}

/// A proxy running in-process; dropping the sender never shuts it down, `stop` does.
pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub metrics: Arc<hms_guard::ops::metrics::Metrics>,
    pub shutdown: watch::Sender<bool>,
    pub done: tokio::task::JoinHandle<()>,
}

/// A valid config listening on ephemeral ports, authorization off (these tests are about the
/// transport); tests adjust fields directly.
pub fn config(uris: &[String]) -> Config {
    let list: Vec<String> = uris.iter().map(|u| format!("\"{u}\"")).collect();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nuris = [{}]\n[admin]\nlisten = \"127.0.0.1:0\"\n[authz]\nmode = \"off\"\n",
        list.join(", ")
    );
    Config::parse(&text).unwrap_or_else(|e| panic!("test config invalid: {e:?}\n{text}"))
}

/// A proxy in front of `uris` with the config of `config`.
pub async fn proxy_to(uris: &[String]) -> Proxy {
    Proxy::start(config(uris)).await
}

impl Proxy {
    pub async fn start(config: Config) -> Proxy {
        Proxy::start_with(config, None).await
    }

    /// With authorization's facts from `facts` (scripted) instead of the metastore.
    pub async fn start_with(
        config: Config,
        facts: Option<Box<dyn hms_guard::decision::facts::FactsSource>>,
    ) -> Proxy {
        let (tx, rx) = watch::channel(false);
        let running = hms_guard::start_with(config, facts, rx)
            .await
            .expect("proxy starts");
        let (addr, admin, metrics) = (
            running.listen,
            running.admin.unwrap(),
            running.metrics.clone(),
        );
        let done = tokio::spawn(running.wait());
        Proxy {
            addr,
            admin,
            metrics,
            shutdown: tx,
            done,
        }
    }

    pub async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }

    pub fn metrics_text(&self) -> String {
        self.metrics.encode()
    }
}

/// Sends one message and reads one reply.
pub async fn roundtrip(
    s: &mut TcpStream,
    msg: &[u8],
    p: Protocol,
    framed: bool,
) -> (MessageHeader, Vec<u8>) {
    s.write_all(msg).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(20),
        read_message(s, &mut buf, p, framed),
    )
    .await
    .expect("reply within 20 s")
    .expect("a reply, not EOF")
}

/// Decodes the message string of a TApplicationException reply (binary or compact).
pub fn exception_message(p: Protocol, msg: &[u8], header: &MessageHeader) -> String {
    let body = &msg[header.len..];
    match p {
        Protocol::Binary => {
            assert_eq!(&body[..3], &[11, 0, 1], "field 1: string");
            let n = i32::from_be_bytes(body[3..7].try_into().unwrap()) as usize;
            String::from_utf8(body[7..7 + n].to_vec()).unwrap()
        }
        Protocol::Compact => {
            assert_eq!(body[0], 0x18);
            let (n, used) = {
                let mut v = 0u64;
                let mut i = 0;
                loop {
                    let b = body[1 + i];
                    v |= ((b & 0x7f) as u64) << (7 * i);
                    i += 1;
                    if b & 0x80 == 0 {
                        break;
                    }
                }
                (v as usize, i)
            };
            String::from_utf8(body[1 + used..1 + used + n].to_vec()).unwrap()
        }
    }
}

/// A TCP port with nothing listening on it.
pub async fn dead_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

/// Plain HTTP/1.0 GET; returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

/// Reads until EOF (or 5 s); returns what arrived.
pub async fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    out
}

/// The value of the first line of `m`'s metrics (the Prometheus text format) that starts with
/// `line_prefix`; 0 if there is none.
pub fn metric_of(m: &hms_guard::ops::metrics::Metrics, line_prefix: &str) -> f64 {
    m.encode()
        .lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A count from the proxy's metrics: the series that starts with `series`, 0 if none.
pub fn metric(p: &Proxy, series: &str) -> u64 {
    metric_of(&p.metrics, series) as u64
}
