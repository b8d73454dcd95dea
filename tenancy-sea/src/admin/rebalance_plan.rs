//! The pure part of a rebalance: which tenants move where, from each tenant's shard and
//! weight and the shards' states, unit-tested without a database.

use super::rebalance::PlannedMove;
use crate::catalog::ShardState;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use tenancy_core::ShardId;

type Loads = BTreeMap<ShardId, u64>;

/// The moves that balance `tenants` (tenant, shard, weight, whether it may move) over the
/// active shards of `states`, with each shard's load before and after.
pub(super) fn plan_moves<T: Clone>(
    states: &[(ShardId, ShardState)],
    tenants: Vec<(T, ShardId, u64, bool)>,
) -> Result<(Vec<PlannedMove<T>>, Loads, Loads)> {
    let active: Vec<&ShardId> = states
        .iter()
        .filter(|(_, state)| *state == ShardState::Active)
        .map(|(name, _)| name)
        .collect();
    let mut on: BTreeMap<ShardId, Vec<(T, u64, bool)>> = states
        .iter()
        .map(|(name, _)| (name.clone(), Vec::new()))
        .collect();
    for (tenant, shard, weight, movable) in tenants {
        if let Some(list) = on.get_mut(&shard) {
            list.push((tenant, weight, movable));
        }
    }
    let load = |on: &BTreeMap<ShardId, Vec<(T, u64, bool)>>, shard: &ShardId| -> u64 {
        on.get(shard)
            .map_or(0, |list| list.iter().map(|(_, w, _)| w).sum())
    };
    let before: Loads = on
        .keys()
        .map(|shard| (shard.clone(), load(&on, shard)))
        .collect();
    let lightest = |on: &BTreeMap<ShardId, Vec<(T, u64, bool)>>| {
        active
            .iter()
            .copied()
            .min_by_key(|shard| load(on, shard))
            .cloned()
    };
    let mut moves = Vec::new();
    for (draining, _) in states.iter().filter(|(_, s)| *s == ShardState::Draining) {
        let list = on.get_mut(draining).map(std::mem::take).unwrap_or_default();
        let (mut leaving, staying): (Vec<_>, Vec<_>) = list.into_iter().partition(|t| t.2);
        on.insert(draining.clone(), staying);
        leaving.sort_by_key(|t| std::cmp::Reverse(t.1));
        for (tenant, weight, _) in leaving {
            let to = lightest(&on).ok_or_else(|| Error::NoShardAvailable {
                directory: "tenants".to_owned(),
            })?;
            on.entry(to.clone())
                .or_default()
                .push((tenant.clone(), weight, true));
            moves.push(PlannedMove {
                tenant,
                from: draining.clone(),
                to,
                weight,
            });
        }
    }
    // Each step moves one tenant from the fullest to the emptiest shard, only if that
    // narrows the gap between them; so it ends, after at most as many steps as tenants.
    for _ in 0..on.values().map(Vec::len).sum::<usize>() {
        let Some(to) = lightest(&on) else { break };
        let Some(from) = active
            .iter()
            .rev()
            .copied()
            .max_by_key(|shard| load(&on, shard))
            .cloned()
        else {
            break;
        };
        let gap = load(&on, &from).saturating_sub(load(&on, &to));
        let list = on.entry(from.clone()).or_default();
        let fits = list
            .iter()
            .enumerate()
            .filter(|(_, (_, weight, movable))| *movable && *weight > 0 && *weight < gap)
            .max_by_key(|(_, (_, weight, _))| *weight)
            .map(|(index, _)| index);
        let Some(index) = fits else { break };
        let (tenant, weight, _) = list.remove(index);
        on.entry(to.clone())
            .or_default()
            .push((tenant.clone(), weight, true));
        moves.push(PlannedMove {
            tenant,
            from,
            to,
            weight,
        });
    }
    let after: Loads = on
        .keys()
        .map(|shard| (shard.clone(), load(&on, shard)))
        .collect();
    Ok((moves, before, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(active: &[&str], draining: &[&str]) -> Vec<(ShardId, ShardState)> {
        active
            .iter()
            .map(|s| (ShardId::new(*s), ShardState::Active))
            .chain(
                draining
                    .iter()
                    .map(|s| (ShardId::new(*s), ShardState::Draining)),
            )
            .collect()
    }

    #[test]
    fn the_heaviest_tenant_that_narrows_the_gap_moves_until_none_does() {
        let tenants = vec![
            (1, ShardId::new("a"), 50, true),
            (2, ShardId::new("a"), 30, true),
            (3, ShardId::new("a"), 15, true),
            (4, ShardId::new("b"), 5, true),
        ];
        let (moves, before, after) = plan_moves(&states(&["a", "b"], &[]), tenants).unwrap();
        assert_eq!(before[&ShardId::new("a")], 95);
        // Gap 90: tenant 1 (50) fits and moves; then a = 45, b = 55: gap 10 from b to a,
        // and b's tenants (50, 5) - 5 fits, narrowing it to 0.
        assert_eq!(
            moves
                .iter()
                .map(|m| (m.tenant, m.to.as_str()))
                .collect::<Vec<_>>(),
            [(1, "b"), (4, "a")]
        );
        assert_eq!(
            (after[&ShardId::new("a")], after[&ShardId::new("b")]),
            (50, 50)
        );
    }

    #[test]
    fn draining_shards_are_emptied_first_and_a_balanced_fleet_does_not_move() {
        let tenants = vec![
            (1, ShardId::new("a"), 1, true),
            (2, ShardId::new("b"), 1, true),
            (3, ShardId::new("d"), 1, true),
        ];
        let (moves, _, after) = plan_moves(&states(&["a", "b"], &["d"]), tenants).unwrap();
        assert_eq!(moves.len(), 1);
        assert_eq!(moves[0].from.as_str(), "d");
        assert_eq!(after[&ShardId::new("d")], 0);
        let balanced = vec![
            (1, ShardId::new("a"), 1, true),
            (2, ShardId::new("b"), 1, true),
        ];
        assert!(
            plan_moves(&states(&["a", "b"], &[]), balanced)
                .unwrap()
                .0
                .is_empty()
        );
        // Nowhere to go: every shard draining.
        let stuck = vec![(1, ShardId::new("d"), 1, true)];
        assert!(plan_moves(&states(&[], &["d"]), stuck).is_err());
    }

    #[test]
    fn a_tenant_in_a_stopped_move_counts_but_never_moves() {
        let tenants = vec![
            (1, ShardId::new("a"), 90, false),
            (2, ShardId::new("a"), 10, true),
        ];
        let (moves, _, after) = plan_moves(&states(&["a", "b"], &[]), tenants).unwrap();
        assert_eq!(moves.iter().map(|m| m.tenant).collect::<Vec<_>>(), [2]);
        assert_eq!(
            (after[&ShardId::new("a")], after[&ShardId::new("b")]),
            (90, 10)
        );
    }
}
