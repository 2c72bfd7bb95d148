//! The facts a decision needs beyond the caller's grants, gathered for one operation: owners
//! of the objects an owner may act on, holders of locks and transactions, the grants a revoke
//! names as recorded, and (only for calls the grants allow) the storage checks of its
//! locations.

use super::classify::{Classified, StorageNeed};
use super::Guard;
use crate::decision::authz::{
    authorize, AlterKind, Facts, Grants, Object, Operation, OverlapFact, Reason, RevokeItem,
    StorageFact, Verdict,
};
use crate::decision::index::{Claim, Lookup, Relation};
use crate::decision::storage::{Occupancy, StorageAction, StorageOutcome};
use crate::listener::identity::Identity;
use crate::ops::audit::StorageAudit;

impl Guard {
    /// Decides one operation: by grants, then with the owners and holders it names, then with
    /// its storage checks.
    pub(super) async fn decide_one(
        &self,
        identity: &Identity,
        c: &Classified,
        grants: Option<&Grants>,
    ) -> (Verdict, Option<StorageAudit>) {
        let op = &c.op;
        let mut facts = Facts {
            grants,
            ..Facts::default()
        };
        let mut d = authorize(identity, op, &facts, &self.policy);
        if !d.allow && grants.is_some() {
            let objects = owner_objects(op);
            let held = match op {
                Operation::Txn { held, .. } | Operation::Lock { held, .. } => held.as_slice(),
                _ => &[],
            };
            for &h in held {
                match self.facts.holder(h).await {
                    Ok(holder) => {
                        facts.holders.insert(h, holder);
                    }
                    Err(e) => {
                        let d = Verdict {
                            allow: false,
                            reason: Reason::FactsUnavailable,
                            required: d.required,
                            matched: format!("who holds {h} could not be read: {e}"),
                        };
                        return (d, None);
                    }
                }
            }
            if !held.is_empty() && objects.is_empty() {
                d = authorize(identity, op, &facts, &self.policy);
            }
            if let Operation::RevokePrivileges(items) = op {
                if let Err(e) = self.gather_recorded(items, &mut facts).await {
                    return (e, None);
                }
                d = authorize(identity, op, &facts, &self.policy);
            }
            if !objects.is_empty() {
                for obj in objects {
                    match self.facts.object(&obj).await {
                        Ok(Some(f)) => {
                            if let Some(o) = f.owner {
                                facts.owners.insert(obj, o);
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            let d = Verdict {
                                allow: false,
                                reason: Reason::FactsUnavailable,
                                required: d.required,
                                matched: format!("the owner of {obj} could not be read: {e}"),
                            };
                            return (d, None);
                        }
                    }
                }
                d = authorize(identity, op, &facts, &self.policy);
            }
        }
        // Locations are exclusive: other objects' claims, only for calls the grants allow
        // (judged after the storage checks, so a location the user's role cannot reach is
        // refused as before).
        if d.allow && grants.is_some() {
            if let Err(denied) = self.overlap_facts(c, &mut facts).await {
                return (denied, None);
            }
        }
        // Storage facts only for calls the grants allow: a denied call costs no AWS call.
        let has_places = !c.storage.is_empty() || !c.default_places.is_empty();
        if !d.allow || !has_places || !self.storage.enabled() {
            if d.allow {
                d = authorize(identity, op, &facts, &self.policy);
            }
            if d.allow && matches!(op, Operation::DataPath { .. }) && !self.storage.enabled() {
                d.matched = "storage checks are off (storage.enabled = false): files by path are not checked".into();
            }
            return (d, None);
        }
        let audit = self.storage_facts(identity, c, &mut facts).await;
        (authorize(identity, op, &facts, &self.policy), audit)
    }

    /// The storage facts of a call the grants allow: each default place it fills is listed
    /// with the proxy's own identity (a place already in use is checked like an explicit
    /// location; a failed listing denies), then every location to check is checked (read,
    /// and write unless only read is needed). Stops at the first denial.
    async fn storage_facts(
        &self,
        identity: &Identity,
        c: &Classified,
        facts: &mut Facts<'_>,
    ) -> Option<StorageAudit> {
        let mut needs: Vec<&StorageNeed> = Vec::new();
        for place in &c.default_places {
            match self.storage.occupancy(&place.location).await {
                Occupancy::Empty => {}
                // In use, or not S3 (nothing to list): the ordinary check.
                Occupancy::Occupied | Occupancy::NotS3 => needs.push(place),
                Occupancy::Unavailable(why) => {
                    facts.storage.push(StorageFact {
                        location: place.location.clone(),
                        // What the place would need if it is in use.
                        action: if place.write { "write" } else { "read" },
                        allow: false,
                        unavailable: true,
                        reason: format!(
                            "storage check unavailable: user {}, default place {}: whether anything is stored there could not be learned: {why}",
                            identity.user, place.location
                        ),
                    });
                    return None;
                }
            }
        }
        needs.extend(c.storage.iter());
        // A read of files by path (an engine's question) reads and writes nothing else.
        let only_read = matches!(c.op, Operation::DataPath { write: false });
        let mut audit = None;
        'needs: for need in needs {
            // Read, and write unless the location is only read (external data, with
            // `storage.read_only_external`): a user must not point a table the compute role
            // writes to at a place the user's own role cannot write.
            let actions: &[StorageAction] = if only_read {
                &[StorageAction::Read]
            } else if need.write || !self.read_only_external {
                &[StorageAction::Read, StorageAction::Write]
            } else {
                &[StorageAction::Read]
            };
            for &action in actions {
                let s = self
                    .storage
                    .check(&identity.user, &identity.groups, &need.location, action)
                    .await;
                audit = Some(StorageAudit {
                    role_chain: s.role_chain.clone(),
                    action: s.action.to_string(),
                    cached: s.cached,
                    outcome: s.outcome.as_str().to_string(),
                });
                facts.storage.push(StorageFact {
                    location: need.location.clone(),
                    action: s.action,
                    allow: s.allow,
                    unavailable: s.outcome == StorageOutcome::Unavailable,
                    reason: s.reason,
                });
                if !s.allow {
                    break 'needs;
                }
            }
        }
        audit
    }

    /// The claims of other tables and partitions (the location index) on each location the
    /// call points at: explicit locations (a table's, a changed one, partitions outside their
    /// table), the default places it fills, and the files a drop deletes (at and under the
    /// table's location). The call's own table is not an overlap. An index that cannot answer
    /// refuses explicit locations; default places and drops (the call names no location)
    /// pass unchecked then.
    async fn overlap_facts(&self, c: &Classified, facts: &mut Facts<'_>) -> Result<(), Verdict> {
        let own = match &c.op {
            Operation::CreateTable { table }
            | Operation::AlterTable { table, .. }
            | Operation::AddPartitions { table }
            | Operation::AlterPartitions { table, .. }
            | Operation::DropTable { table } => table,
            _ => return Ok(()),
        };
        let Object::Table(own_db, own_table) = own else {
            return Ok(());
        };
        // (location, may write or delete there, named by the call, only at and under)
        let mut places: Vec<(String, bool, bool, bool)> = Vec::new();
        if let Operation::DropTable { table } = &c.op {
            match self.facts.object(table).await {
                Ok(Some(f)) if f.deletes_data => {
                    places.extend(f.location.map(|l| (l, true, false, true)));
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(Verdict {
                        allow: false,
                        reason: Reason::FactsUnavailable,
                        required: "the location of the table the drop deletes".into(),
                        matched: format!("the location of {table} could not be read: {e}"),
                    })
                }
            }
        }
        let writes = |n: &StorageNeed| n.write || !self.read_only_external;
        places.extend(
            c.storage
                .iter()
                .map(|n| (n.location.clone(), writes(n), true, false)),
        );
        places.extend(
            c.default_places
                .iter()
                .map(|n| (n.location.clone(), writes(n), false, false)),
        );
        let skip =
            |claim: &Claim| &*claim.db == own_db.as_str() && &*claim.table == own_table.as_str();
        for (location, writes, named, below) in places {
            match self.index.lookup(&location, &skip).await {
                Lookup::Off => return Ok(()),
                Lookup::Unavailable(why) if named => {
                    facts.index_unavailable = Some(format!("{why} (the call names {location})"));
                    return Ok(());
                }
                Lookup::Unavailable(why) => {
                    tracing::info!(location, "location index unavailable; a default place or drop passes unchecked: {why}");
                }
                Lookup::Found(found) => {
                    facts.overlaps_truncated |= found.truncated;
                    for f in found.found {
                        if below && f.relation == Relation::Above {
                            continue;
                        }
                        facts.overlaps.push(OverlapFact {
                            location: location.clone(),
                            relation: f.relation.as_str(),
                            table: Object::table(&f.claim.db, &f.claim.table),
                            what: f.claim.describe(),
                            other_location: f.location.to_string(),
                            owner: f.claim.owner.as_deref().cloned(),
                            writes,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The grants the metastore records for each principal and object a revoke names, read
    /// fresh (never cached: a revoke is decided on the metastore's state now).
    async fn gather_recorded(
        &self,
        items: &[RevokeItem],
        facts: &mut Facts<'_>,
    ) -> Result<(), Verdict> {
        for it in items {
            let key = (it.principal.clone(), it.target.clone());
            if facts.recorded.contains_key(&key) {
                continue;
            }
            match self.facts.recorded_grants(&key.0, &key.1).await {
                Ok(recorded) => {
                    facts.recorded.insert(key, recorded);
                }
                Err(e) => {
                    return Err(Verdict {
                        allow: false,
                        reason: Reason::FactsUnavailable,
                        required: format!(
                            "{} on {} granted by the user",
                            it.privilege.as_str(),
                            it.target
                        ),
                        matched: format!(
                            "the grants recorded for {} on {} could not be read: {e}",
                            it.principal, it.target
                        ),
                    })
                }
            }
        }
        Ok(())
    }
}

/// Objects whose owner can decide the operation.
fn owner_objects(op: &Operation) -> Vec<Object> {
    match op {
        Operation::ReadTables(t) | Operation::OwnerOfAll(t) => t.clone(),
        Operation::CreateTable {
            table: Object::Table(db, _),
        } => vec![Object::Database(db.clone())],
        Operation::AlterTable { table, changes } => {
            let mut v = vec![table.clone()];
            for kind in changes {
                if let AlterKind::Rename { new_db } = kind {
                    v.push(Object::database(new_db));
                }
            }
            v
        }
        Operation::DropTable { table }
        | Operation::TruncateTable { table }
        | Operation::WriteData { table, .. }
        | Operation::AddPartitions { table }
        | Operation::AlterPartitions { table, .. }
        | Operation::DropPartitions { table } => vec![table.clone()],
        Operation::AlterDatabase { db, .. }
        | Operation::DropDatabase { db }
        | Operation::ReadDatabase { db } => vec![db.clone()],
        Operation::Lock { items, .. } => items.iter().map(|(o, _)| o.clone()).collect(),
        _ => Vec::new(),
    }
}
