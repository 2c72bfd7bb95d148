//! The narrowing rules, on a ruling: a denied read of one table by a caller who may read part
//! of it becomes a narrowed read (or a denial saying why it cannot be); an allowed change of a
//! table by a caller who sees only part of it is refused.

use std::sync::Arc;

use super::narrow::reply::narrowable;
use super::{Call, Guard, Ruling};
use crate::decision::authz::{Grants, Operation, Privilege, Reason, Verdict};

impl Guard {
    /// Applies the narrowing rules to a ruling (never for admins).
    pub(super) async fn narrow(
        &self,
        call: &Call<'_>,
        grants: &Arc<Grants>,
        op: &Operation,
        ruling: &mut Ruling,
    ) {
        let identity = call.identity;
        let method = call.header.name.as_str();
        match op {
            Operation::ReadTables(tables) if !ruling.verdict.allow => {
                let [table] = tables.as_slice() else {
                    return;
                };
                let d = &ruling.verdict;
                match self.narrowing(identity, grants, table).await {
                    Ok(None) => {}
                    Ok(Some(n)) if narrowable(method) => {
                        ruling.verdict = Verdict::allow(
                            Reason::Narrowed,
                            d.required.clone(),
                            format!("{}: {}", n.from.join(", "), n.given()),
                        );
                        ruling.narrowed = Some(n);
                    }
                    Ok(Some(n)) => {
                        ruling.verdict = Verdict {
                            allow: false,
                            reason: Reason::NotNarrowable,
                            required: d.required.clone(),
                            matched: format!(
                                "the user may read only part of {table} ({}), and the reply to {method} cannot be narrowed to it",
                                n.given()
                            ),
                        };
                    }
                    Err(why) => {
                        ruling.verdict = Verdict {
                            allow: false,
                            reason: Reason::NotNarrowable,
                            required: d.required.clone(),
                            matched: why.0,
                        };
                    }
                }
            }
            Operation::AlterTable { table, .. }
            | Operation::AlterPartitions { table, .. }
            | Operation::AddPartitions { table }
            | Operation::DropPartitions { table }
            | Operation::TruncateTable { table }
                if ruling.verdict.reason != Reason::Owner =>
            {
                if grants.find(table, Privilege::Select, false).is_some() {
                    return;
                }
                let narrowed = self.narrowing(identity, grants, table).await;
                if matches!(narrowed, Ok(None)) {
                    return;
                }
                let d = &ruling.verdict;
                ruling.verdict = Verdict {
                    allow: false,
                    reason: Reason::NotNarrowable,
                    required: d.required.clone(),
                    matched: format!(
                        "the user sees only part of {table}{}: it may not change the table's schema, properties or partitions",
                        given(&narrowed)
                    ),
                };
                ruling.storage = None;
            }
            _ => {}
        }
    }
}

fn given(n: &crate::decision::facts::Narrowing) -> String {
    match n {
        Ok(Some(n)) => format!(" ({})", n.given()),
        _ => String::new(),
    }
}
