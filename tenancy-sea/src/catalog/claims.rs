//! The claims of moves in the catalog: one run of a move holds a tenant's claim, renewed
//! while it runs, so that no two moves of a tenant run at once in any process.

use super::directory::Directory;
use super::entities::move_entry;
use crate::entity::SqlTenantId;
use crate::error::{Error, Result};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set};
use tenancy_core::ShardId;

/// A claim on a key for one run of a move (see [`move_entry`](super::entities::move_entry)).
#[derive(Debug)]
pub(crate) struct Claim {
    pub(crate) owner: String,
    /// The run whose lapsed claim this one took over, as far as it had got.
    pub(crate) abandoned: Option<AbandonedMove>,
}

/// What the catalog knows of a run of a move that stopped (its process died, or its future
/// was dropped) before it ended: enough for the run that takes its claim over to finish
/// or undo it.
#[derive(Clone, Debug)]
pub(crate) struct AbandonedMove {
    /// The shard it was moving the key to.
    pub(crate) to: ShardId,
    /// The shard it was moving the key from, once it had read it (its fence stands there
    /// from then on).
    pub(crate) from: Option<ShardId>,
    /// The key's rows by content on `from` as copied and verified, once it had done so.
    pub(crate) digest: Option<String>,
}

/// Milliseconds since the Unix epoch, by this process's clock.
pub(super) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// How long a move's claim lasts unless renewed, by default.
pub const DEFAULT_MOVE_LEASE: std::time::Duration = std::time::Duration::from_secs(60);

impl<K: SqlTenantId> Directory<K> {
    fn lease_millis(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// Records in the catalog that `tenant` is being moved to `to`, for one run of a move:
    /// a live claim of another run, in any process, is [`Error::TenantMoving`]; a lapsed
    /// one (its lease ended: its process died, or its future was dropped) is taken over.
    pub(crate) async fn claim_move(&self, tenant: &K, to: &ShardId) -> Result<Claim> {
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let key = tenant.to_string();
        let claimed = move_entry::Entity::insert(move_entry::ActiveModel {
            directory: Set(self.name.clone()),
            key: Set(key.clone()),
            shard: Set(to.to_string()),
            owner: Set(owner.clone()),
            expires_at: Set(now_millis().saturating_add(self.lease_millis())),
            from_shard: Set(None),
            digest: Set(None),
        })
        .exec_without_returning(&self.conn)
        .await;
        match claimed {
            Ok(_) => {
                return Ok(Claim {
                    owner,
                    abandoned: None,
                });
            }
            Err(error)
                if matches!(
                    error.sql_err(),
                    Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
                ) => {}
            Err(error) => return Err(error.into()),
        }
        // Taken over only if it has lapsed, in one compare-and-set on the lapsed run's
        // owner: of two processes taking over at once, one wins, and the winner knows what
        // the run it replaces had recorded. The record stays until the winner records its
        // own progress, so a winner that stops too leaves it for the next.
        let now = now_millis();
        let lapsed = move_entry::Entity::find_by_id((self.name.clone(), key.clone()))
            .filter(move_entry::Column::ExpiresAt.lt(now))
            .one(&self.conn)
            .await?;
        let Some(lapsed) = lapsed else {
            return Err(Error::TenantMoving { tenant: key });
        };
        let taken = move_entry::Entity::update_many()
            .col_expr(move_entry::Column::Owner, Expr::value(owner.clone()))
            .col_expr(move_entry::Column::Shard, Expr::value(to.to_string()))
            .col_expr(
                move_entry::Column::ExpiresAt,
                Expr::value(now.saturating_add(self.lease_millis())),
            )
            .filter(move_entry::Column::Directory.eq(self.name.clone()))
            .filter(move_entry::Column::Key.eq(key.clone()))
            .filter(move_entry::Column::Owner.eq(lapsed.owner.clone()))
            .filter(move_entry::Column::ExpiresAt.lt(now))
            .exec(&self.conn)
            .await?;
        if taken.rows_affected == 1 {
            tracing::warn!(
                target: "tenancy::move", tenant = %key, to = %lapsed.shard,
                from = ?lapsed.from_shard,
                "a lapsed move claim was taken over (its move's process died or gave up)"
            );
            Ok(Claim {
                owner,
                abandoned: Some(AbandonedMove {
                    to: ShardId::new(lapsed.shard),
                    from: lapsed.from_shard.map(ShardId::new),
                    digest: lapsed.digest,
                }),
            })
        } else {
            Err(Error::TenantMoving { tenant: key })
        }
    }

    /// Records in `claim`'s row what the move has reached: the shard it moves from (before
    /// its fence goes up there), then its rows' digest (before it switches). A claim that is
    /// no longer this run's is [`Error::TenantMoving`].
    pub(crate) async fn record_move(
        &self,
        tenant: &K,
        claim: &Claim,
        from: &ShardId,
        digest: Option<&str>,
    ) -> Result<()> {
        let recorded = move_entry::Entity::update_many()
            .col_expr(move_entry::Column::FromShard, Expr::value(from.to_string()))
            .col_expr(
                move_entry::Column::Digest,
                Expr::value(digest.map(str::to_owned)),
            )
            .filter(move_entry::Column::Directory.eq(self.name.clone()))
            .filter(move_entry::Column::Key.eq(tenant.to_string()))
            .filter(move_entry::Column::Owner.eq(claim.owner.clone()))
            .exec(&self.conn)
            .await?;
        if recorded.rows_affected == 1 {
            Ok(())
        } else {
            Err(Error::TenantMoving {
                tenant: tenant.to_string(),
            })
        }
    }

    /// Extends `claim` by a lease; `false` when it is no longer this run's (it lapsed and
    /// another run took it over, or an operator released it).
    pub(crate) async fn renew(&self, tenant: &K, claim: &Claim) -> Result<bool> {
        let renewed = move_entry::Entity::update_many()
            .col_expr(
                move_entry::Column::ExpiresAt,
                Expr::value(now_millis().saturating_add(self.lease_millis())),
            )
            .filter(move_entry::Column::Directory.eq(self.name.clone()))
            .filter(move_entry::Column::Key.eq(tenant.to_string()))
            .filter(move_entry::Column::Owner.eq(claim.owner.clone()))
            .exec(&self.conn)
            .await?;
        Ok(renewed.rows_affected == 1)
    }

    /// Runs `work` while holding `claim`, renewing it every third of the lease. If the
    /// claim is lost (not renewed for a whole lease and taken over, or released by an
    /// operator), `work` is dropped, which rolls back its open transactions, and the
    /// result is [`Error::TenantMoving`].
    pub(crate) async fn hold<R>(
        &self,
        tenant: &K,
        claim: &Claim,
        work: impl std::future::Future<Output = Result<R>>,
    ) -> Result<R> {
        let renewals = async {
            let mut renewed = std::time::Instant::now();
            loop {
                futures_timer::Delay::new(self.lease / 3).await;
                // The claim lasts a lease from when the renewal was sent (the catalog's
                // clock reads "now" no earlier), however long the answer takes.
                let sent = std::time::Instant::now();
                match self.renew(tenant, claim).await {
                    Ok(true) => renewed = sent,
                    Ok(false) => {
                        return Err(Error::TenantMoving {
                            tenant: tenant.to_string(),
                        });
                    }
                    Err(error) => tracing::warn!(
                        target: "tenancy::move", tenant = %tenant, %error,
                        "renewing a move's claim failed; trying again"
                    ),
                }
                // Not renewed for half a lease: the claim may lapse before the next try,
                // and another run may take it over. Stop before that can happen.
                if renewed.elapsed() >= self.lease / 2 {
                    tracing::error!(
                        target: "tenancy::move", tenant = %tenant,
                        "a move's claim could not be renewed for half its lease: the move stops"
                    );
                    return Err(Error::TenantMoving {
                        tenant: tenant.to_string(),
                    });
                }
            }
        };
        futures_util::pin_mut!(work, renewals);
        match futures_util::future::select(work, renewals).await {
            futures_util::future::Either::Left((outcome, _))
            | futures_util::future::Either::Right((outcome, _)) => outcome,
        }
    }

    /// Clears this run's claim (not a claim another run took over).
    pub(crate) async fn release_claim(&self, tenant: &K, claim: &Claim) -> Result<()> {
        move_entry::Entity::delete_many()
            .filter(move_entry::Column::Directory.eq(self.name.clone()))
            .filter(move_entry::Column::Key.eq(tenant.to_string()))
            .filter(move_entry::Column::Owner.eq(claim.owner.clone()))
            .exec(&self.conn)
            .await?;
        Ok(())
    }

    /// The keys whose moves stopped part-way: claims that lapsed after their move had
    /// recorded where it moved from (its fence stands there), each with the shard it was
    /// moving to.
    pub(crate) async fn lapsed_moves(&self) -> Result<Vec<(String, ShardId)>> {
        Ok(move_entry::Entity::find()
            .filter(move_entry::Column::Directory.eq(self.name.clone()))
            .filter(move_entry::Column::ExpiresAt.lt(now_millis()))
            .filter(move_entry::Column::FromShard.is_not_null())
            .all(&self.conn)
            .await?
            .into_iter()
            .map(|row| (row.key, ShardId::new(row.shard)))
            .collect())
    }

    /// Clears the claim on `tenant`, whoever holds it. A move clears its own when it ends;
    /// a claim whose move's process died lapses after the lease
    /// ([`with_move_lease`](Self::with_move_lease)). Call this to clear it sooner, once
    /// sure that no move of the tenant runs.
    pub async fn release_move(&self, tenant: &K) -> Result<()> {
        move_entry::Entity::delete_by_id((self.name.clone(), tenant.to_string()))
            .exec(&self.conn)
            .await?;
        Ok(())
    }
}
