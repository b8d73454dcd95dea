#[path = "../support/shop.rs"]
mod shop;

use shop::notes;
use tenancy_sea::TenantDb;

async fn read(db: &TenantDb<i64>) {
    // notes are scoped by String tenant ids; this handle's are i64.
    let _ = db.find::<notes::Entity>().all().await;
}

fn main() {}
