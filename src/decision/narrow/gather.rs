//! Gathering what a caller may read of a table it holds no SELECT on: its column and
//! partition grants there, and the views it may read that show part of the table; combined
//! into one narrowed table (`combine`), cached per identity and table.

use std::sync::Arc;

use std::collections::HashSet;

use super::{combine, part_of_grant, part_of_view, Narrowed, NotNarrowable, Part, TableShape};
use crate::decision::authz::{Grants, Object, PrincipalKind, Privilege};
use crate::decision::facts::{FactsError, Narrowing};
use crate::decision::Guard;
use crate::listener::identity::{Identity, IdentitySource};

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

    /// The tables the views `identity` may read show part of (their qualifying branches),
    /// cached with the narrowings: what a listing may narrow besides tables with part grants.
    pub async fn viewed_tables(
        &self,
        identity: &Identity,
        grants: &Grants,
    ) -> Arc<HashSet<Object>> {
        self.facts
            .viewed(identity, || async {
                let mut out = HashSet::new();
                for (_, view) in self.readable_views(grants).await? {
                    if let Some(Ok(shape)) = &view.view {
                        out.extend(
                            shape
                                .branches
                                .iter()
                                .map(|b| Object::table(&b.db, &b.table)),
                        );
                    }
                }
                Ok(Arc::new(out))
            })
            .await
    }

    /// Whether a view's owner may give what the view shows of `base` (a view reads with its
    /// owner's rights, as in SQL): the owner is an admin, owns the base table, or holds SELECT
    /// on it WITH GRANT OPTION (a user owner's own grants, with no groups; a role or group
    /// owner: only as the base table's owner). Otherwise anyone who may create a view could
    /// read any table through it.
    pub(crate) async fn owner_may_give(
        &self,
        view: &TableShape,
        base: &TableShape,
    ) -> Result<Result<(), String>, FactsError> {
        let name = super::view_name(&view.table);
        let Some(owner) = &view.owner else {
            return Ok(Err(format!(
                "view {name} records no owner: nobody's rights give what it shows of {}",
                base.table
            )));
        };
        if base.owner.as_ref() == Some(owner) {
            return Ok(Ok(()));
        }
        if owner.kind == PrincipalKind::User {
            let id = Identity::new(&owner.name, &[], IdentitySource::SetUgi);
            let g = self.facts.grants(&id).await?;
            if self.policy.is_admin(&id, &g)
                || g.find(&base.table, Privilege::Select, true).is_some()
            {
                return Ok(Ok(()));
            }
        }
        Ok(Err(format!(
            "view {name} is owned by {} {}, who may not give SELECT on {} (neither an admin, its owner, nor holding SELECT on it WITH GRANT OPTION): the view shows nothing of it",
            owner.kind.as_str(),
            owner.name,
            base.table
        )))
    }

    /// The views among the tables the caller may SELECT (at most `MAX_VIEWS_LOOKED_AT`, in
    /// name order), with their shapes.
    async fn readable_views(
        &self,
        grants: &Grants,
    ) -> Result<Vec<(Object, Arc<TableShape>)>, FactsError> {
        let mut readable: Vec<&Object> = grants
            .objects
            .iter()
            .filter(|(o, held)| {
                matches!(o, Object::Table(..))
                    && held
                        .iter()
                        .any(|h| matches!(h.privilege, Privilege::Select | Privilege::All))
            })
            .map(|(o, _)| o)
            .collect();
        readable.sort();
        readable.truncate(MAX_VIEWS_LOOKED_AT);
        let mut out = Vec::new();
        for obj in readable {
            if let Some(shape) = self.facts.shape(obj).await? {
                if shape.view.is_some() {
                    out.push((obj.clone(), shape));
                }
            }
        }
        Ok(out)
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
        let Some(shape) = self.facts.shape(table).await? else {
            return Ok(Ok(None));
        };
        for (obj, view) in self.readable_views(grants).await? {
            let obj = &obj;
            match &view.view {
                None => {}
                Some(Ok(analysed)) => {
                    for b in &analysed.branches {
                        if Object::table(&b.db, &b.table) != *table {
                            continue;
                        }
                        if let Err(why) = self.owner_may_give(&view, &shape).await? {
                            refused.push(why);
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
    super::params::words(text).any(|w| w == table)
}
