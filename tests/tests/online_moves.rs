//! Online moves on PostgreSQL shards: the old shard's database refuses the moving tenant's
//! writes from every process (its fence), the move survives its process being killed at
//! every stage (another process finishes or undoes it), and writers in other processes
//! lose nothing while a tenant moves under them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a panic

use sea_orm::ColumnTrait;
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait, QueryFilter,
    Statement,
};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tenancy_sea::catalog::{Directory, Refreshed, Shards};
use tenancy_sea::{DirectoryRouter, Error, ShardId, ShardRouter, Tenancy};
use tenancy_tests::entities::{customer, order};
use tenancy_tests::migration::DatabaseMigratorV1;
use tenancy_tests::{Backend, Flavor, TestDb};

/// The lease of move claims in these tests: a stopped move is taken over this soon.
const LEASE: Duration = Duration::from_millis(1_000);

/// A catalog on `backend` with shards `s0` and `s1` made through it; tenants 1 (which
/// moves) and 2 (which stays) on `s0`, each with a customer and three orders of ids of
/// their own.
async fn fleet(backend: Backend) -> Option<(TestDb, Directory<i64>, Tenancy<i64>)> {
    let catalog = TestDb::for_flavor(backend, Flavor::Database).await?;
    let router = Arc::new(DirectoryRouter::new(Vec::<ShardId>::new()));
    let directory = Directory::new(catalog.conn.clone(), router.clone()).with_move_lease(LEASE);
    directory.install().await.unwrap();
    let tenancy = over(&catalog, &directory).await;
    for name in ["s0", "s1"] {
        tenancy
            .create_shard::<DatabaseMigratorV1>(name)
            .await
            .unwrap();
    }
    for tenant in [1, 2] {
        directory.assign(&tenant, "s0").await.unwrap();
        let orders = (1..=3).map(|n| (Some(tenant * 1_000 + n), tenant * 100 + n));
        tenancy_tests::customer_with_orders(&tenancy, tenant, Some(tenant * 1_000), orders).await;
    }
    Some((catalog, directory, tenancy))
}

/// A tenancy over the catalog's shards, routed by `directory`.
async fn over(catalog: &TestDb, directory: &Directory<i64>) -> Tenancy<i64> {
    tenancy_tests::sharded_over(catalog, directory)
        .await
        .build()
        .unwrap()
}

/// Another process's view of the same catalog: a router and tenancy of its own, loaded now.
async fn other_process(catalog: &TestDb, directory: &Directory<i64>) -> Tenancy<i64> {
    let names = Shards::new(catalog.conn.clone()).names().await.unwrap();
    let theirs = directory.for_router(Arc::new(DirectoryRouter::new(names)));
    theirs.load().await.unwrap();
    over(catalog, &theirs).await
}

/// The tenant's (customers, orders) on `shard`, read past the framework.
async fn rows_on(tenancy: &Tenancy<i64>, shard: &str, tenant: i64) -> (u64, u64) {
    let conn = tenancy
        .topology()
        .unwrap()
        .unscoped_connection(&ShardId::new(shard))
        .unwrap();
    let customers = customer::Entity::find()
        .filter(customer::Column::TenantId.eq(tenant))
        .count(&conn)
        .await
        .unwrap();
    let orders = order::Entity::find()
        .filter(order::Column::Tenant.eq(tenant))
        .count(&conn)
        .await
        .unwrap();
    (customers, orders)
}

/// The fence triggers left on `shard`.
async fn fences_on(tenancy: &Tenancy<i64>, shard: &str) -> i64 {
    let conn = tenancy
        .topology()
        .unwrap()
        .unscoped_connection(&ShardId::new(shard))
        .unwrap();
    let sql = match conn.get_database_backend() {
        DbBackend::Postgres => {
            "SELECT count(*) AS n FROM pg_trigger WHERE tgname LIKE 'tenancy\\_fence%'"
        }
        DbBackend::MySql => {
            "SELECT count(*) AS n FROM information_schema.TRIGGERS WHERE \
             TRIGGER_SCHEMA = DATABASE() AND TRIGGER_NAME LIKE 'tenancy\\_fence%'"
        }
        _ => {
            "SELECT count(*) AS n FROM sqlite_master WHERE type = 'trigger' AND \
             name LIKE 'tenancy_fence%'"
        }
    };
    let row = conn
        .query_one_raw(Statement::from_string(conn.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

/// The move claims left in the catalog.
async fn claims(catalog: &TestDb) -> i64 {
    let row = catalog
        .conn
        .query_one_raw(Statement::from_string(
            catalog.conn.get_database_backend(),
            "SELECT count(*) AS n FROM tenancy_directory_claims",
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

/// An order of `tenant`'s customer through a fresh handle of `tenancy`.
async fn write_order(tenancy: &Tenancy<i64>, tenant: i64, id: i64) -> tenancy_sea::Result<()> {
    let db = tenancy.tenant(tenant).await?;
    db.insert(order::ActiveModel {
        id: Set(id),
        customer_id: Set(tenant * 1_000),
        total_cents: Set(1),
        ..Default::default()
    })
    .await?;
    Ok(())
}

/// While the move waits at each stage, another process (whose directory still places the
/// tenant on `s0`) reads the tenant's rows there but cannot write them: the old shard's
/// database refuses, with `TenantMoving`, from the fence to the end of the clean-up. The
/// other tenant on the same shard writes throughout. The fence is gone after the move.
async fn the_old_shard_refuses_the_moving_tenants_writes(backend: Backend) {
    let Some((catalog, directory, tenancy)) = fleet(backend).await else {
        return;
    };
    // The move in a process of its own, paused at two stages while this process (whose
    // directory still places the tenant on `s0`) tries the tenant's writes.
    let mut mover = Command::new(env!("CARGO_BIN_EXE_mover"))
        .args(["move", "1", "s1", "Fenced,Switched", "pause"])
        .env("TENANCY_MOVE_CATALOG", catalog_url(&catalog))
        .env("TENANCY_MOVE_LEASE_MS", "30000")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_mover = mover.stdin.take().unwrap();
    let lines = lines_of(mover.stdout.take().unwrap());
    let stale = tenancy;
    for expected in ["Fenced", "Switched"] {
        let line = lines.recv_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(line, format!("AT {expected}"));
        let stage = expected;
        // Reads go on from the old shard.
        let db = stale.tenant(1).await.unwrap();
        assert_eq!(db.shard().unwrap().as_str(), "s0");
        assert_eq!(
            db.find::<order::Entity>().count().await.unwrap(),
            3,
            "{backend:?} {stage}"
        );
        // Every kind of write of the tenant is refused there, typed.
        let refused = |r: tenancy_sea::Result<()>| {
            assert!(
                matches!(&r, Err(Error::TenantMoving { tenant }) if tenant == "1"),
                "{backend:?} at {stage}: {r:?}"
            );
        };
        refused(write_order(&stale, 1, 1_900).await);
        refused(
            db.update(order::ActiveModel {
                id: Set(1_001),
                total_cents: Set(0),
                ..Default::default()
            })
            .await
            .map(drop),
        );
        refused(db.delete_by_id::<order::Entity>(1_002).await.map(drop));
        refused(db.delete_many::<order::Entity>().exec().await.map(drop));
        // The other tenant of the shard is not fenced.
        let id = 2_010 + i64::from(stage == "Switched");
        write_order(&stale, 2, id).await.unwrap();
        writeln!(to_mover, "go").unwrap();
    }
    let last = lines.recv_timeout(Duration::from_secs(60)).unwrap();
    assert!(last.starts_with("MOVED"), "{last}");
    mover.wait().unwrap();
    let tenancy = stale;
    directory.refresh().await.unwrap();
    assert!(
        last.contains(r#"copied: [("customers", 1), ("orders", 3)]"#),
        "{last}"
    );
    assert_eq!(rows_on(&tenancy, "s0", 1).await, (0, 0));
    assert_eq!(rows_on(&tenancy, "s1", 1).await, (1, 3));
    assert_eq!(rows_on(&tenancy, "s0", 2).await, (1, 5));
    assert_eq!(
        (fences_on(&tenancy, "s0").await, claims(&catalog).await),
        (0, 0)
    );
    // The tenant takes writes on its new shard.
    write_order(&tenancy, 1, 1_901).await.unwrap();
    drop(tenancy);
    catalog.drop_db().await;
}

/// The catalog's URL, for another process.
fn catalog_url(catalog: &TestDb) -> String {
    match (&catalog.url, catalog.sqlite_path()) {
        (Some(url), _) => url.clone(),
        (None, Some(path)) => format!("sqlite://{}?mode=rwc", path.display()),
        (None, None) => panic!("the catalog has no URL"),
    }
}

/// The lines a child prints, as they come.
fn lines_of(out: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            if lines.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn the_old_shard_refuses_the_moving_tenants_writes_postgres() {
    the_old_shard_refuses_the_moving_tenants_writes(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn the_old_shard_refuses_the_moving_tenants_writes_sqlite() {
    the_old_shard_refuses_the_moving_tenants_writes(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn the_old_shard_refuses_the_moving_tenants_writes_mysql() {
    the_old_shard_refuses_the_moving_tenants_writes(Backend::MySql).await;
}

/// Starts `mover move 1 s1 STAGE` over the catalog and kills it (SIGKILL) once it reports
/// that it reached the stage; returns its output up to then.
fn kill_mover_at(url: &str, stage: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mover"))
        .args(["move", "1", "s1", stage])
        .env("TENANCY_MOVE_CATALOG", url)
        .env("TENANCY_MOVE_LEASE_MS", LEASE.as_millis().to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let seen = lines_of(child.stdout.take().unwrap());
    let mut output = String::new();
    loop {
        match seen.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                output.push_str(&line);
                output.push('\n');
                if line == format!("AT {stage}") {
                    break;
                }
                if line.starts_with("MOVED") || line.starts_with("FAILED") {
                    child.kill().ok();
                    panic!("the mover ended before {stage}: {output}");
                }
            }
            Err(_) => {
                child.kill().ok();
                panic!("the mover never reached {stage}: {output}");
            }
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no rollback of its own
    child.wait().unwrap();
    output
}

/// The moving process is killed at each stage in turn; another process then runs the same
/// move, which finishes or undoes what the dead one left and moves the tenant. After each:
/// no row lost or doubled, the tenant on exactly one shard, readable and writable there,
/// no claim and no fence left, the other tenant untouched. Right after the kill, before
/// anyone resumes, the fence (where it was up) still refuses the tenant's writes on the
/// old shard; a write on the new shard after the switch survives the resumption.
async fn a_move_killed_at_any_stage_is_finished_by_the_next_run(backend: Backend) {
    for stage in [
        "Claimed",
        "Fenced",
        "Copying",
        "Copied",
        "Verified",
        "Switching",
        "Switched",
        "Removing",
    ] {
        let Some((catalog, directory, tenancy)) = fleet(backend).await else {
            return;
        };
        kill_mover_at(&catalog_url(&catalog), stage);

        // What a process sees before anyone resumes: the catalog says where the tenant
        // lives; the old shard still refuses its writes if the fence was up.
        directory.refresh().await.unwrap();
        let switched = matches!(stage, "Switched" | "Removing");
        let home = if switched { "s1" } else { "s0" };
        assert_eq!(
            directory.router().route(&1i64).unwrap().as_str(),
            home,
            "{stage}"
        );
        let written = write_order(&tenancy, 1, 1_500).await;
        match stage {
            "Claimed" => written.unwrap(),
            _ if switched => written.unwrap(),
            _ => assert!(
                matches!(written, Err(Error::TenantMoving { .. })),
                "{stage}: {written:?}"
            ),
        }
        let expected_orders = if stage == "Claimed" || switched { 4 } else { 3 };

        // Another process resumes once the dead run's claim has lapsed.
        tokio::time::sleep(LEASE + Duration::from_millis(300)).await;
        let resumed = other_process(&catalog, &directory).await;
        let report = resumed
            .move_tenant(1, "s1")
            .entity::<customer::Entity>()
            .entity::<order::Entity>()
            .run()
            .await
            .unwrap_or_else(|error| panic!("resuming after a kill at {stage}: {error}"));
        assert_eq!(report.to.as_str(), "s1", "{stage}");

        assert_eq!(rows_on(&tenancy, "s0", 1).await, (0, 0), "{stage}");
        assert_eq!(
            rows_on(&tenancy, "s1", 1).await,
            (1, expected_orders),
            "{stage}"
        );
        assert_eq!(rows_on(&tenancy, "s0", 2).await, (1, 3), "{stage}");
        assert_eq!(rows_on(&tenancy, "s1", 2).await, (0, 0), "{stage}");
        assert_eq!(fences_on(&tenancy, "s0").await, 0, "{stage}");
        assert_eq!(fences_on(&tenancy, "s1").await, 0, "{stage}");
        assert_eq!(claims(&catalog).await, 0, "{stage}");
        // Readable and writable on its one shard, through a process that refreshes.
        directory.refresh().await.unwrap();
        let db = tenancy.tenant(1).await.unwrap();
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
        let mut expected = vec![101, 102, 103];
        if expected_orders == 4 {
            expected.insert(0, 1);
        }
        assert_eq!(totals, expected, "{stage}");
        write_order(&tenancy, 1, 1_600).await.unwrap();
        drop((tenancy, resumed));
        catalog.drop_db().await;
    }
}

/// What one writer process reported: each acknowledged write in order, and its counts.
struct Written {
    lines: Vec<String>,
    refused: u64,
    other: u64,
    window_ms: u64,
}

fn writer(catalog_url: &str, seconds: u64) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_mover"))
        .args(["write", "1", &seconds.to_string()])
        .env("TENANCY_MOVE_CATALOG", catalog_url)
        .env("TENANCY_MOVE_LEASE_MS", LEASE.as_millis().to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finished(child: std::process::Child) -> Written {
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "a writer failed: {output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let count = |key: &str| -> u64 {
        text.lines()
            .find_map(|line| line.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {text}"))
            .trim()
            .parse()
            .unwrap()
    };
    Written {
        lines: text.lines().map(str::to_owned).collect(),
        refused: count("REFUSED "),
        other: count("OTHER "),
        window_ms: count("WINDOW "),
    }
}

/// Two other processes insert, update and delete the tenant's orders during the whole
/// move, routing by directories they refresh every 50 ms: every write acknowledged to them
/// is on the new shard at the end (the last acknowledged value of each row, deleted rows
/// gone), every refused write was refused with `TenantMoving`, and nothing of the tenant
/// is left on the old shard. The time writes were refused is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_in_two_processes_lose_nothing_while_the_tenant_moves() {
    let Some((catalog, _directory, tenancy)) = fleet(Backend::Postgres).await else {
        return;
    };
    let url = catalog.url.clone().unwrap();
    let writers = [writer(&url, 6), writer(&url, 6)];
    // Both writing before the move starts.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let started = std::time::Instant::now();
    let report = tenancy
        .move_tenant(1, "s1")
        .entity::<customer::Entity>()
        .entity::<order::Entity>()
        .run()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(report.to.as_str(), "s1");
    let written: Vec<Written> = writers.into_iter().map(finished).collect();

    // The last acknowledged state of each row a writer touched.
    let mut expected: std::collections::BTreeMap<i64, Option<i64>> = Default::default();
    for w in &written {
        assert_eq!(
            w.other, 0,
            "a write failed otherwise than refused: {:?}",
            w.lines
        );
        for line in &w.lines {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["INSERT" | "UPDATE", id, total] => {
                    expected.insert(id.parse().unwrap(), Some(total.parse().unwrap()));
                }
                ["DELETE", id] => {
                    expected.insert(id.parse().unwrap(), None);
                }
                _ => {}
            }
        }
    }
    let acknowledged: usize = written
        .iter()
        .map(|w| {
            w.lines
                .iter()
                .filter(|l| !l.starts_with(['R', 'O', 'W']))
                .count()
        })
        .sum();
    assert!(
        acknowledged > 20,
        "the writers hardly wrote: {acknowledged}"
    );
    let s1 = tenancy
        .topology()
        .unwrap()
        .unscoped_connection(&ShardId::new("s1"))
        .unwrap();
    let held: std::collections::BTreeMap<i64, i64> = order::Entity::find()
        .filter(order::Column::Tenant.eq(1i64))
        .all(&s1)
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.id, o.total_cents))
        .collect();
    for (id, state) in &expected {
        assert_eq!(held.get(id).copied(), *state, "order {id}");
    }
    // The rows no writer touched are there too, and nothing else.
    assert_eq!(
        held.len(),
        3 + expected.values().filter(|s| s.is_some()).count()
    );
    assert_eq!(rows_on(&tenancy, "s0", 1).await, (0, 0));
    assert_eq!(fences_on(&tenancy, "s0").await, 0);
    let refused: u64 = written.iter().map(|w| w.refused).sum();
    let window = written.iter().map(|w| w.window_ms).max().unwrap_or(0);
    eprintln!(
        "online move under two writers: move {took:?}, {acknowledged} writes acknowledged, \
         {refused} refused (TenantMoving), writes refused for at most {window} ms per writer"
    );
    drop(tenancy);
    catalog.drop_db().await;
}

/// A watching process acknowledges each refresh and is leased: once it stops refreshing
/// (its watcher gone, say the catalog unreachable), its router places no tenant after the
/// lease (`DirectoryStale`) instead of serving one that may have moved; a refresh that is
/// acknowledged again brings it back. A move waits for a live router that has not applied
/// its switch, and gives up after the lease with `RoutersBehind`, keeping its fence and
/// claim; run again once that router is gone, it finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_acknowledge_and_a_stale_one_stops_routing() {
    let Some((catalog, directory, tenancy)) = fleet(Backend::Postgres).await else {
        return;
    };
    let lease = Duration::from_millis(400);
    let names = Shards::new(catalog.conn.clone()).names().await.unwrap();
    let theirs = directory
        .for_router(Arc::new(DirectoryRouter::new(names)))
        .with_router_lease(lease);
    let other = over(&catalog, &theirs).await;
    let watcher = tokio::spawn(theirs.clone().watch(Duration::from_millis(50)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        other.tenant(1).await.unwrap().shard().unwrap().as_str(),
        "s0"
    );
    watcher.abort();
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    assert!(
        matches!(
            other.tenant(1).await,
            Err(Error::Routing(tenancy_sea::RoutingError::DirectoryStale))
        ),
        "a router past its lease routes nothing"
    );
    theirs.refresh().await.unwrap();
    theirs.acknowledge().await.unwrap();
    assert_eq!(
        other.tenant(1).await.unwrap().shard().unwrap().as_str(),
        "s0"
    );

    // A router that acknowledged an older version and stays live (its lease renewed by
    // hand, no refresh) holds the move's clean-up back until the bound.
    let mover = directory.clone().with_router_lease(lease);
    let moving = over(&catalog, &mover).await;
    let keep_alive = tokio::spawn({
        let theirs = theirs.clone();
        async move {
            loop {
                theirs.acknowledge().await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let relocate = || {
        moving
            .move_tenant(1, "s1")
            .entity::<customer::Entity>()
            .entity::<order::Entity>()
            .run()
    };
    let behind = relocate().await;
    assert!(
        matches!(behind, Err(Error::RoutersBehind { routers: 1, .. })),
        "{behind:?}"
    );
    // Switched, not cleaned up: the old rows stay, fenced.
    assert_eq!(rows_on(&tenancy, "s0", 1).await, (1, 3));
    assert_eq!(rows_on(&tenancy, "s1", 1).await, (1, 3));
    assert_eq!(fences_on(&tenancy, "s0").await, 1 + 1);
    assert!(matches!(
        write_order(&other, 1, 1_700).await,
        Err(Error::TenantMoving { .. })
    ));
    // That router goes away (its row lapses); the move run again finishes.
    keep_alive.abort();
    theirs.withdraw().await.unwrap();
    tokio::time::sleep(LEASE + Duration::from_millis(300)).await;
    let report = relocate().await.unwrap();
    assert_eq!(report.removed, 4);
    assert_eq!(rows_on(&tenancy, "s0", 1).await, (0, 0));
    assert_eq!(
        (fences_on(&tenancy, "s0").await, claims(&catalog).await),
        (0, 0)
    );
    drop((tenancy, other, moving));
    catalog.drop_db().await;
}

/// A refresh after a few changes reads only the changed keys' entries, from the catalog's
/// log of changes, not the whole directory; a change of ranges, or a change missing from
/// the log, loads the whole directory instead. Either way the router ends where the
/// catalog is.
async fn refreshes_apply_only_what_changed(backend: Backend) {
    let Some((catalog, directory, tenancy)) = fleet(backend).await else {
        return;
    };
    let names = Shards::new(catalog.conn.clone()).names().await.unwrap();
    let theirs = directory.for_router(Arc::new(DirectoryRouter::new(names)));
    theirs.load().await.unwrap();
    let route = |key: i64| theirs.router().route(&key).map(|s| s.to_string());
    for key in 10..13 {
        directory.assign(&key, "s1").await.unwrap();
    }
    directory.assign(&10, "s0").await.unwrap();
    assert_eq!(
        theirs.refresh_counted().await.unwrap(),
        Refreshed::Applied { keys: 3 }
    );
    assert_eq!(
        (route(10).unwrap(), route(11).unwrap()),
        ("s0".to_owned(), "s1".to_owned())
    );
    assert_eq!(
        theirs.refresh_counted().await.unwrap(),
        Refreshed::Unchanged
    );
    directory.remove(&11).await.unwrap();
    assert_eq!(
        theirs.refresh_counted().await.unwrap(),
        Refreshed::Applied { keys: 1 }
    );
    assert!(route(11).is_err());
    // A moved tenant reaches the other process the same way.
    let report = tenancy
        .move_tenant(1, "s1")
        .entity::<customer::Entity>()
        .entity::<order::Entity>()
        .run()
        .await
        .unwrap();
    assert_eq!(report.to.as_str(), "s1");
    assert_eq!(
        theirs.refresh_counted().await.unwrap(),
        Refreshed::Applied { keys: 1 }
    );
    assert_eq!(route(1).unwrap(), "s1");
    // Ranges are loaded whole.
    directory.assign_range(1_000, "s0").await.unwrap();
    assert!(matches!(
        theirs.refresh_counted().await.unwrap(),
        Refreshed::Reloaded { .. }
    ));
    assert_eq!(route(1_500).unwrap(), "s0");
    // A change the log no longer holds: loaded whole.
    directory.assign(&12, "s0").await.unwrap();
    catalog
        .conn
        .execute_unprepared("DELETE FROM tenancy_directory_changes")
        .await
        .unwrap();
    assert!(matches!(
        theirs.refresh_counted().await.unwrap(),
        Refreshed::Reloaded { .. }
    ));
    assert_eq!(route(12).unwrap(), "s0");
    drop(tenancy);
    catalog.drop_db().await;
}

/// A rebalance by rows: the plan moves the heaviest tenants that narrow the gap from the
/// fullest shard to the emptiest, shows each shard's load before and after, and applies
/// them two at a time with progress; a move killed part-way beforehand is listed as
/// unfinished and finished first. Afterwards every tenant's rows are whole on the shard the
/// directory places it on, and the loads are what the plan said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_by_rows_plans_applies_and_finishes_a_stopped_move() {
    let Some((catalog, directory, tenancy)) = fleet(Backend::Postgres).await else {
        return;
    };
    // Tenants 3..=6 on s0 too, heavier as they go: 1 customer and 3 * n orders each.
    for tenant in 3..=6i64 {
        directory.assign(&tenant, "s0").await.unwrap();
        let orders = (1..=3 * tenant).map(|n| (Some(tenant * 1_000 + n), n));
        tenancy_tests::customer_with_orders(&tenancy, tenant, Some(tenant * 1_000), orders).await;
    }
    // Tenant 1's move killed after its switch: it is unfinished (old rows fenced on s0).
    kill_mover_at(&catalog_url(&catalog), "Switched");
    tokio::time::sleep(LEASE + Duration::from_millis(300)).await;
    directory.refresh().await.unwrap();

    let rebalance = || {
        tenancy
            .rebalance()
            .entity::<customer::Entity>()
            .entity::<order::Entity>()
            .by(tenancy_sea::Balance::Rows)
            .parallel(2)
    };
    let plan = rebalance().plan().await.unwrap();
    assert_eq!(plan.unfinished, [(1, ShardId::new("s1"))]);
    // On s0: tenant 2 (4 rows) and 3..=6 (10, 13, 16, 19 rows) = 62; on s1: tenant 1 (4).
    assert_eq!(plan.before[&ShardId::new("s0")], 62);
    assert_eq!(plan.before[&ShardId::new("s1")], 4);
    assert!(!plan.moves.is_empty());
    let (s0, s1) = (
        plan.after[&ShardId::new("s0")],
        plan.after[&ShardId::new("s1")],
    );
    assert_eq!(s0 + s1, 66);
    assert!(
        s0.abs_diff(s1) < 19,
        "the spread narrows below the heaviest tenant: {s0} {s1}"
    );
    let ended = std::sync::atomic::AtomicUsize::new(0);
    let report = rebalance()
        .on_progress(|p| {
            assert!(p.outcome.is_ok(), "{:?}", p.outcome);
            ended.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            assert!(p.done <= p.total);
        })
        .apply(&plan)
        .await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.moved.len(), 1 + plan.moves.len());
    assert_eq!(ended.into_inner(), 1 + plan.moves.len());
    // Every tenant whole where the directory places it, nothing left elsewhere, no fence.
    directory.refresh().await.unwrap();
    let mut loads = std::collections::BTreeMap::new();
    for tenant in 1..=6i64 {
        let home = directory.router().route(&tenant).unwrap();
        let away = if home.as_str() == "s0" { "s1" } else { "s0" };
        let (customers, orders) = rows_on(&tenancy, home.as_str(), tenant).await;
        let expected = if tenant <= 2 { 3 } else { 3 * tenant as u64 };
        assert_eq!((customers, orders), (1, expected), "tenant {tenant}");
        assert_eq!(
            rows_on(&tenancy, away, tenant).await,
            (0, 0),
            "tenant {tenant}"
        );
        *loads.entry(home.to_string()).or_insert(0u64) += customers + orders;
    }
    assert_eq!((loads["s0"], loads["s1"]), (s0, s1));
    assert_eq!(
        (fences_on(&tenancy, "s0").await, claims(&catalog).await),
        (0, 0)
    );
    // Planned again: nothing unfinished; the tenant that was held by its stopped move may
    // move now, and once that is applied the fleet is balanced.
    let again = rebalance().plan().await.unwrap();
    assert!(again.unfinished.is_empty(), "{again:?}");
    let report = rebalance().apply(&again).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let last = rebalance().plan().await.unwrap();
    assert!(
        last.unfinished.is_empty() && last.moves.is_empty(),
        "{last:?}"
    );
    drop(tenancy);
    catalog.drop_db().await;
}

/// A rebalance by bytes weighs what each tenant holds, not how many rows: a tenant of one
/// wide row outweighs tenants of four narrow ones, and is the one planned to move; by rows
/// it is the lightest. On every backend (stored sizes on PostgreSQL, the values' text
/// lengths elsewhere).
async fn a_rebalance_by_bytes_weighs_what_tenants_hold(backend: Backend) {
    let Some((catalog, directory, tenancy)) = fleet(backend).await else {
        return;
    };
    directory.assign(&3, "s0").await.unwrap();
    tenancy
        .tenant(3)
        .await
        .unwrap()
        .insert(customer::ActiveModel {
            id: Set(3_000),
            name: Set("w".repeat(250)),
            ..Default::default()
        })
        .await
        .unwrap();
    let plan = async |balance| {
        tenancy
            .rebalance()
            .entity::<customer::Entity>()
            .entity::<order::Entity>()
            .by(balance)
            .plan()
            .await
    };
    let weight = |plan: &tenancy_sea::RebalancePlan<i64>, tenant: i64| {
        plan.moves
            .iter()
            .find(|m| m.tenant == tenant)
            .map(|m| m.weight)
    };
    let by_bytes = plan(tenancy_sea::Balance::Bytes).await.unwrap();
    assert_eq!(
        by_bytes.moves.first().map(|m| m.tenant),
        Some(3),
        "{by_bytes:?}"
    );
    assert!(weight(&by_bytes, 3).unwrap() >= 250, "{by_bytes:?}");
    let total: u64 = by_bytes.before.values().sum();
    assert_eq!(total, by_bytes.after.values().sum::<u64>());
    assert!(total > 250 + 2 * 4 * 3, "{by_bytes:?}");
    let by_rows = plan(tenancy_sea::Balance::Rows).await.unwrap();
    assert_eq!(by_rows.before[&ShardId::new("s0")], 9, "{by_rows:?}");
    assert_ne!(
        by_rows.moves.first().map(|m| m.tenant),
        Some(3),
        "{by_rows:?}"
    );
    drop(tenancy);
    catalog.drop_db().await;
}

tenancy_tests::on_every_backend!(
    a_move_killed_at_any_stage_is_finished_by_the_next_run,
    a_rebalance_by_bytes_weighs_what_tenants_hold,
    refreshes_apply_only_what_changed,
);
