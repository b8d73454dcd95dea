//! Statements a unit of work sends, counted from sqlx's own statement log: under
//! row-level security and schema per tenant (PostgreSQL) the set-up travels with `BEGIN`
//! and a unit sends what it sends under row level. In a test binary of its own, with the
//! log's subscriber installed for the whole process, so that no other test's threads
//! decide whether sqlx's log events are seen.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a panic

use sea_orm::{Database, DatabaseConnection};
use std::future::Future;
use std::sync::{Arc, Mutex};
use tenancy_sea::Tenancy;
use tenancy_tests::entities::*;
use tenancy_tests::migration::Migrator;
use tenancy_tests::{Backend, Flavor, RLS_SETTING, SCHEMA_PREFIX, TestDb, customer_with_orders};

/// A pool of two connections on `url` whose statements sqlx logs.
async fn logging_pool(url: &url::Url) -> DatabaseConnection {
    let mut options = tenancy_tests::pool(url.as_str());
    options.max_connections(2).sqlx_logging(true);
    Database::connect(options).await.unwrap()
}

/// The statements sqlx logs (its `sqlx::query` events), each as the text of its fields.
#[derive(Clone, Default)]
struct Logged(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Logged {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={value:?} ", field.name()));
            }
        }
        if event.metadata().target() == "sqlx::query" {
            let mut text = Text(String::new());
            event.record(&mut text);
            self.0.lock().unwrap().push(text.0);
        }
    }
}

impl Logged {
    /// The statements logged while `work` runs.
    async fn during<F: Future>(&self, work: F) -> Vec<String> {
        self.0.lock().unwrap().clear();
        work.await;
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// The set-up is sent with `BEGIN`, not as a statement of its own: a read through the
/// handle logs exactly what it does under row level (its statement and the `COMMIT`; sqlx
/// logs no `BEGIN`), and no `set_config`. That holds under row-level security and under
/// schema per tenant, with or without a shape: once the first unit has read the shape,
/// the next ones guess it and confirm it in their `BEGIN` (the lock of its marker), and
/// their statements carry it.
#[tokio::test]
async fn the_set_up_travels_with_begin() {
    use tracing_subscriber::layer::SubscriberExt;
    let logged = Logged::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(logged.clone()))
        .unwrap();
    for (flavor, shaped) in [
        (Flavor::Rls, false),
        (Flavor::Schema, false),
        (Flavor::Schema, true),
    ] {
        let Some(mut test) = TestDb::for_flavor(Backend::Postgres, flavor).await else {
            return;
        };
        // Pools that log their statements (the test's own do not).
        let mut url = url::Url::parse(test.url.as_deref().unwrap()).unwrap();
        let builder = if flavor == Flavor::Rls {
            url.set_username(&test.create_app_role().await).unwrap();
            Tenancy::<i64>::builder(logging_pool(&url).await).row_level_security(RLS_SETTING)
        } else {
            let builder =
                Tenancy::builder(logging_pool(&url).await).schema_per_tenant(SCHEMA_PREFIX);
            if shaped {
                builder
            } else {
                builder.schema_version_table(None)
            }
        };
        let tenancy = builder.build().unwrap();
        if flavor == Flavor::Schema {
            tenancy.create_tenant_schema::<Migrator>(1).await.unwrap();
            customer_with_orders(&tenancy, 1, None, [(None, 5)]).await;
        } else {
            customer_with_orders(&test.tenancy::<i64>(), 1, None, [(None, 5)]).await;
        }
        let db = tenancy.tenant(1).await.unwrap();
        let read = || async {
            assert_eq!(db.find::<order::Entity>().all().await.unwrap().len(), 1);
        };
        read().await;
        for _ in 0..3 {
            let statements = logged.during(read()).await;
            assert_eq!(statements.len(), 2, "{flavor:?}: {statements:#?}");
            assert!(
                !statements.iter().any(|s| s.contains("set_config")),
                "{flavor:?}: {statements:#?}"
            );
            assert_eq!(
                statements[0].contains("tenancy shape"),
                shaped,
                "{flavor:?}: {statements:#?}"
            );
            assert!(
                statements[1].contains("COMMIT"),
                "{flavor:?}: {statements:#?}"
            );
            let statements = logged
                .during(async {
                    let txn = db.begin().await.unwrap();
                    txn.find::<order::Entity>().one().await.unwrap();
                    txn.find::<customer::Entity>().one().await.unwrap();
                    txn.commit().await.unwrap();
                })
                .await;
            assert_eq!(statements.len(), 3, "{flavor:?}: {statements:#?}");
        }
        drop((db, tenancy));
        test.drop_db().await;
    }
}
