//! Migrations of a tenant schema that keep its shape marker (see `scope::shape`): the
//! marker of the schema's shape, and no other, once the migration commits; a trigger on
//! the migrations table that drops the marker when anything else changes it.

use crate::error::Result;
use crate::scope::{marker_exists_sql, marker_name, shape_sql, trigger_sql};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement, Value};
use sea_orm_migration::MigratorTrait;
use tenancy_core::Identifier;

/// Runs `M`'s pending migrations in `schema`, which `txn` has entered; with `marked` (the
/// migrations table, when the library keeps markers), keeps the schema's marker. `fresh`:
/// the schema was made in `txn`, so no unit can hold a lock in it.
///
/// The old marker is dropped before `M` changes any table: the drop waits for the units
/// that hold it (they hold no lock the migration takes before it), and units begun after
/// wait for the migration, then find the marker gone and read the new shape. With nothing
/// pending, the marker is only checked (one statement), and made when it is missing (a
/// schema migrated before markers, or by something else, whose trigger dropped it).
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
            let (shape, marked) = shape_and_marked(txn, schema, table).await?;
            if marked {
                // `IF EXISTS`: a migration of the same schema in another process may
                // have dropped it while this one waited for it; this one then finds
                // nothing pending, and the marker of the new shape in place.
                txn.execute_unprepared(&format!("DROP VIEW IF EXISTS {}", view(schema, shape)?))
                    .await?;
            }
        }
        M::up(txn, None).await?;
    }
    let (shape, marked) = shape_and_marked(txn, schema, table).await?;
    if marked {
        return Ok(());
    }
    // The trigger first (it locks the migrations table against writes only, which units
    // never make), then the marker, which every role may lock. The function's body is not
    // checked when made (half the cost of provisioning's markers): it is the crate's own,
    // and runs at every write of the migrations table.
    let view = view(schema, shape)?;
    txn.execute_unprepared(&format!(
        "SET LOCAL check_function_bodies = off; {}; CREATE VIEW {view} AS SELECT 1 AS shape; \
         GRANT SELECT ON {view} TO PUBLIC",
        trigger_sql(schema, table)
    ))
    .await?;
    Ok(())
}

/// The marker view of `shape` in `schema`, quoted.
fn view(schema: &Identifier, shape: i32) -> Result<String> {
    Ok(format!(
        "{}.{}",
        schema.quoted(),
        Identifier::new(&marker_name(shape))?.quoted()
    ))
}

/// `schema`'s shape, read from its migrations table `table`, and whether the schema holds
/// the marker of it.
async fn shape_and_marked(
    txn: &DatabaseTransaction,
    schema: &Identifier,
    table: &Identifier,
) -> Result<(i32, bool)> {
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "SELECT m.shape, {} AS marked FROM ({}) AS m",
                marker_exists_sql("$1::text", "m.shape"),
                shape_sql(schema, table)
            ),
            [Value::from(schema.as_str())],
        ))
        .await?;
    match row {
        Some(row) => Ok((row.try_get("", "shape")?, row.try_get("", "marked")?)),
        None => Ok((0, false)),
    }
}
