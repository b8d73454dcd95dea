//! Handler arguments: the request's [`TenantDb`], and its tenant id ([`Tenant`]).

use crate::{SqlTenantId, TenantDb};
use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

/// The tenant handle of the request, as a handler argument: `async fn list(db:
/// TenantDb<i64>)`. The [`TenantLayer`](super::TenantLayer) in front of the handler
/// resolved and validated the tenant; without it (or with one of another id type) the
/// request is answered 500 and [`MissingTenantLayer`] is logged: a handler never runs
/// without its tenant.
impl<S, T> FromRequestParts<S> for TenantDb<T>
where
    S: Send + Sync,
    T: SqlTenantId,
{
    type Rejection = MissingTenantLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<TenantDb<T>>()
            .cloned()
            .ok_or(MissingTenantLayer {
                id_type: T::TYPE_NAME,
            })
    }
}

/// The request's tenant id, as a handler argument: `async fn show(Tenant(id):
/// Tenant<i64>)`. Resolved by the [`TenantLayer`](super::TenantLayer) like the handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant<T>(pub T);

impl<S, T> FromRequestParts<S> for Tenant<T>
where
    S: Send + Sync,
    T: SqlTenantId,
{
    type Rejection = MissingTenantLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<TenantDb<T>>()
            .map(|db| Tenant(db.tenant_id().clone()))
            .ok_or(MissingTenantLayer {
                id_type: T::TYPE_NAME,
            })
    }
}

/// A handler asked for its tenant, but no [`TenantLayer`](super::TenantLayer) of that
/// tenant id type ran before it: a mistake in the application's routing, answered 500.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error(
    "a handler takes a tenant of type {id_type}, but no TenantLayer<{id_type}> runs in front \
     of it: add the layer to its router (`.layer(..)` or `.route_layer(..)`)"
)]
pub struct MissingTenantLayer {
    id_type: &'static str,
}

impl IntoResponse for MissingTenantLayer {
    fn into_response(self) -> Response {
        tracing::error!(target: "tenancy::web", error = %self, "handler without its tenant");
        (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
    }
}
