#[path = "../support/shop.rs"]
mod shop;

use sea_orm::Set;
use shop::plans;
use tenancy_sea::TenantDb;

async fn write(db: &TenantDb<i64>) {
    // Global tables are read-only through a tenant handle.
    let _ = db
        .insert(plans::ActiveModel {
            name: Set("pro".into()),
            ..Default::default()
        })
        .await;
}

fn main() {}
