//! The shape of the metastore schema as data: declared types, structs, enums and methods.
//! `generated.rs` (written by `idl/gen_schema.py`) holds the values.

/// A declared Thrift type. Containers and structs refer to other statics of the schema.
pub enum T {
    Bool,
    Byte,
    I16,
    I32,
    I64,
    Double,
    /// `string`: UTF-8 text.
    String,
    /// `binary`: any bytes.
    Binary,
    /// An `i32` restricted to the enum's values.
    Enum(&'static EnumDef),
    /// A struct, union or exception.
    Struct(&'static StructDef),
    List(&'static T),
    Set(&'static T),
    Map(&'static T, &'static T),
}

/// What a struct definition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Struct,
    /// Exactly one field is read (Java's `TUnion`).
    Union,
    Exception,
}

/// One field of a struct, merged over every recorded Hive version.
#[derive(Debug)]
pub struct FieldDef {
    pub id: i16,
    pub name: &'static str,
    /// The declared type; more than one when recorded versions declare the field differently.
    pub ty: &'static [T],
    /// For each alternative of `ty`, the versions (bits below) that declare it.
    pub ty_in: &'static [u8],
    /// The versions that declare the field `required`: their reader fails without it (or
    /// with it of another type, which they skip).
    pub required_in: u8,
}

impl FieldDef {
    /// The alternatives of `ty` that one of `versions` declares, with the versions of each.
    pub fn types_in(&self, versions: u8) -> impl Iterator<Item = (&'static T, u8)> + '_ {
        self.ty
            .iter()
            .zip(self.ty_in)
            .filter(move |(_, v)| *v & versions != 0)
            .map(move |(t, v)| (t, v & versions))
    }
}

#[derive(Debug)]
pub struct StructDef {
    pub name: &'static str,
    pub kind: Kind,
    /// Sorted by id.
    pub fields: &'static [FieldDef],
}

#[derive(Debug)]
pub struct EnumDef {
    pub name: &'static str,
    /// Every value of every recorded version, sorted.
    pub values: &'static [i32],
}

/// Recorded versions, as bits of `MethodDef::versions` (see `idl/thrift/SOURCES.md`).
pub const V2_3: u8 = 1;
pub const V3_1: u8 = 2;
pub const V4_0: u8 = 4;
pub const V4_X: u8 = 8;
/// fb303 `FacebookService` methods (every version).
pub const FB303: u8 = 16;
/// Every recorded version at once: a request is read so that each of them reads it.
pub const ALL_VERSIONS: u8 = V2_3 | V3_1 | V4_0 | V4_X | FB303;

/// The label of one version bit (`"2.3"`…).
pub fn version_label(bit: u8) -> &'static str {
    match bit {
        V2_3 => "2.3",
        V3_1 => "3.1",
        V4_0 => "4.0",
        V4_X => "4.x",
        FB303 => "fb303",
        _ => "?",
    }
}

#[derive(Debug)]
pub struct MethodDef {
    pub name: &'static str,
    pub oneway: bool,
    /// `<name>_args`: the parameters as a struct.
    pub args: &'static StructDef,
    /// `<name>_result`: field 0 `success` (absent for void) and the declared exceptions.
    pub result: &'static StructDef,
    /// Which recorded versions declare the method (bits above).
    pub versions: u8,
}

impl StructDef {
    /// A field by id (binary search: `fields` is sorted).
    pub fn field(&self, id: i16) -> Option<&'static FieldDef> {
        self.fields
            .binary_search_by_key(&id, |f| f.id)
            .ok()
            .map(|i| &self.fields[i])
    }
}

impl EnumDef {
    pub fn contains(&self, v: i32) -> bool {
        self.values.binary_search(&v).is_ok()
    }
}

/// Structs print by name: the schema is cyclic.
impl std::fmt::Debug for T {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            T::Bool => f.write_str("bool"),
            T::Byte => f.write_str("byte"),
            T::I16 => f.write_str("i16"),
            T::I32 => f.write_str("i32"),
            T::I64 => f.write_str("i64"),
            T::Double => f.write_str("double"),
            T::String => f.write_str("string"),
            T::Binary => f.write_str("binary"),
            T::Enum(e) => f.write_str(e.name),
            T::Struct(s) => f.write_str(s.name),
            T::List(t) => write!(f, "list<{t:?}>"),
            T::Set(t) => write!(f, "set<{t:?}>"),
            T::Map(k, v) => write!(f, "map<{k:?},{v:?}>"),
        }
    }
}
