//! What a scoped select is read into besides its models: rows of another shape
//! ([`ScopedSelector`]) and pages ([`ScopedPaginator`]).

use crate::entity::SqlTenantId;
use crate::error::{Error, Result};
use crate::scope::RunTraced;
use crate::scope::audit::{self, Refused};
use crate::scope::{HandleConnection, TenantConn};
use sea_orm::{EntityTrait, PaginatorTrait, Select, Selector, SelectorTrait};

/// A scoped select read into another shape: see
/// [`ScopedSelect::into_tuple`](crate::ScopedSelect::into_tuple) and
/// [`ScopedSelect::into_model`](crate::ScopedSelect::into_model).
#[must_use = "a select does nothing until `.all()` or `.one()`"]
pub struct ScopedSelector<'h, T: SqlTenantId, S: SelectorTrait, C> {
    pub(super) handle: &'h TenantConn<T, C>,
    pub(super) table: &'static str,
    pub(super) selector: Selector<S>,
    pub(super) error: Option<Refused>,
}

impl<'h, T, S, C> ScopedSelector<'h, T, S, C>
where
    T: SqlTenantId,
    S: SelectorTrait,
    C: HandleConnection,
{
    /// The first row, if any.
    pub async fn one(self) -> Result<Option<S::Item>> {
        let span = self.handle.span("select", self.table);
        let Self {
            handle,
            selector,
            error,
            ..
        } = self;
        async move {
            audit::ready(&error)?;
            Ok(on_conn!(handle, |conn| selector.one(conn).await?))
        }
        .traced(span)
        .await
    }

    /// Every row.
    pub async fn all(self) -> Result<Vec<S::Item>> {
        let span = self.handle.span("select", self.table);
        let Self {
            handle,
            selector,
            error,
            ..
        } = self;
        async move {
            audit::ready(&error)?;
            Ok(on_conn!(handle, |conn| selector.all(conn).await?))
        }
        .traced(span)
        .await
    }
}

/// Pages through a [`ScopedSelect`](crate::ScopedSelect): SeaORM's `Paginator`, scoped.
pub struct ScopedPaginator<'h, T: SqlTenantId, E: EntityTrait, C> {
    pub(super) handle: &'h TenantConn<T, C>,
    pub(super) select: Select<E>,
    pub(super) error: Option<Refused>,
    pub(super) page_size: u64,
    pub(super) page: u64,
}

impl<T, E, C> ScopedPaginator<'_, T, E, C>
where
    T: SqlTenantId,
    E: EntityTrait,
    C: HandleConnection,
    E::Model: Sync,
{
    fn page_size(&self) -> Result<u64> {
        audit::ready(&self.error)?;
        if self.page_size == 0 {
            Err(Error::ZeroPageSize)
        } else {
            Ok(self.page_size)
        }
    }

    fn span(&self, op: &'static str) -> crate::scope::Traced {
        self.handle.span(op, E::default().table_name())
    }

    /// The rows of page `page` (counting from 0).
    pub async fn fetch_page(&self, page: u64) -> Result<Vec<E::Model>> {
        let size = self.page_size()?;
        let select = self.select.clone();
        async {
            Ok(on_conn!(self.handle, |conn| select
                .paginate(conn, size)
                .fetch_page(page)
                .await?))
        }
        .traced(self.span("select"))
        .await
    }

    /// The rows of the current page.
    pub async fn fetch(&self) -> Result<Vec<E::Model>> {
        self.fetch_page(self.page).await
    }

    /// The current page's rows, then moves to the next page; `None` after the last.
    pub async fn fetch_and_next(&mut self) -> Result<Option<Vec<E::Model>>> {
        let rows = self.fetch().await?;
        self.page += 1;
        Ok((!rows.is_empty()).then_some(rows))
    }

    /// The number of rows over all pages.
    pub async fn num_items(&self) -> Result<u64> {
        let size = self.page_size()?;
        let select = self.select.clone();
        async {
            Ok(on_conn!(self.handle, |conn| select
                .paginate(conn, size)
                .num_items()
                .await?))
        }
        .traced(self.span("count"))
        .await
    }

    /// The number of pages.
    pub async fn num_pages(&self) -> Result<u64> {
        let items = self.num_items().await?;
        Ok(items.div_ceil(self.page_size()?))
    }

    /// The current page (counting from 0).
    pub fn cur_page(&self) -> u64 {
        self.page
    }
}
