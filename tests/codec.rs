//! Codec tests on literal bytes: split reads, truncation, size/depth/count limits, hostile
//! input, each transport kind.

mod common;

use common::{framed, CALL, EXCEPTION, REPLY, W};
use hms_guard::wire::codec::reply::{application_exception, AppErrorKind};
use hms_guard::wire::codec::{header, Limits, MessageType, Protocol, Scan, ScanError, Scanner};
use hms_guard::wire::framing::MessageWalker;
use hms_guard::wire::transport::{detect, Detect, Rejected, Transport};

const BOTH: [Protocol; 2] = [Protocol::Binary, Protocol::Compact];

/// A message using every type: nested structs, lists, sets, maps, bools, numbers, doubles.
fn rich_message(p: Protocol) -> Vec<u8> {
    let mut w = W::new(p);
    w.message("get_table", REPLY, 7).begin_struct();
    w.field(12, 0).begin_struct(); // Table
    w.field(11, 1).string(b"customer");
    w.field(11, 2).string(b"demo_database");
    w.field(8, 4).i32(1_700_000_000);
    w.field(10, 5).i64(-42);
    w.bool_field(6, true);
    w.field(4, 7).double(1.5);
    w.field(3, 8);
    w.b.push(0x7f);
    w.field(6, 9);
    match p {
        Protocol::Binary => w.b.extend_from_slice(&(-3i16).to_be_bytes()),
        Protocol::Compact => {
            w.varint(5);
        }
    }
    w.field(15, 30).list(11, 3); // long field-id jump: compact long form
    for s in ["a", "bb", ""] {
        w.string(s.as_bytes());
    }
    w.field(13, 31).map(11, 11, 2);
    for (k, v) in [("k1", "v1"), ("k2", "v2")] {
        w.string(k.as_bytes()).string(v.as_bytes());
    }
    w.field(14, 32).list(2, 2); // set<bool>
    w.b.extend_from_slice(&[1, 0]);
    w.field(15, 33).list(12, 2); // list<struct>
    for name in ["c1", "c2"] {
        w.begin_struct()
            .field(11, 1)
            .string(name.as_bytes())
            .end_struct();
    }
    w.field(13, 34).map(11, 15, 1); // map<string, list<i32>>
    w.string(b"x").list(8, 2).i32(1).i32(-1);
    w.field(13, 35).map(11, 11, 0); // empty map
    w.field(11, 1000).string(&[0xff; 300]); // unknown field, binary blob
    w.end_struct(); // Table
    w.end_struct(); // result
    w.bytes()
}

fn scan_all(p: Protocol, msg: &[u8], limits: Limits) -> Result<Scan, ScanError> {
    Scanner::new(p, limits).advance(msg)
}

/// Feeds `chunks` one by one the way the proxy does: bytes not walked stay in the buffer.
fn scan_chunks(p: Protocol, chunks: &[&[u8]]) -> Result<Option<usize>, ScanError> {
    let mut s = Scanner::new(p, Limits::default());
    let mut buf: Vec<u8> = Vec::new();
    let mut walked_total = 0;
    for c in chunks {
        buf.extend_from_slice(c);
        match s.advance(&buf)? {
            Scan::Complete(n) => return Ok(Some(walked_total + n)),
            Scan::NeedMore(n) => {
                buf.drain(..n);
                walked_total += n;
            }
        }
    }
    Ok(None)
}

#[test]
fn whole_message_completes_at_its_end() {
    for p in BOTH {
        let mut msg = rich_message(p);
        let len = msg.len();
        msg.extend_from_slice(b"next message bytes");
        let mut s = Scanner::new(p, Limits::default());
        assert_eq!(s.advance(&msg).unwrap(), Scan::Complete(len), "{p}");
        let h = s.header().unwrap();
        assert_eq!(
            (h.name.as_str(), h.kind, h.seqid),
            ("get_table", MessageType::Reply, 7)
        );
    }
}

#[test]
fn split_at_every_byte_boundary() {
    for p in BOTH {
        let msg = rich_message(p);
        for cut in 0..=msg.len() {
            let r = scan_chunks(p, &[&msg[..cut], &msg[cut..]]).unwrap();
            assert_eq!(r, Some(msg.len()), "{p} split at {cut}");
        }
        // And one byte at a time.
        let bytes: Vec<&[u8]> = msg.chunks(1).collect();
        assert_eq!(scan_chunks(p, &bytes).unwrap(), Some(msg.len()));
    }
}

#[test]
fn truncated_messages_never_complete() {
    for p in BOTH {
        let msg = rich_message(p);
        for cut in 0..msg.len() {
            let r = scan_chunks(p, &[&msg[..cut]]).unwrap();
            assert_eq!(r, None, "{p} truncated at {cut} must need more");
        }
    }
}

#[test]
fn oversized_message_is_refused() {
    for p in BOTH {
        let msg = rich_message(p);
        let limits = Limits {
            max_message_bytes: msg.len() as u64 - 1,
            ..Limits::default()
        };
        let e = scan_all(p, &msg, limits).unwrap_err();
        assert!(
            matches!(
                e,
                ScanError::TooLarge { .. } | ScanError::CountTooLarge { .. }
            ),
            "{p}: {e}"
        );
        // Exactly at the limit is fine.
        let limits = Limits {
            max_message_bytes: msg.len() as u64,
            ..Limits::default()
        };
        assert_eq!(
            scan_all(p, &msg, limits).unwrap(),
            Scan::Complete(msg.len())
        );
    }
}

#[test]
fn huge_string_length_is_refused_before_its_bytes_arrive() {
    for p in BOTH {
        let mut w = W::new(p);
        w.message("get_table", CALL, 1).begin_struct().field(11, 1);
        match p {
            Protocol::Binary => w.b.extend_from_slice(&i32::MAX.to_be_bytes()),
            Protocol::Compact => {
                w.varint(i32::MAX as u64);
            }
        }
        let e = scan_all(p, &w.bytes(), Limits::default()).unwrap_err();
        assert!(matches!(e, ScanError::CountTooLarge { .. }), "{p}: {e}");
    }
}

#[test]
fn list_claiming_2_pow_31_minus_1_elements_is_refused_at_once() {
    for p in BOTH {
        for elem in [2u8, 8, 11, 12] {
            let mut w = W::new(p);
            w.message("add_partitions", CALL, 1)
                .begin_struct()
                .field(15, 1)
                .list(elem, i32::MAX);
            let e = scan_all(p, &w.bytes(), Limits::default()).unwrap_err();
            assert!(
                matches!(e, ScanError::CountTooLarge { count, .. } if count == i32::MAX as u64),
                "{p} elem {elem}: {e}"
            );
        }
        let mut w = W::new(p);
        w.message("m", CALL, 1)
            .begin_struct()
            .field(13, 1)
            .map(11, 11, i32::MAX);
        let e = scan_all(p, &w.bytes(), Limits::default()).unwrap_err();
        assert!(matches!(e, ScanError::CountTooLarge { .. }), "{p}: {e}");
    }
    // Negative counts (binary) are refused too.
    let mut w = W::binary();
    w.message("m", CALL, 1)
        .begin_struct()
        .field(15, 1)
        .list(8, -1);
    assert_eq!(
        scan_all(Protocol::Binary, &w.bytes(), Limits::default()).unwrap_err(),
        ScanError::NegativeLength(-1)
    );
}

#[test]
fn hundred_deep_nesting_is_refused() {
    for p in BOTH {
        let mut w = W::new(p);
        w.message("create_table", CALL, 1).begin_struct();
        for _ in 0..100 {
            w.field(12, 1).begin_struct();
        }
        let e = scan_all(p, &w.bytes(), Limits::default()).unwrap_err();
        assert_eq!(e, ScanError::TooDeep(64), "{p}");
        // 63 nested structs inside the top one (depth 64) is allowed.
        let mut w = W::new(p);
        w.message("create_table", CALL, 1).begin_struct();
        for _ in 0..63 {
            w.field(12, 1).begin_struct();
        }
        for _ in 0..64 {
            w.end_struct();
        }
        let msg = w.bytes();
        assert_eq!(
            scan_all(p, &msg, Limits::default()).unwrap(),
            Scan::Complete(msg.len())
        );
    }
    // Deep nesting through lists counts the same.
    let mut w = W::binary();
    w.message("m", CALL, 1).begin_struct().field(15, 1);
    for _ in 0..100 {
        w.list(15, 1);
    }
    assert_eq!(
        scan_all(Protocol::Binary, &w.bytes(), Limits::default()).unwrap_err(),
        ScanError::TooDeep(64)
    );
}

#[test]
fn non_strict_and_bad_headers() {
    // Non-strict binary: name length first.
    let mut ns = 7i32.to_be_bytes().to_vec();
    ns.extend_from_slice(b"set_ugi");
    ns.push(CALL);
    ns.extend_from_slice(&1i32.to_be_bytes());
    assert_eq!(
        scan_all(Protocol::Binary, &ns, Limits::default()).unwrap_err(),
        ScanError::NonStrictBinary
    );
    assert_eq!(detect(&ns), Detect::Reject(Rejected::NonStrictBinary));
    // Wrong version, wrong message type, hostile name length.
    let e = scan_all(
        Protocol::Binary,
        &[0x80, 0x02, 0, 1, 0, 0, 0, 0],
        Limits::default(),
    );
    assert!(matches!(e, Err(ScanError::BadVersion(_))));
    let e = scan_all(
        Protocol::Binary,
        &[0x80, 0x01, 0, 9, 0, 0, 0, 0],
        Limits::default(),
    );
    assert_eq!(e, Err(ScanError::BadMessageType(9)));
    let e = scan_all(
        Protocol::Binary,
        &[0x80, 0x01, 0, 1, 0x7f, 0xff, 0xff, 0xff],
        Limits::default(),
    );
    assert_eq!(e, Err(ScanError::BadNameLength(i32::MAX as i64)));
    let e = scan_all(
        Protocol::Compact,
        &[0x82, 0x21, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f],
        Limits::default(),
    );
    assert!(matches!(e, Err(ScanError::BadNameLength(_))));
    let e = scan_all(Protocol::Compact, &[0x82, 0x22], Limits::default());
    assert!(matches!(e, Err(ScanError::BadVersion(_))));
}

#[test]
fn invalid_types_and_varints() {
    let mut w = W::binary();
    w.message("m", CALL, 1).begin_struct();
    w.b.extend_from_slice(&[9, 0, 1]); // type 9 does not exist
    assert_eq!(
        scan_all(Protocol::Binary, &w.bytes(), Limits::default()).unwrap_err(),
        ScanError::InvalidType(9)
    );
    let mut w = W::compact();
    w.message("m", CALL, 1).begin_struct();
    w.b.push(0x1e); // compact type 14 does not exist
    assert_eq!(
        scan_all(Protocol::Compact, &w.bytes(), Limits::default()).unwrap_err(),
        ScanError::InvalidType(14)
    );
    let mut w = W::compact();
    w.message("m", CALL, 1).begin_struct().field(10, 1);
    w.b.extend_from_slice(&[0xff; 11]);
    assert_eq!(
        scan_all(Protocol::Compact, &w.bytes(), Limits::default()).unwrap_err(),
        ScanError::VarintTooLong(10)
    );
}

#[test]
fn framed_messages() {
    for p in BOTH {
        let msg = rich_message(p);
        let f = framed(&msg);
        let t = Transport {
            protocol: p,
            framed: true,
        };
        assert_eq!(detect(&f), Detect::Accept(t));
        let mut w = MessageWalker::new(t, Limits::default());
        for cut in [0, 2, 4, 5, f.len() / 2, f.len()] {
            w.reset();
            let first = w.advance(&f[..cut]).unwrap();
            let walked = match first {
                Scan::NeedMore(n) => n,
                Scan::Complete(n) => {
                    assert_eq!(n, f.len());
                    continue;
                }
            };
            assert_eq!(
                w.advance(&f[walked..]).unwrap(),
                Scan::Complete(f.len() - walked),
                "{p} cut {cut}"
            );
        }
        // A frame longer than its message, and one shorter.
        let mut long = ((msg.len() + 3) as u32).to_be_bytes().to_vec();
        long.extend_from_slice(&msg);
        long.extend_from_slice(&[0, 0, 0]);
        w.reset();
        assert!(matches!(
            w.advance(&long),
            Err(ScanError::FrameMismatch { .. })
        ));
        let mut short = ((msg.len() - 3) as u32).to_be_bytes().to_vec();
        short.extend_from_slice(&msg);
        w.reset();
        assert!(matches!(
            w.advance(&short),
            Err(ScanError::FrameTruncated { .. } | ScanError::CountTooLarge { .. })
        ));
        // A frame that ends right after a complete field but before the struct's end.
        let inner = common::call(p, "get_table", 1, &["db", "t"]);
        let mut cut = ((inner.len() - 1) as u32).to_be_bytes().to_vec();
        cut.extend_from_slice(&inner);
        w.reset();
        assert_eq!(
            w.advance(&cut),
            Err(ScanError::FrameTruncated {
                frame: inner.len() as u64 - 1
            })
        );
        // A frame longer than the request limit is refused from its prefix alone.
        let mut w = MessageWalker::new(
            t,
            Limits {
                max_message_bytes: 1000,
                ..Limits::default()
            },
        );
        assert!(matches!(
            w.advance(&[0, 1, 0, 0]),
            Err(ScanError::TooLarge { limit: 1000 })
        ));
    }
}

#[test]
fn transport_detection_for_each_kind() {
    let binary = common::call(Protocol::Binary, "set_ugi", 1, &["u"]);
    let compact = common::call(Protocol::Compact, "set_ugi", 1, &["u"]);
    let t = |protocol, framed| Detect::Accept(Transport { protocol, framed });
    assert_eq!(detect(&binary), t(Protocol::Binary, false));
    assert_eq!(detect(&compact), t(Protocol::Compact, false));
    assert_eq!(detect(&framed(&binary)), t(Protocol::Binary, true));
    assert_eq!(detect(&framed(&compact)), t(Protocol::Compact, true));
    // TLS ClientHello record.
    assert_eq!(
        detect(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]),
        Detect::Reject(Rejected::Tls)
    );
    // TSaslTransport START with mechanism PLAIN / GSSAPI.
    assert_eq!(
        detect(b"\x01\x00\x00\x00\x05PLAIN"),
        Detect::Reject(Rejected::Sasl)
    );
    assert_eq!(
        detect(b"\x01\x00\x00\x00\x06GSSAPI"),
        Detect::Reject(Rejected::Sasl)
    );
    // HTTP.
    assert_eq!(
        detect(b"GET /metrics HTTP/1.1\r\n"),
        Detect::Reject(Rejected::Http)
    );
    assert_eq!(
        detect(b"POST / HTTP/1.1\r\n"),
        Detect::Reject(Rejected::Http)
    );
    // Garbage.
    assert_eq!(
        detect(b"\xff\xfe\xfd\xfc\xfb\xfa"),
        Detect::Reject(Rejected::Unknown)
    );
    assert_eq!(detect(b"hello world"), Detect::Reject(Rejected::Unknown));
    // Not enough bytes yet: every strict prefix of a valid start waits.
    assert_eq!(detect(&[]), Detect::NeedMore);
    assert_eq!(detect(&[0x80]), Detect::NeedMore);
    assert_eq!(detect(&framed(&binary)[..5]), Detect::NeedMore);
}

#[test]
fn exception_replies_are_valid_messages() {
    for p in BOTH {
        for framed_ in [false, true] {
            let out = application_exception(
                p,
                framed_,
                "get_table",
                -5,
                AppErrorKind::InternalError,
                "boom",
            );
            let t = Transport {
                protocol: p,
                framed: framed_,
            };
            let mut w = MessageWalker::new(t, Limits::default());
            assert_eq!(w.advance(&out).unwrap(), Scan::Complete(out.len()));
            let h = w.header().unwrap().clone();
            assert_eq!(
                (h.name.as_str(), h.kind, h.seqid),
                ("get_table", MessageType::Exception, -5)
            );
            let body = if framed_ { &out[4..] } else { &out[..] };
            assert_eq!(common::exception_message(p, body, &h), "boom");
        }
    }
    let _ = EXCEPTION;
}

#[test]
fn header_parser_needs_whole_header() {
    let msg = common::call(Protocol::Binary, "get_all_databases", 3, &[]);
    let h = header::parse(Protocol::Binary, &msg, 1024)
        .unwrap()
        .unwrap();
    for cut in 0..h.len {
        assert_eq!(
            header::parse(Protocol::Binary, &msg[..cut], 1024).unwrap(),
            None
        );
    }
}

/// Deterministic pseudo-random hostile inputs: the scanner must never panic and never report
/// a message longer than its input.
#[test]
fn hostile_garbage_never_panics() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for p in BOTH {
        let base = rich_message(p);
        for _ in 0..20_000 {
            let mut m = base.clone();
            let flips = 1 + (next() % 4) as usize;
            for _ in 0..flips {
                let i = (next() as usize) % m.len();
                m[i] = next() as u8;
            }
            let cut = (next() as usize) % (m.len() + 1);
            let limits = Limits {
                max_message_bytes: 4096,
                ..Limits::default()
            };
            if let Ok(Scan::Complete(n) | Scan::NeedMore(n)) = scan_all(p, &m[..cut], limits) {
                assert!(n <= cut);
            }
            let _ = detect(&m[..cut.min(8)]);
        }
    }
}

/// `create_table` args: Table {1 tableName, 2 dbName, [3 owner], 12 tableType, [18 ownerType],
/// 99 a field of a newer client}.
fn create_table_call(p: Protocol, owner: Option<&str>, owner_type: Option<i32>) -> Vec<u8> {
    let mut w = W::new(p);
    w.message("create_table", CALL, 5).begin_struct();
    w.field(12, 1).begin_struct();
    w.field(11, 1).string(b"t");
    w.field(11, 2).string(b"d");
    if let Some(o) = owner {
        w.field(11, 3).string(o.as_bytes());
    }
    w.field(11, 12).string(b"EXTERNAL_TABLE");
    if let Some(t) = owner_type {
        w.field(8, 18).i32(t);
    }
    w.field(11, 99).string(b"from the future");
    w.end_struct().end_struct();
    w.bytes()
}

#[test]
fn a_field_is_set_in_place_or_added_and_every_other_byte_stays() {
    use hms_guard::wire::codec::splice::{set_field, IfAbsent, NewValue};
    let mary = NewValue::String(b"mary".to_vec());
    for p in BOTH {
        // Present: replaced where it stands (a longer value shifts what follows, nothing else).
        let msg = create_table_call(p, Some("eve"), Some(3));
        let out = set_field(p, &msg, &[1, 3], &mary, IfAbsent::Add, 64)
            .unwrap()
            .unwrap();
        let out = set_field(p, &out, &[1, 18], &NewValue::I32(1), IfAbsent::Leave, 64)
            .unwrap()
            .unwrap();
        assert_eq!(
            out.to_vec(),
            create_table_call(p, Some("mary"), Some(1)),
            "{p}"
        );
        // Absent: added as the struct's last field (after the newer client's field 99).
        let msg = create_table_call(p, None, None);
        let out = set_field(p, &msg, &[1, 3], &mary, IfAbsent::Add, 64)
            .unwrap()
            .unwrap();
        let mut w = W::new(p);
        w.message("create_table", CALL, 5).begin_struct();
        w.field(12, 1).begin_struct();
        w.field(11, 1).string(b"t");
        w.field(11, 2).string(b"d");
        w.field(11, 12).string(b"EXTERNAL_TABLE");
        w.field(11, 99).string(b"from the future");
        w.field(11, 3).string(b"mary");
        w.end_struct().end_struct();
        assert_eq!(out.to_vec(), w.bytes(), "{p}");
        // ... and read back as the metastore reads it.
        let limits = hms_guard::wire::schema::ReadLimits {
            versions: hms_guard::wire::schema::types::ALL_VERSIONS,
            max_depth: 64,
            max_name_bytes: 1024,
        };
        let call = hms_guard::wire::schema::read_request(p, &out, limits, true).unwrap();
        assert_eq!(
            call.args.path(&[1, 3]).and_then(|v| v.as_str()),
            Some("mary")
        );
        // An absent optional field is left absent; an absent parent changes nothing.
        assert_eq!(
            set_field(p, &msg, &[1, 18], &NewValue::I32(1), IfAbsent::Leave, 64).unwrap(),
            None
        );
        assert_eq!(
            set_field(p, &msg, &[7, 3], &mary, IfAbsent::Add, 64).unwrap(),
            None
        );
        // A field of another wire type is not overwritten.
        assert!(set_field(p, &msg, &[1, 1], &NewValue::I32(1), IfAbsent::Add, 64).is_err());
    }
}

#[test]
fn a_reply_carries_a_result_or_an_exception() {
    use hms_guard::wire::codec::reply::carries_result;
    for p in BOTH {
        let mut ok = W::new(p);
        ok.message("get_table", REPLY, 1).begin_struct();
        ok.field(12, 0)
            .begin_struct()
            .field(11, 1)
            .string(b"t")
            .end_struct();
        ok.end_struct();
        assert!(carries_result(p, &ok.bytes(), 64), "{p}");
        let mut not_found = W::new(p);
        not_found.message("get_table", REPLY, 1).begin_struct();
        not_found
            .field(12, 2)
            .begin_struct()
            .field(11, 1)
            .string(b"no such table")
            .end_struct();
        not_found.end_struct();
        assert!(!carries_result(p, &not_found.bytes(), 64), "{p}");
        let mut empty = W::new(p);
        empty
            .message("get_table", REPLY, 1)
            .begin_struct()
            .end_struct();
        assert!(!carries_result(p, &empty.bytes(), 64), "{p}");
        let mut app = W::new(p);
        app.message("get_table", EXCEPTION, 1)
            .begin_struct()
            .end_struct();
        assert!(!carries_result(p, &app.bytes(), 64), "{p}");
        // Unreadable: treated as carrying one (never passed on as "not found").
        assert!(carries_result(p, &[0x80, 0x01], 64), "{p}");
    }
}

/// A `grant_privileges` call: two grants, the first naming grantor `admin` (a ROLE), the second
/// none; a newer client's field in the first grant's info.
fn grant_call(p: Protocol, first: Option<(&str, i32)>, second: Option<(&str, i32)>) -> Vec<u8> {
    let mut w = W::new(p);
    w.message("grant_privileges", CALL, 9).begin_struct();
    w.field(12, 1).begin_struct();
    w.field(15, 1).list(12, 2);
    for (i, grantor) in [first, second].into_iter().enumerate() {
        w.begin_struct();
        w.field(12, 1).begin_struct();
        w.field(8, 1).i32(3);
        w.field(11, 2).string(b"d");
        w.field(11, 3).string(b"t");
        w.end_struct();
        w.field(11, 2).string(b"john");
        w.field(8, 3).i32(1);
        w.field(12, 4).begin_struct();
        w.field(11, 1).string(b"SELECT");
        if i == 0 {
            w.field(11, 99).string(b"from the future");
        }
        if let Some((name, ty)) = grantor {
            w.field(11, 3).string(name.as_bytes());
            w.field(8, 4).i32(ty);
        }
        w.end_struct();
        w.end_struct();
    }
    w.end_struct();
    w.end_struct();
    w.bytes()
}

#[test]
fn a_field_is_set_in_every_element_of_a_list() {
    use hms_guard::wire::codec::splice::{set_field, IfAbsent, NewValue, EACH_ELEMENT};
    let mary = NewValue::String(b"mary".to_vec());
    for p in BOTH {
        let msg = grant_call(p, Some(("admin", 2)), None);
        let out = set_field(
            p,
            &msg,
            &[1, 1, EACH_ELEMENT, 4, 3],
            &mary,
            IfAbsent::Add,
            64,
        )
        .unwrap()
        .unwrap();
        let out = set_field(
            p,
            &out,
            &[1, 1, EACH_ELEMENT, 4, 4],
            &NewValue::I32(1),
            IfAbsent::Add,
            64,
        )
        .unwrap()
        .unwrap();
        // The first grant's fields replaced where they stand, the second's added at its end
        // (compact: with long-form headers, so no other field's id delta changes): read as
        // the metastore reads them, the same call as one written with those grantors.
        let want = grant_call(p, Some(("mary", 1)), Some(("mary", 1)));
        if p == Protocol::Binary {
            assert_eq!(out.to_vec(), want);
        }
        let limits = hms_guard::wire::schema::ReadLimits {
            versions: hms_guard::wire::schema::types::ALL_VERSIONS,
            max_depth: 64,
            max_name_bytes: 1024,
        };
        let read = |m: &[u8]| {
            hms_guard::wire::schema::read_request(p, m, limits, true)
                .unwrap()
                .args
        };
        assert_eq!(read(&out), read(&want), "{p}");
        // Nothing to set: nothing changes.
        assert_eq!(
            set_field(p, &msg, &[2, EACH_ELEMENT, 4, 3], &mary, IfAbsent::Add, 64).unwrap(),
            None
        );
        // Not a list where the path steps into elements: refused, never guessed.
        assert!(set_field(p, &msg, &[1, EACH_ELEMENT, 3], &mary, IfAbsent::Add, 64).is_err());
    }
}

/// A reply whose result struct sets field `id` (a struct holding a message), or nothing.
fn result_with(p: Protocol, id: Option<i16>) -> Vec<u8> {
    let mut w = W::new(p);
    w.message("get_table", REPLY, 3).begin_struct();
    if let Some(id) = id {
        w.field(12, id).begin_struct();
        w.field(11, 1).string(b"no such table");
        w.end_struct();
    }
    w.end_struct();
    w.bytes()
}

#[test]
fn the_result_structs_first_field_is_noted_as_it_passes() {
    use hms_guard::wire::codec::TopField;
    for p in BOTH {
        // Short (delta) and long compact forms, and a negative id.
        for id in [0i16, 1, 2, 3, 15, 16, 300, -2] {
            let msg = result_with(p, Some(id));
            let mut s = Scanner::new(p, Limits::default());
            assert_eq!(s.advance(&msg).unwrap(), Scan::Complete(msg.len()), "{p}");
            assert_eq!(s.top_field(), Some(TopField::Id(id)), "{p} {id}");
            // Fed one byte at a time, the same (the header is taken only once whole).
            let mut s = Scanner::new(p, Limits::default());
            let mut walked = 0;
            for end in 1..=msg.len() {
                match s.advance(&msg[walked..end]).unwrap() {
                    Scan::NeedMore(n) | Scan::Complete(n) => walked += n,
                }
            }
            assert_eq!(s.top_field(), Some(TopField::Id(id)), "{p} {id} bytewise");
        }
        let msg = result_with(p, None);
        let mut s = Scanner::new(p, Limits::default());
        s.advance(&msg).unwrap();
        assert_eq!(s.top_field(), Some(TopField::Stop), "{p}");
        // Only the top struct's first field counts, and a reset forgets it.
        let msg = rich_message(p);
        s.reset();
        assert_eq!(s.top_field(), None);
        s.advance(&msg).unwrap();
        assert_eq!(s.top_field(), Some(TopField::Id(0)), "{p}");
    }
}
