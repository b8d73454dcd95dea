//! Scoped upserts: [`ScopedUpsert`], an insert whose conflict resolution only ever
//! touches a row of the same tenant.

use super::write::{column_write_error, is_shard_key, key_write_error};
use crate::entity::{SqlTenantId, TenantScoped, same_column};
use crate::error::{Error, Result, is_rls_violation};
use crate::scope;
use crate::scope::RunTraced;
use crate::scope::{HandleConnection, TenantConn};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, DbBackend, EntityName, EntityTrait, IdenStatic, Iterable, PrimaryKeyToColumn,
};

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
///
/// [`TenantDb::upsert`]: crate::TenantDb::upsert
#[must_use = "an upsert does nothing until `.exec()`"]
pub struct ScopedUpsert<'h, T: SqlTenantId, A: ActiveModelTrait, C> {
    handle: &'h TenantConn<T, C>,
    am: A,
    conflict: Vec<<A::Entity as EntityTrait>::Column>,
    update: Vec<<A::Entity as EntityTrait>::Column>,
}

impl<'h, T, A, C> ScopedUpsert<'h, T, A, C>
where
    T: SqlTenantId,
    A: ActiveModelTrait + Send,
    A::Entity: TenantScoped<TenantId = T>,
    C: HandleConnection,
{
    pub(crate) fn new(handle: &'h TenantConn<T, C>, am: A) -> Self {
        ScopedUpsert {
            handle,
            am,
            conflict: Vec::new(),
            update: Vec::new(),
        }
    }

    /// The unique columns whose conflict is resolved (ignored by MySQL, which resolves a
    /// conflict on any unique key). Without it, the primary key.
    ///
    /// When the entity's unique key holds the tenant column beside these columns
    /// (`#[sea_orm(unique_key = "..")]` on both, the key of a per-tenant unique value,
    /// and the only kind Citus can keep), the tenant column is added to the target, so
    /// `on_conflict([Email])` matches the `(tenant_id, email)` key.
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
            with_tenant::<Entity<A>>(self.conflict, handle.backend())
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
        .traced(span)
        .await;
        match result {
            Err(Error::Db(err)) if is_rls_violation(&err) => Err(Error::CrossTenantConflict {
                table: Entity::<A>::default().table_name(),
            }),
            other => other,
        }
    }
}

/// `conflict`, with the tenant column added when the entity declares a unique key of
/// exactly these columns and the tenant column; as given otherwise.
fn with_tenant<E: TenantScoped>(conflict: Vec<E::Column>, backend: DbBackend) -> Vec<E::Column> {
    let tenant = E::tenant_column();
    if conflict.iter().any(|c| same_column(*c, tenant)) {
        return conflict;
    }
    // The unique keys SeaORM makes of the entity's `unique_key`s, as index statements.
    let indexes = sea_orm::Schema::new(backend).create_index_from_entity(E::default());
    let wanted: std::collections::BTreeSet<&str> = conflict
        .iter()
        .map(IdenStatic::as_str)
        .chain([tenant.as_str()])
        .collect();
    let declared = indexes.iter().any(|index| {
        let columns = index.get_index_spec().get_column_names();
        index.is_unique_key()
            && columns.len() == wanted.len()
            && columns.iter().all(|c| wanted.contains(c.as_str()))
    });
    if declared {
        conflict.into_iter().chain([tenant]).collect()
    } else {
        conflict
    }
}

/// A MySQL identifier in backticks (column names come from entity definitions).
fn mysql_quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}
