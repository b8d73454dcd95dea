#[path = "../support/shop.rs"]
mod shop;

use shop::events;
use tenancy_sea::TenantDb;

// A read of a `#[shard_key]` entity without its key would fan out to every shard: it
// must be asked for by key, or explicitly with `across_shards()`.
async fn read(db: &TenantDb<i64>) {
    let _ = db.find::<events::Entity>().all().await;
}

fn main() {}
