//! The ORM-agnostic core of `tenancy`.
//!
//! This crate knows what a tenant id is and how one is validated, parsed and turned into
//! canonical bytes, which schema and database names are safe to derive from one, and
//! which shard a key belongs on; it has no database code and no async runtime. Users normally reach it
//! through `tenancy-sea`, which re-exports everything here.
//!
//! ```
//! use tenancy_core::TenantId;
//!
//! let id = i64::parse_tenant_id("42")?;
//! assert_eq!(id, 42);
//! assert!(String::parse_tenant_id("").is_err());
//! # Ok::<(), tenancy_core::InvalidTenantId>(())
//! ```

mod error;
mod identifier;
mod shard;
mod tenant_id;
mod unique_id;

pub use error::InvalidTenantId;
pub use identifier::{Identifier, InvalidIdentifier, MAX_IDENTIFIER_LEN};
pub use shard::{
    DIRECTORY_SPARE_SHARDS, DirectoryRouter, HashRouter, KeyType, RangeRouter, RoutingError,
    ShardId, ShardRouter, jump_consistent_hash,
};
pub use tenant_id::{MAX_STRING_TENANT_ID_LEN, TenantId};
pub use unique_id::{
    ID_EPOCH_MILLIS, IdClock, IdError, MAX_NODES, NODE_BITS, SEQUENCE_BITS, TIME_BITS,
    UniqueIdParts, id_millis,
};
