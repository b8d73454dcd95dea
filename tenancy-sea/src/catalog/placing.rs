//! Placing keys in a directory: assigning a key or a range of keys to a shard, placing a
//! new tenant on the emptiest shard, removing a placement, and switching a moved tenant;
//! each in the catalog first (bumping the directory's version in the same transaction),
//! then in the router.

use super::claims::{Claim, now_millis};
use super::directory::{Changed, Directory};
use super::entities::{entry, move_entry, range_entry, shard_entry};
use super::shards::{DROPPED, ShardState};
use crate::entity::SqlTenantId;
use crate::error::{Error, Result};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect, Set,
    TransactionTrait,
};
use std::collections::HashMap;
use tenancy_core::{ShardId, ShardRouter};

impl<K: SqlTenantId> Directory<K> {
    /// Moves `tenant`'s placement from `from` to `to`: in the catalog, only if it is on
    /// `from` there (compare and set, bumping the version in the same transaction), then in
    /// the router. `Ok(false)` when the catalog had it elsewhere, and nothing changed.
    pub(crate) async fn switch(
        &self,
        tenant: &K,
        from: &ShardId,
        to: &ShardId,
        claim: &Claim,
        before_commit: impl FnOnce(),
    ) -> Result<bool> {
        let router = &*self.router;
        let txn = self.conn.begin().await?;
        self.guard_shard(&txn, to).await?;
        // Only the run that holds a live claim switches: one whose claim lapsed (and may
        // have been taken over) stops here, in the switch's own transaction.
        let mut held = move_entry::Entity::find()
            .filter(move_entry::Column::Directory.eq(self.name.clone()))
            .filter(move_entry::Column::Key.eq(tenant.to_string()))
            .filter(move_entry::Column::Owner.eq(claim.owner.clone()))
            .filter(move_entry::Column::ExpiresAt.gt(now_millis()));
        if txn.get_database_backend() != sea_orm::DbBackend::Sqlite {
            held = held.lock_exclusive();
        }
        if held.one(&txn).await?.is_none() {
            txn.rollback().await?;
            return Err(Error::TenantMoving {
                tenant: tenant.to_string(),
            });
        }
        let switched = entry::Entity::update_many()
            .col_expr(entry::Column::Shard, Expr::value(to.as_str()))
            .filter(entry::Column::Directory.eq(self.name.as_str()))
            .filter(entry::Column::Key.eq(tenant.to_string()))
            .filter(entry::Column::Shard.eq(from.as_str()))
            .exec(&txn)
            .await?;
        if switched.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(false);
        }
        self.bump(&txn, Changed::Key(&tenant.to_string())).await?;
        before_commit();
        txn.commit().await?;
        router.assign(tenant, to.clone())?;
        Ok(true)
    }

    /// Places the integer keys from `lower_bound` up to the next range's bound on `shard`:
    /// in the catalog, then in the router. Keys with an entry of their own
    /// ([`assign`](Self::assign)) keep it.
    pub async fn assign_range(&self, lower_bound: i64, shard: impl Into<ShardId>) -> Result<()> {
        let router = &*self.router;
        let shard = shard.into();
        if !tenancy_core::ShardRouter::shards(router).contains(&shard) {
            return Err(tenancy_core::RoutingError::UnknownShard(shard.to_string()).into());
        }
        let id = (self.name.clone(), lower_bound);
        let previous = range_entry::Entity::find_by_id(id.clone())
            .one(&self.conn)
            .await?;
        if previous
            .as_ref()
            .is_none_or(|row| row.shard != shard.as_str())
        {
            self.refuse_draining(&shard).await?;
        }
        let txn = self.conn.begin().await?;
        self.guard_shard(&txn, &shard).await?;
        self.put_range(&txn, lower_bound, shard.as_str()).await?;
        self.bump(&txn, Changed::Range).await?;
        txn.commit().await?;
        if let Err(error) = router.assign_range(lower_bound, shard) {
            // The shard left the router meanwhile: the catalog goes back to what it held.
            let txn = self.conn.begin().await?;
            match previous {
                Some(row) => self.put_range(&txn, lower_bound, &row.shard).await?,
                None => {
                    range_entry::Entity::delete_by_id(id).exec(&txn).await?;
                }
            }
            self.bump(&txn, Changed::Range).await?;
            txn.commit().await?;
            return Err(error.into());
        }
        Ok(())
    }

    async fn put_range(
        &self,
        txn: &DatabaseTransaction,
        lower_bound: i64,
        shard: &str,
    ) -> Result<()> {
        range_entry::Entity::insert(range_entry::ActiveModel {
            directory: Set(self.name.clone()),
            lower_bound: Set(lower_bound),
            shard: Set(shard.to_owned()),
        })
        .on_conflict(
            OnConflict::columns([
                range_entry::Column::Directory,
                range_entry::Column::LowerBound,
            ])
            .update_column(range_entry::Column::Shard)
            .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
        Ok(())
    }

    /// Removes the range starting at `lower_bound`: from the catalog, then from the router.
    pub async fn remove_range(&self, lower_bound: i64) -> Result<()> {
        let router = &*self.router;
        let txn = self.conn.begin().await?;
        range_entry::Entity::delete_by_id((self.name.clone(), lower_bound))
            .exec(&txn)
            .await?;
        self.bump(&txn, Changed::Range).await?;
        txn.commit().await?;
        router.remove_range(lower_bound);
        Ok(())
    }

    /// Places `tenant` on `shard`: in the catalog, then in the router. A shard the router
    /// does not know is refused before the catalog is touched, and so is a shard the
    /// registry marks [draining](ShardState::Draining) ([`Error::ShardDraining`]) unless
    /// the key is on it already.
    pub async fn assign(&self, tenant: &K, shard: impl Into<ShardId>) -> Result<()> {
        let router = &*self.router;
        let shard = shard.into();
        tenant.validate()?;
        if !tenancy_core::ShardRouter::shards(router).contains(&shard) {
            return Err(tenancy_core::RoutingError::UnknownShard(shard.to_string()).into());
        }
        let id = (self.name.clone(), tenant.to_string());
        let previous = entry::Entity::find_by_id(id.clone())
            .one(&self.conn)
            .await?;
        if previous
            .as_ref()
            .is_none_or(|row| row.shard != shard.as_str())
        {
            self.refuse_draining(&shard).await?;
        }
        let txn = self.conn.begin().await?;
        self.guard_shard(&txn, &shard).await?;
        self.put_entry(&txn, &id.1, shard.as_str()).await?;
        self.bump(&txn, Changed::Key(&id.1)).await?;
        txn.commit().await?;
        if let Err(error) = router.assign(tenant, shard) {
            // The shard left the router meanwhile: the catalog goes back to what it held.
            let txn = self.conn.begin().await?;
            match previous {
                Some(row) => self.put_entry(&txn, &id.1, &row.shard).await?,
                None => {
                    entry::Entity::delete_by_id(id.clone()).exec(&txn).await?;
                }
            }
            self.bump(&txn, Changed::Key(&id.1)).await?;
            txn.commit().await?;
            return Err(error.into());
        }
        Ok(())
    }

    /// Places a new `tenant` on the shard of the router that holds the fewest keys of this
    /// directory, passing over draining shards (ties go to the first name), and returns
    /// it. A tenant placed already keeps its shard, which is returned: placing is safe to
    /// repeat, and when two processes place the same tenant at once, both get the shard
    /// the first one recorded. Every shard draining is [`Error::NoShardAvailable`].
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use tenancy_sea::{catalog::Directory, DirectoryRouter, ShardRouter};
    /// # async fn demo(catalog: sea_orm::DatabaseConnection) -> tenancy_sea::Result<()> {
    /// let router = Arc::new(DirectoryRouter::new(["s0", "s1"]));
    /// let directory = Directory::<i64>::new(catalog, router.clone());
    /// let home = directory.place(&42).await?; // the emptier shard
    /// assert_eq!(router.route(&42i64)?, home);
    /// assert_eq!(directory.place(&42).await?, home); // placed once
    /// # Ok(()) }
    /// ```
    pub async fn place(&self, tenant: &K) -> Result<ShardId> {
        let router = &*self.router;
        tenant.validate()?;
        let key = tenant.to_string();
        if let Some(row) = entry::Entity::find_by_id((self.name.clone(), key.clone()))
            .one(&self.conn)
            .await?
        {
            return self.settle(tenant, row.shard);
        }
        let draining: Vec<String> = shard_entry::Entity::find()
            .filter(shard_entry::Column::State.is_in([ShardState::Draining.as_str(), DROPPED]))
            .select_only()
            .column(shard_entry::Column::Name)
            .into_tuple()
            .all(&self.conn)
            .await?;
        let counts: HashMap<String, i64> = entry::Entity::find()
            .filter(entry::Column::Directory.eq(self.name.as_str()))
            .select_only()
            .column(entry::Column::Shard)
            .column_as(entry::Column::Key.count(), "keys")
            .group_by(entry::Column::Shard)
            .into_tuple::<(String, i64)>()
            .all(&self.conn)
            .await?
            .into_iter()
            .collect();
        let mut candidates = router.shards();
        candidates.retain(|shard| !draining.iter().any(|d| d == shard.as_str()));
        candidates.sort();
        let shard = candidates
            .into_iter()
            .min_by_key(|shard| counts.get(shard.as_str()).copied().unwrap_or(0))
            .ok_or_else(|| Error::NoShardAvailable {
                directory: self.name.clone(),
            })?;
        // Recorded only if no one placed the tenant meanwhile; the row that stands wins.
        // The conflict "updates" a key column to its own value: `DO NOTHING` has no
        // MySQL form that sea-query writes.
        let txn = self.conn.begin().await?;
        self.guard_shard(&txn, &shard).await?;
        entry::Entity::insert(entry::ActiveModel {
            directory: Set(self.name.clone()),
            key: Set(key.clone()),
            shard: Set(shard.to_string()),
        })
        .on_conflict(
            OnConflict::columns([entry::Column::Directory, entry::Column::Key])
                .update_column(entry::Column::Directory)
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
        self.bump(&txn, Changed::Key(&key)).await?;
        txn.commit().await?;
        let row = entry::Entity::find_by_id((self.name.clone(), key))
            .one(&self.conn)
            .await?
            .ok_or_else(|| {
                Error::Config(format!(
                    "the placement of {tenant} vanished from directory {} as it was made",
                    self.name
                ))
            })?;
        self.settle(tenant, row.shard)
    }

    /// Puts the catalog's placement of `tenant` in the router and returns its shard.
    fn settle(&self, tenant: &K, shard: String) -> Result<ShardId> {
        let router = &*self.router;
        let shard = ShardId::new(shard);
        router.assign(tenant, shard.clone())?;
        Ok(shard)
    }

    /// [`Error::ShardDraining`] when the registry marks `shard` draining. A shard the
    /// registry does not list (a topology built by hand) takes keys.
    /// In `txn`, takes `shard`'s registry row shared (a drop of the shard, which takes it
    /// exclusively, waits for this placement, then sees it) and refuses a shard dropped
    /// meanwhile: a process whose cache still has a dropped shard cannot place a key on
    /// it. A shard missing from the registry (a topology not built from it) passes.
    async fn guard_shard(&self, txn: &DatabaseTransaction, shard: &ShardId) -> Result<()> {
        let mut row = shard_entry::Entity::find_by_id(shard.as_str());
        if txn.get_database_backend() != sea_orm::DbBackend::Sqlite {
            row = row.lock_shared();
        }
        match row.one(txn).await? {
            Some(row) if row.state == DROPPED => {
                Err(tenancy_core::RoutingError::UnknownShard(shard.to_string()).into())
            }
            _ => Ok(()),
        }
    }

    pub(crate) async fn refuse_draining(&self, shard: &ShardId) -> Result<()> {
        let row = shard_entry::Entity::find_by_id(shard.as_str())
            .one(&self.conn)
            .await?;
        match row {
            Some(row) if row.state == DROPPED => {
                Err(tenancy_core::RoutingError::UnknownShard(shard.to_string()).into())
            }
            Some(row) if ShardState::parse(&row.state)? == ShardState::Draining => {
                Err(Error::ShardDraining {
                    shard: shard.to_string(),
                })
            }
            _ => Ok(()),
        }
    }

    async fn put_entry(&self, txn: &DatabaseTransaction, key: &str, shard: &str) -> Result<()> {
        entry::Entity::insert(entry::ActiveModel {
            directory: Set(self.name.clone()),
            key: Set(key.to_owned()),
            shard: Set(shard.to_owned()),
        })
        .on_conflict(
            OnConflict::columns([entry::Column::Directory, entry::Column::Key])
                .update_column(entry::Column::Shard)
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
        Ok(())
    }

    /// Removes `tenant`'s placement: from the catalog, then from the router.
    pub async fn remove(&self, tenant: &K) -> Result<()> {
        let router = &*self.router;
        let txn = self.conn.begin().await?;
        entry::Entity::delete_by_id((self.name.clone(), tenant.to_string()))
            .exec(&txn)
            .await?;
        self.bump(&txn, Changed::Key(&tenant.to_string())).await?;
        txn.commit().await?;
        router.remove(tenant);
        Ok(())
    }
}
