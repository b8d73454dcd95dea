//! Subqueries scoped to the tenant: [`ScopedSubquery`], made by
//! [`TenantDb::subquery`](crate::TenantDb::subquery).

use crate::entity::SqlTenantId;
use crate::scope::audit::{self, Refused, keep};
use crate::scope::{HandleConnection, TenantConn};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::sea_query::{IntoCondition, SelectStatement};
use sea_orm::{
    ColumnAsExpr, ColumnTrait, EntityTrait, IntoSimpleExpr, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait, Select,
};

/// How a builder uses a scoped subquery in a condition.
pub(crate) enum Membership {
    /// `expr IN (subquery)`.
    In(Expr),
    /// `expr NOT IN (subquery)`.
    NotIn(Expr),
    /// `EXISTS (subquery)`.
    Exists,
    /// `NOT EXISTS (subquery)`.
    NotExists,
}

/// The four subquery filters of a builder with a `handle`, a refusal slot `error` and a
/// `filter_trusted` method (a filter added without audit): `filter_in_subquery`, `filter_not_in_subquery`, `filter_exists`,
/// `filter_not_exists`. The subquery must be made by the same handle's tenant
/// ([`TenantDb::subquery`]), optionally with a bound on its entity `R`.
macro_rules! subquery_filters {
    ($($bound:tt)*) => {
        /// Keeps the rows whose `expr` is among the values `subquery` selects
        /// (`expr IN (SELECT ..)`). `subquery` is made by
        /// [`TenantDb::subquery`](crate::TenantDb::subquery) of the same tenant, so it
        /// carries the tenant condition too.
        pub fn filter_in_subquery<R>(
            self,
            expr: impl sea_orm::IntoSimpleExpr,
            subquery: $crate::ScopedSubquery<'_, T, R, C>,
        ) -> Self
        where
            R: $crate::ScopedEntity<T>,
            $($bound)*
        {
            let membership = $crate::query::subquery::Membership::In(expr.into_simple_expr());
            self.filter_subquery(subquery, membership)
        }

        /// Keeps the rows whose `expr` is not among the values `subquery` selects
        /// (`expr NOT IN (SELECT ..)`); see `filter_in_subquery`.
        pub fn filter_not_in_subquery<R>(
            self,
            expr: impl sea_orm::IntoSimpleExpr,
            subquery: $crate::ScopedSubquery<'_, T, R, C>,
        ) -> Self
        where
            R: $crate::ScopedEntity<T>,
            $($bound)*
        {
            let membership = $crate::query::subquery::Membership::NotIn(expr.into_simple_expr());
            self.filter_subquery(subquery, membership)
        }

        /// Keeps the rows for which `subquery` finds a row (`EXISTS (SELECT ..)`);
        /// correlate it with a filter on the outer table's columns.
        pub fn filter_exists<R>(self, subquery: $crate::ScopedSubquery<'_, T, R, C>) -> Self
        where
            R: $crate::ScopedEntity<T>,
            $($bound)*
        {
            self.filter_subquery(subquery, $crate::query::subquery::Membership::Exists)
        }

        /// Keeps the rows for which `subquery` finds no row (`NOT EXISTS (SELECT ..)`).
        pub fn filter_not_exists<R>(self, subquery: $crate::ScopedSubquery<'_, T, R, C>) -> Self
        where
            R: $crate::ScopedEntity<T>,
            $($bound)*
        {
            self.filter_subquery(subquery, $crate::query::subquery::Membership::NotExists)
        }

        fn filter_subquery<R: sea_orm::EntityTrait>(
            mut self,
            subquery: $crate::ScopedSubquery<'_, T, R, C>,
            membership: $crate::query::subquery::Membership,
        ) -> Self {
            match subquery.condition_for(self.handle, membership) {
                // Made here, from audited parts: added without a second audit (which
                // refuses every subquery).
                Ok(condition) => self.filter_trusted(condition),
                Err(refused) => {
                    $crate::scope::audit::Keep::keep(&mut self.error, refused);
                    self
                }
            }
        }
    };
}

/// A select of one tenant's rows of `E` (or of a global entity's rows) to use inside
/// another statement of the same handle: `IN (SELECT ..)`, `EXISTS (..)`, or a scalar
/// column. It carries the tenant condition like every read of the handle, and can only be
/// added to a statement of the same tenant on the same shard (another tenant's subquery is
/// [`Error::TenantMismatch`](crate::Error::TenantMismatch) when the statement runs).
///
/// A subquery built with plain SeaORM or sea-query has no tenant condition, so the
/// handle's builders refuse it ([`Error::UnscopedSubquery`](crate::Error::UnscopedSubquery)).
///
/// ```
/// # use tenancy_sea::prelude::*;
/// # use sea_orm::entity::prelude::*;
/// # mod customer {
/// #     use sea_orm::entity::prelude::*;
/// #     use tenancy_sea::prelude::*;
/// #     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
/// #     #[sea_orm(table_name = "customers")]
/// #     pub struct Model {
/// #         #[sea_orm(primary_key)]
/// #         pub id: i64,
/// #         #[tenant_id]
/// #         pub tenant_id: i64,
/// #         pub name: String,
/// #     }
/// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// #     pub enum Relation {}
/// #     impl ActiveModelBehavior for ActiveModel {}
/// # }
/// # mod order {
/// #     use sea_orm::entity::prelude::*;
/// #     use tenancy_sea::prelude::*;
/// #     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
/// #     #[sea_orm(table_name = "orders")]
/// #     pub struct Model {
/// #         #[sea_orm(primary_key)]
/// #         pub id: i64,
/// #         #[tenant_id]
/// #         pub tenant_id: i64,
/// #         pub customer_id: i64,
/// #     }
/// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// #     pub enum Relation {}
/// #     impl ActiveModelBehavior for ActiveModel {}
/// # }
/// # async fn demo(db: TenantDb<i64>) -> tenancy_sea::Result<()> {
/// // This tenant's orders of its customers named Ada.
/// let adas = db
///     .subquery::<customer::Entity>()
///     .select_only()
///     .column(customer::Column::Id)
///     .filter(customer::Column::Name.eq("Ada"));
/// let orders = db
///     .find::<order::Entity>()
///     .filter_in_subquery(order::Column::CustomerId, adas)
///     .all()
///     .await?;
/// # Ok(()) }
/// ```
#[must_use = "a subquery does nothing until it is added to a statement"]
pub struct ScopedSubquery<'h, T: SqlTenantId, E: EntityTrait, C> {
    handle: &'h TenantConn<T, C>,
    select: Select<E>,
    error: Option<Refused>,
}

impl<T: SqlTenantId, E: EntityTrait, C> std::fmt::Debug for ScopedSubquery<'_, T, E, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopedSubquery")
            .field("table", &E::default().table_name())
            .finish_non_exhaustive()
    }
}

impl<'h, T: SqlTenantId, E: EntityTrait, C: HandleConnection> ScopedSubquery<'h, T, E, C> {
    /// A subquery over `select`, which carries the tenant condition already.
    pub(crate) fn new(handle: &'h TenantConn<T, C>, select: Select<E>) -> Self {
        ScopedSubquery {
            handle,
            select,
            error: None,
        }
    }

    /// Adds a condition, audited as a select's ([`ScopedSelect::filter`](crate::ScopedSelect::filter)).
    pub fn filter(mut self, condition: impl IntoCondition) -> Self {
        let condition = condition.into_condition();
        keep(&mut self.error, audit::check_condition(&condition));
        self.select = QueryFilter::filter(self.select, condition);
        self
    }

    /// Selects no columns but those added next.
    pub fn select_only(mut self) -> Self {
        self.select = QuerySelect::select_only(self.select);
        self
    }

    /// Adds a column to the selection.
    pub fn column(mut self, col: impl ColumnTrait) -> Self {
        keep(
            &mut self.error,
            audit::check_expr(&col.select_as(col.into_simple_expr())),
        );
        self.select = QuerySelect::column(self.select, col);
        self
    }

    /// Adds an expression to the selection under `alias`, audited.
    pub fn column_as(mut self, expr: impl ColumnAsExpr, alias: &str) -> Self {
        let expr = expr.into_column_as_expr();
        keep(&mut self.error, audit::check_expr(&expr));
        self.select = QuerySelect::column_as(self.select, expr, alias);
        self
    }

    /// Groups rows by `expr`, audited.
    pub fn group_by(mut self, expr: impl IntoSimpleExpr) -> Self {
        let expr = expr.into_simple_expr();
        keep(&mut self.error, audit::check_expr(&expr));
        self.select = QuerySelect::group_by(self.select, expr);
        self
    }

    /// Keeps the groups matching `condition`, audited.
    pub fn having(mut self, condition: impl IntoCondition) -> Self {
        let condition = condition.into_condition();
        keep(&mut self.error, audit::check_condition(&condition));
        self.select = QuerySelect::having(self.select, condition);
        self
    }

    /// Orders by `col` ascending (with [`limit`](Self::limit): the first rows).
    pub fn order_by_asc(mut self, col: impl ColumnTrait) -> Self {
        self.select = QueryOrder::order_by_asc(self.select, col);
        self
    }

    /// Orders by `col` descending.
    pub fn order_by_desc(mut self, col: impl ColumnTrait) -> Self {
        self.select = QueryOrder::order_by_desc(self.select, col);
        self
    }

    /// Returns at most `limit` rows.
    pub fn limit(mut self, limit: u64) -> Self {
        self.select = QuerySelect::limit(self.select, limit);
        self
    }

    /// Removes duplicate rows.
    pub fn distinct(mut self) -> Self {
        self.select = QuerySelect::distinct(self.select);
        self
    }

    /// The condition `membership` makes of this subquery in a statement of `handle`; its
    /// outer expression audited.
    pub(crate) fn condition_for<C2: HandleConnection>(
        self,
        handle: &TenantConn<T, C2>,
        membership: Membership,
    ) -> std::result::Result<Expr, Refused> {
        if let Membership::In(expr) | Membership::NotIn(expr) = &membership {
            audit::check_expr(expr)?;
        }
        let statement = self.statement_for(handle)?;
        Ok(match membership {
            Membership::In(expr) => expr.in_subquery(statement),
            Membership::NotIn(expr) => expr.not_in_subquery(statement),
            Membership::Exists => Expr::exists(statement),
            Membership::NotExists => Expr::exists(statement).not(),
        })
    }

    /// The statement, for a statement of `handle`: refused when the subquery was made for
    /// another tenant or on another shard, or holds a refused fragment.
    pub(crate) fn statement_for<C2: HandleConnection>(
        self,
        handle: &TenantConn<T, C2>,
    ) -> std::result::Result<SelectStatement, Refused> {
        if let Some(refused) = self.error {
            return Err(refused);
        }
        if self.handle.tenant_value() != handle.tenant_value()
            || self.handle.shard() != handle.shard()
        {
            return Err(Refused::ForeignSubquery {
                expected: handle.tenant_id().to_string(),
                found: self.handle.tenant_id().to_string(),
            });
        }
        Ok(QueryTrait::into_query(self.select))
    }
}
