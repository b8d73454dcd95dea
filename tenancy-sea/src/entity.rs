//! What an entity must be to be used through a tenant handle.

use sea_orm::sea_query::ValueType;
use sea_orm::{EntityTrait, Value};
use tenancy_core::TenantId;

/// A [`TenantId`] that SeaORM can bind as a parameter.
///
/// Implemented for every `TenantId` that converts to and from a SeaORM [`Value`]: `i32`,
/// `i64`, `String`, `uuid::Uuid`, and your own id types that implement the same traits.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used as a tenant id",
    label = "not a tenant id type",
    note = "tenant ids can be i32, i64, uuid::Uuid or String, or a type that implements \
            `tenancy_sea::TenantId`, `Into<sea_orm::Value>` and `sea_orm::sea_query::ValueType`"
)]
pub trait TenantKey: TenantId + Into<Value> + ValueType {}

impl<T: TenantId + Into<Value> + ValueType> TenantKey for T {}

/// An entity whose rows each belong to one tenant.
///
/// Implemented by `#[derive(TenantScoped)]` on the entity's `Model`; the field marked
/// `#[tenant_id]` names the tenant column.
///
/// ```
/// use sea_orm::entity::prelude::*;
/// use tenancy_sea::prelude::*;
///
/// #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
/// #[sea_orm(table_name = "orders")]
/// pub struct Model {
///     #[sea_orm(primary_key)]
///     pub id: i64,
///     #[tenant_id]
///     pub tenant_id: i64,
///     pub total_cents: i64,
/// }
///
/// #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// pub enum Relation {}
///
/// impl ActiveModelBehavior for ActiveModel {}
///
/// assert_eq!(<Entity as TenantScoped>::tenant_column().as_str(), "tenant_id");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not tenant-scoped, so it cannot be written through a tenant handle",
    label = "not a tenant-scoped entity",
    note = "derive `TenantScoped` on its Model and mark the tenant column `#[tenant_id]`; a \
            `GlobalEntity` is read-only through tenant handles (write it through \
            `Tenancy::unscoped()`)"
)]
pub trait TenantScoped: EntityTrait {
    /// The Rust type of the tenant column.
    type TenantId: TenantKey;

    /// The tenant column.
    fn tenant_column() -> Self::Column;

    /// The column whose value places a row on a shard; `None` when the tenant id is the
    /// shard key.
    fn shard_key_column() -> Option<Self::Column>;
}

/// A table shared by every tenant (plans, currencies): it has no tenant column and tenant
/// handles read it unfiltered. Implemented by `#[derive(GlobalEntity)]`.
pub trait GlobalEntity: EntityTrait {}

/// An entity that may be read through a handle whose tenant ids are `T`: a
/// [`TenantScoped`] entity with that id type (filtered), or a [`GlobalEntity`] (not
/// filtered). Implemented by the derives; there is no other way in.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used through a tenant handle with tenant ids of type `{T}`",
    label = "neither tenant-scoped with `{T}` ids nor global",
    note = "derive `TenantScoped` on its Model (with a `#[tenant_id]` field of type `{T}`), or \
            `GlobalEntity` for a table shared by every tenant; for admin work use \
            `Tenancy::unscoped()`"
)]
pub trait ScopedEntity<T: TenantKey>: EntityTrait {
    /// The column a tenant's reads are filtered on; `None` for a global entity.
    fn scope_column() -> Option<Self::Column>;
}
