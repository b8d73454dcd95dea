//! The distribution of the entities' tables on Citus, in the order that works: foreign
//! keys that touch a table about to change are dropped first, global tables become
//! reference tables, tenant-scoped tables are distributed by their tenant column and
//! co-located, and the foreign keys come back last. Read from the catalog
//! ([`catalog_state`]), planned (`plan`, pure and unit-tested), then run one statement at
//! a time.

use super::TableKind;
use super::plan::{ForeignKey, TableState, plan};
use crate::entity::registered;
use crate::error::Result;
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Statement, Value};

/// One statement of a distribution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DistributionStep {
    /// Drops a foreign key that touches a table about to change (it comes back last).
    DropForeignKey {
        /// The table that holds it.
        table: String,
        /// The constraint.
        name: String,
    },
    /// Makes a global entity's table a reference table.
    Reference {
        /// The table.
        table: String,
    },
    /// Distributes a tenant-scoped table by its tenant column, co-located with
    /// `colocate_with`, or, for the first of its tenant column type, in a co-location
    /// group of its own (`none`): the application's tables are not mixed into Citus'
    /// default group with unrelated tables of the database, whose shards a tenant's
    /// isolation or move would otherwise take along.
    Distribute {
        /// The table.
        table: String,
        /// Its tenant column.
        column: String,
        /// The table it is co-located with.
        colocate_with: Option<String>,
    },
    /// Puts a dropped foreign key back.
    AddForeignKey {
        /// The table that holds it.
        table: String,
        /// The constraint.
        name: String,
        /// Its definition, as PostgreSQL wrote it.
        definition: String,
    },
}

impl DistributionStep {
    /// The statement this step runs: table names and columns are bound as values where
    /// the function takes them; the `ALTER TABLE`s name tables as PostgreSQL wrote them
    /// and constraints quoted.
    pub fn statement(&self) -> Statement {
        let pg = DbBackend::Postgres;
        match self {
            DistributionStep::DropForeignKey { table, name } => Statement::from_string(
                pg,
                format!("ALTER TABLE {table} DROP CONSTRAINT {}", quote_ident(name)),
            ),
            DistributionStep::Reference { table } => Statement::from_sql_and_values(
                pg,
                "SELECT create_reference_table($1::regclass)",
                [Value::from(table.as_str())],
            ),
            DistributionStep::Distribute {
                table,
                column,
                colocate_with,
            } => Statement::from_sql_and_values(
                pg,
                "SELECT create_distributed_table($1::regclass, $2, colocate_with => $3)",
                [
                    Value::from(table.as_str()),
                    Value::from(column.as_str()),
                    Value::from(colocate_with.as_deref().unwrap_or("none")),
                ],
            ),
            DistributionStep::AddForeignKey {
                table,
                name,
                definition,
            } => Statement::from_string(
                pg,
                format!(
                    "ALTER TABLE {table} ADD CONSTRAINT {} {definition}",
                    quote_ident(name)
                ),
            ),
        }
    }
}

/// What [`distribute`] changed: the steps it ran, in order (none when every table was
/// already distributed as it should be).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Distribution {
    /// The steps run.
    pub steps: Vec<DistributionStep>,
}

/// Distributes the tables of this program's entities on the Citus coordinator `conn` (the
/// owner's connection: the admin one, not the guarded tenant connection): tenant-scoped
/// tables by their tenant column, co-located; global ones as reference tables. Tables
/// that do not exist yet are left for a later call; tables already distributed as they
/// should be are left as they are, so a second call changes nothing.
///
/// Every problem is found before anything changes, and reported together
/// ([`Error::Config`](crate::Error::Config)): a unique key or primary key of a tenant-scoped table without the
/// tenant column (Citus cannot keep it unique across nodes: make the key `(tenant_id,
/// id)`), a foreign key between tenant-scoped tables that does not pair their tenant
/// columns, one from a global table to a tenant-scoped one, one to or from a table no
/// entity of this program names, or a table Citus already keeps another way.
///
/// Run it where the tables are made: in a migration, after the tables are created (its
/// statements run one at a time on the migration's connection, so a transaction there
/// makes them atomic), or at start.
pub async fn distribute(conn: &impl ConnectionTrait) -> Result<Distribution> {
    let state = catalog_state(conn).await?;
    let steps = plan(registered(), &state)?;
    if !steps.is_empty() {
        // Inside a transaction (a migration's), Citus refuses a foreign key on a table
        // it changed in parallel a statement before: the steps go one connection per
        // node, sequentially. Transaction-local; outside one it ends with the statement.
        conn.execute_raw(Statement::from_string(
            pg_backend(),
            "SELECT set_config('citus.multi_shard_modify_mode', 'sequential', true)",
        ))
        .await?;
    }
    for step in &steps {
        tracing::info!(target: "tenancy::citus", ?step, "distributing");
        conn.execute_raw(step.statement()).await?;
    }
    Ok(Distribution { steps })
}

/// How the coordinator keeps each table of this program's entities that exists.
pub(crate) async fn catalog_state(conn: &impl ConnectionTrait) -> Result<Vec<TableState>> {
    let pg = DbBackend::Postgres;
    let mut tables = Vec::new();
    for described in registered() {
        let name = match &described.schema {
            Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(&described.table)),
            None => quote_ident(&described.table),
        };
        let Some(row) = conn
            .query_one_raw(Statement::from_sql_and_values(
                pg,
                // Citus' own catalog (`pg_dist_partition`, in `pg_catalog` like its
                // functions): hash-distributed with a column, or a reference table (no
                // column, replicated to every node), or another kind.
                "SELECT c.oid::regclass::text AS qualified, n.nspname::text AS schema, \
                 c.relname::text AS name, \
                 CASE WHEN p.logicalrelid IS NULL THEN NULL \
                      WHEN p.partmethod = 'h' THEN 'distributed' \
                      WHEN p.partmethod = 'n' AND p.repmodel = 't' THEN 'reference' \
                      WHEN p.colocationid = 0 THEN 'local' ELSE 'schema' END AS kind, \
                 CASE WHEN p.partmethod = 'h' \
                      THEN column_to_column_name(p.logicalrelid, p.partkey) END AS column \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 LEFT JOIN pg_dist_partition p ON p.logicalrelid = c.oid \
                 WHERE c.oid = to_regclass($1)",
                [Value::from(name)],
            ))
            .await?
        else {
            continue;
        };
        let qualified: String = row.try_get("", "qualified")?;
        if tables.iter().any(|t: &TableState| t.qualified == qualified) {
            continue;
        }
        let kind: Option<String> = row.try_get("", "kind")?;
        let column: Option<String> = row.try_get("", "column")?;
        let citus = match (kind.as_deref(), column) {
            (None, _) => TableKind::Local,
            (Some("reference"), _) => TableKind::Reference,
            (Some("distributed"), Some(column)) => TableKind::Distributed { column },
            (Some(other), _) => TableKind::Other(other.to_owned()),
        };
        let tenant_type = match &described.tenant_column {
            Some(column) => conn
                .query_one_raw(Statement::from_sql_and_values(
                    pg,
                    "SELECT format_type(atttypid, atttypmod) AS kind FROM pg_attribute \
                     WHERE attrelid = $1::regclass AND attname = $2 AND NOT attisdropped",
                    [
                        Value::from(qualified.as_str()),
                        Value::from(column.as_str()),
                    ],
                ))
                .await?
                .map(|row| row.try_get::<String>("", "kind"))
                .transpose()?,
            None => None,
        };
        let unique = conn
            .query_all_raw(Statement::from_sql_and_values(
                pg,
                format!(
                    "SELECT ic.relname::text AS name, {} AS columns \
                     FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid \
                     WHERE i.indisunique AND i.indrelid = $1::regclass ORDER BY 1",
                    column_names("i.indrelid", "i.indkey::int2[]")
                ),
                [Value::from(qualified.as_str())],
            ))
            .await?
            .iter()
            .map(|row| Ok((row.try_get("", "name")?, split(row, "columns")?)))
            .collect::<Result<Vec<_>>>()?;
        let foreign_keys = conn
            .query_all_raw(Statement::from_sql_and_values(
                pg,
                format!(
                    "SELECT con.conname::text AS name, con.conrelid::regclass::text AS tbl, \
                     con.confrelid::regclass::text AS refs, {} AS columns, {} AS referenced, \
                     pg_get_constraintdef(con.oid) AS definition \
                     FROM pg_constraint con WHERE con.contype = 'f' \
                     AND (con.conrelid = $1::regclass OR con.confrelid = $1::regclass) \
                     ORDER BY 2, 1",
                    column_names("con.conrelid", "con.conkey"),
                    column_names("con.confrelid", "con.confkey")
                ),
                [Value::from(qualified.as_str())],
            ))
            .await?
            .iter()
            .map(|row| {
                Ok(ForeignKey {
                    name: row.try_get("", "name")?,
                    table: row.try_get("", "tbl")?,
                    columns: split(row, "columns")?,
                    references: row.try_get("", "refs")?,
                    referenced: split(row, "referenced")?,
                    definition: row.try_get("", "definition")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        tables.push(TableState {
            qualified,
            schema: row.try_get("", "schema")?,
            name: row.try_get("", "name")?,
            citus,
            tenant_type,
            unique,
            foreign_keys,
        });
    }
    Ok(tables)
}

/// The names of the columns `keys` (attribute numbers of `relation`), in order, joined
/// by a comma: a column name cannot hold one that matters here (the entities' columns are
/// plain names), and a comma-joined text needs no array support from the driver.
fn column_names(relation: &str, keys: &str) -> String {
    format!(
        "(SELECT string_agg(a.attname::text, ',' ORDER BY k.n) \
         FROM unnest({keys}) WITH ORDINALITY AS k(attnum, n) \
         JOIN pg_attribute a ON a.attrelid = {relation} AND a.attnum = k.attnum)"
    )
}

fn split(row: &QueryResult, column: &str) -> Result<Vec<String>> {
    let joined: Option<String> = row.try_get("", column)?;
    Ok(joined
        .unwrap_or_default()
        .split(',')
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect())
}

fn pg_backend() -> DbBackend {
    DbBackend::Postgres
}

/// `name` as a quoted PostgreSQL identifier.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
