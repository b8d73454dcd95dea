//! A tenant handle's reads: selects of the tenant's rows, subqueries, related rows and
//! loaders, each with the tenant condition on every table it reads.

use super::TenantDb;
use crate::entity::{ScopedEntity, SqlTenantId};
use crate::error::Result;
use crate::query::{ScopedSelect, ScopedSubquery};
use crate::scope::HandleConnection;
use crate::scope::RunTraced;
use sea_orm::{LoaderTrait, ModelTrait, QueryFilter, Related, Select};

impl<T: SqlTenantId, C: HandleConnection> TenantDb<T, C> {
    fn scoped_select<E: ScopedEntity<T>>(&self, select: Select<E>) -> ScopedSelect<'_, T, E, C> {
        let select = match self.inner.scope::<E>() {
            Some(condition) => select.filter(condition),
            None => select,
        };
        ScopedSelect::new(&self.inner, select)
    }

    /// Selects rows of `E`: this tenant's rows of a tenant-scoped entity, every row of a
    /// global one. Continue with `.filter(..)`, `.order_by_asc(..)`, `.limit(..)`, then
    /// `.all()`, `.one()`, `.count()`, `.paginate(n)` or `.stream()`.
    pub fn find<E: ScopedEntity<T>>(&self) -> ScopedSelect<'_, T, E, C> {
        self.scoped_select(E::find())
    }

    /// A subquery of this tenant's rows of `E` (every row of a global entity), to add to a
    /// statement of this handle with `filter_in_subquery`, `filter_exists` or
    /// `column_as_subquery`: see [`ScopedSubquery`](crate::ScopedSubquery).
    pub fn subquery<E: ScopedEntity<T>>(&self) -> ScopedSubquery<'_, T, E, C> {
        let select = match self.inner.scope::<E>() {
            Some(condition) => E::find().filter(condition),
            None => E::find(),
        };
        ScopedSubquery::new(&self.inner, select)
    }

    /// Selects the row of `E` with this primary key, if it belongs to this tenant. When
    /// the key holds the tenant column beside others (`(tenant_id, id)`), `id` is the rest
    /// of it and the handle fills in the tenant ([`ScopedEntity::Id`]).
    ///
    /// [`ScopedEntity::Id`]: crate::ScopedEntity::Id
    pub fn find_by_id<E: ScopedEntity<T>>(
        &self,
        id: impl Into<E::Id>,
    ) -> ScopedSelect<'_, T, E, C> {
        self.scoped_select(E::find_by_id(E::primary_key(&self.inner.tenant, id.into())))
    }

    /// Selects the rows of `R` related to `model`, this tenant's only.
    ///
    /// The tenant filter applies to `R` whatever `model` is, so a foreign key that points
    /// at another tenant's row finds nothing.
    pub fn find_related<R, M>(&self, model: &M) -> ScopedSelect<'_, T, R, C>
    where
        M: ModelTrait,
        M::Entity: Related<R>,
        R: ScopedEntity<T>,
    {
        let mut select = model.find_related(R::default());
        // Many-to-many: the junction the relation joins is this tenant's rows only.
        let junction = self.inner.junction_scope::<M::Entity, R>();
        if let Ok(Some(condition)) = &junction {
            select = select.filter(condition.clone());
        }
        let select = self.scoped_select(select);
        match junction {
            Err(refused) => select.refuse(refused),
            Ok(_) => select,
        }
    }

    /// Loads, for each of `models`, its related `R` row (a belongs-to or has-one
    /// relation), this tenant's only: SeaORM's `load_one`, in one query.
    pub async fn load_one<R, M>(&self, models: &[M]) -> Result<Vec<Option<R::Model>>>
    where
        M: ModelTrait + Sync,
        M::Entity: Related<R>,
        R: ScopedEntity<T>,
        R::Model: Send + Sync,
    {
        let span = self.inner.span("load_one", R::default().table_name());
        let select = self.related_select::<M::Entity, R>()?;
        async {
            Ok(on_conn!(&self.inner, |conn| models
                .load_one(select, conn)
                .await?))
        }
        .traced(span)
        .await
    }

    /// Loads, for each of `models`, its related `R` rows (has-many, or many-to-many through
    /// a junction), this tenant's only: SeaORM's `load_many`, in one query.
    pub async fn load_many<R, M>(&self, models: &[M]) -> Result<Vec<Vec<R::Model>>>
    where
        M: ModelTrait + Sync,
        M::Entity: Related<R>,
        R: ScopedEntity<T>,
        R::Model: Send + Sync,
    {
        let span = self.inner.span("load_many", R::default().table_name());
        let select = self.related_select::<M::Entity, R>()?;
        async {
            Ok(on_conn!(&self.inner, |conn| models
                .load_many(select, conn)
                .await?))
        }
        .traced(span)
        .await
    }

    /// The select of `R` a loader runs for rows of `E`: this tenant's rows of `R`, and for
    /// a many-to-many relation this tenant's rows of the junction, which the loader joins.
    fn related_select<E, R>(&self) -> Result<Select<R>>
    where
        E: Related<R>,
        R: ScopedEntity<T>,
    {
        let select = self.find::<R>().into_select()?;
        match self.inner.junction_scope::<E, R>() {
            Ok(Some(condition)) => Ok(select.filter(condition)),
            Ok(None) => Ok(select),
            Err(refused) => Err(refused.into_error()),
        }
    }
}
