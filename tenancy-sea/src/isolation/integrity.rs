//! Referential integrity per tenant: constraints that keep every reference of a
//! tenant-scoped table inside its tenant, whatever writes the row.
//!
//! The handle stamps the tenant on every insert, but it does not look where a foreign key
//! points: tenant B can insert a junction row `post_tags(post_id, tag_id)` naming tenant A's
//! post and tag. The handle's reads filter the junction by its tenant column, so A never sees
//! such a link, but only the database can refuse to store it. These constraints do:
//!
//! - a unique key `(tenant, primary key)` on every tenant-scoped table, the target of
//! - a composite foreign key `(tenant, fk) -> (tenant, pk)` for every belongs-to relation
//!   between two tenant-scoped tables: a row can only point at a row of its own tenant.
//!
//! ```
//! use sea_orm::{DbBackend, Schema, sea_query::PostgresQueryBuilder};
//! use tenancy_sea::integrity::TenantIntegrity;
//! # mod post {
//! #     use sea_orm::entity::prelude::*;
//! #     use tenancy_sea::prelude::*;
//! #     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
//! #     #[sea_orm(table_name = "posts")]
//! #     pub struct Model {
//! #         #[sea_orm(primary_key)]
//! #         pub id: i64,
//! #         #[tenant_id]
//! #         pub tenant_id: i64,
//! #     }
//! #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
//! #     pub enum Relation {}
//! #     impl ActiveModelBehavior for ActiveModel {}
//! # }
//! # mod comment {
//! #     use sea_orm::entity::prelude::*;
//! #     use tenancy_sea::prelude::*;
//! #     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
//! #     #[sea_orm(table_name = "comments")]
//! #     pub struct Model {
//! #         #[sea_orm(primary_key)]
//! #         pub id: i64,
//! #         #[tenant_id]
//! #         pub tenant_id: i64,
//! #         pub post_id: i64,
//! #     }
//! #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
//! #     pub enum Relation {
//! #         #[sea_orm(belongs_to = "super::post::Entity", from = "Column::PostId", to = "super::post::Column::Id")]
//! #         Post,
//! #     }
//! #     impl ActiveModelBehavior for ActiveModel {}
//! # }
//! # fn main() {
//! let schema = Schema::new(DbBackend::Postgres);
//! let mut posts = schema.create_table_from_entity(post::Entity);
//! let mut comments = schema.create_table_from_entity(comment::Entity);
//! TenantIntegrity::of::<post::Entity>().add_to(&mut posts);
//! TenantIntegrity::of::<comment::Entity>().add_to(&mut comments);
//! let sql = comments.to_string(PostgresQueryBuilder);
//! assert!(sql.contains(r#"FOREIGN KEY ("tenant_id", "post_id") REFERENCES "posts" ("tenant_id", "id")"#));
//! # }
//! ```
//!
//! On MariaDB/MySQL a foreign key compares under the columns' collation: give a text
//! tenant column a binary collation (`utf8mb4_bin`), or tenant `ACME`'s rows could point at
//! `acme`'s ([`TenantIntegrity::apply`] checks it).
//!
//! On a table that exists already, [`TenantIntegrity::apply`] adds the same constraints
//! with `ALTER TABLE` (PostgreSQL and MariaDB/MySQL; SQLite cannot add a constraint to an
//! existing table, so there they go into `CREATE TABLE` with [`TenantIntegrity::add_to`]).

use crate::entity::{TenantScoped, table_scope};
use crate::error::{Error, Result};
use sea_orm::sea_query::{
    Alias, ForeignKey, ForeignKeyCreateStatement, Index, IndexCreateStatement,
    TableCreateStatement, TableRef,
};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, IdenStatic, Iterable, PrimaryKeyToColumn,
    RelationTrait, RelationType, TransactionTrait,
};

/// The per-tenant keys of one tenant-scoped table: see the [module](self).
#[derive(Debug, Clone)]
pub struct TenantIntegrity {
    table: String,
    tenant: String,
    unique: IndexCreateStatement,
    foreign_keys: Vec<ForeignKeyCreateStatement>,
}

impl TenantIntegrity {
    /// The unique key `(tenant, primary key)` of `E` and a composite foreign key for each
    /// of its belongs-to relations to another tenant-scoped table (a relation to a global
    /// table keeps its ordinary foreign key).
    pub fn of<E: TenantScoped>() -> Self {
        let entity = E::default();
        let table = entity.table_name().to_owned();
        let tenant = E::tenant_column().as_str().to_owned();

        let mut unique = Index::create();
        unique
            .name(format!("{table}_tenant_key"))
            .table(Alias::new(&table))
            .unique()
            .col(Alias::new(&tenant));
        for key in E::PrimaryKey::iter() {
            let column = key.into_column();
            if column.as_str() != tenant {
                unique.col(Alias::new(column.as_str()));
            }
        }

        let mut foreign_keys = Vec::new();
        for relation in E::Relation::iter() {
            let def = relation.def();
            // A belongs-to relation: this table holds the foreign key (SeaORM marks it
            // `is_owner: false`).
            if def.is_owner || def.rel_type != RelationType::HasOne {
                continue;
            }
            let TableRef::Table(target, _) = &def.to_tbl else {
                continue;
            };
            let target_schema = target.0.as_ref().map(|schema| schema.1.to_string());
            let target_table = target.1.to_string();
            let scope = table_scope(target_schema.as_deref(), &target_table);
            let Some(target_tenant) = scope.tenant_columns.first() else {
                continue;
            };
            let mut fk = ForeignKey::create();
            fk.name(format!("{table}_{target_table}_tenant_fk"))
                .from_tbl(Alias::new(&table))
                .to_tbl(Alias::new(&target_table))
                .from_col(Alias::new(&tenant))
                .to_col(Alias::new(target_tenant));
            for column in def.from_col.iter() {
                fk.from_col(Alias::new(column.to_string()));
            }
            for column in def.to_col.iter() {
                fk.to_col(Alias::new(column.to_string()));
            }
            if let Some(action) = def.on_delete {
                fk.on_delete(action);
            }
            if let Some(action) = def.on_update {
                fk.on_update(action);
            }
            foreign_keys.push(fk);
        }
        TenantIntegrity {
            table,
            tenant,
            unique,
            foreign_keys,
        }
    }

    /// Adds the constraints to the `CREATE TABLE` of this entity's table (every backend).
    /// Create the referenced tables first, with their own [`TenantIntegrity`].
    pub fn add_to(&self, create: &mut TableCreateStatement) {
        create.index(&mut self.unique.clone());
        for fk in &self.foreign_keys {
            create.foreign_key(&mut fk.clone());
        }
    }

    /// Adds the constraints to the existing table (PostgreSQL, MariaDB/MySQL): the unique
    /// key, then the foreign keys. Apply it to the referenced tables first. Rows that
    /// already point across tenants make the database refuse the foreign key: on
    /// PostgreSQL nothing is added then (one transaction); MariaDB/MySQL commit each
    /// `ALTER TABLE` on its own, so the constraints before the refused one stay (each holds
    /// on its own).
    pub async fn apply(&self, conn: &DatabaseConnection) -> Result<()> {
        match conn.get_database_backend() {
            DbBackend::Sqlite => Err(Error::Config(format!(
                "SQLite cannot add constraints to the existing table `{}`: add them when \
                 the table is created, with TenantIntegrity::add_to",
                self.table
            ))),
            DbBackend::Postgres => {
                let txn = conn.begin().await?;
                self.execute(&txn).await?;
                txn.commit().await?;
                Ok(())
            }
            _ => {
                self.exact_on_mysql(conn).await?;
                self.execute(conn).await
            }
        }
    }

    /// A foreign key on MariaDB/MySQL compares under the columns' collation: under a
    /// case- or accent-insensitive one, tenant `ACME`'s row could point at `acme`'s. A
    /// text tenant column must compare exactly (a `_bin` collation).
    async fn exact_on_mysql(&self, conn: &DatabaseConnection) -> Result<()> {
        let row = conn
            .query_one_raw(sea_orm::Statement::from_sql_and_values(
                DbBackend::MySql,
                "SELECT COLLATION_NAME AS collation FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ?",
                [self.table.clone().into(), self.tenant.clone().into()],
            ))
            .await?;
        let collation = match row {
            Some(row) => row.try_get::<Option<String>>("", "collation")?,
            None => None,
        };
        match collation {
            Some(collation) if !collation.ends_with("_bin") => Err(Error::Config(format!(
                "the tenant column `{}` of `{}` compares under `{collation}`, which is not \
                 exact, so a foreign key would let one tenant's row point at another's whose \
                 id differs only by case or accent: give it a binary collation first \
                 (`ALTER TABLE {} MODIFY {} VARCHAR(n) CHARACTER SET utf8mb4 COLLATE \
                 utf8mb4_bin NOT NULL`)",
                self.tenant, self.table, self.table, self.tenant
            ))),
            _ => Ok(()),
        }
    }

    async fn execute<C: ConnectionTrait>(&self, conn: &C) -> Result<()> {
        conn.execute(&self.unique).await?;
        for fk in &self.foreign_keys {
            conn.execute(fk).await?;
        }
        Ok(())
    }

    /// How many composite foreign keys this table gets.
    pub fn foreign_keys(&self) -> usize {
        self.foreign_keys.len()
    }
}
