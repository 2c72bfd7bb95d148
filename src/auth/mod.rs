//! Authentication: TLS both ways (`tls`), the SASL transport both ways (`sasl`: GSSAPI server
//! and client, DIGEST-MD5 client), Kerberos principals and their users (`kerberos`), and which
//! names an identity may carry (`names`: the metastore database's comparison rules), and a
//! user's groups from where they live (`groups`).

pub mod groups;
pub mod kerberos;
pub mod names;
pub mod sasl;
pub mod tls;
