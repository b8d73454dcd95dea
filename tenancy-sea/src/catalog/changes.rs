//! The directory's log of changes: every change bumps the directory's version and names
//! the key it changed, in the transaction that makes it, so that a process behind by a few
//! versions reads those keys' entries alone instead of the whole directory.

use super::directory::Directory;
use super::entities::{change_entry, entry, version_entry};
use crate::entity::SqlTenantId;
use crate::error::Result;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, Set};
use std::collections::HashMap;
use tenancy_core::{ShardId, ShardRouter};

/// How many versions behind a router may be for [`Directory::refresh`] to apply the
/// changes one by one rather than load the whole directory.
const INCREMENTAL_CHANGES: u64 = 10_000;

/// How many versions of changes the catalog's log keeps.
const CHANGES_KEPT: i64 = 20_000;

/// What changed a directory's version, for the log of changes.
pub(crate) enum Changed<'k> {
    /// The placement of one key (placed, moved or removed).
    Key(&'k str),
    /// The ranges.
    Range,
}

/// How [`Directory::refresh_counted`] brought the router up to the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refreshed {
    /// Nothing had changed.
    Unchanged,
    /// The changes since the router's version were applied: this many keys' entries read.
    Applied {
        /// The keys whose entries were read and applied.
        keys: usize,
    },
    /// The whole directory was loaded again: this many keys and ranges.
    Reloaded {
        /// The keys and ranges loaded.
        entries: usize,
    },
}

impl<K: SqlTenantId> Directory<K> {
    /// Records a change of the directory, in the transaction that makes it: the version
    /// bumped, and the change logged under it for incremental refreshes (the log keeps
    /// the last [`CHANGES_KEPT`] versions).
    pub(super) async fn bump(&self, txn: &DatabaseTransaction, change: Changed<'_>) -> Result<()> {
        self.ensure_version_row(txn).await?;
        version_entry::Entity::update_many()
            .col_expr(
                version_entry::Column::Version,
                Expr::col(version_entry::Column::Version).add(1),
            )
            .filter(version_entry::Column::Directory.eq(self.name.as_str()))
            .exec(txn)
            .await?;
        // Read back in the transaction that holds the row: this change's version.
        let version = version_entry::Entity::find_by_id(self.name.clone())
            .one(txn)
            .await?
            .map_or(0, |row| row.version);
        change_entry::Entity::insert(change_entry::ActiveModel {
            directory: Set(self.name.clone()),
            version: Set(version),
            key: Set(match change {
                Changed::Key(key) => Some(key.to_owned()),
                Changed::Range => None,
            }),
        })
        .exec_without_returning(txn)
        .await?;
        if version % 256 == 0 {
            change_entry::Entity::delete_many()
                .filter(change_entry::Column::Directory.eq(self.name.as_str()))
                .filter(change_entry::Column::Version.lte(version - CHANGES_KEPT))
                .exec(txn)
                .await?;
        }
        Ok(())
    }

    /// Brings the router up to the catalog if the directory changed since the router last
    /// caught up (by this process or another one); returns whether it did. Cheap when
    /// nothing changed: one primary-key read. When few keys changed, only their entries
    /// are read (see [`refresh_counted`](Self::refresh_counted)).
    pub async fn refresh(&self) -> Result<bool> {
        Ok(self.refresh_counted().await? != Refreshed::Unchanged)
    }

    /// [`refresh`](Self::refresh), saying how: the changes since the router's version
    /// applied from the catalog's log of changes when it holds them all and they only
    /// placed or removed keys (reading those keys' entries alone), else the whole directory
    /// loaded again ([`load`](Self::load)).
    pub async fn refresh_counted(&self) -> Result<Refreshed> {
        let router = &*self.router;
        let have = router.version();
        let version = self.version().await?;
        if version == have {
            return Ok(Refreshed::Unchanged);
        }
        if version > have
            && version - have <= INCREMENTAL_CHANGES
            && let Some(applied) = self.apply_changes(have).await?
        {
            return Ok(Refreshed::Applied { keys: applied });
        }
        let loaded = self.load().await?;
        Ok(Refreshed::Reloaded {
            entries: loaded.loaded,
        })
    }

    /// Applies the logged changes after `have` to the router; `None` when that cannot be
    /// done (a change missing from the log, a change of ranges, an entry the router cannot
    /// take, or the router changed meanwhile): the caller loads the whole directory.
    async fn apply_changes(&self, have: u64) -> Result<Option<usize>> {
        let router = &*self.router;
        let since = router.changes();
        let from = i64::try_from(have).unwrap_or(i64::MAX);
        let changes = change_entry::Entity::find()
            .filter(change_entry::Column::Directory.eq(self.name.as_str()))
            .filter(change_entry::Column::Version.gt(from))
            .order_by_asc(change_entry::Column::Version)
            .all(&self.conn)
            .await?;
        let mut keys: Vec<String> = Vec::with_capacity(changes.len());
        let mut expected = from;
        for change in &changes {
            expected += 1;
            if change.version != expected {
                return Ok(None);
            }
            match &change.key {
                Some(key) if !keys.contains(key) => keys.push(key.clone()),
                Some(_) => {}
                None => return Ok(None),
            }
        }
        let Some(last) = changes.last().map(|change| change.version) else {
            return Ok(None);
        };
        let mut placed: HashMap<String, String> = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            for row in entry::Entity::find()
                .filter(entry::Column::Directory.eq(self.name.as_str()))
                .filter(entry::Column::Key.is_in(chunk.iter().cloned()))
                .all(&self.conn)
                .await?
            {
                placed.insert(row.key, row.shard);
            }
        }
        let in_service = ShardRouter::shards(router);
        let mut applied = Vec::with_capacity(keys.len());
        for key in &keys {
            let Ok(parsed) = K::parse_tenant_id(key) else {
                return Ok(None);
            };
            let shard = placed.remove(key).map(ShardId::new);
            if shard
                .as_ref()
                .is_some_and(|shard| !in_service.contains(shard))
            {
                return Ok(None);
            }
            applied.push((parsed, shard));
        }
        let count = applied.len();
        let last = u64::try_from(last).unwrap_or(0);
        Ok(router.apply(applied, have, last, since)?.then_some(count))
    }
}
