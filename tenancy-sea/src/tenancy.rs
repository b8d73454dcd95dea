//! [`Tenancy`]: built once, hands out tenant handles.

use crate::entity::TenantKey;
use crate::error::Result;
use crate::handle::TenantDb;
use sea_orm::DatabaseConnection;
use std::marker::PhantomData;

/// The entry point: holds the connection and configuration, and hands out a
/// [`TenantDb`] per tenant.
///
/// `T` is the tenant id type shared by the tenant-scoped entities (`i64`, `String`,
/// `uuid::Uuid`, ...). Cloning is cheap: the connection pool is shared.
///
/// ```
/// # use tenancy_sea::prelude::*;
/// # async fn demo(conn: sea_orm::DatabaseConnection) -> tenancy_sea::Result<()> {
/// let tenancy: Tenancy<i64> = Tenancy::builder(conn).build();
/// let acme = tenancy.tenant(42).await?;
/// assert_eq!(*acme.tenant_id(), 42);
///
/// // Ids that arrive as text (a header, a subdomain) are parsed and validated.
/// assert!(tenancy.tenant_from_str("not-a-number").await.is_err());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Tenancy<T> {
    conn: DatabaseConnection,
    id_type: PhantomData<fn() -> T>,
}

/// Configures a [`Tenancy`]. Today's strategy is row level: shared tables with a tenant
/// column, filtered and stamped on every statement.
#[derive(Debug)]
#[must_use = "call `.build()` to get the `Tenancy`"]
pub struct TenancyBuilder<T> {
    conn: DatabaseConnection,
    id_type: PhantomData<fn() -> T>,
}

impl<T: TenantKey> TenancyBuilder<T> {
    /// Builds the [`Tenancy`].
    pub fn build(self) -> Tenancy<T> {
        Tenancy {
            conn: self.conn,
            id_type: PhantomData,
        }
    }
}

impl<T: TenantKey> Tenancy<T> {
    /// Starts configuring a `Tenancy` over `conn`, a SeaORM connection (pool).
    pub fn builder(conn: DatabaseConnection) -> TenancyBuilder<T> {
        TenancyBuilder {
            conn,
            id_type: PhantomData,
        }
    }

    /// The handle of one tenant. The id is validated first
    /// ([`TenantId::validate`](crate::TenantId::validate)); an invalid one is
    /// [`Error::InvalidTenantId`](crate::Error::InvalidTenantId) and no handle is made.
    pub async fn tenant(&self, id: impl Into<T>) -> Result<TenantDb<T>> {
        TenantDb::new(self.conn.clone(), id.into())
    }

    /// Parses a tenant id from text, validates it and returns its handle.
    pub async fn tenant_from_str(&self, input: &str) -> Result<TenantDb<T>> {
        TenantDb::new(self.conn.clone(), T::parse_tenant_id(input)?)
    }

    /// The raw connection, with no tenant scoping at all: the named escape hatch for
    /// admin work (migrations, support tools, moving rows between tenants).
    ///
    /// Every use is greppable: `grep -rn 'unscoped()'` lists every place that can see
    /// all tenants' data.
    pub fn unscoped(&self) -> &DatabaseConnection {
        tracing::debug!(target: "tenancy::unscoped", "unscoped connection handed out");
        &self.conn
    }
}
