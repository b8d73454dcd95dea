//! Errors as HTTP responses: the status says what kind of failure it was, the body says
//! only that, and the full error goes to the log.

use crate::Error;
use axum_core::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::{HeaderValue, RETRY_AFTER};
use sea_orm::DbErr;
use std::time::Duration;
use tenancy_core::RoutingError;

/// How long a client is asked to wait (`Retry-After`) while its tenant is moved, unless
/// the layer says otherwise ([`TenantLayer::retry_after`](super::TenantLayer::retry_after)).
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The HTTP status of an error, as the layer and `Error`'s `IntoResponse` answer it:
///
/// | error | status |
/// |---|---|
/// | an invalid, malformed or missing tenant id ([`Error::InvalidTenantId`], [`Error::InvalidIdentifier`]) | 400 |
/// | a tenant that does not exist ([`Error::UnknownTenant`], a directory with no place for it) | 404 |
/// | no row of the tenant with that key ([`Error::NotFound`]) | 404 |
/// | a write that reaches into another tenant ([`Error::TenantMismatch`], [`Error::TenantColumnWrite`], [`Error::CrossTenantConflict`]) | 403 |
/// | the tenant is being moved ([`Error::TenantMoving`]; with `Retry-After`) | 503 |
/// | a shard or database that cannot be reached ([`Error::ShardUnavailable`], [`Error::ShardTimeout`], [`Error::Shard`], [`Error::NoShardAvailable`], [`Error::DirectoryBusy`], a directory past its lease (`RoutingError::DirectoryStale`), a connection that could not be had) | 503 |
/// | anything else | 500 |
pub fn status_of(error: &Error) -> StatusCode {
    match error {
        Error::InvalidTenantId(_) | Error::InvalidIdentifier(_) => StatusCode::BAD_REQUEST,
        Error::UnknownTenant { .. }
        | Error::Routing(RoutingError::Unassigned)
        | Error::NotFound { .. } => StatusCode::NOT_FOUND,
        Error::TenantMismatch { .. }
        | Error::TenantColumnWrite { .. }
        | Error::CrossTenantConflict { .. } => StatusCode::FORBIDDEN,
        Error::TenantMoving { .. }
        | Error::ShardUnavailable { .. }
        | Error::ShardTimeout { .. }
        | Error::Shard { .. }
        | Error::NoShardAvailable { .. }
        | Error::DirectoryBusy { .. }
        | Error::Routing(RoutingError::DirectoryStale)
        | Error::Db(DbErr::ConnectionAcquire(_) | DbErr::Conn(_)) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The body of an error's response: a fixed text per kind, never the error's own message
/// (which can hold SQL, a database URL, another tenant's id).
fn public_text(error: &Error, status: StatusCode) -> &'static str {
    match (error, status) {
        (Error::UnknownTenant { .. } | Error::Routing(RoutingError::Unassigned), _) => {
            "unknown tenant\n"
        }
        (Error::TenantMoving { .. }, _) => "the tenant is being moved; retry later\n",
        (_, StatusCode::BAD_REQUEST) => "invalid tenant id\n",
        (_, StatusCode::NOT_FOUND) => "not found\n",
        (_, StatusCode::FORBIDDEN) => "forbidden\n",
        (_, StatusCode::SERVICE_UNAVAILABLE) => "service unavailable\n",
        _ => "internal error\n",
    }
}

/// The response to `error`: [`status_of`], a fixed text, and `Retry-After` when the tenant
/// is being moved. The error itself is logged (`tracing`, target `tenancy::web`): at
/// `warn` for a 5xx, at `debug` for a client's mistake.
pub(crate) fn error_response(error: &Error, retry_after: Duration) -> Response {
    let status = status_of(error);
    if status.is_server_error() {
        tracing::warn!(target: "tenancy::web", %status, %error, "request failed");
    } else {
        tracing::debug!(target: "tenancy::web", %status, %error, "request refused");
    }
    let mut response = (status, public_text(error, status)).into_response();
    if let Error::TenantMoving { .. } = error {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1)));
    }
    response
}

/// A handler can return `Result<_, tenancy_sea::Error>` and use `?`: the error becomes the
/// response [`status_of`] and a fixed text say, and is logged.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        error_response(&self, DEFAULT_RETRY_AFTER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_bodies_name_the_kind_and_nothing_else() {
        let secret_url = "postgres://app:hunter2@db.internal:5432/tenant_7";
        let cases = [
            (
                Error::InvalidTenantId(tenancy_core::InvalidTenantId::new(
                    "1; DROP TABLE x",
                    "i64",
                    "not an integer",
                )),
                400,
            ),
            (Error::UnknownTenant { tenant: "7".into() }, 404),
            (
                Error::ShardUnavailable {
                    shard: "eu_1".into(),
                    reason: format!("cannot connect to {secret_url}"),
                },
                503,
            ),
            (Error::TenantMoving { tenant: "7".into() }, 503),
            (
                Error::Db(DbErr::Custom(format!(
                    "SELECT * FROM orders WHERE tenant_id = 8 at {secret_url}"
                ))),
                500,
            ),
            (Error::Config(format!("bad url {secret_url}")), 500),
        ];
        for (error, status) in cases {
            let shown = error.to_string();
            let text = public_text(&error, status_of(&error));
            assert_eq!(status_of(&error).as_u16(), status, "{shown}");
            for secret in [
                "hunter2",
                "postgres://",
                "SELECT",
                "DROP",
                "eu_1",
                "tenant_id",
            ] {
                assert!(!text.contains(secret), "{text:?} shows {secret}");
            }
        }
    }

    #[test]
    fn a_moving_tenant_is_told_when_to_retry() {
        let moving = Error::TenantMoving { tenant: "7".into() };
        let response = error_response(&moving, Duration::from_secs(30));
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get(RETRY_AFTER),
            Some(&HeaderValue::from_static("30"))
        );
        let unavailable = Error::ShardUnavailable {
            shard: "s".into(),
            reason: "down".into(),
        };
        assert!(
            error_response(&unavailable, DEFAULT_RETRY_AFTER)
                .headers()
                .get(RETRY_AFTER)
                .is_none()
        );
    }
}
