#[path = "../support/shop.rs"]
mod shop;

use shop::audit_log;
use tenancy_sea::TenantDb;

// A fan-out of a tenant reads only tenant-scoped entities: the message speaks of reading
// by tenant, not of writing.
async fn read(db: &TenantDb<i64>) {
    let _ = db.across_shards().find::<audit_log::Entity>().all().await;
}

fn main() {}
