//! The end of a move: the tenant's rows removed from the shard it left, only where they are
//! still what was copied and verified, and under schema per tenant its old schema dropped
//! once empty; and the removal of the copies of a move abandoned after copying.

use super::move_digest::{Digest, DigestKind};
use super::move_fence::Fence;
use super::move_steps::{MoveStep, Unit};
use super::moves::{MoveProgress, SchemaOf};
use crate::entity::SqlTenantId;
use crate::error::{Error, Result};
use crate::scope::Session;
use crate::scope::quote_identifier;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use tenancy_core::Identifier;

/// Why the moved rows were not removed from the old shard.
pub(super) enum Removal {
    /// A table held other rows of the tenant than those copied.
    Late {
        table: &'static str,
        copied: u64,
        found: u64,
    },
    Failed(Error),
}

impl Removal {
    /// The error of a move of `tenant` from `from` to `to` that could not remove its old
    /// rows: [`Error::MoveLateWrites`] or [`Error::MoveUnfinished`].
    pub(super) fn into_error(self, tenant: &impl std::fmt::Display, from: &str, to: &str) -> Error {
        match self {
            Removal::Late {
                table,
                copied,
                found,
            } => Error::MoveLateWrites {
                tenant: tenant.to_string(),
                from: from.to_owned(),
                to: to.to_owned(),
                table,
                copied,
                found,
            },
            Removal::Failed(source) => Error::MoveUnfinished {
                tenant: tenant.to_string(),
                from: from.to_owned(),
                to: to.to_owned(),
                source: Box::new(source),
            },
        }
    }
}

impl From<Error> for Removal {
    fn from(error: Error) -> Self {
        Removal::Failed(error)
    }
}

impl From<sea_orm::DbErr> for Removal {
    fn from(error: sea_orm::DbErr) -> Self {
        Removal::Failed(error.into())
    }
}

/// The two shards of a move: each one's pool and the tenant's set-up there.
pub(super) struct Sides<'a> {
    pub(super) from: (&'a DatabaseConnection, Option<&'a Session>),
    pub(super) to: (&'a DatabaseConnection, Option<&'a Session>),
}

/// Deletes the moved rows from the old shard in one transaction, children first, passing
/// the move's fence, only if each table still holds exactly what was copied and verified
/// (`digests`, by content): a row written or changed there since keeps every row in place.
/// A table that holds none of the tenant's rows any more was removed already (by a run
/// that stopped before it could say so). Under schema per tenant the old schema goes too,
/// in the same transaction, when nothing is left in any of its tables.
pub(super) async fn remove_moved<T: SqlTenantId>(
    sides: &Sides<'_>,
    steps: &[Box<dyn MoveStep<T> + '_>],
    tenant: &T,
    digests: &[Digest],
    schema: Option<&SchemaOf>,
    fence: &Fence,
    progress: &(dyn Fn(&MoveProgress) + Send + Sync + '_),
) -> std::result::Result<u64, Removal> {
    let unit = Unit::begin(sides.from.0, sides.from.1).await?;
    fence.pass(&unit.txn).await?;
    let removed = remove_in(&unit, steps, tenant, digests, progress).await;
    // MariaDB's pass is the session's: ended before the connection goes back to the pool,
    // whatever happened.
    let closed = fence.close_pass(&unit.txn).await;
    let removed = match (removed, closed) {
        (Ok(removed), Ok(())) => removed,
        (Err(error), _) => {
            unit.rollback().await;
            return Err(error);
        }
        (Ok(_), Err(error)) => {
            unit.rollback().await;
            return Err(error.into());
        }
    };
    if let Some(schema) = schema {
        drop_if_empty(&unit.txn, &schema.name, schema.version_table.as_ref()).await?;
    }
    unit.commit().await?;
    Ok(removed)
}

/// The deletes of [`remove_moved`], in its transaction.
async fn remove_in<T: SqlTenantId>(
    unit: &Unit,
    steps: &[Box<dyn MoveStep<T> + '_>],
    tenant: &T,
    digests: &[Digest],
    progress: &(dyn Fn(&MoveProgress) + Send + Sync + '_),
) -> std::result::Result<u64, Removal> {
    let mut removed = 0;
    for (step, digest) in steps.iter().zip(digests).rev() {
        // Between PostgreSQL shards the delete returns the digest of what it deleted (one
        // pass); anywhere else the rows are digested, then deleted. Either way a table
        // that holds other rows than were copied keeps them all: the unit rolls back.
        let now = match digest.kind {
            DigestKind::Postgres => step.delete_with_digest(unit, tenant).await?,
            DigestKind::Read => step.digest(unit, tenant, digest.kind).await?,
        };
        if now.rows == 0 {
            continue;
        }
        if now != *digest {
            return Err(Removal::Late {
                table: step.table(),
                copied: digest.rows,
                found: now.rows,
            });
        }
        let rows = match digest.kind {
            DigestKind::Postgres => now.rows,
            DigestKind::Read => step.delete(unit, tenant).await?,
        };
        progress(&MoveProgress::Removing {
            table: step.table(),
            rows,
        });
        removed += rows;
    }
    Ok(removed)
}

/// Deletes the tenant's rows of every step on `conn` in one transaction, children first.
pub(super) async fn delete_rows<T: SqlTenantId>(
    conn: &DatabaseConnection,
    session: Option<&Session>,
    steps: &[Box<dyn MoveStep<T> + '_>],
    tenant: &T,
) -> Result<u64> {
    let unit = Unit::begin(conn, session).await?;
    let mut removed = 0;
    for step in steps.iter().rev() {
        removed += step.delete(&unit, tenant).await?;
    }
    unit.commit().await?;
    Ok(removed)
}

/// Drops `schema` in `txn` if none of its tables holds a row (the migrations table
/// aside): its tables locked first, so no write can land between the check and the drop.
/// A table the move did not name that still holds rows keeps the schema, and says so.
async fn drop_if_empty(
    txn: &impl ConnectionTrait,
    schema: &Identifier,
    version_table: Option<&Identifier>,
) -> Result<()> {
    let tables = txn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT tablename::text AS name FROM pg_tables WHERE schemaname = $1 ORDER BY 1",
            [schema.as_str().into()],
        ))
        .await?;
    let mut names = Vec::with_capacity(tables.len());
    for row in tables {
        // Names from the catalog are quoted as identifiers, never trusted as SQL.
        let name: String = row.try_get("", "name")?;
        if version_table.is_some_and(|v| v.as_str() == name) {
            continue;
        }
        names.push(format!(
            "{}.{}",
            schema.quoted(),
            quote_identifier(&name, DbBackend::Postgres)
        ));
    }
    if !names.is_empty() {
        txn.execute_unprepared(&format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            names.join(", ")
        ))
        .await?;
        for table in &names {
            let row = txn
                .query_one_raw(Statement::from_string(
                    DbBackend::Postgres,
                    format!("SELECT EXISTS (SELECT 1 FROM {table}) AS held"),
                ))
                .await?;
            if let Some(row) = row
                && row.try_get::<bool>("", "held")?
            {
                tracing::warn!(
                    target: "tenancy::move", schema = %schema, %table,
                    "the old tenant schema still holds rows of a table the move did not \
                     name: it is kept"
                );
                return Ok(());
            }
        }
    }
    txn.execute_unprepared(&format!("DROP SCHEMA {} CASCADE", schema.quoted()))
        .await?;
    Ok(())
}
