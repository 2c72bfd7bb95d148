//! Gathering what a caller may read of a table it holds no SELECT on: its column and
//! partition grants there, and the views it may read that show part of the table; combined
//! into one narrowed table (`combine`), cached per identity and table.

use std::sync::Arc;

use super::{combine, part_of_grant, part_of_view, Narrowed, NotNarrowable, Part};
use crate::decision::authz::{Grants, Object, Privilege};
use crate::decision::facts::{FactsError, Narrowing};
use crate::decision::Guard;
use crate::listener::identity::Identity;

/// Most views (tables the caller may SELECT) looked at for one table; beyond it, the caller
/// gets less, never more.
pub const MAX_VIEWS_LOOKED_AT: usize = 256;

impl Guard {
    /// What `identity` may read of `table`, holding no SELECT on it: `Ok(None)` when nothing
    /// (no part grant, no view of it), one narrowed table, or why its parts give none.
    pub async fn narrowing(
        &self,
        identity: &Identity,
        grants: &Arc<Grants>,
        table: &Object,
    ) -> Result<Option<Arc<Narrowed>>, NotNarrowable> {
        self.facts
            .narrowing(identity, table, || self.work_out(grants, table))
            .await
    }

    async fn work_out(&self, grants: &Grants, table: &Object) -> Result<Narrowing, FactsError> {
        let mut parts: Vec<Part> = grants
            .parts_of(table, Privilege::Select)
            .map(part_of_grant)
            .collect();
        let mut refused: Vec<String> = Vec::new();
        let Object::Table(_, name) = table else {
            return Ok(Ok(None));
        };
        let mut readable: Vec<&Object> = grants
            .objects
            .iter()
            .filter(|(o, held)| {
                matches!(o, Object::Table(..))
                    && *o != table
                    && held
                        .iter()
                        .any(|h| matches!(h.privilege, Privilege::Select | Privilege::All))
            })
            .map(|(o, _)| o)
            .collect();
        readable.sort();
        readable.truncate(MAX_VIEWS_LOOKED_AT);
        let Some(shape) = self.facts.shape(table).await? else {
            return Ok(Ok(None));
        };
        for obj in readable {
            let Some(view) = self.facts.shape(obj).await? else {
                continue;
            };
            match &view.view {
                None => {}
                Some(Ok(analysed)) => {
                    for b in &analysed.branches {
                        if Object::table(&b.db, &b.table) != *table {
                            continue;
                        }
                        match part_of_view(obj, b, &shape) {
                            Ok(p) => parts.push(p),
                            Err(why) => refused.push(why.0),
                        }
                    }
                }
                Some(Err(why)) if mentions(&view.view_text, name) => {
                    refused.push(format!(
                        "view {} does not qualify: {why}",
                        super::view_name(obj)
                    ));
                }
                Some(Err(_)) => {}
            }
        }
        if parts.is_empty() {
            return Ok(if refused.is_empty() {
                Ok(None)
            } else {
                Err(NotNarrowable(refused.join("; ")))
            });
        }
        Ok(combine(&shape, &parts).map(|n| Some(Arc::new(n))))
    }
}

/// Whether a view's text (lower case) names a table as a word.
fn mentions(text: &str, table: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|w| w == table)
}
