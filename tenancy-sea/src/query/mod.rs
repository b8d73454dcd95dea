//! The scoped builders a tenant handle hands out: reads (`select`, with its joins and the
//! shapes it is read into), subqueries (`subquery`), multi-row writes (`write`) and
//! upserts (`upsert`). Each carries the tenant condition from the start, and none can
//! lose it.

#[macro_use]
pub(crate) mod subquery;
#[macro_use]
mod select;
mod joins;
mod selector;
mod upsert;
mod write;

pub use joins::{GlobalJoins, JoinRule, ScopedSelectTwo, ScopedSelectTwoMany, TenantJoins};
pub use select::{ScopedQuery, ScopedSelect};
pub use selector::{ScopedPaginator, ScopedSelector};
pub use subquery::ScopedSubquery;
pub use upsert::ScopedUpsert;
pub use write::{ScopedDeleteMany, ScopedUpdateMany};
