//! The shard directory kept in a catalog database: which tenant lives on which shard, for
//! a [`DirectoryRouter`]. Read at start, changed only through this API, which updates the
//! catalog first and the router's cache second.

use crate::entity::TenantKey;
use crate::error::Result;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait, Schema, Set};
use tenancy_core::{DirectoryRouter, ShardId};

/// The framework's catalog entity of the directory: one row per placed tenant.
pub mod entry {
    use sea_orm::entity::prelude::*;

    /// A tenant (its id as text) and the shard it lives on.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenancy_directory")]
    pub struct Model {
        /// The tenant id, in its text form.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// The shard's name.
        pub shard: String,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The directory of tenant placements in a catalog database (any backend).
///
/// ```
/// # use std::sync::Arc;
/// # use tenancy_sea::{DirectoryCatalog, DirectoryRouter, ShardRouter};
/// # async fn demo(catalog: sea_orm::DatabaseConnection) -> tenancy_sea::Result<()> {
/// let directory = DirectoryCatalog::new(catalog);
/// directory.install().await?;
/// let router = Arc::new(DirectoryRouter::new(["s0", "s1"]));
/// directory.load::<i64>(&router).await?;      // at start
/// directory.assign(&router, &42i64, "s1").await?; // catalog first, then the cache
/// assert_eq!(router.route(&42i64)?.as_str(), "s1");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct DirectoryCatalog {
    conn: DatabaseConnection,
}

impl DirectoryCatalog {
    /// The directory in the catalog database `conn`.
    pub fn new(conn: DatabaseConnection) -> Self {
        DirectoryCatalog { conn }
    }

    /// Creates the directory table if it does not exist.
    pub async fn install(&self) -> Result<()> {
        let schema = Schema::new(self.conn.get_database_backend());
        self.conn
            .execute(
                schema
                    .create_table_from_entity(entry::Entity)
                    .if_not_exists(),
            )
            .await?;
        Ok(())
    }

    /// Loads every placement into `router`, replacing its entries for those tenants.
    /// Returns how many were loaded.
    pub async fn load<T: TenantKey>(&self, router: &DirectoryRouter) -> Result<usize> {
        let rows = entry::Entity::find().all(&self.conn).await?;
        for row in &rows {
            router.assign(&T::parse_tenant_id(&row.tenant_id)?, row.shard.as_str())?;
        }
        Ok(rows.len())
    }

    /// Places `tenant` on `shard`: in the catalog, then in `router`. A shard the router
    /// does not know is refused before the catalog is touched.
    pub async fn assign<T: TenantKey>(
        &self,
        router: &DirectoryRouter,
        tenant: &T,
        shard: impl Into<ShardId>,
    ) -> Result<()> {
        let shard = shard.into();
        tenant.validate()?;
        if !tenancy_core::ShardRouter::shards(router).contains(&shard) {
            return Err(tenancy_core::RoutingError::UnknownShard(shard.to_string()).into());
        }
        entry::Entity::insert(entry::ActiveModel {
            tenant_id: Set(tenant.to_string()),
            shard: Set(shard.to_string()),
        })
        .on_conflict(
            OnConflict::column(entry::Column::TenantId)
                .update_column(entry::Column::Shard)
                .to_owned(),
        )
        .exec_without_returning(&self.conn)
        .await?;
        router.assign(tenant, shard)?;
        Ok(())
    }

    /// Removes `tenant`'s placement: from the catalog, then from `router`.
    pub async fn remove<T: TenantKey>(&self, router: &DirectoryRouter, tenant: &T) -> Result<()> {
        entry::Entity::delete_by_id(tenant.to_string())
            .exec(&self.conn)
            .await?;
        router.remove(tenant);
        Ok(())
    }
}
