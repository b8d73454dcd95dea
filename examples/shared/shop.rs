//! The entities and the migrator the strategy examples share: a shop's orders.

#![allow(dead_code)] // each example uses its part

pub mod order {
    use sea_orm::entity::prelude::*;
    use tenancy_sea::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
    #[sea_orm(table_name = "orders")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[tenant_id]
        pub tenant_id: i64,
        pub item: String,
        pub total_cents: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The application's migrations, as sea-orm-migration runs them.
pub mod migration {
    use sea_orm::Schema;
    use tenancy_sea::sea_orm_migration::prelude::*;

    pub struct Migrator;

    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            vec![Box::new(CreateOrders)]
        }
    }

    struct CreateOrders;

    impl MigrationName for CreateOrders {
        fn name(&self) -> &str {
            "m0001_create_orders"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for CreateOrders {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            let schema = Schema::new(manager.get_database_backend());
            manager
                .create_table(schema.create_table_from_entity(super::order::Entity))
                .await
        }
    }
}

use sea_orm::Set;
use tenancy_sea::TenantDb;

/// Places two orders for the handle's tenant.
pub async fn place_orders(db: &TenantDb<i64>) -> tenancy_sea::Result<()> {
    for (item, total_cents) in [("tea", 450), ("cake", 1200)] {
        db.insert(order::ActiveModel {
            item: Set(format!("{item} for tenant {}", db.tenant_id())),
            total_cents: Set(total_cents),
            ..Default::default()
        })
        .await?;
    }
    Ok(())
}

/// A progress bar for fleet operations.
pub fn progress_bar(total: usize, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "{what} {{bar:40}} {{pos}}/{{len}} {{msg}}"
    )) {
        bar.set_style(style);
    }
    bar
}

/// Runs the migrator over the whole fleet, 4 tenants at a time, with a progress bar, and
/// says how it went.
pub async fn migrate_with_progress(tenancy: &tenancy_sea::Tenancy<i64>) -> tenancy_sea::Result<()> {
    let total = tenancy.fleet_tenants().await?.len();
    let bar = progress_bar(total, "migrating");
    let report = tenancy
        .migrate_all::<migration::Migrator>(4, |p| {
            bar.inc(1);
            if let Some(error) = p.error {
                bar.println(format!("tenant {} failed: {error}", p.tenant));
            }
        })
        .await?;
    bar.finish();
    println!(
        "migrated {} tenants, {} failed",
        report.migrated.len(),
        report.failed.len()
    );
    Ok(())
}
