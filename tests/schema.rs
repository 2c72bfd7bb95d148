//! The generated schema and the schema-exact reader, tested against the method list and against
//! a second, independent reader that does what the metastore's generated Java code does
//! (last field wins, elements read by the declared type whatever the header says, bools as
//! `byte == 1`, unions read one field and then one more field header, unknown fields skipped,
//! required fields checked after the struct).
//!
//! The differential property: for random calls of every method — well-formed, and with faults
//! injected along every class the reader defends (repeated field ids, wire-type and
//! element-type swaps at any depth, bool values, missing required fields, unions with zero or
//! two fields, unknown fields of every wire type, invalid UTF-8, message types, truncation,
//! trailing bytes) — whenever hms-guard accepts a call, the Java-model reader reads exactly the
//! same values and ends exactly at the end of the message. Seeded, so a failure reproduces;
//! `HMS_GUARD_FUZZ_CASES` sets the number of cases (default 20,000; CI runs the default).

use std::collections::HashMap;

use hms_guard::wire::codec::value::Value;
use hms_guard::wire::codec::Protocol;
use hms_guard::wire::schema::{self, Kind, MethodDef, ReadLimits, StructDef, T};

const LIMITS: ReadLimits = ReadLimits {
    versions: hms_guard::wire::schema::types::ALL_VERSIONS,
    max_depth: 64,
    max_name_bytes: 1024,
};

const FB303: [&str; 13] = [
    "getName",
    "getVersion",
    "getStatus",
    "getStatusDetails",
    "getCounters",
    "getCounter",
    "setOption",
    "getOption",
    "getOptions",
    "getCpuProfile",
    "aliveSince",
    "reinitialize",
    "shutdown",
];

#[test]
fn the_schema_covers_every_method_of_every_version() {
    let tsv = include_str!("../idl/hms-methods.tsv");
    let names: Vec<&str> = tsv
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("method\t") && !l.is_empty())
        .map(|l| l.split('\t').next().unwrap())
        .chain(FB303)
        .collect();
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| schema::method(n).is_none())
        .collect();
    assert!(missing.is_empty(), "methods without a schema: {missing:?}");
    for w in schema::METHODS.windows(2) {
        assert!(w[0].name.as_bytes() < w[1].name.as_bytes());
    }
    // The router and the schema know the same methods and agree on oneway.
    let mut routed: Vec<_> = hms_guard::wire::router::METHODS
        .iter()
        .map(|m| m.name)
        .collect();
    routed.dedup();
    assert_eq!(routed.len(), schema::METHODS.len());
    for m in hms_guard::wire::router::METHODS {
        let s = schema::method(m.name).expect("routed, no schema");
        assert_eq!(s.oneway, m.oneway, "{}", m.name);
    }
    let oneway: Vec<_> = schema::METHODS
        .iter()
        .filter(|m| m.oneway)
        .map(|m| m.name)
        .collect();
    assert_eq!(oneway, ["reinitialize", "shutdown"]);
}

/// The version bits of a method, one at a time.
fn bits(versions: u8) -> impl Iterator<Item = u8> {
    (0..8).map(|i| 1u8 << i).filter(move |b| versions & b != 0)
}

/// A proxy configured for one version (`upstream.metastore_version`), or for all at once.
fn limits(versions: u8) -> ReadLimits {
    ReadLimits { versions, ..LIMITS }
}

/// Whether versions disagree on a field in a way no request can satisfy all of them with: it
/// is required by some but declared with another wire type, or optional, by others.
fn disagrees(fd: &schema::FieldDef) -> bool {
    let declared = fd.ty_in.iter().fold(0, |a, b| a | b);
    let wires: std::collections::HashSet<u8> = fd.ty.iter().map(wire_of).collect();
    fd.required_in != 0 && (fd.required_in != declared || wires.len() > 1)
}

/// Whether a request of the struct can reach a field versions disagree on.
fn reaches_disagreement(def: &'static StructDef, seen: &mut Vec<&'static str>) -> bool {
    if seen.contains(&def.name) {
        return false;
    }
    seen.push(def.name);
    fn inner(t: &'static T, seen: &mut Vec<&'static str>) -> bool {
        match t {
            T::Struct(d) => reaches_disagreement(d, seen),
            T::List(e) | T::Set(e) => inner(e, seen),
            T::Map(k, v) => inner(k, seen) || inner(v, seen),
            _ => false,
        }
    }
    def.fields
        .iter()
        .any(|fd| disagrees(fd) || fd.ty.iter().any(|t| inner(t, seen)))
}

/// Methods whose requests a proxy configured for every version at once may refuse although
/// one version's client wrote them correctly (set `upstream.metastore_version`).
fn unreadable_by_all() -> Vec<&'static str> {
    schema::METHODS
        .iter()
        .filter(|m| reaches_disagreement(m.args, &mut Vec::new()))
        .map(|m| m.name)
        .collect()
}

#[test]
fn every_method_reads_its_minimal_call() {
    let unreadable = unreadable_by_all();
    println!("methods versions disagree on: {unreadable:?}");
    assert!(unreadable.contains(&"add_dynamic_partitions"));
    assert!(unreadable.len() < 20, "{unreadable:?}");
    for m in schema::METHODS {
        for version in bits(m.versions) {
            let mut rng = Rng(7);
            let mut g = Gen {
                rng: &mut rng,
                faults: false,
                minimal: true,
                version,
            };
            let (msg, expected) = g.call(m);
            let one = limits(version | schema::types::FB303);
            let call =
                schema::read_call(Protocol::Binary, &msg, m, one, true).unwrap_or_else(|e| {
                    panic!("{} (Hive {version}): minimal call refused: {e}", m.name)
                });
            assert_eq!(call.args, expected, "{}", m.name);
            match schema::read_call(Protocol::Binary, &msg, m, LIMITS, true) {
                Ok(call) => assert_eq!(call.args, expected, "{}", m.name),
                Err(e) => assert!(unreadable.contains(&m.name), "{}: {e}", m.name),
            }
        }
    }
}

#[test]
fn accepted_calls_read_as_the_metastore_reads_them() {
    let cases: u64 = std::env::var("HMS_GUARD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut accepted_faulty = 0u64;
    let mut refused = HashMap::<&'static str, u64>::new();
    let unreadable = unreadable_by_all();
    for case in 0..cases {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ case.wrapping_mul(0x1000_0000_01b3));
        let m = &schema::METHODS[rng.below(schema::METHODS.len() as u64) as usize];
        let faults = case % 4 != 0;
        // The client's version, and the proxy's: that one version, or all at once.
        let versions: Vec<u8> = bits(m.versions).collect();
        let version = versions[rng.below(versions.len() as u64) as usize];
        let all = rng.chance(500);
        let read_as = if all {
            LIMITS
        } else {
            limits(version | schema::types::FB303)
        };
        let mut g = Gen {
            rng: &mut rng,
            faults,
            minimal: false,
            version,
        };
        let (mut msg, expected) = g.call(m);
        if faults {
            mutate_message(g.rng, &mut msg);
        }
        let ours = schema::read_call(Protocol::Binary, &msg, m, read_as, true);
        match ours {
            Ok(call) => {
                if !faults {
                    assert_eq!(call.args, expected, "case {case} ({}): values", m.name);
                } else {
                    accepted_faulty += 1;
                }
                // Every version the proxy reads for reads the call to its end without failing;
                // configured for one, the values are that version's.
                let readers = if all { m.versions } else { version };
                for v in bits(readers) {
                    let java = java_read(m, &msg, v).unwrap_or_else(|e| {
                        panic!("case {case} ({}): accepted, Hive {v} fails: {e}", m.name)
                    });
                    assert_eq!(
                        java.consumed,
                        msg.len(),
                        "case {case} ({}): Hive {v} stops elsewhere",
                        m.name
                    );
                    if !all {
                        assert_eq!(
                            call.args, java.args,
                            "case {case} ({}): Java reads other values",
                            m.name
                        );
                    }
                }
            }
            Err(e) => {
                assert!(
                    faults || (all && unreadable.contains(&m.name)),
                    "case {case} ({}): well-formed call refused: {e}",
                    m.name
                );
                *refused.entry(e.kind.as_str()).or_default() += 1;
            }
        }
    }
    println!("{cases} cases; faulty but accepted (harmless faults): {accepted_faulty}; refused by kind: {refused:?}");
    if cases >= 5_000 {
        for kind in [
            "duplicate_field",
            "field_type",
            "bool",
            "utf8",
            "truncated",
            "trailing_bytes",
            "message_type",
            "wire_type",
            "required_field",
        ] {
            assert!(
                refused.get(kind).copied().unwrap_or(0) > 0,
                "no case exercised {kind}: {refused:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A seeded generator of calls, with faults.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

struct Gen<'a> {
    rng: &'a mut Rng,
    faults: bool,
    /// Only required fields, fixed values.
    minimal: bool,
    /// The one version (bit) whose client writes the call.
    version: u8,
}

fn wire_of(t: &T) -> u8 {
    match t {
        T::Bool => 2,
        T::Byte => 3,
        T::I16 => 6,
        T::I32 | T::Enum(_) => 8,
        T::I64 => 10,
        T::Double => 4,
        T::String | T::Binary => 11,
        T::Struct(_) => 12,
        T::Map(..) => 13,
        T::Set(_) => 14,
        T::List(_) => 15,
    }
}

impl Gen<'_> {
    fn fault(&mut self, per_mille: u64) -> bool {
        self.faults && self.rng.chance(per_mille)
    }

    /// A whole CALL (or ONEWAY) of `m`, and the args values a correct reader returns when no
    /// fault was injected.
    fn call(&mut self, m: &'static MethodDef) -> (Vec<u8>, Value) {
        let mut out = Vec::new();
        let kind: u8 = if m.oneway { 4 } else { 1 };
        out.extend((0x8001_0000u32 | u32::from(kind)).to_be_bytes());
        out.extend((m.name.len() as i32).to_be_bytes());
        out.extend(m.name.as_bytes());
        out.extend(7i32.to_be_bytes());
        let v = self.structure(m.args, 0, &mut out);
        (out, v)
    }

    fn structure(&mut self, def: &'static StructDef, depth: usize, out: &mut Vec<u8>) -> Value {
        let mut fields = Vec::new();
        let deep = depth > 5;
        let chosen: Vec<usize> = if def.kind == Kind::Union {
            let declared: Vec<usize> = (0..def.fields.len())
                .filter(|&i| def.fields[i].types_in(self.version).next().is_some())
                .collect();
            if declared.is_empty() {
                vec![]
            } else {
                vec![declared[self.rng.below(declared.len() as u64) as usize]]
            }
        } else {
            (0..def.fields.len())
                .filter(|&i| {
                    let fd = &def.fields[i];
                    fd.types_in(self.version).next().is_some()
                        && (fd.required_in & self.version != 0
                            || (!self.minimal && !deep && self.rng.chance(500)))
                })
                .collect()
        };
        for i in chosen {
            let fd = &def.fields[i];
            if fd.required_in & self.version != 0 && self.fault(3) {
                continue; // a required field left out
            }
            let types: Vec<&'static T> = fd.types_in(self.version).map(|(t, _)| t).collect();
            let t = types[self.rng.below(types.len() as u64) as usize];
            if self.fault(4) {
                // Another wire type than declared, with a value of that type.
                let wrong = [2u8, 3, 4, 6, 8, 10, 11, 12, 13, 14, 15][self.rng.below(11) as usize];
                if wrong != wire_of(t) {
                    out.push(wrong);
                    out.extend(fd.id.to_be_bytes());
                    self.any_wire(wrong, depth, out);
                    continue;
                }
            }
            out.push(wire_of(t));
            out.extend(fd.id.to_be_bytes());
            let v = self.value(t, depth + 1, out);
            fields.push((fd.id, v));
            if self.fault(4) {
                // The same field id again, with another value.
                out.push(wire_of(t));
                out.extend(fd.id.to_be_bytes());
                self.value(t, depth + 1, out);
            }
        }
        if def.kind == Kind::Union && self.fault(5) {
            // A second union member (or, below, none at all).
            let version = self.version;
            if let Some((fd, (t, _))) = def
                .fields
                .iter()
                .find_map(|fd| fd.types_in(version).next().map(|t| (fd, t)))
            {
                out.push(wire_of(t));
                out.extend(fd.id.to_be_bytes());
                self.value(t, depth + 1, out);
            }
        }
        // (A union holds exactly one field: an extra unknown one is a fault there.)
        let unknown_ok = def.kind != Kind::Union || self.faults;
        if !self.minimal && unknown_ok && self.rng.chance(if self.faults { 60 } else { 20 }) {
            // An unknown field (a newer client's), of any wire type; UUID and VOID as faults.
            let id = 1000 + self.rng.below(1000) as i16;
            let mut wire = [2u8, 3, 4, 6, 8, 10, 11, 12, 13, 14, 15][self.rng.below(11) as usize];
            if self.fault(50) {
                wire = [1u8, 16, 5, 17][self.rng.below(4) as usize];
            }
            out.push(wire);
            out.extend(id.to_be_bytes());
            self.any_wire(wire, depth, out);
        }
        out.push(0);
        let _ = depth;
        Value::Struct(fields)
    }

    /// A value of a wire type with no declared type behind it.
    fn any_wire(&mut self, wire: u8, depth: usize, out: &mut Vec<u8>) {
        match wire {
            2 => out.push(if self.fault(100) {
                2
            } else {
                self.rng.below(2) as u8
            }),
            3 => out.push(self.rng.next() as u8),
            4 => out.extend(self.rng.next().to_be_bytes()),
            6 => out.extend((self.rng.next() as i16).to_be_bytes()),
            8 => out.extend((self.rng.next() as i32).to_be_bytes()),
            10 => out.extend(self.rng.next().to_be_bytes()),
            11 => {
                out.extend(2i32.to_be_bytes());
                out.extend(b"zz");
            }
            12 => {
                if depth < 4 && self.rng.chance(500) {
                    out.push(8);
                    out.extend(1i16.to_be_bytes());
                    out.extend(5i32.to_be_bytes());
                }
                out.push(0);
            }
            13 => {
                out.extend([11, 8]);
                out.extend(1i32.to_be_bytes());
                out.extend(1i32.to_be_bytes());
                out.push(b'k');
                out.extend(3i32.to_be_bytes());
            }
            14 | 15 => {
                out.push(8);
                out.extend(2i32.to_be_bytes());
                out.extend(1i32.to_be_bytes());
                out.extend(2i32.to_be_bytes());
            }
            16 => out.extend([0u8; 16]),
            _ => {}
        }
    }

    fn string(&mut self) -> Vec<u8> {
        if self.minimal {
            return b"x".to_vec();
        }
        let words: [&[u8]; 6] = [b"sales", b"t", b"s3a://b/w/t", b"", b"K\xc3\xa9y", b"a b"];
        let mut s = words[self.rng.below(6) as usize].to_vec();
        if self.fault(5) {
            s.push(0xff); // not UTF-8
        }
        s
    }

    fn value(&mut self, t: &'static T, depth: usize, out: &mut Vec<u8>) -> Value {
        match t {
            T::Bool => {
                let b = !self.minimal && self.rng.chance(500);
                out.push(if self.fault(5) { 2 } else { u8::from(b) });
                Value::Bool(b)
            }
            T::Byte => {
                let b = self.rng.next() as i8;
                out.push(b as u8);
                Value::Int(i64::from(b))
            }
            T::I16 => {
                let v = self.rng.next() as i16;
                out.extend(v.to_be_bytes());
                Value::Int(i64::from(v))
            }
            T::I32 => {
                let v = self.rng.next() as i32;
                out.extend(v.to_be_bytes());
                Value::Int(i64::from(v))
            }
            T::Enum(e) => {
                let mut v = e.values[self.rng.below(e.values.len() as u64) as usize];
                if self.fault(5) {
                    v = 12345;
                }
                out.extend(v.to_be_bytes());
                Value::Int(i64::from(v))
            }
            T::I64 => {
                let v = self.rng.next() as i64;
                out.extend(v.to_be_bytes());
                Value::Int(v)
            }
            T::Double => {
                let v = (self.rng.below(1000) as f64) / 8.0;
                out.extend(v.to_be_bytes());
                Value::Double(v)
            }
            T::String | T::Binary => {
                let mut s = self.string();
                if matches!(t, T::Binary) && !self.minimal && self.rng.chance(100) {
                    s = vec![0xff, 0xfe];
                }
                out.extend((s.len() as i32).to_be_bytes());
                out.extend(&s);
                Value::Bytes(s)
            }
            T::Struct(def) => self.structure(def, depth, out),
            T::List(et) | T::Set(et) => {
                let n = if self.minimal || depth > 5 {
                    0
                } else {
                    self.rng.below(3) as usize
                };
                let mut ew = wire_of(et);
                if self.fault(6) {
                    ew = [2u8, 3, 8, 10, 11, 12, 15][self.rng.below(7) as usize];
                }
                out.push(ew);
                let at = out.len();
                out.extend(0i32.to_be_bytes());
                let mut items = Vec::new();
                let mut seen = std::collections::HashSet::new();
                for _ in 0..n {
                    let mut bytes = Vec::new();
                    let v = self.value(et, depth + 1, &mut bytes);
                    // Sets of a well-formed call hold each element once.
                    if matches!(t, T::Set(_)) && !seen.insert(v.canonical()) && !self.fault(300) {
                        continue;
                    }
                    out.extend(bytes);
                    items.push(v);
                }
                out[at..at + 4].copy_from_slice(&(items.len() as i32).to_be_bytes());
                Value::List(items)
            }
            T::Map(kt, vt) => {
                let n = if self.minimal || depth > 5 {
                    0
                } else {
                    self.rng.below(3) as usize
                };
                let (mut kw, mut vw) = (wire_of(kt), wire_of(vt));
                if self.fault(6) {
                    kw = [8u8, 11, 12][self.rng.below(3) as usize];
                }
                if self.fault(6) {
                    vw = [8u8, 11, 12, 15][self.rng.below(4) as usize];
                }
                out.extend([kw, vw]);
                let at = out.len();
                out.extend(0i32.to_be_bytes());
                let mut entries: Vec<(Value, Value)> = Vec::new();
                let mut keys = std::collections::HashSet::new();
                let mut written = 0i32;
                for _ in 0..n {
                    let mut kbytes = Vec::new();
                    let k = self.value(kt, depth + 1, &mut kbytes);
                    let repeat = self.fault(30);
                    if !keys.insert(k.canonical()) && !repeat {
                        continue; // keep well-formed maps free of repeated keys
                    }
                    out.extend(kbytes);
                    let v = self.value(vt, depth + 1, out);
                    entries.push((k, v));
                    written += 1;
                }
                out[at..at + 4].copy_from_slice(&written.to_be_bytes());
                Value::Map(entries)
            }
        }
    }
}

/// Faults on the whole message: message type, truncation, trailing bytes.
fn mutate_message(rng: &mut Rng, msg: &mut Vec<u8>) {
    match rng.below(40) {
        0 => msg[3] = [2u8, 3, 4, 1][rng.below(4) as usize],
        1 => {
            let cut = rng.below(msg.len() as u64) as usize;
            msg.truncate(cut.max(9));
        }
        2 => msg.extend([0x80, 0x01, 0x00, 0x01, 0, 0, 0, 0]),
        3 => msg.push(0),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// The Java model: what libthrift's TBinaryProtocol and the generated `*_args` classes read.

struct JavaRead {
    args: Value,
    consumed: usize,
}

struct J<'a> {
    b: &'a [u8],
    pos: usize,
    /// The one version (bit) whose generated code reads.
    version: u8,
}

impl J<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.pos + n > self.b.len() {
            return Err("TTransportException: end of input".into());
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn i16(&mut self) -> Result<i16, String> {
        let s = self.take(2)?;
        Ok(i16::from_be_bytes([s[0], s[1]]))
    }
    fn i32(&mut self) -> Result<i32, String> {
        let s = self.take(4)?;
        Ok(i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn i64(&mut self) -> Result<i64, String> {
        let s = self.take(8)?;
        Ok(i64::from_be_bytes(s.try_into().unwrap()))
    }
    fn size(&mut self) -> Result<usize, String> {
        let n = self.i32()?;
        if n < 0 {
            return Err("TProtocolException: negative size".into());
        }
        Ok(n as usize)
    }
    /// `TProtocolUtil.skip`.
    fn skip(&mut self, wire: u8) -> Result<(), String> {
        match wire {
            2 | 3 => {
                self.take(1)?;
            }
            4 | 10 => {
                self.take(8)?;
            }
            6 => {
                self.take(2)?;
            }
            8 => {
                self.take(4)?;
            }
            11 => {
                let n = self.size()?;
                self.take(n)?;
            }
            12 => loop {
                let t = self.byte()?;
                if t == 0 {
                    break;
                }
                self.i16()?;
                self.skip(t)?;
            },
            13 => {
                let (k, v) = (self.byte()?, self.byte()?);
                for _ in 0..self.size()? {
                    self.skip(k)?;
                    self.skip(v)?;
                }
            }
            14 | 15 => {
                let e = self.byte()?;
                for _ in 0..self.size()? {
                    self.skip(e)?;
                }
            }
            other => return Err(format!("TProtocolException: unknown type {other}")),
        }
        Ok(())
    }

    /// A value of the declared type; `None` where Java's value is null (an unknown enum).
    fn value(&mut self, t: &'static T) -> Result<Option<Value>, String> {
        Ok(Some(match t {
            T::Bool => Value::Bool(self.byte()? == 1),
            T::Byte => Value::Int(i64::from(self.byte()? as i8)),
            T::I16 => Value::Int(i64::from(self.i16()?)),
            T::I32 => Value::Int(i64::from(self.i32()?)),
            T::Enum(e) => {
                let v = self.i32()?;
                if !e.values.contains(&v) {
                    return Ok(None);
                }
                Value::Int(i64::from(v))
            }
            T::I64 => Value::Int(self.i64()?),
            T::Double => Value::Double(f64::from_bits(self.i64()? as u64)),
            T::String => {
                let n = self.size()?;
                let s = self.take(n)?;
                Value::Bytes(String::from_utf8_lossy(s).into_owned().into_bytes())
            }
            T::Binary => {
                let n = self.size()?;
                Value::Bytes(self.take(n)?.to_vec())
            }
            T::Struct(def) => self.structure(def)?,
            T::List(et) | T::Set(et) => {
                let _declared_elsewhere = self.byte()?; // ignored by the generated code
                let n = self.size()?;
                let mut items = Vec::new();
                for _ in 0..n {
                    items.push(self.value(et)?.unwrap_or(Value::Struct(Vec::new())));
                }
                if matches!(t, T::Set(_)) {
                    let mut seen = std::collections::HashSet::new();
                    items.retain(|v| seen.insert(v.canonical()));
                }
                Value::List(items)
            }
            T::Map(kt, vt) => {
                let _ = (self.byte()?, self.byte()?); // ignored
                let n = self.size()?;
                let mut map: Vec<(Value, Value)> = Vec::new();
                for _ in 0..n {
                    let k = self.value(kt)?.unwrap_or(Value::Struct(Vec::new()));
                    let v = self.value(vt)?.unwrap_or(Value::Struct(Vec::new()));
                    // HashMap.put: the last value of a key wins.
                    if let Some(e) = map.iter_mut().find(|(k2, _)| *k2 == k) {
                        e.1 = v;
                    } else {
                        map.push((k, v));
                    }
                }
                Value::Map(map)
            }
        }))
    }

    fn structure(&mut self, def: &'static StructDef) -> Result<Value, String> {
        let mut fields: Vec<(i16, Value)> = Vec::new();
        let set = |fields: &mut Vec<(i16, Value)>, id: i16, v: Option<Value>| {
            fields.retain(|(i, _)| *i != id);
            if let Some(v) = v {
                fields.push((id, v));
            }
        };
        if def.kind == Kind::Union {
            // TUnion: one field, then one more field header read and ignored.
            let t = self.byte()?;
            if t != 0 {
                let id = self.i16()?;
                match def.field(id).and_then(|fd| declared(fd, t, self.version)) {
                    Some(ty) => {
                        let v = self.value(ty)?;
                        set(&mut fields, id, v);
                    }
                    None => self.skip(t)?,
                }
            }
            let t = self.byte()?;
            if t != 0 {
                self.i16()?;
            }
            return Ok(Value::Struct(fields));
        }
        loop {
            let t = self.byte()?;
            if t == 0 {
                break;
            }
            let id = self.i16()?;
            match def.field(id).and_then(|fd| declared(fd, t, self.version)) {
                Some(ty) => {
                    let v = self.value(ty)?;
                    set(&mut fields, id, v);
                }
                None => self.skip(t)?,
            }
        }
        for fd in def.fields {
            if fd.required_in & self.version != 0 && !fields.iter().any(|(i, _)| *i == fd.id) {
                return Err(format!(
                    "TProtocolException: Required field '{}' is unset!",
                    fd.name
                ));
            }
        }
        Ok(Value::Struct(fields))
    }
}

/// The declared type a server of `version` reads a field of wire type `t` by (`None`: it
/// skips the field).
fn declared(fd: &'static schema::FieldDef, t: u8, version: u8) -> Option<&'static T> {
    fd.types_in(version)
        .map(|(x, _)| x)
        .find(|x| wire_of(x) == t)
}

/// Reads a call as the metastore's processor does: message header (type ignored), then the
/// args struct.
fn java_read(m: &'static MethodDef, msg: &[u8], version: u8) -> Result<JavaRead, String> {
    let mut j = J {
        b: msg,
        pos: 0,
        version,
    };
    let word = j.i32()? as u32;
    if word & 0xffff_0000 != 0x8001_0000 {
        return Err("bad version".into());
    }
    let n = j.size()?;
    let name = j.take(n)?.to_vec();
    if name != m.name.as_bytes() {
        return Err("another method".into());
    }
    j.i32()?;
    let args = j.structure(m.args)?;
    Ok(JavaRead {
        args,
        consumed: j.pos,
    })
}
