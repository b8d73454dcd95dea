//! The tenant of each HTTP request, for axum and any tower stack (feature `axum`).
//!
//! A [`TenantLayer`] finds the tenant a request names with the [`ResolveTenant`] the
//! application picks ([`Header`], [`Subdomain`], [`PathSegment`], or a closure made with
//! [`from_fn`]), validates it, and gets its handle from [`Tenancy`]. The handler takes the
//! handle (or the id, [`Tenant`]) as an argument, and runs with it as the current tenant
//! ([`task::current_tenant`](crate::task::current_tenant)), so work it spawns with
//! [`task::spawn`](crate::task::spawn) keeps it.
//!
//! A request whose tenant cannot be had never reaches the handler; it is answered with a
//! status that says why ([`status_of`]: 400 invalid or missing id, 404 unknown tenant, 503
//! tenant being moved or shard unavailable, 500 otherwise) and a fixed text: never the
//! error's message, which can carry SQL or a database URL. The error is logged.
//!
//! ```
//! use axum::{Router, routing::get};
//! use tenancy_sea::prelude::*;
//! use tenancy_sea::web::{Header, Tenant, TenantLayer};
//!
//! async fn whoami(Tenant(id): Tenant<i64>, db: TenantDb<i64>) -> String {
//!     assert_eq!(db.tenant_id(), &id);
//!     format!("tenant {id}")
//! }
//!
//! fn app(tenancy: Tenancy<i64>) -> Router {
//!     Router::new()
//!         .route("/whoami", get(whoami))
//!         .layer(TenantLayer::new(tenancy, Header::default())) // X-Tenant-Id
//! }
//! ```
//!
//! The id is accepted only in the one spelling its type prints (`Display`): `7`, not `07`
//! or `+7`; a UUID in lowercase with hyphens. So one tenant has one spelling in logs,
//! caches and rate limits keyed by it, and a look-alike id is a 400, not an alias.

mod extract;
mod resolve;
mod response;

pub use extract::{MissingTenantLayer, Tenant};
pub use resolve::{FromFn, Header, PathSegment, ResolveTenant, Subdomain, from_fn};
pub use response::{DEFAULT_RETRY_AFTER, status_of};

use crate::task::in_tenant;
use crate::{Error, Result, SqlTenantId, Tenancy, TenantDb};
use axum_core::response::Response;
use http::Request;
use http::request::Parts;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tenancy_core::InvalidTenantId;

/// The tower layer that gives each request its tenant: see the [module](self).
pub struct TenantLayer<T, R> {
    shared: Shared<T, R>,
}

/// What every request of a layer uses; cheap to clone.
struct Shared<T, R> {
    tenancy: Tenancy<T>,
    resolver: Arc<R>,
    retry_after: Duration,
}

impl<T, R> Clone for Shared<T, R> {
    fn clone(&self) -> Self {
        Shared {
            tenancy: self.tenancy.clone(),
            resolver: self.resolver.clone(),
            retry_after: self.retry_after,
        }
    }
}

impl<T, R> Clone for TenantLayer<T, R> {
    fn clone(&self) -> Self {
        TenantLayer {
            shared: self.shared.clone(),
        }
    }
}

impl<T, R: std::fmt::Debug> std::fmt::Debug for TenantLayer<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantLayer")
            .field("tenancy", &self.shared.tenancy)
            .field("resolver", &self.shared.resolver)
            .field("retry_after", &self.shared.retry_after)
            .finish()
    }
}

impl<T: SqlTenantId, R: ResolveTenant> TenantLayer<T, R> {
    /// A layer that finds each request's tenant with `resolver` and gets its handle from
    /// `tenancy`.
    pub fn new(tenancy: Tenancy<T>, resolver: R) -> Self {
        TenantLayer {
            shared: Shared {
                tenancy,
                resolver: Arc::new(resolver),
                retry_after: DEFAULT_RETRY_AFTER,
            },
        }
    }

    /// The `Retry-After` of the 503 a request gets while its tenant is moved
    /// ([`DEFAULT_RETRY_AFTER`] unless set; whole seconds, at least one).
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.shared.retry_after = wait;
        self
    }
}

impl<T: SqlTenantId, R: ResolveTenant> Shared<T, R> {
    /// The handle of the tenant `request` names, or why there is none.
    async fn handle(&self, request: &Parts) -> Result<TenantDb<T>> {
        let text = self
            .resolver
            .resolve(request)
            .ok_or_else(|| InvalidTenantId::new("", T::TYPE_NAME, "the request names no tenant"))?;
        let id = T::parse_tenant_id(&text)?;
        if !spelled_as(&id, &text) {
            return Err(Error::InvalidTenantId(InvalidTenantId::new(
                &text,
                T::TYPE_NAME,
                "not the id's one spelling (its `Display` form)",
            )));
        }
        self.tenancy.tenant(id).await
    }
}

/// Whether `id` prints as `text` exactly, compared as it is written, without allocating.
fn spelled_as(id: &impl std::fmt::Display, text: &str) -> bool {
    struct Compare<'a>(&'a str);
    impl std::fmt::Write for Compare<'_> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            match self.0.strip_prefix(s) {
                Some(rest) => {
                    self.0 = rest;
                    Ok(())
                }
                None => Err(std::fmt::Error),
            }
        }
    }
    let mut rest = Compare(text);
    write!(rest, "{id}").is_ok() && rest.0.is_empty()
}

impl<S, T, R> tower_layer::Layer<S> for TenantLayer<T, R> {
    type Service = TenantService<S, T, R>;

    fn layer(&self, inner: S) -> Self::Service {
        TenantService {
            inner,
            shared: Arc::new(self.shared.clone()),
        }
    }
}

/// The service [`TenantLayer`] wraps around the application's: made by the layer.
pub struct TenantService<S, T, R> {
    inner: S,
    shared: Arc<Shared<T, R>>,
}

impl<S: Clone, T, R> Clone for TenantService<S, T, R> {
    fn clone(&self) -> Self {
        TenantService {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S, T, R> std::fmt::Debug for TenantService<S, T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantService").finish_non_exhaustive()
    }
}

impl<S, B, T, R> tower_service::Service<Request<B>> for TenantService<S, T, R>
where
    S: tower_service::Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    T: SqlTenantId,
    R: ResolveTenant,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The service that was polled ready serves this request; a clone takes its place.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let shared = self.shared.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let db = match shared.handle(&parts).await {
                Ok(db) => db,
                Err(error) => return Ok(response::error_response(&error, shared.retry_after)),
            };
            let tenant = db.tenant_id().clone();
            parts.extensions.insert(db);
            let request = Request::from_parts(parts, body);
            in_tenant(tenant, async move { inner.call(request).await }).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::spelled_as;

    #[test]
    fn only_the_display_spelling_is_the_id() {
        assert!(spelled_as(&7_i64, "7"));
        assert!(spelled_as(&-7_i64, "-7"));
        for alias in ["07", "+7", "7 ", " 7", "", "77", "-07"] {
            assert!(!spelled_as(&7_i64, alias), "{alias:?}");
        }
        let id = uuid::Uuid::from_u128(0xA1);
        assert!(spelled_as(&id, "00000000-0000-0000-0000-0000000000a1"));
        assert!(!spelled_as(&id, "00000000-0000-0000-0000-0000000000A1"));
        assert!(!spelled_as(&id, "000000000000000000000000000000a1"));
    }
}
