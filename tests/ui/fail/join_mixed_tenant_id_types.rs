#[path = "../support/shop.rs"]
mod shop;

use shop::{notes, orders};
use tenancy_sea::TenantDb;

async fn read(db: &TenantDb<i64>) {
    // orders has i64 tenant ids, notes String ones: they cannot share a scoped join.
    let _ = db.find::<orders::Entity>().find_also_related::<notes::Entity>().all().await;
}

fn main() {}
