//! The tenant in background work: a *current tenant* carried by a future, for code that has
//! no handle at hand (logging, a job runner, a helper deep in a call chain).
//!
//! The current tenant is set while a future wrapped by [`in_tenant`] is polled, on
//! whatever thread polls it, and restored afterwards, the way `tracing::Instrument` enters
//! a span: no task-local storage of one runtime is needed, so it works the same under
//! tokio and async-std. [`spawn`] starts a task that keeps the tenant of the code that
//! spawns it; a task started by other means has none.
//!
//! Nothing here makes a handle by itself: [`Tenancy::current`](crate::Tenancy::current)
//! gives the current tenant's handle, and [`Error::NoCurrentTenant`](crate::Error) when
//! there is none, so code without a tenant must name one or use
//! [`Tenancy::unscoped`](crate::Tenancy::unscoped).
//!
//! ```
//! use tenancy_sea::task::{current_tenant, in_tenant};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! assert_eq!(current_tenant::<i64>(), None);
//! in_tenant(7_i64, async {
//!     assert_eq!(current_tenant::<i64>(), Some(7));
//!     in_tenant(8_i64, async { assert_eq!(current_tenant::<i64>(), Some(8)) }).await;
//!     assert_eq!(current_tenant::<i64>(), Some(7)); // the outer tenant again
//! })
//! .await;
//! assert_eq!(current_tenant::<i64>(), None);
//! # }
//! ```

mod current;

pub use current::{InTenant, current_tenant, in_tenant, with_current_tenant};

use crate::entity::SqlTenantId;
use crate::error::{Error, Result};
use crate::{Tenancy, TenantDb};

impl<T: SqlTenantId> Tenancy<T> {
    /// The handle of the current tenant (the one set by [`in_tenant`], a tenant-carrying
    /// [`spawn`], or the web layer for a request's handler), validated and resolved like
    /// [`Tenancy::tenant`].
    ///
    /// Code running with no current tenant (of type `T`) gets
    /// [`Error::NoCurrentTenant`](crate::Error::NoCurrentTenant): a handle is never
    /// made implicitly; such code names its tenant with [`Tenancy::tenant`], or uses the
    /// named escape hatch [`Tenancy::unscoped`].
    ///
    /// ```
    /// # use tenancy_sea::prelude::*;
    /// # async fn demo(tenancy: Tenancy<i64>) -> tenancy_sea::Result<()> {
    /// use tenancy_sea::task::in_tenant;
    ///
    /// assert!(matches!(
    ///     tenancy.current().await,
    ///     Err(tenancy_sea::Error::NoCurrentTenant { .. })
    /// ));
    /// let db = in_tenant(42_i64, tenancy.current()).await?;
    /// assert_eq!(*db.tenant_id(), 42);
    /// # Ok(()) }
    /// ```
    pub async fn current(&self) -> Result<TenantDb<T>> {
        match current_tenant::<T>() {
            Some(tenant) => self.tenant(tenant).await,
            None => Err(Error::NoCurrentTenant {
                id_type: T::TYPE_NAME,
            }),
        }
    }
}

/// Starts `future` as a task of the runtime (`runtime-tokio`, else `runtime-async-std`)
/// with the current tenant of the caller, if any: code in the task sees the same
/// [`current_tenant`] and gets the same [`Tenancy::current`](crate::Tenancy::current).
/// Spawned with no current tenant, the task has none.
///
/// With both runtime features enabled, tokio's is used (like SeaORM's default). With
/// another runtime, wrap the future with [`with_current_tenant`] and spawn it yourself.
///
/// ```
/// use tenancy_sea::task::{current_tenant, in_tenant, spawn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let job = in_tenant(7_i64, async { spawn(async { current_tenant::<i64>() }) }).await;
/// assert_eq!(job.await?, Some(7));
/// # Ok(()) }
/// ```
#[cfg(feature = "runtime-tokio")]
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(with_current_tenant(future))
}

/// Starts `future` as a task of the runtime (`runtime-tokio`, else `runtime-async-std`)
/// with the current tenant of the caller, if any: code in the task sees the same
/// [`current_tenant`] and gets the same [`Tenancy::current`](crate::Tenancy::current).
/// Spawned with no current tenant, the task has none.
#[cfg(all(feature = "runtime-async-std", not(feature = "runtime-tokio")))]
pub fn spawn<F>(future: F) -> async_std::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    async_std::task::spawn(with_current_tenant(future))
}

/// What moving work into a task needs of the handles and of [`Tenancy`], checked when the
/// crate is compiled: cheap clones (`Arc`s inside), `Send`, `Sync` and `'static`.
const _: () = {
    const fn movable<X: Clone + Send + Sync + 'static>() {}
    movable::<TenantDb<i64>>();
    movable::<TenantDb<i32>>();
    movable::<TenantDb<String>>();
    movable::<TenantDb<uuid::Uuid>>();
    movable::<Tenancy<i64>>();
    movable::<Tenancy<String>>();
};
