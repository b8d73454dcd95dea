//! A tenant handle's writes: inserts stamped with the tenant, updates and deletes
//! confined to its rows, and the builders of multi-row writes and upserts; a row of an
//! entity with a `#[shard_key]` goes to its key's shard.

use super::TenantDb;
use crate::entity::{ScopedEntity, SqlTenantId, TenantScoped};
use crate::error::Result;
use crate::query::{ScopedDeleteMany, ScopedUpdateMany, ScopedUpsert};
use crate::scope::RunTraced;
use crate::scope::{self, HandleConnection, Placed, UNSHARDED, key_of};
use sea_orm::sea_query::Condition;
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ActiveValue, ColumnTrait, ConnectionTrait, DbErr,
    DeleteResult, EntityName, EntityTrait, IntoActiveModel, Iterable, PrimaryKeyToColumn,
    QueryFilter,
};

impl<T: SqlTenantId, C: HandleConnection> TenantDb<T, C> {
    /// Inserts one row for this tenant and returns it as stored.
    ///
    /// The key of an entity marked `#[unique_id]`, left unset, is filled from the
    /// tenancy's `catalog::UniqueIds` first (so save hooks and routing
    /// see it).
    ///
    /// The tenant column is set to this tenant when it is not set; set to another tenant it
    /// is [`Error::TenantMismatch`] and nothing is written. `ActiveModelBehavior` hooks run
    /// as in SeaORM's `ActiveModel::insert`.
    ///
    /// A row of an entity with a `#[shard_key]` goes to the shard of its key; without the
    /// key it is [`Error::ShardKeyMissing`](crate::Error::ShardKeyMissing).
    ///
    /// [`Error::TenantMismatch`]: crate::Error::TenantMismatch
    pub async fn insert<A>(&self, am: A) -> Result<<A::Entity as EntityTrait>::Model>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        A::Entity: TenantScoped<TenantId = T>,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
    {
        let mut one = [am];
        self.inner.fill_unique_ids(&mut one).await?;
        let [am] = one;
        if <A::Entity as TenantScoped>::shard_key_column().is_some() {
            return self.route_model(&am)?.insert_here(am).await;
        }
        self.insert_here(am).await
    }

    async fn insert_here<A>(&self, am: A) -> Result<<A::Entity as EntityTrait>::Model>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        A::Entity: TenantScoped<TenantId = T>,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
    {
        let span = self.inner.span("insert", A::Entity::default().table_name());
        async {
            Ok(on_conn!(&self.inner, |conn| {
                let am = A::before_save(am, conn, true).await?;
                self.inner.check_key_unmoved(&am)?;
                let am = self.inner.stamp(am)?;
                let model = A::Entity::insert(am).exec_with_returning(conn).await?;
                A::after_save(model, conn, true).await?
            }))
        }
        .traced(span)
        .await
    }

    /// Inserts many rows for this tenant in one statement; returns how many were inserted.
    ///
    /// Every row is checked before anything is sent: one row of another tenant fails the
    /// whole call and nothing is written. The `#[unique_id]` keys rows leave unset are
    /// filled first, all in one call to the tenancy's
    /// `catalog::UniqueIds`.
    ///
    /// Rows of an entity with a `#[shard_key]` are split by shard: one statement per shard,
    /// each in a transaction of its shard, committed once every shard has accepted its rows
    /// (a failure before that writes nothing; transactions do not span shards, so a shard
    /// failing during the final commits is [`Error::PartialCommit`], naming the shards
    /// committed before it).
    ///
    /// [`Error::PartialCommit`]: crate::Error::PartialCommit
    pub async fn insert_many<A, I>(&self, models: I) -> Result<u64>
    where
        A: ActiveModelTrait + Send,
        A::Entity: TenantScoped<TenantId = T>,
        I: IntoIterator<Item = A>,
    {
        let mut models: Vec<A> = models.into_iter().collect();
        self.inner.fill_unique_ids(&mut models).await?;
        let models = models
            .into_iter()
            .map(|am| self.inner.stamp(am))
            .collect::<Result<Vec<_>>>()?;
        if models.is_empty() {
            return Ok(0);
        }
        if <A::Entity as TenantScoped>::shard_key_column().is_none() {
            return self.insert_many_here(models).await;
        }
        let mut groups: Vec<(Placed, Vec<A>)> = Vec::new();
        for am in models {
            let placed = self.inner.shard_for::<A::Entity>(key_of(&am))?;
            let shard = placed.as_ref().map(|(shard, _)| shard);
            match groups
                .iter_mut()
                .find(|(group, _)| group.as_ref().map(|(s, _)| s) == shard)
            {
                Some((_, rows)) => rows.push(am),
                None => groups.push((placed, vec![am])),
            }
        }
        // Every shard is reached (or refused) before anything is written.
        let mut routed = Vec::with_capacity(groups.len());
        for (placed, rows) in groups {
            routed.push((self.bind::<A::Entity>(placed)?, rows));
        }
        if routed.len() == 1 {
            let (handle, rows) = routed.remove(0);
            return handle.insert_many_here(rows).await;
        }
        let mut open = Vec::with_capacity(routed.len());
        let mut inserted = 0;
        for (handle, rows) in routed {
            let txn = handle.begin().await?;
            inserted += txn.insert_many_here(rows).await?;
            open.push(txn);
        }
        crate::shard::commit_all(open.into_iter().map(|txn| {
            let shard = txn
                .inner
                .shard
                .as_ref()
                .map_or_else(|| UNSHARDED.to_owned(), ToString::to_string);
            (shard, txn.inner.conn)
        }))
        .await?;
        Ok(inserted)
    }

    async fn insert_many_here<A>(&self, models: Vec<A>) -> Result<u64>
    where
        A: ActiveModelTrait + Send,
        A::Entity: TenantScoped<TenantId = T>,
    {
        let span = self
            .inner
            .span("insert_many", A::Entity::default().table_name());
        async {
            Ok(on_conn!(&self.inner, |conn| A::Entity::insert_many(models)
                .exec_without_returning(conn)
                .await?))
        }
        .traced(span)
        .await
    }

    /// Starts an insert that resolves conflicts (an upsert): see [`ScopedUpsert`].
    pub fn upsert<A>(&self, am: A) -> ScopedUpsert<'_, T, A, C>
    where
        A: ActiveModelTrait + Send,
        A::Entity: TenantScoped<TenantId = T>,
    {
        ScopedUpsert::new(&self.inner, am)
    }

    /// The condition matching `am`'s primary key.
    fn primary_key_condition<A: ActiveModelTrait>(am: &A) -> Result<Condition> {
        let mut condition = Condition::all();
        for key in <A::Entity as EntityTrait>::PrimaryKey::iter() {
            let col = key.into_column();
            match am.get(col) {
                ActiveValue::Set(v) | ActiveValue::Unchanged(v) => {
                    condition = condition.add(col.eq(v));
                }
                ActiveValue::NotSet => {
                    return Err(DbErr::PrimaryKeyNotSet { ctx: "tenancy" }.into());
                }
            }
        }
        Ok(condition)
    }

    /// Updates one of this tenant's rows, found by the primary key of `am`, and returns
    /// it as stored.
    ///
    /// The tenant column is never written. A row of another tenant, or none, is
    /// [`Error::NotFound`] with nothing changed; `am` carrying another tenant is
    /// [`Error::TenantMismatch`].
    ///
    /// [`Error::NotFound`]: crate::Error::NotFound
    /// [`Error::TenantMismatch`]: crate::Error::TenantMismatch
    pub async fn update<A>(&self, am: A) -> Result<<A::Entity as EntityTrait>::Model>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        A::Entity: TenantScoped<TenantId = T>,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
    {
        let handle = self.route_model(&am)?;
        let span = handle
            .inner
            .span("update", A::Entity::default().table_name());
        async {
            Ok(on_conn!(&handle.inner, |conn| handle
                .update_on(conn, am)
                .await?))
        }
        .traced(span)
        .await
    }

    async fn update_on<A, C2>(&self, conn: &C2, am: A) -> Result<<A::Entity as EntityTrait>::Model>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        A::Entity: TenantScoped<TenantId = T>,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
        C2: ConnectionTrait,
    {
        let am = A::before_save(am, conn, false).await?;
        self.inner.check_key_unmoved(&am)?;
        let mut am = self.inner.stamp(am)?;
        let tenant_col = <A::Entity as TenantScoped>::tenant_column();
        let is_key = |col| {
            <<A::Entity as EntityTrait>::PrimaryKey as PrimaryKeyToColumn>::from_column(col)
                .is_some()
        };
        if !is_key(tenant_col) {
            // Not a key, so never part of the SET list.
            am.not_set(tenant_col);
        }
        let backend = ConnectionTrait::get_database_backend(conn);
        let mut scope = scope::equals(tenant_col, &self.inner.value, backend);
        if let Some(shard_col) = <A::Entity as TenantScoped>::shard_key_column() {
            // The row is looked for under the key it carries, and the key never changes
            // in place: the row would stay on the shard of its old key.
            if let Some(value) = key_of(&am) {
                scope = scope.add(scope::equals(shard_col, &value, backend));
            }
            if !is_key(shard_col) {
                am.not_set(shard_col);
            }
        }
        let key = Self::primary_key_condition(&am)?;
        let changes = <A::Entity as EntityTrait>::Column::iter()
            .any(|col| !is_key(col) && matches!(am.get(col), ActiveValue::Set(_)));
        let reread = A::Entity::find().filter(key).filter(scope.clone());
        let model = if !changes {
            // SeaORM would re-read by primary key alone; this read is tenant-filtered.
            reread.one(conn).await?
        } else {
            let update = A::Entity::update(am).validate()?.filter(scope);
            if conn.support_returning() {
                match update.exec(conn).await {
                    Ok(model) => Some(model),
                    Err(DbErr::RecordNotUpdated) => None,
                    Err(err) => return Err(err.into()),
                }
            } else {
                match update.exec_without_returning(conn).await {
                    Ok(result) if result.rows_affected > 0 => reread.one(conn).await?,
                    Ok(_) | Err(DbErr::RecordNotUpdated) => None,
                    Err(err) => return Err(err.into()),
                }
            }
        };
        let model = model.ok_or_else(|| self.inner.not_found::<A::Entity>())?;
        Ok(A::after_save(model, conn, false).await?)
    }

    /// Starts an update of many of this tenant's rows: see [`ScopedUpdateMany`]. For an
    /// entity with a `#[shard_key]`, update by key with [`by_key`](Self::by_key).
    pub fn update_many<E>(&self) -> ScopedUpdateMany<'_, T, E, C>
    where
        E: TenantScoped<TenantId = T> + ScopedEntity<T>,
    {
        ScopedUpdateMany::new(&self.inner)
    }

    /// Deletes one of this tenant's rows, found by the primary key of `am`.
    ///
    /// A row of another tenant is not touched: the result says 0 rows. `am` carrying
    /// another tenant is [`Error::TenantMismatch`](crate::Error::TenantMismatch).
    pub async fn delete<A>(&self, am: A) -> Result<DeleteResult>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        A::Entity: TenantScoped<TenantId = T>,
    {
        let handle = self.route_model(&am)?;
        let span = handle
            .inner
            .span("delete", A::Entity::default().table_name());
        async {
            Ok(on_conn!(&handle.inner, |conn| {
                let am = A::before_delete(am, conn).await?;
                let am = handle.inner.stamp(am)?;
                let backend = ConnectionTrait::get_database_backend(conn);
                let mut key = Self::primary_key_condition(&am)?;
                if let (Some(column), Some(value)) =
                    (<A::Entity as TenantScoped>::shard_key_column(), key_of(&am))
                {
                    key = key.add(scope::equals(column, &value, backend));
                }
                let tenant_col = <A::Entity as TenantScoped>::tenant_column();
                let result = A::Entity::delete_many()
                    .filter(key)
                    .filter(scope::equals(tenant_col, &handle.inner.value, backend))
                    .exec(conn)
                    .await?;
                A::after_delete(am, conn).await?;
                result
            }))
        }
        .traced(span)
        .await
    }

    /// Deletes this tenant's row of `E` with this primary key; 0 rows when it does not
    /// exist or belongs to another tenant.
    ///
    /// Not for an entity with a `#[shard_key]`, whose shard the id does not tell: use
    /// [`by_key`](Self::by_key)`(key).delete_by_id(id)`.
    pub async fn delete_by_id<E>(&self, id: impl Into<E::Id>) -> Result<DeleteResult>
    where
        E: TenantScoped<TenantId = T> + ScopedEntity<T>,
    {
        let span = self.inner.span("delete", E::default().table_name());
        let key = E::primary_key(&self.inner.tenant, id.into());
        let delete = E::delete_by_id(key).filter(scope::equals(
            E::tenant_column(),
            &self.inner.value,
            self.backend(),
        ));
        async { Ok(on_conn!(&self.inner, |conn| delete.exec(conn).await?)) }
            .traced(span)
            .await
    }

    /// Starts a delete of many of this tenant's rows: see [`ScopedDeleteMany`]. For an
    /// entity with a `#[shard_key]`, delete by key with [`by_key`](Self::by_key).
    pub fn delete_many<E>(&self) -> ScopedDeleteMany<'_, T, E, C>
    where
        E: TenantScoped<TenantId = T> + ScopedEntity<T>,
    {
        ScopedDeleteMany::new(&self.inner)
    }
}
