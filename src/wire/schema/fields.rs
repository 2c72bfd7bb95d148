//! The Thrift field ids of the metastore's structs that hms-guard reads or writes, by name: one
//! module per struct (or method's args), one constant per field, the Thrift name in its doc.
//! The ids are the IDL's (`idl/thrift/`, as `generated.rs` records them); the test below checks
//! each constant against `generated.rs`, so a wrong one fails.

/// `Table`: a table as the metastore stores it.
pub mod table {
    /// `tableName`
    pub const TABLE_NAME: i16 = 1;
    /// `dbName`
    pub const DB_NAME: i16 = 2;
    /// `owner`
    pub const OWNER: i16 = 3;
    /// `createTime`
    pub const CREATE_TIME: i16 = 4;
    /// `lastAccessTime`
    pub const LAST_ACCESS_TIME: i16 = 5;
    /// `retention`
    pub const RETENTION: i16 = 6;
    /// `sd`
    pub const SD: i16 = 7;
    /// `partitionKeys`
    pub const PARTITION_KEYS: i16 = 8;
    /// `parameters`
    pub const PARAMETERS: i16 = 9;
    /// `viewOriginalText`
    pub const VIEW_ORIGINAL_TEXT: i16 = 10;
    /// `viewExpandedText`
    pub const VIEW_EXPANDED_TEXT: i16 = 11;
    /// `tableType`
    pub const TABLE_TYPE: i16 = 12;
    /// `privileges`
    pub const PRIVILEGES: i16 = 13;
    /// `temporary`
    pub const TEMPORARY: i16 = 14;
    /// `rewriteEnabled`
    pub const REWRITE_ENABLED: i16 = 15;
    /// `creationMetadata`
    pub const CREATION_METADATA: i16 = 16;
    /// `catName`
    pub const CAT_NAME: i16 = 17;
    /// `ownerType`
    pub const OWNER_TYPE: i16 = 18;
    /// `writeId`
    pub const WRITE_ID: i16 = 19;
    /// `isStatsCompliant`
    pub const IS_STATS_COMPLIANT: i16 = 20;
    /// `colStats`
    pub const COL_STATS: i16 = 21;
    /// `accessType`
    pub const ACCESS_TYPE: i16 = 22;
    /// `requiredReadCapabilities`
    pub const REQUIRED_READ_CAPABILITIES: i16 = 23;
    /// `requiredWriteCapabilities`
    pub const REQUIRED_WRITE_CAPABILITIES: i16 = 24;
    /// `id`
    pub const ID: i16 = 25;
    /// `fileMetadata`
    pub const FILE_METADATA: i16 = 26;
    /// `dictionary`
    pub const DICTIONARY: i16 = 27;
    /// `txnId`
    pub const TXN_ID: i16 = 28;
}

/// `StorageDescriptor`: where and how a table's or partition's data is stored.
pub mod storage_descriptor {
    /// `cols`
    pub const COLS: i16 = 1;
    /// `location`
    pub const LOCATION: i16 = 2;
    /// `inputFormat`
    pub const INPUT_FORMAT: i16 = 3;
    /// `serdeInfo`
    pub const SERDE_INFO: i16 = 7;
    /// `bucketCols`
    pub const BUCKET_COLS: i16 = 8;
    /// `sortCols`
    pub const SORT_COLS: i16 = 9;
    /// `parameters`
    pub const PARAMETERS: i16 = 10;
    /// `skewedInfo`
    pub const SKEWED_INFO: i16 = 11;
}

/// `FieldSchema`: one column.
pub mod field_schema {
    /// `name`
    pub const NAME: i16 = 1;
    /// `type`
    pub const TYPE: i16 = 2;
}

/// `Order`: a sort column.
pub mod order {
    /// `col`
    pub const COL: i16 = 1;
}

/// `SkewedInfo`: skewed columns.
pub mod skewed_info {
    /// `skewedColNames`
    pub const SKEWED_COL_NAMES: i16 = 1;
}

/// `SerDeInfo`: a storage descriptor's serializer (its `parameters` may carry Spark's `path`).
pub mod serde_info {
    /// `name`
    pub const NAME: i16 = 1;
    /// `serializationLib`
    pub const SERIALIZATION_LIB: i16 = 2;
    /// `parameters`
    pub const PARAMETERS: i16 = 3;
}

/// `Partition`.
pub mod partition {
    /// `values`
    pub const VALUES: i16 = 1;
    /// `dbName`
    pub const DB_NAME: i16 = 2;
    /// `tableName`
    pub const TABLE_NAME: i16 = 3;
    /// `sd`
    pub const SD: i16 = 6;
    /// `parameters`
    pub const PARAMETERS: i16 = 7;
}

/// `PartitionSpecWithSharedSD`: partitions sharing one storage descriptor.
pub mod partition_spec_with_shared_sd {
    /// `partitions`
    pub const PARTITIONS: i16 = 1;
    /// `sd`
    pub const SD: i16 = 2;
}

/// `PartitionWithoutSD`: a partition of a `PartitionSpecWithSharedSD`.
pub mod partition_without_sd {
    /// `values`
    pub const VALUES: i16 = 1;
    /// `createTime`
    pub const CREATE_TIME: i16 = 2;
    /// `lastAccessTime`
    pub const LAST_ACCESS_TIME: i16 = 3;
    /// `relativePath`
    pub const RELATIVE_PATH: i16 = 4;
    /// `parameters`
    pub const PARAMETERS: i16 = 5;
    /// `privileges`
    pub const PRIVILEGES: i16 = 6;
}

/// `Database` (and `CreateDatabaseRequest`, Hive 4, whose ids for these fields are the same).
pub mod database {
    /// `name`
    pub const NAME: i16 = 1;
    /// `description`
    pub const DESCRIPTION: i16 = 2;
    /// `locationUri`
    pub const LOCATION_URI: i16 = 3;
    /// `parameters`
    pub const PARAMETERS: i16 = 4;
    /// `ownerName`
    pub const OWNER_NAME: i16 = 6;
    /// `ownerType`
    pub const OWNER_TYPE: i16 = 7;
    /// `catalogName`
    pub const CATALOG_NAME: i16 = 8;
    /// `managedLocationUri`
    pub const MANAGED_LOCATION_URI: i16 = 10;
}

/// `PrivilegeBag`: the privileges a grant or revoke names.
pub mod privilege_bag {
    /// `privileges`
    pub const PRIVILEGES: i16 = 1;
}

/// `HiveObjectPrivilege`: one privilege of one principal on one object.
pub mod hive_object_privilege {
    /// `hiveObject`
    pub const HIVE_OBJECT: i16 = 1;
    /// `principalName`
    pub const PRINCIPAL_NAME: i16 = 2;
    /// `principalType`
    pub const PRINCIPAL_TYPE: i16 = 3;
    /// `grantInfo`
    pub const GRANT_INFO: i16 = 4;
    /// `authorizer`
    pub const AUTHORIZER: i16 = 5;
}

/// `HiveObjectRef`: the object a grant is attached to.
pub mod hive_object_ref {
    /// `objectType`
    pub const OBJECT_TYPE: i16 = 1;
    /// `dbName`
    pub const DB_NAME: i16 = 2;
    /// `objectName`
    pub const OBJECT_NAME: i16 = 3;
    /// `partValues`
    pub const PART_VALUES: i16 = 4;
    /// `columnName`
    pub const COLUMN_NAME: i16 = 5;
    /// `catName`
    pub const CAT_NAME: i16 = 6;
}

/// `PrivilegeGrantInfo`: a granted privilege, its grantor and grant option.
pub mod privilege_grant_info {
    /// `privilege`
    pub const PRIVILEGE: i16 = 1;
    /// `createTime`
    pub const CREATE_TIME: i16 = 2;
    /// `grantor`
    pub const GRANTOR: i16 = 3;
    /// `grantorType`
    pub const GRANTOR_TYPE: i16 = 4;
    /// `grantOption`
    pub const GRANT_OPTION: i16 = 5;
}

/// `TableMeta`: one element of a `get_table_meta` listing.
pub mod table_meta {
    /// `dbName`
    pub const DB_NAME: i16 = 1;
    /// `tableName`
    pub const TABLE_NAME: i16 = 2;
}

/// `PrincipalPrivilegeSet`: grants by grantee kind (each a map from the grantee to its
/// `PrivilegeGrantInfo`s).
pub mod principal_privilege_set {
    /// `userPrivileges`
    pub const USER_PRIVILEGES: i16 = 1;
    /// `groupPrivileges`
    pub const GROUP_PRIVILEGES: i16 = 2;
    /// `rolePrivileges`
    pub const ROLE_PRIVILEGES: i16 = 3;
}

/// `LockRequest`.
pub mod lock_request {
    /// `component`
    pub const COMPONENT: i16 = 1;
    /// `txnid`
    pub const TXNID: i16 = 2;
    /// `user`
    pub const USER: i16 = 3;
    /// `hostname`
    pub const HOSTNAME: i16 = 4;
}

/// `LockComponent`: one object a lock request locks.
pub mod lock_component {
    /// `type`
    pub const TYPE: i16 = 1;
    /// `level`
    pub const LEVEL: i16 = 2;
    /// `dbname`
    pub const DBNAME: i16 = 3;
    /// `tablename`
    pub const TABLENAME: i16 = 4;
    /// `partitionname`
    pub const PARTITIONNAME: i16 = 5;
}

/// `Index` (Hive 2).
pub mod index {
    /// `indexName`
    pub const INDEX_NAME: i16 = 1;
    /// `dbName`
    pub const DB_NAME: i16 = 3;
    /// `origTableName`
    pub const ORIG_TABLE_NAME: i16 = 4;
    /// `indexTableName`
    pub const INDEX_TABLE_NAME: i16 = 7;
    /// `sd`
    pub const SD: i16 = 8;
}

/// `RolePrincipalGrant`: one role granted to a principal.
pub mod role_principal_grant {
    /// `roleName`
    pub const ROLE_NAME: i16 = 1;
    /// `principalName`
    pub const PRINCIPAL_NAME: i16 = 2;
    /// `principalType`
    pub const PRINCIPAL_TYPE: i16 = 3;
    /// `grantOption`
    pub const GRANT_OPTION: i16 = 4;
}

/// `GetRoleGrantsForPrincipalRequest`.
pub mod get_role_grants_for_principal_request {
    /// `principal_name`
    pub const PRINCIPAL_NAME: i16 = 1;
    /// `principal_type`
    pub const PRINCIPAL_TYPE: i16 = 2;
}

/// `GetRoleGrantsForPrincipalResponse`.
pub mod get_role_grants_for_principal_response {
    /// `principalGrants`
    pub const PRINCIPAL_GRANTS: i16 = 1;
}

/// `GetOpenTxnsInfoResponse`.
pub mod get_open_txns_info_response {
    /// `txn_high_water_mark`
    pub const TXN_HIGH_WATER_MARK: i16 = 1;
    /// `open_txns`
    pub const OPEN_TXNS: i16 = 2;
}

/// `TxnInfo`: one open or aborted transaction.
pub mod txn_info {
    /// `id`
    pub const ID: i16 = 1;
    /// `state`
    pub const STATE: i16 = 2;
    /// `user`
    pub const USER: i16 = 3;
}

/// `ShowLocksResponse`.
pub mod show_locks_response {
    /// `locks`
    pub const LOCKS: i16 = 1;
}

/// `ShowLocksResponseElement`: one lock component held or waited on.
pub mod show_locks_response_element {
    /// `lockid`
    pub const LOCKID: i16 = 1;
    /// `user`
    pub const USER: i16 = 10;
}

/// Every method's result struct (`<method>_result`): the returned value; the exceptions the
/// method declares have ids from 1.
pub mod method_result {
    /// `success`
    pub const SUCCESS: i16 = 0;
}

/// `get_table` args.
pub mod get_table_args {
    /// `dbname`
    pub const DBNAME: i16 = 1;
    /// `tbl_name`
    pub const TBL_NAME: i16 = 2;
}

/// `get_database` args.
pub mod get_database_args {
    /// `name`
    pub const NAME: i16 = 1;
}

/// `get_index_by_name` args (Hive 2).
pub mod get_index_by_name_args {
    /// `db_name`
    pub const DB_NAME: i16 = 1;
    /// `tbl_name`
    pub const TBL_NAME: i16 = 2;
    /// `index_name`
    pub const INDEX_NAME: i16 = 3;
}

/// `list_privileges` args.
pub mod list_privileges_args {
    /// `principal_name`
    pub const PRINCIPAL_NAME: i16 = 1;
    /// `principal_type`
    pub const PRINCIPAL_TYPE: i16 = 2;
    /// `hiveObject`
    pub const HIVE_OBJECT: i16 = 3;
}

/// `get_principals_in_role` args.
pub mod get_principals_in_role_args {
    /// `request`
    pub const REQUEST: i16 = 1;
}

/// `GetPrincipalsInRoleRequest`.
pub mod get_principals_in_role_request {
    /// `roleName`
    pub const ROLE_NAME: i16 = 1;
}

/// `GetPrincipalsInRoleResponse`: every principal the role is granted to.
pub mod get_principals_in_role_response {
    /// `principalGrants`
    pub const PRINCIPAL_GRANTS: i16 = 1;
}

/// `get_all_tables` args.
pub mod get_all_tables_args {
    /// `db_name`
    pub const DB_NAME: i16 = 1;
}

/// `get_tables_by_type` args.
pub mod get_tables_by_type_args {
    /// `db_name`
    pub const DB_NAME: i16 = 1;
    /// `pattern`
    pub const PATTERN: i16 = 2;
    /// `tableType`
    pub const TABLE_TYPE: i16 = 3;
}

/// `get_role_grants_for_principal` args.
pub mod get_role_grants_for_principal_args {
    /// `request`
    pub const REQUEST: i16 = 1;
}

/// `show_locks` args.
pub mod show_locks_args {
    /// `rqst`
    pub const RQST: i16 = 1;
}

#[cfg(test)]
mod tests {
    use super::super::generated::*;
    use super::super::types::StructDef;

    /// Every constant above, with the struct and Thrift field name it stands for.
    // Long: one row per constant.
    fn named() -> Vec<(i16, &'static StructDef, &'static str)> {
        vec![
            (super::table_meta::DB_NAME, &S_TableMeta, "dbName"),
            (super::table_meta::TABLE_NAME, &S_TableMeta, "tableName"),
            (super::table::TABLE_NAME, &S_Table, "tableName"),
            (super::table::DB_NAME, &S_Table, "dbName"),
            (super::table::OWNER, &S_Table, "owner"),
            (super::table::CREATE_TIME, &S_Table, "createTime"),
            (super::table::LAST_ACCESS_TIME, &S_Table, "lastAccessTime"),
            (super::table::RETENTION, &S_Table, "retention"),
            (super::table::SD, &S_Table, "sd"),
            (super::table::PARTITION_KEYS, &S_Table, "partitionKeys"),
            (super::table::PARAMETERS, &S_Table, "parameters"),
            (
                super::table::VIEW_ORIGINAL_TEXT,
                &S_Table,
                "viewOriginalText",
            ),
            (
                super::table::VIEW_EXPANDED_TEXT,
                &S_Table,
                "viewExpandedText",
            ),
            (super::table::TABLE_TYPE, &S_Table, "tableType"),
            (super::table::PRIVILEGES, &S_Table, "privileges"),
            (super::table::TEMPORARY, &S_Table, "temporary"),
            (super::table::REWRITE_ENABLED, &S_Table, "rewriteEnabled"),
            (
                super::table::CREATION_METADATA,
                &S_Table,
                "creationMetadata",
            ),
            (super::table::CAT_NAME, &S_Table, "catName"),
            (super::table::OWNER_TYPE, &S_Table, "ownerType"),
            (super::table::WRITE_ID, &S_Table, "writeId"),
            (
                super::table::IS_STATS_COMPLIANT,
                &S_Table,
                "isStatsCompliant",
            ),
            (super::table::COL_STATS, &S_Table, "colStats"),
            (super::table::ACCESS_TYPE, &S_Table, "accessType"),
            (
                super::table::REQUIRED_READ_CAPABILITIES,
                &S_Table,
                "requiredReadCapabilities",
            ),
            (
                super::table::REQUIRED_WRITE_CAPABILITIES,
                &S_Table,
                "requiredWriteCapabilities",
            ),
            (super::table::ID, &S_Table, "id"),
            (super::table::FILE_METADATA, &S_Table, "fileMetadata"),
            (super::table::DICTIONARY, &S_Table, "dictionary"),
            (super::table::TXN_ID, &S_Table, "txnId"),
            (
                super::storage_descriptor::COLS,
                &S_StorageDescriptor,
                "cols",
            ),
            (
                super::storage_descriptor::LOCATION,
                &S_StorageDescriptor,
                "location",
            ),
            (
                super::storage_descriptor::SERDE_INFO,
                &S_StorageDescriptor,
                "serdeInfo",
            ),
            (
                super::storage_descriptor::PARAMETERS,
                &S_StorageDescriptor,
                "parameters",
            ),
            (super::serde_info::NAME, &S_SerDeInfo, "name"),
            (
                super::serde_info::SERIALIZATION_LIB,
                &S_SerDeInfo,
                "serializationLib",
            ),
            (super::serde_info::PARAMETERS, &S_SerDeInfo, "parameters"),
            (
                super::storage_descriptor::INPUT_FORMAT,
                &S_StorageDescriptor,
                "inputFormat",
            ),
            (
                super::storage_descriptor::BUCKET_COLS,
                &S_StorageDescriptor,
                "bucketCols",
            ),
            (
                super::storage_descriptor::SORT_COLS,
                &S_StorageDescriptor,
                "sortCols",
            ),
            (
                super::storage_descriptor::SKEWED_INFO,
                &S_StorageDescriptor,
                "skewedInfo",
            ),
            (super::field_schema::NAME, &S_FieldSchema, "name"),
            (super::field_schema::TYPE, &S_FieldSchema, "type"),
            (super::order::COL, &S_Order, "col"),
            (
                super::skewed_info::SKEWED_COL_NAMES,
                &S_SkewedInfo,
                "skewedColNames",
            ),
            (super::partition::VALUES, &S_Partition, "values"),
            (super::partition::DB_NAME, &S_Partition, "dbName"),
            (super::partition::TABLE_NAME, &S_Partition, "tableName"),
            (super::partition::SD, &S_Partition, "sd"),
            (super::partition::PARAMETERS, &S_Partition, "parameters"),
            (
                super::partition_spec_with_shared_sd::PARTITIONS,
                &S_PartitionSpecWithSharedSD,
                "partitions",
            ),
            (
                super::partition_spec_with_shared_sd::SD,
                &S_PartitionSpecWithSharedSD,
                "sd",
            ),
            (
                super::partition_without_sd::VALUES,
                &S_PartitionWithoutSD,
                "values",
            ),
            (
                super::partition_without_sd::CREATE_TIME,
                &S_PartitionWithoutSD,
                "createTime",
            ),
            (
                super::partition_without_sd::LAST_ACCESS_TIME,
                &S_PartitionWithoutSD,
                "lastAccessTime",
            ),
            (
                super::partition_without_sd::RELATIVE_PATH,
                &S_PartitionWithoutSD,
                "relativePath",
            ),
            (
                super::partition_without_sd::PARAMETERS,
                &S_PartitionWithoutSD,
                "parameters",
            ),
            (
                super::partition_without_sd::PRIVILEGES,
                &S_PartitionWithoutSD,
                "privileges",
            ),
            (super::database::NAME, &S_Database, "name"),
            (super::database::DESCRIPTION, &S_Database, "description"),
            (super::database::LOCATION_URI, &S_Database, "locationUri"),
            (super::database::PARAMETERS, &S_Database, "parameters"),
            (super::database::OWNER_NAME, &S_Database, "ownerName"),
            (super::database::OWNER_TYPE, &S_Database, "ownerType"),
            (super::database::CATALOG_NAME, &S_Database, "catalogName"),
            (
                super::database::MANAGED_LOCATION_URI,
                &S_Database,
                "managedLocationUri",
            ),
            (
                super::privilege_bag::PRIVILEGES,
                &S_PrivilegeBag,
                "privileges",
            ),
            (
                super::hive_object_privilege::HIVE_OBJECT,
                &S_HiveObjectPrivilege,
                "hiveObject",
            ),
            (
                super::hive_object_privilege::PRINCIPAL_NAME,
                &S_HiveObjectPrivilege,
                "principalName",
            ),
            (
                super::hive_object_privilege::PRINCIPAL_TYPE,
                &S_HiveObjectPrivilege,
                "principalType",
            ),
            (
                super::hive_object_privilege::GRANT_INFO,
                &S_HiveObjectPrivilege,
                "grantInfo",
            ),
            (
                super::hive_object_privilege::AUTHORIZER,
                &S_HiveObjectPrivilege,
                "authorizer",
            ),
            (
                super::hive_object_ref::OBJECT_TYPE,
                &S_HiveObjectRef,
                "objectType",
            ),
            (super::hive_object_ref::DB_NAME, &S_HiveObjectRef, "dbName"),
            (
                super::hive_object_ref::OBJECT_NAME,
                &S_HiveObjectRef,
                "objectName",
            ),
            (
                super::hive_object_ref::PART_VALUES,
                &S_HiveObjectRef,
                "partValues",
            ),
            (
                super::hive_object_ref::COLUMN_NAME,
                &S_HiveObjectRef,
                "columnName",
            ),
            (
                super::hive_object_ref::CAT_NAME,
                &S_HiveObjectRef,
                "catName",
            ),
            (
                super::privilege_grant_info::PRIVILEGE,
                &S_PrivilegeGrantInfo,
                "privilege",
            ),
            (
                super::privilege_grant_info::CREATE_TIME,
                &S_PrivilegeGrantInfo,
                "createTime",
            ),
            (
                super::privilege_grant_info::GRANTOR,
                &S_PrivilegeGrantInfo,
                "grantor",
            ),
            (
                super::privilege_grant_info::GRANTOR_TYPE,
                &S_PrivilegeGrantInfo,
                "grantorType",
            ),
            (
                super::privilege_grant_info::GRANT_OPTION,
                &S_PrivilegeGrantInfo,
                "grantOption",
            ),
            (
                super::principal_privilege_set::USER_PRIVILEGES,
                &S_PrincipalPrivilegeSet,
                "userPrivileges",
            ),
            (
                super::principal_privilege_set::GROUP_PRIVILEGES,
                &S_PrincipalPrivilegeSet,
                "groupPrivileges",
            ),
            (
                super::principal_privilege_set::ROLE_PRIVILEGES,
                &S_PrincipalPrivilegeSet,
                "rolePrivileges",
            ),
            (super::lock_request::COMPONENT, &S_LockRequest, "component"),
            (super::lock_request::TXNID, &S_LockRequest, "txnid"),
            (super::lock_request::USER, &S_LockRequest, "user"),
            (super::lock_request::HOSTNAME, &S_LockRequest, "hostname"),
            (super::lock_component::TYPE, &S_LockComponent, "type"),
            (super::lock_component::LEVEL, &S_LockComponent, "level"),
            (super::lock_component::DBNAME, &S_LockComponent, "dbname"),
            (
                super::lock_component::TABLENAME,
                &S_LockComponent,
                "tablename",
            ),
            (
                super::lock_component::PARTITIONNAME,
                &S_LockComponent,
                "partitionname",
            ),
            (super::index::INDEX_NAME, &S_Index, "indexName"),
            (super::index::DB_NAME, &S_Index, "dbName"),
            (super::index::ORIG_TABLE_NAME, &S_Index, "origTableName"),
            (super::index::INDEX_TABLE_NAME, &S_Index, "indexTableName"),
            (super::index::SD, &S_Index, "sd"),
            (
                super::role_principal_grant::ROLE_NAME,
                &S_RolePrincipalGrant,
                "roleName",
            ),
            (
                super::role_principal_grant::PRINCIPAL_NAME,
                &S_RolePrincipalGrant,
                "principalName",
            ),
            (
                super::role_principal_grant::PRINCIPAL_TYPE,
                &S_RolePrincipalGrant,
                "principalType",
            ),
            (
                super::role_principal_grant::GRANT_OPTION,
                &S_RolePrincipalGrant,
                "grantOption",
            ),
            (
                super::get_role_grants_for_principal_request::PRINCIPAL_NAME,
                &S_GetRoleGrantsForPrincipalRequest,
                "principal_name",
            ),
            (
                super::get_role_grants_for_principal_request::PRINCIPAL_TYPE,
                &S_GetRoleGrantsForPrincipalRequest,
                "principal_type",
            ),
            (
                super::get_role_grants_for_principal_response::PRINCIPAL_GRANTS,
                &S_GetRoleGrantsForPrincipalResponse,
                "principalGrants",
            ),
            (
                super::get_open_txns_info_response::TXN_HIGH_WATER_MARK,
                &S_GetOpenTxnsInfoResponse,
                "txn_high_water_mark",
            ),
            (
                super::get_open_txns_info_response::OPEN_TXNS,
                &S_GetOpenTxnsInfoResponse,
                "open_txns",
            ),
            (super::txn_info::ID, &S_TxnInfo, "id"),
            (super::txn_info::STATE, &S_TxnInfo, "state"),
            (super::txn_info::USER, &S_TxnInfo, "user"),
            (
                super::show_locks_response::LOCKS,
                &S_ShowLocksResponse,
                "locks",
            ),
            (
                super::show_locks_response_element::LOCKID,
                &S_ShowLocksResponseElement,
                "lockid",
            ),
            (
                super::show_locks_response_element::USER,
                &S_ShowLocksResponseElement,
                "user",
            ),
            (super::method_result::SUCCESS, &R_get_table, "success"),
            (super::get_table_args::DBNAME, &A_get_table, "dbname"),
            (super::get_table_args::TBL_NAME, &A_get_table, "tbl_name"),
            (super::get_database_args::NAME, &A_get_database, "name"),
            (
                super::get_index_by_name_args::DB_NAME,
                &A_get_index_by_name,
                "db_name",
            ),
            (
                super::get_index_by_name_args::TBL_NAME,
                &A_get_index_by_name,
                "tbl_name",
            ),
            (
                super::get_index_by_name_args::INDEX_NAME,
                &A_get_index_by_name,
                "index_name",
            ),
            (
                super::list_privileges_args::PRINCIPAL_NAME,
                &A_list_privileges,
                "principal_name",
            ),
            (
                super::list_privileges_args::PRINCIPAL_TYPE,
                &A_list_privileges,
                "principal_type",
            ),
            (
                super::list_privileges_args::HIVE_OBJECT,
                &A_list_privileges,
                "hiveObject",
            ),
            (
                super::get_role_grants_for_principal_args::REQUEST,
                &A_get_role_grants_for_principal,
                "request",
            ),
            (super::show_locks_args::RQST, &A_show_locks, "rqst"),
            (
                super::get_principals_in_role_args::REQUEST,
                &A_get_principals_in_role,
                "request",
            ),
            (
                super::get_principals_in_role_request::ROLE_NAME,
                &S_GetPrincipalsInRoleRequest,
                "roleName",
            ),
            (
                super::get_principals_in_role_response::PRINCIPAL_GRANTS,
                &S_GetPrincipalsInRoleResponse,
                "principalGrants",
            ),
            (
                super::get_all_tables_args::DB_NAME,
                &A_get_all_tables,
                "db_name",
            ),
            (
                super::get_tables_by_type_args::DB_NAME,
                &A_get_tables_by_type,
                "db_name",
            ),
            (
                super::get_tables_by_type_args::PATTERN,
                &A_get_tables_by_type,
                "pattern",
            ),
            (
                super::get_tables_by_type_args::TABLE_TYPE,
                &A_get_tables_by_type,
                "tableType",
            ),
            (
                super::database::LOCATION_URI,
                &S_CreateDatabaseRequest,
                "locationUri",
            ),
            (
                super::database::MANAGED_LOCATION_URI,
                &S_CreateDatabaseRequest,
                "managedLocationUri",
            ),
        ]
    }

    #[test]
    fn every_constant_is_the_idls_field_id() {
        for (id, def, name) in named() {
            let field = def.fields.iter().find(|f| f.name == name);
            assert_eq!(field.map(|f| f.id), Some(id), "{}.{name}", def.name);
        }
    }

    #[test]
    fn a_wrong_constant_would_fail() {
        let owner = S_Table.fields.iter().find(|f| f.name == "owner").unwrap();
        assert_eq!(owner.id, super::table::OWNER);
        assert_ne!(owner.id, super::table::DB_NAME);
    }
}
