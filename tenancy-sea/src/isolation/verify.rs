//! The checks a [`Tenancy`](crate::Tenancy) runs against its database before it hands out the first
//! handle: that what the isolation relies on the database for is really there.

use super::Isolation;
use crate::entity::{Described, registered};
use crate::error::{Error, Result};
use crate::scope::quote_identifier;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, Value};

/// Checks on each of `conns` (the shared database, or every shard) what `isolation`
/// relies on the database for: see [`Tenancy::verify`](crate::Tenancy::verify).
pub(crate) async fn check(conns: &[DatabaseConnection], isolation: &Isolation) -> Result<()> {
    for conn in conns {
        match isolation {
            Isolation::RowLevelSecurity { setting } => check_rls(conn, setting).await?,
            Isolation::SchemaPerTenant { .. } => check_public(conn).await?,
            Isolation::RowLevel => {}
        }
    }
    Ok(())
}

fn scoped() -> impl Iterator<Item = (&'static Described, &'static str)> {
    registered()
        .iter()
        .filter_map(|entity| Some((entity, entity.tenant_column.as_deref()?)))
}

/// A PostgreSQL identifier in double quotes.
fn quote(name: &str) -> String {
    quote_identifier(name, sea_orm::DbBackend::Postgres)
}

async fn check_rls(conn: &DatabaseConnection, setting: &str) -> Result<()> {
    let role = conn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT current_user::text AS name, rolsuper OR rolbypassrls AS bypasses \
             FROM pg_roles WHERE rolname = current_user",
        ))
        .await?;
    if let Some(role) = role
        && role.try_get::<bool>("", "bypasses")?
    {
        let name: String = role.try_get("", "name")?;
        return Err(Error::RlsNotEnforced {
            tables: Vec::new(),
            reason: format!(
                "the application connects as {name}, a superuser or a role with BYPASSRLS, \
                 to which no policy applies: connect as a role that owns no table and is \
                 neither"
            ),
        });
    }
    let tables: Vec<(&Described, &str)> = scoped().collect();
    if tables.is_empty() {
        return Ok(());
    }
    let mut values = vec![
        Value::from(super::rls::POLICY_NAME),
        Value::from(setting.to_owned()),
    ];
    let mut rows = Vec::with_capacity(tables.len());
    for (entity, column) in &tables {
        let (name, shown) = match &entity.schema {
            Some(schema) => (
                format!("{}.{}", quote(schema), quote(&entity.table)),
                format!("{schema}.{}", entity.table),
            ),
            None => (quote(&entity.table), entity.table.clone()),
        };
        let at = values.len();
        rows.push(format!("(${}, ${}, ${})", at + 1, at + 2, at + 3));
        values.push(Value::from(name));
        values.push(Value::from((*column).to_owned()));
        values.push(Value::from(shown));
    }
    let sql = format!(
        "SELECT t.shown, c.oid IS NOT NULL AS present, \
         COALESCE(c.relrowsecurity AND c.relforcerowsecurity, false) AS forced, \
         EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = $1 \
           AND strpos(pg_get_expr(p.polqual, p.polrelid), $2) > 0 \
           AND strpos(pg_get_expr(p.polwithcheck, p.polrelid), $2) > 0 \
           AND strpos(pg_get_expr(p.polqual, p.polrelid), t.col) > 0) \
         AND NOT EXISTS (SELECT 1 FROM pg_policy q WHERE q.polrelid = c.oid \
           AND q.polname <> $1 AND q.polpermissive) AS policy \
         FROM (VALUES {}) AS t(name, col, shown) LEFT JOIN pg_class c ON c.oid = to_regclass(t.name)",
        rows.join(", ")
    );
    let mut uncovered = Vec::new();
    for row in conn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            values,
        ))
        .await?
    {
        let present: bool = row.try_get("", "present")?;
        let covered = row.try_get::<bool>("", "forced")? && row.try_get::<bool>("", "policy")?;
        if present && !covered {
            uncovered.push(row.try_get::<String>("", "shown")?);
        }
    }
    if uncovered.is_empty() {
        return Ok(());
    }
    uncovered.sort();
    Err(Error::RlsNotEnforced {
        reason: format!(
            "these tenant-scoped tables lack row-level security enabled and forced with the \
             `{}` policy on `{setting}` as their only permissive policy (another permissive \
             policy is ORed with it and widens it): run \
             `tenancy_sea::rls::enable_row_level_security` for them as their owner, and make \
             other policies restrictive",
            super::rls::POLICY_NAME
        ),
        tables: uncovered,
    })
}

async fn check_public(conn: &DatabaseConnection) -> Result<()> {
    let names: Vec<Value> = scoped()
        .filter(|(entity, _)| entity.schema.is_none())
        .map(|(entity, _)| Value::from(entity.table.clone()))
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT tablename::text AS name FROM pg_tables WHERE schemaname = 'public' \
         AND tablename IN ({}) ORDER BY tablename",
        placeholders.join(", ")
    );
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            names,
        ))
        .await?;
    let mut shared = Vec::with_capacity(rows.len());
    for row in rows {
        shared.push(format!("public.{}", row.try_get::<String>("", "name")?));
    }
    if shared.is_empty() {
        return Ok(());
    }
    Err(Error::Config(format!(
        "schema per tenant: {} has the name of a tenant-scoped entity's table; a tenant \
         whose schema lacks it would read and write it through `search_path`. Move it out \
         of `public` (tenant tables belong in the tenant schemas)",
        shared.join(", ")
    )))
}
