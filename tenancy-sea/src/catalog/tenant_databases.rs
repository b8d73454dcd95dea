//! The registry of tenant databases in a catalog database: [`TenantDatabases`].

use super::create_table_if_missing;
use super::entities::tenant_entry as catalog;
use crate::entity::SqlTenantId;
use crate::error::Result;
use crate::placement::TenantRegistry;
use futures_util::future::BoxFuture;
use sea_orm::{DatabaseConnection, EntityTrait, QueryOrder, Set};

/// A [`TenantRegistry`] in a catalog database (any backend), in the framework's own table
/// `tenancy_tenants (tenant_id, url)` ([`catalog::Entity`]). The tenant id is stored as its
/// text form.
///
/// [`catalog::Entity`]: crate::catalog::Entity
#[derive(Clone, Debug)]
pub struct TenantDatabases {
    conn: DatabaseConnection,
}

impl TenantDatabases {
    /// The name of the catalog table.
    pub const TABLE: &'static str = "tenancy_tenants";

    /// A registry over `conn`; call [`install`](Self::install) once to create its table.
    pub fn new(conn: DatabaseConnection) -> Self {
        TenantDatabases { conn }
    }

    /// Creates the catalog table if it does not exist.
    pub async fn install(&self) -> Result<()> {
        create_table_if_missing(&self.conn, catalog::Entity).await
    }

    /// The database URL of `tenant`, if registered: [`TenantRegistry::url`], callable as
    /// `registry.url(&tenant)` (the id's type picks the registry).
    pub async fn url<T: SqlTenantId>(&self, tenant: &T) -> Result<Option<String>> {
        TenantRegistry::<T>::url(self, tenant).await
    }

    /// Registers `tenant` at `url` ([`TenantRegistry::register`]).
    pub async fn register<T: SqlTenantId>(&self, tenant: &T, url: &str) -> Result<()> {
        TenantRegistry::<T>::register(self, tenant, url).await
    }

    /// Forgets `tenant` ([`TenantRegistry::unregister`]).
    pub async fn unregister<T: SqlTenantId>(&self, tenant: &T) -> Result<()> {
        TenantRegistry::<T>::unregister(self, tenant).await
    }

    /// Every registered tenant, as ids of type `T` ([`TenantRegistry::tenants`]):
    /// `registry.tenants::<i64>()`.
    pub async fn tenants<T: SqlTenantId>(&self) -> Result<Vec<T>> {
        TenantRegistry::<T>::tenants(self).await
    }
}

impl<T: SqlTenantId> TenantRegistry<T> for TenantDatabases {
    fn url<'a>(&'a self, tenant: &'a T) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            let row = catalog::Entity::find_by_id(tenant.to_string())
                .one(&self.conn)
                .await?;
            Ok(row.map(|row| row.url))
        })
    }

    fn register<'a>(&'a self, tenant: &'a T, url: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            catalog::Entity::insert(catalog::ActiveModel {
                tenant_id: Set(tenant.to_string()),
                url: Set(url.to_owned()),
            })
            .exec_without_returning(&self.conn)
            .await?;
            Ok(())
        })
    }

    fn unregister<'a>(&'a self, tenant: &'a T) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            catalog::Entity::delete_by_id(tenant.to_string())
                .exec(&self.conn)
                .await?;
            Ok(())
        })
    }

    fn tenants(&self) -> BoxFuture<'_, Result<Vec<T>>> {
        Box::pin(async move {
            catalog::Entity::find()
                .order_by_asc(catalog::Column::TenantId)
                .all(&self.conn)
                .await?
                .iter()
                .map(|row| Ok(T::parse_tenant_id(&row.tenant_id)?))
                .collect()
        })
    }
}
