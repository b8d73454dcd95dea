//! The catalog database's tables: the framework's own entities (tenant databases, shards,
//! directory entries and ranges, directory versions, move claims), and how a table of
//! theirs is installed.

use crate::error::Result;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, IdenStatic, Schema, Statement,
};

/// The framework's own catalog entity: one row per tenant database.
pub mod tenant_entry {
    use sea_orm::entity::prelude::*;

    /// A registered tenant: its id (as text) and its database URL.
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenancy_tenants")]
    pub struct Model {
        /// The tenant id, in its text form.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// The URL of the tenant's database.
        pub url: String,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    /// The URL's password is hidden.
    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Model")
                .field("tenant_id", &self.tenant_id)
                .field("url", &crate::redact::url(&self.url))
                .finish()
        }
    }
}

/// The framework's catalog entity of the shard registry: one row per shard.
pub mod shard_entry {
    use sea_orm::entity::prelude::*;

    /// A shard: its name, where its database is, and its state.
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenancy_shards")]
    pub struct Model {
        /// The shard's name.
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        /// The URL of its database.
        pub url: String,
        /// `active` or `draining`.
        pub state: String,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    /// The URL's password is hidden.
    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Model")
                .field("name", &self.name)
                .field("url", &crate::redact::url(&self.url))
                .field("state", &self.state)
                .finish()
        }
    }
}

/// The framework's catalog entity of the directories: one row per placed key.
pub mod entry {
    use sea_orm::entity::prelude::*;

    /// A key (a tenant id, or a `#[shard_key]` value, as text) of one directory and the
    /// shard it lives on.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenancy_directory")]
    pub struct Model {
        /// The directory: `tenants`, or the name given to [`Directory::named`](crate::catalog::Directory::named).
        #[sea_orm(primary_key, auto_increment = false)]
        pub directory: String,
        /// The key, in its text form.
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        /// The shard's name.
        pub shard: String,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The framework's catalog entity of key ranges: integer keys from a lower bound up to
/// the next range's bound live on one shard.
pub mod range_entry {
    use sea_orm::entity::prelude::*;

    /// A range's lower bound and the shard its keys live on.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenancy_directory_ranges")]
    pub struct Model {
        /// The directory, as in [`entry`](super::entry).
        #[sea_orm(primary_key, auto_increment = false)]
        pub directory: String,
        /// The smallest key of the range.
        #[sea_orm(primary_key, auto_increment = false)]
        pub lower_bound: i64,
        /// The shard's name.
        pub shard: String,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The framework's catalog entity of directory versions: each change to a directory
/// bumps its version, so a process can tell that its cached copy is stale.
pub mod version_entry {
    use sea_orm::entity::prelude::*;

    /// A directory and how many changes it has seen.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenancy_directory_versions")]
    pub struct Model {
        /// The directory, as in [`entry`](super::entry).
        #[sea_orm(primary_key, auto_increment = false)]
        pub directory: String,
        /// Bumped by every change.
        pub version: i64,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The framework's catalog entity of moves in progress: one row per key being moved, so
/// that two processes cannot move one tenant at once.
pub mod move_entry {
    use sea_orm::entity::prelude::*;

    /// A key of a directory being moved, and where to: a claim, held by one run of a
    /// move (its owner) until its lease ends, and renewed while the move runs.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenancy_directory_claims")]
    pub struct Model {
        /// The directory, as in [`entry`](super::entry).
        #[sea_orm(primary_key, auto_increment = false)]
        pub directory: String,
        /// The key, in its text form.
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        /// The shard it is being moved to.
        pub shard: String,
        /// The run of the move that holds the claim (random, one per run).
        pub owner: String,
        /// When the claim lapses unless renewed, in milliseconds since the Unix epoch.
        pub expires_at: i64,
        /// The shard the key is being moved from, once the move has read it: where its
        /// fence stands, for the run that takes over an abandoned claim.
        #[sea_orm(nullable)]
        pub from_shard: Option<String>,
        /// The key's rows by content on `from_shard` when they were copied and verified
        /// (per table, `table=rows:sum;`): what the old shard must still hold for its rows to
        /// be removed.
        #[sea_orm(column_type = "Text", nullable)]
        pub digest: Option<String>,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The framework's catalog entity of the directory's recent changes: one row per version,
/// naming the key it changed (or a change of ranges), so that a process catches up by
/// reading the changes since the version it holds instead of the whole directory.
pub mod change_entry {
    use sea_orm::entity::prelude::*;

    /// The change that made a directory version.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenancy_directory_changes")]
    pub struct Model {
        /// The directory, as in [`entry`](super::entry).
        #[sea_orm(primary_key, auto_increment = false)]
        pub directory: String,
        /// The version the change made.
        #[sea_orm(primary_key, auto_increment = false)]
        pub version: i64,
        /// The key whose placement changed, in its text form; `None` for a change of the
        /// ranges.
        #[sea_orm(nullable)]
        pub key: Option<String>,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The framework's catalog entity of the routers that follow a directory: one row per
/// process's router (while it watches the directory), with the directory version it has
/// applied, so that a move removes a tenant's old rows only once every live router routes
/// it to its new shard.
pub mod router_entry {
    use sea_orm::entity::prelude::*;

    /// A router's acknowledgement of a directory version, valid until its lease ends.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenancy_directory_routers")]
    pub struct Model {
        /// The directory, as in [`entry`](super::entry).
        #[sea_orm(primary_key, auto_increment = false)]
        pub directory: String,
        /// The router (random, one per directory view in a process).
        #[sea_orm(primary_key, auto_increment = false)]
        pub router: String,
        /// The directory version the router has applied.
        pub version: i64,
        /// When the router stops routing unless it acknowledges again, in milliseconds
        /// since the Unix epoch.
        pub expires_at: i64,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The framework's catalog entity of the id nodes: one row per node number that a
/// process's [`UniqueIds`](super::UniqueIds) holds or held.
pub mod id_node_entry {
    use sea_orm::entity::prelude::*;

    /// A node: who holds it, until when, and the highest id time any holder may have used.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenancy_id_nodes")]
    pub struct Model {
        /// The node number, `0..1024`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub node: i32,
        /// The holder (random, one per generator).
        pub owner: String,
        /// When the holder's lease ends unless renewed, in milliseconds since the Unix epoch;
        /// after it another process may take the node.
        pub expires_at: i64,
        /// The ceiling its holders recorded before issuing: no id of this node has a time
        /// part above it (milliseconds after the id epoch), so the next holder starts above.
        pub ceiling: i64,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Creates `entity`'s table on `conn` unless it exists: how every framework table of a
/// catalog database is installed.
///
/// On MySQL/MariaDB its text columns compare byte for byte (a binary collation, without
/// padding where the server has one): under the server's default collation `'ACME'`,
/// `'acme'` and `'ácmé'` would be one key, and a catalog would give one tenant another's
/// database or shard. A table made before with another collation is converted.
pub(crate) async fn create_table_if_missing<E: EntityTrait>(
    conn: &DatabaseConnection,
    entity: E,
) -> Result<()> {
    let backend = conn.get_database_backend();
    let table = entity.table_name();
    let mut create = Schema::new(backend).create_table_from_entity(entity);
    create.if_not_exists();
    if backend != DbBackend::MySql {
        conn.execute(&create).await?;
        return Ok(());
    }
    let collation = exact_collation(conn).await?;
    create.character_set("utf8mb4").collate(collation.as_str());
    conn.execute(&create).await?;
    let inexact = conn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::MySql,
            "SELECT COUNT(*) AS n FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = \
             DATABASE() AND TABLE_NAME = ? AND COLLATION_NAME IS NOT NULL AND \
             COLLATION_NAME <> ?",
            [table.into(), collation.as_str().into()],
        ))
        .await?;
    let inexact: i64 = match inexact {
        Some(row) => row.try_get("", "n")?,
        None => 0,
    };
    if inexact > 0 {
        // The names are the framework's own table and a collation the server listed.
        conn.execute_unprepared(&format!(
            "ALTER TABLE `{table}` CONVERT TO CHARACTER SET utf8mb4 COLLATE {collation}"
        ))
        .await?;
        tracing::info!(
            table,
            collation,
            "catalog table converted to an exact collation"
        );
    }
    Ok(())
}

/// Adds `column` of `entity` to its table on `conn` unless the table has it: how a catalog
/// installed by an earlier version gains a column (nullable columns only).
pub(crate) async fn add_column_if_missing<E: EntityTrait>(
    conn: &DatabaseConnection,
    entity: E,
    column: E::Column,
) -> Result<()> {
    use sea_orm::sea_query::{Alias, Table};
    let table = entity.table_name();
    let name = column.as_str();
    if sea_orm_migration::SchemaManager::new(conn)
        .has_column(table, name)
        .await?
    {
        return Ok(());
    }
    let backend = conn.get_database_backend();
    let mut definition = Schema::new(backend).get_column_def::<E>(column);
    let alter = Table::alter()
        .table(Alias::new(table))
        .add_column(&mut definition)
        .to_owned();
    conn.execute(&alter).await?;
    Ok(())
}

/// The binary utf8mb4 collation of this MySQL/MariaDB server that does not pad: MariaDB's
/// `utf8mb4_nopad_bin`, MySQL 8's `utf8mb4_0900_bin`, else `utf8mb4_bin` (which ignores
/// trailing spaces, which no valid key has).
async fn exact_collation(conn: &DatabaseConnection) -> Result<String> {
    let rows = conn
        .query_all_raw(Statement::from_string(
            DbBackend::MySql,
            "SELECT COLLATION_NAME AS name FROM information_schema.COLLATIONS WHERE \
             COLLATION_NAME IN ('utf8mb4_nopad_bin', 'utf8mb4_0900_bin')",
        ))
        .await?;
    let mut names = Vec::with_capacity(rows.len());
    for row in rows {
        names.push(row.try_get::<String>("", "name")?);
    }
    Ok(["utf8mb4_nopad_bin", "utf8mb4_0900_bin"]
        .into_iter()
        .find(|name| names.iter().any(|n| n == name))
        .unwrap_or("utf8mb4_bin")
        .to_owned())
}
