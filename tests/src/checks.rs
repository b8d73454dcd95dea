//! Isolation checks shared by the strategy tests. Reads go through the handle, which the
//! database filters as well under row-level security, a schema or a database per tenant:
//! a tenant setting or search path that leaked from another unit of work shows up as
//! missing rows (the two filters disagree) or as foreign rows.

use std::sync::Arc;
use tenancy_sea::{Tenancy, TenantDb};

use crate::entities::order;

/// The `tenant_id` of every row of `orders` the handle can see.
pub async fn tenants_seen(db: &TenantDb<i64>) -> Vec<i64> {
    db.find::<order::Entity>()
        .all()
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.tenant_id)
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
