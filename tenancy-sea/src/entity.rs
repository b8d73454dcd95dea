//! What an entity must be to be used through a tenant handle.

use sea_orm::sea_query::ValueType;
use sea_orm::{EntityTrait, Value};
use tenancy_core::{RoutingError, TenantId};

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

    /// The `#[shard_key]` column; `None` when the tenant id is the shard key (a tenant's
    /// rows live together on one shard).
    fn shard_key_column() -> Option<Self::Column>;

    /// Appends the canonical bytes of a `#[shard_key]` column value (what a router
    /// places). Implemented by the derive for entities with a `#[shard_key]`.
    #[doc(hidden)]
    fn write_shard_key(value: Value, out: &mut Vec<u8>) -> Result<(), RoutingError> {
        let _ = (value, out);
        Err(RoutingError::UnsupportedKey(
            "the entity has no #[shard_key]",
        ))
    }
}

/// What the derive's `write_shard_key` calls: the value as the key's Rust type, then its
/// canonical bytes.
#[doc(hidden)]
pub fn write_shard_key<K: TenantKey>(value: Value, out: &mut Vec<u8>) -> Result<(), RoutingError> {
    let key = <K as ValueType>::try_from(value)
        .map_err(|_| RoutingError::UnsupportedKey("a value not of the shard key's type"))?;
    key.write_canonical_bytes(out);
    Ok(())
}

/// A [`TenantScoped`] entity with a `#[shard_key]` field: a tenant's rows are spread over
/// the shards by that key. Implemented by `#[derive(TenantScoped)]`.
///
/// Its rows are read by key through [`TenantDb::by_key`](crate::TenantDb::by_key) (one
/// shard) and [`TenantDb::by_keys`](crate::TenantDb::by_keys) (the shards an IN list
/// names), or explicitly on every shard through
/// [`TenantDb::across_shards`](crate::TenantDb::across_shards); a plain
/// [`TenantDb::find`](crate::TenantDb::find) does not compile, so no read fans out by
/// accident. Writes route by the key the row carries.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no `#[shard_key]`, so it is not read by key",
    label = "not sharded by a key of its own",
    note = "its rows live on their tenant's shard: read them with `db.find::<E>()`"
)]
pub trait KeySharded: TenantScoped {
    /// The Rust type of the `#[shard_key]` field.
    type Key: TenantKey;
}

/// A table shared by every tenant (plans, currencies): it has no tenant column and tenant
/// handles read it unfiltered. Implemented by `#[derive(GlobalEntity)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a global entity",
    label = "not a table shared by every tenant",
    note = "a select by `#[shard_key]` (`db.by_key::<E>(key).find()`) runs on the key's shard, \
            where only global tables have their copy: it joins global entities only; read \
            the tenant's own rows with `db.find::<E>()` and combine them in the application"
)]
pub trait GlobalEntity: EntityTrait {}

/// An entity that may be read through a handle whose tenant ids are `T`: a
/// [`TenantScoped`] entity with that id type (filtered), or a [`GlobalEntity`] (not
/// filtered). Implemented by the derives; there is no other way in.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used through a tenant handle with tenant ids of type `{T}`",
    label = "not tenant-scoped with `{T}` ids, not global, or sharded by a key of its own",
    note = "derive `TenantScoped` on its Model (with a `#[tenant_id]` field of type `{T}`), or \
            `GlobalEntity` for a table shared by every tenant; for admin work use \
            `Tenancy::unscoped()`",
    note = "an entity with a `#[shard_key]` is spread over shards: read it by key with \
            `db.by_key::<E>(key)` or `db.by_keys::<E>(keys)`, or on every shard with \
            `db.across_shards().find::<E>()`"
)]
pub trait ScopedEntity<T: TenantKey>: EntityTrait {
    /// The column a tenant's reads are filtered on; `None` for a global entity.
    fn scope_column() -> Option<Self::Column>;
}
