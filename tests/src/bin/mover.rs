//! A process of the online-move tests (`tests/tests/online_moves.rs`), over a catalog on
//! PostgreSQL whose shards it reads from the catalog:
//!
//! * `mover move TENANT TO [STAGES [pause]]` moves the tenant's customers and orders; at
//!   each of `STAGES` (`MoveProgress` stages' names, comma-separated, e.g. `Copying`) it
//!   prints `AT STAGE` and waits: to be killed there, or, with `pause`, until a line comes
//!   on its standard input. It prints `MOVED ...` or `FAILED ...` at the end.
//! * `mover ids TENANT ROWS pause|run` inserts tickets with ids from a `UniqueIds` of its
//!   own (see [`tickets`]), for the unique-id tests (`tests/tests/unique_ids.rs`).
//! * `mover write TENANT SECONDS` writes the tenant's orders for that long through a
//!   tenancy of its own that refreshes its directory every 50 ms: inserts, updates and
//!   deletes, each acknowledged one printed (`INSERT id total`, `UPDATE id total`,
//!   `DELETE id`), each refused one counted by its error's kind; at the end `REFUSED n`,
//!   `OTHER n` and `WINDOW ms` (the time from the first refusal to the last one).
//!
//! The catalog's URL is in `TENANCY_MOVE_CATALOG`, the lease of claims and of the router in
//! `TENANCY_MOVE_LEASE_MS` (1,000 by default).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)] // a test's helper process: a failure is a panic, its output is its report

use sea_orm::{ActiveValue::Set, Database};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tenancy_sea::catalog::UniqueIds;
use tenancy_sea::catalog::{Directory, Shards};
use tenancy_sea::{DirectoryRouter, Error, MoveProgress, Tenancy};
use tenancy_tests::entities::{customer, order, ticket};

/// A stage's name, as the command line gives it.
fn stage(progress: &MoveProgress) -> &'static str {
    match progress {
        MoveProgress::Resumed { .. } => "Resumed",
        MoveProgress::Claimed { .. } => "Claimed",
        MoveProgress::Fenced => "Fenced",
        MoveProgress::Copying { .. } => "Copying",
        MoveProgress::Copied => "Copied",
        MoveProgress::Verified => "Verified",
        MoveProgress::Switching => "Switching",
        MoveProgress::Switched => "Switched",
        MoveProgress::Removing { .. } => "Removing",
        MoveProgress::Done => "Done",
        _ => "Other",
    }
}

async fn tenancy() -> (Tenancy<i64>, Directory<i64>) {
    let url = std::env::var("TENANCY_MOVE_CATALOG").expect("TENANCY_MOVE_CATALOG");
    let lease = std::env::var("TENANCY_MOVE_LEASE_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(1_000);
    let catalog = Database::connect(tenancy_tests::pool(url)).await.unwrap();
    let shards = Shards::new(catalog.clone());
    let router = Arc::new(DirectoryRouter::new(shards.names().await.unwrap()));
    let directory = Directory::new(catalog.clone(), router.clone())
        .with_move_lease(Duration::from_millis(lease))
        .with_router_lease(Duration::from_millis(lease));
    directory.load().await.unwrap();
    let topology = shards.topology(router, 2).await.unwrap();
    let tenancy = Tenancy::builder(catalog)
        .sharded(topology)
        .directory(directory.clone())
        .build()
        .unwrap();
    (tenancy, directory)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["move", tenant, to, rest @ ..] => {
            let (tenancy, _) = tenancy().await;
            let stop_at: Vec<String> = rest
                .first()
                .map(|s| s.split(',').map(str::to_owned).collect())
                .unwrap_or_default();
            let pause = rest.get(1) == Some(&"pause");
            let report = tenancy
                .move_tenant(tenant.parse::<i64>().unwrap(), *to)
                .entity::<customer::Entity>()
                .entity::<order::Entity>()
                .on_progress(move |progress| {
                    if stop_at.iter().any(|s| s == stage(progress)) {
                        say(&format!("AT {}", stage(progress)));
                        if pause {
                            let mut line = String::new();
                            std::io::stdin().read_line(&mut line).unwrap();
                        } else {
                            // Held here, a transaction open where the stage is in one,
                            // until the test kills the process.
                            std::thread::sleep(Duration::from_secs(600));
                        }
                    }
                })
                .run()
                .await;
            match report {
                Ok(report) => say(&format!("MOVED {report:?}")),
                Err(error) => say(&format!("FAILED {error}")),
            }
        }
        ["write", tenant, seconds] => {
            write(tenant.parse().unwrap(), seconds.parse().unwrap()).await
        }
        ["ids", tenant, rows, pause] => {
            tickets(
                tenant.parse().unwrap(),
                rows.parse().unwrap(),
                *pause == "pause",
            )
            .await;
        }
        other => panic!(
            "usage: mover move TENANT TO [STAGE] | mover write TENANT SECONDS | mover ids \
             TENANT ROWS pause|run; got {other:?}"
        ),
    }
}

/// Inserts `rows` tickets of the tenant into the catalog database's `tickets`, their ids
/// issued by a `UniqueIds` of this process (lease `TENANCY_MOVE_LEASE_MS`): in batches and
/// one by one, giving its node back every 500 rows (the next batch claims one again), and
/// with `pause` idle past its lease once midway (its node may be taken over meanwhile).
/// Prints `NODES n,m,..`: the nodes its ids came from.
async fn tickets(tenant: i64, rows: usize, pause: bool) {
    let url = std::env::var("TENANCY_MOVE_CATALOG").expect("TENANCY_MOVE_CATALOG");
    let lease: u64 = std::env::var("TENANCY_MOVE_LEASE_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(1_000);
    let catalog = Database::connect(tenancy_tests::pool(url)).await.unwrap();
    let ids = UniqueIds::new(catalog.clone()).with_lease(Duration::from_millis(lease));
    let tenancy = Tenancy::builder(catalog)
        .unique_ids(ids.clone())
        .build()
        .unwrap();
    let db = tenancy.tenant(tenant).await.unwrap();
    let ticket = |n: usize| ticket::ActiveModel {
        title: Set(format!("ticket {n}")),
        ..Default::default()
    };
    let mut nodes = std::collections::BTreeSet::new();
    let mut n = 0;
    while n < rows {
        let batch = (rows - n).min(40);
        db.insert_many((n..n + batch).map(ticket)).await.unwrap();
        n += batch;
        for _ in 0..10.min(rows - n) {
            let row = db.insert(ticket(n)).await.unwrap();
            nodes.insert(tenancy_sea::UniqueIdParts::of(row.id).node);
            n += 1;
        }
        nodes.extend(ids.node());
        if n % 500 < 50 {
            ids.release().await.unwrap();
        }
        if pause && n >= rows / 2 && n < rows / 2 + 50 {
            tokio::time::sleep(Duration::from_millis(lease * 3 / 2)).await;
        }
    }
    let nodes: Vec<String> = nodes.iter().map(ToString::to_string).collect();
    say(&format!("NODES {}", nodes.join(",")));
}

/// Writes the tenant's orders for `seconds`, reporting each acknowledged write.
async fn write(tenant: i64, seconds: u64) {
    let (tenancy, directory) = tenancy().await;
    tokio::spawn(directory.watch(Duration::from_millis(50)));
    let customer_id = {
        let db = tenancy.tenant(tenant).await.unwrap();
        db.find::<customer::Entity>()
            .one()
            .await
            .unwrap()
            .unwrap()
            .id
    };
    // Ids of this process's own: a range per process id, so two writers never collide.
    let mut next_id = i64::from(std::process::id()) * 1_000_000;
    let mut mine: Vec<i64> = Vec::new();
    let (mut refused, mut other) = (0u64, 0u64);
    let (mut first_refusal, mut last_refusal) = (None::<Instant>, None::<Instant>);
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut n = 0u64;
    while Instant::now() < end {
        n += 1;
        let outcome = async {
            let db = tenancy.tenant(tenant).await?;
            match n % 4 {
                // Updates and deletes touch this process's own rows, so the two writers
                // never race each other for a row.
                1 if !mine.is_empty() => {
                    let id = mine[(n as usize / 4) % mine.len()];
                    let total = i64::try_from(n).unwrap();
                    db.update(order::ActiveModel {
                        id: Set(id),
                        total_cents: Set(total),
                        ..Default::default()
                    })
                    .await?;
                    Ok::<_, Error>(format!("UPDATE {id} {total}"))
                }
                3 if mine.len() > 2 => {
                    let id = mine.remove(0);
                    db.delete_by_id::<order::Entity>(id).await?;
                    Ok(format!("DELETE {id}"))
                }
                _ => {
                    next_id += 1;
                    let total = i64::try_from(n).unwrap();
                    db.insert(order::ActiveModel {
                        id: Set(next_id),
                        customer_id: Set(customer_id),
                        total_cents: Set(total),
                        ..Default::default()
                    })
                    .await?;
                    mine.push(next_id);
                    Ok(format!("INSERT {next_id} {total}"))
                }
            }
        }
        .await;
        match outcome {
            Ok(line) => say(&line),
            Err(Error::TenantMoving { .. }) => {
                refused += 1;
                let now = Instant::now();
                first_refusal.get_or_insert(now);
                last_refusal = Some(now);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(error) => {
                other += 1;
                say(&format!("ERROR {error}"));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    let window = match (first_refusal, last_refusal) {
        (Some(first), Some(last)) => last.duration_since(first).as_millis(),
        _ => 0,
    };
    say(&format!("REFUSED {refused}"));
    say(&format!("OTHER {other}"));
    say(&format!("WINDOW {window}"));
}
