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

/// For a database per tenant: the global tables too (each database has its own copy),
/// then the tenant tables and the index.
pub struct DatabaseMigrator;

/// [`DatabaseMigrator`] without its last migration (the index), to test migrating a fleet
/// of databases or shards to the next version.
pub struct DatabaseMigratorV1;

impl MigratorTrait for DatabaseMigratorV1 {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(GlobalTables), Box::new(TenantTables)]
    }
}

/// The tenant tables, then a migration that fails: provisioning must undo everything.
pub struct BrokenMigrator;

impl MigratorTrait for DatabaseMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(GlobalTables),
            Box::new(TenantTables),
            Box::new(OrderTotalIndex),
        ]
    }
}

impl MigratorTrait for BrokenMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(GlobalTables),
            Box::new(TenantTables),
            Box::new(Broken),
        ]
    }
}

struct GlobalTables;

impl MigrationName for GlobalTables {
    fn name(&self) -> &str {
        "m0000_global_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for GlobalTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create(manager, plan::Entity).await
    }
}

struct Broken;

impl MigrationName for Broken {
    fn name(&self) -> &str {
        "m9999_broken"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Broken {
    async fn up(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Err(DbErr::Migration("broken on purpose".to_owned()))
    }
}

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
        create(manager, event::Entity).await?;
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

/// [`Migrator`] plus a migration that changes the type of a column read by every select
/// of customers (`name` becomes `varchar(200)`): schemas before and after it return rows
/// of different types.
pub struct WideNamesMigrator;

impl MigratorTrait for WideNamesMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(TenantTables), Box::new(WideCustomerNames)]
    }
}

struct WideCustomerNames;

impl MigrationName for WideCustomerNames {
    fn name(&self) -> &str {
        "m0003_wide_customer_names"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for WideCustomerNames {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE customers ALTER COLUMN name TYPE varchar(200)")
            .await
            .map(|_| ())
    }
}

/// [`WideNamesMigrator`], then a migration that fails: a fleet migration must leave every
/// schema as it was, at its old shape and with its old marker.
pub struct BrokenWideNamesMigrator;

impl MigratorTrait for BrokenWideNamesMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(TenantTables),
            Box::new(WideCustomerNames),
            Box::new(Broken),
        ]
    }
}

/// [`WideNamesMigrator`], then a migration that waits a minute: a process running it can
/// be killed half-way, its tables altered and the old marker dropped in a transaction
/// that never commits. The wait asks the server to check every 200 ms that the client is
/// still there, so a killed process's transaction ends promptly.
pub struct StallingMigrator;

impl MigratorTrait for StallingMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(TenantTables),
            Box::new(WideCustomerNames),
            Box::new(Stall),
        ]
    }
}

struct Stall;

impl MigrationName for Stall {
    fn name(&self) -> &str {
        "m9998_stall"
    }
}

/// What the stalled migration's statement contains, to find its server process.
pub const STALL_SQL: &str = "SELECT pg_sleep(60) AS tenancy_stall";

#[async_trait::async_trait]
impl MigrationTrait for Stall {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        conn.execute_unprepared("SET LOCAL client_connection_check_interval = 200")
            .await?;
        conn.execute_unprepared(STALL_SQL).await.map(|_| ())
    }
}
