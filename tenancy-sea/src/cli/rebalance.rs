//! `shards rebalance [--apply] [--by tenants|rows|bytes] [--parallel N]`: the library's
//! rebalance ([`Tenancy::rebalance`]): a plan of moves off draining shards, then from the
//! fullest active shard to the emptiest, printed, and run with online moves only when
//! asked. Moves a stopped rebalance left part-way are finished first.

use super::catalog::state_name;
use super::output::{Io, Report, message};
use super::shards::moved;
use super::{Exit, Work};
use crate::admin::{Balance, RebalancePlan};
use crate::entity::SqlTenantId;
use crate::error::{Error, Result};
use crate::isolation::Isolation;
use crate::tenancy::Tenancy;
use sea_orm_migration::MigratorTrait;
use serde_json::{Value, json};
use std::sync::Mutex;
use std::time::Duration;

/// What the weights of a plan count.
fn unit(by: Balance) -> &'static str {
    match by {
        Balance::Rows => "row(s)",
        Balance::Bytes => "byte(s)",
        _ => "tenant(s)",
    }
}

/// The plan as JSON and text.
fn shown<T: SqlTenantId>(
    plan: &RebalancePlan<T>,
    states: &[(tenancy_core::ShardId, &'static str)],
    by: Balance,
) -> (Value, String) {
    let mut text = String::new();
    for (name, state) in states {
        let before = plan.before.get(name).copied().unwrap_or(0);
        let after = plan.after.get(name).copied().unwrap_or(0);
        text.push_str(&format!("{name}\t{state}\t{before} {}", unit(by)));
        if after != before {
            text.push_str(&format!(" -> {after}"));
        }
        text.push('\n');
    }
    for (tenant, to) in &plan.unfinished {
        text.push_str(&format!(
            "finish the stopped move of tenant {tenant} to {to}\n"
        ));
    }
    if plan.moves.is_empty() && plan.unfinished.is_empty() {
        text.push_str("balanced: nothing to move\n");
    }
    for m in &plan.moves {
        text.push_str(&format!(
            "move tenant {} from {} to {} ({} {})\n",
            m.tenant,
            m.from,
            m.to,
            m.weight,
            unit(by)
        ));
    }
    let value = json!({
        "by": unit(by).trim_end_matches("(s)"),
        "moves": plan.moves.iter().map(|m| json!({
            "tenant": m.tenant.to_string(),
            "from": m.from.to_string(),
            "to": m.to.to_string(),
            "weight": m.weight,
        })).collect::<Vec<Value>>(),
        "unfinished": plan.unfinished.iter().map(|(tenant, to)| json!({
            "tenant": tenant.to_string(),
            "to": to.to_string(),
        })).collect::<Vec<Value>>(),
        "shards": states.iter().map(|(name, state)| json!({
            "name": name.to_string(),
            "state": state,
            "before": plan.before.get(name).copied().unwrap_or(0),
            "after": plan.after.get(name).copied().unwrap_or(0),
        })).collect::<Vec<Value>>(),
    });
    (value, text)
}

pub(crate) async fn run<M: MigratorTrait + 'static, T: SqlTenantId>(
    tenancy: &Tenancy<T>,
    work: &Work<'_, T>,
    (apply, by, parallel): (bool, Balance, usize),
    io: &mut Io<'_>,
) -> Result<Report> {
    super::shards::require_sharded(tenancy)?;
    tenancy.require_directory("rebalancing")?;
    if work.entities.is_empty() {
        return Err(Error::Config(
            "a rebalance moves tenants' rows of the entities the CLI configuration names: \
             add each with `Config::move_entity::<E>()`, parents first"
                .to_owned(),
        ));
    }
    // Each move's end, as (tenant, failure), for the progress lines.
    let ended: Mutex<Vec<(String, Option<String>)>> = Mutex::new(Vec::new());
    let mut rebalance = tenancy.rebalance().by(by).parallel(parallel);
    for add in work.entities {
        rebalance = (add.to_rebalance)(rebalance);
    }
    if let Isolation::SchemaPerTenant { .. } = tenancy.isolation() {
        rebalance = rebalance.migrator::<M>();
    }
    let rebalance = rebalance.on_progress(|progress| {
        let failure = progress.outcome.as_ref().err().map(message);
        if let Ok(mut ended) = ended.lock() {
            ended.push((progress.tenant.to_string(), failure));
        }
    });
    let plan = rebalance.plan().await?;
    let states: Vec<_> = tenancy
        .shard_catalog()
        .list()
        .await?
        .into_iter()
        .map(|record| (record.name, state_name(record.state)))
        .collect();
    let (mut value, mut text) = shown(&plan, &states, by);
    let total = plan.moves.len() + plan.unfinished.len();
    if !apply {
        if total > 0 {
            text.push_str("(a plan only: run again with --apply to move)\n");
        }
        value["applied"] = json!(false);
        return Ok(Report::done(value, text));
    }
    if total > 0 {
        io.start("rebalance", total);
    }
    let label = |tenant: &str| match plan.moves.iter().find(|m| m.tenant.to_string() == tenant) {
        Some(m) => format!("tenant {tenant} {} -> {}", m.from, m.to),
        None => format!("tenant {tenant} (finishing a stopped move)"),
    };
    // The moves run on this task; their ends are shown as they come, every 100 ms.
    let applying = rebalance.apply(&plan);
    futures_util::pin_mut!(applying);
    let report = loop {
        let tick = futures_timer::Delay::new(Duration::from_millis(100));
        let next = futures_util::future::select(applying.as_mut(), tick).await;
        let ended_now: Vec<_> = ended
            .lock()
            .map(|mut e| e.drain(..).collect())
            .unwrap_or_default();
        for (tenant, failure) in &ended_now {
            io.step_shown(&label(tenant), failure.as_deref());
        }
        if let futures_util::future::Either::Left((report, _)) = next {
            break report;
        }
    };
    io.finish();
    let mut done = Vec::new();
    for (tenant, moved_report) in &report.moved {
        let (entry, line) = moved(&tenant.to_string(), moved_report);
        text.push_str(&line);
        text.push('\n');
        done.push(entry);
    }
    let mut failed = Vec::new();
    for (tenant, error) in &report.failed {
        let shown = message(error);
        text.push_str(&format!("tenant {tenant} failed: {shown}\n"));
        let planned = plan.moves.iter().find(|m| m.tenant == *tenant);
        failed.push(json!({
            "tenant": tenant.to_string(),
            "from": planned.map(|m| m.from.to_string()),
            "to": planned.map(|m| m.to.to_string()),
            "error": shown,
        }));
    }
    value["applied"] = json!(true);
    value["moved"] = json!(done);
    value["failed"] = json!(failed);
    Ok(Report {
        exit: Exit::of_fleet(report.failed.len(), total),
        value,
        text,
    })
}
