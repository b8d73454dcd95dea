#[path = "../support/shop.rs"]
mod shop;

use shop::orders;

// A hand-written impl for an entity without `#[shard_key]` would make a keyless read
// compile for an entity spread over shards, or a keyed read for one that is not.
impl tenancy_sea::ShardKeyed for orders::Entity {
    type Key = i64;
}

fn main() {}
