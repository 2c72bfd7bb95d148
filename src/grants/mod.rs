//! Grant administration (`hms-guard sql`): Hive's authorization statements run as the
//! metastore calls Hive itself makes, through hms-guard like any client's.
//!
//! ```text
//! text ─► grammar (winnow; errors at line, column and token) ─► statement::Located
//!   ─► session::Session (USE, SET ROLE; each statement resolved into effects: rows of
//!      grants and role memberships, checked against the metastore)
//!        ├─► run now: client::Client (grant_revoke_privileges, grant_revoke_role,
//!        │   create_role, … / list_privileges, get_principals_in_role … for SHOW)
//!        └─► plan: the current rows the effects touch, read; the effects played over
//!            them; the difference printed (--plan) or made (--apply); export writes the
//!            current rows as statements
//! ```

pub mod client;
pub mod grammar;
pub mod plan;
pub mod session;
pub mod state;
pub mod statement;

#[cfg(test)]
mod tests;
