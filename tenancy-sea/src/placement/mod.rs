//! Where tenants' data lives: the [`Placement`] choice and, for a database per tenant,
//! where each tenant's database is and how a new one is made (`database`), and the pools
//! the framework opens (`pools`).

mod database;
mod pools;

pub use database::{DatabaseTemplate, TenantRegistry};
pub(crate) use pools::{PoolCache, connect};

/// Where tenants' data lives: the second of the two choices a [`TenancyBuilder`] makes (the
/// first is [`Isolation`]).
///
/// [`TenancyBuilder`]: crate::TenancyBuilder
/// [`Isolation`]: crate::Isolation
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Placement {
    /// Every tenant in the one database of the connection given to [`Tenancy::builder`].
    ///
    /// [`Tenancy::builder`]: crate::Tenancy::builder
    Shared,
    /// One database per tenant, found through a [`TenantRegistry`] and reached through a
    /// bounded cache of pools opened on first use.
    ///
    /// [`TenantRegistry`]: crate::TenantRegistry
    DatabasePerTenant,
    /// Several shards: a [`Topology`]'s router places each tenant on one shard (the
    /// tenant id is the shard key); rows of a `#[shard_key]` entity go to their key's shard.
    ///
    /// [`Topology`]: crate::Topology
    Sharded,
    /// A Citus cluster: the connection given to [`Tenancy::builder`] is its coordinator,
    /// the tables of tenant-scoped entities are distributed by their tenant column and
    /// co-located, global entities are reference tables (`citus::distribute`), and under
    /// schema per tenant each tenant's schema is a distributed schema. Citus places each
    /// tenant on a node; every statement of a tenant handle goes to that one node, and the
    /// fan-out guard (`citus::guard`) makes one that would not an error.
    ///
    /// [`Tenancy::builder`]: crate::Tenancy::builder
    Citus,
}

impl Placement {
    /// The name used in messages and spans.
    pub fn name(self) -> &'static str {
        match self {
            Placement::Shared => "one shared database",
            Placement::DatabasePerTenant => "a database per tenant",
            Placement::Sharded => "shards",
            Placement::Citus => "a Citus cluster",
        }
    }
}
