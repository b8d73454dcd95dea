//! What an entity must be to be used through a tenant handle.
//!
//! The four traits here are sealed: only the derives implement them. A hand-written
//! `impl ScopedEntity` (say, one that names no tenant column) would make a table readable
//! unfiltered through every handle, so it does not compile.

use sea_orm::sea_query::ValueType;
use sea_orm::{EntityTrait, Value};
use tenancy_core::{RoutingError, TenantId};

/// The seals: each sealed trait requires its own, and only the derives implement them.
/// They are public only because the derives' code, in the user's crate, must name them.
#[doc(hidden)]
pub mod sealed {
    /// The seal of [`TenantScoped`](crate::TenantScoped).
    #[diagnostic::on_unimplemented(
        message = "`{Self}` implements `TenantScoped` by hand, which is not allowed",
        label = "not derived",
        note = "only `#[derive(TenantScoped)]` implements it: a hand-written impl could name \
                the wrong tenant column and leave a table unfiltered"
    )]
    pub trait TenantScopedSeal {}

    /// The seal of [`ScopedEntity`](crate::ScopedEntity).
    #[diagnostic::on_unimplemented(
        message = "`{Self}` implements `ScopedEntity` by hand, which is not allowed",
        label = "not derived",
        note = "only `#[derive(TenantScoped)]` and `#[derive(GlobalEntity)]` implement it: a \
                hand-written impl could make a tenant's table readable by every tenant"
    )]
    pub trait ScopedEntitySeal<T> {}

    /// The seal of [`GlobalEntity`](crate::GlobalEntity).
    #[diagnostic::on_unimplemented(
        message = "`{Self}` implements `GlobalEntity` by hand, which is not allowed",
        label = "not derived",
        note = "only `#[derive(GlobalEntity)]` implements it: a hand-written impl could let \
                `Tenancy::globals()` write a tenant's rows"
    )]
    pub trait GlobalEntitySeal {}

    /// The seal of [`ShardKeyed`](crate::ShardKeyed).
    #[diagnostic::on_unimplemented(
        message = "`{Self}` implements `ShardKeyed` by hand, which is not allowed",
        label = "not derived",
        note = "only `#[derive(TenantScoped)]` implements it, for a model with a `#[shard_key]` \
                field"
    )]
    pub trait ShardKeyedSeal {}
}

/// What the derives register of every entity, so that the library can find a table's
/// tenant column by its name (a junction of a many-to-many relation) and check the
/// database at start (row-level security on every tenant-scoped table).
#[doc(hidden)]
pub struct Registered {
    /// Describes the entity.
    pub describe: fn() -> Described,
}

inventory::collect!(Registered);

/// One registered entity.
#[doc(hidden)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Described {
    /// The schema its entity names, if any.
    pub schema: Option<String>,
    /// Its table.
    pub table: String,
    /// Its tenant column; `None` for a global entity.
    pub tenant_column: Option<String>,
}

/// What `#[derive(TenantScoped)]` registers.
#[doc(hidden)]
pub fn describe_scoped<E: TenantScoped>() -> Described {
    use sea_orm::IdenStatic;
    let entity = E::default();
    Described {
        schema: entity.schema_name().map(str::to_owned),
        table: entity.table_name().to_owned(),
        tenant_column: Some(E::tenant_column().as_str().to_owned()),
    }
}

/// What `#[derive(GlobalEntity)]` registers.
#[doc(hidden)]
pub fn describe_global<E: GlobalEntity>() -> Described {
    let entity = E::default();
    Described {
        schema: entity.schema_name().map(str::to_owned),
        table: entity.table_name().to_owned(),
        tenant_column: None,
    }
}

/// Every entity the derives registered in this program, described once.
pub(crate) fn registered() -> &'static [Described] {
    static ALL: std::sync::OnceLock<Vec<Described>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let mut all: Vec<Described> = inventory::iter::<Registered>
            .into_iter()
            .map(|entry| (entry.describe)())
            .collect();
        all.sort_by(|a, b| (&a.schema, &a.table).cmp(&(&b.schema, &b.table)));
        all.dedup();
        all
    })
}

/// How the registered entities of `table` (in `schema`, or unqualified) scope it: the
/// tenant columns the tenant-scoped ones name, or `None` when no tenant-scoped entity has
/// that table (a global one, or none at all; `known` says which).
pub(crate) struct TableScope {
    pub(crate) tenant_columns: Vec<String>,
    pub(crate) known: bool,
}

pub(crate) fn table_scope(schema: Option<&str>, table: &str) -> TableScope {
    let mut scope = TableScope {
        tenant_columns: Vec::new(),
        known: false,
    };
    for entity in registered() {
        if entity.table == table && entity.schema.as_deref() == schema {
            scope.known = true;
            if let Some(column) = &entity.tenant_column
                && !scope.tenant_columns.contains(column)
            {
                scope.tenant_columns.push(column.clone());
            }
        }
    }
    scope
}

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
pub trait SqlTenantId: TenantId + Into<Value> + ValueType {}

impl<T: TenantId + Into<Value> + ValueType> SqlTenantId for T {}

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
    message = "`{Self}` is not tenant-scoped: a tenant handle cannot filter or stamp its rows \
               by tenant",
    label = "not a tenant-scoped entity",
    note = "derive `TenantScoped` on its Model and mark the tenant column `#[tenant_id]`; a \
            `GlobalEntity` is read with `db.find::<E>()` and written through \
            `Tenancy::globals()` (every shard) or `Tenancy::unscoped()`"
)]
pub trait TenantScoped: EntityTrait + sealed::TenantScopedSeal {
    /// The Rust type of the tenant column.
    type TenantId: SqlTenantId;

    /// The tenant column.
    fn tenant_column() -> Self::Column;

    /// The `#[shard_key]` column; `None` when the tenant id is the shard key (a tenant's
    /// rows live together on one shard).
    fn shard_key_column() -> Option<Self::Column>;

    /// The `#[unique_id]` column: the key a handle fills from the tenancy's
    /// `catalog::UniqueIds` when an insert leaves it unset; `None`
    /// when no field is marked.
    fn unique_id_column() -> Option<Self::Column> {
        None
    }

    /// The type of the `#[shard_key]` (what a key router must place). Implemented by the
    /// derive for entities with a `#[shard_key]`.
    #[doc(hidden)]
    fn shard_key_type() -> Option<tenancy_core::KeyType> {
        None
    }

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
pub fn write_shard_key<K: SqlTenantId>(
    value: Value,
    out: &mut Vec<u8>,
) -> Result<(), RoutingError> {
    let key = <K as ValueType>::try_from(value)
        .map_err(|_| RoutingError::UnsupportedKey("a value not of the shard key's type"))?;
    key.write_canonical_bytes(out);
    Ok(())
}

/// The type a `#[unique_id]` field has: `i64`, what
/// `catalog::UniqueIds` issues.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "a `#[unique_id]` field is `i64`, not `{Self}`",
    label = "ids from `UniqueIds` are 64-bit signed integers",
    note = "declare the key `i64` (a BIGINT column), or remove `#[unique_id]` and set the key yourself"
)]
pub trait UniqueIdKey {}

impl UniqueIdKey for i64 {}

/// What the derive calls to check a `#[unique_id]` field's type.
#[doc(hidden)]
pub fn unique_id_key<K: UniqueIdKey>() {}

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
pub trait ShardKeyed: TenantScoped + sealed::ShardKeyedSeal {
    /// The Rust type of the `#[shard_key]` field.
    type Key: SqlTenantId;
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
pub trait GlobalEntity: EntityTrait + sealed::GlobalEntitySeal {}

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
pub trait ScopedEntity<T: SqlTenantId>: EntityTrait + sealed::ScopedEntitySeal<T> {
    /// What a handle's [`find_by_id`](crate::TenantDb::find_by_id) and
    /// [`delete_by_id`](crate::TenantDb::delete_by_id) take: the primary key, or, when
    /// the key holds the tenant column beside other columns (`(tenant_id, id)`, the key
    /// Citus needs), the rest of it (`id`), the handle filling in the tenant.
    type Id;

    /// The column a tenant's reads are filtered on; `None` for a global entity.
    fn scope_column() -> Option<Self::Column>;

    /// The primary key of `tenant`'s row `id`.
    fn primary_key(
        tenant: &T,
        id: Self::Id,
    ) -> <Self::PrimaryKey as sea_orm::PrimaryKeyTrait>::ValueType;
}

/// The seal of [`FansOut`](crate::FansOut): no type implements it.
#[doc(hidden)]
pub mod __private_sealed {
    /// Implemented by no type.
    pub trait FansOutSeal {}
}

/// Column name equality, for comparing columns of one entity (SeaORM columns are not
/// `PartialEq`).
pub(crate) fn same_column<C: sea_orm::IdenStatic>(a: C, b: C) -> bool {
    a.as_str() == b.as_str()
}
