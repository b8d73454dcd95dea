//! The shard registry in a catalog database and shard provisioning: shards created from a
//! template (database made, migrated, registered, put in service), the topology rebuilt
//! from the catalog at start, empty shards removed and busy ones refused, and every shard
//! migrated, with the catalog on each backend.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a panic

use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, Set};
use std::sync::Arc;
use tenancy_sea::{
    DirectoryCatalog, DirectoryRouter, Error, HashRouter, RoutingError, ShardCatalog, ShardId,
    ShardRouter, ShardState, Tenancy, Topology,
};
use tenancy_tests::entities::{customer, order, plan};
use tenancy_tests::migration::{BrokenMigrator, DatabaseMigrator, DatabaseMigratorV1};
use tenancy_tests::{Backend, Flavor, TestDb};

async fn tenancy_over(catalog: &TestDb, router: Arc<DirectoryRouter>) -> Tenancy<i64> {
    let topology = ShardCatalog::new(catalog.conn.clone())
        .topology(router, 2)
        .await
        .unwrap();
    Tenancy::builder(catalog.conn.clone())
        .sharded(topology)
        .database_template(catalog.template.clone().unwrap())
        .build()
        .unwrap()
}

async fn place(tenancy: &Tenancy<i64>, tenant: i64) {
    let db = tenancy.tenant(tenant).await.unwrap();
    let c = db
        .insert(customer::ActiveModel {
            name: Set(format!("c{tenant}")),
            ..Default::default()
        })
        .await
        .unwrap();
    db.insert(order::ActiveModel {
        customer_id: Set(c.id),
        total_cents: Set(tenant),
        ..Default::default()
    })
    .await
    .unwrap();
}

async fn provision(backend: Backend) {
    let Some(catalog) = TestDb::for_flavor(backend, Flavor::Database).await else {
        return;
    };
    let shards = ShardCatalog::new(catalog.conn.clone());
    shards.install().await.unwrap();
    let directory = DirectoryCatalog::new(catalog.conn.clone());
    directory.install().await.unwrap();

    // An empty topology grows shard by shard.
    let router = Arc::new(DirectoryRouter::new(Vec::<ShardId>::new()));
    let tenancy = tenancy_over(&catalog, router.clone()).await;
    for name in ["s0", "s1", "s2"] {
        tenancy
            .create_shard::<DatabaseMigratorV1>(name)
            .await
            .unwrap();
    }
    let plans = (1..=3).map(|id| plan::ActiveModel {
        id: Set(id),
        name: Set(format!("plan {id}")),
        price_cents: Set(id * 100),
    });
    tenancy.globals().insert_many(plans).await.unwrap();
    assert_eq!(router.shards().len(), 3);
    assert_eq!(tenancy.topology().unwrap().shard_ids().len(), 3);
    let records = shards.list().await.unwrap();
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r.state == ShardState::Active));
    assert!(matches!(
        tenancy.create_shard::<DatabaseMigratorV1>("s1").await,
        Err(Error::ShardExists { .. })
    ));
    // A migration that fails leaves no shard, no database and no registration behind.
    assert!(tenancy.create_shard::<BrokenMigrator>("s3").await.is_err());
    assert_eq!(shards.list().await.unwrap().len(), 3);
    assert_eq!(router.shards().len(), 3);
    tenancy
        .create_shard::<DatabaseMigratorV1>("s3")
        .await
        .unwrap();
    // The new shard's global tables start empty: copied from another shard, then global
    // writes reach all four copies alike.
    assert_eq!(tenancy.copy_global::<plan::Entity>("s3").await.unwrap(), 3);
    assert!(matches!(
        tenancy.copy_global::<plan::Entity>("s3").await,
        Err(Error::Config(_))
    ));
    let cheaper = plan::Entity::update_many()
        .col_expr(plan::Column::PriceCents, sea_orm::sea_query::Expr::value(1))
        .filter(plan::Column::Id.eq(2));
    assert_eq!(tenancy.globals().update_many(cheaper).await.unwrap(), 1);

    // Tenants placed through the directory, rows written through their handles.
    for tenant in 1..=8 {
        let shard = format!("s{}", tenant % 3);
        directory
            .assign(&router, &tenant, shard.as_str())
            .await
            .unwrap();
        place(&tenancy, tenant).await;
    }

    // A restart reads the registry and the directory back: same placement, same rows.
    drop(tenancy);
    let router = Arc::new(DirectoryRouter::new(shards.names().await.unwrap()));
    assert_eq!(directory.load::<i64>(&router).await.unwrap(), 8);
    let tenancy = tenancy_over(&catalog, router.clone()).await;
    for tenant in 1..=8 {
        let db = tenancy.tenant(tenant).await.unwrap();
        assert_eq!(db.shard().unwrap().as_str(), format!("s{}", tenant % 3));
        let rows = db.find::<order::Entity>().all().await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].total_cents, tenant);
    }

    // Every shard migrated to the next version, then again as a no-op.
    let mut seen = 0;
    let report = tenancy
        .migrate_shards::<DatabaseMigrator>(2, |_| seen += 1)
        .await
        .unwrap();
    assert!(report.is_success(), "{:?}", report.failed);
    assert_eq!((report.migrated.len(), seen), (4, 4));
    let again = tenancy
        .migrate_shards::<DatabaseMigrator>(4, |_| {})
        .await
        .unwrap();
    assert_eq!(again.migrated.len(), 4);

    // A shard with tenants placed on it, or with rows, is not removed.
    match tenancy.drop_shard("s1", &[]).await {
        Err(Error::ShardNotEmpty { shard, reason }) => {
            assert_eq!(shard, "s1");
            assert!(reason.contains("3 placed key"), "{reason}");
        }
        other => panic!("expected ShardNotEmpty, got {other:?}"),
    }
    for tenant in [1, 4, 7] {
        directory.remove(&router, &tenant).await.unwrap();
    }
    match tenancy.drop_shard("s1", &["plans"]).await {
        Err(Error::ShardNotEmpty { reason, .. }) => assert!(reason.contains("row"), "{reason}"),
        other => panic!("expected ShardNotEmpty, got {other:?}"),
    }
    assert!(
        router.shards().contains(&ShardId::new("s1")),
        "refused, so still in service"
    );
    // The empty shard goes: out of the router, the topology, the catalog, and its database.
    tenancy.drop_shard("s3", &["plans"]).await.unwrap();
    assert!(!router.shards().contains(&ShardId::new("s3")));
    assert_eq!(tenancy.topology().unwrap().shard_ids().len(), 3);
    assert_eq!(shards.names().await.unwrap().len(), 3);
    let across = tenancy.unscoped_across_shards().unwrap();
    assert_eq!(across.find::<order::Entity>().count().await.unwrap(), 8);

    // Draining is recorded; draining shards are not offered for new tenants.
    shards
        .set_state(&ShardId::new("s2"), ShardState::Draining)
        .await
        .unwrap();
    assert_eq!(
        shards.active().await.unwrap(),
        [ShardId::new("s0"), ShardId::new("s1")]
    );
    // The directory obeys it: no new key, tenant or range, is placed on a draining shard,
    // and the catalog is left as it was; a key already there may be assigned again.
    match directory.assign(&router, &9, "s2").await {
        Err(Error::ShardDraining { shard }) => assert_eq!(shard, "s2"),
        other => panic!("expected ShardDraining, got {other:?}"),
    }
    assert!(router.route(&9i64).is_err(), "not placed in the router");
    assert!(matches!(
        DirectoryCatalog::named(catalog.conn.clone(), "devices")
            .unwrap()
            .assign_range(&router, 1_000, "s2")
            .await,
        Err(Error::ShardDraining { .. })
    ));
    directory.assign(&router, &2, "s2").await.unwrap();
    let reloaded = DirectoryRouter::new(shards.names().await.unwrap());
    assert_eq!(directory.load::<i64>(&reloaded).await.unwrap(), 5);
    // New tenants go to the active shard with the fewest keys (s0 holds 3 and 6, s1 none
    // since 1, 4 and 7 left), ties to the first name; placing again changes nothing.
    let mut placed = Vec::new();
    for tenant in [10, 11, 12, 10] {
        let shard = directory.place(&router, &tenant).await.unwrap();
        assert_eq!(router.route(&tenant).unwrap(), shard);
        placed.push(shard.to_string());
    }
    assert_eq!(placed, ["s1", "s1", "s0", "s1"]);
    for name in ["s0", "s1"] {
        shards
            .set_state(&ShardId::new(name), ShardState::Draining)
            .await
            .unwrap();
    }
    match directory.place(&router, &13).await {
        Err(Error::NoShardAvailable { directory }) => assert_eq!(directory, "tenants"),
        other => panic!("expected NoShardAvailable, got {other:?}"),
    }
    // A tenant placed before its shard began draining keeps it.
    assert_eq!(directory.place(&router, &12).await.unwrap().as_str(), "s0");
    for tenant in [10, 11, 12] {
        directory.remove(&router, &tenant).await.unwrap();
    }

    // The s1 rows can be found on s1 still, read past the framework.
    let s1 = tenancy
        .topology()
        .unwrap()
        .connection(&ShardId::new("s1"))
        .unwrap();
    assert_eq!(order::Entity::find().count(&s1).await.unwrap(), 3);
    drop(tenancy);
    catalog.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_catalog_and_shards() {
    provision(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_catalog_and_shards() {
    provision(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_catalog_and_shards() {
    provision(Backend::MySql).await;
}

/// A hash router places keys by its list of shards: adding one would move keys, so it is
/// refused before anything is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_router_refuses_new_shards() {
    let Some(catalog) = TestDb::for_flavor(Backend::Sqlite, Flavor::Database).await else {
        return;
    };
    ShardCatalog::new(catalog.conn.clone())
        .install()
        .await
        .unwrap();
    let shard = TestDb::with_schema(Backend::Sqlite).await.unwrap();
    let topology = Topology::new(
        HashRouter::new(["h0"]),
        [(ShardId::new("h0"), shard.conn.clone())],
    )
    .unwrap();
    let tenancy: Tenancy<i64> = Tenancy::builder(catalog.conn.clone())
        .sharded(topology)
        .database_template(catalog.template.clone().unwrap())
        .build()
        .unwrap();
    match tenancy.create_shard::<DatabaseMigratorV1>("h1").await {
        Err(Error::Routing(RoutingError::FixedShards(name))) => assert_eq!(name, "h1"),
        other => panic!("expected FixedShards, got {other:?}"),
    }
    assert!(
        ShardCatalog::new(catalog.conn.clone())
            .list()
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        tenancy.drop_shard("h0", &[]).await,
        Err(Error::Routing(RoutingError::FixedShards(_)))
    ));
    shard.drop_db().await;
    catalog.drop_db().await;
}
