//! The catalog's directory keeps its router, the tenancy keeps its directory, and the
//! earlier names still build: a directory over another router than the topology's is
//! refused when the tenancy is built, operations that need a directory say so when there
//! is none, and code written against the deprecated names compiles (with warnings).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a panic

use sea_orm::{Database, DatabaseConnection};
use std::sync::Arc;
use tenancy_sea::catalog::Directory;
use tenancy_sea::{DirectoryRouter, Error, HashRouter, ShardId, Tenancy, Topology};
use tenancy_tests::entities::{event, order};

async fn memory() -> DatabaseConnection {
    Database::connect("sqlite::memory:").await.unwrap()
}

async fn shards() -> Vec<(ShardId, DatabaseConnection)> {
    vec![
        (ShardId::new("s0"), memory().await),
        (ShardId::new("s1"), memory().await),
    ]
}

fn router() -> Arc<DirectoryRouter<i64>> {
    Arc::new(DirectoryRouter::new(["s0", "s1"]))
}

fn refused(built: tenancy_sea::Result<Tenancy<i64>>) -> String {
    match built {
        Err(Error::Config(message)) => message,
        Err(other) => panic!("expected a Config error, got {other:?}"),
        Ok(_) => panic!("expected a Config error, the tenancy was built"),
    }
}

/// The builder takes a directory only when the topology routes by the directory's own
/// router: the same `Arc`, not an equal router, and not a shared placement.
#[tokio::test]
async fn a_directory_must_keep_the_router_the_topology_routes_by() {
    let catalog = memory().await;
    let kept = router();
    let directory = Directory::new(catalog.clone(), kept.clone());

    let same = Tenancy::<i64>::builder(catalog.clone())
        .sharded(Topology::new(kept.clone(), shards().await).unwrap())
        .directory(directory.clone())
        .build()
        .unwrap();
    assert!(Arc::ptr_eq(same.directory().unwrap().router(), &kept));

    // An equal router (same shards, same entries) is still another router: a move
    // through the directory would switch a router no handle reads.
    let other = Topology::new(router(), shards().await).unwrap();
    let message = refused(
        Tenancy::builder(catalog.clone())
            .sharded(other)
            .directory(directory.clone())
            .build(),
    );
    assert!(message.contains("directory.router()"), "{message}");

    // A hash-routed topology has no directory router at all.
    let hashed = Topology::new(HashRouter::new(["s0", "s1"]), shards().await).unwrap();
    refused(
        Tenancy::builder(catalog.clone())
            .sharded(hashed)
            .directory(directory.clone())
            .build(),
    );

    // Nor does one shared database.
    refused(
        Tenancy::builder(catalog.clone())
            .directory(directory.clone())
            .build(),
    );

    // A directory made for another router of the same catalog is accepted when it is
    // the topology's: `for_router` is another process's view of the same directory.
    let restarted = router();
    let view = directory.for_router(restarted.clone());
    assert_eq!(view.name(), directory.name());
    Tenancy::<i64>::builder(catalog)
        .sharded(Topology::new(restarted, shards().await).unwrap())
        .directory(view)
        .build()
        .unwrap();
}

/// A move, a catalog refresh and a leftover removal need the directory that places the
/// tenants; without one they are a `Config` error that says how to give it, and nothing
/// is read or written.
#[tokio::test]
async fn operations_that_need_a_directory_say_so_without_one() {
    let catalog = memory().await;
    let tenancy = Tenancy::<i64>::builder(catalog)
        .sharded(Topology::new(HashRouter::new(["s0", "s1"]), shards().await).unwrap())
        .build()
        .unwrap();
    assert!(tenancy.directory().is_none());
    let expect_config = |outcome: Result<(), Error>, what: &str| match outcome {
        Err(Error::Config(message)) => {
            assert!(message.contains(what), "{message}");
            assert!(message.contains(".directory("), "{message}");
        }
        other => panic!("expected a Config error for {what}, got {other:?}"),
    };
    expect_config(
        tenancy
            .move_tenant(1, "s1")
            .entity::<order::Entity>()
            .run()
            .await
            .map(drop),
        "moving a tenant",
    );
    expect_config(
        tenancy.refresh_catalog().await.map(drop),
        "refreshing the catalog",
    );
    expect_config(
        tenancy
            .remove_leftovers(1)
            .entity::<order::Entity>()
            .run()
            .await
            .map(drop),
        "removing leftovers",
    );
}

/// Code written against the earlier names still builds: each is a deprecated alias of
/// its successor (the warnings are allowed here, and name the new name).
#[tokio::test]
#[allow(deprecated)]
async fn the_earlier_names_still_build() {
    fn tenant_of<T: tenancy_sea::TenantKey>(db: &tenancy_sea::TenantDb<T>) -> String {
        db.tenant_id().to_string()
    }
    fn keyed<E: tenancy_sea::KeySharded>() -> &'static str {
        std::any::type_name::<E>()
    }
    let conn = memory().await;
    let registry = tenancy_sea::CatalogRegistry::new(conn.clone());
    registry.install().await.unwrap();
    let shards: tenancy_sea::ShardCatalog = tenancy_sea::ShardCatalog::new(conn.clone());
    shards.install().await.unwrap();
    assert!(shards.names().await.unwrap().is_empty());
    let tenancy = Tenancy::<i64>::builder(conn).build().unwrap();
    assert_eq!(tenant_of(&tenancy.tenant(7).await.unwrap()), "7");
    assert!(keyed::<event::Entity>().contains("event"));
    let _: Option<tenancy_sea::KeyedDb<'_, i64, event::Entity>> = None;
}
