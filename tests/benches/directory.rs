//! How the catalog-backed shard directory grows: a directory of 10,000, 100,000 and
//! 1,000,000 tenants in a PostgreSQL catalog (`tenancy_directory`), loaded into a
//! [`DirectoryRouter`] by [`Directory`]. Per size:
//!
//! - **load**: a full load from the catalog into a fresh router (`Directory::load`),
//!   median of the rounds;
//! - **memory**: the resident memory a process gains by loading the directory, measured in
//!   a child process of this bench that does nothing but connect and load (`VmRSS` from
//!   `/proc/self/status` before and after the load, and `VmHWM`, the peak, during it),
//!   divided by the entries. It is what a process pays, allocator left-overs of the load
//!   (its rows, their strings) included. The child then loads a second router beside the
//!   first: that load's passing allocations reuse what the first load freed, so its gain
//!   is close to the router's own tables;
//! - **lookup**: a warm router answering random keys of the directory, in batches of
//!   1,024 lookups (median ns per lookup over the batches; goal: under 100 ns at every
//!   size), through `route(&i64)` (what an application calls: it writes the key's bytes
//!   into a fresh buffer) and through `route_bytes` (the key's bytes prepared); beside it
//!   the floor of a lookup that misses the cache: one dependent read of a random cache
//!   line in a table of 64 bytes an entry (a walk over a random cycle), in the same run;
//! - **one change reaching another process**: a change made through one `Directory` (the
//!   writer), and the time another `Directory` with a connection of its own (the other
//!   process's view) takes to catch up with it (`refresh_counted`, which applies the
//!   logged change), against that view loading the whole directory again, in the same
//!   rounds (interleaved: a full reload, then a change and its refresh, per round). The
//!   bytes each moves over the wire are counted by a TCP proxy in this process that the
//!   view's connection goes through (both directions, PostgreSQL's protocol included),
//!   after one unmeasured run of each so that the statements are prepared.
//!
//! The entries are written straight into the catalog table, one `INSERT ... SELECT
//! generate_series` per size (keys `1..=n` as text, as `Directory` stores `i64` keys, on
//! 16 shards by `key % 16`), then one change goes through the API so that the directory's
//! version moves, as in the `moves` bench.
//!
//! ```text
//! TENANCY_PG_URL=postgres://postgres@127.0.0.1:5432/test cargo bench -p tenancy-tests --bench directory
//! cargo bench -p tenancy-tests --bench directory -- --quick  # 1,000 and 10,000 tenants
//! cargo test -p tenancy-tests --bench directory -- --quick   # debug build: checks, no timing
//! ```
//!
//! `DIRECTORY_SIZES` (e.g. `10000,100000`) overrides the sizes, `DIRECTORY_ROUNDS` the
//! rounds. The catalog is a database of its own, dropped at the end.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic,
    clippy::cast_precision_loss,
    missing_docs
)]

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tenancy_sea::catalog::{Directory, Refreshed};
use tenancy_sea::{DirectoryRouter, ShardId, ShardRouter};
use tenancy_tests::{Backend, TestDb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SHARDS: usize = 16;
/// Lookups per timed batch.
const BATCH: usize = 1024;
/// The child process's environment: the catalog's URL and the entries it must load.
const CHILD_URL: &str = "DIRECTORY_CHILD_URL";
const CHILD_ENTRIES: &str = "DIRECTORY_CHILD_ENTRIES";

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn names() -> Vec<ShardId> {
    (0..SHARDS).map(|i| ShardId::new(format!("s{i}"))).collect()
}

/// A field of `/proc/self/status` in kB (`VmRSS`, `VmHWM`).
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A pool of at most `max` connections to `url`, with the suite's options.
async fn connect(url: &str, max: u32) -> DatabaseConnection {
    let mut options: ConnectOptions = tenancy_tests::pool(url);
    options
        .max_connections(max)
        .test_before_acquire(false)
        .sqlx_logging(false);
    Database::connect(options).await.unwrap()
}

/// The child process: connects, loads the directory into a fresh router, then into a
/// second one while keeping the first, and prints its memory before, after the first
/// load and after the second (kB), its peak, the first load's time and the entries.
fn child(url: &str, entries: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conn = connect(url, 1).await;
        let router = Arc::new(DirectoryRouter::<i64>::new(names()));
        let directory = Directory::new(conn.clone(), router.clone());
        // The connection open and one statement run before the first reading.
        directory.version().await.unwrap();
        let before = status_kb("VmRSS:");
        let started = Instant::now();
        let loaded = directory.load().await.unwrap();
        let took = started.elapsed().as_secs_f64();
        let after = status_kb("VmRSS:");
        let peak = status_kb("VmHWM:");
        assert!(loaded.skipped.is_empty());
        assert_eq!(router.len(), entries);
        // A second router beside the first: the load's passing allocations reuse what the
        // first load freed, so what stays is mostly the second router's own tables.
        let second = directory.for_router(Arc::new(DirectoryRouter::new(names())));
        second.load().await.unwrap();
        let after_second = status_kb("VmRSS:");
        assert_eq!(second.router().len(), entries);
        println!(
            "child {before} {after} {after_second} {peak} {took} {}",
            loaded.loaded
        );
        drop((directory, second));
        conn.close().await.unwrap();
    });
}

/// What a child process measured.
struct ChildLoad {
    before_kb: u64,
    after_kb: u64,
    second_kb: u64,
    peak_kb: u64,
    secs: f64,
}

fn load_in_child(url: &str, entries: usize) -> ChildLoad {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(CHILD_URL, url)
        .env(CHILD_ENTRIES, entries.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().find(|l| l.starts_with("child ")).unwrap();
    let f: Vec<&str> = line.split_whitespace().skip(1).collect();
    assert_eq!(f[5].parse::<usize>().unwrap(), entries);
    ChildLoad {
        before_kb: f[0].parse().unwrap(),
        after_kb: f[1].parse().unwrap(),
        second_kb: f[2].parse().unwrap(),
        peak_kb: f[3].parse().unwrap(),
        secs: f[4].parse().unwrap(),
    }
}

/// A TCP proxy on the loopback to `target`, counting the bytes it passes (both ways).
async fn counting_proxy(target: String) -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bytes = Arc::new(AtomicU64::new(0));
    let counted = bytes.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let outbound = tokio::net::TcpStream::connect(&target).await.unwrap();
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::spawn(pump(ri, wo, counted.clone()));
            tokio::spawn(pump(ro, wi, counted.clone()));
        }
    });
    (addr, bytes)
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    bytes: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
    let _ = to.shutdown().await;
}

/// Deterministic pseudo-random numbers (SplitMix64).
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Median ns per lookup of random keys in `1..=entries`, through `route` and through
/// `route_bytes`, over `batches` batches of [`BATCH`] lookups each; and the floor, a
/// dependent read of a random cache line of a table of 64 bytes an entry (the median ns
/// of one step of a walk over a random cycle). Each batch reads keys the batches before it
/// did not just read, so no batch finds its keys' entries in the cache on purpose.
fn lookups(router: &DirectoryRouter<i64>, entries: usize, batches: usize) -> (f64, f64, f64) {
    let mut state = entries as u64;
    let keys: Vec<i64> = (0..1 << 16)
        .map(|_| 1 + (splitmix(&mut state) % entries as u64) as i64)
        .collect();
    let bytes: Vec<[u8; 8]> = keys.iter().map(|k| k.to_be_bytes()).collect();
    // Every key routes, to the shard the catalog names (or one a change moved it to).
    for key in &keys {
        let shard = router.route(key).unwrap();
        assert!(shard.as_str().starts_with('s'));
    }
    let (mut routed, mut by_bytes) = (Vec::new(), Vec::new());
    let chunks = keys.len() / BATCH;
    for b in 0..batches {
        let at = (2 * b % chunks) * BATCH;
        let started = Instant::now();
        for key in &keys[at..at + BATCH] {
            black_box(router.route(black_box(key)).unwrap());
        }
        routed.push(started.elapsed().as_secs_f64() * 1e9 / BATCH as f64);
        let at = ((2 * b + 1) % chunks) * BATCH;
        let started = Instant::now();
        for key in &bytes[at..at + BATCH] {
            black_box(router.route_bytes(black_box(key)).unwrap());
        }
        by_bytes.push(started.elapsed().as_secs_f64() * 1e9 / BATCH as f64);
    }
    // The floor: one random cycle through the lines (Sattolo's shuffle), walked.
    let lines = entries.next_power_of_two();
    let mut order: Vec<usize> = (0..lines).collect();
    for i in (1..lines).rev() {
        let j = (splitmix(&mut state) % i as u64) as usize;
        order.swap(i, j);
    }
    let mut next = vec![0usize; lines * 8];
    for (i, to) in order.iter().enumerate() {
        next[i * 8] = to * 8;
    }
    drop(order);
    let mut at = 0;
    let mut reads = Vec::new();
    for _ in 0..batches {
        let started = Instant::now();
        for _ in 0..BATCH {
            at = next[at];
        }
        reads.push(started.elapsed().as_secs_f64() * 1e9 / BATCH as f64);
    }
    black_box(at);
    (median(routed), median(by_bytes), median(reads))
}

/// One size's results.
struct Row {
    entries: usize,
    load: f64,
    child: ChildLoad,
    route: f64,
    route_bytes: f64,
    memory_read: f64,
    refresh: f64,
    load_bytes: u64,
    refresh_bytes: u64,
}

fn main() {
    if let (Ok(url), Ok(entries)) = (std::env::var(CHILD_URL), std::env::var(CHILD_ENTRIES)) {
        child(&url, entries.parse().unwrap());
        return;
    }
    let measuring = std::env::args().any(|a| a == "--bench");
    let quick = !measuring || std::env::args().any(|a| a == "--quick");
    let sizes: Vec<usize> = match std::env::var("DIRECTORY_SIZES") {
        Ok(v) => v.split(',').map(|s| s.trim().parse().unwrap()).collect(),
        Err(_) if quick => vec![1_000, 10_000],
        Err(_) => vec![10_000, 100_000, 1_000_000],
    };
    assert!(sizes.windows(2).all(|w| w[0] < w[1]) && sizes[0] > 1);
    let rounds: usize =
        std::env::var("DIRECTORY_ROUNDS").map_or(if quick { 3 } else { 5 }, |v| v.parse().unwrap());
    let batches = match (measuring, quick) {
        (false, _) => 16,
        (true, true) => 256,
        (true, false) => 2048,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let catalog = TestDb::create(Backend::Postgres)
            .await
            .expect("TENANCY_PG_URL or the local server");
        let url = catalog.url.clone().unwrap();
        let writer = Directory::new(
            catalog.conn.clone(),
            Arc::new(DirectoryRouter::<i64>::new(names())),
        );
        writer.install().await.unwrap();
        // The other process's view, with a pool of its own.
        let reader_conn = connect(&url, 1).await;
        let reader = Directory::new(
            reader_conn.clone(),
            Arc::new(DirectoryRouter::<i64>::new(names())),
        );
        // The same view through a proxy that counts the bytes on the wire.
        let parsed = url::Url::parse(&url).unwrap();
        let target = format!(
            "{}:{}",
            parsed.host_str().unwrap(),
            parsed.port().unwrap_or(5432)
        );
        let (proxy, wire) = counting_proxy(target).await;
        let mut proxied_url = parsed.clone();
        proxied_url.set_host(Some("127.0.0.1")).unwrap();
        proxied_url.set_port(Some(proxy.port())).unwrap();
        let counted_conn = connect(proxied_url.as_str(), 1).await;
        let counted = Directory::new(
            counted_conn.clone(),
            Arc::new(DirectoryRouter::<i64>::new(names())),
        );
        let shards = names();
        let mut rows = Vec::new();
        let mut filled = 0usize;
        let mut change = 0usize;
        for &entries in &sizes {
            catalog
                .conn
                .execute_unprepared(&format!(
                    "INSERT INTO tenancy_directory (directory, key, shard) \
                     SELECT 'tenants', g::text, 's' || (g % {SHARDS}) \
                     FROM generate_series({}, {entries}) g",
                    filled + 1
                ))
                .await
                .unwrap();
            filled = entries;
            // The entries went in past the API: a change through it moves the version.
            writer.assign(&1, "s1").await.unwrap();
            catalog
                .conn
                .execute_unprepared("VACUUM ANALYZE tenancy_directory")
                .await
                .unwrap();
            let child = load_in_child(&url, entries);
            // The view loaded once; then per round, a full reload into a fresh router, and
            // one change through the writer that the view catches up with.
            assert_eq!(reader.load().await.unwrap().loaded, entries);
            let (mut loads, mut refreshes) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                let fresh = reader.for_router(Arc::new(DirectoryRouter::new(names())));
                let started = Instant::now();
                let loaded = fresh.load().await.unwrap();
                loads.push(started.elapsed().as_secs_f64());
                assert_eq!(loaded.loaded, entries);
                assert_eq!(fresh.router().len(), entries);
                drop(fresh);
                let (key, shard) = next_change(&mut change, entries, &reader, &shards);
                writer.assign(&key, shard.clone()).await.unwrap();
                let started = Instant::now();
                let refreshed = reader.refresh_counted().await.unwrap();
                refreshes.push(started.elapsed().as_secs_f64());
                assert_eq!(refreshed, Refreshed::Applied { keys: 1 });
                assert_eq!(reader.router().route(&key).unwrap(), shard);
            }
            // The bytes: one unmeasured run of each, then a counted one.
            let mut load_bytes = 0;
            for _ in 0..2 {
                let before = wire.load(Ordering::Relaxed);
                assert_eq!(counted.load().await.unwrap().loaded, entries);
                load_bytes = wire.load(Ordering::Relaxed) - before;
            }
            let mut refresh_bytes = 0;
            for _ in 0..2 {
                let (key, shard) = next_change(&mut change, entries, &counted, &shards);
                writer.assign(&key, shard).await.unwrap();
                let before = wire.load(Ordering::Relaxed);
                let refreshed = counted.refresh_counted().await.unwrap();
                refresh_bytes = wire.load(Ordering::Relaxed) - before;
                assert_eq!(refreshed, Refreshed::Applied { keys: 1 });
            }
            // The view has caught up with every change: the writer's changes since the
            // last refresh of `reader` are applied, and lookups see them.
            assert_ne!(
                reader.refresh_counted().await.unwrap(),
                Refreshed::Unchanged
            );
            assert_eq!(reader.router().len(), entries);
            let (route, route_bytes, memory_read) = lookups(reader.router(), entries, batches);
            rows.push(Row {
                entries,
                load: median(loads),
                child,
                route,
                route_bytes,
                memory_read,
                refresh: median(refreshes),
                load_bytes,
                refresh_bytes,
            });
        }
        print_tables(&rows, rounds, batches, measuring);
        // What one change costs to read does not grow with the directory; a full load
        // grows with it.
        let (first, last) = (&rows[0], &rows[rows.len() - 1]);
        assert!(last.refresh_bytes < 4 * 1024, "{}", last.refresh_bytes);
        assert!(last.refresh_bytes < first.refresh_bytes + 64);
        assert!(last.load_bytes > first.load_bytes * (last.entries / first.entries) as u64 / 2);
        drop((reader, counted, writer));
        reader_conn.close().await.unwrap();
        counted_conn.close().await.unwrap();
        catalog.drop_db().await;
    });
}

/// The next change: a key of the directory, and a shard other than the one `view` routes
/// it to.
fn next_change(
    change: &mut usize,
    entries: usize,
    view: &Directory<i64>,
    shards: &[ShardId],
) -> (i64, ShardId) {
    *change += 1;
    let key = 2 + (*change * 7_919 % (entries - 1)) as i64;
    let now = view.router().route(&key).unwrap();
    let at = shards.iter().position(|s| *s == now).unwrap();
    (key, shards[(at + 1) % shards.len()].clone())
}

fn print_tables(rows: &[Row], rounds: usize, batches: usize, measuring: bool) {
    let mib = |kb: u64| kb as f64 / 1024.0;
    if !measuring {
        println!("(debug build, no --bench: the times below are not measurements)");
    }
    println!();
    println!(
        "| tenants | full load (ms, median of {rounds}) | load per entry (µs) | process RSS before load (MiB) | after (MiB) | peak during load (MiB) | RSS gained per entry (bytes) | a second router, RSS gained per entry (bytes) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let c = &r.child;
        let per_entry =
            |from: u64, to: u64| (to.saturating_sub(from) * 1024) as f64 / r.entries as f64;
        println!(
            "| {} | {:.1} | {:.2} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} |",
            r.entries,
            r.load * 1e3,
            r.load * 1e6 / r.entries as f64,
            mib(c.before_kb),
            mib(c.after_kb),
            mib(c.peak_kb),
            per_entry(c.before_kb, c.after_kb),
            per_entry(c.after_kb, c.second_kb),
        );
    }
    println!();
    println!(
        "| tenants | lookup, `route(&i64)` (ns, median of {batches} batches of {BATCH} random keys) | lookup, `route_bytes` (ns) | floor: one random memory read, table of 64 B an entry (ns) | `route` / floor | `route` under 100 ns |"
    );
    println!("|---:|---:|---:|---:|---:|---|");
    for r in rows {
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            r.entries,
            r.route,
            r.route_bytes,
            r.memory_read,
            r.route / r.memory_read,
            if r.route < 100.0 { "yes" } else { "no" }
        );
    }
    println!();
    println!(
        "| tenants | one change, incremental refresh (ms, median of {rounds}) | bytes on the wire | full reload (ms) | bytes on the wire | reload / refresh, time | reload / refresh, bytes |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.2} | {} | {:.1} | {} | {:.0}x | {:.0}x |",
            r.entries,
            r.refresh * 1e3,
            r.refresh_bytes,
            r.load * 1e3,
            r.load_bytes,
            r.load / r.refresh,
            r.load_bytes as f64 / r.refresh_bytes as f64
        );
    }
    println!();
    println!(
        "(child process: one load each; its own load took {})",
        rows.iter()
            .map(|r| format!("{:.1} ms at {}", r.child.secs * 1e3, r.entries))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
