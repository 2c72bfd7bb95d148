#!/usr/bin/env python3
"""The metastore's Thrift schema for hms-guard: every method's args and result structs and every
struct, union, exception and enum they reach, merged over the recorded Hive versions.

Two steps:

  python3 idl/gen_schema.py --extract   (needs PyPI; rewrites idl/hms-schema.json)
      Records the schema of each version from the code the Thrift compiler generated from that
      version's IDL, as published on PyPI (field ids, wire types, names, `required` — read from
      the generated `validate()` —, oneway, declared exceptions), plus what only the IDL text
      says (which i32 fields are enums, which structs are unions, which strings are `binary`)
      from the Hive 2.x IDL file shipped in the crates.io package `hive_metastore`:
        2.3  PyPI hmsclient==0.1.1           (Hive 2.x IDL, with fb303)
        3.0  PyPI hmsclient-hive-3==0.1.1    (Hive metastore API 3.0)
        3.1  PyPI pymetastore==0.4.2         (Hive 3.1 IDL)
        IDL  crates.io hive_metastore==0.2.0 (thrift_idl/hms.thrift, Hive 2.x)

  python3 idl/gen_schema.py [--check]
      Writes src/schema/generated.rs from idl/hms-schema.json (--check: exit 1 if the file on
      disk differs).

Merging: one definition per name; fields are the union by id; where versions declare a field id
with different types, each distinct type is kept (the reader accepts exactly those); a field is
required if any version requires it; enums hold every value of every version."""
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "idl/hms-schema.json"
OUT = ROOT / "src/schema/generated.rs"
VERSIONS = [  # (label, bit, pypi requirement, import prefix)
    ("2.3", "V2_3", "hmsclient==0.1.1", "hmsclient.genthrift"),
    ("3.0", "V3_0", "hmsclient-hive-3==0.1.1", "hmsclient.genthrift"),
    ("3.1", "V3_1", "pymetastore==0.4.2", "pymetastore"),
]
IDL_CRATE = ("hive_metastore", "0.2.0", "thrift_idl/hms.thrift")

# ---------------------------------------------------------------------------------------------
# extraction (runs the generated Python code of one version in a child process)

DUMP = r'''
import importlib, inspect, json, re, sys
from thrift.Thrift import TType, TException
prefix = sys.argv[1]
tt = importlib.import_module(prefix + ".hive_metastore.ttypes")
svc = importlib.import_module(prefix + ".hive_metastore.ThriftHiveMetastore")
try:
    fb = importlib.import_module(prefix + ".fb303.FacebookService")
except ImportError:
    fb = None
NAMES = {TType.BOOL: "bool", TType.BYTE: "byte", TType.DOUBLE: "double", TType.I16: "i16",
         TType.I32: "i32", TType.I64: "i64"}
def ty(t, a):
    if t in NAMES:
        return NAMES[t]
    if t == TType.STRING:
        return "binary" if a == "BINARY" else "string"
    if t == TType.STRUCT:
        return "struct:" + a[0].__name__
    if t in (TType.LIST, TType.SET):
        return ("list" if t == TType.LIST else "set") + "<" + ty(a[0], a[1]) + ">"
    if t == TType.MAP:
        return "map<" + ty(a[0], a[1]) + "," + ty(a[2], a[3]) + ">"
    raise SystemExit("unknown ttype %r" % t)
def required(cls):
    try:
        src = inspect.getsource(cls.validate)
    except (OSError, TypeError, AttributeError):
        return set()
    return set(re.findall(r"Required field (\w+) is unset", src))
def fields(cls):
    req = required(cls)
    return [[s[0], s[2], ty(s[1], s[3]), s[2] in req] for s in (cls.thrift_spec or ()) if s]
out = {"structs": {}, "enums": {}, "methods": {}}
for name, obj in vars(tt).items():
    if not inspect.isclass(obj) or obj.__module__ != tt.__name__:
        continue
    if hasattr(obj, "_VALUES_TO_NAMES"):
        out["enums"][name] = sorted(obj._VALUES_TO_NAMES)
    elif hasattr(obj, "thrift_spec"):
        kind = "exception" if issubclass(obj, TException) else "struct"
        out["structs"][name] = {"kind": kind, "fields": fields(obj)}
def methods(mod, service):
    for name, obj in vars(mod).items():
        if inspect.isclass(obj) and name.endswith("_args") and obj.__module__ == mod.__name__:
            m = name[:-5]
            res = getattr(mod, m + "_result", None)
            out["methods"][m] = {"service": service, "oneway": res is None,
                                 "args": fields(obj), "result": fields(res) if res else []}
methods(svc, "ThriftHiveMetastore")
if fb is not None:
    methods(fb, "FacebookService")
    ft = importlib.import_module(prefix + ".fb303.ttypes")
    for name, obj in vars(ft).items():
        if inspect.isclass(obj) and obj.__module__ == ft.__name__ and hasattr(obj, "_VALUES_TO_NAMES"):
            out["enums"][name] = sorted(obj._VALUES_TO_NAMES)
json.dump(out, sys.stdout, sort_keys=True)
'''


def unpack(archive, dest):
    if archive.endswith(".whl") or archive.endswith(".zip"):
        zipfile.ZipFile(archive).extractall(dest)
    else:
        with tarfile.open(archive) as t:
            t.extractall(dest, filter="data")
        # an sdist: the package sits one level down
        for d in Path(dest).iterdir():
            if d.is_dir() and (d / "setup.py").exists():
                return str(d)
    return dest


def idl_facts(text):
    """What only the IDL text says: enum-typed fields, unions, binary fields."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"(//|#)[^\n]*", "", text)
    enums = set(re.findall(r"\benum\s+(\w+)\s*\{", text))
    unions = sorted(set(re.findall(r"\bunion\s+(\w+)\s*\{", text)))
    enum_fields, binary_fields = {}, []
    for m in re.finditer(r"\b(struct|union|exception)\s+(\w+)\s*\{(.*?)\n\}", text, re.S):
        for f in re.finditer(r"(-?\d+)\s*:\s*(?:required\s+|optional\s+)?([\w.<>, ]+?)\s+(\w+)\s*(=[^,;\n]*)?[,;]?\s*$",
                             m.group(3), re.M):
            t = f.group(2).replace(" ", "")
            if t in enums:
                enum_fields[f"{m.group(2)}.{f.group(3)}"] = t
            for e in enums:
                if re.search(rf"[<,]{e}[>,]", t):
                    enum_fields[f"{m.group(2)}.{f.group(3)}"] = t
            if t == "binary":
                binary_fields.append(f"{m.group(2)}.{f.group(3)}")
    return {"unions": unions, "enum_fields": enum_fields, "binary_fields": sorted(binary_fields)}


def extract():
    out = {"sources": {}, "versions": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for label, _bit, req, prefix in VERSIONS:
            d = Path(tmp) / label
            dl = d / "dl"
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                            str(dl), req], check=True)
            archive = str(next(dl.iterdir()))
            path = unpack(archive, str(d / "pkg"))
            r = subprocess.run([sys.executable, "-c", DUMP, prefix], cwd=path,
                               capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path})
            if r.returncode != 0:
                raise SystemExit(f"recording {label} failed:\n{r.stderr}")
            out["versions"][label] = json.loads(r.stdout)
            out["sources"][label] = f"PyPI {req} ({Path(archive).name})"
        name, version, path = IDL_CRATE
        crate = Path(tmp) / "crate"
        cache = Path.home() / ".cargo/registry/cache"
        found = list(cache.glob(f"*/{name}-{version}.crate"))
        if not found:
            subprocess.run(["cargo", "info", f"{name}@{version}"], check=True, cwd=tmp,
                           capture_output=True)
            found = list(cache.glob(f"*/{name}-{version}.crate"))
        with tarfile.open(found[0]) as t:
            t.extractall(crate, filter="data")
        text = (crate / f"{name}-{version}" / path).read_text()
        out["idl"] = idl_facts(text)
        out["sources"]["IDL"] = f"crates.io {name}=={version} ({path})"
    SCHEMA.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {SCHEMA.relative_to(ROOT)}")


# ---------------------------------------------------------------------------------------------
# merging and generation

def split_top(s):
    depth, parts, cur = 0, [], ""
    for ch in s:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def rust_type(t, structs, enums):
    if t.startswith("struct:"):
        n = t[7:]
        if n not in structs:
            raise SystemExit(f"unknown struct {n}")
        return f"T::Struct(&S_{n})"
    if t.startswith("enum:"):
        return f"T::Enum(&E_{t[5:]})"
    m = re.match(r"(list|set)<(.*)>$", t)
    if m:
        kind = "List" if m.group(1) == "list" else "Set"
        return f"T::{kind}(&{rust_type(m.group(2), structs, enums)})"
    m = re.match(r"map<(.*)>$", t)
    if m:
        k, v = split_top(m.group(1))
        return f"T::Map(&{rust_type(k, structs, enums)}, &{rust_type(v, structs, enums)})"
    return {"bool": "T::Bool", "byte": "T::Byte", "i16": "T::I16", "i32": "T::I32",
            "i64": "T::I64", "double": "T::Double", "string": "T::String",
            "binary": "T::Binary"}[t]


def with_idl(owner, name, t, idl):
    """A field's type with what only the IDL says (enum, binary)."""
    key = f"{owner}.{name}"
    e = idl["enum_fields"].get(key)
    if e is not None:
        if t == "i32":
            return f"enum:{e}"
        m = re.match(r"(list|set)<i32>$", t)
        inner = re.match(r"(list|set)<(\w+)>$", e)
        if m and inner:
            return f"{m.group(1)}<enum:{inner.group(2)}>"
    if key in idl["binary_fields"] and t == "string":
        return "binary"
    return t


def merge(schema):
    idl = schema["idl"]
    structs, enums, methods, report = {}, {}, {}, []
    labels = [v[0] for v in VERSIONS]
    bits = {v[0]: v[1] for v in VERSIONS}

    def add_fields(target, owner, fields, label):
        for fid, name, t, req in fields:
            t = with_idl(owner, name, t, idl)
            f = target.setdefault(fid, {"name": name, "types": [], "required": False, "by": {}})
            f["name"] = name
            if t not in f["types"]:
                f["types"].append(t)
            f["required"] = f["required"] or req
            f["by"][label] = (t, req)

    for label in labels:
        v = schema["versions"][label]
        for name, vals in v["enums"].items():
            enums.setdefault(name, set()).update(vals)
        for name, s in v["structs"].items():
            kind = "union" if name in idl["unions"] else s["kind"]
            d = structs.setdefault(name, {"kind": kind, "fields": {}})
            if d["kind"] != kind:
                raise SystemExit(f"{name} changes kind between versions")
            add_fields(d["fields"], name, s["fields"], label)
        for name, m in v["methods"].items():
            d = methods.setdefault(name, {"oneway": m["oneway"], "args": {}, "result": {},
                                          "versions": [], "service": m["service"]})
            if d["oneway"] != m["oneway"]:
                report.append(f"oneway differs: {name}")
            d["oneway"] = d["oneway"] or m["oneway"]
            d["versions"].append(label)
            add_fields(d["args"], f"{name}_args", m["args"], label)
            add_fields(d["result"], f"{name}_result", m["result"], label)
    # `binary` travels as a string: where versions differ only in that, any bytes are accepted.
    for d in [*structs.values(), *(m[k] for m in methods.values() for k in ("args", "result"))]:
        fs = d["fields"] if "fields" in d else d
        for f in fs.values():
            for t in list(f["types"]):
                if t.replace("string", "binary") in f["types"] and "string" in t:
                    f["types"].remove(t)
    for kind, defs in (("struct", structs),):
        for name, d in sorted(defs.items()):
            for fid, f in sorted(d["fields"].items()):
                if len(f["types"]) > 1:
                    report.append(f"type differs: {name}.{f['name']} ({fid}): {f['by']}")
                reqs = {r for _, r in f["by"].values()}
                if len(reqs) > 1:
                    report.append(f"required differs: {name}.{f['name']}: {f['by']}")
    return structs, enums, methods, report, bits


def fields_rs(fields, structs, enums):
    rows = []
    for fid in sorted(fields):
        f = fields[fid]
        tys = ", ".join(rust_type(t, structs, enums) for t in f["types"])
        rows.append(f'    FieldDef {{ id: {fid}, name: "{f["name"]}", ty: &[{tys}], '
                    f'required: {str(f["required"]).lower()} }},')
    return rows


def generate():
    schema = json.loads(SCHEMA.read_text())
    structs, enums, methods, report, bits = merge(schema)
    kinds = {"struct": "Kind::Struct", "union": "Kind::Union", "exception": "Kind::Exception"}
    out = ["//! GENERATED by `idl/gen_schema.py` from `idl/hms-schema.json` (its `sources` name the",
           "//! recorded versions). Do not edit: change the script or the recording and run it.",
           "", "use super::types::*;", ""]
    for name in sorted(enums):
        vals = ", ".join(str(v) for v in sorted(enums[name]))
        out.append(f'pub static E_{name}: EnumDef = EnumDef {{ name: "{name}", values: &[{vals}] }};')
    out.append("")
    for name in sorted(structs):
        d = structs[name]
        out.append(f'pub static S_{name}: StructDef = StructDef {{ name: "{name}", kind: {kinds[d["kind"]]}, fields: &[')
        out += fields_rs(d["fields"], structs, enums)
        out.append("] };")
    out.append("")
    for name in sorted(methods):
        m = methods[name]
        out.append(f'pub static A_{name}: StructDef = StructDef {{ name: "{name}_args", kind: Kind::Struct, fields: &[')
        out += fields_rs(m["args"], structs, enums)
        out.append("] };")
        out.append(f'pub static R_{name}: StructDef = StructDef {{ name: "{name}_result", kind: Kind::Struct, fields: &[')
        out += fields_rs(m["result"], structs, enums)
        out.append("] };")
    out.append("")
    out.append("/// Every method of every recorded version, sorted by name (byte order).")
    out.append("pub static METHODS: &[MethodDef] = &[")
    for name in sorted(methods, key=lambda n: n.encode()):
        m = methods[name]
        v = "FB303" if m["service"] == "FacebookService" else " | ".join(bits[l] for l in m["versions"])
        out.append(f'    MethodDef {{ name: "{name}", oneway: {str(m["oneway"]).lower()}, '
                   f"args: &A_{name}, result: &R_{name}, versions: {v} }},")
    out.append("];")
    return "\n".join(out) + "\n", report, methods


def main():
    if "--extract" in sys.argv:
        extract()
    text, report, methods = generate()
    if "--check" in sys.argv:
        if OUT.read_text() != text:
            print(f"{OUT.relative_to(ROOT)} is out of date: run python3 idl/gen_schema.py")
            sys.exit(1)
        return
    OUT.write_text(text)
    listed = [l.split("\t")[0] for l in (ROOT / "idl/hms-methods.tsv").read_text().splitlines()
              if l and not l.startswith("#") and not l.startswith("method\t")]
    missing = [m for m in listed if m not in methods]
    print(f"wrote {OUT.relative_to(ROOT)}: {len(methods)} methods")
    (ROOT / "idl/hms-schema-unrecorded.txt").write_text("\n".join(missing) + "\n")
    for line in report:
        print("  " + line)
    print(f"  methods of idl/hms-methods.tsv no recorded version declares ({len(missing)}): "
          + " ".join(missing))


if __name__ == "__main__":
    main()
