//! The framework's own catalog entity: one row per tenant database ([`Entity`], [`Model`]).
//!
//! Inside the crate, this module holds everything the framework keeps in a catalog
//! database: the catalog's tables and how they are installed (`entities`), the registry of
//! tenant databases (`registry`: [`CatalogRegistry`](crate::CatalogRegistry)), the shard
//! registry (`shards`: [`ShardCatalog`](crate::ShardCatalog)), and the shard directory
//! (`directory`: [`DirectoryCatalog`](crate::DirectoryCatalog)), with its placements
//! (`placing`) and the claims of moves (`claims`).

pub(crate) mod claims;
pub(crate) mod directory;
pub(crate) mod entities;
mod placing;
pub(crate) mod registry;
pub(crate) mod shards;

pub(crate) use claims::Claim;
pub(crate) use entities::create_table_if_missing;
pub use entities::tenant_entry::*;
