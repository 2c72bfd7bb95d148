//! The one method hms-guard answers itself, never forwarded: `hms_guard_authorize`, the
//! question an engine's extension asks before it writes (docs/SPARK.md). No metastore declares
//! it; its schema is here, in the same form as the metastore's, so that it is read with the
//! same bounds and rules as every other call.
//!
//! ```text
//! string hms_guard_authorize(
//!     1: string action,            // write_table | create_table | read_path | write_path
//!     2: string db,
//!     3: string table,
//!     4: string path,
//!     5: list<string> privileges,  // write_table: INSERT, UPDATE, DELETE
//!     6: string client)            // who asks, e.g. "hms-guard-spark/0.1.0 spark/4.3.0"
//!   throws (1: MetaException o1)
//! ```

use super::generated::S_MetaException;
use super::types::{FieldDef, Kind, MethodDef, StructDef, ALL_VERSIONS, T};

/// The method's name: no metastore has a method of this name.
pub const METHOD: &str = "hms_guard_authorize";

/// Field ids of the args struct.
pub mod args {
    pub const ACTION: i16 = 1;
    pub const DB: i16 = 2;
    pub const TABLE: i16 = 3;
    pub const PATH: i16 = 4;
    pub const PRIVILEGES: i16 = 5;
    pub const CLIENT: i16 = 6;
}

const EVERY: u8 = ALL_VERSIONS;

static ARGS: StructDef = StructDef {
    name: "hms_guard_authorize_args",
    kind: Kind::Struct,
    fields: &[
        field(args::ACTION, "action", &[T::String]),
        field(args::DB, "db", &[T::String]),
        field(args::TABLE, "table", &[T::String]),
        field(args::PATH, "path", &[T::String]),
        field(args::PRIVILEGES, "privileges", &[T::List(&T::String)]),
        field(args::CLIENT, "client", &[T::String]),
    ],
};

static RESULT: StructDef = StructDef {
    name: "hms_guard_authorize_result",
    kind: Kind::Struct,
    fields: &[
        field(0, "success", &[T::String]),
        field(1, "o1", &[T::Struct(&S_MetaException)]),
    ],
};

const fn field(id: i16, name: &'static str, ty: &'static [T]) -> FieldDef {
    FieldDef {
        id,
        name,
        ty,
        ty_in: &[EVERY],
        required_in: 0,
    }
}

/// The method's schema.
pub static DEF: MethodDef = MethodDef {
    name: METHOD,
    oneway: false,
    args: &ARGS,
    result: &RESULT,
    versions: EVERY,
};
