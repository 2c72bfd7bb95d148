//! The narrowing rules, on a ruling: a denied read of one table by a caller who may read part
//! of it becomes a narrowed read (or a denial saying why it cannot be); a change of a table by
//! a caller who sees only part of it is refused — except an `alter_table` that, against the
//! table as the caller was shown it, only records statistics of a write it may make: that is
//! applied to the real table (its real columns and parameters set back in the request).

use std::sync::Arc;

use super::classify::{alter_changes, is_stats_param};
use super::narrow::params::names_any;
use super::narrow::reply::narrowable;
use super::narrow::{shown_table, string_entries, Narrowed, Rows};

/// The partition count a narrowed caller gets counted by the proxy.
const COUNT: &str = "get_num_partitions_by_filter";
use super::rewrite::{FieldSet, Rewrite};
use super::{Call, Guard, Ruling};
use crate::decision::authz::{
    authorize, AlterKind, Facts, Grants, Object, Operation, Privilege, Reason, Verdict,
};
use crate::decision::facts::Narrowing;
use crate::wire::codec::splice::{IfAbsent, NewValue};
use crate::wire::codec::value::Value;
use crate::wire::codec::writer::Writer;
use crate::wire::codec::{MessageType, Ty};
use crate::wire::framing::frame;
use crate::wire::router::Rule;
use crate::wire::schema::fields::{serde_info, storage_descriptor as sd, table};

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
                    Ok(Some(n)) if method == COUNT && n.rows != Rows::All => {
                        let verdict = self.count_partitions(call, table, &n, ruling).await;
                        ruling.verdict = verdict;
                        ruling.narrowed = Some(n);
                    }
                    Ok(Some(n)) if narrowable(method) => {
                        ruling.verdict = Verdict::allow(
                            Reason::Narrowed,
                            d.required.clone(),
                            n.record.matched.clone(),
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
                if ruling.verdict.reason != Reason::Owner
                    && grants.find(table, Privilege::Select, false).is_none() =>
            {
                let narrowed = self.narrowing(identity, grants, table).await;
                if matches!(narrowed, Ok(None)) {
                    return;
                }
                if let Ok(Some(n)) = &narrowed {
                    if self.stats_of_a_write(call, grants, table, n, ruling).await {
                        return;
                    }
                }
                refuse_change(ruling, table, &narrowed);
            }
            Operation::AlterPartitions { table, .. }
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
                refuse_change(ruling, table, &narrowed);
            }
            _ => {}
        }
    }

    /// A narrowed caller's partition count (`get_num_partitions_by_filter`) when it may read
    /// only some partitions: the partitions the filter selects are read from the metastore
    /// (the proxy's own connection, the metastore's own filter reading) and those the caller
    /// may read are counted; the proxy answers the count itself.
    async fn count_partitions(
        &self,
        call: &Call<'_>,
        table: &Object,
        n: &Narrowed,
        ruling: &mut Ruling,
    ) -> Verdict {
        let d = &ruling.verdict;
        let Object::Table(db, name) = table else {
            return d.clone();
        };
        let filter = call
            .args
            .field(3)
            .and_then(Value::as_str)
            .unwrap_or_default();
        match self.facts.partition_values(db, name, filter).await {
            Ok(all) => {
                let count = all.iter().filter(|v| n.rows.allows(&n.keys, v)).count();
                let mut w = Writer::new(call.transport.protocol);
                w.message(&call.header.name, MessageType::Reply, call.header.seqid)
                    .struct_begin();
                w.field(Ty::I32, 0)
                    .i32(i32::try_from(count).unwrap_or(i32::MAX));
                w.struct_end();
                ruling.answer = Some(frame(call.transport, w.finish(false)));
                Verdict::allow(
                    Reason::Narrowed,
                    d.required.clone(),
                    format!(
                        "{}; counted by hms-guard: {count} of the {} partitions the filter selects",
                        n.record.matched,
                        all.len()
                    ),
                )
            }
            Err(e) => Verdict {
                allow: false,
                reason: Reason::NotNarrowable,
                required: d.required.clone(),
                matched: format!(
                    "the user may read only some partitions of {table} ({}), and the partitions the filter selects could not be read to count them: {e}",
                    n.given()
                ),
            },
        }
    }

    /// An `alter_table` from a narrowed caller that, compared with the table as it was shown
    /// to the caller, changes only statistics: judged as such (INSERT), and set to carry the
    /// real table's columns and parameters (with the new statistics). False when it is not
    /// that, or cannot be made so.
    async fn stats_of_a_write(
        &self,
        call: &Call<'_>,
        grants: &Arc<Grants>,
        table: &Object,
        n: &Narrowed,
        ruling: &mut Ruling,
    ) -> bool {
        let Some(Rule::AlterTable { new_table, .. }) = call.entry.map(|m| m.rule) else {
            return false;
        };
        let (Object::Table(db, name), Some(new)) = (table, call.args.path(new_table)) else {
            return false;
        };
        let Ok(Some(current)) = self.facts.table(db, name).await else {
            return false;
        };
        let Ok(shown) = shown_table(&current, n) else {
            return false;
        };
        if alter_changes(db, name, &shown, new) != [AlterKind::StatsOnly] {
            return false;
        }
        let op = Operation::AlterTable {
            table: table.clone(),
            changes: vec![AlterKind::StatsOnly],
        };
        let facts = Facts {
            grants: Some(grants),
            ..Facts::default()
        };
        let verdict = authorize(call.identity, &op, &facts, &self.policy);
        if !verdict.allow {
            ruling.verdict = verdict;
            return true;
        }
        ruling.rewrite = Some((
            real_table_fields(new_table, &current, new, n),
            format!(
                "statistics of a write into {table} as the user sees it ({}), recorded on the real table",
                n.given()
            ),
        ));
        ruling.verdict = verdict;
        true
    }
}

/// Refuses a change of a table the caller sees only part of.
fn refuse_change(ruling: &mut Ruling, table: &Object, narrowed: &Narrowing) {
    let d = &ruling.verdict;
    ruling.verdict = Verdict {
        allow: false,
        reason: Reason::NotNarrowable,
        required: d.required.clone(),
        matched: format!(
            "the user sees only part of {table}{}: it may not change the table's schema, properties or partitions",
            given(narrowed)
        ),
    };
    ruling.storage = None;
}

/// The fields that make a narrowed caller's `alter_table` carry the real table: its columns,
/// the storage and serde parameters as they are, and the table parameters as they are but for
/// statistics, which come from the request (but for any naming a hidden column: a narrowed
/// writer records nothing about columns it cannot see).
fn real_table_fields(new_table: &[i16], current: &Value, new: &Value, n: &Narrowed) -> Rewrite {
    let at = |rest: &[i16]| -> Vec<i16> { new_table.iter().chain(rest).copied().collect() };
    let storage = current.field(table::SD);
    let columns: Vec<Vec<(i16, Vec<u8>)>> = storage
        .and_then(|s| s.field(sd::COLS))
        .map(Value::as_list)
        .unwrap_or_default()
        .iter()
        .map(|f| match f {
            Value::Struct(fields) => fields
                .iter()
                .filter_map(|(id, v)| v.as_str().map(|s| (*id, s.as_bytes().to_vec())))
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    // Statistics as the write left them (those of hidden columns, stale after a write, go as
    // they go when a whole-table writer records its own).
    let mut merged: Vec<(String, String)> = string_entries(current.field(table::PARAMETERS))
        .into_iter()
        .filter(|(k, _)| !is_stats_param(k))
        .collect();
    merged.extend(
        string_entries(new.field(table::PARAMETERS))
            .into_iter()
            .filter(|(k, v)| {
                is_stats_param(k) && !names_any(k, &n.hidden) && !names_any(v, &n.hidden)
            }),
    );
    let mut fields = vec![
        FieldSet {
            path: at(&[table::SD, sd::COLS]),
            value: NewValue::StringStructs(columns),
            if_absent: IfAbsent::Add,
        },
        FieldSet {
            path: at(&[table::PARAMETERS]),
            value: NewValue::StringMap(merged),
            if_absent: IfAbsent::Add,
        },
    ];
    if let Some(p) = storage.and_then(|s| s.field(sd::PARAMETERS)) {
        fields.push(FieldSet {
            path: at(&[table::SD, sd::PARAMETERS]),
            value: NewValue::StringMap(string_entries(Some(p))),
            if_absent: IfAbsent::Add,
        });
    }
    if let Some(p) = storage
        .and_then(|s| s.field(sd::SERDE_INFO))
        .and_then(|s| s.field(serde_info::PARAMETERS))
    {
        fields.push(FieldSet {
            path: at(&[table::SD, sd::SERDE_INFO, serde_info::PARAMETERS]),
            value: NewValue::StringMap(string_entries(Some(p))),
            if_absent: IfAbsent::Add,
        });
    }
    Rewrite { fields }
}

fn given(n: &Narrowing) -> String {
    match n {
        Ok(Some(n)) => format!(" ({})", n.given()),
        _ => String::new(),
    }
}
