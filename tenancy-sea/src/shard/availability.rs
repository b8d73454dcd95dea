//! Which shards of a [`Topology`](super::Topology) are out of service: those whose
//! database could not be reached, each with why, and the check routing makes (one atomic
//! read while every shard is up).

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use tenancy_core::ShardId;

/// The shards marked unavailable, with why; `count` lets routing read one atomic when
/// every shard is up.
#[derive(Default)]
pub(super) struct Availability {
    unavailable: RwLock<BTreeMap<ShardId, String>>,
    count: AtomicUsize,
}

impl Availability {
    pub(super) fn mark_unavailable(&self, shard: &ShardId, reason: String) {
        let mut unavailable = self.unavailable.write().unwrap_or_else(|p| p.into_inner());
        unavailable.insert(shard.clone(), reason);
        self.count.store(unavailable.len(), Ordering::SeqCst);
    }

    pub(super) fn mark_available(&self, shard: &ShardId) {
        let mut unavailable = self.unavailable.write().unwrap_or_else(|p| p.into_inner());
        unavailable.remove(shard);
        self.count.store(unavailable.len(), Ordering::SeqCst);
    }

    pub(super) fn list(&self) -> Vec<(ShardId, String)> {
        self.unavailable
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(shard, why)| (shard.clone(), why.clone()))
            .collect()
    }

    /// `Err(ShardUnavailable)` when `shard` is marked unavailable.
    pub(super) fn check(&self, shard: &ShardId) -> Result<()> {
        if self.count.load(Ordering::SeqCst) == 0 {
            return Ok(());
        }
        match self
            .unavailable
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(shard)
        {
            Some(reason) => Err(Error::ShardUnavailable {
                shard: shard.to_string(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }
}
