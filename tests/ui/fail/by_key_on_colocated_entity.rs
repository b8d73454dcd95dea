#[path = "../support/shop.rs"]
mod shop;

use shop::orders;
use tenancy_sea::TenantDb;

// `orders` has no `#[shard_key]`: its rows live on their tenant's shard.
fn read(db: &TenantDb<i64>) {
    let _ = db.by_key::<orders::Entity>(7);
}

fn main() {}
