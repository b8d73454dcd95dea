#[path = "../support/shop.rs"]
mod shop;

use shop::events;
use tenancy_sea::TenantDb;

// A transaction runs on one shard: it does not fan out.
async fn read(db: &TenantDb<i64>) -> tenancy_sea::Result<()> {
    let txn = db.begin().await?;
    let _ = txn.across_shards();
    let _ = txn.by_keys::<events::Entity>([1i64, 2]);
    Ok(())
}

fn main() {}
