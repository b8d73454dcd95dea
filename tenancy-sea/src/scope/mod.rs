//! Scoping to the tenant: the tenant condition every statement carries (`condition`), the
//! unit of work that sets a tenant up on the database side and the connections a handle
//! runs on (`session`), the auditor of the fragments a handle is given (`audit`), and a
//! tenant's connection, which a handle and the builders it makes share (`conn`), and what
//! each statement runs in: its span and, with the `metrics` feature, its metrics (`meter`);
//! and identifiers quoted for SQL (`ident`).

#[macro_use]
mod session;
pub(crate) mod audit;
mod condition;
mod conn;
mod ident;
mod meter;

pub(crate) use condition::{equals, equals_at, equals_expr, is_in};
pub(crate) use conn::{IssueIds, KeyPlacement, Placed, Routed, TenantConn, UNSHARDED, key_of};
pub(crate) use ident::quote_identifier;
#[cfg(feature = "metrics")]
pub use meter::{METRIC_DURATION, METRIC_ERRORS, METRIC_STATEMENTS};
pub(crate) use meter::{Meter, RunTraced, Traced};
pub use session::HandleConnection;
pub(crate) use session::{
    RawSql, SESSION_RESET, Session, Tag, Tagged, begin_unit, schema_exists, set_up,
};
