#[path = "../support/shop.rs"]
mod shop;

use shop::audit_log;
use tenancy_sea::TenantDb;

async fn read(db: &TenantDb<i64>) {
    let _ = db.find::<audit_log::Entity>().all().await;
}

fn main() {}
