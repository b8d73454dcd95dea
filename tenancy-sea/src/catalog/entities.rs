//! The catalog database's tables: the framework's own entities, and how a table of theirs
//! is installed.

use crate::error::Result;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, Schema, Statement};

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
