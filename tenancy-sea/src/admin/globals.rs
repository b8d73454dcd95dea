//! Writes to global entities: tables shared by every tenant (plans, currencies). Under
//! sharding each shard holds a copy, so tenant handles read them next to the tenant's
//! rows; a write goes to every copy, or to none.

use crate::entity::{GlobalEntity, SqlTenantId};
use crate::error::{Error, Result};
use crate::scope::{Meter, RunTraced, UnitTxn};
use crate::shard::commit_all;
use crate::tenancy::Tenancy;
use sea_orm::{
    ActiveModelTrait, ActiveValue, ConnectionTrait, DatabaseConnection, DeleteMany, EntityName,
    EntityTrait, Iterable, PrimaryKeyToColumn, QueryTrait, TransactionTrait, UpdateMany,
};
use tenancy_core::ShardId;
use tracing::Instrument;

/// Writes to [`GlobalEntity`] tables, made by [`Tenancy::globals`]: under sharding the
/// same statement runs on every shard, each in its own transaction, and all commit only
/// once every shard has run it and reported the same number of rows (shards that
/// disagree have diverged: nothing is committed and the call is
/// [`Error::GlobalDiverged`]). Transactions do not span shards: a commit that fails after
/// others succeeded is [`Error::PartialCommit`], naming the shards that hold the write.
/// Without sharding it runs on the main connection.
///
/// ```
/// # use tenancy_sea::prelude::*;
/// # mod plan {
/// #     use sea_orm::entity::prelude::*;
/// #     use tenancy_sea::prelude::*;
/// #     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, GlobalEntity)]
/// #     #[sea_orm(table_name = "plans")]
/// #     pub struct Model {
/// #         #[sea_orm(primary_key, auto_increment = false)]
/// #         pub id: i64,
/// #         pub name: String,
/// #     }
/// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// #     pub enum Relation {}
/// #     impl ActiveModelBehavior for ActiveModel {}
/// # }
/// # async fn demo(tenancy: Tenancy<i64>) -> tenancy_sea::Result<()> {
/// use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set};
/// let globals = tenancy.globals();
/// globals
///     .insert(plan::ActiveModel { id: Set(1), name: Set("free".into()) })
///     .await?;
/// let renamed = plan::Entity::update_many()
///     .col_expr(plan::Column::Name, sea_orm::sea_query::Expr::value("starter"))
///     .filter(plan::Column::Id.eq(1));
/// assert_eq!(globals.update_many(renamed).await?, 1);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Globals {
    copies: Vec<(ShardId, DatabaseConnection)>,
    sharded: bool,
    /// The labels each copy's statement is counted under (feature `metrics`).
    meter: Meter,
}

impl<T: SqlTenantId> Tenancy<T> {
    /// Writes to global tables: see [`Globals`].
    pub fn globals(&self) -> Globals {
        match self.topology() {
            Ok(topology) => Globals {
                copies: topology.shards(),
                sharded: true,
                meter: self.meter(None),
            },
            Err(_) => Globals {
                copies: vec![(
                    ShardId::new(crate::scope::UNSHARDED),
                    self.unscoped().clone(),
                )],
                sharded: false,
                meter: self.meter(None),
            },
        }
    }
}

impl<T: SqlTenantId> Tenancy<T> {
    /// Fills `shard`'s empty copy of the global table `E` from another shard's copy: for a
    /// shard made by [`create_shard`](Tenancy::create_shard), before tenants are placed on
    /// it (its global tables start empty, and [`Globals`] writes would find it diverged).
    /// Returns the rows copied. A copy that holds rows already is refused.
    pub async fn copy_global<E>(&self, shard: impl Into<ShardId>) -> Result<u64>
    where
        E: GlobalEntity,
        E::Model: sea_orm::IntoActiveModel<E::ActiveModel> + Sync,
        E::ActiveModel: ActiveModelTrait<Entity = E> + Send,
    {
        use sea_orm::{IntoActiveModel, PaginatorTrait};
        let shard = shard.into();
        let topology = self.topology()?;
        let target = topology.connection(&shard)?;
        let table = E::default().table_name();
        let source = topology
            .shards()
            .into_iter()
            .find(|(id, _)| *id != shard)
            .ok_or_else(|| {
                Error::Config(format!("no other shard holds a copy of `{table}` to copy"))
            })?;
        let present = PaginatorTrait::count(E::find(), &target).await?;
        if present > 0 {
            return Err(Error::GlobalCopyNotEmpty {
                shard: shard.to_string(),
                table,
                rows: present,
            });
        }
        let rows = E::find()
            .all(&source.1)
            .await
            .map_err(|source_err| Error::Shard {
                shard: source.0.to_string(),
                source: source_err,
            })?;
        let mut copied = 0;
        let txn = target.begin().await?;
        // Chunks keep each statement under every backend's limit of bound parameters.
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<E::ActiveModel> = rows
                .by_ref()
                .take(500)
                .map(|model| model.into_active_model().reset_all())
                .collect();
            copied += chunk.len() as u64;
            E::insert_many(chunk).exec_without_returning(&txn).await?;
        }
        txn.commit().await?;
        tracing::info!(%shard, table, rows = copied, "global table copied");
        Ok(copied)
    }
}

impl Globals {
    /// One copy to read from, with no tenant scoping at all: the first shard (every shard
    /// holds the same rows), or the main connection. An escape hatch, like
    /// [`Tenancy::unscoped`]: it reads every table, not only the global ones.
    pub fn unscoped_reader(&self) -> Option<&DatabaseConnection> {
        tracing::debug!(target: "tenancy::unscoped", "unscoped global reader handed out");
        self.copies.first().map(|(_, conn)| conn)
    }

    /// Inserts one row into every copy; returns the rows inserted per copy (1). Under
    /// sharding its primary key must be set, so that every copy holds the same row.
    pub async fn insert<A>(&self, am: A) -> Result<u64>
    where
        A: ActiveModelTrait + Send,
        A::Entity: GlobalEntity,
    {
        self.insert_many([am]).await
    }

    /// Inserts rows into every copy, in one statement per copy; returns the rows inserted
    /// per copy. Under sharding every primary key must be set.
    pub async fn insert_many<A, I>(&self, models: I) -> Result<u64>
    where
        A: ActiveModelTrait + Send,
        A::Entity: GlobalEntity,
        I: IntoIterator<Item = A>,
    {
        let models: Vec<A> = models.into_iter().collect();
        if models.is_empty() {
            return Ok(0);
        }
        if self.sharded {
            for am in &models {
                for key in <A::Entity as EntityTrait>::PrimaryKey::iter() {
                    if let ActiveValue::NotSet = am.get(key.into_column()) {
                        return Err(Error::Config(format!(
                            "a row of the global table `{}` is written to every shard, so \
                             its primary key must be set (each shard would number it \
                             differently)",
                            A::Entity::default().table_name()
                        )));
                    }
                }
            }
        }
        self.run(
            A::Entity::default().table_name(),
            A::Entity::insert_many(models),
        )
        .await
    }

    /// Runs a SeaORM update of a global table on every copy; returns the rows changed per
    /// copy.
    pub async fn update_many<E: GlobalEntity>(&self, update: UpdateMany<E>) -> Result<u64> {
        self.run(E::default().table_name(), update).await
    }

    /// Runs a SeaORM delete of a global table on every copy; returns the rows deleted per
    /// copy.
    pub async fn delete_many<E: GlobalEntity>(&self, delete: DeleteMany<E>) -> Result<u64> {
        self.run(E::default().table_name(), delete).await
    }

    async fn run<Q: QueryTrait>(&self, table: &'static str, statement: Q) -> Result<u64> {
        let span = tracing::info_span!("tenancy", table, op = "global_write");
        self.run_on_copies(table, statement).instrument(span).await
    }

    async fn run_on_copies<Q: QueryTrait>(&self, table: &'static str, statement: Q) -> Result<u64> {
        let mut open = Vec::with_capacity(self.copies.len());
        let mut counts: Vec<(ShardId, u64)> = Vec::with_capacity(self.copies.len());
        for (shard, conn) in &self.copies {
            let failed = |source| Error::Shard {
                shard: shard.to_string(),
                source,
            };
            let built = statement.build(conn.get_database_backend());
            let span = tracing::info_span!("shard", shard = %shard);
            let (txn, result) = async {
                let txn = conn.begin().await?;
                let result = txn.execute_raw(built).await?;
                Ok((txn, result))
            }
            .traced(self.meter.on_shard(shard).statement("global_write", span))
            .await
            .map_err(failed)?;
            counts.push((shard.clone(), result.rows_affected()));
            open.push((shard, txn));
        }
        let first = counts.first().map_or(0, |(_, n)| *n);
        if counts.iter().any(|(_, n)| *n != first) {
            // Dropping the open transactions rolls every copy back.
            return Err(Error::GlobalDiverged { table, counts });
        }
        commit_all(
            open.into_iter()
                .map(|(shard, txn)| (shard.to_string(), UnitTxn::sea(txn))),
        )
        .await?;
        Ok(first)
    }
}
