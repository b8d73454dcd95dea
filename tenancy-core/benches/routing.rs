//! Hash routing throughput: keys placed per second on one core.
//!
//! ```text
//! cargo bench -p tenancy-core --bench routing
//! ```
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tenancy_core::{DirectoryRouter, HashRouter, RangeRouter, ShardId, ShardRouter, TenantId};

const KEYS: u64 = 100_000;

fn routing(c: &mut Criterion) {
    let hash = HashRouter::new((0..16).map(|i| ShardId::new(format!("s{i}"))));
    let range =
        RangeRouter::new((0..16).map(|i| (i * 1_000_000, ShardId::new(format!("s{i}"))))).unwrap();
    let keys: Vec<i64> = (0..KEYS as i64).map(|k| k * 7_919).collect();
    let mut group = c.benchmark_group("route");
    group.throughput(Throughput::Elements(KEYS));
    group.bench_function("hash_router_i64", |b| {
        b.iter(|| {
            for key in &keys {
                black_box(hash.route_bytes(&key.to_be_bytes()).unwrap());
            }
        })
    });
    group.bench_function("hash_router_i64_via_tenant_id", |b| {
        b.iter(|| {
            for key in &keys {
                black_box(hash.route(black_box(key)).unwrap());
            }
        })
    });
    let strings: Vec<Vec<u8>> = (0..KEYS)
        .map(|k| format!("tenant-{k}").canonical_bytes())
        .collect();
    group.bench_function("hash_router_string", |b| {
        b.iter(|| {
            for key in &strings {
                black_box(hash.route_bytes(key).unwrap());
            }
        })
    });
    let directory = DirectoryRouter::new((0..16).map(|i| ShardId::new(format!("s{i}"))));
    for key in &keys {
        directory
            .assign(key, format!("s{}", key % 16).as_str())
            .unwrap();
    }
    let key_bytes: Vec<[u8; 8]> = keys.iter().map(|k| k.to_be_bytes()).collect();
    group.bench_function("directory_router_warm_i64", |b| {
        b.iter(|| {
            for key in &key_bytes {
                black_box(directory.route_bytes(key).unwrap());
            }
        })
    });
    group.bench_function("range_router_i64", |b| {
        b.iter(|| {
            for key in &keys {
                black_box(
                    range
                        .route_bytes(&(key % 16_000_000).to_be_bytes())
                        .unwrap(),
                );
            }
        })
    });
    group.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
