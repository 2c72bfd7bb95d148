//! Literal-byte tests of the schema-exact reader, one per refusal class, on a small schema of
//! their own (the generated one is covered by `tests/schema.rs`).

use super::read::{read_call, ReadLimits, RejectKind};
use super::types::*;
use crate::wire::codec::value::Value;
use crate::wire::codec::Protocol;

static E_COLOR: EnumDef = EnumDef {
    name: "Color",
    values: &[1, 2],
};
static S_INNER: StructDef = StructDef {
    name: "Inner",
    kind: Kind::Struct,
    fields: &[
        FieldDef {
            id: 1,
            name: "name",
            ty: &[T::String],
            ty_in: &[ALL_VERSIONS],
            required_in: ALL_VERSIONS,
        },
        FieldDef {
            id: 2,
            name: "flag",
            ty: &[T::Bool],
            ty_in: &[ALL_VERSIONS],
            required_in: 0,
        },
    ],
};
static U_CHOICE: StructDef = StructDef {
    name: "Choice",
    kind: Kind::Union,
    fields: &[
        FieldDef {
            id: 1,
            name: "a",
            ty: &[T::I32],
            ty_in: &[ALL_VERSIONS],
            required_in: 0,
        },
        FieldDef {
            id: 2,
            name: "b",
            ty: &[T::String],
            ty_in: &[ALL_VERSIONS],
            required_in: 0,
        },
    ],
};
static S_ARGS: StructDef = StructDef {
    name: "m_args",
    kind: Kind::Struct,
    fields: &[
        FieldDef {
            id: 1,
            name: "db",
            ty: &[T::String],
            ty_in: &[ALL_VERSIONS],
            required_in: 0,
        },
        FieldDef {
            id: 2,
            name: "items",
            ty: &[T::List(&T::Struct(&S_INNER))],
            ty_in: &[ALL_VERSIONS],
            required_in: 0,
        },
        FieldDef {
            id: 3,
            name: "params",
            ty: &[T::Map(&T::String, &T::String)],
            ty_in: &[ALL_VERSIONS],
            required_in: 0,
        },
        FieldDef {
            id: 4,
            name: "color",
            ty: &[T::Enum(&E_COLOR)],
            ty_in: &[ALL_VERSIONS],
            required_in: 0,
        },
        FieldDef {
            id: 5,
            name: "choice",
            ty: &[T::Struct(&U_CHOICE)],
            ty_in: &[ALL_VERSIONS],
            required_in: 0,
        },
        FieldDef {
            id: 6,
            name: "n",
            ty: &[T::I32, T::I64],
            ty_in: &[V2_3, V3_1],
            required_in: 0,
        },
        FieldDef {
            id: 7,
            name: "blob",
            ty: &[T::Binary],
            ty_in: &[ALL_VERSIONS],
            required_in: 0,
        },
        FieldDef {
            id: 8,
            name: "flags",
            ty: &[T::List(&T::Bool)],
            ty_in: &[ALL_VERSIONS],
            required_in: 0,
        },
    ],
};
static S_EMPTY: StructDef = StructDef {
    name: "m_result",
    kind: Kind::Struct,
    fields: &[],
};
static M: MethodDef = MethodDef {
    name: "m",
    oneway: false,
    args: &S_ARGS,
    result: &S_EMPTY,
    versions: V2_3,
};
static M_ONEWAY: MethodDef = MethodDef {
    name: "m",
    oneway: true,
    args: &S_ARGS,
    result: &S_EMPTY,
    versions: V2_3,
};

const LIMITS: ReadLimits = ReadLimits {
    versions: crate::wire::schema::types::ALL_VERSIONS,
    max_depth: 8,
    max_name_bytes: 64,
};

/// A strict binary CALL of method `m` with `body` (the args' fields, no STOP).
fn call(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0x80, 0x01, 0x00, kind, 0, 0, 0, 1, b'm', 0, 0, 0, 7];
    v.extend_from_slice(body);
    v.push(0);
    v
}

fn string_field(id: u8, s: &[u8]) -> Vec<u8> {
    let mut v = vec![11, 0, id];
    v.extend((s.len() as u32).to_be_bytes());
    v.extend_from_slice(s);
    v
}

fn kind_of(msg: &[u8]) -> &'static str {
    match read_call(Protocol::Binary, msg, &M, LIMITS, true) {
        Ok(_) => "accepted",
        Err(e) => e.kind.as_str(),
    }
}

#[test]
fn a_well_formed_call_is_read_into_the_values_java_reads() {
    let mut body = string_field(1, b"sales");
    // 2: list<Inner> of one element {1: "t", 2: true}
    body.extend([15, 0, 2, 12, 0, 0, 0, 1]);
    body.extend(string_field(1, b"t"));
    body.extend([2, 0, 2, 1, 0]);
    // 3: map<string,string> {"k": "v"}
    body.extend([
        13, 0, 3, 11, 11, 0, 0, 0, 1, 0, 0, 0, 1, b'k', 0, 0, 0, 1, b'v',
    ]);
    // 4: Color 2; 5: Choice {2: "x"}; 6: n as i64; 99: an unknown field (skipped)
    body.extend([8, 0, 4, 0, 0, 0, 2]);
    body.extend([12, 0, 5]);
    body.extend(string_field(2, b"x"));
    body.push(0);
    body.extend([10, 0, 6, 0, 0, 0, 0, 0, 0, 0, 9]);
    body.extend([8, 0, 99, 0, 0, 0, 5]);
    let msg = call(1, &body);
    let c = read_call(Protocol::Binary, &msg, &M, LIMITS, true).expect("accepted");
    let s = |x: &str| Value::Bytes(x.as_bytes().to_vec());
    assert_eq!(c.header.name, "m");
    assert_eq!(c.header.seqid, 7);
    assert_eq!(c.args.field(1), Some(&s("sales")));
    assert_eq!(
        c.args.path(&[2]).map(Value::as_list).map(<[Value]>::len),
        Some(1)
    );
    assert_eq!(c.args.field(3).and_then(|m| m.map_get("k")), Some(&s("v")));
    assert_eq!(c.args.field(4), Some(&Value::Int(2)));
    assert_eq!(c.args.path(&[5, 2]), Some(&s("x")));
    assert_eq!(c.args.field(6), Some(&Value::Int(9)));
    assert_eq!(c.args.field(99), None, "unknown fields are skipped");
    // Checked only: no values kept.
    let c = read_call(Protocol::Binary, &msg, &M, LIMITS, false).expect("accepted");
    assert_eq!(c.args, Value::Struct(Vec::new()));
}

#[test]
fn a_field_id_twice_is_refused() {
    let mut body = string_field(1, b"a");
    body.extend(string_field(1, b"b"));
    assert_eq!(kind_of(&call(1, &body)), "duplicate_field");
    // Nested, and in an unknown field's struct too.
    let mut body = vec![15, 0, 2, 12, 0, 0, 0, 1];
    body.extend(string_field(1, b"t"));
    body.extend(string_field(1, b"u"));
    body.push(0);
    assert_eq!(kind_of(&call(1, &body)), "duplicate_field");
    let mut body = vec![12, 0, 50];
    body.extend([8, 0, 1, 0, 0, 0, 1, 8, 0, 1, 0, 0, 0, 2, 0]);
    assert_eq!(kind_of(&call(1, &body)), "duplicate_field");
}

#[test]
fn wire_types_must_be_the_declared_ones_at_every_depth() {
    // 1: db sent as i32.
    assert_eq!(kind_of(&call(1, &[8, 0, 1, 0, 0, 0, 1])), "field_type");
    // 2: list<Inner> whose header says list<string>: Java would read structs.
    let mut body = vec![15, 0, 2, 11, 0, 0, 0, 1, 0, 0, 0, 1, b'x'];
    body.truncate(body.len());
    let e = read_call(Protocol::Binary, &call(1, &body), &M, LIMITS, true).unwrap_err();
    assert_eq!(e.kind.as_str(), "field_type");
    assert!(e.to_string().contains("m_args.items"), "{e}");
    // 3: map<string,string> with i32 values.
    let body = [13, 0, 3, 11, 8, 0, 0, 0, 0];
    assert_eq!(kind_of(&call(1, &body)), "field_type");
    // 6: i32 or i64 accepted, i16 not.
    assert_eq!(kind_of(&call(1, &[8, 0, 6, 0, 0, 0, 1])), "accepted");
    assert_eq!(kind_of(&call(1, &[6, 0, 6, 0, 1])), "field_type");
}

#[test]
fn bools_are_zero_or_one() {
    assert_eq!(
        kind_of(&call(1, &[15, 0, 8, 2, 0, 0, 0, 2, 0, 1])),
        "accepted"
    );
    assert_eq!(kind_of(&call(1, &[15, 0, 8, 2, 0, 0, 0, 1, 2])), "bool");
    // In an unknown field as well.
    assert_eq!(kind_of(&call(1, &[2, 0, 77, 5])), "bool");
}

#[test]
fn strings_are_utf8_binaries_are_not() {
    assert_eq!(kind_of(&call(1, &string_field(1, b"ok\xff"))), "utf8");
    assert_eq!(kind_of(&call(1, &string_field(7, b"\xff\xfe"))), "accepted");
}

#[test]
fn required_fields_enums_and_unions() {
    // Inner without its required name.
    let body = [15, 0, 2, 12, 0, 0, 0, 1, 2, 0, 2, 1, 0];
    assert_eq!(kind_of(&call(1, &body)), "required_field");
    assert_eq!(kind_of(&call(1, &[8, 0, 4, 0, 0, 0, 3])), "enum");
    // A union with no field and with two.
    assert_eq!(kind_of(&call(1, &[12, 0, 5, 0])), "union");
    let mut body = vec![12, 0, 5, 8, 0, 1, 0, 0, 0, 1];
    body.extend(string_field(2, b"x"));
    body.push(0);
    assert_eq!(kind_of(&call(1, &body)), "union");
}

#[test]
fn message_types_follow_the_method() {
    let body = string_field(1, b"d");
    assert_eq!(kind_of(&call(1, &body)), "accepted");
    for t in [2, 3, 4] {
        assert_eq!(kind_of(&call(t, &body)), "message_type", "type {t}");
    }
    let oneway = read_call(Protocol::Binary, &call(4, &body), &M_ONEWAY, LIMITS, true);
    assert!(oneway.is_ok());
    let e = read_call(Protocol::Binary, &call(1, &body), &M_ONEWAY, LIMITS, true).unwrap_err();
    assert_eq!(e.kind.as_str(), "message_type");
}

#[test]
fn the_message_ends_where_the_args_end() {
    let mut msg = call(1, &string_field(1, b"d"));
    msg.extend([0x80, 0x01, 0x00, 0x01]);
    assert_eq!(kind_of(&msg), "trailing_bytes");
    let msg = call(1, &string_field(1, b"d"));
    assert_eq!(kind_of(&msg[..msg.len() - 1]), "truncated");
    assert_eq!(kind_of(&msg[..msg.len() - 3]), "truncated");
}

#[test]
fn unknown_wire_types_sizes_and_depth() {
    // UUID (16) and VOID (1) in an unknown field: libthrift of the metastore cannot skip them.
    assert_eq!(kind_of(&call(1, &[16, 0, 60])), "wire_type");
    assert_eq!(kind_of(&call(1, &[1, 0, 60])), "wire_type");
    // Negative and oversized counts.
    assert_eq!(
        kind_of(&call(1, &[15, 0, 8, 2, 0xff, 0xff, 0xff, 0xff])),
        "number"
    );
    assert_eq!(kind_of(&call(1, &[15, 0, 8, 2, 0x10, 0, 0, 0])), "count");
    // Nesting past the limit in an unknown field.
    let mut body = Vec::new();
    for _ in 0..10 {
        body.extend([12, 0, 60]);
    }
    body.extend([0; 10]);
    assert_eq!(kind_of(&call(1, &body)), "depth");
}

#[test]
fn a_map_key_twice_is_refused() {
    let mut body = vec![13, 0, 3, 11, 11, 0, 0, 0, 2];
    for v in [b'1', b'2'] {
        body.extend([0, 0, 0, 1, b'k', 0, 0, 0, 1, v]);
    }
    assert_eq!(kind_of(&call(1, &body)), "duplicate_key");
}

#[test]
fn method_names_are_utf8() {
    let msg = [0x80, 0x01, 0x00, 0x01, 0, 0, 0, 1, 0xff, 0, 0, 0, 1, 0];
    let e = read_call(Protocol::Binary, &msg, &M, LIMITS, true).unwrap_err();
    assert_eq!(e.kind, RejectKind::MethodName);
}

#[test]
fn compact_varints_bools_and_field_deltas() {
    // Compact CALL of m, seqid 1: 0x82, 0x21, seqid varint, name.
    let head = [0x82, 0x21, 0x01, 0x01, b'm'];
    let with = |body: &[u8]| {
        let mut v = head.to_vec();
        v.extend_from_slice(body);
        v.push(0);
        v
    };
    let read = |m: &[u8]| match read_call(Protocol::Compact, m, &M, LIMITS, true) {
        Ok(c) => Ok(c.args),
        Err(e) => Err(e.kind.as_str()),
    };
    // 6: n as i32 (delta 6, type 5), zigzag 2 = 1.
    assert_eq!(
        read(&with(&[0x65, 0x02])).unwrap().field(6),
        Some(&Value::Int(1))
    );
    // An i32 varint wider than 32 bits: Java would drop the high bits.
    assert_eq!(
        read(&with(&[0x65, 0xff, 0xff, 0xff, 0xff, 0x1f])),
        Err("number")
    );
    // 8: list<bool> of two: compact element bools are 1 (true) or 2 (false).
    assert!(read(&with(&[0x89, 0x21, 0x01, 0x02])).is_ok());
    assert_eq!(read(&with(&[0x89, 0x21, 0x01, 0x00])), Err("bool"));
    // Type nibble 0 with a delta (Java reads it as STOP) and 13 (UUID) are refused.
    assert_eq!(read(&with(&[0x10])), Err("wire_type"));
    assert_eq!(read(&with(&[0x1d])), Err("wire_type"));
}

/// A struct whose field 1 is an optional string in "2.3" and a required i64 in "3.1" (as
/// `AddDynamicPartitions` reused ids between Hive 2.3 and 3.1).
static S_REUSED: StructDef = StructDef {
    name: "r_args",
    kind: Kind::Struct,
    fields: &[
        FieldDef {
            id: 1,
            name: "reused",
            ty: &[T::String, T::I64],
            ty_in: &[V2_3, V3_1],
            required_in: V3_1,
        },
        FieldDef {
            id: 2,
            name: "newer",
            ty: &[T::I32],
            ty_in: &[V3_1],
            required_in: 0,
        },
    ],
};
static M_REUSED: MethodDef = MethodDef {
    name: "m",
    oneway: false,
    args: &S_REUSED,
    result: &S_EMPTY,
    versions: V2_3 | V3_1,
};

#[test]
fn each_version_reads_by_its_own_types_and_requiredness() {
    let read = |versions: u8, body: &[u8]| {
        let limits = ReadLimits { versions, ..LIMITS };
        match read_call(Protocol::Binary, &call(1, body), &M_REUSED, limits, true) {
            Ok(c) => Ok(c.args),
            Err(e) => Err((e.kind.as_str(), e.to_string())),
        }
    };
    let as_string = string_field(1, b"x");
    let as_i64 = [10, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5];
    let s = |x: &str| Value::Struct(vec![(1, Value::Bytes(x.as_bytes().to_vec()))]);
    // Hive 2.3: an optional string (another wire type there is refused, as everywhere); a
    // field only 3.1 declares is unknown to 2.3, skipped whatever its type.
    assert_eq!(read(V2_3, &[]), Ok(Value::Struct(vec![])));
    assert_eq!(read(V2_3, &as_string), Ok(s("x")));
    assert_eq!(read(V2_3, &as_i64).unwrap_err().0, "field_type");
    assert_eq!(
        read(V2_3, &string_field(2, b"y")),
        Ok(Value::Struct(vec![]))
    );
    assert_eq!(
        read(V3_1 | V2_3, &string_field(2, b"y")).unwrap_err().0,
        "field_type"
    );
    // Hive 3.1: a required i64; a string is the wrong type, absence fails its reader.
    assert_eq!(
        read(V3_1, &as_i64),
        Ok(Value::Struct(vec![(1, Value::Int(5))]))
    );
    assert_eq!(read(V3_1, &as_string).unwrap_err().0, "field_type");
    let (kind, text) = read(V3_1, &[]).unwrap_err();
    assert_eq!(kind, "required_field");
    assert!(text.contains("Hive 3.1"), "{text}");
    // Both at once: only what both read to the end — 3.1 must find its i64.
    assert!(read(V2_3 | V3_1, &as_i64).is_ok());
    let (kind, text) = read(V2_3 | V3_1, &as_string).unwrap_err();
    assert_eq!(
        kind, "required_field",
        "3.1 would skip the string, then fail"
    );
    assert!(text.contains("Hive 3.1"), "{text}");
    assert_eq!(read(V2_3 | V3_1, &[]).unwrap_err().0, "required_field");
}
