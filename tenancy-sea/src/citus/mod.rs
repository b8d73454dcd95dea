//! Citus, the placement where an existing distributed engine keeps the tenants apart on
//! its nodes: the fan-out guard a tenant connection runs with ([`guard`]), the tenant
//! setting row-level security needs there ([`tenant_setting_sql`]), the distribution of
//! the entities' tables ([`distribute`]), and the checks [`Tenancy::verify`] runs on a
//! coordinator.
//!
//! A tenant-scoped table is distributed by its tenant column and co-located with the
//! others, so a tenant's rows of every table live on one node and every statement of a
//! tenant handle (which carries the tenant condition) is a single-shard router query;
//! global entities are reference tables, copied to every node, so joins to them stay on
//! that node. Under schema per tenant each tenant's schema is a distributed schema
//! (Citus' schema-based sharding): the whole schema lives on one node.
//!
//! [`Tenancy::verify`]: crate::Tenancy::verify

mod distribute;
pub(crate) mod moves;
mod plan;

pub(crate) use distribute::catalog_state;
pub use distribute::{Distribution, DistributionStep, distribute};

use crate::entity::registered;
use crate::error::{Error, Result};
use sea_orm::sea_query::TableCreateStatement;
use sea_orm::{ConnectOptions, ConnectionTrait, DbBackend, Statement};

/// Run in the transaction that creates a tenant's schema under schema per tenant: the
/// schema becomes a distributed schema, placed whole on one node.
pub(crate) const DISTRIBUTED_SCHEMA: &str = "SET LOCAL citus.enable_schema_based_sharding = on";

/// The setting that turns a statement a tenant handle would send to several shards into
/// an error: Citus' `citus.multi_task_query_log_level`, at `error`.
pub const GUARD: (&str, &str) = ("citus.multi_task_query_log_level", "error");

/// Sets the fan-out guard ([`GUARD`]) on every connection `options` opens, as a startup
/// option: a statement that would run on several shards is then refused by the
/// coordinator ("multi-task query about to be executed") instead of running slowly on
/// all of them. Give the tenant connection (the one [`Tenancy::builder`] takes) these
/// options; the admin connection, for explicit cross-tenant reads, goes without.
///
/// The same can be set for the application's role (`ALTER ROLE app SET
/// citus.multi_task_query_log_level = 'error'`); [`Tenancy::verify`] checks that one or
/// the other is in force.
///
/// ```
/// # async fn demo(url: &str) -> Result<(), sea_orm::DbErr> {
/// let mut options = sea_orm::ConnectOptions::new(url);
/// tenancy_sea::citus::guard(&mut options);
/// let tenants = sea_orm::Database::connect(options).await?;
/// # Ok(()) }
/// ```
///
/// [`Tenancy::builder`]: crate::Tenancy::builder
/// [`Tenancy::verify`]: crate::Tenancy::verify
pub fn guard(options: &mut ConnectOptions) -> &mut ConnectOptions {
    // Citus is PostgreSQL: without the `postgres` feature there is no connection to guard.
    #[cfg(feature = "postgres")]
    options.map_sqlx_postgres_opts(|pg| pg.options([GUARD]));
    options
}

/// The set-up of a unit of work under row-level security on Citus: `SET LOCAL` of the
/// `setting` to the tenant, with Citus told to send it on to the workers
/// (`citus.propagate_set_commands = 'local'`), both in one simple query.
///
/// A `set_config(..)` with a bound value, the set-up on plain PostgreSQL, stays on the
/// coordinator, so the workers' policies would see no tenant; `SET` takes no parameter,
/// so the value is written into the text. Only a validated tenant id gets here, and it is
/// written by [`literal`], the one function that writes a value into SQL text.
///
/// ```
/// assert_eq!(
///     tenancy_sea::citus::tenant_setting_sql("tenancy.tenant_id", "o'brien")?,
///     "SET LOCAL citus.propagate_set_commands = 'local'; \
///      SET LOCAL tenancy.tenant_id = E'o''brien'"
/// );
/// # Ok::<(), tenancy_sea::Error>(())
/// ```
pub fn tenant_setting_sql(setting: &str, tenant: &str) -> Result<String> {
    crate::isolation::validate_setting(setting)?;
    Ok(format!(
        "SET LOCAL citus.propagate_set_commands = 'local'; SET LOCAL {setting} = {}",
        literal(tenant)?
    ))
}

/// `value` as a PostgreSQL string constant that reads back as exactly `value`, whatever
/// `standard_conforming_strings` is: an escape string (`E'...'`) with each backslash and
/// each quote doubled. A value with a NUL character cannot be a PostgreSQL string and is
/// refused ([`Error::Config`]); tenant ids never hold one (they are validated first).
///
/// ```
/// use tenancy_sea::citus::literal;
/// assert_eq!(literal("acme")?, "E'acme'");
/// assert_eq!(literal(r"a'b\c")?, r"E'a''b\\c'");
/// assert!(literal("a\0b").is_err());
/// # Ok::<(), tenancy_sea::Error>(())
/// ```
pub fn literal(value: &str) -> Result<String> {
    crate::scope::literal(value).ok_or_else(|| {
        Error::Config(
            "a value with a NUL character cannot be written as a PostgreSQL string".to_owned(),
        )
    })
}

/// Checks a coordinator before the first handle ([`Tenancy::verify`]): the Citus
/// extension is there, the tenant connection runs with the fan-out guard, and (unless each
/// tenant has a distributed schema of its own) the tables of this program's tenant-scoped
/// entities are distributed by their tenant column and those of its global entities are
/// reference tables. Tables that do not exist yet are not checked.
///
/// [`Tenancy::verify`]: crate::Tenancy::verify
pub(crate) async fn check(conn: &impl ConnectionTrait, schema_per_tenant: bool) -> Result<()> {
    let row = conn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'citus') AS citus, \
             current_setting('citus.multi_task_query_log_level', true) AS guard",
        ))
        .await?
        .ok_or_else(|| Error::Config("the coordinator answered no row".to_owned()))?;
    let version: Option<String> = row.try_get("", "citus")?;
    if version.is_none() {
        return Err(Error::Config(
            "the Citus placement needs the citus extension in this database \
             (`CREATE EXTENSION citus` on the coordinator)"
                .to_owned(),
        ));
    }
    let level: Option<String> = row.try_get("", "guard")?;
    if level.as_deref() != Some(GUARD.1) {
        return Err(Error::Config(format!(
            "the tenant connection runs without the fan-out guard ({} is {}, not `error`): \
             open it with `tenancy_sea::citus::guard(&mut options)` or set it for the \
             application's role, so a statement that would run on every shard is refused",
            GUARD.0,
            level.as_deref().unwrap_or("unset")
        )));
    }
    if schema_per_tenant {
        return Ok(());
    }
    let state = catalog_state(conn).await?;
    let mut wrong = Vec::new();
    for described in registered() {
        let Some(table) = state.iter().find(|t| t.matches(described)) else {
            continue;
        };
        match (&described.tenant_column, &table.citus) {
            (Some(column), TableKind::Distributed { column: by }) if by == column => {}
            (None, TableKind::Reference) => {}
            (Some(column), kind) => wrong.push(format!(
                "{} ({}, not distributed by {column})",
                table.name,
                kind.describe()
            )),
            (None, kind) => wrong.push(format!(
                "{} ({}, not a reference table)",
                table.name,
                kind.describe()
            )),
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "tables not distributed for tenants: {}; run `tenancy_sea::citus::distribute` \
             (in a migration or at start) first",
            wrong.join(", ")
        )))
    }
}

/// The table of `entity` for PostgreSQL (Citus or not), as SeaORM's
/// `Schema::create_table_from_entity` writes it, but with ids made by the database when
/// the key holds the tenant: for a key `(tenant_id, id)` with an integer `id`, the `id`
/// column is `GENERATED BY DEFAULT AS IDENTITY` (SeaORM gives a composite key no
/// auto-increment column), so an insert without an id gets one and the handle's insert
/// returns it. Tables whose key does not hold the tenant come out as SeaORM writes them.
///
/// ```
/// # mod invoice {
/// #     use sea_orm::entity::prelude::*;
/// #     use tenancy_sea::prelude::*;
/// #     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
/// #     #[sea_orm(table_name = "invoices")]
/// #     pub struct Model {
/// #         #[sea_orm(primary_key, auto_increment = false)]
/// #         #[tenant_id]
/// #         pub tenant_id: i64,
/// #         #[sea_orm(primary_key, auto_increment = false)]
/// #         pub id: i64,
/// #         pub total_cents: i64,
/// #     }
/// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// #     pub enum Relation {}
/// #     impl ActiveModelBehavior for ActiveModel {}
/// # }
/// use sea_orm::sea_query::PostgresQueryBuilder;
/// let table = tenancy_sea::citus::create_table(invoice::Entity);
/// assert!(table
///     .to_string(PostgresQueryBuilder)
///     .contains(r#""id" bigint NOT NULL GENERATED BY DEFAULT AS IDENTITY"#));
/// ```
pub fn create_table<E: crate::TenantScoped>(entity: E) -> TableCreateStatement {
    use sea_orm::sea_query::ColumnType;
    use sea_orm::{IdenStatic, Iterable, PrimaryKeyToColumn};
    let made = sea_orm::Schema::new(DbBackend::Postgres).create_table_from_entity(entity);
    let tenant = E::tenant_column();
    let key: Vec<E::Column> = E::PrimaryKey::iter()
        .map(PrimaryKeyToColumn::into_column)
        .collect();
    let rest: Vec<&E::Column> = key
        .iter()
        .filter(|c| c.as_str() != tenant.as_str())
        .collect();
    let generated = match rest.as_slice() {
        [id] if key.len() == 2 => {
            let integer = matches!(
                sea_orm::ColumnTrait::def(*id).get_column_type(),
                ColumnType::BigInteger | ColumnType::Integer | ColumnType::SmallInteger
            );
            integer.then(|| id.as_str().to_owned())
        }
        _ => None,
    };
    let Some(generated) = generated else {
        return made;
    };
    let mut table = TableCreateStatement::new();
    if let Some(name) = made.get_table_name() {
        table.table(name.clone());
    }
    for column in made.get_columns() {
        let mut column = column.clone();
        if column.get_column_name() == generated {
            column.extra("GENERATED BY DEFAULT AS IDENTITY");
        }
        table.col(column);
    }
    for index in made.get_indexes() {
        table.index(&mut index.clone());
    }
    for key in made.get_foreign_key_create_stmts() {
        table.foreign_key(&mut key.clone());
    }
    table
}

/// How Citus keeps a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableKind {
    /// A plain PostgreSQL table on the coordinator.
    Local,
    /// Distributed (hash) by `column`.
    Distributed {
        /// The distribution column.
        column: String,
    },
    /// A reference table: a copy on every node.
    Reference,
    /// Another kind of Citus table (a schema's table, a Citus local table, an
    /// append-distributed one).
    Other(String),
}

impl TableKind {
    fn describe(&self) -> String {
        match self {
            TableKind::Local => "a local table".to_owned(),
            TableKind::Distributed { column } => format!("distributed by {column}"),
            TableKind::Reference => "a reference table".to_owned(),
            TableKind::Other(kind) => format!("a Citus {kind} table"),
        }
    }
}
