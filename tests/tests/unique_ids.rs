//! Ids unique across shards and processes (`UniqueIds`, `#[unique_id]`): several processes
//! inserting at once, giving their nodes back and idling past their leases, never make one
//! id twice; a node taken over from a process that goes on issuing shares no id with its
//! new holder; a tenant moved between shards keeps its ids and collides with nothing on the
//! destination; and the id clock's rule holds for any order of times and holders.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a panic

use proptest::prelude::*;
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DatabaseConnection, EntityTrait, PaginatorTrait,
    QueryFilter, Schema,
};
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tenancy_sea::UniqueIdError;
use tenancy_sea::catalog::{Directory, Shards, UniqueIds, id_node_entry};
use tenancy_sea::{DirectoryRouter, Error, IdClock, ShardId, Tenancy, UniqueIdParts};
use tenancy_tests::entities::ticket;
use tenancy_tests::migration::DatabaseMigratorV1;
use tenancy_tests::{Backend, Flavor, TestDb};

const LEASE: Duration = Duration::from_millis(1_000);

async fn make_tickets(conn: &DatabaseConnection) {
    let backend = conn.get_database_backend();
    let schema = Schema::new(backend);
    conn.execute(&schema.create_table_from_entity(ticket::Entity))
        .await
        .unwrap();
}

fn ticket(title: &str) -> ticket::ActiveModel {
    ticket::ActiveModel {
        title: Set(title.to_owned()),
        ..Default::default()
    }
}

async fn ids_in(conn: &DatabaseConnection) -> Vec<i64> {
    ticket::Entity::find()
        .all(conn)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect()
}

/// Four processes insert 2,000 tickets each into one table at once, their ids from
/// generators of their own over one catalog: each gives its node back every 500 rows, two
/// idle past their lease midway (their nodes free to take). Every insert succeeds (the key
/// would refuse a repeated id), all 8,000 ids differ, and they came from several nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_inserting_at_once_never_make_an_id_twice() {
    let Some(catalog) = TestDb::for_flavor(Backend::Postgres, Flavor::Database).await else {
        return;
    };
    UniqueIds::new(catalog.conn.clone())
        .install()
        .await
        .unwrap();
    make_tickets(&catalog.conn).await;
    let url = catalog.url.clone().unwrap();
    let children: Vec<_> = (0..4)
        .map(|n| {
            Command::new(env!("CARGO_BIN_EXE_mover"))
                .args([
                    "ids",
                    &(n + 1).to_string(),
                    "2000",
                    if n % 2 == 0 { "pause" } else { "run" },
                ])
                .env("TENANCY_MOVE_CATALOG", &url)
                .env("TENANCY_MOVE_LEASE_MS", LEASE.as_millis().to_string())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut nodes = BTreeSet::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "a process failed: {output:?}");
        let text = String::from_utf8(output.stdout).unwrap();
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("NODES "))
            .unwrap_or_else(|| panic!("no NODES in {text}"));
        nodes.extend(line.split(',').map(str::to_owned));
    }
    let ids = ids_in(&catalog.conn).await;
    assert_eq!(ids.len(), 8_000);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 8_000);
    assert!(
        nodes.len() >= 2,
        "the processes held nodes of their own: {nodes:?}"
    );
    for tenant in 1..=4i64 {
        let rows = ticket::Entity::find()
            .filter(sea_orm::ColumnTrait::eq(&ticket::Column::TenantId, tenant))
            .count(&catalog.conn)
            .await
            .unwrap();
        assert_eq!(rows, 2_000, "tenant {tenant}");
    }
    catalog.drop_db().await;
}

/// A process whose lease ran out while it was paused goes on issuing from what it had
/// recorded; the process that took its node over starts above that, so the two share no
/// id; the first learns at its next renewal that the node is gone and claims another.
async fn a_taken_over_node_shares_no_id(backend: Backend) {
    let Some(catalog) = TestDb::for_flavor(backend, Flavor::Database).await else {
        return;
    };
    let first = UniqueIds::new(catalog.conn.clone()).with_lease(LEASE);
    first.install().await.unwrap();
    let early = first.take(100).await.unwrap();
    let node = first.node().unwrap();
    // Its lease runs out (as if paused past it): another process takes the node.
    id_node_entry::Entity::update_many()
        .col_expr(id_node_entry::Column::ExpiresAt, 0i64.into())
        .exec(&catalog.conn)
        .await
        .unwrap();
    let second = UniqueIds::new(catalog.conn.clone()).with_lease(LEASE);
    let theirs = second.take(100).await.unwrap();
    assert_eq!(second.node(), Some(node), "the lapsed node is taken first");
    // The first goes on from its clock before its renewal is due.
    let late = first.take(100).await.unwrap();
    assert_eq!(first.node(), Some(node));
    let mine: BTreeSet<i64> = early.iter().chain(&late).copied().collect();
    assert_eq!(mine.len(), 200);
    let theirs: BTreeSet<i64> = theirs.into_iter().collect();
    assert!(mine.is_disjoint(&theirs));
    assert!(
        mine.last() < theirs.first(),
        "the new holder starts above the old one's ceiling"
    );
    // At its next renewal the first finds the node taken (the id it issued on the way
    // was still below its own ceiling), and its next id comes from another node.
    tokio::time::sleep(LEASE / 2 + Duration::from_millis(100)).await;
    let last_old = first.next_id().await.unwrap();
    assert_eq!(
        first.node(),
        None,
        "the lost node is dropped at the renewal"
    );
    let after = first.next_id().await.unwrap();
    assert_ne!(first.node(), Some(node));
    assert_eq!(UniqueIdParts::of(after).node, first.node().unwrap());
    for id in [last_old, after] {
        assert!(!theirs.contains(&id) && !mine.contains(&id));
    }
    assert!(last_old < *theirs.first().unwrap());
    // Given back, a node is free at once, its ceiling kept.
    first.release().await.unwrap();
    let third = UniqueIds::new(catalog.conn.clone());
    let next = third.next_id().await.unwrap();
    assert_eq!(third.node(), UniqueIdParts::of(after).node.into());
    assert!(next > after);
    catalog.drop_db().await;
}

/// With the catalog out of reach (its table renamed away), ids go on below the recorded
/// ceiling, the failed renewal only logged; past the ceiling a call is an error; with the
/// catalog back, ids go on, every one different.
async fn ids_go_on_below_the_ceiling_while_the_catalog_is_away(backend: Backend) {
    let Some(catalog) = TestDb::for_flavor(backend, Flavor::Database).await else {
        return;
    };
    let ids = UniqueIds::new(catalog.conn.clone()).with_lease(LEASE);
    ids.install().await.unwrap();
    let mut all = ids.take(10).await.unwrap();
    let rename = |from: &str, to: &str| format!("ALTER TABLE {from} RENAME TO {to}");
    catalog
        .conn
        .execute_unprepared(&rename("tenancy_id_nodes", "tenancy_id_nodes_away"))
        .await
        .unwrap();
    // The renewal is due (half a lease on): it fails, the ids come anyway.
    tokio::time::sleep(LEASE / 2 + Duration::from_millis(100)).await;
    all.extend(ids.take(10).await.unwrap());
    // Past the ceiling (a lease after the last renewal): refused.
    tokio::time::sleep(LEASE).await;
    assert!(ids.take(1).await.is_err());
    catalog
        .conn
        .execute_unprepared(&rename("tenancy_id_nodes_away", "tenancy_id_nodes"))
        .await
        .unwrap();
    all.extend(ids.take(10).await.unwrap());
    assert_eq!(all.len(), 30);
    assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), 30);
    assert!(all.windows(2).all(|w| w[0] < w[1]));
    catalog.drop_db().await;
}

/// An insert fills an unset `#[unique_id]` key and keeps a set one; without a generator
/// the unset key is a typed error and nothing is written.
#[tokio::test]
async fn inserts_fill_unset_unique_ids_only_where_a_generator_is_given() {
    let Some(db) = TestDb::for_flavor(Backend::Sqlite, Flavor::Database).await else {
        return;
    };
    make_tickets(&db.conn).await;
    let without: Tenancy<i64> = Tenancy::builder(db.conn.clone()).build().unwrap();
    let handle = without.tenant(1).await.unwrap();
    let refused = handle.insert(ticket("no id")).await.unwrap_err();
    assert!(
        matches!(
            refused,
            Error::UniqueId(UniqueIdError::NotConfigured { table: "tickets" })
        ),
        "{refused:?}"
    );
    assert!(
        handle
            .insert_many([ticket("a"), ticket("b")])
            .await
            .is_err()
    );
    assert!(ids_in(&db.conn).await.is_empty());
    let given = handle
        .insert(ticket::ActiveModel {
            id: Set(42),
            title: Set("given".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(given.id, 42);

    let ids = UniqueIds::new(db.conn.clone());
    ids.install().await.unwrap();
    let with: Tenancy<i64> = Tenancy::builder(db.conn.clone())
        .unique_ids(ids.clone())
        .build()
        .unwrap();
    let handle = with.tenant(1).await.unwrap();
    let one = handle.insert(ticket("filled")).await.unwrap();
    assert_eq!(Some(UniqueIdParts::of(one.id).node), ids.node());
    let kept = handle
        .insert(ticket::ActiveModel {
            id: Set(43),
            title: Set("kept".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(kept.id, 43);
    let inside = handle.begin().await.unwrap();
    inside
        .insert_many((0..50).map(|n| ticket(&format!("many {n}"))))
        .await
        .unwrap();
    inside.commit().await.unwrap();
    let all = ids_in(&db.conn).await;
    assert_eq!(all.len(), 53);
    assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), 53);
    db.drop_db().await;
}

/// Two processes write their tenants' tickets on two shards, ids from generators of their
/// own; a tenant moved onto the other's shard keeps its ids and collides with none there,
/// and both go on inserting afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_tenants_ids_collide_with_nothing_on_the_destination() {
    let Some(catalog) = TestDb::for_flavor(Backend::Postgres, Flavor::Database).await else {
        return;
    };
    let router = Arc::new(DirectoryRouter::new(Vec::<ShardId>::new()));
    let directory = Directory::new(catalog.conn.clone(), router.clone());
    directory.install().await.unwrap();
    UniqueIds::new(catalog.conn.clone())
        .install()
        .await
        .unwrap();
    let process = async |directory: &Directory<i64>| {
        tenancy_tests::sharded_over(&catalog, directory)
            .await
            .unique_ids(UniqueIds::new(catalog.conn.clone()))
            .build()
            .unwrap()
    };
    let one = process(&directory).await;
    for name in ["s0", "s1"] {
        one.create_shard::<DatabaseMigratorV1>(name).await.unwrap();
        let shard = one
            .topology()
            .unwrap()
            .unscoped_connection(&ShardId::new(name))
            .unwrap();
        make_tickets(&shard).await;
    }
    directory.assign(&1, "s0").await.unwrap();
    directory.assign(&2, "s1").await.unwrap();
    let names = Shards::new(catalog.conn.clone()).names().await.unwrap();
    let theirs = directory.for_router(Arc::new(DirectoryRouter::new(names)));
    theirs.load().await.unwrap();
    let two = process(&theirs).await;
    let write = async |tenancy: &Tenancy<i64>, tenant: i64, rows: usize| {
        let db = tenancy.tenant(tenant).await.unwrap();
        db.insert_many((0..rows).map(|n| ticket(&format!("{tenant}/{n}"))))
            .await
            .unwrap();
    };
    tokio::join!(write(&one, 1, 500), write(&two, 2, 500));
    one.move_tenant(1, "s1")
        .entity::<ticket::Entity>()
        .run()
        .await
        .unwrap();
    theirs.refresh().await.unwrap();
    tokio::join!(write(&one, 1, 100), write(&two, 2, 100));
    let s1 = one
        .topology()
        .unwrap()
        .unscoped_connection(&ShardId::new("s1"))
        .unwrap();
    let ids = ids_in(&s1).await;
    assert_eq!(ids.len(), 1_200);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 1_200);
    drop((one, two));
    catalog.drop_db().await;
}

/// One id clock's op: issue at a time (which may go back), raise the ceiling (recorded
/// first), or hand the node to a new holder that starts above the recorded ceiling while
/// the old one goes on issuing up to its own.
#[derive(Debug, Clone)]
enum Op {
    Issue { holder: usize, now: u64 },
    Raise { holder: usize, ahead: u64 },
    TakeOver,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4usize, 0..40u64).prop_map(|(holder, now)| Op::Issue { holder, now }),
        2 => (0..4usize, 0..6u64).prop_map(|(holder, ahead)| Op::Raise { holder, ahead }),
        1 => Just(Op::TakeOver),
    ]
}

proptest! {
    /// Whatever the times (back and forth), bursts, ceilings and takeovers: no id twice
    /// across every holder of a node and a second node, and each holder's ids ascend.
    #[test]
    fn no_order_of_times_and_holders_makes_an_id_twice(ops in prop::collection::vec(op(), 1..400)) {
        // The node's row: its recorded ceiling. Holders of node 5 in turn, and node 6.
        let mut recorded = 0u64;
        let mut holders = vec![IdClock::new(5, recorded).unwrap(), IdClock::new(6, 0).unwrap()];
        let mut seen = BTreeSet::new();
        let mut last = vec![None::<i64>; 2];
        for op in ops {
            match op {
                Op::Issue { holder, now } => {
                    let at = holder % holders.len();
                    for _ in 0..3 {
                        if let Ok(id) = holders[at].next_id(now) {
                            prop_assert!(seen.insert(id), "id {} twice", id);
                            prop_assert!(last[at].is_none_or(|l| id > l));
                            last[at] = Some(id);
                        }
                    }
                }
                Op::Raise { holder, ahead } => {
                    let at = holder % holders.len();
                    let ceiling = holders[at].next_millis(0) + ahead;
                    // Only node 5's current holder records (the row names its owner);
                    // its earlier holders' renewals fail, so they raise nothing.
                    let current = if holders.len() > 2 { holders.len() - 1 } else { 0 };
                    if holders[at].node() == 6 {
                        holders[at].raise_ceiling(ceiling);
                    } else if at == current {
                        recorded = recorded.max(ceiling);
                        holders[at].raise_ceiling(ceiling);
                    }
                }
                Op::TakeOver => {
                    // The current holder of node 5 keeps its clock (it may still issue up
                    // to what it recorded); the new one starts above the record.
                    holders.push(IdClock::new(5, recorded).unwrap());
                    last.push(None);
                }
            }
        }
    }
}

tenancy_tests::on_every_backend!(
    a_taken_over_node_shares_no_id,
    ids_go_on_below_the_ceiling_while_the_catalog_is_away,
);
