//! A tenant's reads on every shard: [`TenantDb::across_shards`] and the
//! [`TenantAcrossShards`] it makes, [`TenantDb::by_keys`], and [`FansOut`], which keeps a
//! transaction from fanning out.

use super::{TenantDb, TenantTxn};
use crate::entity::{ShardKeyed, SqlTenantId, TenantScoped};
use crate::error::{Error, Result};
use crate::scope::{self, UNSHARDED};
use crate::shard::{AcrossShards, ShardedSelect, Target};
use sea_orm::sea_query::Condition;
use sea_orm::{DatabaseConnection, Value};
use tenancy_core::{KeyType, ShardId};

/// A tenant's reads on every shard, made by [`TenantDb::across_shards`]: still filtered by
/// tenant, but fanned out and merged like [`AcrossShards`].
#[derive(Debug)]
pub struct TenantAcrossShards<'h, T: SqlTenantId> {
    handle: &'h TenantDb<T>,
}

impl<T: SqlTenantId> TenantAcrossShards<'_, T> {
    /// This tenant's rows of `E`, on every shard that can hold them.
    pub fn find<E: TenantScoped<TenantId = T>>(&self) -> ShardedSelect<E> {
        let handle = self.handle;
        let mut targets = match handle.topology() {
            Some(topology) if E::shard_key_column().is_some() => {
                if let Err(refused) = handle.inner.may_spread::<E>() {
                    return ShardedSelect::unmade(refused);
                }
                topology.targets(None, &handle.inner.meter)
            }
            _ => vec![handle.own_target(None)],
        };
        // Each shard's query carries the tenant condition its own backend compares
        // exactly, after the tenant's set-up (its setting or its schema) on that shard.
        for target in &mut targets {
            let backend = target.conn.get_database_backend();
            target.condition = Some(scope::equals(
                E::tenant_column(),
                &handle.inner.value,
                backend,
            ));
            target.tenant = Some(handle.inner.tenant.to_string());
            target.session = handle.inner.session.clone();
        }
        let across = match handle.topology() {
            Some(topology) => AcrossShards::over(targets, topology),
            None => AcrossShards::single(targets.remove(0)),
        };
        across.select(E::find()).scoped()
    }
}

impl<T: SqlTenantId> TenantDb<T> {
    /// Reads this tenant's rows on every shard (explicit scatter-gather), for entities
    /// sharded by a `#[shard_key]`, whose rows are spread over the shards. An entity whose
    /// shard key is the tenant is read on this tenant's shard only. Without sharding, the
    /// one database is the one "shard".
    ///
    /// ```
    /// # use tenancy_sea::prelude::*;
    /// # mod event {
    /// #     use sea_orm::entity::prelude::*;
    /// #     use tenancy_sea::prelude::*;
    /// #     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
    /// #     #[sea_orm(table_name = "event")]
    /// #     pub struct Model {
    /// #         #[sea_orm(primary_key)]
    /// #         pub id: i64,
    /// #         #[tenant_id]
    /// #         pub tenant_id: i64,
    /// #         #[shard_key]
    /// #         pub device_id: i64,
    /// #     }
    /// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    /// #     pub enum Relation {}
    /// #     impl ActiveModelBehavior for ActiveModel {}
    /// # }
    /// # async fn demo(db: TenantDb<i64>) -> tenancy_sea::Result<()> {
    /// let latest = db
    ///     .across_shards()
    ///     .find::<event::Entity>()
    ///     .order_by_desc(event::Column::Id)
    ///     .limit(10)
    ///     .all()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn across_shards(&self) -> TenantAcrossShards<'_, T> {
        TenantAcrossShards { handle: self }
    }

    /// The one target of a handle that is not sharded: its own connection and set-up.
    fn own_target(&self, condition: Option<Condition>) -> Target {
        Target {
            shard: self
                .inner
                .shard
                .clone()
                .unwrap_or_else(|| ShardId::new(UNSHARDED)),
            conn: self.inner.conn.clone(),
            session: self.inner.session.clone(),
            condition,
            tenant: Some(self.inner.tenant.to_string()),
            meter: self.inner.meter.clone(),
        }
    }

    /// Reads the rows of `E` whose shard keys are among `keys`, on the shards those keys
    /// route to (each shard asked only for its own keys), merged as a scatter-gather. An
    /// empty list reads nothing.
    pub fn by_keys<E>(
        &self,
        keys: impl IntoIterator<Item = impl Into<E::Key>>,
    ) -> Result<ShardedSelect<E>>
    where
        E: ShardKeyed<TenantId = T>,
    {
        let column = Self::key_column::<E>()?;
        self.inner.may_spread::<E>()?;
        let keys: Vec<E::Key> = keys.into_iter().map(Into::into).collect();
        let select = E::find();
        // Each shard's query carries the tenant and its own keys, compared as its backend
        // compares exactly.
        let condition = |conn: &DatabaseConnection, values: Vec<Value>| {
            let backend = conn.get_database_backend();
            scope::equals(E::tenant_column(), &self.inner.value, backend)
                .add(scope::is_in(column, values, backend))
        };
        let Some(topology) = self.topology() else {
            let values = keys.into_iter().map(Into::into).collect();
            let target = self.own_target(Some(condition(&self.inner.conn, values)));
            return Ok(AcrossShards::single(target).select(select).scoped());
        };
        let mut groups: Vec<(ShardId, DatabaseConnection, Vec<Value>)> = Vec::new();
        for key in keys {
            let (shard, conn) = topology.shard_of_key_bytes(
                &tenancy_core::TenantId::canonical_bytes(&key),
                &KeyType::of::<E::Key>(),
            )?;
            match groups.iter_mut().find(|(s, _, _)| *s == shard) {
                Some((_, _, values)) => values.push(key.into()),
                None => groups.push((shard, conn, vec![key.into()])),
            }
        }
        let targets = groups
            .into_iter()
            .map(|(shard, conn, values)| Target {
                condition: Some(condition(&conn, values)),
                meter: self.inner.meter.on_shard(&shard),
                shard,
                conn,
                session: self.inner.session.clone(),
                tenant: Some(self.inner.tenant.to_string()),
            })
            .collect();
        Ok(AcrossShards::over(targets, topology)
            .select(select)
            .scoped())
    }
}

impl<T: SqlTenantId> TenantTxn<T> {
    /// Not in a transaction: a transaction runs on one shard, and a fan-out reads every
    /// shard, so this does not compile, with a message that says so. Fan out with the
    /// tenant's handle ([`TenantDb::across_shards`]), outside the transaction.
    pub fn across_shards(&self) -> TenantAcrossShards<'_, T>
    where
        Self: FansOut<T>,
    {
        FansOut::fan_out(self)
    }

    /// Not in a transaction, like [`across_shards`](Self::across_shards): the keys may
    /// live on other shards. Read them with the tenant's handle ([`TenantDb::by_keys`]),
    /// or one key of this shard with [`by_key`](TenantDb::by_key).
    pub fn by_keys<E>(
        &self,
        keys: impl IntoIterator<Item = impl Into<E::Key>>,
    ) -> Result<ShardedSelect<E>>
    where
        E: ShardKeyed<TenantId = T>,
        Self: FansOut<T>,
    {
        let _ = keys;
        Err(FansOut::refused(self))
    }
}

/// What only a handle outside a transaction does: fan out over shards. Implemented for no
/// type; it exists to give calling [`TenantTxn::across_shards`] or
/// [`TenantTxn::by_keys`] a clear compile error.
#[diagnostic::on_unimplemented(
    message = "a transaction runs on one shard, so it does not fan out over shards",
    label = "called on a transaction",
    note = "call `across_shards()` or `by_keys(..)` on the tenant's handle (`TenantDb`), \
            outside the transaction; inside it, read one key of this shard with `by_key(..)`"
)]
pub trait FansOut<T: SqlTenantId>: crate::entity::__private_sealed::FansOutSeal {
    #[doc(hidden)]
    fn fan_out(&self) -> TenantAcrossShards<'_, T>;
    #[doc(hidden)]
    fn refused(&self) -> Error;
}
