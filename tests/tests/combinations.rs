//! Isolation × placement: the pairs that cannot work refused when the `Tenancy` is built,
//! and what the shared test body cannot show for the others: moves, fleet migrations and
//! provisioning under sharded × schema per tenant and sharded × row-level security, and
//! one database-per-tenant `Tenancy` serving tenants on two servers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a panic

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, EntityTrait, Set, Statement};
use std::sync::Arc;
use tenancy_sea::{
    DirectoryRouter, Error, HashRouter, Isolation, Placement, ShardId, ShardRouter, Tenancy,
    Topology, catalog::Directory, catalog::TenantDatabases,
};
use tenancy_tests::entities::{customer, order};
use tenancy_tests::migration::{DatabaseMigrator, Migrator, MigratorV2};
use tenancy_tests::{Backend, Flavor, Provisioned, RLS_SETTING, SCHEMA_PREFIX, TestDb};

/// Every pair that cannot work is a `Config` error at `build` naming both choices.
#[tokio::test]
async fn invalid_pairs_are_refused_at_build_naming_both_choices() {
    let sqlite = Database::connect("sqlite::memory:").await.unwrap();
    let refused = |result: tenancy_sea::Result<Tenancy<i64>>, words: &[&str]| {
        let Err(Error::Config(message)) = result else {
            panic!("not a configuration error: {result:?}");
        };
        for word in words {
            assert!(message.contains(word), "{message:?} lacks {word:?}");
        }
    };
    refused(
        Tenancy::builder(sqlite.clone())
            .row_level_security(RLS_SETTING)
            .build(),
        &[
            "row-level security",
            "one shared database",
            "needs PostgreSQL",
            "Sqlite",
        ],
    );
    refused(
        Tenancy::builder(sqlite.clone())
            .schema_per_tenant(SCHEMA_PREFIX)
            .build(),
        &[
            "schema per tenant",
            "one shared database",
            "needs PostgreSQL",
        ],
    );
    // A SQLite shard cannot enforce row-level security, whatever the other shards are.
    let sharded = || {
        Topology::new(
            HashRouter::new(["a", "b"]),
            [
                (ShardId::new("a"), sqlite.clone()),
                (ShardId::new("b"), sqlite.clone()),
            ],
        )
        .unwrap()
    };
    refused(
        Tenancy::builder(sqlite.clone())
            .row_level_security(RLS_SETTING)
            .sharded(sharded())
            .build(),
        &["row-level security", "shards", "Sqlite"],
    );
    refused(
        Tenancy::builder(sqlite.clone())
            .schema_per_tenant(SCHEMA_PREFIX)
            .sharded(sharded())
            .build(),
        &["schema per tenant", "shards"],
    );
    // A tenant's own database already keeps it apart.
    let registry = TenantDatabases::new(sqlite.clone());
    refused(
        Tenancy::builder(sqlite.clone())
            .row_level_security(RLS_SETTING)
            .database_per_tenant(registry.clone())
            .build(),
        &[
            "row-level security",
            "a database per tenant",
            "row level isolation",
        ],
    );
    refused(
        Tenancy::builder(sqlite.clone())
            .schema_per_tenant(SCHEMA_PREFIX)
            .database_per_tenant(registry)
            .build(),
        &["schema per tenant", "a database per tenant"],
    );
    // The valid pairs on SQLite build, and say what they are.
    let built = Tenancy::<i64>::builder(sqlite.clone())
        .sharded(sharded())
        .build()
        .unwrap();
    assert_eq!(
        (built.isolation(), built.placement()),
        (&Isolation::RowLevel, Placement::Sharded)
    );

    // MariaDB has no schemas inside a database: the error names its stand-in.
    let Some(mysql) = TestDb::create(Backend::MySql).await else {
        return;
    };
    refused(
        Tenancy::builder(mysql.conn.clone())
            .schema_per_tenant(SCHEMA_PREFIX)
            .build(),
        &["schema per tenant", "MariaDB", "database_per_tenant"],
    );
    refused(
        Tenancy::builder(mysql.conn.clone())
            .row_level_security(RLS_SETTING)
            .build(),
        &["row-level security", "needs PostgreSQL", "MySql"],
    );
    mysql.drop_db().await;
}

/// Two PostgreSQL shards placed by a directory in a catalog database (`s0`, `s1`), each
/// set up for `flavor` (its global tables, or its policies and application role).
struct DirectoryShards {
    catalog: TestDb,
    shards: Vec<TestDb>,
    directory: Directory<i64>,
}

impl DirectoryShards {
    async fn new(flavor: Flavor) -> Option<Self> {
        let catalog = TestDb::create(Backend::Postgres).await?;
        let router = Arc::new(DirectoryRouter::new(["s0", "s1"]));
        let directory = Directory::new(catalog.conn.clone(), router);
        directory.install().await.unwrap();
        let mut shards = Vec::new();
        for _ in 0..2 {
            shards.push(TestDb::for_flavor(Backend::Postgres, flavor).await?);
        }
        Some(DirectoryShards {
            catalog,
            shards,
            directory,
        })
    }

    /// The tenancy over the shards, as the application connects to each.
    fn tenancy(
        &self,
        isolation: impl FnOnce(tenancy_sea::TenancyBuilder<i64>) -> tenancy_sea::TenancyBuilder<i64>,
    ) -> Tenancy<i64> {
        let conns = self
            .shards
            .iter()
            .map(|db| db.app.clone().unwrap_or_else(|| db.conn.clone()));
        let topology = Topology::new(
            self.directory.router().clone(),
            ["s0", "s1"].map(ShardId::new).into_iter().zip(conns),
        )
        .unwrap();
        isolation(Tenancy::builder(self.catalog.conn.clone()))
            .sharded(topology)
            .directory(self.directory.clone())
            .build()
            .unwrap()
    }

    /// The owner connection of shard `s<index>`.
    fn owner(&self, index: usize) -> &DatabaseConnection {
        &self.shards[index].conn
    }

    async fn drop_all(self) {
        for shard in self.shards {
            shard.drop_db().await;
        }
        self.catalog.drop_db().await;
    }
}

/// Rows of `table` in `schema` on `conn`, read past the framework; `None` when the schema
/// does not exist there.
async fn rows_in_schema(conn: &DatabaseConnection, schema: &str, table: &str) -> Option<i64> {
    let exists: bool = scalar(
        conn,
        format!("SELECT to_regnamespace('{schema}') IS NOT NULL AS v"),
    )
    .await;
    if !exists {
        return None;
    }
    Some(
        scalar(
            conn,
            format!("SELECT count(*) AS v FROM \"{schema}\".\"{table}\""),
        )
        .await,
    )
}

/// The column `v` of the one row `sql` returns on `conn`.
async fn scalar<V: sea_orm::TryGetable>(conn: &DatabaseConnection, sql: String) -> V {
    conn.query_one_raw(Statement::from_string(conn.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap()
        .try_get::<V>("", "v")
        .unwrap()
}

async fn customer_with_orders(tenancy: &Tenancy<i64>, tenant: i64, first_id: i64) {
    let orders = (0..3).map(|n| (Some(first_id + 1 + n), tenant * 100 + n));
    tenancy_tests::customer_with_orders(tenancy, tenant, Some(first_id), orders).await;
}

/// Sharded × schema per tenant: each tenant's schema is made on its shard; the fleet
/// migrates every schema on every shard; a move makes the schema on the new shard with
/// the application's migrator, copies its rows, and drops the emptied old schema; the
/// other tenant on the old shard is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_moves_with_its_schema() {
    let Some(shards) = DirectoryShards::new(Flavor::Schema).await else {
        return;
    };
    let tenancy = shards.tenancy(|b| b.schema_per_tenant(SCHEMA_PREFIX));
    for (tenant, shard) in [(1, "s0"), (2, "s0"), (3, "s1")] {
        shards.directory.assign(&tenant, shard).await.unwrap();
        tenancy
            .create_tenant_schema::<Migrator>(tenant)
            .await
            .unwrap();
        customer_with_orders(&tenancy, tenant, tenant * 1_000).await;
    }
    // Each schema is on its tenant's shard only.
    assert_eq!(
        rows_in_schema(shards.owner(0), "tenant_1", "orders").await,
        Some(3)
    );
    assert_eq!(
        rows_in_schema(shards.owner(1), "tenant_1", "orders").await,
        None
    );
    assert_eq!(
        rows_in_schema(shards.owner(1), "tenant_3", "orders").await,
        Some(3)
    );
    assert_eq!(tenancy.fleet_tenants().await.unwrap(), [1, 2, 3]);

    // The fleet migrates every schema, each on its own shard.
    let report = tenancy.migrate_all::<MigratorV2>(2, |_| {}).await.unwrap();
    assert!(report.is_success(), "{:?}", report.failed);
    assert_eq!(report.migrated.len(), 3);

    // A move without the migrator cannot make the schema: refused before anything.
    let refused = tenancy
        .move_tenant(1, "s1")
        .entity::<customer::Entity>()
        .entity::<order::Entity>()
        .run()
        .await;
    assert!(
        matches!(&refused, Err(Error::Config(m)) if m.contains("migrator")),
        "{refused:?}"
    );
    assert_eq!(
        shards.directory.router().route(&1i64).unwrap().as_str(),
        "s0"
    );

    let report = tenancy
        .move_tenant(1, "s1")
        .migrator::<MigratorV2>()
        .entity::<customer::Entity>()
        .entity::<order::Entity>()
        .run()
        .await
        .unwrap();
    assert_eq!(report.copied, [("customers", 1), ("orders", 3)]);
    assert_eq!(report.removed, 4);
    assert_eq!(
        shards.directory.router().route(&1i64).unwrap().as_str(),
        "s1"
    );
    // The schema left s0 (it was empty after the clean-up) and lives on s1.
    assert_eq!(
        rows_in_schema(shards.owner(0), "tenant_1", "orders").await,
        None
    );
    assert_eq!(
        rows_in_schema(shards.owner(1), "tenant_1", "orders").await,
        Some(3)
    );
    // Tenant 2, on the old shard, kept everything.
    assert_eq!(
        rows_in_schema(shards.owner(0), "tenant_2", "orders").await,
        Some(3)
    );

    // The handle reads and writes the tenant's schema on its new shard.
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
    assert_eq!(totals, [100, 101, 102]);
    db.insert(customer::ActiveModel {
        id: Set(1_500),
        name: Set("after the move".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        rows_in_schema(shards.owner(1), "tenant_1", "customers").await,
        Some(2)
    );
    // Tenant 3, who was on s1 all along, sees none of it.
    let other = tenancy.tenant(3).await.unwrap();
    assert_eq!(
        other.find::<customer::Entity>().all().await.unwrap().len(),
        1
    );
    assert_eq!(tenancy.fleet_tenants().await.unwrap(), [1, 2, 3]);

    // Dropping a tenant drops its schema where it lives.
    tenancy.drop_tenant_schema(1).await.unwrap();
    assert_eq!(
        rows_in_schema(shards.owner(1), "tenant_1", "orders").await,
        None
    );
    drop(tenancy);
    shards.drop_all().await;
}

/// Sharded × row-level security: each shard enforces its own policies for the
/// application's role, and a move (which reads and writes through that role, the tenant's
/// setting made in every unit) takes every row of the tenant and none of another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_moves_between_shards_that_enforce_rls() {
    let Some(shards) = DirectoryShards::new(Flavor::Rls).await else {
        return;
    };
    // A move moves each shard's key sequence past the copied ids (`setval`): the role
    // the shards are reached as needs `UPDATE` on the sequences, not only `USAGE`. Its
    // write fence needs nothing more: the policies' set-up made the fence's functions as
    // the tables' owner.
    for shard in &shards.shards {
        let role: String = shard
            .app
            .as_ref()
            .unwrap()
            .query_one_raw(Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT current_user::text AS name",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get("", "name")
            .unwrap();
        shard
            .conn
            .execute_unprepared(&format!(
                "GRANT UPDATE ON ALL SEQUENCES IN SCHEMA public TO {role}"
            ))
            .await
            .unwrap();
    }
    let tenancy = shards.tenancy(|b| b.row_level_security(RLS_SETTING));
    tenancy.verify().await.unwrap();
    for (tenant, shard) in [(1, "s0"), (2, "s0")] {
        shards.directory.assign(&tenant, shard).await.unwrap();
        customer_with_orders(&tenancy, tenant, tenant * 1_000).await;
    }
    // The application's role sees nothing on a shard without the tenant's setting.
    let app = shards.shards[0].app.clone().unwrap();
    assert!(order::Entity::find().all(&app).await.unwrap().is_empty());

    let report = tenancy
        .move_tenant(1, "s1")
        .entity::<customer::Entity>()
        .entity::<order::Entity>()
        .run()
        .await
        .unwrap();
    assert_eq!(report.copied, [("customers", 1), ("orders", 3)]);
    assert_eq!(report.removed, 4);
    for (index, tenant, why) in [
        (0, 2, "tenant 2 stays whole on s0"),
        (1, 1, "only tenant 1's rows reached s1"),
    ] {
        let stored: Vec<i64> = order::Entity::find()
            .all(shards.owner(index))
            .await
            .unwrap()
            .iter()
            .map(|o| o.tenant_id)
            .collect();
        assert_eq!(stored, [tenant; 3], "{why}");
    }
    let db = tenancy.tenant(1).await.unwrap();
    assert_eq!(db.find::<order::Entity>().count().await.unwrap(), 3);

    // A shard that lost its policies is caught before the first handle.
    shards.shards[1]
        .conn
        .execute_unprepared("ALTER TABLE orders DISABLE ROW LEVEL SECURITY")
        .await
        .unwrap();
    let fresh = shards.tenancy(|b| b.row_level_security(RLS_SETTING));
    assert!(
        matches!(fresh.tenant(1).await, Err(Error::RlsNotEnforced { .. })),
        "a shard without its policies was trusted"
    );
    drop((tenancy, fresh, db));
    shards.drop_all().await;
}

/// A database per tenant on two servers at once: the catalog maps each tenant to its
/// database, on PostgreSQL for one and MariaDB for the other, and one `Tenancy` serves
/// both, each handle on its own server, neither seeing the other's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_per_tenant_on_two_servers() {
    let Some(postgres) = TestDb::for_flavor(Backend::Postgres, Flavor::Database).await else {
        return;
    };
    let Some(mariadb) = TestDb::for_flavor(Backend::MySql, Flavor::Database).await else {
        return;
    };
    let on_postgres = postgres.tenancy::<i64>();
    let on_mariadb = mariadb.tenancy::<i64>();
    // Each server's template makes its tenant's database; one catalog registers both.
    on_postgres.provisioned(1).await.unwrap();
    on_mariadb.provisioned(2).await.unwrap();
    let registry = TenantDatabases::new(postgres.conn.clone());
    let maria_url =
        tenancy_sea::TenantRegistry::<i64>::url(&TenantDatabases::new(mariadb.conn.clone()), &2)
            .await
            .unwrap()
            .unwrap();
    tenancy_sea::TenantRegistry::<i64>::register(&registry, &2, &maria_url)
        .await
        .unwrap();
    let tenancy = Tenancy::<i64>::builder(postgres.conn.clone())
        .database_per_tenant(registry)
        .build()
        .unwrap();
    let (one, two) = (
        tenancy.tenant(1).await.unwrap(),
        tenancy.tenant(2).await.unwrap(),
    );
    assert_eq!(one.backend(), sea_orm::DbBackend::Postgres);
    assert_eq!(two.backend(), sea_orm::DbBackend::MySql);
    for (db, name) in [(&one, "on postgres"), (&two, "on mariadb")] {
        db.insert(customer::ActiveModel {
            name: Set(name.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let names = |db: tenancy_sea::TenantDb<i64>| async move {
        db.find::<customer::Entity>()
            .all()
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.tenant_id, c.name))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(one).await, [(1, "on postgres".to_owned())]);
    assert_eq!(names(two).await, [(2, "on mariadb".to_owned())]);
    // The fleet is both tenants, and migrating it reaches both servers.
    assert_eq!(tenancy.fleet_tenants().await.unwrap(), [1, 2]);
    let report = tenancy
        .migrate_all::<DatabaseMigrator>(2, |_| {})
        .await
        .unwrap();
    assert!(report.is_success(), "{:?}", report.failed);
    assert_eq!(tenancy.open_pools(), 2);
    drop((tenancy, on_postgres, on_mariadb));
    postgres.drop_db().await;
    mariadb.drop_db().await;
}

/// The sharded test flavors place tenants 1 and 2 together and 3 apart: the shared body
/// relies on it (tenants 1 and 2 share tables, so every cross-tenant attack is tried).
#[test]
fn the_sharded_flavors_place_tenants_as_the_shared_body_expects() {
    let router =
        HashRouter::new((0..tenancy_tests::SHARDS).map(|i| ShardId::new(format!("shard_{i}"))));
    let one = router.route(&1i64).unwrap();
    assert_eq!(router.route(&2i64).unwrap(), one);
    assert_ne!(router.route(&3i64).unwrap(), one);
    assert_eq!(one.as_str(), "shard_1");
}
