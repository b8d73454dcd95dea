//! `shards list | create | drain | drop | move`: the shard registry in the catalog and the
//! tenants the directory places on each shard.

use super::catalog::{counts, placements, state_name};
use super::output::{Io, Report};
use super::{Exit, Work};
use crate::catalog::ShardState;
use crate::entity::SqlTenantId;
use crate::error::{Error, Result};
use crate::isolation::Isolation;
use crate::tenancy::Tenancy;
use sea_orm_migration::MigratorTrait;
use serde_json::{Value, json};
use tenancy_core::ShardId;

/// The topology, or a configuration error that says the shard commands need one.
pub(crate) fn require_sharded<T: SqlTenantId>(
    tenancy: &Tenancy<T>,
) -> Result<&std::sync::Arc<crate::shard::Topology>> {
    tenancy.topology().map_err(|_| {
        Error::Config(format!(
            "the shard commands need a sharded tenancy; this one keeps {}",
            tenancy.placement().name()
        ))
    })
}

/// Every registered shard as JSON: name, URL without its password, state, tenants placed
/// on it, and whether this process reaches it.
pub(crate) async fn rows<T: SqlTenantId>(tenancy: &Tenancy<T>) -> Result<Vec<Value>> {
    let topology = require_sharded(tenancy)?;
    let unavailable = topology.unavailable_shards();
    let counts = counts(&placements(tenancy).await?);
    Ok(tenancy
        .shard_catalog()
        .list()
        .await?
        .into_iter()
        .map(|record| {
            json!({
                "name": record.name.to_string(),
                "url": crate::redact::url(&record.url),
                "state": state_name(record.state),
                "tenants": counts.get(&record.name).copied().unwrap_or(0),
                "available": !unavailable.iter().any(|(shard, _)| *shard == record.name),
            })
        })
        .collect())
}

/// One shard's row as a line of text.
pub(crate) fn line(row: &Value) -> String {
    let text = |key: &str| row[key].as_str().unwrap_or_default().to_owned();
    format!(
        "{}\t{}\t{} tenant(s)\t{}{}",
        text("name"),
        text("state"),
        row["tenants"].as_u64().unwrap_or(0),
        text("url"),
        if row["available"].as_bool() == Some(false) {
            "\tUNREACHABLE"
        } else {
            ""
        }
    )
}

pub(crate) async fn list<T: SqlTenantId>(tenancy: &Tenancy<T>) -> Result<Report> {
    let rows = rows(tenancy).await?;
    let mut text: String = rows.iter().map(|row| line(row) + "\n").collect();
    if rows.is_empty() {
        text.push_str("no shards\n");
    }
    Ok(Report::done(json!({ "shards": rows }), text))
}

/// The URL argument: as given, or `env:VAR`'s value.
fn resolve_url(url: &str) -> Result<String> {
    match url.strip_prefix("env:") {
        Some(var) => std::env::var(var).map_err(|_| {
            Error::Config(format!(
                "the shard URL was to come from the environment variable {var}, which is not set"
            ))
        }),
        None => Ok(url.to_owned()),
    }
}

/// Creates shard `name`: from the template, or on the empty database at `url`.
pub(crate) async fn create<M: MigratorTrait, T: SqlTenantId>(
    tenancy: &Tenancy<T>,
    name: ShardId,
    url: Option<String>,
) -> Result<Report> {
    require_sharded(tenancy)?;
    match url {
        Some(url) => {
            let url = resolve_url(&url)?;
            tenancy.add_shard::<M>(name.clone(), &url).await?;
        }
        None => tenancy.create_shard::<M>(name.clone()).await?,
    }
    let url = tenancy
        .shard_catalog()
        .list()
        .await?
        .into_iter()
        .find(|record| record.name == name)
        .map(|record| crate::redact::url(&record.url));
    let text = match &url {
        Some(url) => format!("shard {name} created at {url}"),
        None => format!("shard {name} created"),
    };
    Ok(Report::done(
        json!({ "shard": name.to_string(), "url": url, "state": "active" }),
        text,
    ))
}

/// Marks shard `name` draining.
pub(crate) async fn drain<T: SqlTenantId>(tenancy: &Tenancy<T>, name: ShardId) -> Result<Report> {
    require_sharded(tenancy)?;
    tenancy
        .shard_catalog()
        .set_state(&name, ShardState::Draining)
        .await?;
    let left = counts(&placements(tenancy).await?)
        .get(&name)
        .copied()
        .unwrap_or(0);
    Ok(Report::done(
        json!({ "shard": name.to_string(), "state": "draining", "tenants": left }),
        format!(
            "shard {name} is draining: no new tenant is placed on it; {left} tenant(s) left \
             to move (`shards rebalance --apply`)"
        ),
    ))
}

/// Removes the empty shard `name` and drops its database.
pub(crate) async fn drop<T: SqlTenantId>(
    tenancy: &Tenancy<T>,
    name: ShardId,
    work: &Work<'_, T>,
) -> Result<Report> {
    if !tenancy.shard_catalog().names().await?.contains(&name)
        && !require_sharded(tenancy)?.shard_ids().contains(&name)
    {
        return Err(tenancy_core::RoutingError::UnknownShard(name.to_string()).into());
    }
    tenancy.drop_shard(name.clone(), work.global_tables).await?;
    Ok(Report::done(
        json!({ "shard": name.to_string(), "dropped": true }),
        format!("shard {name} dropped"),
    ))
}

/// Moves `tenant` to shard `to`, with the entities the configuration names.
pub(crate) async fn move_tenant<M: MigratorTrait + 'static, T: SqlTenantId>(
    tenancy: &Tenancy<T>,
    work: &Work<'_, T>,
    tenant: T,
    to: ShardId,
) -> Result<crate::admin::MoveReport> {
    require_sharded(tenancy)?;
    if work.entities.is_empty() {
        return Err(Error::Config(
            "moving a tenant copies its rows of the entities the CLI configuration names: \
             add each with `Config::move_entity::<E>()`, parents first"
                .to_owned(),
        ));
    }
    let mut step = tenancy.move_tenant(tenant, to);
    for add in work.entities {
        step = (add.to_move)(step);
    }
    if let Isolation::SchemaPerTenant { .. } = tenancy.isolation() {
        step = step.migrator::<M>();
    }
    step.run().await
}

/// A move's report as JSON and text.
pub(crate) fn moved(tenant: &str, report: &crate::admin::MoveReport) -> (Value, String) {
    let copied: u64 = report.copied.iter().map(|(_, rows)| rows).sum();
    (
        json!({
            "tenant": tenant,
            "from": report.from.to_string(),
            "to": report.to.to_string(),
            "copied": report
                .copied
                .iter()
                .map(|(table, rows)| json!({ "table": table, "rows": rows }))
                .collect::<Vec<Value>>(),
            "removed": report.removed,
        }),
        format!(
            "tenant {tenant} moved from {} to {}: {copied} row(s) copied, {} removed",
            report.from, report.to, report.removed
        ),
    )
}

pub(crate) async fn move_one<M: MigratorTrait + 'static, T: SqlTenantId>(
    tenancy: &Tenancy<T>,
    work: &Work<'_, T>,
    tenant: T,
    to: ShardId,
    io: &mut Io<'_>,
) -> Result<Report> {
    let label = format!("tenant {tenant} to {to}");
    io.start("move", 1);
    let outcome = move_tenant::<M, T>(tenancy, work, tenant.clone(), to).await;
    io.step(&label, outcome.as_ref().err());
    let report = outcome?;
    let (value, text) = moved(&tenant.to_string(), &report);
    Ok(Report {
        value,
        text,
        exit: Exit::Success,
    })
}
