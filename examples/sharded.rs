//! Sharding with a catalog, no setup: a SQLite catalog database that holds the shard
//! registry and the tenant directory, three SQLite shards created through it, routed
//! writes and reads, where each row went, a scatter-gather report, a tenant moved off a
//! draining shard, and a restart that reads the catalog back.
//!
//! ```text
//! cargo run --example sharded
//! ```
#![allow(clippy::print_stdout)] // an example's job is to print what happens

#[path = "shared/shop.rs"]
mod shop;

use sea_orm::{Database, DatabaseConnection, EntityTrait, Set};
use shop::{migration::Migrator, order};
use std::path::Path;
use std::sync::Arc;
use tenancy_sea::{
    DatabaseTemplate, DirectoryRouter, ShardId, ShardState, Tenancy, TenantDb, catalog::Directory,
    catalog::Shards, catalog::UniqueIds,
};

/// Places two orders for the handle's tenant, with ids unique across shards and processes
/// (from `UniqueIds`), so that the tenant's rows can move to another shard. (An entity whose
/// key is marked `#[unique_id]` gets them on insert without asking.)
async fn place_orders(db: &TenantDb<i64>, ids: &UniqueIds) -> tenancy_sea::Result<()> {
    let tenant = *db.tenant_id();
    for (item, total_cents) in [("tea", 450), ("cake", 1200)] {
        db.insert(order::ActiveModel {
            id: Set(ids.next_id().await?),
            item: Set(format!("{item} for tenant {tenant}")),
            total_cents: Set(total_cents),
            ..Default::default()
        })
        .await?;
    }
    Ok(())
}

/// The tenancy as an application builds it at start: the shards registered in the
/// catalog, and the directory of which tenant lives where (its tables made on first start).
async fn start(catalog: &DatabaseConnection, dir: &Path) -> tenancy_sea::Result<Tenancy<i64>> {
    let shards = Shards::new(catalog.clone());
    shards.install().await?;
    let router = Arc::new(DirectoryRouter::new(shards.names().await?));
    let directory = Directory::new(catalog.clone(), router.clone());
    directory.install().await?;
    directory.load().await?;
    let topology = shards.topology(router, 2).await?;
    Tenancy::builder(catalog.clone())
        .sharded(topology)
        .directory(directory)
        .database_template(DatabaseTemplate::SqliteDir {
            dir: dir.to_owned(),
            prefix: "shard_".into(),
        })
        .build()
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("tenancy-sharded-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = format!("sqlite://{}?mode=rwc", dir.join("catalog.db").display());
    let catalog = Database::connect(url).await?;

    // Three shards, each a SQLite file: created, migrated, registered, in service; and the
    // process's id generator, its node leased in the catalog.
    let tenancy = start(&catalog, &dir).await?;
    let ids = UniqueIds::new(catalog.clone());
    ids.install().await?;
    let directory = tenancy.directory().ok_or("built with a directory")?.clone();
    for name in ["s0", "s1", "s2"] {
        tenancy.create_shard::<Migrator>(name).await?;
    }
    for shard in Shards::new(catalog.clone()).list().await? {
        println!(
            "registered {} ({:?}) at {}",
            shard.name, shard.state, shard.url
        );
    }

    // Tenants placed in the directory (tenant 1 is big: it gets s0 to itself), then
    // routed writes: each tenant's orders go to its shard.
    for tenant in 1..=7 {
        let shard = if tenant == 1 {
            "s0"
        } else {
            ["s1", "s2"][tenant as usize % 2]
        };
        directory.assign(&tenant, shard).await?;
        place_orders(&tenancy.tenant(tenant).await?, &ids).await?;
    }

    // A routed read: one shard, this tenant's rows only.
    let db = tenancy.tenant(4).await?;
    let mine = db.find::<order::Entity>().all().await?;
    let home = db.shard().map_or("?", ShardId::as_str);
    println!("tenant 4 (on {home}) reads {} orders", mine.len());

    // Where every row went, read shard by shard past the framework.
    for (id, conn) in tenancy.topology()?.unscoped_shards() {
        let rows = order::Entity::find().all(&conn).await?;
        let mut tenants: Vec<i64> = rows.iter().map(|o| o.tenant_id).collect();
        tenants.dedup();
        println!("{id} holds {} orders of tenants {tenants:?}", rows.len());
    }

    // Scatter-gather: explicit, concurrent, merged.
    let across = tenancy.unscoped_across_shards()?;
    let biggest = across
        .find::<order::Entity>()
        .order_by_desc(order::Column::TotalCents)
        .order_by_asc(order::Column::Id) // unique across shards: a total order
        .limit(3)
        .all()
        .await?;
    println!("the 3 biggest orders over all shards: {biggest:?}");

    // Rebalancing: s0 is to be emptied. Tenant 1 moves to s2 (its rows copied, its
    // placement switched, its old rows removed), and a new tenant goes to the active
    // shard with the fewest tenants.
    Shards::new(catalog.clone())
        .set_state(&ShardId::new("s0"), ShardState::Draining)
        .await?;
    let report = tenancy
        .move_tenant(1, "s2")
        .entity::<order::Entity>()
        .run()
        .await?;
    println!(
        "moved tenant 1 from {} to {}: {:?} copied, {} removed from {}",
        report.from, report.to, report.copied, report.removed, report.from
    );
    let newcomer = directory.place(&8i64).await?;
    place_orders(&tenancy.tenant(8).await?, &ids).await?;
    println!("tenant 8 placed on {newcomer}");

    // A restart: the registry and the directory are read back from the catalog.
    drop((tenancy, directory));
    let tenancy = start(&catalog, &dir).await?;
    let total = tenancy
        .unscoped_across_shards()?
        .find::<order::Entity>()
        .count()
        .await?;
    let shard_of = |db: TenantDb<i64>| db.shard().cloned();
    let (four, one) = (
        shard_of(tenancy.tenant(4).await?),
        shard_of(tenancy.tenant(1).await?),
    );
    println!(
        "after a restart: {total} orders over all shards, tenant 4 still on {four:?}, tenant 1 on {one:?}"
    );

    for (_, conn) in tenancy.topology()?.unscoped_shards() {
        conn.close().await?;
    }
    drop(tenancy);
    catalog.close().await?;
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
