//! Removing what moves left behind: [`Tenancy::remove_leftovers`] removes a tenant's rows
//! from the shards it does not live on, only those its home shard holds identically.

use super::move_steps::{EntityStep, MoveStep, Unit, read};
use crate::entity::{ScopedEntity, SqlTenantId, TenantScoped};
use crate::error::{Error, Result};
use crate::tenancy::Tenancy;
use sea_orm::{ActiveModelTrait, IntoActiveModel};
use std::marker::PhantomData;
use tenancy_core::ShardId;

/// What [`Tenancy::remove_leftovers`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeftoverReport {
    /// The shard the catalog places the tenant on, whose rows are the reference.
    pub home: ShardId,
    /// Rows removed from other shards, per shard and table: each held on `home` too, with
    /// the same primary key and the same values.
    pub removed: Vec<(ShardId, &'static str, u64)>,
    /// Rows kept on other shards, per shard and table: `home` does not hold them, or
    /// holds them with other values (a write that reached the old shard after a move, for
    /// one). Reconcile them by hand; nothing of them was changed.
    pub kept: Vec<(ShardId, &'static str, u64)>,
}

/// The removal of a tenant's leftover rows from the shards it does not live on, built by
/// [`Tenancy::remove_leftovers`].
#[must_use = "a removal does nothing until it is run"]
pub struct LeftoverRemoval<'a, T: SqlTenantId> {
    tenancy: &'a Tenancy<T>,
    tenant: T,
    steps: Vec<Box<dyn MoveStep<T> + 'a>>,
}

impl<T: SqlTenantId> Tenancy<T> {
    /// Removes `tenant`'s rows from every shard the catalog does not place it on, but only
    /// rows its home shard holds too, identically (same primary key, same values): copies
    /// that a move left behind. Anything else stays and is counted in
    /// [`LeftoverReport::kept`]: a row that exists only on the old shard may be the only
    /// copy of a write, and is never deleted by the library. Name the tenant's entities
    /// as for a move; each shard is cleaned in one transaction, children first. The
    /// tenant's move claim is held meanwhile, so no move of it runs at the same time.
    pub fn remove_leftovers(&self, tenant: impl Into<T>) -> LeftoverRemoval<'_, T> {
        LeftoverRemoval {
            tenancy: self,
            tenant: tenant.into(),
            steps: Vec::new(),
        }
    }
}

impl<'a, T: SqlTenantId> LeftoverRemoval<'a, T> {
    /// Adds an entity whose leftover rows of the tenant are removed (parents first).
    pub fn entity<E>(mut self) -> Self
    where
        E: TenantScoped<TenantId = T> + ScopedEntity<T>,
        E::Model: IntoActiveModel<E::ActiveModel> + Sync,
        E::ActiveModel: ActiveModelTrait<Entity = E> + Send,
    {
        self.steps.push(Box::new(EntityStep::<E>(PhantomData)));
        self
    }

    /// Runs the removal through the catalog directory given to the builder
    /// ([`TenancyBuilder::directory`](crate::TenancyBuilder::directory); without one, it
    /// is [`Error::Config`]).
    pub async fn run(self) -> Result<LeftoverReport> {
        self.tenant.validate()?;
        let directory = self.tenancy.require_directory("removing leftovers")?;
        if self.steps.is_empty() {
            return Err(Error::Config(
                "a removal names the tenant's entities: `.entity::<E>()` for each, parents first"
                    .to_owned(),
            ));
        }
        let home =
            directory
                .placement(&self.tenant)
                .await?
                .ok_or_else(|| Error::UnknownTenant {
                    tenant: self.tenant.to_string(),
                })?;
        let claim = directory.claim_move(&self.tenant, &home).await?;
        if claim
            .abandoned
            .as_ref()
            .is_some_and(|stopped| stopped.from.is_some())
        {
            // A move stopped part-way: its fence and record stay for the move that
            // finishes it (this claim lapses again, the record kept).
            return Err(Error::TenantMoving {
                tenant: self.tenant.to_string(),
            });
        }
        // Read again under the claim: a move may have switched the tenant meanwhile.
        let outcome = match directory.placement(&self.tenant).await {
            Ok(Some(now)) if now == home => {
                directory
                    .hold(&self.tenant, &claim, self.claimed(home))
                    .await
            }
            Ok(_) => Err(Error::TenantMoving {
                tenant: self.tenant.to_string(),
            }),
            Err(error) => Err(error),
        };
        if let Err(error) = directory.release_claim(&self.tenant, &claim).await {
            tracing::error!(
                target: "tenancy::move", tenant = %self.tenant, %error,
                "the claim of a leftover removal was not cleared: moves of the tenant are \
                 refused until its lease ends"
            );
        }
        outcome
    }

    async fn claimed(&self, home: ShardId) -> Result<LeftoverReport> {
        let tenancy = self.tenancy;
        let topology = tenancy.topology()?;
        let home_conn = topology.connection(&home)?;
        let home_session = tenancy.session_of(&self.tenant, home_conn.get_database_backend())?;
        let mut report = LeftoverReport {
            home: home.clone(),
            removed: Vec::new(),
            kept: Vec::new(),
        };
        for (shard, conn) in topology.shards() {
            if shard == home {
                continue;
            }
            let on_shard = |error| match error {
                Error::Db(source) => Error::Shard {
                    shard: shard.to_string(),
                    source,
                },
                other => other,
            };
            let session = tenancy.session_of(&self.tenant, conn.get_database_backend())?;
            let unit = match Unit::begin(&conn, session.as_ref()).await {
                Ok(unit) => unit,
                // Under schema per tenant, a shard without the tenant's schema holds
                // nothing of it.
                Err(Error::UnknownTenant { .. })
                    if session.as_ref().is_some_and(|s| s.is_schema()) =>
                {
                    continue;
                }
                Err(error) => return Err(on_shard(error)),
            };
            for step in self.steps.iter().rev() {
                let (removed, kept) = read(&home_conn, home_session.as_ref(), async |home| {
                    step.remove_verified(home, &unit, &self.tenant).await
                })
                .await
                .map_err(on_shard)?;
                if removed > 0 {
                    report.removed.push((shard.clone(), step.table(), removed));
                }
                if kept > 0 {
                    report.kept.push((shard.clone(), step.table(), kept));
                }
            }
            unit.commit().await.map_err(on_shard)?;
        }
        tracing::info!(
            target: "tenancy::move", tenant = %self.tenant, %home,
            removed = ?report.removed, kept = ?report.kept,
            "leftovers removed"
        );
        Ok(report)
    }
}
