//! Fields the proxy sets in an allowed call before it goes upstream (docs/AUTHORIZATION.md):
//! a created table's owner, a grant's grantor, the user a lock or transaction is taken for.
//! Each is one field set in place; every other byte stays as the client wrote it.

use bytes::{Bytes, BytesMut};

use super::classify;
use crate::wire::codec::path;
use crate::wire::codec::value::Value;
use crate::wire::framing::{frame, unframed};
use crate::wire::router::{Rule, EACH};
use crate::wire::schema::fields::{
    hive_object_privilege, privilege_bag, privilege_grant_info, table,
};
use crate::wire::transport::Transport;

/// Changes the proxy makes to an allowed call before it goes upstream, each one field set in
/// place (docs/AUTHORIZATION.md): an object a user creates is owned by that user, and a lock
/// or transaction is taken in the caller's name, whatever the client wrote.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rewrite {
    pub fields: Vec<FieldSet>,
}

/// One field to set: where (field ids from the args struct inward), to what, and whether to
/// add it when absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSet {
    pub path: Vec<i16>,
    pub value: crate::wire::codec::splice::NewValue,
    pub if_absent: crate::wire::codec::splice::IfAbsent,
}

/// `PrincipalType.USER`.
const PRINCIPAL_USER: i32 = 1;

/// The fields an allowed call of a non-admin caller gets set: a created table's owner (added
/// when absent) and owner type (set to USER where sent); the user a lock or a transaction is
/// taken for, where it names someone other than the caller.
pub fn rewrite_for(rule: &Rule, args: &Value, user: &str) -> Rewrite {
    use crate::wire::codec::splice::{IfAbsent, NewValue};
    let mut fields = Vec::new();
    let mut set_user = |path: &[i16]| {
        if path::strings_at(args, path).iter().any(|u| u != user) {
            fields.push(FieldSet {
                path: path.to_vec(),
                value: NewValue::String(user.as_bytes().to_vec()),
                if_absent: IfAbsent::Leave,
            });
        }
    };
    match *rule {
        Rule::Lock { user: path, .. } => set_user(path),
        Rule::Txn {
            user: Some(path), ..
        } => set_user(path),
        Rule::CreateTable { table } | Rule::AddIndex { table, .. } => {
            let at = |id: i16| table.iter().copied().chain([id]).collect::<Vec<_>>();
            fields.push(FieldSet {
                path: at(table::OWNER),
                value: NewValue::String(user.as_bytes().to_vec()),
                if_absent: IfAbsent::Add,
            });
            fields.push(FieldSet {
                path: at(table::OWNER_TYPE),
                value: NewValue::I32(PRINCIPAL_USER),
                if_absent: IfAbsent::Leave,
            });
        }
        // A grant (a revoke's grantor is not read by the metastore).
        Rule::GrantPrivileges { bag, kind } if classify::is_revoke(kind, args) == Ok(false) => {
            let at = |id: i16| {
                let tail = [
                    privilege_bag::PRIVILEGES,
                    EACH,
                    hive_object_privilege::GRANT_INFO,
                    id,
                ];
                bag.iter().copied().chain(tail).collect::<Vec<_>>()
            };
            fields.extend(grantor_fields(
                at(privilege_grant_info::GRANTOR),
                at(privilege_grant_info::GRANTOR_TYPE),
                user,
            ));
        }
        Rule::GrantRole {
            grantor: Some((name, kind)),
            ..
        } => fields.extend(grantor_fields(name.to_vec(), kind.to_vec(), user)),
        _ => {}
    }
    Rewrite { fields }
}

/// A grant's grantor set to the caller, a USER (both added where absent).
fn grantor_fields(name: Vec<i16>, kind: Vec<i16>, user: &str) -> [FieldSet; 2] {
    use crate::wire::codec::splice::{IfAbsent, NewValue};
    [
        FieldSet {
            path: name,
            value: NewValue::String(user.as_bytes().to_vec()),
            if_absent: IfAbsent::Add,
        },
        FieldSet {
            path: kind,
            value: NewValue::I32(PRINCIPAL_USER),
            if_absent: IfAbsent::Add,
        },
    ]
}

pub fn rewrite_note(rule: &Rule, user: &str) -> String {
    match rule {
        Rule::CreateTable { .. } => format!("the table's owner is set to {user}"),
        Rule::AddIndex { .. } => format!("the index table's owner is set to {user}"),
        Rule::GrantPrivileges { .. } | Rule::GrantRole { .. } => {
            format!("the grantor is set to {user}")
        }
        _ => format!("taken in the caller's name ({user})"),
    }
}

/// The request with the rewrite's fields set (every other byte as the client wrote it),
/// framed as it came.
pub fn rewritten(
    transport: Transport,
    bytes: &[u8],
    rw: &Rewrite,
    depth: usize,
) -> Result<Bytes, crate::wire::codec::splice::SpliceError> {
    use crate::wire::codec::splice::set_field;
    let mut out = BytesMut::from(unframed(transport, bytes));
    for f in &rw.fields {
        if let Some(b) = set_field(
            transport.protocol,
            &out,
            &f.path,
            &f.value,
            f.if_absent,
            depth,
        )? {
            out = b;
        }
    }
    Ok(frame(transport, out).freeze())
}
