//! Scoping to the tenant: the tenant condition every statement carries (`condition`), the
//! unit of work that sets a tenant up on the database side and the connections a handle
//! runs on (`session`), and the auditor of the fragments a handle is given (`audit`).

#[macro_use]
mod session;
pub(crate) mod audit;
mod condition;

pub(crate) use condition::{equals, equals_at, equals_expr, is_in};
pub use session::HandleConnection;
pub(crate) use session::{RawSql, SESSION_RESET, Session, Tag, Tagged};
