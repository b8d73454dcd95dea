//! Isolation checks shared by the strategy tests: they read with raw SQL, so that only
//! the database's own isolation (row-level security, a schema, a database) filters.

use sea_orm::Statement;
use std::sync::Arc;
use tenancy_sea::{Tenancy, TenantDb};

/// The `tenant_id` of every row of `orders` the handle's raw SQL can see.
pub async fn tenants_seen(db: &TenantDb<i64>) -> Vec<i64> {
    db.query_all_raw(Statement::from_string(
        db.backend(),
        "SELECT tenant_id FROM orders",
    ))
    .await
    .unwrap()
    .iter()
    .map(|row| row.try_get::<i64>("", "tenant_id").unwrap())
    .collect()
}

/// Alternates between `handles` `times` times, each time reading every visible order;
/// returns how many rows of another tenant were seen (the answer must be 0). Each read
/// must see `rows_each` rows.
pub async fn alternate(handles: &[TenantDb<i64>], times: usize, rows_each: usize) -> usize {
    let mut foreign = 0;
    for i in 0..times {
        let db = &handles[i % handles.len()];
        let seen = tenants_seen(db).await;
        assert_eq!(seen.len(), rows_each);
        foreign += seen.iter().filter(|t| *t != db.tenant_id()).count();
    }
    foreign
}

/// Runs `tasks` concurrent tasks over tenants `1..=tenants`, each reading `reads` times;
/// returns how many rows of another tenant were seen (the answer must be 0). Each read
/// must see `rows_each` rows.
pub async fn concurrent(
    tenancy: Arc<Tenancy<i64>>,
    tasks: i64,
    tenants: i64,
    reads: usize,
    rows_each: usize,
) -> usize {
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let tenancy = tenancy.clone();
            tokio::spawn(async move {
                let db = tenancy.tenant(task % tenants + 1).await.unwrap();
                alternate(std::slice::from_ref(&db), reads, rows_each).await
            })
        })
        .collect();
    let mut foreign = 0;
    for handle in handles {
        foreign += handle.await.unwrap();
    }
    foreign
}
