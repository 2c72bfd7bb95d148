//! What a decision may reveal about whether a table exists. A caller who holds nothing on a
//! table or its database learns nothing from a refusal; one who may act in the database learns
//! "not found" from the metastore itself (engines create tables that way).

use super::Guard;
use crate::decision::authz::{owner_matches, Grants, Object};
use crate::listener::identity::Identity;

impl Guard {
    /// Whether `table` does not exist and the caller may act in its database (an admin, holds
    /// any privilege on or in it, or owns it). Any failed lookup says no.
    pub(super) async fn may_see_absent(
        &self,
        identity: &Identity,
        grants: &Grants,
        admin: bool,
        table: &Object,
    ) -> bool {
        let Object::Table(db, _) = table else {
            return false;
        };
        if !matches!(self.facts.object(table).await, Ok(None)) {
            return false;
        }
        // Not `database_visible`: `default` is visible to all, but only those who hold
        // something in it (or own it) learn which names it lacks.
        admin
            || grants.holds_in_database(db)
            || self.owns(identity, grants, &Object::database(db)).await
    }

    /// Whether `table` is hidden from the caller: not an admin, holding nothing on the table or
    /// its database, not its owner (a failed lookup counts as not owning it).
    pub(super) async fn hides_table(
        &self,
        identity: &Identity,
        grants: &Grants,
        admin: bool,
        table: &Object,
    ) -> bool {
        let Object::Table(db, _) = table else {
            return false;
        };
        if admin || grants.any_on(table) || grants.any_on(&Object::database(db)) {
            return false;
        }
        !self.owns(identity, grants, table).await
    }

    /// Whether the caller owns `object` (its owner facts, cached; a failed lookup says no).
    pub(super) async fn owns(&self, identity: &Identity, grants: &Grants, object: &Object) -> bool {
        matches!(self.facts.object(object).await, Ok(Some(f))
            if f.owner.as_ref().is_some_and(|o| owner_matches(identity, grants, o)))
    }
}
