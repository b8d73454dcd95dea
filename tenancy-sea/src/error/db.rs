//! What a driver's error means to the library: a row-level security refusal, a move's
//! fence refusing a write ([`Error::TenantMoving`]), and the conversions both ways.

use super::Error;
use sea_orm::DbErr;

/// Whether `err` is PostgreSQL's "violates row-level security policy" (SQLSTATE 42501).
pub(crate) fn is_rls_violation(err: &DbErr) -> bool {
    let (DbErr::Exec(sea_orm::RuntimeErr::SqlxError(inner))
    | DbErr::Query(sea_orm::RuntimeErr::SqlxError(inner))) = err
    else {
        return false;
    };
    match inner.as_ref() {
        sea_orm::sqlx::Error::Database(db) => db.code().as_deref() == Some("42501"),
        _ => false,
    }
}

impl From<DbErr> for Error {
    /// A database error, or, when it is a move's fence refusing a write of a moving
    /// tenant's rows on its old shard, [`Error::TenantMoving`].
    fn from(err: DbErr) -> Self {
        match refused_tenant(&err) {
            Some(tenant) => Error::TenantMoving { tenant },
            None => Error::Db(err),
        }
    }
}

/// The start of the message a move's fence refuses a write with, followed by the tenant's
/// id (the same on every backend; PostgreSQL's refusal also has the code `TN001`).
pub(crate) const FENCE_REFUSAL: &str = "tenancy fence: tenant is moving: ";

/// The tenant id of a move's fence refusing a write in `err`, if it is that.
fn refused_tenant(err: &DbErr) -> Option<String> {
    let (DbErr::Exec(sea_orm::RuntimeErr::SqlxError(inner))
    | DbErr::Query(sea_orm::RuntimeErr::SqlxError(inner))) = err
    else {
        return None;
    };
    match inner.as_ref() {
        // The message is the trigger's own text: a statement's text never gets here.
        sea_orm::sqlx::Error::Database(db) => {
            db.message().strip_prefix(FENCE_REFUSAL).map(str::to_owned)
        }
        _ => None,
    }
}

/// For the fan-out's per-shard results, which carry the driver's error: a library error
/// met there (the set-up of a unit of work) keeps its message.
impl From<Error> for DbErr {
    fn from(error: Error) -> Self {
        match error {
            Error::Db(error) => error,
            other => DbErr::Custom(other.to_string()),
        }
    }
}
