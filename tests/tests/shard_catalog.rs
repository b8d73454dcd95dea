//! The shard registry in a catalog database and shard provisioning: shards created from a
//! template (database made, migrated, registered, put in service), the topology rebuilt
//! from the catalog at start, empty shards removed and busy ones refused, and every shard
//! migrated, with the catalog on each backend.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a panic

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, Set};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tenancy_sea::{
    DirectoryRouter, Error, HashRouter, PoolOptions, RoutingError, ShardId, ShardRouter,
    ShardState, Tenancy, Topology, catalog::Directory, catalog::Shards,
};
use tenancy_tests::entities::{customer, order, plan};
use tenancy_tests::migration::{BrokenMigrator, DatabaseMigrator, DatabaseMigratorV1};
use tenancy_tests::{Backend, Flavor, TestDb};

async fn tenancy_over(catalog: &TestDb, directory: &Directory<i64>) -> Tenancy<i64> {
    tenancy_tests::sharded_over(catalog, directory)
        .await
        .build()
        .unwrap()
}

async fn provision(backend: Backend) {
    let Some(catalog) = TestDb::for_flavor(backend, Flavor::Database).await else {
        return;
    };
    let shards = Shards::new(catalog.conn.clone());
    shards.install().await.unwrap();
    // An empty topology grows shard by shard.
    let router = Arc::new(DirectoryRouter::new(Vec::<ShardId>::new()));
    let directory = Directory::new(catalog.conn.clone(), router.clone());
    directory.install().await.unwrap();
    let tenancy = tenancy_over(&catalog, &directory).await;
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
        Err(Error::GlobalCopyNotEmpty { rows: 3, .. })
    ));
    let cheaper = plan::Entity::update_many()
        .col_expr(plan::Column::PriceCents, sea_orm::sea_query::Expr::value(1))
        .filter(plan::Column::Id.eq(2));
    assert_eq!(tenancy.globals().update_many(cheaper).await.unwrap(), 1);

    // Tenants placed through the directory, rows written through their handles.
    for tenant in 1..=8 {
        let shard = format!("s{}", tenant % 3);
        directory.assign(&tenant, shard.as_str()).await.unwrap();
        tenancy_tests::customer_with_orders(&tenancy, tenant, None, [(None, tenant)]).await;
    }

    // A restart reads the registry and the directory back: same placement, same rows.
    drop(tenancy);
    let router = Arc::new(DirectoryRouter::new(shards.names().await.unwrap()));
    let directory = directory.for_router(router.clone());
    assert_eq!(directory.load().await.unwrap().loaded, 8);
    let tenancy = tenancy_over(&catalog, &directory).await;
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
        directory.remove(&tenant).await.unwrap();
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
    match directory.assign(&9, "s2").await {
        Err(Error::ShardDraining { shard }) => assert_eq!(shard, "s2"),
        other => panic!("expected ShardDraining, got {other:?}"),
    }
    assert!(router.route(&9i64).is_err(), "not placed in the router");
    assert!(matches!(
        Directory::<i64>::named(catalog.conn.clone(), "devices", router.clone())
            .unwrap()
            .assign_range(1_000, "s2")
            .await,
        Err(Error::ShardDraining { .. })
    ));
    directory.assign(&2, "s2").await.unwrap();
    let reloaded = Arc::new(DirectoryRouter::new(shards.names().await.unwrap()));
    assert_eq!(
        directory
            .for_router(reloaded.clone())
            .load()
            .await
            .unwrap()
            .loaded,
        5
    );
    // New tenants go to the active shard with the fewest keys (s0 holds 3 and 6, s1 none
    // since 1, 4 and 7 left), ties to the first name; placing again changes nothing.
    let mut placed = Vec::new();
    for tenant in [10, 11, 12, 10] {
        let shard = directory.place(&tenant).await.unwrap();
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
    match directory.place(&13).await {
        Err(Error::NoShardAvailable { directory }) => assert_eq!(directory, "tenants"),
        other => panic!("expected NoShardAvailable, got {other:?}"),
    }
    // A tenant placed before its shard began draining keeps it.
    assert_eq!(directory.place(&12).await.unwrap().as_str(), "s0");
    for tenant in [10, 11, 12] {
        directory.remove(&tenant).await.unwrap();
    }

    // The s1 rows can be found on s1 still, read past the framework.
    let s1 = tenancy
        .topology()
        .unwrap()
        .unscoped_connection(&ShardId::new("s1"))
        .unwrap();
    assert_eq!(order::Entity::find().count(&s1).await.unwrap(), 3);
    drop(tenancy);
    catalog.drop_db().await;
}

/// A catalog with shards `s0` and `s1` made through it, and the tenancy over them.
async fn two_shards(backend: Backend) -> Option<(TestDb, Directory<i64>, Tenancy<i64>)> {
    let catalog = TestDb::for_flavor(backend, Flavor::Database).await?;
    let router = Arc::new(DirectoryRouter::new(Vec::<ShardId>::new()));
    let directory = Directory::new(catalog.conn.clone(), router.clone());
    directory.install().await.unwrap();
    let tenancy = tenancy_over(&catalog, &directory).await;
    for name in ["s0", "s1"] {
        tenancy
            .create_shard::<DatabaseMigratorV1>(name)
            .await
            .unwrap();
    }
    Some((catalog, directory, tenancy))
}

/// Every shard's pool has the options the topology was opened with (size, acquire
/// timeout, test before acquire, the application's own change): the shards made through
/// the tenancy, a shard made after the start, one added by URL, and one another process
/// finds at a catalog refresh (before, a shard added later got `connections_per_tenant`'s
/// pools, 4, whatever the topology's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_added_later_get_pools_of_the_topologys_options() {
    let Some((catalog, directory, tenancy)) = two_shards(Backend::Sqlite).await else {
        return;
    };
    let options = |tenancy: &Tenancy<i64>, shard: &str| {
        let options = tenancy
            .topology()
            .unwrap()
            .unscoped_connection(&ShardId::new(shard))
            .unwrap()
            .get_sqlite_connection_pool()
            .options()
            .clone();
        (
            options.get_max_connections(),
            options.get_acquire_timeout(),
            options.get_test_before_acquire(),
            options.get_min_connections(),
        )
    };
    let size = |tenancy: &Tenancy<i64>, shard: &str| options(tenancy, shard).0;
    // `tenancy_over` opened its topology with 4 connections a shard.
    assert_eq!((size(&tenancy, "s0"), size(&tenancy, "s1")), (4, 4));
    let configured = Arc::new(AtomicUsize::new(0));
    let pool = PoolOptions::new(1)
        .acquire_timeout(Duration::from_millis(1234))
        .test_before_acquire(true)
        .configure({
            let configured = configured.clone();
            move |options| {
                configured.fetch_add(1, Ordering::Relaxed);
                options.min_connections(1);
            }
        });
    let other = Tenancy::builder(catalog.conn.clone())
        .sharded(
            Shards::new(catalog.conn.clone())
                .topology(directory.router().clone(), pool)
                .await
                .unwrap(),
        )
        .directory(directory.clone())
        .database_template(catalog.template.clone().unwrap())
        .build()
        .unwrap();
    let configured_pool = (1, Duration::from_millis(1234), true, 1);
    assert_eq!(options(&other, "s0"), configured_pool);
    assert_eq!(
        configured.load(Ordering::Relaxed),
        2,
        "one change per shard opened"
    );
    tenancy
        .create_shard::<DatabaseMigratorV1>("s2")
        .await
        .unwrap();
    assert_eq!(size(&tenancy, "s2"), 4);
    other.refresh_catalog().await.unwrap();
    assert_eq!(options(&other, "s2"), configured_pool);
    other
        .create_shard::<DatabaseMigratorV1>("s3")
        .await
        .unwrap();
    assert_eq!(options(&other, "s3"), configured_pool);
    assert_eq!(configured.load(Ordering::Relaxed), 4);
    drop((tenancy, other));
    catalog.drop_db().await;
}

/// A customer with 3 orders for `tenant` (totals `100 tenant` up), written through its
/// handle; `first_id` gives the rows ids of their own (1,000 up), `None` takes the shard's
/// sequence.
async fn customer_with_three_orders(tenancy: &Tenancy<i64>, tenant: i64, first_id: Option<i64>) {
    let orders = (0..3).map(|n| (first_id.map(|f| f + n), tenant * 100 + n));
    tenancy_tests::customer_with_orders(tenancy, tenant, first_id, orders).await;
}

/// The tenant's orders on `shard`, read past the framework.
async fn orders_on(tenancy: &Tenancy<i64>, shard: &str, tenant: i64) -> u64 {
    let conn = tenancy
        .topology()
        .unwrap()
        .unscoped_connection(&ShardId::new(shard))
        .unwrap();
    order::Entity::find()
        .filter(order::Column::Tenant.eq(tenant))
        .count(&conn)
        .await
        .unwrap()
}

/// Moving tenants between shards: rows copied parents first, placement switched in the
/// catalog and the router, old rows removed; a clash of keys, a draining or unknown
/// destination and an empty list of entities change nothing; a second run removes what
/// an unfinished move left behind.
async fn moves(backend: Backend) {
    let Some((catalog, directory, tenancy)) = two_shards(backend).await else {
        return;
    };
    let router = directory.router().clone();
    directory.assign(&1, "s0").await.unwrap();
    directory.assign(&2, "s1").await.unwrap();
    directory.assign(&3, "s0").await.unwrap();
    customer_with_three_orders(&tenancy, 1, None).await;
    customer_with_three_orders(&tenancy, 2, None).await;
    customer_with_three_orders(&tenancy, 3, Some(1_000)).await;
    let relocate = |tenant: i64, to: &'static str| {
        tenancy
            .move_tenant(tenant, to)
            .entity::<customer::Entity>()
            .entity::<order::Entity>()
    };

    // Tenant 3's ids are its own: it moves. Customers go first, orders after them.
    let report = relocate(3, "s1").run().await.unwrap();
    assert_eq!((report.from.as_str(), report.to.as_str()), ("s0", "s1"));
    assert_eq!(report.copied, [("customers", 1), ("orders", 3)]);
    assert_eq!(report.removed, 4);
    assert_eq!(router.route(&3i64).unwrap().as_str(), "s1");
    assert_eq!(
        (
            orders_on(&tenancy, "s0", 3).await,
            orders_on(&tenancy, "s1", 3).await
        ),
        (0, 3)
    );
    let db = tenancy.tenant(3).await.unwrap();
    assert_eq!(db.shard().unwrap().as_str(), "s1");
    let mut totals: Vec<i64> = db
        .find::<order::Entity>()
        .all()
        .await
        .unwrap()
        .iter()
        .map(|o| o.total_cents)
        .collect();
    totals.sort_unstable();
    assert_eq!(totals, [300, 301, 302]);
    // The new shard's key sequence continues past the moved ids (PostgreSQL is told so).
    let next = db
        .insert(customer::ActiveModel {
            name: Set("after the move".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(next.id, 1_001);
    // The catalog holds the new placement: a restart finds tenant 3 on s1.
    let reloaded = Arc::new(DirectoryRouter::new(["s0", "s1"]));
    directory.for_router(reloaded.clone()).load().await.unwrap();
    assert_eq!(reloaded.route(&3i64).unwrap().as_str(), "s1");

    // Tenant 1's ids came from s0's sequence and s1 holds the same ids: the copy fails,
    // is rolled back, and tenant 1 stays on s0 with every row.
    assert!(matches!(relocate(1, "s1").run().await, Err(Error::Db(_))));
    assert_eq!(router.route(&1i64).unwrap().as_str(), "s0");
    assert_eq!(
        (
            orders_on(&tenancy, "s0", 1).await,
            orders_on(&tenancy, "s1", 1).await
        ),
        (3, 0)
    );
    tenancy.tenant(1).await.expect("the fence is lifted");

    // A draining or unknown destination, or no entities, is refused before anything.
    let shards = Shards::new(catalog.conn.clone());
    shards
        .set_state(&ShardId::new("s0"), ShardState::Draining)
        .await
        .unwrap();
    match relocate(2, "s0").run().await {
        Err(Error::ShardDraining { shard }) => assert_eq!(shard, "s0"),
        other => panic!("expected ShardDraining, got {other:?}"),
    }
    shards
        .set_state(&ShardId::new("s0"), ShardState::Active)
        .await
        .unwrap();
    assert!(matches!(
        relocate(2, "s9").run().await,
        Err(Error::Routing(RoutingError::UnknownShard(_)))
    ));
    assert!(matches!(
        tenancy.move_tenant(2, "s0").run().await,
        Err(Error::Config(_))
    ));
    assert_eq!(orders_on(&tenancy, "s1", 2).await, 3);

    // A write a stale process made on the old shard after the move is never deleted by
    // running the move again: it may be the only copy of that write.
    let s0 = tenancy
        .topology()
        .unwrap()
        .unscoped_connection(&ShardId::new("s0"))
        .unwrap();
    order::Entity::insert(order::ActiveModel {
        id: Set(5_000),
        tenant_id: Set(3),
        customer_id: Set(1),
        total_cents: Set(1),
    })
    .exec(&s0)
    .await
    .unwrap();
    let again = relocate(3, "s1").run().await.unwrap();
    assert_eq!((again.copied.len(), again.removed), (0, 0));
    assert_eq!(
        (
            orders_on(&tenancy, "s0", 3).await,
            orders_on(&tenancy, "s1", 3).await
        ),
        (1, 3)
    );
    // Removing leftovers keeps it too, and says so.
    let leftovers = tenancy
        .remove_leftovers(3)
        .entity::<customer::Entity>()
        .entity::<order::Entity>()
        .run()
        .await
        .unwrap();
    assert_eq!(leftovers.home, ShardId::new("s1"));
    assert!(leftovers.removed.is_empty(), "{leftovers:?}");
    assert_eq!(leftovers.kept, [(ShardId::new("s0"), "orders", 1)]);
    assert_eq!(orders_on(&tenancy, "s0", 3).await, 1);
    drop(tenancy);
    catalog.drop_db().await;
}

/// While the tenant's rows are copied, its old shard refuses its writes from a handle
/// taken before the move (`TenantMoving`), and so does every process; a write that gets
/// past the fence (a session that disables triggers) is caught by the comparison by
/// content: the move is abandoned before switching, the copies go, the fence is lifted,
/// and the tenant stays where it was with every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_during_a_move_is_refused_and_one_past_the_fence_abandons_it() {
    let Some((catalog, directory, tenancy)) = two_shards(Backend::Postgres).await else {
        return;
    };
    let router = directory.router().clone();
    directory.assign(&4, "s0").await.unwrap();
    customer_with_three_orders(&tenancy, 4, Some(2_000)).await;
    let stale = tenancy.tenant(4).await.unwrap();
    let topology = tenancy.topology().unwrap().clone();
    let s0 = topology.unscoped_connection(&ShardId::new("s0")).unwrap();
    let s1 = topology.unscoped_connection(&ShardId::new("s1")).unwrap();
    // An uncommitted row on s1 with the id of tenant 4's customer makes the copy wait at
    // inserting that customer, after it read s0's customers.
    let blocker = sea_orm::TransactionTrait::begin(&s1).await.unwrap();
    blocker
        .execute_unprepared("INSERT INTO customers (id, tenant_id, name) VALUES (2000, 99, 'x')")
        .await
        .unwrap();
    // Another process over the same catalog, which the in-process fence does not reach.
    let names = Shards::new(catalog.conn.clone()).names().await.unwrap();
    let router_b = Arc::new(DirectoryRouter::new(names));
    directory.for_router(router_b.clone()).load().await.unwrap();
    let b = tenancy_over(&catalog, &directory.for_router(router_b.clone())).await;
    fn relocate(tenancy: &Tenancy<i64>) -> tenancy_sea::TenantMove<'_, i64> {
        tenancy
            .move_tenant(4, "s1")
            .entity::<customer::Entity>()
            .entity::<order::Entity>()
    }
    let moving = relocate(&tenancy).run();
    let meanwhile = async {
        wait_for_a_lock_wait(&s1).await;
        assert!(matches!(
            tenancy.tenant(4).await,
            Err(Error::TenantMoving { .. })
        ));
        // The catalog's record of the move refuses a second one from the other process.
        assert!(matches!(
            relocate(&b).run().await,
            Err(Error::TenantMoving { .. })
        ));
        // The old shard refuses the tenant's writes, from a handle taken before the move
        // and from the other process alike.
        let written = stale
            .insert(customer::ActiveModel {
                name: Set("written during the move".into()),
                ..Default::default()
            })
            .await;
        assert!(
            matches!(written, Err(Error::TenantMoving { .. })),
            "{written:?}"
        );
        let theirs = b.tenant(4).await.unwrap();
        let updated = theirs
            .update_many::<order::Entity>()
            .col_expr(
                order::Column::TotalCents,
                sea_orm::sea_query::Expr::value(0),
            )
            .exec()
            .await;
        assert!(
            matches!(updated, Err(Error::TenantMoving { .. })),
            "{updated:?}"
        );
        // A session that disables triggers gets past the fence.
        past_the_fence(
            &s0,
            "INSERT INTO customers (id, tenant_id, name) VALUES (2999, 4, 'past the fence')",
        )
        .await;
        blocker.rollback().await.unwrap();
    };
    let (moved, ()) = tokio::join!(moving, meanwhile);
    match moved {
        Err(Error::MoveConflict {
            table,
            copied,
            now,
            shard,
            ..
        }) => assert_eq!(
            (table, copied, now, shard.as_str()),
            ("customers", 1, 2, "s0")
        ),
        other => panic!("expected MoveConflict, got {other:?}"),
    }
    assert_eq!(router.route(&4i64).unwrap().as_str(), "s0");
    assert_eq!(
        (
            orders_on(&tenancy, "s0", 4).await,
            orders_on(&tenancy, "s1", 4).await
        ),
        (3, 0)
    );
    assert_eq!(fence_triggers(&s0).await, 0, "the fence is lifted");
    let db = tenancy.tenant(4).await.expect("the fence is lifted");
    assert_eq!(db.find::<customer::Entity>().all().await.unwrap().len(), 2);
    stale
        .update_many::<order::Entity>()
        .col_expr(
            order::Column::TotalCents,
            sea_orm::sea_query::Expr::value(7),
        )
        .exec()
        .await
        .expect("the old shard takes the tenant's writes again");
    // The record is cleared with the abandoned move: the other process moves it now.
    let report = relocate(&b).run().await.unwrap();
    assert_eq!(report.copied, [("customers", 2), ("orders", 3)]);
    drop((db, tenancy, b, stale));
    catalog.drop_db().await;
}

/// Runs `sql` on `conn` in a session that disables triggers (a superuser's
/// `session_replication_role = replica`): a writer that gets past a move's fence.
async fn past_the_fence(conn: &sea_orm::DatabaseConnection, sql: &str) {
    let txn = sea_orm::TransactionTrait::begin(conn).await.unwrap();
    txn.execute_unprepared("SET LOCAL session_replication_role = replica")
        .await
        .unwrap();
    txn.execute_unprepared(sql).await.unwrap();
    txn.commit().await.unwrap();
}

/// How many move-fence triggers `conn`'s PostgreSQL database holds.
async fn fence_triggers(conn: &sea_orm::DatabaseConnection) -> i64 {
    let row = conn
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT count(*) AS n FROM pg_trigger WHERE tgname LIKE 'tenancy\\_fence%'",
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

/// Two processes over one catalog: what one changes in the directory reaches the other's
/// router through `refresh` (or `watch`), removals included, and a refresh that names a
/// shard the router lacks changes nothing.
async fn directory_changes_reach_other_processes(backend: Backend) {
    let Some(catalog) = TestDb::for_flavor(backend, Flavor::Database).await else {
        return;
    };
    let router_here = Arc::new(DirectoryRouter::new(["s0", "s1"]));
    let router_there = Arc::new(DirectoryRouter::new(["s0", "s1"]));
    let (here, there) = (
        Directory::<i64>::new(catalog.conn.clone(), router_here.clone()),
        Directory::<i64>::new(catalog.conn.clone(), router_there.clone()),
    );
    here.install().await.unwrap();
    assert!(!there.refresh().await.unwrap());

    here.assign(&1, "s0").await.unwrap();
    here.assign(&2, "s1").await.unwrap();
    here.assign_range(100, "s1").await.unwrap();
    assert!(
        router_there.route(&1i64).is_err(),
        "not seen before a refresh"
    );
    assert!(there.refresh().await.unwrap());
    assert!(!there.refresh().await.unwrap(), "nothing new");
    let route = |key: i64| router_there.route(&key).map(|s| s.to_string());
    assert_eq!(
        (route(1).unwrap(), route(2).unwrap(), route(150).unwrap()),
        ("s0".into(), "s1".into(), "s1".into())
    );

    // Moves and removals reach it too: the reload replaces, it does not add.
    here.assign(&1, "s1").await.unwrap();
    here.remove(&2).await.unwrap();
    here.remove_range(100).await.unwrap();
    let placed = here.place(&3).await.unwrap();
    assert!(there.refresh().await.unwrap());
    assert_eq!(route(1).unwrap(), "s1");
    assert!(route(2).is_err() && route(150).is_err());
    assert_eq!(route(3).unwrap(), placed.as_str());
    assert_eq!(here.version().await.unwrap(), 7, "one version per change");
    assert_eq!(router_there.version(), 7);

    // Watching: a change shows up within a few ticks, without asking.
    let watcher = tokio::spawn(there.clone().watch(std::time::Duration::from_millis(20)));
    here.assign(&4, "s0").await.unwrap();
    let mut seen = false;
    for _ in 0..100 {
        if route(4).is_ok() {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    watcher.abort();
    assert!(seen, "the watcher did not pick the change up within 2 s");

    // A shard this process does not have yet: its entry is skipped (reported by `load`),
    // the rest loads, and the key stays unplaced here until the shard is in service.
    router_here.add_shard(&ShardId::new("s2")).unwrap();
    here.assign(&5, "s2").await.unwrap();
    assert!(there.refresh().await.unwrap());
    assert_eq!(route(1).unwrap(), "s1");
    assert_eq!(route(4).unwrap(), "s0");
    assert!(route(5).is_err());
    router_there.add_shard(&ShardId::new("s2")).unwrap();
    let load = there.load().await.unwrap();
    assert!(load.skipped.is_empty(), "{load:?}");
    assert_eq!(route(5).unwrap(), "s2");

    // A directory's first changes, made at once by two processes, both count: the
    // version row is made by whichever comes first, and neither fails.
    let router = || Arc::new(DirectoryRouter::new(["s0", "s1"]));
    let (dev_a, dev_b) = (
        Directory::<i64>::named(catalog.conn.clone(), "devices", router()).unwrap(),
        Directory::<i64>::named(catalog.conn.clone(), "devices", router()).unwrap(),
    );
    let (first, second) = tokio::join!(dev_a.assign(&100i64, "s0"), dev_b.assign(&200i64, "s1"),);
    first.unwrap();
    second.unwrap();
    assert_eq!(dev_a.version().await.unwrap(), 2);

    catalog.drop_db().await;
}

/// Two processes over one catalog, each with its own topology and router: shards that
/// one creates and drops, and tenants it places and moves, reach the other through
/// `refresh_catalog`.
async fn catalog_changes_reach_other_processes(backend: Backend) {
    let Some(catalog) = TestDb::for_flavor(backend, Flavor::Database).await else {
        return;
    };
    let router_a = Arc::new(DirectoryRouter::new(Vec::<ShardId>::new()));
    let directory = Directory::new(catalog.conn.clone(), router_a.clone());
    directory.install().await.unwrap();
    let a = tenancy_over(&catalog, &directory).await;
    a.create_shard::<DatabaseMigratorV1>("s0").await.unwrap();

    // Process B starts now, reading the catalog.
    let names = Shards::new(catalog.conn.clone()).names().await.unwrap();
    let router_b = Arc::new(DirectoryRouter::new(names));
    directory.for_router(router_b.clone()).load().await.unwrap();
    let b = tenancy_over(&catalog, &directory.for_router(router_b.clone())).await;
    let nothing = b.refresh_catalog().await.unwrap();
    assert_eq!(nothing, tenancy_sea::CatalogRefresh::default());

    a.create_shard::<DatabaseMigratorV1>("s1").await.unwrap();
    directory.assign(&7, "s1").await.unwrap();
    customer_with_three_orders(&a, 7, None).await;
    assert!(b.tenant(7).await.is_err(), "B has not seen tenant 7 yet");
    let seen = b.refresh_catalog().await.unwrap();
    assert_eq!(seen.added, [ShardId::new("s1")]);
    assert!(seen.directory_reloaded && seen.removed.is_empty());
    let db = b.tenant(7).await.unwrap();
    assert_eq!(db.shard().unwrap().as_str(), "s1");
    assert_eq!(db.find::<order::Entity>().all().await.unwrap().len(), 3);

    // A moves tenant 7 away and drops the emptied shard; B follows.
    a.move_tenant(7, "s0")
        .entity::<customer::Entity>()
        .entity::<order::Entity>()
        .run()
        .await
        .unwrap();
    a.drop_shard("s1", &["plans"]).await.unwrap();
    // B has not refreshed: its move of tenant 7 is refused before anything changes.
    match b
        .move_tenant(7, "s0")
        .entity::<customer::Entity>()
        .entity::<order::Entity>()
        .run()
        .await
    {
        Err(Error::StaleDirectory {
            catalog, cached, ..
        }) => assert_eq!((catalog.as_str(), cached.as_str()), ("s0", "s1")),
        other => panic!("expected StaleDirectory, got {other:?}"),
    }
    let followed = b.refresh_catalog().await.unwrap();
    assert_eq!(followed.removed, [ShardId::new("s1")]);
    assert!(followed.directory_reloaded && followed.added.is_empty());
    assert_eq!(b.topology().unwrap().shard_ids(), [ShardId::new("s0")]);
    let db = b.tenant(7).await.unwrap();
    assert_eq!(db.shard().unwrap().as_str(), "s0");
    assert_eq!(db.find::<order::Entity>().all().await.unwrap().len(), 3);
    drop((db, a, b));
    catalog.drop_db().await;
}

/// After the switch the old shard still refuses the tenant's writes (a process that has
/// not refreshed routes there), and a row that gets past the fence then (a session that
/// disables triggers) is not removed with the moved rows: the move reports it, the tenant
/// lives on its new shard, and the old shard keeps every row of it, still fenced, for the
/// operator to reconcile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_write_to_the_old_shard_is_kept_and_reported() {
    let Some((catalog, directory, tenancy)) = two_shards(Backend::Postgres).await else {
        return;
    };
    let router = directory.router().clone();
    directory.assign(&5, "s0").await.unwrap();
    customer_with_three_orders(&tenancy, 5, Some(3_000)).await;
    let stale = tenancy.tenant(5).await.unwrap();
    let s0 = tenancy
        .topology()
        .unwrap()
        .unscoped_connection(&ShardId::new("s0"))
        .unwrap();
    // A lock on one of the tenant's orders stops the move at removing the old rows, after
    // the switch.
    let blocker = sea_orm::TransactionTrait::begin(&s0).await.unwrap();
    blocker
        .execute_unprepared("SELECT id FROM orders WHERE id = 3000 FOR UPDATE")
        .await
        .unwrap();
    let moving = tenancy
        .move_tenant(5, "s1")
        .entity::<customer::Entity>()
        .entity::<order::Entity>()
        .run();
    let meanwhile = async {
        wait_for_a_lock_wait(&s0).await;
        let written = stale
            .insert(customer::ActiveModel {
                name: Set("written late".into()),
                ..Default::default()
            })
            .await;
        assert!(
            matches!(written, Err(Error::TenantMoving { .. })),
            "{written:?}"
        );
        past_the_fence(
            &s0,
            "INSERT INTO customers (id, tenant_id, name) VALUES (3999, 5, 'past the fence')",
        )
        .await;
        blocker.rollback().await.unwrap();
    };
    let (moved, ()) = tokio::join!(moving, meanwhile);
    match moved {
        Err(Error::MoveLateWrites {
            table,
            copied,
            found,
            from,
            to,
            ..
        }) => assert_eq!(
            (table, copied, found, from.as_str(), to.as_str()),
            ("customers", 1, 2, "s0", "s1")
        ),
        other => panic!("expected MoveLateWrites, got {other:?}"),
    }
    assert_eq!(router.route(&5i64).unwrap().as_str(), "s1");
    assert_eq!(
        directory.placement(&5i64).await.unwrap(),
        Some(ShardId::new("s1"))
    );
    assert_eq!(
        (
            orders_on(&tenancy, "s0", 5).await,
            orders_on(&tenancy, "s1", 5).await
        ),
        (3, 3)
    );
    let late = customer::Entity::find()
        .filter(customer::Column::TenantId.eq(5i64))
        .count(&s0)
        .await
        .unwrap();
    assert_eq!(late, 2, "the old shard keeps the late row and the rest");
    assert_eq!(fence_triggers(&s0).await, 2, "the old rows stay fenced");
    drop((stale, tenancy));
    catalog.drop_db().await;
}

/// A move whose clean-up fails (a trigger on the old shard refuses deletes) is
/// `MoveUnfinished`: the tenant lives on its new shard with every row, the old rows stay,
/// fenced, and the move's claim is kept; the same move run again after the claim's lease
/// removes them and lifts the fence (`remove_leftovers` refuses meanwhile, so as not to
/// drop the stopped move's record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_move_is_finished_by_running_it_again() {
    let Some(catalog) = TestDb::for_flavor(Backend::Postgres, Flavor::Database).await else {
        return;
    };
    let lease = std::time::Duration::from_millis(500);
    let router = Arc::new(DirectoryRouter::new(Vec::<ShardId>::new()));
    let directory = Directory::new(catalog.conn.clone(), router).with_move_lease(lease);
    directory.install().await.unwrap();
    let tenancy = tenancy_over(&catalog, &directory).await;
    for name in ["s0", "s1"] {
        tenancy
            .create_shard::<DatabaseMigratorV1>(name)
            .await
            .unwrap();
    }
    directory.assign(&6, "s0").await.unwrap();
    customer_with_three_orders(&tenancy, 6, Some(4_000)).await;
    let s0 = tenancy
        .topology()
        .unwrap()
        .unscoped_connection(&ShardId::new("s0"))
        .unwrap();
    s0.execute_unprepared(
        "CREATE FUNCTION refuse() RETURNS trigger AS $$ \
         BEGIN RAISE EXCEPTION 'deletes refused'; END $$ LANGUAGE plpgsql; \
         CREATE TRIGGER no_deletes BEFORE DELETE ON orders \
         FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .await
    .unwrap();
    let relocate = || {
        tenancy
            .move_tenant(6, "s1")
            .entity::<customer::Entity>()
            .entity::<order::Entity>()
            .run()
    };
    match relocate().await {
        Err(Error::MoveUnfinished {
            from, to, source, ..
        }) => {
            assert_eq!((from.as_str(), to.as_str()), ("s0", "s1"));
            assert!(source.to_string().contains("deletes refused"), "{source}");
        }
        other => panic!("expected MoveUnfinished, got {other:?}"),
    }
    assert_eq!(
        directory.placement(&6i64).await.unwrap(),
        Some(ShardId::new("s1"))
    );
    let db = tenancy.tenant(6).await.unwrap();
    assert_eq!(db.find::<order::Entity>().all().await.unwrap().len(), 3);
    assert_eq!(
        (
            orders_on(&tenancy, "s0", 6).await,
            orders_on(&tenancy, "s1", 6).await
        ),
        (3, 3)
    );

    assert_eq!(fence_triggers(&s0).await, 2, "the old rows stay fenced");
    let leftovers = tenancy
        .remove_leftovers(6)
        .entity::<customer::Entity>()
        .entity::<order::Entity>()
        .run()
        .await;
    assert!(
        matches!(leftovers, Err(Error::TenantMoving { .. })),
        "{leftovers:?}"
    );
    s0.execute_unprepared("DROP TRIGGER no_deletes ON orders")
        .await
        .unwrap();
    // Run again once the claim has lapsed, the move finishes the clean-up.
    tokio::time::sleep(lease * 2).await;
    let again = relocate().await.unwrap();
    assert_eq!((again.copied.len(), again.removed), (0, 4));
    assert_eq!(fence_triggers(&s0).await, 0);
    assert_eq!(
        (
            orders_on(&tenancy, "s0", 6).await,
            orders_on(&tenancy, "s1", 6).await
        ),
        (0, 3)
    );
    drop((db, tenancy));
    catalog.drop_db().await;
}

/// A placement changed in the catalog while the move copied (another process assigned
/// the tenant elsewhere) makes the switch's compare-and-set fail: the copies are removed,
/// the error names where the catalog has the tenant, and the old shard keeps every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placement_changed_during_a_move_stops_it() {
    let Some((catalog, directory, tenancy)) = two_shards(Backend::Postgres).await else {
        return;
    };
    directory.assign(&7, "s0").await.unwrap();
    customer_with_three_orders(&tenancy, 7, Some(5_000)).await;
    // Another process holds tenant 7's catalog row, and moves it to s1 by hand (no copy)
    // once the move waits for that row.
    let other = sea_orm::TransactionTrait::begin(&catalog.conn)
        .await
        .unwrap();
    other
        .execute_unprepared(
            "UPDATE tenancy_directory SET shard = 's1' \
             WHERE directory = 'tenants' AND key = '7'",
        )
        .await
        .unwrap();
    let moving = tenancy
        .move_tenant(7, "s1")
        .entity::<customer::Entity>()
        .entity::<order::Entity>()
        .run();
    let meanwhile = async {
        wait_for_a_lock_wait(&catalog.conn).await;
        other
            .execute_unprepared(
                "UPDATE tenancy_directory SET shard = 's0-archive' \
                 WHERE directory = 'tenants' AND key = '7'",
            )
            .await
            .unwrap();
        other.commit().await.unwrap();
    };
    let (moved, ()) = tokio::join!(moving, meanwhile);
    match moved {
        Err(Error::StaleDirectory {
            catalog: placed,
            cached,
            ..
        }) => assert_eq!((placed.as_str(), cached.as_str()), ("s0-archive", "s0")),
        other => panic!("expected StaleDirectory, got {other:?}"),
    }
    assert_eq!(
        (
            orders_on(&tenancy, "s0", 7).await,
            orders_on(&tenancy, "s1", 7).await
        ),
        (3, 0)
    );
    drop(tenancy);
    catalog.drop_db().await;
}

/// Waits (up to 5 s) until a statement on `conn`'s database waits for a lock.
async fn wait_for_a_lock_wait(conn: &sea_orm::DatabaseConnection) {
    let waiting = "SELECT COUNT(*) AS n FROM pg_stat_activity \
                   WHERE datname = current_database() AND wait_event_type = 'Lock'";
    for _ in 0..200 {
        let row = conn
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                waiting,
            ))
            .await
            .unwrap()
            .unwrap();
        if row.try_get::<i64>("", "n").unwrap() > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("nothing waited for a lock within 5 s");
}

/// A hash router places keys by its list of shards: adding one would move keys, so it is
/// refused before anything is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_router_refuses_new_shards() {
    let Some(catalog) = TestDb::for_flavor(Backend::Sqlite, Flavor::Database).await else {
        return;
    };
    Shards::new(catalog.conn.clone()).install().await.unwrap();
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
        Shards::new(catalog.conn.clone())
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

tenancy_tests::on_every_backend!(
    provision,
    moves,
    directory_changes_reach_other_processes,
    catalog_changes_reach_other_processes,
);

/// After `assign(t, s1)` (a placement changed without moving the rows), a move to s1 does
/// nothing and removes nothing: the rows on s0 are the tenant's only copy. Removing
/// leftovers keeps them too, since s1 does not hold them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_to_the_named_shard_never_deletes_the_only_copy() {
    for backend in [Backend::Sqlite, Backend::Postgres, Backend::MySql] {
        let Some((catalog, directory, tenancy)) = two_shards(backend).await else {
            continue;
        };
        directory.assign(&8, "s0").await.unwrap();
        customer_with_three_orders(&tenancy, 8, Some(8_000)).await;
        directory.assign(&8, "s1").await.unwrap();
        let report = tenancy
            .move_tenant(8, "s1")
            .entity::<customer::Entity>()
            .entity::<order::Entity>()
            .run()
            .await
            .unwrap();
        assert_eq!((report.copied.len(), report.removed), (0, 0));
        assert_eq!(orders_on(&tenancy, "s0", 8).await, 3, "{backend:?}");
        let leftovers = tenancy
            .remove_leftovers(8)
            .entity::<customer::Entity>()
            .entity::<order::Entity>()
            .run()
            .await
            .unwrap();
        assert!(leftovers.removed.is_empty());
        assert_eq!(
            leftovers.kept,
            [
                (ShardId::new("s0"), "orders", 3),
                (ShardId::new("s0"), "customers", 1)
            ]
        );
        assert_eq!(orders_on(&tenancy, "s0", 8).await, 3);
        drop(tenancy);
        catalog.drop_db().await;
    }
}

/// A move whose future is dropped (a timeout, mid-copy) keeps its claim only for its
/// lease: meanwhile a second move is refused, after it the next move takes the claim over
/// and runs. A move that runs longer than its lease keeps its claim by renewing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_move_keeps_its_claim_only_for_its_lease() {
    use sea_orm::TransactionTrait;
    use std::time::Duration;
    let Some((catalog, directory, tenancy)) = two_shards(Backend::Postgres).await else {
        return;
    };
    // The lease is the directory's: the tenancy is rebuilt over a directory with a short one.
    drop(tenancy);
    let directory = directory.with_move_lease(Duration::from_millis(900));
    let tenancy = tenancy_over(&catalog, &directory).await;
    directory.assign(&7, "s0").await.unwrap();
    customer_with_three_orders(&tenancy, 7, Some(7_000)).await;
    let shard = |name: &str| {
        tenancy
            .topology()
            .unwrap()
            .unscoped_connection(&ShardId::new(name))
            .unwrap()
    };
    let relocate = |to: &'static str| {
        tenancy
            .move_tenant(7, to)
            .entity::<customer::Entity>()
            .entity::<order::Entity>()
            .run()
    };

    // The copy waits on a lock; the caller gives up after 300 ms.
    let locker = shard("s0").begin().await.unwrap();
    locker
        .execute_unprepared("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), relocate("s1"))
            .await
            .is_err()
    );
    locker.rollback().await.unwrap();
    match relocate("s1").await {
        Err(Error::TenantMoving { tenant }) => assert_eq!(tenant, "7"),
        other => panic!("expected TenantMoving while the claim is live, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let moved = relocate("s1").await.unwrap();
    assert_eq!(moved.to, ShardId::new("s1"));
    assert_eq!(orders_on(&tenancy, "s1", 7).await, 3);
    assert_eq!(orders_on(&tenancy, "s0", 7).await, 0);

    // A move held for 2.5 s (almost three leases) keeps its claim throughout.
    let locker = shard("s1").begin().await.unwrap();
    locker
        .execute_unprepared("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let held = async {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let second = relocate("s0").await;
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        locker.rollback().await.unwrap();
        second
    };
    let (first, second) = tokio::join!(relocate("s0"), held);
    assert!(
        matches!(second, Err(Error::TenantMoving { .. })),
        "the claim lapsed while its move ran: {second:?}"
    );
    assert_eq!(first.unwrap().to, ShardId::new("s0"));
    assert_eq!(orders_on(&tenancy, "s0", 7).await, 3);
    drop(tenancy);
    catalog.drop_db().await;
}

/// `drop_shard` checks the catalog, not only this process's cache, in the transaction that
/// retires the shard: a key another process placed on it refuses the drop; after the
/// drop, a process whose cache still has the shard cannot place a key on it; and a
/// directory row that names an unknown shard is skipped and reported by `load`, which
/// loads the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_shard_never_races_a_placement() {
    for backend in [Backend::Sqlite, Backend::Postgres, Backend::MySql] {
        let Some((catalog, directory, tenancy)) = two_shards(backend).await else {
            continue;
        };
        let router = directory.router().clone();
        // Process B, whose router knows both shards.
        let shards = Shards::new(catalog.conn.clone());
        let router_b = Arc::new(DirectoryRouter::new(shards.names().await.unwrap()));
        directory.for_router(router_b.clone()).load().await.unwrap();
        let _b = tenancy_over(&catalog, &directory.for_router(router_b.clone())).await;

        // B places tenant 9 on s1; A's cache does not know it.
        directory
            .for_router(router_b.clone())
            .assign(&9, "s1")
            .await
            .unwrap();
        match tenancy.drop_shard("s1", &["plans"]).await {
            Err(Error::ShardNotEmpty { shard, reason }) => {
                assert_eq!(shard, "s1");
                assert!(reason.contains("1 key(s)"), "{reason}");
            }
            other => panic!("{backend:?}: expected ShardNotEmpty, got {other:?}"),
        }
        assert!(shards.names().await.unwrap().contains(&ShardId::new("s1")));
        assert!(
            router.shards().contains(&ShardId::new("s1")),
            "A put s1 back"
        );

        // Once no key is on it, the drop goes through; B's stale cache cannot use it.
        directory
            .for_router(router_b.clone())
            .remove(&9)
            .await
            .unwrap();
        tenancy.drop_shard("s1", &["plans"]).await.unwrap();
        assert_eq!(shards.names().await.unwrap(), [ShardId::new("s0")]);
        match directory
            .for_router(router_b.clone())
            .assign(&10, "s1")
            .await
        {
            Err(Error::Routing(RoutingError::UnknownShard(shard))) => assert_eq!(shard, "s1"),
            other => panic!("{backend:?}: expected UnknownShard, got {other:?}"),
        }
        assert_eq!(
            directory
                .for_router(router_b.clone())
                .place(&11)
                .await
                .unwrap(),
            ShardId::new("s0")
        );
        assert_eq!(directory.placement(&10).await.unwrap(), None);

        // A row naming a shard no process has (written by hand, or by an older version)
        // is skipped and reported; the rest loads.
        tenancy_sea::directory_entry::Entity::insert(tenancy_sea::directory_entry::ActiveModel {
            directory: Set("tenants".into()),
            key: Set("12".into()),
            shard: Set("s9".into()),
        })
        .exec_without_returning(&catalog.conn)
        .await
        .unwrap();
        let fresh = Arc::new(DirectoryRouter::new(shards.names().await.unwrap()));
        let load = directory.for_router(fresh.clone()).load().await.unwrap();
        assert_eq!(load.loaded, 1, "{backend:?}: {load:?}");
        assert_eq!(
            load.skipped,
            [tenancy_sea::SkippedEntry {
                entry: "12".into(),
                shard: ShardId::new("s9"),
                reason: tenancy_sea::SkipReason::UnknownShard,
            }]
        );
        assert_eq!(fresh.route(&11).unwrap(), ShardId::new("s0"));
        // A shard's name can be used again after its drop.
        tenancy
            .create_shard::<DatabaseMigratorV1>("s1")
            .await
            .unwrap();
        drop(tenancy);
        catalog.drop_db().await;
    }
}

/// One registered shard that cannot be reached (a role that may not log in; an address
/// that does not answer) stops nothing: a process starts with the healthy shards, tenants
/// of the bad one are refused at once with `ShardUnavailable`, directory changes still
/// reach the process, and a later refresh puts the shard back once it can be reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_unreachable_shard_does_not_stop_the_fleet() {
    use std::time::{Duration, Instant};
    let Some((catalog, directory, tenancy)) = two_shards(Backend::Postgres).await else {
        return;
    };
    let role = catalog.create_dba_role().await;
    catalog
        .conn
        .execute_unprepared(&format!("ALTER ROLE {role} NOLOGIN"))
        .await
        .unwrap();
    let mut locked_out = url::Url::parse(catalog.url.as_deref().unwrap()).unwrap();
    locked_out.set_username(&role).unwrap();
    let shards = Shards::new(catalog.conn.clone()).with_connect_timeout(Duration::from_secs(1));
    shards
        .register(&ShardId::new("s2"), locked_out.as_str(), ShardState::Active)
        .await
        .unwrap();
    shards
        .register(
            &ShardId::new("s3"),
            "postgres://postgres@10.255.255.1:5432/nowhere",
            ShardState::Active,
        )
        .await
        .unwrap();

    // Process B starts while s2 and s3 cannot be reached.
    let started = Instant::now();
    let router_b = Arc::new(DirectoryRouter::new(shards.names().await.unwrap()));
    let topology = shards.topology(router_b.clone(), 2).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let down: Vec<ShardId> = topology
        .unavailable_shards()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(down, [ShardId::new("s2"), ShardId::new("s3")]);
    let b = Tenancy::<i64>::builder(catalog.conn.clone())
        .sharded(topology)
        .directory(directory.for_router(router_b.clone()))
        .build()
        .unwrap();
    directory
        .for_router(router_b.clone())
        .assign(&20, "s0")
        .await
        .unwrap();
    directory
        .for_router(router_b.clone())
        .assign(&21, "s2")
        .await
        .unwrap();
    customer_with_three_orders(&b, 20, Some(20_000)).await;
    let refused = Instant::now();
    match b.tenant(21).await {
        Err(Error::ShardUnavailable { shard, .. }) => assert_eq!(shard, "s2"),
        other => panic!("expected ShardUnavailable, got {other:?}"),
    }
    assert!(refused.elapsed() < Duration::from_millis(200));
    let partial = b
        .unscoped_across_shards()
        .unwrap()
        .find::<order::Entity>()
        .all_or_partial()
        .await
        .unwrap();
    assert_eq!(partial.rows.len(), 3);
    assert!(
        partial
            .missing
            .iter()
            .any(|(shard, _)| shard.as_str() == "s3")
    );

    // A directory change made by process A reaches B although s2 and s3 are down.
    directory.assign(&22, "s1").await.unwrap();
    let refresh = b.refresh_catalog().await.unwrap();
    assert!(refresh.directory_reloaded);
    assert_eq!(
        refresh.unavailable,
        [ShardId::new("s2"), ShardId::new("s3")]
    );
    assert_eq!(router_b.route(&22).unwrap(), ShardId::new("s1"));

    // s2 can be reached again: the next refresh puts it back.
    catalog
        .conn
        .execute_unprepared(&format!("ALTER ROLE {role} LOGIN"))
        .await
        .unwrap();
    let refresh = b.refresh_catalog().await.unwrap();
    assert_eq!(refresh.reconnected, [ShardId::new("s2")]);
    assert_eq!(refresh.unavailable, [ShardId::new("s3")]);
    b.tenant(21).await.unwrap();
    drop((b, tenancy));
    catalog.drop_db().await;
}

/// A move compares the old shard's rows with their copies by content before switching:
/// an update during the copy through a handle is refused by the fence, and one that gets
/// past it (a session that disables triggers) abandons the move, where a count would have
/// seen nothing; the tenant stays on its old shard with the updated row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_during_a_move_is_never_lost() {
    let Some((catalog, directory, tenancy)) = two_shards(Backend::Postgres).await else {
        return;
    };
    directory.assign(&15, "s0").await.unwrap();
    customer_with_three_orders(&tenancy, 15, Some(15_000)).await;
    let stale = tenancy.tenant(15).await.unwrap();
    let s0 = tenancy
        .topology()
        .unwrap()
        .unscoped_connection(&ShardId::new("s0"))
        .unwrap();
    let s1 = tenancy
        .topology()
        .unwrap()
        .unscoped_connection(&ShardId::new("s1"))
        .unwrap();
    // The copy waits at inserting the tenant's customer on s1.
    let blocker = sea_orm::TransactionTrait::begin(&s1).await.unwrap();
    blocker
        .execute_unprepared("INSERT INTO customers (id, tenant_id, name) VALUES (15000, 99, 'x')")
        .await
        .unwrap();
    let moving = tenancy
        .move_tenant(15, "s1")
        .entity::<customer::Entity>()
        .entity::<order::Entity>()
        .run();
    let meanwhile = async {
        wait_for_a_lock_wait(&s1).await;
        let renamed = stale
            .update_many::<customer::Entity>()
            .col_expr(
                customer::Column::Name,
                sea_orm::sea_query::Expr::value("renamed late"),
            )
            .exec()
            .await;
        assert!(
            matches!(renamed, Err(Error::TenantMoving { .. })),
            "{renamed:?}"
        );
        past_the_fence(
            &s0,
            "UPDATE customers SET name = 'renamed past the fence' WHERE tenant_id = 15",
        )
        .await;
        blocker.rollback().await.unwrap();
    };
    let (moved, ()) = tokio::join!(moving, meanwhile);
    match moved {
        Err(Error::MoveConflict {
            table, copied, now, ..
        }) => {
            assert_eq!((table, copied, now), ("customers", 1, 1));
        }
        other => panic!("expected MoveConflict, got {other:?}"),
    }
    let kept = customer::Entity::find()
        .filter(customer::Column::TenantId.eq(15i64))
        .one(&s0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.name, "renamed past the fence");
    assert_eq!(orders_on(&tenancy, "s0", 15).await, 3);
    assert_eq!(orders_on(&tenancy, "s1", 15).await, 0);
    assert_eq!(fence_triggers(&s0).await, 0);
    drop((stale, tenancy));
    catalog.drop_db().await;
}

/// A move never deletes rows on its destination that the source does not hold identically
/// (here a row written there by hand): it stops before changing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_never_deletes_unverified_rows_on_its_destination() {
    for backend in [Backend::Sqlite, Backend::Postgres, Backend::MySql] {
        let Some((catalog, directory, tenancy)) = two_shards(backend).await else {
            continue;
        };
        directory.assign(&16, "s0").await.unwrap();
        customer_with_three_orders(&tenancy, 16, Some(16_000)).await;
        let s1 = tenancy
            .topology()
            .unwrap()
            .unscoped_connection(&ShardId::new("s1"))
            .unwrap();
        customer::Entity::insert(customer::ActiveModel {
            id: Set(16_900),
            tenant_id: Set(16),
            name: Set("only here".into()),
            ..Default::default()
        })
        .exec(&s1)
        .await
        .unwrap();
        match tenancy
            .move_tenant(16, "s1")
            .entity::<customer::Entity>()
            .entity::<order::Entity>()
            .run()
            .await
        {
            Err(Error::MoveDestinationNotEmpty { table, rows, .. }) => {
                assert_eq!((table, rows), ("customers", 1), "{backend:?}");
            }
            other => panic!("{backend:?}: expected MoveDestinationNotEmpty, got {other:?}"),
        }
        assert_eq!(
            directory.placement(&16).await.unwrap(),
            Some(ShardId::new("s0"))
        );
        let kept = customer::Entity::find()
            .filter(customer::Column::TenantId.eq(16i64))
            .count(&s1)
            .await
            .unwrap();
        assert_eq!(
            kept, 1,
            "{backend:?}: the destination's own row was deleted"
        );
        assert_eq!(orders_on(&tenancy, "s0", 16).await, 3);
        drop(tenancy);
        catalog.drop_db().await;
    }
}

/// A move whose claim is gone by the time it switches (an operator released it, or it
/// lapsed and was taken over) switches nothing and removes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_that_lost_its_claim_switches_nothing() {
    use sea_orm::TransactionTrait;
    let Some((catalog, directory, tenancy)) = two_shards(Backend::Postgres).await else {
        return;
    };
    let router = directory.router().clone();
    directory.assign(&17, "s0").await.unwrap();
    customer_with_three_orders(&tenancy, 17, Some(17_000)).await;
    let s0 = tenancy
        .topology()
        .unwrap()
        .unscoped_connection(&ShardId::new("s0"))
        .unwrap();
    let blocker = s0.begin().await.unwrap();
    blocker
        .execute_unprepared("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let moving = tenancy
        .move_tenant(17, "s1")
        .entity::<customer::Entity>()
        .entity::<order::Entity>()
        .run();
    let meanwhile = async {
        wait_for_a_lock_wait(&s0).await;
        directory.release_move(&17).await.unwrap();
        blocker.rollback().await.unwrap();
    };
    let (moved, ()) = tokio::join!(moving, meanwhile);
    assert!(
        matches!(moved, Err(Error::TenantMoving { .. })),
        "{moved:?}"
    );
    assert_eq!(
        directory.placement(&17).await.unwrap(),
        Some(ShardId::new("s0"))
    );
    assert_eq!(router.route(&17i64).unwrap().as_str(), "s0");
    assert_eq!(orders_on(&tenancy, "s0", 17).await, 3);
    drop(tenancy);
    catalog.drop_db().await;
}
