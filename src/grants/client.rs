//! The shell's metastore client: one connection to hms-guard (or any metastore address),
//! identified as any client is — `set_ugi` with a user name, a TLS client certificate, or a
//! Kerberos ticket from the user's ticket cache — and the calls Hive's own metastore client
//! makes for the authorization statements.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::kerberos::{Qop, UpstreamKerberosSettings};
use crate::auth::tls::{UpstreamTls, UpstreamTlsSettings};
use crate::config::ThriftUri;
use crate::decision::authz::{Principal, PrincipalKind};
use crate::listener::identity::{Identity, IdentitySource};
use crate::ops::metrics::Metrics;
use crate::settings::Timeouts;
use crate::upstream::delegation::UpstreamAuth;
use crate::upstream::{UpstreamConn, Upstreams};
use crate::wire::codec::reply::{success, ReplyError};
use crate::wire::codec::value::{read_value, Value};
use crate::wire::codec::writer::Writer;
use crate::wire::codec::{Limits, MessageType, Protocol, Ty};
use crate::wire::transport::Transport;

use super::state::{Membership, ObjectRef, PrivilegeRow};

/// Where the shell connects and as whom (the `sql` command's flags).
#[derive(Debug, Clone)]
pub struct Target {
    pub uri: ThriftUri,
    /// Sent with `set_ugi` (a metastore or an hms-guard in `set_ugi` mode); with TLS or
    /// Kerberos, the name the shell uses as grantor and for `SET ROLE`.
    pub user: Option<String>,
    pub tls: Option<UpstreamTlsSettings>,
    /// The service principal (`hive/_HOST@REALM`) to ask a ticket for; the user's ticket
    /// cache (`KRB5CCNAME`, `kinit`) holds the credentials.
    pub kerberos: Option<String>,
    pub timeout: Duration,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// hms-guard or the metastore answered with an exception (a refusal, a missing object).
    #[error("{message}")]
    Refused { method: String, message: String },
    /// The connection failed.
    #[error("{method}: {message}")]
    Link { method: String, message: String },
}

/// Replies are read whole; this bounds one (a listing of many grants fits).
const MAX_REPLY: u64 = 256 * 1024 * 1024;

const BINARY: Transport = Transport {
    protocol: Protocol::Binary,
    framed: false,
};

/// Hive's enums on the wire.
const GRANT: i32 = 1;
const REVOKE: i32 = 2;

pub struct Client {
    conn: UpstreamConn,
    seqid: i32,
    timeout: Duration,
    /// Who the shell acts as: the grantor it writes, the user `SET ROLE` checks.
    pub user: String,
}

impl Client {
    /// Connects (TLS and Kerberos handshakes included) and names the user with `set_ugi`
    /// where no handshake proved one.
    pub async fn connect(target: &Target) -> Result<Client, CallError> {
        let link = |message: String| CallError::Link {
            method: "connect".into(),
            message,
        };
        let metrics = Arc::new(Metrics::new());
        let tls = match &target.tls {
            Some(t) => Some(Arc::new(
                UpstreamTls::load(t.clone(), metrics.clone()).map_err(link)?,
            )),
            None => None,
        };
        let auth = target.kerberos.as_ref().map(|service| {
            Arc::new(UpstreamAuth::new(
                Arc::new(UpstreamKerberosSettings {
                    // Empty: the default credentials, the user's ticket cache.
                    principal: String::new(),
                    keytab: PathBuf::new(),
                    service_principal: service.clone(),
                    krb5_conf: None,
                    qop: vec![Qop::AuthConf, Qop::AuthInt, Qop::Auth],
                    delegation_tokens: false,
                    token_renewer: String::new(),
                    token_refresh: Duration::from_secs(3600),
                    max_tokens: 1,
                    handshake_timeout: target.timeout,
                }),
                metrics.clone(),
            ))
        });
        let timeouts = Timeouts {
            connect: target.timeout,
            write: target.timeout,
            read: target.timeout,
        };
        let upstreams = Upstreams::for_client(vec![target.uri.clone()], timeouts, tls, auth);
        let limits = Limits {
            max_message_bytes: MAX_REPLY,
            ..Limits::default()
        };
        let mut conn = UpstreamConn::open(&upstreams, BINARY, limits)
            .await
            .map_err(|e| link(e.to_string()))?;
        let user = match (
            &target.user,
            &target.kerberos,
            target.tls.as_ref().and_then(|t| t.cert.as_ref()),
        ) {
            (Some(u), _, _) => u.clone(),
            (None, Some(_), _) => kerberos_user().await.map_err(link)?,
            (None, None, Some(cert)) => certificate_user(cert).map_err(link)?,
            (None, None, None) => String::new(),
        };
        if target.kerberos.is_none() && target.tls.as_ref().is_none_or(|t| t.cert.is_none()) {
            if user.is_empty() {
                return Err(link(
                    "name a user (--user), a client certificate (--tls-cert) or Kerberos (--kerberos)"
                        .into(),
                ));
            }
            let id = Identity::new(&user, &[], IdentitySource::SetUgi);
            conn.ensure_identity(&id, "the first statement")
                .await
                .map_err(|e| link(e.to_string()))?;
        }
        Ok(Client {
            conn,
            seqid: 0,
            timeout: target.timeout,
            user,
        })
    }

    /// One call: the args struct written by `args`; the success value (`None`: void).
    async fn call(
        &mut self,
        method: &str,
        args: impl FnOnce(&mut Writer),
    ) -> Result<Option<Value>, CallError> {
        self.seqid = self.seqid.wrapping_add(1);
        let mut w = Writer::new(Protocol::Binary);
        w.message(method, MessageType::Call, self.seqid)
            .struct_begin();
        args(&mut w);
        w.struct_end();
        let bytes = w.finish(false);
        let link = |message: String| CallError::Link {
            method: method.to_string(),
            message,
        };
        let seqid = self.seqid;
        let exchange = async {
            self.conn
                .send(&bytes, method)
                .await
                .map_err(|e| link(e.to_string()))?;
            self.conn
                .read_reply(method, seqid, MAX_REPLY)
                .await
                .map_err(|e| link(e.to_string()))
        };
        let (reply, _) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| link(format!("no reply within {} ms", self.timeout.as_millis())))??;
        match success(&reply) {
            Ok(None) => Ok(None),
            Ok(Some((mut r, ty))) => read_value(&mut r, ty, None)
                .map(Some)
                .map_err(|e| link(format!("unreadable reply: {e}"))),
            Err(ReplyError::Exception { message, .. }) => Err(CallError::Refused {
                method: method.to_string(),
                message,
            }),
            Err(ReplyError::Invalid(e)) => Err(link(format!("unreadable reply: {e}"))),
        }
    }

    pub async fn get_database(&mut self, db: &str) -> Result<Value, CallError> {
        let v = self
            .call("get_database", |w| {
                w.field(Ty::String, 1).string(db.as_bytes());
            })
            .await?;
        Ok(v.unwrap_or(Value::Struct(Vec::new())))
    }

    pub async fn get_table(&mut self, db: &str, table: &str) -> Result<Value, CallError> {
        let v = self
            .call("get_table", |w| {
                w.field(Ty::String, 1).string(db.as_bytes());
                w.field(Ty::String, 2).string(table.as_bytes());
            })
            .await?;
        Ok(v.unwrap_or(Value::Struct(Vec::new())))
    }

    /// A partition by its values (`NoSuchObjectException` when there is none).
    pub async fn get_partition(
        &mut self,
        db: &str,
        table: &str,
        values: &[String],
    ) -> Result<Value, CallError> {
        let v = self
            .call("get_partition", |w| {
                w.field(Ty::String, 1).string(db.as_bytes());
                w.field(Ty::String, 2).string(table.as_bytes());
                w.field(Ty::List, 3).list_begin(Ty::String, values.len());
                for v in values {
                    w.string(v.as_bytes());
                }
            })
            .await?;
        Ok(v.unwrap_or(Value::Struct(Vec::new())))
    }

    pub async fn get_all_databases(&mut self) -> Result<Vec<String>, CallError> {
        Ok(strings(self.call("get_all_databases", |_| {}).await?))
    }

    pub async fn get_all_tables(&mut self, db: &str) -> Result<Vec<String>, CallError> {
        let v = self
            .call("get_all_tables", |w| {
                w.field(Ty::String, 1).string(db.as_bytes());
            })
            .await?;
        Ok(strings(v))
    }

    /// At most `max` partition names of a table.
    pub async fn get_partition_names(
        &mut self,
        db: &str,
        table: &str,
        max: i16,
    ) -> Result<Vec<String>, CallError> {
        let v = self
            .call("get_partition_names", |w| {
                w.field(Ty::String, 1).string(db.as_bytes());
                w.field(Ty::String, 2).string(table.as_bytes());
                w.field(Ty::I16, 3).i16(max);
            })
            .await?;
        Ok(strings(v))
    }

    pub async fn get_role_names(&mut self) -> Result<Vec<String>, CallError> {
        Ok(strings(self.call("get_role_names", |_| {}).await?))
    }

    pub async fn create_role(&mut self, role: &str) -> Result<(), CallError> {
        let owner = self.user.clone();
        self.call("create_role", |w| {
            w.field(Ty::Struct, 1).struct_begin();
            w.field(Ty::String, 1).string(role.as_bytes());
            w.field(Ty::I32, 2).i32(now());
            w.field(Ty::String, 3).string(owner.as_bytes());
            w.struct_end();
        })
        .await
        .map(drop)
    }

    pub async fn drop_role(&mut self, role: &str) -> Result<(), CallError> {
        self.call("drop_role", |w| {
            w.field(Ty::String, 1).string(role.as_bytes());
        })
        .await
        .map(drop)
    }

    /// `grant_revoke_role`, as Hive's client sends GRANT/REVOKE ROLE. Revoking with
    /// `option` takes the admin option only.
    pub async fn grant_revoke_role(
        &mut self,
        grant: bool,
        m: &Membership,
        option: bool,
    ) -> Result<(), CallError> {
        let grantor = self.user.clone();
        self.call("grant_revoke_role", |w| {
            w.field(Ty::Struct, 1).struct_begin();
            w.field(Ty::I32, 1).i32(if grant { GRANT } else { REVOKE });
            w.field(Ty::String, 2).string(m.role.as_bytes());
            w.field(Ty::String, 3).string(m.principal.name.as_bytes());
            w.field(Ty::I32, 4).i32(m.principal.kind.wire());
            if grant {
                w.field(Ty::String, 5).string(grantor.as_bytes());
                w.field(Ty::I32, 6).i32(PrincipalKind::User.wire());
            }
            w.field_bool(7, option);
            w.struct_end();
        })
        .await
        .map(drop)
    }

    /// `grant_revoke_privileges`, as Hive's client sends GRANT/REVOKE: one privilege row
    /// per privilege and object. Revoking with `option` takes the grant option only.
    pub async fn grant_revoke_privileges(
        &mut self,
        grant: bool,
        rows: &[PrivilegeRow],
        option: bool,
    ) -> Result<(), CallError> {
        let grantor = self.user.clone();
        let time = now();
        self.call("grant_revoke_privileges", |w| {
            w.field(Ty::Struct, 1).struct_begin();
            w.field(Ty::I32, 1).i32(if grant { GRANT } else { REVOKE });
            w.field(Ty::Struct, 2).struct_begin();
            w.field(Ty::List, 1).list_begin(Ty::Struct, rows.len());
            for r in rows {
                w.struct_begin();
                w.field(Ty::Struct, 1);
                write_object(w, &r.object);
                w.field(Ty::String, 2).string(r.principal.name.as_bytes());
                w.field(Ty::I32, 3).i32(r.principal.kind.wire());
                w.field(Ty::Struct, 4).struct_begin();
                w.field(Ty::String, 1).string(r.privilege.as_bytes());
                w.field(Ty::I32, 2).i32(time);
                w.field(Ty::String, 3).string(grantor.as_bytes());
                w.field(Ty::I32, 4).i32(PrincipalKind::User.wire());
                w.field_bool(5, r.grant_option);
                w.struct_end();
                w.struct_end();
            }
            w.struct_end();
            if !grant {
                w.field_bool(3, option);
            }
            w.struct_end();
        })
        .await
        .map(drop)
    }

    /// `list_privileges`: one principal's grants on `object` (`None` object: everywhere),
    /// or every principal's grants on `object` (`None` principal).
    pub async fn list_privileges(
        &mut self,
        principal: Option<&Principal>,
        object: Option<&ObjectRef>,
    ) -> Result<Vec<PrivilegeRow>, CallError> {
        let v = self
            .call("list_privileges", |w| {
                if let Some(p) = principal {
                    w.field(Ty::String, 1).string(p.name.as_bytes());
                    w.field(Ty::I32, 2).i32(p.kind.wire());
                }
                w.field(Ty::Struct, 3);
                match object {
                    Some(o) => write_object(w, o),
                    // No object type: every grant of the principal.
                    None => {
                        w.struct_begin().struct_end();
                    }
                }
            })
            .await?;
        Ok(v.as_ref()
            .map(Value::as_list)
            .unwrap_or_default()
            .iter()
            .filter_map(PrivilegeRow::from_value)
            .collect())
    }

    /// The principals a role is granted to (`get_principals_in_role`).
    pub async fn principals_in_role(&mut self, role: &str) -> Result<Vec<Membership>, CallError> {
        let v = self
            .call("get_principals_in_role", |w| {
                w.field(Ty::Struct, 1).struct_begin();
                w.field(Ty::String, 1).string(role.as_bytes());
                w.struct_end();
            })
            .await?;
        Ok(memberships(v))
    }

    /// The roles granted to a principal (`get_role_grants_for_principal`).
    pub async fn role_grants(&mut self, p: &Principal) -> Result<Vec<Membership>, CallError> {
        let v = self
            .call("get_role_grants_for_principal", |w| {
                w.field(Ty::Struct, 1).struct_begin();
                w.field(Ty::String, 1).string(p.name.as_bytes());
                w.field(Ty::I32, 2).i32(p.kind.wire());
                w.struct_end();
            })
            .await?;
        Ok(memberships(v))
    }
}

/// The user a ticket names, for the shell's own use (grantor, SET ROLE): the principal's
/// first component, as a `DEFAULT` mapping gives it. hms-guard maps the principal itself.
async fn kerberos_user() -> Result<String, String> {
    let principal = tokio::task::spawn_blocking(crate::auth::sasl::default_principal)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(principal
        .split(['/', '@'])
        .next()
        .unwrap_or_default()
        .to_string())
}

/// The user a client certificate names (its subject's CN), for the shell's own use.
fn certificate_user(cert: &std::path::Path) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject;
    let first = rustls::pki_types::CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .next()
        .ok_or_else(|| format!("{}: no certificate", cert.display()))?
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    crate::auth::tls::identity_of(&first, crate::config::ClientIdentity::Cn)
}

fn write_object(w: &mut Writer, o: &ObjectRef) {
    w.struct_begin();
    w.field(Ty::I32, 1).i32(o.kind.wire());
    if !o.db.is_empty() {
        w.field(Ty::String, 2).string(o.db.as_bytes());
    }
    if !o.table.is_empty() {
        w.field(Ty::String, 3).string(o.table.as_bytes());
    }
    if !o.partition.is_empty() {
        w.field(Ty::List, 4)
            .list_begin(Ty::String, o.partition.len());
        for v in &o.partition {
            w.string(v.as_bytes());
        }
    }
    if !o.column.is_empty() {
        w.field(Ty::String, 5).string(o.column.as_bytes());
    }
    w.struct_end();
}

fn strings(v: Option<Value>) -> Vec<String> {
    v.as_ref()
        .map(Value::as_list)
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// The `RolePrincipalGrant`s of a response's field 1.
fn memberships(v: Option<Value>) -> Vec<Membership> {
    v.as_ref()
        .and_then(|r| r.field(1))
        .map(Value::as_list)
        .unwrap_or_default()
        .iter()
        .filter_map(Membership::from_value)
        .collect()
}

/// Seconds since the epoch, as Hive's `createTime` fields hold it.
fn now() -> i32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX))
}
