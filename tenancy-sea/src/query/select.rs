//! Scoped reads: [`ScopedSelect`] and the builders it leads to.

use super::joins::{JoinRule, TenantJoins};
use super::selector::{ScopedPaginator, ScopedSelector};
use super::subquery::ScopedSubquery;
use crate::entity::{ScopedEntity, SqlTenantId};
use crate::error::{Error, Result};
use crate::scope::RunTraced;
use crate::scope::audit::{self, Refused, keep};
use crate::scope::{HandleConnection, TenantConn, begin_unit};
use futures_util::Stream;
use sea_orm::sea_query::{Expr, IntoCondition, QueryStatementBuilder};
use sea_orm::{
    ColumnAsExpr, ColumnTrait, DbErr, EntityTrait, FromQueryResult, IntoSimpleExpr, Order,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait, Select, SelectGetableTuple,
    SelectModel, Statement, TryGetableMany,
};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The builder methods shared by every scoped select: each adds to the statement, none
/// can remove the tenant condition. Conditions and expressions are audited first
/// ([`audit`]): a raw fragment or a plain subquery fails the select when it runs.
macro_rules! query_methods {
    () => {
        /// Adds a condition, ANDed with the tenant condition and any earlier filter, as
        /// SeaORM's `filter` does. A raw SQL fragment in it
        /// ([`Error::RawFragment`](crate::Error::RawFragment)) or a plain subquery
        /// ([`Error::UnscopedSubquery`](crate::Error::UnscopedSubquery)) fails the select
        /// when it runs.
        pub fn filter(mut self, condition: impl IntoCondition) -> Self {
            let condition = condition.into_condition();
            keep(&mut self.error, audit::check_condition(&condition));
            self.select = QueryFilter::filter(self.select, condition);
            self
        }

        /// Orders by `col` ascending.
        pub fn order_by_asc(self, col: impl IntoSimpleExpr) -> Self {
            self.order_by(col, Order::Asc)
        }

        /// Orders by `col` descending.
        pub fn order_by_desc(self, col: impl IntoSimpleExpr) -> Self {
            self.order_by(col, Order::Desc)
        }

        /// Orders by `col` in the given direction.
        pub fn order_by(mut self, col: impl IntoSimpleExpr, order: Order) -> Self {
            let expr = col.into_simple_expr();
            keep(&mut self.error, audit::check_expr(&expr));
            self.select = QueryOrder::order_by(self.select, expr, order);
            self
        }

        /// Returns at most `limit` rows.
        pub fn limit(mut self, limit: u64) -> Self {
            self.select = QuerySelect::limit(self.select, limit);
            self
        }

        /// Skips the first `offset` rows.
        pub fn offset(mut self, offset: u64) -> Self {
            self.select = QuerySelect::offset(self.select, offset);
            self
        }
    };
}

/// The filters, orderings and bounds every tenant select takes, as a trait, for reusable
/// query functions: one type parameter, whatever the tenant id type, the connection (a
/// pool or a transaction) or the joins allowed.
///
/// ```
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
/// #         pub total_cents: i64,
/// #     }
/// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// #     pub enum Relation {}
/// #     impl ActiveModelBehavior for ActiveModel {}
/// # }
/// use sea_orm::ColumnTrait;
/// use tenancy_sea::ScopedQuery;
///
/// fn large<Q: ScopedQuery<order::Entity>>(query: Q) -> Q {
///     query
///         .filter(order::Column::TotalCents.gt(10_000))
///         .order_by_desc(order::Column::TotalCents)
/// }
/// # async fn demo(db: tenancy_sea::TenantDb<i64>) -> tenancy_sea::Result<()> {
/// let orders = large(db.find::<order::Entity>()).all().await?; // on the pool
/// let txn = db.begin().await?;
/// let inside = large(txn.find::<order::Entity>()).all().await?; // in a transaction
/// # let _ = (orders, inside);
/// # Ok(()) }
/// ```
pub trait ScopedQuery<E: EntityTrait>: Sized {
    /// See [`ScopedSelect::filter`].
    fn filter(self, condition: impl IntoCondition) -> Self;
    /// See [`ScopedSelect::order_by_asc`].
    fn order_by_asc(self, col: impl IntoSimpleExpr) -> Self;
    /// See [`ScopedSelect::order_by_desc`].
    fn order_by_desc(self, col: impl IntoSimpleExpr) -> Self;
    /// See [`ScopedSelect::limit`].
    fn limit(self, limit: u64) -> Self;
    /// See [`ScopedSelect::offset`].
    fn offset(self, offset: u64) -> Self;
}

impl<T, E, C, J> ScopedQuery<E> for ScopedSelect<'_, T, E, C, J>
where
    T: SqlTenantId,
    E: EntityTrait,
    C: HandleConnection,
{
    fn filter(self, condition: impl IntoCondition) -> Self {
        ScopedSelect::filter(self, condition)
    }

    fn order_by_asc(self, col: impl IntoSimpleExpr) -> Self {
        ScopedSelect::order_by_asc(self, col)
    }

    fn order_by_desc(self, col: impl IntoSimpleExpr) -> Self {
        ScopedSelect::order_by_desc(self, col)
    }

    fn limit(self, limit: u64) -> Self {
        ScopedSelect::limit(self, limit)
    }

    fn offset(self, offset: u64) -> Self {
        ScopedSelect::offset(self, offset)
    }
}

/// A select of one tenant's rows of `E` (or of a global entity's rows), made by
/// [`TenantDb::find`](crate::TenantDb::find) and its siblings.
#[must_use = "a select does nothing until `.all()`, `.one()`, `.count()`, `.paginate()` or `.stream()`"]
pub struct ScopedSelect<'h, T: SqlTenantId, E: EntityTrait, C, J = TenantJoins> {
    pub(super) handle: &'h TenantConn<T, C>,
    pub(super) select: Select<E>,
    pub(super) error: Option<Refused>,
    joins: std::marker::PhantomData<fn() -> J>,
}

// Methods need only `E: EntityTrait`: every constructor already demanded
// `E: ScopedEntity<T>`, and not repeating it keeps a misuse to one compile error.
impl<'h, T, E, C, J> ScopedSelect<'h, T, E, C, J>
where
    T: SqlTenantId,
    E: EntityTrait,
    C: HandleConnection,
{
    pub(crate) fn new(handle: &'h TenantConn<T, C>, select: Select<E>) -> Self {
        ScopedSelect {
            handle,
            select,
            error: None,
            joins: std::marker::PhantomData,
        }
    }

    /// The SeaORM select, tenant condition included, for the crate's own execution paths;
    /// the first fragment refused, if any.
    pub(crate) fn into_select(self) -> Result<Select<E>> {
        audit::ready(&self.error)?;
        Ok(self.select)
    }

    /// This select, failing with `refused` when it runs.
    pub(crate) fn refuse(mut self, refused: Refused) -> Self {
        keep(&mut self.error, Err(refused));
        self
    }

    /// The handle and the select to run, or the first fragment refused.
    fn parts(self) -> Result<(&'h TenantConn<T, C>, Select<E>)> {
        let handle = self.handle;
        Ok((handle, self.into_select()?))
    }

    fn span(&self, op: &'static str) -> crate::scope::Traced {
        self.handle.span(op, E::default().table_name())
    }

    query_methods!();

    /// Removes duplicate rows (`SELECT DISTINCT`).
    pub fn distinct(mut self) -> Self {
        self.select = QuerySelect::distinct(self.select);
        self
    }

    /// Locks the selected rows against writes by others until the transaction ends
    /// (`FOR SHARE`; ignored by SQLite).
    pub fn lock_shared(mut self) -> Self {
        self.select = QuerySelect::lock_shared(self.select);
        self
    }

    /// Locks the selected rows for update until the transaction ends (`FOR UPDATE`;
    /// ignored by SQLite).
    pub fn lock_exclusive(mut self) -> Self {
        self.select = QuerySelect::lock_exclusive(self.select);
        self
    }

    /// Selects no columns but those added next with [`column`](Self::column) or
    /// [`column_as`](Self::column_as); pair it with [`into_tuple`](Self::into_tuple) or
    /// [`into_model`](Self::into_model). The tenant condition stays in `WHERE`.
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

    /// Adds an expression to the selection under `alias`, e.g.
    /// `.column_as(order::Column::Id.count(), "orders")`. Audited like a filter.
    pub fn column_as(mut self, expr: impl ColumnAsExpr, alias: &str) -> Self {
        let expr = expr.into_column_as_expr();
        keep(&mut self.error, audit::check_expr(&expr));
        self.select = QuerySelect::column_as(self.select, expr, alias);
        self
    }

    /// Groups rows by `expr` (`GROUP BY`). Audited like a filter.
    pub fn group_by(mut self, expr: impl IntoSimpleExpr) -> Self {
        let expr = expr.into_simple_expr();
        keep(&mut self.error, audit::check_expr(&expr));
        self.select = QuerySelect::group_by(self.select, expr);
        self
    }

    /// Keeps the groups matching `condition` (`HAVING`). Audited like a filter.
    pub fn having(mut self, condition: impl IntoCondition) -> Self {
        let condition = condition.into_condition();
        keep(&mut self.error, audit::check_condition(&condition));
        self.select = QuerySelect::having(self.select, condition);
        self
    }

    subquery_filters!(J: JoinRule<T, R>);

    fn filter_trusted(mut self, condition: Expr) -> Self {
        self.select = QueryFilter::filter(self.select, condition);
        self
    }

    /// Adds the value `subquery` selects (one column, at most one row) to the selection
    /// under `alias`, e.g. each customer's order count.
    pub fn column_as_subquery<R>(
        mut self,
        subquery: ScopedSubquery<'_, T, R, C>,
        alias: &str,
    ) -> Self
    where
        R: ScopedEntity<T>,
        J: JoinRule<T, R>,
    {
        match subquery.statement_for(self.handle) {
            Ok(sub) => {
                let expr = Expr::SubQuery(None, Box::new(sub.into_sub_query_statement()));
                self.select = QuerySelect::column_as(self.select, expr, alias);
            }
            Err(refused) => keep(&mut self.error, Err(refused)),
        }
        self
    }

    /// Reads each row as a tuple of the selected columns, e.g. `(i64, i64)`.
    pub fn into_tuple<R: TryGetableMany>(self) -> ScopedSelector<'h, T, SelectGetableTuple<R>, C> {
        ScopedSelector {
            handle: self.handle,
            table: E::default().table_name(),
            selector: self.select.into_tuple(),
            error: self.error,
        }
    }

    /// Reads each row as `M`, any `FromQueryResult` type (a partial model, an aggregate).
    pub fn into_model<M: FromQueryResult>(self) -> ScopedSelector<'h, T, SelectModel<M>, C> {
        ScopedSelector {
            handle: self.handle,
            table: E::default().table_name(),
            selector: self.select.into_model(),
            error: self.error,
        }
    }

    /// The statement this select would run, for logging or tests.
    pub fn build(&self) -> Statement {
        self.select.build(self.handle.backend())
    }

    /// The first row, if any.
    // Not an `async fn`: the future holds the statement's parts, not the builder they
    // came from, and is the traced statement itself, not a future wrapping it (a point
    // read's future is moved whole at each layer).
    pub fn one(self) -> impl Future<Output = Result<Option<E::Model>>> {
        let span = self.span("select");
        // A fragment refused before it runs counts too, as an error of its kind.
        let parts = self.parts();
        async move {
            let (handle, select) = parts?;
            Ok(on_conn!(handle, |conn| select.one(conn).await?))
        }
        .traced(span)
    }

    /// Every row.
    pub fn all(self) -> impl Future<Output = Result<Vec<E::Model>>> {
        let span = self.span("select");
        // A fragment refused before it runs counts too, as an error of its kind.
        let parts = self.parts();
        async move {
            let (handle, select) = parts?;
            Ok(on_conn!(handle, |conn| select.all(conn).await?))
        }
        .traced(span)
    }

    /// How many rows this select returns (limit and offset included).
    pub async fn count(self) -> Result<u64>
    where
        E::Model: Sync,
    {
        let span = self.span("count");
        // A fragment refused before it runs counts too, as an error of its kind.
        async move {
            let (handle, select) = self.parts()?;
            Ok(on_conn!(handle, |conn| PaginatorTrait::count(select, conn).await?))
        }
        .traced(span)
        .await
    }

    /// Pages of `page_size` rows: see [`ScopedPaginator`]. Give the select an order for
    /// pages to be stable.
    pub fn paginate(self, page_size: u64) -> ScopedPaginator<'h, T, E, C> {
        ScopedPaginator {
            handle: self.handle,
            select: self.select,
            error: self.error,
            page_size,
            page: 0,
        }
    }

    /// The rows as a stream, fetched as they are consumed.
    ///
    /// Where each unit of work needs a set-up (row-level security, schema per tenant), the
    /// stream runs in a transaction of its own, held until the stream is dropped; it only
    /// reads, so ending it by a rollback loses nothing.
    pub async fn stream(self) -> Result<impl Stream<Item = Result<E::Model>> + Send + 'h> {
        // Counted once, when it opens: its rows are read as they are consumed.
        let traced = self.span("stream");
        let span = traced.span();
        let (handle, select) = self.parts()?;
        let statement = sea_orm::QueryTrait::build(&select, handle.backend());
        let inner: RowStream<'h, E::Model> = async {
            Ok::<_, Error>(match handle.session() {
                None => {
                    let statement = handle.tag().apply(statement);
                    let rows =
                        sea_orm::StreamTrait::stream_raw(handle.unit_connection(), statement)
                            .await?;
                    Box::pin(models::<E, _>(rows)) as RowStream<'h, E::Model>
                }
                Some(session) => {
                    let (txn, tag) = begin_unit(handle.unit_connection(), Some(session)).await?;
                    let statement = tag.unwrap_or_default().apply(statement);
                    let rows = TxnRowsAsyncSendTryBuilder {
                        txn,
                        rows_builder: |txn: &crate::scope::UnitTxn| {
                            Box::pin(async move {
                                let rows = sea_orm::StreamTrait::stream_raw(txn, statement).await?;
                                Ok::<RowStream<'_, E::Model>, DbErr>(Box::pin(models::<E, _>(rows)))
                            })
                        },
                    }
                    .try_build()
                    .await?;
                    Box::pin(rows)
                }
            })
        }
        .traced(traced)
        .await?;
        Ok(ScopedStream { inner, span })
    }
}

type RowStream<'a, M> = Pin<Box<dyn Stream<Item = std::result::Result<M, DbErr>> + Send + 'a>>;

/// The models of a stream of rows, read as SeaORM's own `stream` reads them.
fn models<E, S>(rows: S) -> impl Stream<Item = std::result::Result<E::Model, DbErr>> + Send
where
    E: EntityTrait,
    S: Stream<Item = std::result::Result<sea_orm::QueryResult, DbErr>> + Send,
{
    use futures_util::StreamExt;
    rows.map(|row| row.and_then(|row| E::Model::from_query_result(&row, "")))
}

/// A stream of rows together with the transaction it reads in.
#[ouroboros::self_referencing]
struct TxnRows<M: 'static> {
    txn: crate::scope::UnitTxn,
    #[borrows(txn)]
    #[not_covariant]
    rows: RowStream<'this, M>,
}

impl<M: 'static> Stream for TxnRows<M> {
    type Item = std::result::Result<M, DbErr>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.with_rows_mut(|rows| rows.as_mut().poll_next(cx))
    }
}

/// A stream of rows that runs inside its tenant's span.
struct ScopedStream<'h, M> {
    inner: RowStream<'h, M>,
    span: tracing::Span,
}

impl<M> Stream for ScopedStream<'_, M> {
    type Item = Result<M>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let _entered = this.span.enter();
        this.inner
            .as_mut()
            .poll_next(cx)
            .map(|item| item.map(|row| row.map_err(Error::from)))
    }
}
