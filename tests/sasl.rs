//! The SASL transport towards clients without a KDC: the negotiation's refusals as literal
//! bytes (a mechanism other than GSSAPI, an oversized or malformed message, a service keytab
//! that cannot be read, a client that stops), a non-SASL client handed back whole, and the
//! framed byte stream of QOP `auth` under every split of its input (property test). The
//! Kerberos exchange itself runs against a real KDC in tests/e2e/test_kerberos.py.

use std::time::Duration;

use hms_guard::auth::kerberos::{KerberosSettings, NameMapping};
use hms_guard::auth::sasl::{self, Handshake, SaslStream};
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

fn settings() -> KerberosSettings {
    KerberosSettings {
        principal: "hive/localhost@EXAMPLE.COM".into(),
        keytab: "/nonexistent/hms-guard.keytab".into(),
        krb5_conf: None,
        offered: 1 | 4,
        mapping: NameMapping::parse(&["DEFAULT".into()], "EXAMPLE.COM").unwrap(),
    }
}

fn msg(status: u8, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![status];
    m.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// Runs the server side on one end of a pipe after `client` bytes were sent; returns how the
/// handshake ended and everything the server wrote.
async fn handshake(client: &[u8], limit: Duration) -> (Handshake<DuplexStream>, Vec<u8>) {
    let (mut c, s) = duplex(1 << 20);
    c.write_all(client).await.unwrap();
    let k = settings();
    let outcome = sasl::accept(s, &k, limit, 1 << 20).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_millis(200), c.read_to_end(&mut got)).await;
    (outcome, got)
}

fn refusal(h: &Handshake<DuplexStream>) -> &sasl::Refusal {
    match h {
        Handshake::Refused(r) => r,
        Handshake::Authenticated(..) => panic!("authenticated"),
        Handshake::NotSasl(..) => panic!("not SASL"),
    }
}

#[tokio::test]
async fn another_mechanism_gets_a_bad_message_naming_it() {
    let (h, wrote) = handshake(&msg(sasl::START, b"PLAIN"), Duration::from_secs(5)).await;
    assert_eq!(refusal(&h).kind(), "mechanism");
    let text = "Unsupported mechanism type PLAIN: hms-guard accepts Kerberos (GSSAPI) only";
    assert_eq!(wrote, msg(sasl::BAD, text.as_bytes()));
}

#[tokio::test]
async fn a_delegation_token_client_is_told_to_use_kerberos() {
    let (h, wrote) = handshake(&msg(sasl::START, b"DIGEST-MD5"), Duration::from_secs(5)).await;
    assert_eq!(refusal(&h).kind(), "mechanism");
    let text = String::from_utf8_lossy(&wrote[5..]).into_owned();
    assert!(text.contains("does not accept delegation tokens"), "{text}");
    assert!(
        text.contains("spark.security.credentials.hive.enabled=false"),
        "{text}"
    );
}

#[tokio::test]
async fn an_oversized_negotiation_message_is_refused_before_it_is_read() {
    let mut start = vec![sasl::START];
    start.extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
    let (h, wrote) = handshake(&start, Duration::from_secs(5)).await;
    assert_eq!(refusal(&h).kind(), "protocol");
    assert_eq!(wrote[0], sasl::BAD);
    assert!(String::from_utf8_lossy(&wrote[5..]).contains("2147483647 bytes (at most 65536)"));
}

#[tokio::test]
async fn a_status_outside_the_protocol_is_refused() {
    let mut bytes = msg(sasl::START, b"GSSAPI");
    bytes.extend_from_slice(&msg(9, b"x"));
    let (h, wrote) = handshake(&bytes, Duration::from_secs(5)).await;
    assert_eq!(refusal(&h).kind(), "protocol");
    assert_eq!(
        wrote,
        msg(sasl::BAD, b"SASL negotiation: invalid status byte 9")
    );
}

#[tokio::test]
async fn an_unreadable_service_keytab_is_said_so() {
    let mut bytes = msg(sasl::START, b"GSSAPI");
    bytes.extend_from_slice(&msg(sasl::OK, b"\x60\x00"));
    let (h, wrote) = handshake(&bytes, Duration::from_secs(5)).await;
    assert_eq!(refusal(&h).kind(), "credential");
    let text = String::from_utf8_lossy(&wrote[5..]).into_owned();
    assert!(text.starts_with("hms-guard cannot use its own Kerberos credential: no key for hive/localhost@EXAMPLE.COM"), "{text}");
}

#[tokio::test]
async fn a_client_that_stops_mid_negotiation_times_out() {
    let (h, _) = handshake(
        &msg(sasl::START, b"GSSAPI")[..4],
        Duration::from_millis(100),
    )
    .await;
    assert_eq!(refusal(&h).kind(), "timeout");
}

#[tokio::test]
async fn a_client_failure_message_is_not_answered() {
    let (h, wrote) = handshake(&msg(sasl::START, b"GSSAPI")[..0], Duration::from_millis(50)).await;
    assert_eq!(refusal(&h).kind(), "timeout");
    assert!(wrote.is_empty());
    let mut bytes = msg(sasl::START, b"GSSAPI");
    bytes.extend_from_slice(&msg(sasl::ERROR, b"client gave up"));
    let (h, _) = handshake(&bytes, Duration::from_secs(5)).await;
    assert_eq!(refusal(&h).kind(), "client_failed");
}

#[tokio::test]
async fn a_plain_thrift_client_is_handed_back_with_its_bytes() {
    let call = b"\x80\x01\x00\x01\x00\x00\x00\x12get_all_databases\x00\x00\x00\x01\x00";
    let (h, wrote) = handshake(call, Duration::from_secs(5)).await;
    match h {
        Handshake::NotSasl(_, buffered) => assert_eq!(&buffered[..], &call[..buffered.len()]),
        _ => panic!("expected NotSasl"),
    }
    assert!(wrote.is_empty(), "nothing answered by the SASL stage");
}

/// A tiny deterministic generator for the property test.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test]
async fn framed_auth_stream_reads_the_same_bytes_under_every_split() {
    for case in 0..200u64 {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (case + 1).wrapping_mul(0x1000_0000_01b3));
        // Random payloads, some empty, framed; then the wire cut at random places.
        let mut wire = Vec::new();
        let mut want = Vec::new();
        for _ in 0..rng.below(6) + 1 {
            let len = rng.below(3000) as usize;
            let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            wire.extend_from_slice(&(len as u32).to_be_bytes());
            wire.extend_from_slice(&payload);
            want.extend_from_slice(&payload);
        }
        let (mut c, s) = duplex(64);
        let mut stream = SaslStream::plain(s, 4096);
        let cuts: Vec<usize> = {
            let mut v: Vec<usize> = (0..rng.below(8))
                .map(|_| rng.below(wire.len() as u64 + 1) as usize)
                .collect();
            v.push(wire.len());
            v.sort();
            v
        };
        let writer = tokio::spawn(async move {
            let mut at = 0;
            for cut in cuts {
                c.write_all(&wire[at..cut]).await.unwrap();
                at = cut;
                tokio::task::yield_now().await;
            }
            c.shutdown().await.unwrap();
            c
        });
        let mut got = Vec::new();
        let mut buf = vec![0u8; (rng.below(700) + 1) as usize];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, want, "case {case}");
        let _ = writer.await.unwrap();
    }
}

#[tokio::test]
async fn writes_are_framed_on_flush() {
    let (mut c, s) = duplex(1 << 20);
    let mut stream = SaslStream::plain(s, 4096);
    stream.write_all(b"hello ").await.unwrap();
    stream.write_all(b"world").await.unwrap();
    stream.flush().await.unwrap();
    stream.write_all(&vec![7u8; 70_000]).await.unwrap();
    stream.flush().await.unwrap();
    drop(stream);
    let mut got = Vec::new();
    c.read_to_end(&mut got).await.unwrap();
    assert_eq!(&got[..15], b"\x00\x00\x00\x0bhello world");
    // 70,000 bytes: a frame of 64 KiB, then the rest.
    assert_eq!(&got[15..19], &65_536u32.to_be_bytes());
    let second = 19 + 65_536;
    assert_eq!(
        &got[second..second + 4],
        &(70_000u32 - 65_536).to_be_bytes()
    );
    assert_eq!(got.len(), second + 4 + 70_000 - 65_536);
}

#[tokio::test]
async fn an_oversized_frame_or_a_cut_frame_is_an_error() {
    let (mut c, s) = duplex(1 << 16);
    let mut stream = SaslStream::plain(s, 100);
    c.write_all(&101u32.to_be_bytes()).await.unwrap();
    let err = stream.read(&mut [0u8; 16]).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(err
        .to_string()
        .contains("a SASL frame of 101 bytes (at most 100)"));

    let (mut c, s) = duplex(1 << 16);
    let mut stream = SaslStream::plain(s, 100);
    c.write_all(b"\x00\x00\x00\x0aabc").await.unwrap();
    drop(c);
    let mut got = Vec::new();
    let err = stream.read_to_end(&mut got).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    assert_eq!(got, b"abc");
}

#[tokio::test]
async fn bytes_held_count_against_the_global_budget_and_are_given_back() {
    use hms_guard::listener::budget::HeldBytes;
    use std::sync::Arc;
    let budget = Arc::new(HeldBytes::new(1024));
    let (mut c, s) = duplex(1 << 16);
    let mut stream = SaslStream::plain(s, 4096).with_budget(budget.clone());
    c.write_all(b"\x00\x00\x00\x05hello").await.unwrap();
    let mut buf = [0u8; 5];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");
    assert!(budget.used() <= 9, "at most what was read is held");
    drop(stream);
    assert_eq!(budget.used(), 0, "all given back when the connection ends");

    // A budget already spent elsewhere: the read fails instead of holding more.
    let budget = Arc::new(HeldBytes::new(1024));
    assert!(budget.try_take(1020));
    let (mut c, s) = duplex(1 << 16);
    let mut stream = SaslStream::plain(s, 4096).with_budget(budget.clone());
    c.write_all(b"\x00\x00\x00\x05hello").await.unwrap();
    let err = stream.read(&mut [0u8; 16]).await.unwrap_err();
    assert!(err.to_string().contains("at their limit"), "{err}");
    assert_eq!(budget.used(), 1020);
}

/// A frame that has started must arrive whole within the frame timeout (the connection's
/// `server.read_timeout_ms`); between frames the stream waits as long as the caller does.
#[tokio::test]
async fn a_frame_that_has_started_must_arrive_whole_within_the_frame_timeout() {
    let limit = Duration::from_millis(200);
    // Part of a frame header, then nothing.
    let (mut c, s) = duplex(1 << 16);
    let mut stream = SaslStream::plain(s, 4096).with_frame_timeout(limit);
    c.write_all(&[0, 0]).await.unwrap();
    let t = std::time::Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut [0u8; 16]))
        .await
        .expect("bounded by the frame timeout, not by the caller")
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert!(err.to_string().contains("within 200 ms"), "{err}");
    assert!(t.elapsed() >= Duration::from_millis(180));

    // A header and part of the payload: the part is read, the rest is due in time.
    let (mut c, s) = duplex(1 << 16);
    let mut stream = SaslStream::plain(s, 4096).with_frame_timeout(limit);
    c.write_all(b"\x00\x00\x00\x0aabc").await.unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(stream.read(&mut buf).await.unwrap(), 3);
    let err = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("bounded")
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);

    // Whole frames, then silence: waiting for the next frame is not bounded here.
    let (mut c, s) = duplex(1 << 16);
    let mut stream = SaslStream::plain(s, 4096).with_frame_timeout(limit);
    c.write_all(b"\x00\x00\x00\x02ok\x00\x00\x00\x00")
        .await
        .unwrap();
    assert_eq!(stream.read(&mut buf).await.unwrap(), 2);
    let idle = tokio::time::timeout(Duration::from_millis(600), stream.read(&mut buf)).await;
    assert!(idle.is_err(), "still waiting: {idle:?}");
    // The next frame, sent slowly but within the limit each time, is read.
    c.write_all(b"\x00\x00").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.write_all(b"\x00\x01z").await.unwrap();
    assert_eq!(stream.read(&mut buf).await.unwrap(), 1);
    assert_eq!(buf[0], b'z');
}
