#[path = "../support/shop.rs"]
mod shop;

use shop::{events, orders};
use tenancy_sea::Tenancy;

// A tenant's move carries the rows placed by the tenant; the rows of a `#[shard_key]`
// entity are placed by their key, so they are not the tenant's to move.
async fn relocate(tenancy: &Tenancy<i64>) {
    let _ = tenancy
        .move_tenant(42, "s1")
        .entity::<orders::Entity>()
        .entity::<events::Entity>()
        .run()
        .await;
}

fn main() {}
