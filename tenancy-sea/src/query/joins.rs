//! Joins of a scoped select: which entities it may join ([`JoinRule`]: [`TenantJoins`],
//! [`GlobalJoins`]), the joins themselves, each with the related side's tenant condition
//! in its `ON` clause, and the selects of two entities they lead to ([`ScopedSelectTwo`],
//! [`ScopedSelectTwoMany`]).

use super::select::ScopedSelect;
use crate::entity::{ScopedEntity, SqlTenantId};
use crate::error::Result;
use crate::scope::RunTraced;
use crate::scope::audit::{self, Refused, keep};
use crate::scope::{HandleConnection, TenantConn};
use sea_orm::sea_query::{Condition, IntoCondition, JoinType};
use sea_orm::{
    EntityTrait, IntoSimpleExpr, Order, QueryFilter, QueryOrder, QuerySelect, QueryTrait, Related,
    Select, SelectTwo, SelectTwoMany,
};

/// Adds `E`'s join to `R` to `select`, with `R`'s tenant condition in the `ON` clause so
/// that another tenant's `R` rows are never joined (a `LEFT JOIN` yields `NULL` for them).
/// A many-to-many relation's junction is joined with its own tenant condition too.
fn join_scoped<T, E, R, C>(
    handle: &TenantConn<T, C>,
    mut select: Select<E>,
    join: JoinType,
    error: &mut Option<Refused>,
) -> Select<E>
where
    T: SqlTenantId,
    C: HandleConnection,
    E: EntityTrait + Related<R>,
    R: ScopedEntity<T>,
{
    if let Some(via) = <E as Related<R>>::via() {
        // The junction row is not returned; it and both ends are filtered by tenant.
        let mut on = Condition::all().add(Condition::from(via.clone()));
        match handle.junction_scope::<E, R>() {
            Ok(Some(scope)) => on = on.add(scope),
            Ok(None) => {}
            Err(refused) => keep(error, Err(refused)),
        }
        QueryTrait::query(&mut select).join(join, via.to_tbl.clone(), on);
    }
    let to = <E as Related<R>>::to();
    let table = to.to_tbl.clone();
    let mut on = Condition::all().add(Condition::from(to));
    if let Some(scope) = handle.scope::<R>() {
        on = on.add(scope);
    }
    QueryTrait::query(&mut select).join(join, table, on);
    select
}

/// Which entities a [`ScopedSelect`] may join: [`TenantJoins`] (the default) for a
/// select on the tenant's own shard, [`GlobalJoins`] for a select by `#[shard_key]`, which
/// runs on the key's shard, where the tenant's co-located rows are not.
pub trait JoinRule<T: SqlTenantId, R> {}

/// Joins to any entity readable through the tenant handle, filtered by tenant.
#[derive(Debug)]
pub enum TenantJoins {}

/// Joins to global entities only (the copy on the select's shard): the rule of a select
/// made by [`ShardKeyDb`](crate::ShardKeyDb), whose shard holds the key's rows but not the
/// tenant's other rows.
#[derive(Debug)]
pub enum GlobalJoins {}

impl<T: SqlTenantId, R: ScopedEntity<T>> JoinRule<T, R> for TenantJoins {}
impl<T: SqlTenantId, R: crate::entity::GlobalEntity> JoinRule<T, R> for GlobalJoins {}

impl<'h, T, E, C, J> ScopedSelect<'h, T, E, C, J>
where
    T: SqlTenantId,
    E: EntityTrait,
    C: HandleConnection,
{
    /// Inner-joins the related entity `R`, filtered by tenant too, to filter on its
    /// columns: `db.find::<order::Entity>().inner_join::<customer::Entity>()
    /// .filter(customer::Column::Name.eq("Ada"))`.
    pub fn inner_join<R>(mut self) -> Self
    where
        E: Related<R>,
        R: ScopedEntity<T>,
        J: JoinRule<T, R>,
    {
        self.select = join_scoped::<T, E, R, C>(
            self.handle,
            self.select,
            JoinType::InnerJoin,
            &mut self.error,
        );
        self
    }

    /// Selects each row with its related `R` row, if any of this tenant's: SeaORM's
    /// `find_also_related`, with `R`'s tenant condition in the join.
    pub fn find_also_related<R>(mut self) -> ScopedSelectTwo<'h, T, E, R, C>
    where
        E: Related<R>,
        R: ScopedEntity<T>,
        J: JoinRule<T, R>,
    {
        let select = join_scoped::<T, E, R, C>(
            self.handle,
            self.select,
            JoinType::LeftJoin,
            &mut self.error,
        )
        .select_also(R::default());
        ScopedSelectTwo {
            handle: self.handle,
            select,
            error: self.error,
        }
    }

    /// Selects each row with all its related `R` rows of this tenant: SeaORM's
    /// `find_with_related`, with `R`'s tenant condition in the join.
    pub fn find_with_related<R>(mut self) -> ScopedSelectTwoMany<'h, T, E, R, C>
    where
        E: Related<R>,
        R: ScopedEntity<T>,
        J: JoinRule<T, R>,
    {
        let select = join_scoped::<T, E, R, C>(
            self.handle,
            self.select,
            JoinType::LeftJoin,
            &mut self.error,
        )
        .select_with(R::default());
        ScopedSelectTwoMany {
            handle: self.handle,
            select,
            error: self.error,
        }
    }
}

/// Rows of `E` each with its related `R` row, if any: see
/// [`ScopedSelect::find_also_related`].
#[must_use = "a select does nothing until `.all()` or `.one()`"]
pub struct ScopedSelectTwo<'h, T: SqlTenantId, E: EntityTrait, R: EntityTrait, C> {
    handle: &'h TenantConn<T, C>,
    select: SelectTwo<E, R>,
    error: Option<Refused>,
}

impl<T, E, R, C> ScopedSelectTwo<'_, T, E, R, C>
where
    T: SqlTenantId,
    E: EntityTrait,
    R: EntityTrait,
    C: HandleConnection,
{
    query_methods!();

    /// The first row and its related row.
    pub async fn one(self) -> Result<Option<(E::Model, Option<R::Model>)>> {
        let span = self.handle.span("select", E::default().table_name());
        let Self {
            handle,
            select,
            error,
        } = self;
        async move {
            audit::ready(&error)?;
            Ok(on_conn!(handle, |conn| select.one(conn).await?))
        }
        .traced(span)
        .await
    }

    /// Every row with its related row.
    pub async fn all(self) -> Result<Vec<(E::Model, Option<R::Model>)>> {
        let span = self.handle.span("select", E::default().table_name());
        let Self {
            handle,
            select,
            error,
        } = self;
        async move {
            audit::ready(&error)?;
            Ok(on_conn!(handle, |conn| select.all(conn).await?))
        }
        .traced(span)
        .await
    }
}

/// Rows of `E` each with all its related `R` rows: see
/// [`ScopedSelect::find_with_related`].
#[must_use = "a select does nothing until `.all()`"]
pub struct ScopedSelectTwoMany<'h, T: SqlTenantId, E: EntityTrait, R: EntityTrait, C> {
    handle: &'h TenantConn<T, C>,
    select: SelectTwoMany<E, R>,
    error: Option<Refused>,
}

impl<T, E, R, C> ScopedSelectTwoMany<'_, T, E, R, C>
where
    T: SqlTenantId,
    E: EntityTrait,
    R: EntityTrait,
    C: HandleConnection,
{
    query_methods!();

    /// Every row with its related rows, consolidated by `E`'s primary key.
    pub async fn all(self) -> Result<Vec<(E::Model, Vec<R::Model>)>> {
        let span = self.handle.span("select", E::default().table_name());
        let Self {
            handle,
            select,
            error,
        } = self;
        async move {
            audit::ready(&error)?;
            Ok(on_conn!(handle, |conn| select.all(conn).await?))
        }
        .traced(span)
        .await
    }
}
