//! Scoping to the tenant: the tenant condition every statement carries (`condition`), the
//! set-up that scopes a unit of work on the database side (`session`), the transaction a
//! unit runs in and the connections a handle runs on (`unit`; on PostgreSQL and MySQL a
//! transaction the library begins itself, `own_txn`), the comment a unit's statements carry (`tag`) and the tenant schema's shape it names (`shape`), the auditor of the fragments a handle is given (`audit`), and a
//! tenant's connection, which a handle and the builders it makes share (`conn`), and what
//! each statement runs in: its span and, with the `metrics` feature, its metrics (`meter`);
//! and identifiers and literals written into SQL (`ident`).

#[macro_use]
mod session;
pub(crate) mod audit;
mod condition;
mod conn;
mod ident;
mod meter;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod own_txn;
mod shape;
mod tag;
mod unit;

pub(crate) use condition::{equals, equals_at, equals_expr, is_in};
pub(crate) use conn::{IssueIds, KeyPlacement, Placed, Routed, TenantConn, UNSHARDED, key_of};
pub(crate) use ident::{literal, quote_identifier};
#[cfg(feature = "metrics")]
pub use meter::{
    METRIC_DURATION, METRIC_ERRORS, METRIC_SHAPE_MISSES, METRIC_SHAPE_READS, METRIC_STATEMENTS,
};
pub(crate) use meter::{Meter, RunTraced, Traced};
pub(crate) use session::{Session, schema_exists};
pub(crate) use shape::{Shapes, marker_exists_sql, marker_name, shape_sql, trigger_sql};
pub(crate) use tag::{Tag, Tagged};
pub use unit::{HandleConnection, UnitRows, UnitTxn};
pub(crate) use unit::{RawSql, SESSION_RESET, begin_unit, set_up};
