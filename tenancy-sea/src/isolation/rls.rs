//! PostgreSQL row-level security policies, generated from the tenant-scoped entities.
//!
//! With [`Isolation::RowLevelSecurity`](crate::Isolation::RowLevelSecurity), every unit of
//! work runs `SELECT set_config('<setting>', $1, true)` first, with the tenant id bound.
//! The policies made here compare each row's tenant column with that setting, so even raw
//! SQL sees, inserts and changes only the current tenant's rows, and a connection that has
//! not set it sees nothing.
//!
//! ```
//! use tenancy_sea::rls::{RlsTable, policy_statements};
//! # mod orders {
//! #     use sea_orm::entity::prelude::*;
//! #     use tenancy_sea::prelude::*;
//! #     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
//! #     #[sea_orm(table_name = "orders")]
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
//!
//! let sql = policy_statements("tenancy.tenant_id", &[RlsTable::of::<orders::Entity>()?])?;
//! assert_eq!(sql[0], r#"ALTER TABLE "orders" ENABLE ROW LEVEL SECURITY"#);
//! assert_eq!(sql[1], r#"ALTER TABLE "orders" FORCE ROW LEVEL SECURITY"#);
//! assert!(sql[3].contains(r#"USING ("tenant_id" = NULLIF(current_setting('tenancy.tenant_id', true), '')::bigint)"#));
//! # Ok::<(), tenancy_sea::Error>(())
//! ```
//!
//! The role the application connects as must not own the tables and must not be a
//! superuser (nor have `BYPASSRLS`): owners and superusers bypass row-level security, and
//! `FORCE` only removes the owner's exemption. Run these statements, and the migrations,
//! as the owner; connect the application as a role that was granted `SELECT`, `INSERT`,
//! `UPDATE`, `DELETE` (and sequence usage) on them.

use crate::entity::TenantScoped;
use crate::error::{Error, Result};
use sea_orm::sea_query::{ColumnType, ValueType};
use sea_orm::{ConnectionTrait, IdenStatic, TransactionTrait};

/// The name of the policy each table gets.
pub const POLICY_NAME: &str = "tenancy_isolation";

/// One tenant-scoped table, as row-level security sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RlsTable {
    schema: Option<String>,
    table: String,
    column: String,
    sql_type: &'static str,
}

impl RlsTable {
    /// The table of entity `E`, its tenant column and that column's PostgreSQL type.
    pub fn of<E: TenantScoped>() -> Result<Self> {
        let entity = E::default();
        let sql_type = match <E::TenantId as ValueType>::column_type() {
            ColumnType::BigInteger => "bigint",
            ColumnType::Integer => "integer",
            ColumnType::SmallInteger => "smallint",
            ColumnType::Uuid => "uuid",
            ColumnType::String(_) | ColumnType::Text | ColumnType::Char(_) => "text",
            other => {
                return Err(Error::Config(format!(
                    "no row-level security cast for tenant column type {other:?} of `{}`",
                    entity.table_name()
                )));
            }
        };
        Ok(RlsTable {
            schema: entity.schema_name().map(str::to_owned),
            table: entity.table_name().to_owned(),
            column: E::tenant_column().as_str().to_owned(),
            sql_type,
        })
    }

    fn qualified(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quote(schema), quote(&self.table)),
            None => quote(&self.table),
        }
    }
}

/// A PostgreSQL identifier in double quotes (names come from entity definitions).
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The statements that enable, force and define the tenant policy on each table, then make
/// the functions of a move's write fence (so that the role that runs under the policies
/// needs only the `TRIGGER` privilege on the tables to move a tenant). They can be run
/// again: the policy is dropped and created anew.
pub fn policy_statements(setting: &str, tables: &[RlsTable]) -> Result<Vec<String>> {
    super::validate_setting(setting)?;
    let mut statements = Vec::with_capacity(tables.len() * 4 + 2);
    for table in tables {
        let name = table.qualified();
        // The setting is a validated `prefix.name`, so it needs no escaping as a literal.
        let value = format!(
            "NULLIF(current_setting('{setting}', true), '')::{}",
            table.sql_type
        );
        let column = quote(&table.column);
        // Text compares exactly, as the handle's own condition does (a nondeterministic
        // collation on the column would make `ACME` see `acme`'s rows), beside the plain
        // equality an index on the column serves.
        let check = if table.sql_type == "text" {
            format!("{column} = {value} AND {column} = ({value} COLLATE \"C\")")
        } else {
            format!("{column} = {value}")
        };
        statements.push(format!("ALTER TABLE {name} ENABLE ROW LEVEL SECURITY"));
        statements.push(format!("ALTER TABLE {name} FORCE ROW LEVEL SECURITY"));
        statements.push(format!("DROP POLICY IF EXISTS {POLICY_NAME} ON {name}"));
        statements.push(format!(
            "CREATE POLICY {POLICY_NAME} ON {name} USING ({check}) WITH CHECK ({check})"
        ));
    }
    statements.extend(super::PG_FENCE_FUNCTIONS.map(str::to_owned));
    Ok(statements)
}

/// Runs [`policy_statements`] on `conn` (as the tables' owner) in one transaction: either
/// every table is protected or none is changed.
pub async fn enable_row_level_security<C>(
    conn: &C,
    setting: &str,
    tables: &[RlsTable],
) -> Result<()>
where
    C: ConnectionTrait + TransactionTrait,
{
    let statements = policy_statements(setting, tables)?;
    let txn = conn.begin().await?;
    for statement in statements {
        txn.execute_unprepared(&statement).await?;
    }
    sea_orm::TransactionSession::commit(txn).await?;
    Ok(())
}
