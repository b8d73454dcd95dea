//! Earlier names, kept so code written against them still builds, with a warning that
//! names the new one. Each thing has one name now: the catalog's keepers live in
//! [`catalog`](crate::catalog), and "key" means a `#[shard_key]` only.

use crate::catalog::{Shards, TenantDatabases};
use crate::entity::{ShardKeyed, SqlTenantId};
use crate::handle::ShardKeyDb;

/// Renamed [`TenantDatabases`].
#[deprecated(note = "renamed `catalog::TenantDatabases`")]
pub type CatalogRegistry = TenantDatabases;

/// Renamed [`Shards`].
#[deprecated(note = "renamed `catalog::Shards`")]
pub type ShardCatalog = Shards;

/// Renamed [`ShardKeyDb`].
#[deprecated(note = "renamed `ShardKeyDb`")]
pub type KeyedDb<'h, T, E, C = sea_orm::DatabaseConnection> = ShardKeyDb<'h, T, E, C>;

/// Renamed [`SqlTenantId`]: implemented for every `SqlTenantId`, so a bound written with
/// the old name still holds.
#[deprecated(note = "renamed `SqlTenantId`")]
pub trait TenantKey: SqlTenantId {}

#[allow(deprecated)]
impl<T: SqlTenantId> TenantKey for T {}

/// Renamed [`ShardKeyed`]: implemented for every `ShardKeyed` entity.
#[deprecated(note = "renamed `ShardKeyed`")]
pub trait KeySharded: ShardKeyed {}

#[allow(deprecated)]
impl<E: ShardKeyed> KeySharded for E {}
