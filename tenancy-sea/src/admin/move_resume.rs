//! The run that takes over the claim of a move that stopped part-way (its process died, its
//! future was dropped) finishes or undoes it first, by what the catalog recorded of it.

use super::move_cleanup::{Sides, delete_rows, remove_moved};
use super::move_run::{Run, digests_of, shard_name};
use super::move_steps::{Unit, read};
use super::moves::MoveProgress;
use crate::catalog::AbandonedMove;
use crate::entity::SqlTenantId;
use crate::error::{Error, Result};

impl<T: SqlTenantId> Run<'_, T> {
    /// Finishes or undoes what a run that stopped part-way left (its claim, taken over by
    /// this run, says how far it got): switched, its clean-up is done (the old rows removed
    /// where they are still what it copied, its fence lifted); not switched, its copies are
    /// removed where the old shard holds them identically and its fence lifted.
    /// Returns how many old rows it removed.
    pub(super) async fn finish_abandoned(&self, abandoned: &AbandonedMove) -> Result<u64> {
        let Some(from) = &abandoned.from else {
            // It stopped before reading where the tenant lives: no fence, no copy.
            return Ok(0);
        };
        let tenant = &self.tenant;
        let topology = self.tenancy.topology()?;
        let from_conn = topology.connection(from)?;
        let to_conn = topology.connection(&abandoned.to)?;
        let placed = self.directory.placement(tenant).await?;
        let switched = placed.as_ref() == Some(&abandoned.to);
        (self.progress)(&MoveProgress::Resumed {
            from: from.clone(),
            to: abandoned.to.clone(),
            switched,
        });
        tracing::warn!(
            target: "tenancy::move", tenant = %tenant, %from, to = %abandoned.to, switched,
            "finishing the move a stopped run left"
        );
        // The fence is raised again under this run's owner (the same triggers), so this
        // run's removal passes it.
        let fence = self.fence();
        fence.raise(&from_conn).await?;
        let (from_session, to_session) = (self.session(&from_conn)?, self.session(&to_conn)?);
        let sides = Sides {
            from: (&from_conn, from_session.as_ref()),
            to: (&to_conn, to_session.as_ref()),
        };
        let mut removed = 0;
        if switched {
            self.await_routers().await?;
            let digests = abandoned
                .digest
                .as_deref()
                .and_then(|text| digests_of(self.steps, text))
                .ok_or_else(|| Error::MoveUnfinished {
                    tenant: tenant.to_string(),
                    from: from.to_string(),
                    to: abandoned.to.to_string(),
                    source: Box::new(Error::Config(
                        "the stopped move's record names other tables than this move's \
                         entities: name the same entities"
                            .to_owned(),
                    )),
                })?;
            removed = remove_moved(
                &sides,
                self.steps,
                tenant,
                &digests,
                self.schema.as_ref(),
                &fence,
                self.progress,
            )
            .await
            .map_err(|removal| removal.into_error(tenant, from.as_str(), abandoned.to.as_str()))?;
        } else if placed.as_ref() == Some(from) {
            self.undo_copies(&sides, abandoned).await?;
        } else {
            return Err(Error::StaleDirectory {
                tenant: tenant.to_string(),
                catalog: shard_name(placed),
                cached: from.to_string(),
            });
        }
        fence.lift(&from_conn).await?;
        // This process may route by what the stopped run had switched.
        self.directory.refresh().await?;
        Ok(removed)
    }

    /// Removes the copies a stopped run left on its destination: all at once when they
    /// are exactly what it verified, else each row that the old shard holds identically
    /// (anything else there stops the move, kept).
    async fn undo_copies(&self, sides: &Sides<'_>, abandoned: &AbandonedMove) -> Result<()> {
        let tenant = &self.tenant;
        let (to_conn, to_session) = sides.to;
        let recorded = abandoned
            .digest
            .as_deref()
            .and_then(|text| digests_of(self.steps, text));
        if let Some(recorded) = recorded {
            let mut same = true;
            for (step, digest) in self.steps.iter().zip(&recorded) {
                let here = read(to_conn, to_session, async |unit| {
                    step.digest(unit, tenant, digest.kind).await
                })
                .await?;
                same &= here == *digest;
            }
            if same {
                delete_rows(to_conn, to_session, self.steps, tenant).await?;
                return Ok(());
            }
        }
        let home = Unit::begin(sides.from.0, sides.from.1).await?;
        let there = Unit::begin(to_conn, to_session).await?;
        for step in self.steps.iter().rev() {
            let (_, kept) = step.remove_verified(&home, &there, tenant).await?;
            if kept > 0 {
                there.rollback().await;
                return Err(Error::MoveDestinationNotEmpty {
                    tenant: tenant.to_string(),
                    shard: abandoned.to.to_string(),
                    table: step.table(),
                    rows: kept,
                });
            }
        }
        there.commit().await?;
        home.commit().await?;
        Ok(())
    }
}
