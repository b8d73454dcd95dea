//! Scoped multi-row writes and upserts.

use crate::entity::{TenantKey, TenantScoped, same_column};
use crate::error::{Error, Result, is_rls_violation};
use crate::handle::TenantDb;
use crate::scope;
use crate::scope::HandleConnection;
use crate::scope::audit::{self, Keep};
use sea_orm::sea_query::{Expr, IntoCondition, OnConflict, SimpleExpr};
use sea_orm::{
    ActiveModelTrait, ActiveValue, DbBackend, DeleteMany, DeleteResult, EntityName, EntityTrait,
    IdenStatic, Iterable, PrimaryKeyToColumn, QueryFilter, UpdateMany, UpdateResult,
};
use tracing::Instrument;

fn key_write_error<E: TenantScoped>(col: E::Column) -> Error {
    Error::ShardKeyWrite {
        table: E::default().table_name(),
        column: col.as_str().to_owned(),
    }
}

fn is_shard_key<E: TenantScoped>(col: E::Column) -> bool {
    E::shard_key_column().is_some_and(|key| same_column(key, col))
}

fn column_write_error<E: TenantScoped>() -> Error {
    Error::TenantColumnWrite {
        table: E::default().table_name(),
        column: E::tenant_column().as_str().to_owned(),
    }
}

/// An update of many of one tenant's rows, made by [`TenantDb::update_many`]: SeaORM's
/// `UpdateMany`, already filtered by tenant. Writing the tenant column is
/// [`Error::TenantColumnWrite`] and nothing runs.
#[must_use = "an update does nothing until `.exec()`"]
pub struct ScopedUpdateMany<'h, T: TenantKey, E: EntityTrait, C> {
    handle: &'h TenantDb<T, C>,
    update: UpdateMany<E>,
    error: Option<Error>,
}

impl<'h, T, E, C> ScopedUpdateMany<'h, T, E, C>
where
    T: TenantKey,
    E: TenantScoped<TenantId = T>,
    C: HandleConnection,
{
    pub(crate) fn new(handle: &'h TenantDb<T, C>) -> Self {
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
        if let Some(error) = self.error {
            return Err(error);
        }
        let span = self.handle.span("update_many", E::default().table_name());
        let Self { handle, update, .. } = self;
        async { Ok(on_conn!(handle, |conn| update.exec(conn).await?)) }
            .instrument(span)
            .await
    }
}

/// A delete of many of one tenant's rows, made by [`TenantDb::delete_many`]: SeaORM's
/// `DeleteMany`, already filtered by tenant.
#[must_use = "a delete does nothing until `.exec()`"]
pub struct ScopedDeleteMany<'h, T: TenantKey, E: EntityTrait, C> {
    handle: &'h TenantDb<T, C>,
    delete: DeleteMany<E>,
    error: Option<Error>,
}

impl<'h, T, E, C> ScopedDeleteMany<'h, T, E, C>
where
    T: TenantKey,
    E: TenantScoped<TenantId = T>,
    C: HandleConnection,
{
    pub(crate) fn new(handle: &'h TenantDb<T, C>) -> Self {
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
        if let Some(error) = self.error {
            return Err(error);
        }
        let span = self.handle.span("delete_many", E::default().table_name());
        let Self { handle, delete, .. } = self;
        async { Ok(on_conn!(handle, |conn| delete.exec(conn).await?)) }
            .instrument(span)
            .await
    }
}

/// An insert that resolves a unique-key conflict, made by [`TenantDb::upsert`].
///
/// The row is stamped with the tenant like any insert. The update half only ever touches
/// a row of the same tenant: when the conflicting row belongs to another tenant nothing is
/// inserted or changed (PostgreSQL and SQLite: `DO UPDATE ... WHERE <tenant column> = $n`;
/// MySQL: each assignment keeps the old value unless the row is this tenant's).
///
/// ```
/// # use tenancy_sea::prelude::*;
/// # mod counter {
/// #     use sea_orm::entity::prelude::*;
/// #     use tenancy_sea::prelude::*;
/// #     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
/// #     #[sea_orm(table_name = "counter")]
/// #     pub struct Model {
/// #         #[sea_orm(primary_key, auto_increment = false)]
/// #         pub name: String,
/// #         #[tenant_id]
/// #         pub tenant_id: i64,
/// #         pub hits: i64,
/// #     }
/// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// #     pub enum Relation {}
/// #     impl ActiveModelBehavior for ActiveModel {}
/// # }
/// # async fn demo(db: TenantDb<i64>) -> tenancy_sea::Result<()> {
/// use sea_orm::Set;
/// db.upsert(counter::ActiveModel {
///     name: Set("home".into()),
///     hits: Set(1),
///     ..Default::default()
/// })
/// .on_conflict([counter::Column::Name])
/// .update_columns([counter::Column::Hits])
/// .exec()
/// .await?;
/// # Ok(()) }
/// ```
#[must_use = "an upsert does nothing until `.exec()`"]
pub struct ScopedUpsert<'h, T: TenantKey, A: ActiveModelTrait, C> {
    handle: &'h TenantDb<T, C>,
    am: A,
    conflict: Vec<<A::Entity as EntityTrait>::Column>,
    update: Vec<<A::Entity as EntityTrait>::Column>,
}

impl<'h, T, A, C> ScopedUpsert<'h, T, A, C>
where
    T: TenantKey,
    A: ActiveModelTrait + Send,
    A::Entity: TenantScoped<TenantId = T>,
    C: HandleConnection,
{
    pub(crate) fn new(handle: &'h TenantDb<T, C>, am: A) -> Self {
        ScopedUpsert {
            handle,
            am,
            conflict: Vec::new(),
            update: Vec::new(),
        }
    }

    /// The unique columns whose conflict is resolved (ignored by MySQL, which resolves a
    /// conflict on any unique key). Without it, the primary key.
    pub fn on_conflict(
        mut self,
        columns: impl IntoIterator<Item = <A::Entity as EntityTrait>::Column>,
    ) -> Self {
        self.conflict = columns.into_iter().collect();
        self
    }

    /// The columns overwritten with the new row's values on conflict. Without any, a
    /// conflict does nothing. The tenant column here is [`Error::TenantColumnWrite`].
    pub fn update_columns(
        mut self,
        columns: impl IntoIterator<Item = <A::Entity as EntityTrait>::Column>,
    ) -> Self {
        self.update = columns.into_iter().collect();
        self
    }

    /// Runs the statement; returns the rows affected as the backend counts them: 0 when
    /// the conflict was left alone on PostgreSQL and SQLite; MySQL counts the matched row
    /// (1) even when nothing changed.
    pub async fn exec(self) -> Result<u64> {
        type Entity<A> = <A as ActiveModelTrait>::Entity;
        let tenant_col = <Entity<A> as TenantScoped>::tenant_column();
        if self.update.iter().any(|c| same_column(*c, tenant_col)) {
            return Err(column_write_error::<Entity<A>>());
        }
        if let Some(key) = self.update.iter().find(|c| is_shard_key::<Entity<A>>(**c)) {
            return Err(key_write_error::<Entity<A>>(*key));
        }
        let handle = self.handle.route_model(&self.am)?;
        let am = handle.stamp(self.am)?;
        let primary_key: Vec<_> = <Entity<A> as EntityTrait>::PrimaryKey::iter()
            .map(PrimaryKeyToColumn::into_column)
            .collect();
        let conflict = if self.conflict.is_empty() {
            primary_key.clone()
        } else {
            self.conflict
        };
        let mut on_conflict = OnConflict::columns(conflict);
        let tenant = handle.tenant_value().clone();
        let backend = handle.backend();
        if self.update.is_empty() {
            // MySQL has no DO NOTHING: it becomes `pk = pk`, which changes nothing.
            on_conflict.do_nothing_on(primary_key);
        } else if handle.backend() == DbBackend::MySql {
            // No WHERE on ON DUPLICATE KEY UPDATE: keep the old value unless the row is ours.
            on_conflict.values(self.update.iter().map(|col| {
                let new_value = Expr::cust(format!("VALUES({})", mysql_quote(col.as_str())));
                let kept = Expr::col(*col);
                let ours = scope::equals(tenant_col, &tenant, backend);
                let value = Expr::case(ours, new_value).finally(kept);
                (*col, value.into())
            }));
        } else {
            on_conflict
                .update_columns(self.update.iter().copied())
                .action_and_where(scope::equals_expr(tenant_col, &tenant, backend));
        }
        let span = handle.span("upsert", Entity::<A>::default().table_name());
        let insert = Entity::<A>::insert(am).on_conflict(on_conflict);
        let result = async {
            Ok(on_conn!(&*handle, |conn| insert
                .exec_without_returning(conn)
                .await?))
        }
        .instrument(span)
        .await;
        match result {
            Err(Error::Db(err)) if is_rls_violation(&err) => Err(Error::CrossTenantConflict {
                table: Entity::<A>::default().table_name(),
            }),
            other => other,
        }
    }
}

/// A MySQL identifier in backticks (column names come from entity definitions).
fn mysql_quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}
