//! Migrations of a tenant schema that keep its shape marker (see `scope::shape`): the
//! marker of the schema's shape, and only it, once the migration commits; a trigger on the
//! migrations table that drops the markers when anything else changes it.

use crate::error::Result;
use crate::scope::{IS_MARKER, marker_name, shape_sql, trigger_sql};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement, Value};
use sea_orm_migration::MigratorTrait;
use tenancy_core::Identifier;

/// Runs `M`'s pending migrations in `schema`, which `txn` has entered; with `marked` (the
/// migrations table, when the library keeps markers), keeps the schema's marker. `fresh`:
/// the schema was made in `txn`, so no unit can hold a lock in it.
///
/// The old markers are dropped before `M` changes any table: the drop waits for the units
/// that hold one (they hold no lock the migration takes before it), and units begun after
/// wait for the migration, then find the marker gone and read the new shape. With nothing
/// pending, the marker is only checked, and made or replaced when it is missing or stale
/// (a schema migrated before markers, or by something else, whose trigger dropped it).
pub(crate) async fn migrate_schema<M: MigratorTrait>(
    txn: &DatabaseTransaction,
    schema: &Identifier,
    marked: Option<&Identifier>,
    fresh: bool,
) -> Result<()> {
    let Some(table) = marked else {
        M::up(txn, None).await?;
        return Ok(());
    };
    let pending = fresh || !M::get_pending_migrations(txn).await?.is_empty();
    if pending {
        if !fresh {
            let (_, markers) = shape_and_markers(txn, schema, table).await?;
            drop_views(txn, schema, &markers).await?;
        }
        M::up(txn, None).await?;
    }
    let (shape, markers) = shape_and_markers(txn, schema, table).await?;
    let wanted = marker_name(shape);
    if markers == [wanted.as_str()] {
        return Ok(());
    }
    // The trigger first (it locks the migrations table against writes only, which units
    // never make), then the markers.
    txn.execute_unprepared(&trigger_sql(schema, table)).await?;
    let stale: Vec<String> = markers.into_iter().filter(|m| *m != wanted).collect();
    drop_views(txn, schema, &stale).await?;
    let view = format!("{}.{}", schema.quoted(), Identifier::new(&wanted)?.quoted());
    txn.execute_unprepared(&format!(
        "CREATE OR REPLACE VIEW {view} AS SELECT 1 AS shape; GRANT SELECT ON {view} TO PUBLIC"
    ))
    .await?;
    Ok(())
}

/// `schema`'s shape, read from its migrations table `table`, and the names of the markers
/// it holds.
async fn shape_and_markers(
    txn: &DatabaseTransaction,
    schema: &Identifier,
    table: &Identifier,
) -> Result<(i32, Vec<String>)> {
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "SELECT ({}) AS shape, (SELECT string_agg(c.relname::text, ',') \
                 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n \
                 ON n.oid = c.relnamespace WHERE n.nspname = $1 AND {IS_MARKER}) AS markers",
                shape_sql(schema, table)
            ),
            [Value::from(schema.as_str())],
        ))
        .await?;
    let Some(row) = row else {
        return Ok((0, Vec::new()));
    };
    let markers: Option<String> = row.try_get("", "markers")?;
    let markers = markers
        .map(|m| m.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    Ok((row.try_get("", "shape")?, markers))
}

/// Drops the views `names` of `schema` (marker names, from the catalog: each matched the
/// markers' pattern, and is quoted all the same).
async fn drop_views(
    txn: &DatabaseTransaction,
    schema: &Identifier,
    names: &[String],
) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let views: Vec<String> = names
        .iter()
        .map(|name| {
            Ok(format!(
                "{}.{}",
                schema.quoted(),
                Identifier::new(name)?.quoted()
            ))
        })
        .collect::<Result<_>>()?;
    txn.execute_unprepared(&format!("DROP VIEW IF EXISTS {}", views.join(", ")))
        .await?;
    Ok(())
}
