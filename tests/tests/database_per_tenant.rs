//! Database per tenant on SQLite files, PostgreSQL and MariaDB: a catalog registry,
//! provisioning that leaves nothing behind on failure, hostile ids, the bounded pool cache
//! and fleet migrations.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a panic

use sea_orm::{ConnectionTrait, Set, Statement};
use std::path::PathBuf;
use tenancy_sea::{
    DatabaseTemplate, Error, SqlTenantId, Tenancy, TenantDb, catalog::TenantDatabases,
};
use tenancy_tests::entities::*;
use tenancy_tests::migration::{BrokenMigrator, DatabaseMigrator};
use tenancy_tests::{Backend, TestDb};

/// A catalog database plus where tenant databases go, removed at the end.
struct Fleet {
    catalog: TestDb,
    template: DatabaseTemplate,
    dir: Option<PathBuf>,
}

impl Fleet {
    async fn new(backend: Backend) -> Option<Fleet> {
        let mut catalog = TestDb::create(backend).await?;
        // Unique per run, so runs never collide on a shared server.
        let prefix = format!("tdb_{}_", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let (template, dir) = match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(prefix.trim_end_matches('_'));
                std::fs::create_dir_all(&dir).unwrap();
                catalog.also_remove_dir(dir.clone());
                (
                    DatabaseTemplate::SqliteDir {
                        dir: dir.clone(),
                        prefix,
                    },
                    Some(dir),
                )
            }
            _ => {
                catalog.also_remove_databases(&prefix);
                (
                    DatabaseTemplate::Server {
                        server_url: catalog.url.clone().unwrap(),
                        prefix,
                    },
                    None,
                )
            }
        };
        Some(Fleet {
            catalog,
            template,
            dir,
        })
    }

    async fn tenancy<T: SqlTenantId>(&self, max_open_pools: usize) -> Tenancy<T> {
        let registry = TenantDatabases::new(self.catalog.conn.clone());
        registry.install().await.unwrap();
        Tenancy::builder(self.catalog.conn.clone())
            .database_per_tenant(registry)
            .database_template(self.template.clone())
            .max_open_pools(max_open_pools)
            .build()
            .unwrap()
    }

    async fn finish<T: SqlTenantId>(self, tenancy: &Tenancy<T>) {
        for tenant in tenancy.tenant_databases().await.unwrap() {
            tenancy.drop_tenant_database(tenant).await.unwrap();
        }
        // The catalog's guard removes the tenant directory too.
        self.catalog.drop_db().await;
        if let Some(dir) = self.dir {
            assert!(!dir.exists(), "{} was left behind", dir.display());
        }
    }

    /// Whether a database (or SQLite file) of that name exists.
    async fn exists(&self, name: &str) -> bool {
        match &self.template {
            DatabaseTemplate::SqliteDir { dir, .. } => dir.join(format!("{name}.db")).exists(),
            DatabaseTemplate::Server { .. } => {
                let sql = match self.catalog.backend {
                    Backend::Postgres => {
                        format!("SELECT count(*) AS n FROM pg_database WHERE datname = '{name}'")
                    }
                    _ => format!(
                        "SELECT count(*) AS n FROM information_schema.schemata WHERE schema_name = '{name}'"
                    ),
                };
                let n: i64 = self
                    .catalog
                    .conn
                    .query_one_raw(Statement::from_string(
                        self.catalog.conn.get_database_backend(),
                        sql,
                    ))
                    .await
                    .unwrap()
                    .unwrap()
                    .try_get("", "n")
                    .unwrap();
                n > 0
            }
        }
    }

    fn prefix(&self) -> &str {
        match &self.template {
            DatabaseTemplate::SqliteDir { prefix, .. }
            | DatabaseTemplate::Server { prefix, .. } => prefix,
        }
    }
}

/// The tenant column of every order row in tenant `id`'s own database, read over a direct
/// connection (raw SQL through a handle is refused where a database is not a session
/// boundary, so the test looks from outside, as an operator would).
async fn tenants_seen(fleet: &Fleet, id: i64) -> Vec<i64> {
    let registry = TenantDatabases::new(fleet.catalog.conn.clone());
    let url = registry
        .url(&id)
        .await
        .unwrap()
        .expect("the tenant is registered");
    let conn = sea_orm::Database::connect(tenancy_tests::pool(url))
        .await
        .unwrap();
    let seen = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT tenant_id FROM orders",
        ))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<i64>("", "tenant_id").unwrap())
        .collect();
    conn.close().await.unwrap();
    seen
}

async fn shop(db: &TenantDb<i64>, orders: i64) {
    let c = db
        .insert(customer::ActiveModel {
            name: Set(format!("c{}", db.tenant_id())),
            ..Default::default()
        })
        .await
        .unwrap();
    db.insert_many((1..=orders).map(|i| order::ActiveModel {
        customer_id: Set(c.id),
        total_cents: Set(i),
        ..Default::default()
    }))
    .await
    .unwrap();
}

async fn end_to_end(backend: Backend) {
    let Some(fleet) = Fleet::new(backend).await else {
        return;
    };
    let tenancy = fleet.tenancy::<i64>(50).await;
    tenancy
        .create_tenant_database::<DatabaseMigrator>(1)
        .await
        .unwrap();
    tenancy
        .create_tenant_database::<DatabaseMigrator>(2)
        .await
        .unwrap();
    assert!(matches!(
        tenancy.create_tenant_database::<DatabaseMigrator>(1).await,
        Err(Error::TenantExists { .. })
    ));
    assert_eq!(tenancy.tenant_databases().await.unwrap(), [1, 2]);
    assert!(fleet.exists(&format!("{}1", fleet.prefix())).await);

    let a = tenancy.tenant(1).await.unwrap();
    let b = tenancy.tenant(2).await.unwrap();
    shop(&a, 3).await;
    shop(&b, 2).await;
    assert_eq!(a.find::<order::Entity>().count().await.unwrap(), 3);
    assert_eq!(tenants_seen(&fleet, 1).await, [1, 1, 1]);
    assert_eq!(tenants_seen(&fleet, 2).await, [2, 2]);
    let with = b
        .find::<customer::Entity>()
        .find_with_related::<order::Entity>()
        .all()
        .await
        .unwrap();
    assert_eq!(with[0].1.len(), 2);
    let txn = a.begin().await.unwrap();
    shop_in(&txn).await;
    txn.rollback().await.unwrap();
    assert_eq!(a.find::<customer::Entity>().count().await.unwrap(), 1);

    assert!(matches!(
        tenancy.tenant(3).await,
        Err(Error::UnknownTenant { tenant }) if tenant == "3"
    ));

    tenancy.drop_tenant_database(2).await.unwrap();
    assert_eq!(tenancy.tenant_databases().await.unwrap(), [1]);
    assert!(!fleet.exists(&format!("{}2", fleet.prefix())).await);
    assert!(matches!(
        tenancy.tenant(2).await,
        Err(Error::UnknownTenant { .. })
    ));
    // Dropping again drops nothing: only registered tenants are dropped.
    assert!(matches!(
        tenancy.drop_tenant_database(2).await,
        Err(Error::UnknownTenant { tenant }) if tenant == "2"
    ));
    drop((a, b));
    fleet.finish(&tenancy).await;
}

async fn shop_in(txn: &tenancy_sea::TenantTxn<i64>) {
    txn.insert(customer::ActiveModel {
        name: Set("rolled back".into()),
        ..Default::default()
    })
    .await
    .unwrap();
}

async fn failed_provisioning_leaves_nothing(backend: Backend) {
    let Some(fleet) = Fleet::new(backend).await else {
        return;
    };
    let tenancy = fleet.tenancy::<i64>(50).await;
    let err = tenancy
        .create_tenant_database::<BrokenMigrator>(7)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("broken on purpose"), "{err}");
    assert!(tenancy.tenant_databases().await.unwrap().is_empty());
    assert!(!fleet.exists(&format!("{}7", fleet.prefix())).await);
    assert!(matches!(
        tenancy.tenant(7).await,
        Err(Error::UnknownTenant { .. })
    ));
    // The same tenant can then be made properly.
    tenancy
        .create_tenant_database::<DatabaseMigrator>(7)
        .await
        .unwrap();
    fleet.finish(&tenancy).await;
}

async fn hostile_ids_never_reach_ddl(backend: Backend) {
    let Some(fleet) = Fleet::new(backend).await else {
        return;
    };
    let tenancy = fleet.tenancy::<String>(50).await;
    for hostile in [
        "x\"; DROP DATABASE test; --",
        "x`; DROP DATABASE test; --",
        "a-b",
        "A",
    ] {
        let err = tenancy
            .create_tenant_database::<DatabaseMigrator>(hostile)
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidIdentifier(_)),
            "{hostile:?}: {err:?}"
        );
        let err = tenancy.drop_tenant_database(hostile).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidIdentifier(_)),
            "{hostile:?}: {err:?}"
        );
    }
    assert!(tenancy.tenant_databases().await.unwrap().is_empty());
    fleet.finish(&tenancy).await;
}

async fn pools_are_bounded_and_reopened(backend: Backend) {
    let Some(fleet) = Fleet::new(backend).await else {
        return;
    };
    let tenancy = fleet.tenancy::<i64>(3).await;
    for tenant in 1..=8 {
        tenancy
            .create_tenant_database::<DatabaseMigrator>(tenant)
            .await
            .unwrap();
    }
    for round in 0..2 {
        for tenant in 1..=8 {
            let db = tenancy.tenant(tenant).await.unwrap();
            if round == 0 {
                shop(&db, tenant).await;
            }
            let seen: Vec<i64> = db
                .find::<order::Entity>()
                .all()
                .await
                .unwrap()
                .into_iter()
                .map(|o| o.tenant_id)
                .collect();
            assert_eq!(seen.len() as i64, tenant);
            assert!(seen.iter().all(|t| *t == tenant));
            assert!(
                tenancy.open_pools() <= 3,
                "{} pools open",
                tenancy.open_pools()
            );
        }
    }
    let report = tenancy
        .migrate_all::<DatabaseMigrator>(4, |_| {})
        .await
        .unwrap();
    assert!(report.is_success(), "{:?}", report.failed);
    assert_eq!(report.migrated.len(), 8);
    fleet.finish(&tenancy).await;
}

tenancy_tests::on_every_backend!(
    end_to_end,
    failed_provisioning_leaves_nothing,
    hostile_ids_never_reach_ddl,
    pools_are_bounded_and_reopened
);
