//! `shards rebalance [--apply]`: a plan of moves by tenant count, printed, and run only
//! when asked. The plan first takes every tenant off the draining shards, then moves
//! tenants one at a time from the fullest active shard to the emptiest until no two active
//! shards differ by more than one tenant (ties go to the first name, so the plan is the
//! same every time for the same catalog).

use super::catalog::{placements, state_name};
use super::output::{Io, Report, message};
use super::shards::{move_tenant, moved};
use super::{Exit, Work};
use crate::catalog::ShardState;
use crate::entity::SqlTenantId;
use crate::error::{Error, Result};
use crate::tenancy::Tenancy;
use sea_orm_migration::MigratorTrait;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use tenancy_core::ShardId;

/// One planned move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Planned {
    pub(crate) tenant: String,
    pub(crate) from: ShardId,
    pub(crate) to: ShardId,
}

/// Orders tenant keys as their ids read: shorter first, so `9` comes before `10`.
fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    (a.len(), a).cmp(&(b.len(), b))
}

/// The moves that balance `placed` (tenant, shard) over the `shards` and their states.
/// Tenants on a shard the registry does not list are left alone.
pub(crate) fn plan(
    shards: &[(ShardId, ShardState)],
    placed: &[(String, ShardId)],
) -> Result<Vec<Planned>> {
    let active: Vec<&ShardId> = shards
        .iter()
        .filter(|(_, state)| *state == ShardState::Active)
        .map(|(name, _)| name)
        .collect();
    let mut tenants: BTreeMap<&ShardId, Vec<&str>> =
        shards.iter().map(|(name, _)| (name, Vec::new())).collect();
    for (tenant, shard) in placed {
        if let Some(list) = tenants.get_mut(shard) {
            list.push(tenant);
        }
    }
    for list in tenants.values_mut() {
        list.sort_by(|a, b| key_order(a, b));
    }
    let mut moves = Vec::new();
    let emptiest = |tenants: &BTreeMap<&ShardId, Vec<&str>>| {
        active
            .iter()
            .copied()
            .min_by_key(|shard| tenants.get(shard).map_or(0, Vec::len))
    };
    let draining: Vec<&ShardId> = shards
        .iter()
        .filter(|(_, state)| *state == ShardState::Draining)
        .map(|(name, _)| name)
        .collect();
    for from in draining {
        while let Some(tenant) = tenants.get_mut(from).and_then(Vec::pop) {
            let to = emptiest(&tenants).ok_or_else(|| Error::NoShardAvailable {
                directory: "tenants".to_owned(),
            })?;
            tenants.entry(to).or_default().push(tenant);
            moves.push(Planned {
                tenant: tenant.to_owned(),
                from: from.clone(),
                to: to.clone(),
            });
        }
    }
    while let Some(to) = emptiest(&tenants) {
        // The fullest: the most tenants, ties to the first name (`max_by_key` keeps the
        // last of equals, so the names are walked in reverse).
        let Some(from) = active
            .iter()
            .rev()
            .copied()
            .max_by_key(|shard| tenants.get(shard).map_or(0, Vec::len))
        else {
            break;
        };
        let size = |shard: &ShardId| tenants.get(shard).map_or(0, Vec::len);
        if size(from) <= size(to) + 1 {
            break;
        }
        let Some(tenant) = tenants.get_mut(from).and_then(Vec::pop) else {
            break;
        };
        tenants.entry(to).or_default().push(tenant);
        moves.push(Planned {
            tenant: tenant.to_owned(),
            from: from.clone(),
            to: to.clone(),
        });
    }
    Ok(moves)
}

pub(crate) async fn run<M: MigratorTrait + 'static, T: SqlTenantId>(
    tenancy: &Tenancy<T>,
    work: &Work<'_, T>,
    apply: bool,
    io: &mut Io<'_>,
) -> Result<Report> {
    super::shards::require_sharded(tenancy)?;
    tenancy.require_directory("rebalancing")?;
    let records = tenancy.shard_catalog().list().await?;
    let shards: Vec<(ShardId, ShardState)> =
        records.into_iter().map(|r| (r.name, r.state)).collect();
    let placed: Vec<(String, ShardId)> = placements(tenancy)
        .await?
        .into_iter()
        .filter(|(key, _)| T::parse_tenant_id(key).is_ok())
        .collect();
    let moves = plan(&shards, &placed)?;
    let planned: Vec<Value> = moves
        .iter()
        .map(|m| json!({ "tenant": m.tenant, "from": m.from.to_string(), "to": m.to.to_string() }))
        .collect();
    let mut text = String::new();
    for (name, state) in &shards {
        let count = placed.iter().filter(|(_, shard)| shard == name).count();
        text.push_str(&format!(
            "{name}\t{}\t{count} tenant(s)\n",
            state_name(*state)
        ));
    }
    if moves.is_empty() {
        text.push_str("balanced: nothing to move\n");
    }
    for m in &moves {
        text.push_str(&format!(
            "move tenant {} from {} to {}\n",
            m.tenant, m.from, m.to
        ));
    }
    if !apply {
        if !moves.is_empty() {
            text.push_str("(a plan only: run again with --apply to move)\n");
        }
        return Ok(Report::done(
            json!({ "applied": false, "moves": planned }),
            text,
        ));
    }
    if !moves.is_empty() {
        io.start("rebalance", moves.len());
    }
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for m in &moves {
        let label = format!("tenant {} {} -> {}", m.tenant, m.from, m.to);
        let outcome = match super::args::parse_tenant::<T>(&m.tenant) {
            Ok(tenant) => move_tenant::<M, T>(tenancy, work, tenant, m.to.clone()).await,
            Err(error) => Err(error),
        };
        io.step(&label, outcome.as_ref().err());
        match outcome {
            Ok(report) => {
                let (value, line) = moved(&m.tenant, &report);
                text.push_str(&line);
                text.push('\n');
                done.push(value);
            }
            Err(error) => {
                let shown = message(&error);
                text.push_str(&format!("tenant {} failed: {shown}\n", m.tenant));
                failed.push(json!({ "tenant": m.tenant, "from": m.from.to_string(),
                    "to": m.to.to_string(), "error": shown }));
            }
        }
    }
    io.finish();
    Ok(Report {
        exit: Exit::of_fleet(failed.len(), moves.len()),
        value: json!({ "applied": true, "moves": planned, "moved": done, "failed": failed }),
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(name: &str) -> ShardId {
        ShardId::new(name)
    }

    fn placed(spec: &[(&str, &str)]) -> Vec<(String, ShardId)> {
        spec.iter()
            .map(|(t, s)| ((*t).to_owned(), shard(s)))
            .collect()
    }

    #[test]
    fn moves_from_the_fullest_to_the_emptiest_until_balanced() {
        let shards = [
            (shard("s0"), ShardState::Active),
            (shard("s1"), ShardState::Active),
        ];
        let tenants = placed(&[("1", "s0"), ("2", "s0"), ("3", "s0"), ("10", "s0")]);
        let moves = plan(&shards, &tenants).unwrap_or_default();
        assert_eq!(
            moves,
            vec![
                Planned {
                    tenant: "10".into(),
                    from: shard("s0"),
                    to: shard("s1")
                },
                Planned {
                    tenant: "3".into(),
                    from: shard("s0"),
                    to: shard("s1")
                },
            ]
        );
        // Balanced already (a difference of one): nothing.
        let tenants = placed(&[("1", "s0"), ("2", "s0"), ("3", "s1")]);
        assert_eq!(plan(&shards, &tenants).map(|m| m.len()).ok(), Some(0));
    }

    #[test]
    fn empties_draining_shards_and_never_targets_them() {
        let shards = [
            (shard("s0"), ShardState::Draining),
            (shard("s1"), ShardState::Active),
            (shard("s2"), ShardState::Active),
        ];
        let tenants = placed(&[("1", "s0"), ("2", "s0"), ("3", "s1")]);
        let moves = plan(&shards, &tenants).unwrap_or_default();
        assert_eq!(moves.len(), 2);
        assert!(
            moves
                .iter()
                .all(|m| m.from == shard("s0") && m.to != shard("s0"))
        );
        assert!(moves.iter().any(|m| m.to == shard("s2")));
        // Every shard draining: no plan, an error.
        let shards = [(shard("s0"), ShardState::Draining)];
        assert!(plan(&shards, &placed(&[("1", "s0")])).is_err());
        // Nothing to move off a draining shard: fine.
        assert_eq!(plan(&shards, &[]).map(|m| m.len()).ok(), Some(0));
    }
}
