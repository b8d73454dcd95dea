//! Every statement through a tenant handle runs in a span naming the tenant.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a panic

use sea_orm::Set;
use std::sync::{Arc, Mutex};
use tenancy_tests::entities::*;
use tenancy_tests::{Flavor, Provisioned, TestDb, backend_tests};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

backend_tests!(statements_run_in_a_span_naming_the_tenant);

/// The `tenancy` spans opened, as `(tenant, op, table)`.
#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<(String, String, String)>>>);

#[derive(Default)]
struct Fields {
    tenant: String,
    op: String,
    table: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "op" => self.op = value.to_owned(),
            "table" => self.table = value.to_owned(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "tenant" {
            self.tenant = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Recorded {
    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
        if attrs.metadata().name() == "tenancy" {
            let mut fields = Fields::default();
            attrs.record(&mut fields);
            self.0
                .lock()
                .unwrap()
                .push((fields.tenant, fields.op, fields.table));
        }
    }
}

async fn statements_run_in_a_span_naming_the_tenant(db: &TestDb) {
    let recorded = Recorded::default();
    let subscriber = tracing_subscriber::registry().with(recorded.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let tenancy = db.tenancy::<i64>();
    let acme = tenancy.provisioned(4242).await.unwrap();
    acme.insert(customer::ActiveModel {
        name: Set("traced".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    acme.find::<customer::Entity>().all().await.unwrap();
    acme.delete_many::<customer::Entity>().exec().await.unwrap();

    let spans = recorded.0.lock().unwrap().clone();
    let expected = [
        ("insert", "customers"),
        ("select", "customers"),
        ("delete_many", "customers"),
    ];
    assert_eq!(spans.len(), expected.len(), "{spans:?}");
    for ((tenant, op, table), (want_op, want_table)) in spans.iter().zip(expected) {
        assert_eq!(tenant, "4242");
        assert_eq!((op.as_str(), table.as_str()), (want_op, want_table));
    }

    // Reads of a `#[shard_key]` entity, by key and explicitly across shards, too (not
    // under schema per tenant on shards, which refuses such entities: see shard_key.rs).
    if db.flavor == Flavor::ShardedSchema {
        return;
    }
    recorded.0.lock().unwrap().clear();
    acme.by_key::<event::Entity>(7)
        .unwrap()
        .find()
        .all()
        .await
        .unwrap();
    acme.across_shards()
        .find::<event::Entity>()
        .count()
        .await
        .unwrap();
    // One span per shard the fan-out asks: every shard on shards, the one database else.
    let shards = if db.flavor.is_sharded() {
        tenancy_tests::SHARDS
    } else {
        1
    };
    let mut expected = vec![("4242".to_owned(), "select".to_owned(), "events".to_owned())];
    expected.extend(std::iter::repeat_n(
        (
            "4242".to_owned(),
            "scatter_count".to_owned(),
            "events".to_owned(),
        ),
        shards,
    ));
    assert_eq!(*recorded.0.lock().unwrap(), expected);
}
