//! Sharding by tenant: three SQLite shards with no setup, a stable hash router placing
//! each tenant on one, routed writes and reads, and a scatter-gather report across all.
//!
//! ```text
//! cargo run --example sharded
//! ```
#![allow(clippy::print_stdout)] // an example's job is to print what happens

#[path = "shared/shop.rs"]
mod shop;

use sea_orm::{Database, DatabaseConnection, EntityTrait};
use shop::{migration::Migrator, order, place_orders};
use tenancy_sea::sea_orm_migration::MigratorTrait;
use tenancy_sea::{HashRouter, ShardId, ShardRouter, Tenancy, Topology};

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("tenancy-sharded-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut shards: Vec<(ShardId, DatabaseConnection)> = Vec::new();
    for i in 0..3 {
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.join(format!("shard_{i}.db")).display()
        );
        let conn = Database::connect(url).await?;
        Migrator::up(&conn, None).await?;
        shards.push((ShardId::new(format!("shard_{i}")), conn));
    }
    let router = HashRouter::new(shards.iter().map(|(id, _)| id.clone()));
    let topology = Topology::new(router.clone(), shards.clone())?;
    let tenancy: Tenancy<i64> = Tenancy::builder(shards[0].1.clone())
        .sharded(topology)
        .build()?;

    // Routed writes: each tenant's orders go to its shard.
    for tenant in 1..=9 {
        let db = tenancy.tenant(tenant).await?;
        place_orders(&db).await?;
        println!("tenant {tenant} lives on {}", router.route(&tenant)?);
    }

    // A routed read: one shard, this tenant's rows only.
    let db = tenancy.tenant(4).await?;
    let mine = db.find::<order::Entity>().all().await?;
    println!(
        "tenant 4 (on {}) reads {} orders",
        db.shard().map_or("?", |s| s.as_str()),
        mine.len()
    );

    // Where every row went, read shard by shard past the framework.
    for (id, conn) in &shards {
        let rows = order::Entity::find().all(conn).await?;
        let mut tenants: Vec<i64> = rows.iter().map(|o| o.tenant_id).collect();
        tenants.dedup();
        println!("{id} holds {} orders of tenants {tenants:?}", rows.len());
    }

    // Scatter-gather: explicit, concurrent, merged.
    let across = tenancy.unscoped_across_shards()?;
    let biggest = across
        .find::<order::Entity>()
        .order_by_desc(order::Column::TotalCents)
        // Each shard numbers its rows from 1: the tenant makes the order total.
        .order_by_asc(order::Column::TenantId)
        .order_by_asc(order::Column::Id)
        .limit(3)
        .all()
        .await?;
    println!("the 3 biggest orders over all shards: {biggest:?}");
    println!(
        "orders over all shards: {}",
        across.find::<order::Entity>().count().await?
    );

    for (_, conn) in shards {
        conn.close().await?;
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[cfg(feature = "runtime-tokio")]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    run().await
}

#[cfg(all(feature = "runtime-async-std", not(feature = "runtime-tokio")))]
#[async_std::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    run().await
}
