//! The metastore's whole Thrift schema — every method's args and result structs and every
//! struct, union and enum they reach, for Hive 2.3, 3.1, 4.0 and the newest 4.x, plus fb303 —
//! as data (`generated.rs`, written by `idl/gen_schema.py` from the IDL files in
//! `idl/thrift/`), the schema-exact request reader (`read`), and the names of the struct
//! fields hms-guard reads or writes (`fields`).
//!
//! Every request is read once, here, into the values the metastore will read; the policy
//! stage decides on those values and never re-reads the raw bytes.

#[allow(non_upper_case_globals, non_snake_case, dead_code)]
#[rustfmt::skip]
mod generated;
pub mod fields;
pub mod question;
pub mod read;
pub mod types;

pub use generated::METHODS;
pub use read::{read_call, read_unknown, Call, ReadLimits, Reject, RejectKind};
pub use types::{EnumDef, FieldDef, Kind, MethodDef, StructDef, T};

/// A method's schema by name (hms-guard's own question included); `None` for a method no
/// recorded version declares.
pub fn method(name: &str) -> Option<&'static MethodDef> {
    if name == question::METHOD {
        return Some(&question::DEF);
    }
    METHODS
        .binary_search_by(|m| m.name.as_bytes().cmp(name.as_bytes()))
        .ok()
        .map(|i| &METHODS[i])
}

/// Reads a whole request (unframed) as the metastore will: a method the schema knows by its
/// schema, any other by wire type only (the metastore skips it and answers "unknown method").
/// `build`: keep the args' values (calls the policy decides); else only check them.
pub fn read_request(
    protocol: crate::wire::codec::Protocol,
    message: &[u8],
    limits: ReadLimits,
    build: bool,
) -> Result<Call, Reject> {
    let header = read::read_header(protocol, message, limits)?;
    match method(&header.name) {
        Some(def) => read_call(protocol, message, def, limits, build),
        None => Ok(Call {
            header: read_unknown(protocol, message, limits)?,
            args: crate::wire::codec::value::Value::Struct(Vec::new()),
        }),
    }
}

#[cfg(test)]
mod tests;
