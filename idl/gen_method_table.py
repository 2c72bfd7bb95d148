#!/usr/bin/env python3
"""Generates src/wire/router/methods.rs, the method table, from:
  - idl/hms-methods.tsv  every HMS method name across versions (+ coarse group)
  - idl/thrift/          the metastore's IDL of every recorded version, read by idl/gen_schema.py
                         (argument and struct field ids, oneway, declared exceptions)
  - RULES below          the project's decision for every method (docs/AUTHORIZATION.md, the privilege table)
Paths in RULES are symbolic ("req.dbName", "new_parts[].tableName") and resolved to field ids
here against every version, so a wrong name (or a name whose id differs between versions) fails
the generation instead of silently matching nothing.
Run: python3 idl/gen_method_table.py  (then cargo fmt is not needed: the table is rustfmt::skip)
     python3 idl/gen_method_table.py --check   exits non-zero if the table is not up to date
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FB303 = ["getName", "getVersion", "getStatus", "getStatusDetails", "getCounters", "getCounter",
         "setOption", "getOption", "getOptions", "getCpuProfile", "aliveSince", "reinitialize",
         "shutdown"]

# ---------------------------------------------------------------------------------------------
# The decision for every method. Tuples: (rule, *symbolic paths / args).
H = ("Harmless",)
def admin(why): return ("AdminOnly", why)
TOK = ("Tokens",)
def read(db, t): return ("ReadTable", db, t)
def listing(db, shape): return ("Listing", db, shape)
def create(t): return ("CreateTable", t)
def alter(db, t, new): return ("AlterTable", db, t, new)
def drop(db, t): return ("DropTable", db, t)
def trunc(db, t): return ("TruncateTable", db, t)
def addp(db, t, *locs, shared=None): return ("AddPartitions", db, t, locs, shared)
def altp(db, t, stats, *locs): return ("AlterPartitions", db, t, stats, locs)
def dropp(db, t): return ("DropPartitions", db, t)
def owner(*pairs): return ("OwnerOfTables",) + pairs
def grants_read(name, kind=None, groups=None): return ("ReadGrants", name, kind, groups)
def txn(user=None, txns=(), locks=(), rng=None): return ("Txn", user, txns, locks, rng)
def lock(components, user, txnid): return ("Lock", components, user, txnid)

RULES = {
    # --- session -------------------------------------------------------------------------
    "set_ugi": ("SetUgi",),
    "getMetaConf": H, "setMetaConf": H, "get_config_value": H, "get_metastore_db_uuid": H,
    "partition_name_has_valid_characters": H, "partition_name_to_spec": H,
    "partition_name_to_vals": H,
    "flushCache": admin("flushing the metastore's caches"),
    # Listings of everyone's transactions, locks and compactions name other users and their
    # tables and hosts.
    "show_locks": admin("listing every lock (they name other users' tables)"),
    "get_open_txns_info": admin("listing every open transaction with its user and host"),
    "show_compact": admin("listing every compaction (they name other users' tables)"),
    # --- fb303 ---------------------------------------------------------------------------
    "getName": H, "getVersion": H, "getStatus": H, "getStatusDetails": H, "getCounters": H,
    "getCounter": H, "getOption": H, "getOptions": H, "aliveSince": H,
    "shutdown": H,  # per-connection cleanup that every client sends before closing
    "setOption": admin("setting server options"),
    "getCpuProfile": admin("profiling the server"),
    "reinitialize": admin("reinitializing the server"),
    # --- table metadata reads: SELECT --------------------------------------------------
    "get_table": read("dbname", "tbl_name"),
    "get_table_req": read("req.dbName", "req.tblName"),
    "get_fields": read("db_name", "table_name"),
    "get_fields_with_environment_context": read("db_name", "table_name"),
    "get_fields_req": read("req.dbName", "req.tblName"),
    "get_schema": read("db_name", "table_name"),
    "get_schema_with_environment_context": read("db_name", "table_name"),
    "get_schema_req": read("req.dbName", "req.tblName"),
    "get_partition": read("db_name", "tbl_name"),
    "get_partition_req": read("req.dbName", "req.tblName"),
    "get_partition_by_name": read("db_name", "tbl_name"),
    "get_partition_with_auth": read("db_name", "tbl_name"),
    "get_partitions": read("db_name", "tbl_name"),
    "get_partitions_req": read("req.dbName", "req.tblName"),
    "get_partitions_with_auth": read("db_name", "tbl_name"),
    "get_partitions_pspec": read("db_name", "tbl_name"),
    "get_partition_names": read("db_name", "tbl_name"),
    "get_partition_names_req": read("req.dbName", "req.tblName"),
    "fetch_partition_names_req": read("partitionReq.dbName", "partitionReq.tblName"),
    "get_partition_values": read("request.dbName", "request.tblName"),
    "get_partitions_ps": read("db_name", "tbl_name"),
    "get_partitions_ps_with_auth": read("db_name", "tbl_name"),
    "get_partitions_ps_with_auth_req": read("req.dbName", "req.tblName"),
    "get_partition_names_ps": read("db_name", "tbl_name"),
    "get_partition_names_ps_req": read("req.dbName", "req.tblName"),
    "get_partitions_by_filter": read("db_name", "tbl_name"),
    "get_partitions_by_filter_req": read("req.dbName", "req.tblName"),
    "get_part_specs_by_filter": read("db_name", "tbl_name"),
    "get_partitions_by_expr": read("req.dbName", "req.tblName"),
    "get_partitions_spec_by_expr": read("req.dbName", "req.tblName"),
    "get_num_partitions_by_filter": read("db_name", "tbl_name"),
    "get_partitions_by_names": read("db_name", "tbl_name"),
    "get_partitions_by_names_req": read("req.db_name", "req.tbl_name"),
    "get_partitions_with_specs": read("request.dbName", "request.tblName"),
    "get_table_column_statistics": read("db_name", "tbl_name"),
    "get_partition_column_statistics": read("db_name", "tbl_name"),
    "get_table_statistics_req": read("request.dbName", "request.tblName"),
    "get_partitions_statistics_req": read("request.dbName", "request.tblName"),
    "get_aggr_stats_for": read("request.dbName", "request.tblName"),
    "get_primary_keys": read("request.db_name", "request.tbl_name"),
    "get_foreign_keys": read("request.foreign_db_name", "request.foreign_tbl_name"),
    "get_unique_constraints": read("request.db_name", "request.tbl_name"),
    "get_not_null_constraints": read("request.db_name", "request.tbl_name"),
    "get_default_constraints": read("request.db_name", "request.tbl_name"),
    "get_check_constraints": read("request.db_name", "request.tbl_name"),
    "get_all_table_constraints": read("request.dbName", "request.tblName"),
    "get_index_by_name": read("db_name", "tbl_name"),
    "get_indexes": read("db_name", "tbl_name"),
    "get_index_names": read("db_name", "tbl_name"),
    "isPartitionMarkedForEvent": read("db_name", "tbl_name"),
    "get_materialization_invalidation_info": read("creation_metadata.dbName", "creation_metadata.tblName"),
    "get_valid_write_ids": H,  # transaction bookkeeping
    "translate_table_dryrun": H,  # translates the caller's own table object, reads nothing
    "get_file_metadata": admin("reading the file metadata cache"),
    "get_file_metadata_by_expr": admin("reading the file metadata cache"),
    "get_tables_ext": admin("extended table listing (not filtered by hms-guard yet)"),
    # --- listings: filtered ------------------------------------------------------------------
    "get_tables": listing("db_name", "Names"),
    "get_tables_by_type": listing("db_name", "Names"),
    "get_all_tables": listing("db_name", "Names"),
    "get_table_names_by_filter": listing("dbname", "Names"),
    "get_materialized_views_for_rewriting": listing("db_name", "Names"),
    "get_table_meta": listing(None, "Metas"),
    "get_table_objects_by_name": listing("dbname", "Tables"),
    "get_table_objects_by_name_req": listing("req.dbName", "TablesInResult"),
    "get_all_materialized_view_objects_for_rewriting": listing(None, "Tables"),
    # --- table DDL -----------------------------------------------------------------------
    "create_table": create("tbl"),
    "create_table_with_environment_context": create("tbl"),
    "create_table_with_constraints": create("tbl"),
    "create_table_req": create("request.table"),
    "alter_table": alter("dbname", "tbl_name", "new_tbl"),
    "alter_table_with_environment_context": alter("dbname", "tbl_name", "new_tbl"),
    "alter_table_with_cascade": alter("dbname", "tbl_name", "new_tbl"),
    "alter_table_req": alter("req.dbName", "req.tableName", "req.table"),
    "drop_table": drop("dbname", "name"),
    "drop_table_with_environment_context": drop("dbname", "name"),
    "drop_table_req": drop("dropTableReq.dbName", "dropTableReq.tableName"),
    "truncate_table": trunc("dbName", "tableName"),
    "truncate_table_req": trunc("req.dbName", "req.tableName"),
    "update_creation_metadata": owner(("dbname", "tbl_name")),
    # --- partitions ----------------------------------------------------------------------
    "add_partition": addp("new_part.dbName", "new_part.tableName", "new_part.sd.location"),
    "add_partition_with_environment_context": addp("new_part.dbName", "new_part.tableName", "new_part.sd.location"),
    "add_partitions": addp("new_parts[].dbName", "new_parts[].tableName", "new_parts[].sd.location"),
    "add_partitions_pspec": addp("new_parts[].dbName", "new_parts[].tableName", "new_parts[].rootPath", "new_parts[].sharedSDPartitionSpec.sd.location", "new_parts[].partitionList.partitions[].sd.location", shared="new_parts[].sharedSDPartitionSpec"),
    "add_partitions_req": addp("request.dbName", "request.tblName", "request.parts[].sd.location"),
    "append_partition": addp("db_name", "tbl_name"),
    "append_partition_with_environment_context": addp("db_name", "tbl_name"),
    "append_partition_by_name": addp("db_name", "tbl_name"),
    "append_partition_by_name_with_environment_context": addp("db_name", "tbl_name"),
    "append_partition_req": addp("appendPartitionsReq.dbName", "appendPartitionsReq.tableName"),
    "add_dynamic_partitions": addp("rqst.dbname", "rqst.tablename"),
    # A write event lists the files written; replication later copies them from where they
    # are named, so files outside the table's location are locations like any other.
    "add_write_notification_log": addp("rqst.db", "rqst.table", "rqst.fileInfo.filesAdded[]"),
    # The batch form names a table once outside and again in each request (the events are
    # recorded under the inner names): not expressible as one table's INSERT.
    "add_write_notification_log_in_batch": admin("recording write events of several requests at once"),
    "alter_partition": altp("db_name", "tbl_name", False, "new_part.sd.location"),
    "alter_partition_with_environment_context": altp("db_name", "tbl_name", False, "new_part.sd.location"),
    "alter_partitions": altp("db_name", "tbl_name", False, "new_parts[].sd.location"),
    "alter_partitions_with_environment_context": altp("db_name", "tbl_name", False, "new_parts[].sd.location"),
    "alter_partitions_req": altp("req.dbName", "req.tableName", False, "req.partitions[].sd.location"),
    "rename_partition": altp("db_name", "tbl_name", False, "new_part.sd.location"),
    "rename_partition_req": altp("req.dbName", "req.tableName", False, "req.newPart.sd.location"),
    "markPartitionForEvent": altp("db_name", "tbl_name", False),
    "compact": altp("rqst.dbname", "rqst.tablename", False),
    "compact2": altp("rqst.dbname", "rqst.tablename", False),
    "update_table_column_statistics": altp("stats_obj.statsDesc.dbName", "stats_obj.statsDesc.tableName", True),
    "update_partition_column_statistics": altp("stats_obj.statsDesc.dbName", "stats_obj.statsDesc.tableName", True),
    "update_table_column_statistics_req": altp("req.colStats[].statsDesc.dbName", "req.colStats[].statsDesc.tableName", True),
    "update_partition_column_statistics_req": altp("req.colStats[].statsDesc.dbName", "req.colStats[].statsDesc.tableName", True),
    "set_aggr_stats_for": altp("request.colStats[].statsDesc.dbName", "request.colStats[].statsDesc.tableName", True),
    "delete_partition_column_statistics": altp("db_name", "tbl_name", True),
    "delete_table_column_statistics": altp("db_name", "tbl_name", True),
    "delete_column_statistics_req": altp("req.db_name", "req.tbl_name", True),
    "update_transaction_statistics": admin("updating statistics by table id"),
    "drop_partition": dropp("db_name", "tbl_name"),
    "drop_partition_with_environment_context": dropp("db_name", "tbl_name"),
    "drop_partition_by_name": dropp("db_name", "tbl_name"),
    "drop_partition_by_name_with_environment_context": dropp("db_name", "tbl_name"),
    "drop_partitions_req": dropp("req.dbName", "req.tblName"),
    "drop_partition_req": dropp("dropPartitionReq.dbName", "dropPartitionReq.tblName"),
    "exchange_partition": owner(("source_db", "source_table_name"), ("dest_db", "dest_table_name")),
    "exchange_partitions": owner(("source_db", "source_table_name"), ("dest_db", "dest_table_name")),
    # --- constraints and indexes: owner of every table -------------------------------------
    "add_primary_key": owner(("req.primaryKeyCols[].table_db", "req.primaryKeyCols[].table_name")),
    "add_foreign_key": owner(("req.foreignKeyCols[].fktable_db", "req.foreignKeyCols[].fktable_name"),
                             ("req.foreignKeyCols[].pktable_db", "req.foreignKeyCols[].pktable_name")),
    "add_unique_constraint": owner(("req.uniqueConstraintCols[].table_db", "req.uniqueConstraintCols[].table_name")),
    "add_not_null_constraint": owner(("req.notNullConstraintCols[].table_db", "req.notNullConstraintCols[].table_name")),
    "add_default_constraint": owner(("req.defaultConstraintCols[].table_db", "req.defaultConstraintCols[].table_name")),
    "add_check_constraint": owner(("req.checkConstraintCols[].table_db", "req.checkConstraintCols[].table_name")),
    "drop_constraint": owner(("req.dbname", "req.tablename")),
    # An index carries the table the metastore creates for it (decided as that table's
    # create) and names the table a drop of the index drops (decided as that table's drop).
    # alter_index changes the index's parameters only (Hive 2.3 ObjectStore.alterIndex).
    "add_index": ("AddIndex", "new_index", "index_table"),
    "alter_index": owner(("dbname", "base_tbl_name")),
    "drop_index_by_name": ("DropIndex", "db_name", "tbl_name", "index_name"),
    "cache_file_metadata": admin("caching file metadata"),
    "clear_file_metadata": admin("clearing file metadata"),
    "put_file_metadata": admin("writing file metadata"),
    "set_properties": admin("writing metastore properties"),
    "get_properties": admin("reading metastore properties"),
    # --- databases and catalogs ------------------------------------------------------------
    "get_all_databases": listing(None, "DbNames"), "get_databases": listing(None, "DbNames"),
    "get_databases_req": listing(None, "Databases"),
    "get_database": ("ReadDatabase", "name"), "get_database_req": ("ReadDatabase", "request.name"),
    "get_catalogs": H, "get_catalog": H, "get_dataconnectors": H,
    "get_dataconnector_req": admin("reading a data connector (it may hold credentials)"),
    "create_database": ("CreateDatabase", "database"),
    "create_database_req": ("CreateDatabase", "createDatabaseRequest"),
    "alter_database": ("AlterDatabase", "dbname", "db"),
    "alter_database_req": ("AlterDatabase", "alterDbReq.oldDbName", "alterDbReq.newDb"),
    "drop_database": ("DropDatabase", "name"),
    "drop_database_req": ("DropDatabase", "req.name"),
    "create_catalog": admin("catalog DDL"), "alter_catalog": admin("catalog DDL"),
    "drop_catalog": admin("catalog DDL"),
    "create_dataconnector": admin("data connector DDL"), "create_dataconnector_req": admin("data connector DDL"),
    "alter_dataconnector": admin("data connector DDL"), "alter_dataconnector_req": admin("data connector DDL"),
    "drop_dataconnector": admin("data connector DDL"), "drop_dataconnector_req": admin("data connector DDL"),
    # --- roles and grants ----------------------------------------------------------------
    "create_role": admin("creating a role"),
    "drop_role": admin("dropping a role"),
    "get_role_names": admin("listing every role"),
    "get_principals_in_role": admin("listing a role's members"),
    # Grantors are set to the caller; a revoke needs the grantor recorded at the metastore.
    "grant_role": ("GrantRole", "role_name", ("grantor", "grantorType")),
    "revoke_role": ("GrantRole", "role_name", None),
    "grant_revoke_role": ("GrantRole", "request.roleName", ("request.grantor", "request.grantorType")),
    "grant_privileges": ("GrantPrivileges", "privileges", "Grant"),
    "revoke_privileges": ("GrantPrivileges", "privileges", "Revoke"),
    "grant_revoke_privileges": ("GrantPrivileges", "request.privileges", "request.requestType"),
    "refresh_privileges": admin("refreshing privileges"),
    "get_privilege_set": grants_read("user_name", None, "group_names"),
    "list_privileges": grants_read("principal_name", "principal_type"),
    "list_roles": grants_read("principal_name", "principal_type"),
    "get_role_grants_for_principal": grants_read("request.principal_name", "request.principal_type"),
}
CHANGES_GRANTS = {"create_role", "drop_role", "grant_role", "revoke_role", "grant_revoke_role",
                  "grant_privileges", "revoke_privileges", "grant_revoke_privileges",
                  "refresh_privileges", "create_table", "create_table_with_environment_context",
                  "create_table_with_constraints", "create_table_req", "drop_table",
                  "drop_table_with_environment_context", "drop_table_req", "alter_table",
                  "alter_table_with_environment_context", "alter_table_with_cascade",
                  "alter_table_req", "drop_database", "drop_database_req",
                  # an index table is created (with the grants it carries) or dropped
                  "add_index", "drop_index_by_name"}

# Group defaults for methods not named above (all decided explicitly, by group).
# Calls on transactions and locks that must be the caller's (the metastore records who opened a
# transaction and who took a lock).
TXN_OF_CALLER = {
    "commit_txn": {"txns": ["rqst.txnid"]},
    "abort_txn": {"txns": ["rqst.txnid"]},
    "abort_txns": {"txns": ["rqst.txn_ids[]"]},
    "heartbeat": {"txns": ["ids.txnid"], "locks": ["ids.lockid"]},
    "heartbeat_txn_range": {"rng": ("txns.min", "txns.max")},
    "check_lock": {"txns": ["rqst.txnid"], "locks": ["rqst.lockid"]},
    "unlock": {"locks": ["rqst.lockid"]},
    "allocate_table_write_ids": {"txns": ["rqst.txnIds[]"]},
}
TXN_HARMLESS = {"abort_txn", "abort_txns", "commit_txn", "open_txns", "heartbeat",
                "heartbeat_txn_range", "lock", "check_lock", "unlock",
                "get_open_txns", "get_open_txns_req",
                "allocate_table_write_ids", "get_latest_txnid_in_conflict",
                "get_max_allocated_table_write_id", "add_write_ids_to_min_history",
                "get_lock_materialization_rebuild", "heartbeat_lock_materialization_rebuild",
                }
READ_HARMLESS = {"get_function", "get_functions", "get_functions_req", "get_all_functions", "get_type", "get_type_all",
                 "get_active_resource_plan", "get_all_resource_plans", "get_resource_plan",
                 "get_triggers_for_resourceplan", "validate_resource_plan", "get_ischema",
                 "get_schema_all_versions", "get_schema_latest_version", "get_schema_version",
                 "get_schemas_by_cols", "get_serde", "get_runtime_stats",
                 "get_replication_metrics", "get_stored_procedure", "get_all_stored_procedures",
                 "find_package", "get_all_packages"}
NOTIFICATIONS = {"get_next_notification", "get_current_notificationEventId",
                 "get_notification_events_count", "fire_listener_event",
                 "get_all_write_event_info", "cm_recycle"}


def default_rule(name, group):
    if name in RULES:
        return RULES[name]
    if group == "D2_tokens":
        return TOK
    if name == "lock":
        return lock("rqst.component", "rqst.user", "rqst.txnid")
    if name == "open_txns":
        return txn("rqst.user")
    if name in TXN_OF_CALLER:
        return txn(**TXN_OF_CALLER[name])
    if name in TXN_HARMLESS:
        return txn()
    if name in READ_HARMLESS:
        return H
    if name in NOTIFICATIONS:
        return admin("the notification log (it exposes every table's metadata)")
    if group == "F_other":
        return admin(f"{name.replace('_', ' ')}")
    raise SystemExit(f"no rule for {name} ({group}): decide it in RULES")


# ---------------------------------------------------------------------------------------------
def load_schema():
    """The merged schema of every recorded metastore version (idl/gen_schema.py)."""
    sys.path.insert(0, str(ROOT / "idl"))
    import gen_schema  # noqa: E402  (the IDL parser lives next to this script)
    try:
        _versions, _enums, structs, args, results, methods = gen_schema.load_all()
    except gen_schema.IdlError as e:
        raise SystemExit(f"gen_method_table: {e}")
    return structs, args, results, methods


def field_named(what, s, name, label):
    """(id, type) of the field of merged struct `s` called `name` in version `label`."""
    hits = [(fid, t) for fid, f in s.fields.items()
            for lb, n, t, _ in f.by_version if lb == label and n == name]
    if not hits:
        names = sorted({n for f in s.fields.values() for lb, n, _, _ in f.by_version
                        if lb == label})
        raise SystemExit(f"{what}: no field {name!r} in Hive {label} (fields: {names})")
    return hits[0]


def resolve(method, schema, sym, label):
    """Field ids of symbolic path `sym` in the args of `method` as Hive `label` declares them."""
    if sym is None:
        return None
    structs, args, _results, _methods = schema
    cur, what, ids = args[method], f"{method}_args", []
    steps = sym.split(".")
    for i, step in enumerate(steps):
        each = step.endswith("[]")
        step = step.rstrip("[]")
        fid, ty = field_named(f"{method}: {what}", cur, step, label)
        ids.append(fid)
        what = f"{what}.{step}"
        if each:
            if ty[0] not in ("list", "set"):
                raise SystemExit(f"{method}: {what} is not a list")
            ids.append("EACH")
            ty = ty[1]
        if i < len(steps) - 1:
            if ty[0] != "struct":
                raise SystemExit(f"{method}: {what} is not a struct")
            cur = structs[ty[1]]
    return ids


def path_rs(ids):
    if ids is None:
        return "None"
    return "&[" + ", ".join(str(i) for i in ids) + "]"


def rule_rs(method, rule, schema, label):
    kind = rule[0]
    r = lambda s: path_rs(resolve(method, schema, s, label))
    if kind in ("Harmless", "SetUgi", "Tokens"):
        return f"Rule::{kind}"
    if kind == "Txn":
        user = "None" if rule[1] is None else f"Some({r(rule[1])})"
        txns = "&[" + ", ".join(r(x) for x in rule[2]) + "]"
        locks = "&[" + ", ".join(r(x) for x in rule[3]) + "]"
        rng = "None" if rule[4] is None else f"Some(({r(rule[4][0])}, {r(rule[4][1])}))"
        return f"Rule::Txn {{ user: {user}, txns: {txns}, locks: {locks}, range: {rng} }}"
    if kind == "Lock":
        return (f"Rule::Lock {{ components: {r(rule[1])}, user: {r(rule[2])}, "
                f"txn: {r(rule[3])} }}")
    if kind == "AdminOnly":
        return f'Rule::AdminOnly("{rule[1]}")'
    locs = lambda ls: "&[" + ", ".join(r(x) for x in ls) + "]"
    if kind == "AddPartitions":
        shared = "&[]" if rule[4] is None else r(rule[4])
        return (f"Rule::AddPartitions {{ db: {r(rule[1])}, table: {r(rule[2])}, "
                f"locations: {locs(rule[3])}, shared_sd: {shared} }}")
    if kind in ("ReadTable", "DropTable", "TruncateTable", "DropPartitions"):
        return f"Rule::{kind} {{ db: {r(rule[1])}, table: {r(rule[2])} }}"
    if kind == "Listing":
        db = "None" if rule[1] is None else f"Some({r(rule[1])})"
        return f"Rule::Listing {{ db: {db}, shape: ListShape::{rule[2]} }}"
    if kind == "CreateTable":
        return f"Rule::CreateTable {{ table: {r(rule[1])} }}"
    if kind == "AlterTable":
        return f"Rule::AlterTable {{ db: {r(rule[1])}, table: {r(rule[2])}, new_table: {r(rule[3])} }}"
    if kind == "AlterPartitions":
        return f"Rule::AlterPartitions {{ db: {r(rule[1])}, table: {r(rule[2])}, stats_only: {'true' if rule[3] else 'false'}, locations: {locs(rule[4])} }}"
    if kind == "OwnerOfTables":
        pairs = ", ".join(f"({r(d)}, {r(t)})" for d, t in rule[1:])
        return f"Rule::OwnerOfTables {{ tables: &[{pairs}] }}"
    if kind == "ReadDatabase":
        return f"Rule::ReadDatabase {{ name: {r(rule[1])} }}"
    if kind == "CreateDatabase":
        return f"Rule::CreateDatabase {{ database: {r(rule[1])} }}"
    if kind == "AlterDatabase":
        return f"Rule::AlterDatabase {{ name: {r(rule[1])}, new_database: {r(rule[2])} }}"
    if kind == "DropDatabase":
        return f"Rule::DropDatabase {{ name: {r(rule[1])} }}"
    if kind == "GrantRole":
        grantor = "None" if rule[2] is None else f"Some(({r(rule[2][0])}, {r(rule[2][1])}))"
        return f"Rule::GrantRole {{ role: {r(rule[1])}, grantor: {grantor} }}"
    if kind == "GrantPrivileges":
        gk = rule[2] if rule[2] in ("Grant", "Revoke") else f"ByRequest({r(rule[2])})"
        return f"Rule::GrantPrivileges {{ bag: {r(rule[1])}, kind: GrantKind::{gk} }}"
    if kind == "AddIndex":
        return f"Rule::AddIndex {{ index: {r(rule[1])}, table: {r(rule[2])} }}"
    if kind == "DropIndex":
        return f"Rule::DropIndex {{ db: {r(rule[1])}, table: {r(rule[2])}, index: {r(rule[3])} }}"
    if kind == "ReadGrants":
        kindp = "None" if rule[2] is None else f"Some({r(rule[2])})"
        groups = "None" if rule[3] is None else f"Some({r(rule[3])})"
        return f"Rule::ReadGrants {{ name: {r(rule[1])}, kind: {kindp}, groups: {groups} }}"
    raise SystemExit(f"{method}: unknown rule {kind}")


BITS = {"2.3": "V2_3", "3.1": "V3_1", "4.0": "V4_0", "4.x": "V4_X", "fb303": "FB303"}


def rules_by_version(name, rule, schema):
    """[(versions, rule)]: the rule as each version that declares the method lays out its args.
    One entry for every version when they agree. Where the names a rule reads sit at different
    field ids in different versions, one entry per layout, and one (versions 0) for a proxy
    configured for several versions at once: no one reading is right for all of them, so it is
    admin only."""
    labels = [lb for lb in schema[3][name]["versions"]]
    groups = {}
    for lb in labels:
        groups.setdefault(rule_rs(name, rule, schema, lb), []).append(lb)
    if len(groups) == 1:
        return [("ALL_VERSIONS", next(iter(groups)))]
    out = [(" | ".join(BITS[lb] for lb in lbs), r) for r, lbs in groups.items()]
    why = f"{name} (its request layout differs between Hive versions: set upstream.metastore_version)"
    out.append(("0", rule_rs(name, admin(why), schema, labels[0])))
    return sorted(out, key=lambda e: e[0] == "0")


CLASS = {"A_read": "TableRead", "B_mut": "TableMutation", "C_db": "Database", "D_authz": "Authz",
         "D2_tokens": "Tokens", "E_session": "Session", "F_other": "Other"}


def main():
    groups = {}
    for line in (ROOT / "idl/hms-methods.tsv").read_text().splitlines():
        if line.startswith("#") or line.startswith("method\t") or not line.strip():
            continue
        name, group, _ = line.split("\t")
        groups[name] = group
    for f in FB303:
        groups[f] = "fb303"
    schema = load_schema()
    _structs, _args, results, methods = schema
    unused = set(RULES) - set(groups)
    if unused:
        raise SystemExit(f"RULES name unknown methods: {sorted(unused)}")
    rows = []
    for name in sorted(groups, key=lambda n: n.encode()):
        group = groups[name]
        if name not in methods:
            raise SystemExit(f"{name}: declared by none of the IDL files in idl/thrift/")
        rule = default_rule(name, group)
        oneway = any(methods[name]["oneway"].values())
        # Where the oldest version declaring the method puts its MetaException (Hive 4 moved it
        # in a few methods; a newer client reads the older slot as its exception of that id,
        # which carries the message in the same field).
        oldest = methods[name]["versions"][0]
        meta = sorted(fid for fid, f in results[name].fields.items() if fid != 0 and any(
            lb == oldest and t == ("struct", "MetaException") for lb, _, t, _ in f.by_version))
        meta_rs = f"Some({meta[0]})" if meta else "None"
        cls = "Fb303" if group == "fb303" else CLASS[group]
        for versions, rule_text in rules_by_version(name, rule, schema):
            rows.append(
                f'    Method {{ name: "{name}", versions: {versions}, class: Class::{cls}, '
                f"oneway: {str(oneway).lower()}, rule: {rule_text}, meta_exception: {meta_rs}, "
                f"changes_grants: {str(name in CHANGES_GRANTS).lower()} }},")
    out = [
        "//! The method table: every ThriftHiveMetastore and fb303 method the proxy knows, as data.",
        "//!",
        "//! GENERATED by `idl/gen_method_table.py` from `idl/hms-methods.tsv` (the method list),",
        "//! the metastore IDL in `idl/thrift/` (field ids, oneway, exceptions) and the rules in",
        "//! that script. Do not edit by hand: change the script and run it. Sorted by name.",
        "",
        "use super::{Class, GrantKind, ListShape, Method, Rule, EACH};",
        "use crate::wire::schema::types::{ALL_VERSIONS, V2_3, V3_1, V4_0, V4_X};",
        "",
        "/// Every known method, sorted by name; a method whose rule reads different field ids in",
        "/// different versions has one entry per layout, then one for several versions at once.",
        "#[rustfmt::skip]",
        "pub static METHODS: &[Method] = &[",
        *rows,
        "];",
        "",
    ]
    text = "\n".join(out)
    target = ROOT / "src/wire/router/methods.rs"
    if "--check" in sys.argv[1:]:
        if target.read_text() != text:
            raise SystemExit("src/wire/router/methods.rs is not what idl/gen_method_table.py writes: "
                             "run python3 idl/gen_method_table.py")
        print("src/wire/router/methods.rs is up to date")
        return
    target.write_text(text)
    print(f"wrote {len(rows)} entries")


if __name__ == "__main__":
    main()
