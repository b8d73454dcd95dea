//! What a move runs: its units of work on each shard (each with the tenant's set-up first),
//! and each entity's part of it ([`MoveStep`]): copying, counting and deleting the tenant's
//! rows, removing those another shard holds identically, and advancing sequences.

use super::move_digest::{Digest, DigestKind};
use super::move_fence::FenceTable;
use crate::entity::{ScopedEntity, SqlTenantId, TenantScoped};
use crate::error::Result;
use crate::scope;
use crate::scope::quote_identifier;
use crate::scope::{Session, Tag, Tagged, UnitTxn, begin_unit};
use futures_util::TryStreamExt;
use futures_util::future::BoxFuture;
use sea_orm::QueryTrait;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, SimpleExpr};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait,
    IdenStatic, IntoActiveModel, Iterable, ModelTrait, PaginatorTrait, PrimaryKeyToColumn,
    PrimaryKeyTrait, QueryFilter, QuerySelect, Statement,
};
use std::marker::PhantomData;

/// Bind parameters per copying statement, under every backend's limit (SQLite's is the
/// lowest, 32,766).
const PARAMETERS_PER_STATEMENT: usize = 30_000;

/// One unit of a move on one shard: a transaction whose first statement is the tenant's
/// set-up under the tenancy's isolation (its setting, its schema), and the tag the unit's
/// statements carry (a tenant schema's shape). Under row level it is a plain transaction.
pub(crate) struct Unit {
    pub(super) txn: UnitTxn,
    pub(super) tag: Tag,
}

impl Unit {
    /// Begins a unit on `conn`, with `session` run first.
    pub(super) async fn begin(
        conn: &DatabaseConnection,
        session: Option<&Session>,
    ) -> Result<Unit> {
        let (txn, tag) = begin_unit(conn, session).await?;
        Ok(Unit {
            txn,
            tag: tag.unwrap_or_default(),
        })
    }

    /// The unit's connection: its statements carry its tag.
    pub(super) fn conn(&self) -> Tagged<'_, UnitTxn> {
        Tagged {
            inner: &self.txn,
            tag: &self.tag,
        }
    }

    pub(super) async fn commit(self) -> Result<()> {
        Ok(self.txn.commit().await?)
    }

    pub(super) async fn rollback(self) {
        let _ = self.txn.rollback().await;
    }
}

/// Runs `work` in a unit on `conn` that commits after it: a read of the tenant's rows as
/// they are now (each such read sees what committed before it, on every backend).
pub(super) async fn read<R>(
    conn: &DatabaseConnection,
    session: Option<&Session>,
    work: impl AsyncFnOnce(&Unit) -> Result<R>,
) -> Result<R> {
    let unit = Unit::begin(conn, session).await?;
    let out = work(&unit).await?;
    unit.commit().await?;
    Ok(out)
}

/// One entity's part of a move, with its type erased so that one move spans many.
pub(super) trait MoveStep<T>: Send + Sync {
    fn table(&self) -> &'static str;

    /// Copies the tenant's rows from `from` into `to`, returning how many.
    fn copy<'a>(
        &'a self,
        from: &'a Unit,
        to: &'a Unit,
        tenant: &'a T,
    ) -> BoxFuture<'a, Result<u64>>;

    /// Counts the tenant's rows in `unit`.
    fn count<'a>(&'a self, unit: &'a Unit, tenant: &'a T) -> BoxFuture<'a, Result<u64>>;

    /// Deletes the tenant's rows in `unit`, returning how many.
    fn delete<'a>(&'a self, unit: &'a Unit, tenant: &'a T) -> BoxFuture<'a, Result<u64>>;

    /// Deletes in `other` each of the tenant's rows that `home` holds too, with the same
    /// primary key and the same value in every column; returns how many were removed and
    /// how many kept (rows `home` does not hold, or holds otherwise).
    fn remove_verified<'a>(
        &'a self,
        home: &'a Unit,
        other: &'a Unit,
        tenant: &'a T,
    ) -> BoxFuture<'a, Result<(u64, u64)>>;

    /// The tenant's rows of the entity by content, in `unit`, computed as `kind` says (see
    /// [`Digest`]).
    fn digest<'a>(
        &'a self,
        unit: &'a Unit,
        tenant: &'a T,
        kind: DigestKind,
    ) -> BoxFuture<'a, Result<Digest>>;

    /// Deletes the tenant's rows in `unit` and returns the digest of what went, in one
    /// statement (PostgreSQL).
    fn delete_with_digest<'a>(
        &'a self,
        unit: &'a Unit,
        tenant: &'a T,
    ) -> BoxFuture<'a, Result<Digest>>;

    /// The entity's table as a move's fence covers it: in `schema` (the tenant's schema,
    /// every row of it the tenant's) or in the entity's own schema by its tenant column.
    fn fence_table(&self, schema: Option<&str>) -> FenceTable;

    /// On PostgreSQL, moves the sequence of an auto-increment key past the copied ids, so
    /// the shard's next insert does not collide with them (MySQL and SQLite do this on
    /// their own).
    fn advance_sequence<'a>(&'a self, unit: &'a Unit) -> BoxFuture<'a, Result<()>>;
}

/// The statement that reads the tenant's rows of `E` in `unit`, carrying the unit's tag.
pub(super) fn tenant_rows<E, T>(unit: &Unit, tenant: &T) -> Statement
where
    T: SqlTenantId,
    E: TenantScoped<TenantId = T> + ScopedEntity<T>,
{
    let backend = unit.txn.get_database_backend();
    let statement = E::find()
        .filter(scope::equals(
            E::tenant_column(),
            &tenant.clone().into(),
            backend,
        ))
        .build(backend);
    unit.tag.apply(statement)
}

pub(super) struct EntityStep<E>(pub(super) PhantomData<fn() -> E>);

impl<T, E> MoveStep<T> for EntityStep<E>
where
    T: SqlTenantId,
    E: TenantScoped<TenantId = T> + ScopedEntity<T>,
    E::Model: IntoActiveModel<E::ActiveModel> + Sync,
    E::ActiveModel: ActiveModelTrait<Entity = E> + Send,
{
    fn table(&self) -> &'static str {
        E::default().table_name()
    }

    fn copy<'a>(
        &'a self,
        from: &'a Unit,
        to: &'a Unit,
        tenant: &'a T,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let per_statement =
                (PARAMETERS_PER_STATEMENT / E::Column::iter().count().max(1)).max(1);
            // Streamed: a stream takes a statement, so it carries the unit's tag itself.
            let mut rows = E::find()
                .from_raw_sql(tenant_rows::<E, T>(from, tenant))
                .stream(&from.txn)
                .await?;
            let to = &to.conn();
            let mut batch = Vec::with_capacity(per_statement);
            let mut copied = 0;
            while let Some(model) = rows.try_next().await? {
                batch.push(model.into_active_model());
                if batch.len() == per_statement {
                    copied += insert_batch::<E>(&mut batch, to).await?;
                }
            }
            copied += insert_batch::<E>(&mut batch, to).await?;
            Ok(copied)
        })
    }

    fn count<'a>(&'a self, unit: &'a Unit, tenant: &'a T) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let conn = &unit.conn();
            Ok(E::find()
                .filter(scope::equals(
                    E::tenant_column(),
                    &tenant.clone().into(),
                    conn.get_database_backend(),
                ))
                .count(conn)
                .await?)
        })
    }

    fn delete<'a>(&'a self, unit: &'a Unit, tenant: &'a T) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let txn = &unit.conn();
            Ok(E::delete_many()
                .filter(scope::equals(
                    E::tenant_column(),
                    &tenant.clone().into(),
                    txn.get_database_backend(),
                ))
                .exec(txn)
                .await?
                .rows_affected)
        })
    }

    fn remove_verified<'a>(
        &'a self,
        home: &'a Unit,
        other: &'a Unit,
        tenant: &'a T,
    ) -> BoxFuture<'a, Result<(u64, u64)>> {
        Box::pin(async move {
            let (home, other) = (&home.conn(), &other.conn());
            let value: sea_orm::Value = tenant.clone().into();
            let rows = E::find()
                .filter(scope::equals(
                    E::tenant_column(),
                    &value,
                    other.get_database_backend(),
                ))
                .all(other)
                .await?;
            let (mut removed, mut kept) = (0, 0);
            for row in rows {
                let by_key = || {
                    E::PrimaryKey::iter().fold(sea_orm::Condition::all(), |condition, key| {
                        let column = key.into_column();
                        condition.add(column.into_expr().eq(row.get(column)))
                    })
                };
                let held = E::find()
                    .filter(scope::equals(
                        E::tenant_column(),
                        &value,
                        home.get_database_backend(),
                    ))
                    .filter(by_key())
                    .one(home)
                    .await?;
                let same = held.is_some_and(|held| {
                    E::Column::iter().all(|column| held.get(column) == row.get(column))
                });
                if !same {
                    kept += 1;
                    continue;
                }
                removed += E::delete_many()
                    .filter(scope::equals(
                        E::tenant_column(),
                        &value,
                        other.get_database_backend(),
                    ))
                    .filter(by_key())
                    .exec(other)
                    .await?
                    .rows_affected;
            }
            Ok((removed, kept))
        })
    }

    fn digest<'a>(
        &'a self,
        unit: &'a Unit,
        tenant: &'a T,
        kind: DigestKind,
    ) -> BoxFuture<'a, Result<Digest>> {
        Box::pin(super::move_digest::digest::<T, E>(unit, tenant, kind))
    }

    fn delete_with_digest<'a>(
        &'a self,
        unit: &'a Unit,
        tenant: &'a T,
    ) -> BoxFuture<'a, Result<Digest>> {
        Box::pin(super::move_digest::delete_with_digest::<T, E>(unit, tenant))
    }

    fn fence_table(&self, schema: Option<&str>) -> FenceTable {
        let entity = E::default();
        match schema {
            Some(schema) => FenceTable {
                table: entity.table_name(),
                schema: Some(schema.to_owned()),
                column: None,
            },
            None => FenceTable {
                table: entity.table_name(),
                schema: entity.schema_name().map(str::to_owned),
                column: Some(E::tenant_column().as_str()),
            },
        }
    }

    fn advance_sequence<'a>(&'a self, unit: &'a Unit) -> BoxFuture<'a, Result<()>> {
        let key = {
            let mut keys = E::PrimaryKey::iter();
            match (keys.next(), keys.next()) {
                (Some(key), None) => Some(key),
                _ => None,
            }
        };
        Box::pin(async move {
            let Some(key) = key else {
                return Ok(());
            };
            let txn = &unit.conn();
            if txn.get_database_backend() != DbBackend::Postgres
                || !<E::PrimaryKey as PrimaryKeyTrait>::auto_increment()
            {
                return Ok(());
            }
            let column = key.into_column();
            let max: Option<i64> = E::find()
                .select_only()
                .column_as(
                    SimpleExpr::from(Func::cast_as(Expr::col(column).max(), Alias::new("BIGINT"))),
                    "max",
                )
                .into_tuple()
                .one(txn)
                .await?
                .flatten();
            let Some(max) = max else {
                return Ok(());
            };
            // The table's name reaches the server as a bound value, quoted as an
            // identifier for `pg_get_serial_sequence`; a key without a sequence gives
            // NULL, which leaves everything as it was.
            let entity = E::default();
            let quote = |name: &str| quote_identifier(name, DbBackend::Postgres);
            let table = match entity.schema_name() {
                Some(schema) => format!("{}.{}", quote(schema), quote(entity.table_name())),
                None => quote(entity.table_name()),
            };
            txn.query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT setval(pg_get_serial_sequence($1, $2), \
                 GREATEST($3, nextval(pg_get_serial_sequence($1, $2))))",
                [table.into(), column.as_str().into(), max.into()],
            ))
            .await?;
            Ok(())
        })
    }
}

/// Inserts and empties `batch`, returning how many rows went in.
async fn insert_batch<E: EntityTrait>(
    batch: &mut Vec<E::ActiveModel>,
    to: &Tagged<'_, UnitTxn>,
) -> Result<u64>
where
    E::ActiveModel: ActiveModelTrait<Entity = E> + Send,
{
    if batch.is_empty() {
        return Ok(0);
    }
    let rows = std::mem::take(batch);
    Ok(E::insert_many(rows).exec_without_returning(to).await?)
}
