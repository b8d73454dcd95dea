//! The tenant in background work: handles move into tasks, the current tenant follows
//! `task::spawn` and nested `in_tenant`, under tokio and async-std, and a task with no
//! tenant gets no handle implicitly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use futures_util::future::join_all;
use sea_orm::{EntityTrait, Set};
use tenancy_sea::task::{self, current_tenant, in_tenant, with_current_tenant};
use tenancy_sea::{Error, Tenancy, TenantDb};
use tenancy_tests::entities::note_string;
use tenancy_tests::{Backend, Flavor, TestDb, run};

/// Yields to the scheduler so that the task may resume on another worker thread.
async fn hop() {
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
}

/// A handle is `Clone + Send + Sync + 'static`: moved into a task, it works there.
fn assert_movable<X: Clone + Send + Sync + 'static>(_: &X) {}

async fn handles_move_into_tasks(db: &TestDb) {
    let tenancy: Tenancy<String> = db.tenancy::<String>().into_inner();
    let acme = tenancy.tenant("acme".to_owned()).await.unwrap();
    assert_movable(&acme);
    let jobs = (0..8).map(|n| {
        let db = acme.clone();
        tokio::spawn(async move {
            hop().await;
            db.insert(note_string::ActiveModel {
                body: Set(format!("note {n}")),
                ..Default::default()
            })
            .await
            .map(|note| note.owner)
        })
    });
    for owner in join_all(jobs).await {
        assert_eq!(owner.unwrap().unwrap(), "acme");
    }
    // A case variant is another tenant, and sees none of it.
    let upper = tenancy.tenant("ACME".to_owned()).await.unwrap();
    assert_eq!(
        upper.find::<note_string::Entity>().count().await.unwrap(),
        0
    );
    assert_eq!(acme.find::<note_string::Entity>().count().await.unwrap(), 8);
}

async fn spawned_work_keeps_its_tenant(db: &TestDb) {
    let tenancy: Tenancy<String> = db.tenancy::<String>().into_inner();
    // 30 jobs of 10 tenants at once, each spawning a job of its own: every job, however
    // its task is scheduled, writes for the tenant it was spawned in.
    let jobs = (0..30).map(|n| {
        let tenancy = tenancy.clone();
        let tenant = format!("t{}", n % 10);
        in_tenant(tenant.clone(), async move {
            let inner = tenancy.clone();
            let job = task::spawn(async move {
                hop().await;
                let db = inner.current().await?;
                hop().await;
                let grandchild = task::spawn(async { current_tenant::<String>() });
                let note = db
                    .insert(note_string::ActiveModel {
                        body: Set(format!("job {n}")),
                        ..Default::default()
                    })
                    .await?;
                Ok::<_, Error>((note.owner, grandchild.await.unwrap()))
            });
            let (owner, grandchild) = job.await.unwrap().unwrap();
            (tenant, owner, grandchild)
        })
    });
    for (tenant, owner, grandchild) in join_all(jobs).await {
        assert_eq!(owner, tenant);
        assert_eq!(grandchild.as_ref(), Some(&tenant));
    }
    let all = note_string::Entity::find()
        .all(tenancy.unscoped())
        .await
        .unwrap();
    assert_eq!(all.len(), 30);
}

async fn a_task_without_a_tenant_gets_no_handle(db: &TestDb) {
    let tenancy: Tenancy<i64> = db.tenancy::<i64>().into_inner();
    let no_tenant = |result: tenancy_sea::Result<TenantDb<i64>>| {
        matches!(result, Err(Error::NoCurrentTenant { id_type: "i64" }))
    };
    assert!(no_tenant(tenancy.current().await));
    // Spawned by plain tokio from inside a tenant: the tenant does not follow.
    let plain = in_tenant(5_i64, {
        let tenancy = tenancy.clone();
        async move {
            tokio::spawn(async move { tenancy.current().await })
                .await
                .unwrap()
        }
    })
    .await;
    assert!(no_tenant(plain));
    // Spawned by `task::spawn` with no tenant: none.
    let bare = task::spawn({
        let tenancy = tenancy.clone();
        async move { tenancy.current().await }
    });
    assert!(no_tenant(bare.await.unwrap()));
    // A tenant of another id type is not this one.
    let other_type = in_tenant("5".to_owned(), tenancy.current()).await;
    assert!(no_tenant(other_type));
    // An invalid current tenant is refused like a named one.
    let invalid: Tenancy<String> = db.tenancy::<String>().into_inner();
    let refused = in_tenant("\u{202E}acme".to_owned(), invalid.current()).await;
    assert!(
        matches!(refused, Err(Error::InvalidTenantId(_))),
        "{refused:?}"
    );
    // What such a task can do: name its tenant, or use the escape hatch.
    assert_eq!(*tenancy.tenant(5).await.unwrap().tenant_id(), 5);
    assert!(tenancy.unscoped().ping().await.is_ok());
}

macro_rules! run_on {
    ($($name:ident),*) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::run(super::Backend::Sqlite, super::Flavor::RowLevel, super::$name).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::run(super::Backend::Postgres, super::Flavor::RowLevel, super::$name).await })*
        }
        mod mysql {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::run(super::Backend::MySql, super::Flavor::RowLevel, super::$name).await })*
        }
    };
}

run_on!(
    handles_move_into_tasks,
    spawned_work_keeps_its_tenant,
    a_task_without_a_tenant_gets_no_handle
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nested_tenants_restore_the_outer_one_across_awaits() {
    let seen = in_tenant(1_i64, async {
        let mut seen = vec![current_tenant::<i64>()];
        hop().await;
        let inner = in_tenant(2_i64, async {
            hop().await;
            let deeper = in_tenant(3_i64, async {
                hop().await;
                current_tenant::<i64>()
            })
            .await;
            (deeper, current_tenant::<i64>())
        })
        .await;
        seen.extend([inner.0, inner.1]);
        hop().await;
        seen.push(current_tenant::<i64>());
        seen
    })
    .await;
    assert_eq!(seen, [Some(1), Some(3), Some(2), Some(1)]);
    assert_eq!(current_tenant::<i64>(), None);
}

#[test]
fn the_current_tenant_works_under_async_std() {
    async_std::task::block_on(async {
        let jobs = (0..20_i64).map(|n| {
            in_tenant(n, async move {
                async_std::task::yield_now().await;
                // async-std's own spawn, given the future wrapped by hand...
                let wrapped = async_std::task::spawn(with_current_tenant(async {
                    async_std::task::yield_now().await;
                    current_tenant::<i64>()
                }));
                // ...and a plain one, which does not carry it.
                let plain = async_std::task::spawn(async { current_tenant::<i64>() });
                (n, wrapped.await, plain.await, current_tenant::<i64>())
            })
        });
        for (n, wrapped, plain, after) in join_all(jobs).await {
            assert_eq!((wrapped, plain, after), (Some(n), None, Some(n)));
        }
    });
}
