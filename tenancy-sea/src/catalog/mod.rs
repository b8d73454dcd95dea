//! The framework's own catalog entity: one row per tenant database ([`Entity`], [`Model`]).
//!
//! Inside the crate, this module holds everything the framework keeps in a catalog
//! database: the catalog's tables and how they are installed (`entities`), and the
//! registry of tenant databases ([`CatalogRegistry`](crate::CatalogRegistry), `registry`).

mod entities;
pub(crate) mod registry;

pub(crate) use entities::create_table_if_missing;
pub use entities::tenant_entry::*;
