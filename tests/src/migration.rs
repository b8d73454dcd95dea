//! A sea-orm-migration `Migrator` for the suite's tenant tables, as an application would
//! write one, in two versions: [`Migrator`] (the tables) and [`MigratorV2`] (plus an
//! index), to test fleet migrations that resume.

use crate::entities::*;
use sea_orm::{EntityTrait, Schema};
use sea_orm_migration::prelude::*;

/// The tenant tables (the global `plans` table lives in `public`).
pub struct Migrator;

/// [`Migrator`] plus a second migration.
pub struct MigratorV2;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(TenantTables)]
    }
}

impl MigratorTrait for MigratorV2 {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(TenantTables), Box::new(OrderTotalIndex)]
    }
}

struct TenantTables;

impl MigrationName for TenantTables {
    fn name(&self) -> &str {
        "m0001_tenant_tables"
    }
}

async fn create<E: EntityTrait>(manager: &SchemaManager<'_>, entity: E) -> Result<(), DbErr> {
    let schema = Schema::new(manager.get_database_backend());
    manager
        .create_table(schema.create_table_from_entity(entity))
        .await
}

#[async_trait::async_trait]
impl MigrationTrait for TenantTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create(manager, customer::Entity).await?;
        create(manager, order::Entity).await?;
        create(manager, tag::Entity).await?;
        create(manager, order_tag::Entity).await?;
        create(manager, account::Entity).await?;
        create(manager, note_i32::Entity).await?;
        create(manager, note_string::Entity).await?;
        create(manager, note_uuid::Entity).await
    }
}

struct OrderTotalIndex;

impl MigrationName for OrderTotalIndex {
    fn name(&self) -> &str {
        "m0002_order_total_index"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for OrderTotalIndex {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("orders_total_cents")
                    .table(order::Entity)
                    .col(order::Column::TotalCents)
                    .to_owned(),
            )
            .await
    }
}
