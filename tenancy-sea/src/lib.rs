//! Multi-tenancy for SeaORM: tenant-scoped handles whose queries cannot forget the tenant.
//!
//! Annotate a SeaORM model with `#[derive(TenantScoped)]` and mark its tenant column
//! `#[tenant_id]`. From then on, a [`TenantDb`] handle obtained from [`Tenancy::tenant`]
//! filters every read by that tenant, stamps it on every insert, and confines every update
//! and delete to the tenant's rows; the tenant id always travels as a bound parameter.
//!
//! ```
//! use sea_orm::entity::prelude::*;
//! use sea_orm::{Database, Set};
//! use tenancy_sea::prelude::*;
//!
//! mod orders {
//!     use sea_orm::entity::prelude::*;
//!     use tenancy_sea::prelude::*;
//!
//!     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
//!     #[sea_orm(table_name = "orders")]
//!     pub struct Model {
//!         #[sea_orm(primary_key)]
//!         pub id: i64,
//!         #[tenant_id]
//!         pub tenant_id: i64,
//!         pub total_cents: i64,
//!     }
//!
//!     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
//!     pub enum Relation {}
//!
//!     impl ActiveModelBehavior for ActiveModel {}
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let conn = Database::connect("sqlite::memory:").await?;
//! # conn.get_schema_builder().register(orders::Entity).apply(&conn).await?;
//! let tenancy: Tenancy<i64> = Tenancy::builder(conn).build()?;
//!
//! let acme = tenancy.tenant(1).await?;
//! let globex = tenancy.tenant(2).await?;
//! acme.insert(orders::ActiveModel { total_cents: Set(25_000), ..Default::default() }).await?;
//! globex.insert(orders::ActiveModel { total_cents: Set(500), ..Default::default() }).await?;
//!
//! // SELECT ... FROM orders WHERE orders.tenant_id = $1 AND orders.total_cents > $2
//! let big = acme
//!     .find::<orders::Entity>()
//!     .filter(orders::Column::TotalCents.gt(10_000))
//!     .all()
//!     .await?;
//! assert_eq!(big.len(), 1);
//! assert_eq!(globex.find::<orders::Entity>().count().await?, 1);
//! # Ok(()) }
//! ```
//!
//! The handle does not implement SeaORM's `ConnectionTrait`, so plain SeaORM queries
//! cannot run through it: `orders::Entity::find().all(&acme)` does not compile. Admin work
//! that must see every tenant goes through the one named escape hatch,
//! [`Tenancy::unscoped`].

// The modules in layers, lowest first: error and redact, entity, scope, query, shard,
// handle, placement, isolation, catalog, tenancy, admin (and cli). Each uses only the layers below
// it (tests/tests/layout.rs in the tenancy-tests package checks it). `scope` is declared
// first for the macros the others use (`in_unit!`, `on_conn!`).
#[macro_use]
mod scope;
mod admin;
pub mod catalog;
pub mod citus;
#[cfg(feature = "cli")]
pub mod cli;
mod entity;
mod error;
mod handle;
mod isolation;
mod placement;
mod query;
mod redact;
mod renamed;
mod shard;
pub mod task;
mod tenancy;
#[cfg(feature = "axum")]
pub mod web;

pub use admin::{
    Balance, CatalogRefresh, FleetProgress, FleetReport, Globals, LeftoverRemoval, LeftoverReport,
    MoveProgress, MoveReport, PlannedMove, Rebalance, RebalancePlan, RebalanceProgress,
    RebalanceReport, TenantMove,
};
pub use entity::{GlobalEntity, ScopedEntity, ShardKeyed, SqlTenantId, TenantScoped};
pub use error::{Error, Result, UniqueIdError};
pub use handle::{FansOut, IntoRawStatement, ShardKeyDb, TenantAcrossShards, TenantDb, TenantTxn};
pub use isolation::{Isolation, integrity, rls};
pub use placement::{DatabaseTemplate, Placement, TenantRegistry};
pub use query::{
    GlobalJoins, JoinRule, ScopedDeleteMany, ScopedPaginator, ScopedQuery, ScopedSelect,
    ScopedSelectTwo, ScopedSelectTwoMany, ScopedSelector, ScopedSubquery, ScopedUpdateMany,
    ScopedUpsert, TenantJoins,
};
pub use scope::{HandleConnection, UnitRows, UnitTxn};
#[cfg(feature = "metrics")]
pub use scope::{
    METRIC_DURATION, METRIC_ERRORS, METRIC_SHAPE_MISSES, METRIC_SHAPE_READS, METRIC_STATEMENTS,
};
pub use shard::{
    AcrossShards, DEFAULT_CONNECT_TIMEOUT, GroupedSelect, Partial, PoolOptions, ShardedSelect,
    Spawner, Topology,
};
pub use tenancy::{Tenancy, TenancyBuilder};
pub use tenancy_core::{
    DirectoryRouter, HashRouter, IdClock, IdError, Identifier, InvalidIdentifier, InvalidTenantId,
    KeyType, RangeRouter, RoutingError, ShardId, ShardRouter, TenantId, UniqueIdParts,
};
pub use tenancy_derive::{GlobalEntity, TenantScoped};

/// What the derives' generated code names; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::entity::{
        Registered, describe_global, describe_scoped, sealed, unique_id_key, write_shard_key,
    };
    pub use inventory;
    pub use sea_orm::{EntityTrait, PrimaryKeyTrait, Value};
}

/// Everything an application needs: `use tenancy_sea::prelude::*;`.
pub mod prelude {
    pub use crate::{
        GlobalEntity, ScopedEntity, ShardKeyed, SqlTenantId, Tenancy, TenantDb, TenantId,
        TenantScoped, TenantTxn,
    };
}

/// The sea-orm-migration crate this one runs migrators with.
pub use sea_orm_migration;

// Earlier names, kept so code written against them still builds (with a warning that
// names the new one). Each thing has one name now: the catalog's keepers live in
// `catalog`, "key" means a `#[shard_key]` only.
#[doc(hidden)]
pub use catalog::{
    DEFAULT_MOVE_LEASE, DirectoryLoad, ShardRecord, ShardState, SkipReason, SkippedEntry,
    directory_entry, directory_range_entry, shard_entry,
};
#[allow(deprecated)]
pub use renamed::{CatalogRegistry, KeySharded, KeyedDb, ShardCatalog, TenantKey};
