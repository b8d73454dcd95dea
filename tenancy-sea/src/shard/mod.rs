//! Sharding: a topology of shards, each a SeaORM connection, with a router that places
//! each key on one shard, and explicit scatter-gather reads across shards.
//!
//! By default the tenant id is the shard key (a tenant's rows live together, as in
//! Citus); an entity with a `#[shard_key]` field is placed row by row by that key.

#[macro_use]
mod fanout;
mod aggregate;
mod availability;
mod commit;
mod merge;
mod pool_options;
mod sharded;
mod topology;

pub use aggregate::GroupedSelect;
pub(crate) use commit::commit_all;
pub(crate) use fanout::Target;
pub use pool_options::PoolOptions;
pub use sharded::{AcrossShards, Partial, ShardedSelect};
pub use topology::{DEFAULT_CONNECT_TIMEOUT, Spawner, Topology};
