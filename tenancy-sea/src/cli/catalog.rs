//! `catalog show | refresh`, and what the other commands read of the catalog: the
//! directory's placements.

use super::output::Report;
use crate::catalog::{ShardState, directory_entry};
use crate::entity::SqlTenantId;
use crate::error::Result;
use crate::placement::Placement;
use crate::tenancy::Tenancy;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use tenancy_core::ShardId;

/// Every key the tenancy's directory places, with its shard, in key order (none without
/// a directory).
pub(crate) async fn placements<T: SqlTenantId>(
    tenancy: &Tenancy<T>,
) -> Result<Vec<(String, ShardId)>> {
    let Some(directory) = tenancy.directory() else {
        return Ok(Vec::new());
    };
    Ok(directory_entry::Entity::find()
        .filter(directory_entry::Column::Directory.eq(directory.name()))
        .order_by_asc(directory_entry::Column::Key)
        .all(tenancy.unscoped())
        .await?
        .into_iter()
        .map(|row| (row.key, ShardId::new(row.shard)))
        .collect())
}

/// How many keys the directory places on each shard.
pub(crate) fn counts(placed: &[(String, ShardId)]) -> BTreeMap<ShardId, usize> {
    let mut counts = BTreeMap::new();
    for (_, shard) in placed {
        *counts.entry(shard.clone()).or_insert(0) += 1;
    }
    counts
}

pub(crate) fn state_name(state: ShardState) -> &'static str {
    match state {
        ShardState::Active => "active",
        ShardState::Draining => "draining",
    }
}

/// The strategy, the shards (URLs without passwords), the directory and the tenant
/// databases.
pub(crate) async fn show<T: SqlTenantId>(tenancy: &Tenancy<T>) -> Result<Report> {
    let mut text = format!(
        "isolation: {}\nplacement: {}\n",
        tenancy.isolation().name(),
        tenancy.placement().name()
    );
    let mut value = json!({
        "isolation": tenancy.isolation().name(),
        "placement": tenancy.placement().name(),
    });
    if tenancy.placement() == Placement::Sharded {
        let shards = super::shards::rows(tenancy).await?;
        text.push_str(&format!("shards: {}\n", shards.len()));
        for shard in &shards {
            text.push_str(&format!("  {}\n", super::shards::line(shard)));
        }
        value["shards"] = Value::Array(shards);
    }
    if let Some(directory) = tenancy.directory() {
        let placed = placements(tenancy).await?;
        let version = directory.version().await?;
        text.push_str(&format!(
            "directory {}: version {version}, {} key(s) placed\n",
            directory.name(),
            placed.len()
        ));
        value["directory"] = json!({
            "name": directory.name(),
            "version": version,
            "keys": placed.len(),
        });
    }
    if tenancy.placement() == Placement::DatabasePerTenant {
        let tenants = tenancy.tenant_databases().await?;
        text.push_str(&format!("tenant databases: {}\n", tenants.len()));
        value["tenant_databases"] = json!(tenants.len());
    }
    Ok(Report::done(value, text))
}

/// Brings this process's topology and directory in step with the catalog: what changed,
/// and which shards cannot be reached.
pub(crate) async fn refresh<T: SqlTenantId>(tenancy: &Tenancy<T>) -> Result<Report> {
    super::shards::require_sharded(tenancy)?;
    let refresh = tenancy.refresh_catalog().await?;
    let names = |shards: &[ShardId]| shards.iter().map(ToString::to_string).collect::<Vec<_>>();
    let value = json!({
        "added": names(&refresh.added),
        "removed": names(&refresh.removed),
        "reconnected": names(&refresh.reconnected),
        "unavailable": names(&refresh.unavailable),
        "directory_reloaded": refresh.directory_reloaded,
    });
    let list = |shards: &[ShardId]| match shards.len() {
        0 => "none".to_owned(),
        _ => names(shards).join(", "),
    };
    let mut text = format!(
        "added: {}\nremoved: {}\nreconnected: {}\nunavailable: {}\ndirectory reloaded: {}\n",
        list(&refresh.added),
        list(&refresh.removed),
        list(&refresh.reconnected),
        list(&refresh.unavailable),
        refresh.directory_reloaded
    );
    let mut report = Report::done(value, String::new());
    if !refresh.unavailable.is_empty() {
        text.push_str("some shards are unreachable: their tenants are refused until they are\n");
        report.exit = super::Exit::Partial;
    }
    report.text = text;
    Ok(report)
}
