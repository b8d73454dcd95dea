//! Routing by shard key: [`TenantDb::by_key`] and the [`ShardKeyDb`] it makes, and the
//! tenant's handle on the shard of a row of a `#[shard_key]` entity.

use super::TenantDb;
use crate::entity::{ShardKeyed, SqlTenantId, TenantScoped};
use crate::error::{Error, Result};
use crate::query::{GlobalJoins, ScopedDeleteMany, ScopedSelect, ScopedUpdateMany};
use crate::scope::RunTraced;
use crate::scope::{self, HandleConnection, Placed, Routed, TenantConn};
use sea_orm::sea_query::Condition;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DeleteResult, EntityTrait, PrimaryKeyTrait,
    QueryFilter, Value,
};
use tenancy_core::ShardId;

/// The rows of a `#[shard_key]` entity with one key, on the shard that holds them: made by
/// [`TenantDb::by_key`]. Every statement carries the tenant condition and the key
/// condition.
pub struct ShardKeyDb<'h, T: SqlTenantId, E: EntityTrait, C = DatabaseConnection> {
    handle: Routed<'h, TenantDb<T, C>>,
    column: E::Column,
    key: Value,
}

impl<T: SqlTenantId, E: EntityTrait, C> std::fmt::Debug for ShardKeyDb<'_, T, E, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardKeyDb")
            .field("tenant", &self.handle.inner.tenant)
            .field("shard", &self.handle.inner.shard)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl<T, E, C> ShardKeyDb<'_, T, E, C>
where
    T: SqlTenantId,
    E: ShardKeyed<TenantId = T>,
    C: HandleConnection,
{
    /// The shard holding the key's rows (`None` without sharding).
    pub fn shard(&self) -> Option<&ShardId> {
        self.handle.shard()
    }

    fn condition(&self) -> Condition {
        let backend = self.handle.backend();
        scope::equals(E::tenant_column(), &self.handle.inner.value, backend).add(scope::equals(
            self.column,
            &self.key,
            backend,
        ))
    }

    /// Selects this tenant's rows of `E` with this key. It runs on the key's shard, so it
    /// joins only global entities (whose copy is there): a join to the tenant's
    /// co-located rows, which live on the tenant's own shard, does not compile.
    pub fn find(&self) -> ScopedSelect<'_, T, E, C, GlobalJoins> {
        ScopedSelect::new(&self.handle.inner, E::find().filter(self.condition()))
    }

    /// Selects the row with this primary key, if it is this tenant's and has this key.
    pub fn find_by_id(
        &self,
        id: impl Into<<E::PrimaryKey as PrimaryKeyTrait>::ValueType>,
    ) -> ScopedSelect<'_, T, E, C, GlobalJoins> {
        ScopedSelect::new(
            &self.handle.inner,
            E::find_by_id(id).filter(self.condition()),
        )
    }

    /// Starts an update of this tenant's rows with this key; the key column itself cannot
    /// be set ([`Error::ShardKeyWrite`]).
    pub fn update_many(&self) -> ScopedUpdateMany<'_, T, E, C> {
        ScopedUpdateMany::new(&self.handle.inner).filter(self.column.eq(self.key.clone()))
    }

    /// Starts a delete of this tenant's rows with this key.
    pub fn delete_many(&self) -> ScopedDeleteMany<'_, T, E, C> {
        ScopedDeleteMany::new(&self.handle.inner).filter(self.column.eq(self.key.clone()))
    }

    /// Deletes the row with this primary key, if it is this tenant's and has this key.
    pub async fn delete_by_id(
        &self,
        id: impl Into<<E::PrimaryKey as PrimaryKeyTrait>::ValueType>,
    ) -> Result<DeleteResult> {
        let handle: &TenantDb<T, C> = &self.handle;
        let span = handle.inner.span("delete", E::default().table_name());
        let delete = E::delete_by_id(id).filter(self.condition());
        async { Ok(on_conn!(&handle.inner, |conn| delete.exec(conn).await?)) }
            .traced(span)
            .await
    }
}

impl<T: SqlTenantId, C: HandleConnection> TenantDb<T, C> {
    /// `E`'s `#[shard_key]` column.
    pub(super) fn key_column<E: TenantScoped>() -> Result<E::Column> {
        E::shard_key_column().ok_or_else(|| {
            Error::Config(format!(
                "`{}` has no `#[shard_key]` column",
                E::default().table_name()
            ))
        })
    }

    /// The rows of `E` whose `#[shard_key]` is `key`, on the one shard that holds them:
    /// reads, updates and deletes through the returned [`ShardKeyDb`] carry both the tenant
    /// and the key condition. Inside a transaction, a key on another shard is
    /// [`Error::CrossShard`].
    pub fn by_key<E>(&self, key: impl Into<E::Key>) -> Result<ShardKeyDb<'_, T, E, C>>
    where
        E: ShardKeyed<TenantId = T>,
    {
        let key: E::Key = key.into();
        let column = Self::key_column::<E>()?;
        let value: Value = key.into();
        let handle = self.route::<E>(Some(value.clone()))?;
        Ok(ShardKeyDb {
            handle,
            column,
            key: value,
        })
    }

    /// This tenant's handle on the shard of the row of `E` whose shard key is `value`.
    /// Inside a transaction, a key on another shard is [`Error::CrossShard`].
    pub(super) fn route<E>(&self, value: Option<Value>) -> Result<Routed<'_, Self>>
    where
        E: TenantScoped<TenantId = T>,
    {
        Ok(self.rehome(self.inner.route::<E>(value)?))
    }

    /// This tenant's handle on the shard of the row `am`.
    pub(super) fn route_model<A>(&self, am: &A) -> Result<Routed<'_, Self>>
    where
        A: ActiveModelTrait,
        A::Entity: TenantScoped<TenantId = T>,
    {
        Ok(self.rehome(self.inner.route_model(am)?))
    }

    /// This tenant's handle on `placed` (a shard and its pool), or this handle itself when
    /// `placed` is `None` or its own shard.
    pub(super) fn bind<E: EntityTrait>(&self, placed: Placed) -> Result<Routed<'_, Self>> {
        Ok(self.rehome(self.inner.bind::<E>(placed)?))
    }

    /// This handle for a routing of its connection: itself, or the same tenant's handle
    /// on the connection routed to.
    fn rehome(&self, routed: Routed<'_, TenantConn<T, C>>) -> Routed<'_, Self> {
        match routed {
            Routed::Here(_) => Routed::Here(self),
            Routed::There(inner) => Routed::There(TenantDb { inner }),
        }
    }
}
