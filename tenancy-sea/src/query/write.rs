//! Scoped multi-row writes: [`ScopedUpdateMany`] and [`ScopedDeleteMany`].

use crate::entity::{SqlTenantId, TenantScoped, same_column};
use crate::error::{Error, Result};
use crate::scope;
use crate::scope::RunTraced;
use crate::scope::audit::{self, Keep};
use crate::scope::{HandleConnection, TenantConn};
use sea_orm::sea_query::{Expr, IntoCondition, SimpleExpr};
use sea_orm::{
    ActiveModelTrait, ActiveValue, DeleteMany, DeleteResult, EntityTrait, IdenStatic, QueryFilter,
    UpdateMany, UpdateResult,
};

pub(super) fn key_write_error<E: TenantScoped>(col: E::Column) -> Error {
    Error::ShardKeyWrite {
        table: E::default().table_name(),
        column: col.as_str().to_owned(),
    }
}

pub(super) fn is_shard_key<E: TenantScoped>(col: E::Column) -> bool {
    E::shard_key_column().is_some_and(|key| same_column(key, col))
}

pub(super) fn column_write_error<E: TenantScoped>() -> Error {
    Error::TenantColumnWrite {
        table: E::default().table_name(),
        column: E::tenant_column().as_str().to_owned(),
    }
}

/// An update of many of one tenant's rows, made by [`TenantDb::update_many`]: SeaORM's
/// `UpdateMany`, already filtered by tenant. Writing the tenant column is
/// [`Error::TenantColumnWrite`] and nothing runs.
///
/// [`TenantDb::update_many`]: crate::TenantDb::update_many
#[must_use = "an update does nothing until `.exec()`"]
pub struct ScopedUpdateMany<'h, T: SqlTenantId, E: EntityTrait, C> {
    handle: &'h TenantConn<T, C>,
    update: UpdateMany<E>,
    error: Option<Error>,
}

impl<'h, T, E, C> ScopedUpdateMany<'h, T, E, C>
where
    T: SqlTenantId,
    E: TenantScoped<TenantId = T>,
    C: HandleConnection,
{
    pub(crate) fn new(handle: &'h TenantConn<T, C>) -> Self {
        let update = E::update_many().filter(scope::equals(
            E::tenant_column(),
            handle.tenant_value(),
            handle.backend(),
        ));
        ScopedUpdateMany {
            handle,
            update,
            error: None,
        }
    }

    /// Sets `col` to `expr` on every matched row. A raw SQL fragment in `expr`
    /// ([`Error::RawFragment`]: it could write another column, the tenant's) or a plain
    /// subquery ([`Error::UnscopedSubquery`]) fails the update when it runs.
    pub fn col_expr(mut self, col: E::Column, expr: impl Into<SimpleExpr>) -> Self {
        let expr = expr.into();
        if let Err(refused) = audit::check_expr(&expr) {
            Keep::keep(&mut self.error, refused);
        }
        if same_column(col, E::tenant_column()) {
            self.error.get_or_insert_with(column_write_error::<E>);
        } else if is_shard_key::<E>(col) {
            self.error.get_or_insert_with(|| key_write_error::<E>(col));
        } else {
            self.update = self.update.col_expr(col, expr);
        }
        self
    }

    /// Sets every `Set` column of `am` on every matched row. A tenant column set to this
    /// tenant is left out; set to another tenant it is [`Error::TenantMismatch`].
    pub fn set<A>(mut self, mut am: A) -> Self
    where
        A: ActiveModelTrait<Entity = E>,
    {
        let col = E::tenant_column();
        if let ActiveValue::Set(found) | ActiveValue::Unchanged(found) = am.get(col) {
            if &found != self.handle.tenant_value() {
                self.error
                    .get_or_insert_with(|| self.handle.mismatch::<E>(found));
            }
            am.not_set(col);
        }
        if let Some(key) = E::shard_key_column()
            && matches!(am.get(key), ActiveValue::Set(_))
        {
            self.error.get_or_insert_with(|| key_write_error::<E>(key));
        }
        self.update = self.update.set(am);
        self
    }

    /// Adds a condition, ANDed with the tenant condition; audited as a select's.
    pub fn filter(mut self, condition: impl IntoCondition) -> Self {
        let condition = condition.into_condition();
        if let Err(refused) = audit::check_condition(&condition) {
            Keep::keep(&mut self.error, refused);
        }
        self.update = self.update.filter(condition);
        self
    }

    subquery_filters!();

    fn filter_trusted(mut self, condition: Expr) -> Self {
        self.update = self.update.filter(condition);
        self
    }

    /// Runs the update; the result counts the rows changed.
    pub async fn exec(self) -> Result<UpdateResult> {
        let span = self.handle.span("update_many", E::default().table_name());
        let Self {
            handle,
            update,
            error,
            ..
        } = self;
        async move {
            if let Some(error) = error {
                return Err(error);
            }
            Ok(on_conn!(handle, |conn| update.exec(conn).await?))
        }
        .traced(span)
        .await
    }
}

/// A delete of many of one tenant's rows, made by [`TenantDb::delete_many`]: SeaORM's
/// `DeleteMany`, already filtered by tenant.
///
/// [`TenantDb::delete_many`]: crate::TenantDb::delete_many
#[must_use = "a delete does nothing until `.exec()`"]
pub struct ScopedDeleteMany<'h, T: SqlTenantId, E: EntityTrait, C> {
    handle: &'h TenantConn<T, C>,
    delete: DeleteMany<E>,
    error: Option<Error>,
}

impl<'h, T, E, C> ScopedDeleteMany<'h, T, E, C>
where
    T: SqlTenantId,
    E: TenantScoped<TenantId = T>,
    C: HandleConnection,
{
    pub(crate) fn new(handle: &'h TenantConn<T, C>) -> Self {
        let delete = E::delete_many().filter(scope::equals(
            E::tenant_column(),
            handle.tenant_value(),
            handle.backend(),
        ));
        ScopedDeleteMany {
            handle,
            delete,
            error: None,
        }
    }

    /// Adds a condition, ANDed with the tenant condition; audited as a select's.
    pub fn filter(mut self, condition: impl IntoCondition) -> Self {
        let condition = condition.into_condition();
        if let Err(refused) = audit::check_condition(&condition) {
            Keep::keep(&mut self.error, refused);
        }
        self.delete = self.delete.filter(condition);
        self
    }

    subquery_filters!();

    fn filter_trusted(mut self, condition: Expr) -> Self {
        self.delete = self.delete.filter(condition);
        self
    }

    /// Runs the delete; the result counts the rows deleted.
    pub async fn exec(self) -> Result<DeleteResult> {
        let span = self.handle.span("delete_many", E::default().table_name());
        let Self {
            handle,
            delete,
            error,
            ..
        } = self;
        async move {
            if let Some(error) = error {
                return Err(error);
            }
            Ok(on_conn!(handle, |conn| delete.exec(conn).await?))
        }
        .traced(span)
        .await
    }
}
