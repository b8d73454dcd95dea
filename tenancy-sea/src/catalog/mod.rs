//! What the library keeps in a catalog database, one name per thing:
//!
//! * [`TenantDatabases`]: the database of each tenant (database per tenant), in the
//!   table [`tenant_entry`];
//! * [`Shards`]: the shards, their URLs and states ([`ShardRecord`], [`ShardState`]), in
//!   [`shard_entry`];
//! * [`Directory`]: which shard each tenant or key range lives on, in
//!   [`directory_entry`] and [`directory_range_entry`], with the claims of moves under
//!   way ([`DEFAULT_MOVE_LEASE`]);
//! * [`UniqueIds`]: 64-bit ids unique across shards and processes, each process holding a
//!   node number under a lease, in [`id_node_entry`].
//!
//! Inside the crate: the tables and how they are installed (`entities`), the three
//! keepers (`tenant_databases`, `shards`, `directory`), the directory's placements
//! (`placing`) and the claims of moves (`claims`).

pub(crate) mod changes;
pub(crate) mod claims;
pub(crate) mod directory;
pub(crate) mod entities;
mod ids;
mod placing;
mod routers;
pub(crate) mod shards;
pub(crate) mod tenant_databases;

pub use changes::Refreshed;
pub use claims::DEFAULT_MOVE_LEASE;
pub(crate) use claims::{AbandonedMove, Claim};
pub use directory::{Directory, DirectoryLoad, SkipReason, SkippedEntry};
pub(crate) use entities::create_table_if_missing;
pub use entities::{
    change_entry as directory_change_entry, entry as directory_entry, id_node_entry,
    range_entry as directory_range_entry, router_entry as directory_router_entry, shard_entry,
    tenant_entry,
};
pub use ids::{DEFAULT_ID_LEASE, UniqueIds};
pub use routers::DEFAULT_ROUTER_LEASE;
pub use shards::{ShardRecord, ShardState, Shards};
pub use tenant_databases::TenantDatabases;

// The tenant databases' table under its first path, `catalog::Entity`, for code written
// before the catalog kept one name per thing; `catalog::tenant_entry` is its name.
#[doc(hidden)]
pub use entities::tenant_entry::{ActiveModel, Column, Entity, Model, PrimaryKey, Relation};
