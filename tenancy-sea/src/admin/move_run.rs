//! One run of a move, once claimed: the tenant fenced on its old shard by the database, its
//! rows copied and verified by content, the catalog switched, the old rows removed and the
//! fence lifted; and, first, whatever a run that stopped part-way left, finished or undone.

use super::move_cleanup::{Sides, delete_rows, remove_moved};
use super::move_digest::{Digest, kind_between};
use super::move_fence::Fence;
use super::move_steps::{MoveStep, Unit, read};
use super::moves::{MoveProgress, MoveReport, SchemaOf};
use crate::catalog::Claim;
use crate::catalog::directory::Directory;
use crate::entity::SqlTenantId;
use crate::error::{Error, Result};
use crate::scope::{Session, UnitTxn, schema_exists, set_up};
use crate::tenancy::Tenancy;
use sea_orm::{DatabaseConnection, TransactionTrait};
use tenancy_core::{ShardId, ShardRouter};

/// What a run works with: the tenant, where it goes, its entities' steps, its schema (schema
/// per tenant) and where progress is told.
pub(super) struct Run<'r, T: SqlTenantId> {
    pub(super) tenancy: &'r Tenancy<T>,
    pub(super) directory: &'r Directory<T>,
    pub(super) claim: &'r Claim,
    pub(super) tenant: T,
    pub(super) to: ShardId,
    pub(super) steps: &'r [Box<dyn MoveStep<T> + 'r>],
    pub(super) schema: Option<SchemaOf>,
    pub(super) progress: &'r (dyn Fn(&MoveProgress) + Send + Sync + 'r),
}

/// How a run ended, for its claim: released, or kept to lapse so that the next run of the
/// tenant's move takes it over and finishes what this one left (its fence still up).
pub(super) enum Ending {
    Release,
    Keep,
}

/// A shard's name for an error, `none` for no shard.
pub(super) fn shard_name(shard: Option<ShardId>) -> String {
    shard.map_or_else(|| "none".to_owned(), |shard| shard.to_string())
}

/// The digests of the steps' tables in the catalog's text form: `table=rows:sum;` each.
fn digests_text<T>(steps: &[Box<dyn MoveStep<T> + '_>], digests: &[Digest]) -> String {
    steps
        .iter()
        .zip(digests)
        .map(|(step, digest)| format!("{}={};", step.table(), digest.to_text()))
        .collect()
}

/// Reads [`digests_text`]' form back, in the steps' order; `None` unless it names each
/// step's table.
pub(super) fn digests_of<T>(
    steps: &[Box<dyn MoveStep<T> + '_>],
    text: &str,
) -> Option<Vec<Digest>> {
    let parts: Vec<(&str, &str)> = text
        .split(';')
        .filter(|part| !part.is_empty())
        .map(|part| part.split_once('='))
        .collect::<Option<_>>()?;
    steps
        .iter()
        .map(|step| {
            let (_, digest) = parts.iter().find(|(table, _)| *table == step.table())?;
            Digest::from_text(digest)
        })
        .collect()
}

impl<T: SqlTenantId> Run<'_, T> {
    pub(super) fn fence(&self) -> Fence {
        let schema = self.schema.as_ref().map(|schema| schema.name.as_str());
        Fence::new(
            self.tenant.to_string(),
            self.claim.owner.clone(),
            self.steps
                .iter()
                .map(|step| step.fence_table(schema))
                .collect(),
        )
    }

    pub(super) fn session(&self, conn: &DatabaseConnection) -> Result<Option<Session>> {
        self.tenancy
            .session_of(&self.tenant, conn.get_database_backend())
    }

    /// The run, and whether its claim is released or kept.
    pub(super) async fn go(&self) -> (Result<MoveReport>, Ending) {
        let mut finished = 0;
        if let Some(abandoned) = &self.claim.abandoned {
            match self.finish_abandoned(abandoned).await {
                Ok(removed) => finished = removed,
                Err(error) => return (Err(error), Ending::Keep),
            }
        }
        let (mut outcome, ending) = self.move_it().await;
        if let Ok(report) = &mut outcome {
            report.removed += finished;
        }
        (outcome, ending)
    }

    async fn move_it(&self) -> (Result<MoveReport>, Ending) {
        let (tenant, to, directory) = (&self.tenant, &self.to, self.directory);
        let router = &**directory.router();
        let fail = |error| (Err(error), Ending::Release);
        let topology = match self.tenancy.topology() {
            Ok(topology) => topology,
            Err(error) => return fail(error),
        };
        // The catalog decides where the tenant lives; a cache that disagrees (another
        // process moved it) stops the move before anything changes.
        let cached = router.route(tenant).ok();
        let from = match directory.placement(tenant).await {
            Ok(Some(placed)) if Some(&placed) == cached.as_ref() => placed,
            Ok(placed) => {
                return fail(Error::StaleDirectory {
                    tenant: tenant.to_string(),
                    catalog: shard_name(placed),
                    cached: shard_name(cached),
                });
            }
            Err(error) => return fail(error),
        };
        if &from == to {
            // Nothing to move, and nothing is removed anywhere: rows of the tenant on
            // other shards are not known to be copies (`remove_leftovers` checks that).
            let report = MoveReport {
                from,
                to: to.clone(),
                copied: Vec::new(),
                removed: 0,
            };
            return (Ok(report), Ending::Release);
        }
        let prepared = async {
            directory.refuse_draining(to).await?;
            // Recorded before the fence goes up: a run that takes this claim over knows
            // where to look for it.
            directory
                .record_move(tenant, self.claim, &from, None)
                .await?;
            // The builder made sure the topology routes by the directory's router, so the
            // topology's shard of the tenant is `from` (read before the in-process fence,
            // which refuses it).
            let (_, from_conn) = topology.shard_of(tenant)?;
            let to_conn = topology.connection(to)?;
            Ok((topology.fence(tenant)?, from_conn, to_conn))
        };
        let (in_process, from_conn, to_conn) = match prepared.await {
            Ok(prepared) => prepared,
            Err(error) => return fail(error),
        };
        (self.progress)(&MoveProgress::Claimed {
            from: from.clone(),
            to: to.clone(),
        });
        tracing::info!(target: "tenancy::move", tenant = %tenant, %from, %to, "moving tenant");
        let fence = self.fence();
        if let Err(error) = fence.raise(&from_conn).await {
            // A fence half raised (MariaDB's triggers commit one by one) is lifted.
            self.lift(&fence, &from_conn).await;
            return fail(error);
        }
        (self.progress)(&MoveProgress::Fenced);
        let outcome = self.fenced(&fence, &from, (&from_conn, &to_conn)).await;
        drop(in_process);
        outcome
    }

    /// The move with the fence up on `from`: copy, verify, switch, clean up.
    async fn fenced(
        &self,
        fence: &Fence,
        from: &ShardId,
        (from_conn, to_conn): (&DatabaseConnection, &DatabaseConnection),
    ) -> (Result<MoveReport>, Ending) {
        let (tenant, to, directory) = (&self.tenant, &self.to, self.directory);
        let sessions = self
            .session(from_conn)
            .and_then(|from| Ok((from, self.session(to_conn)?)));
        let (from_session, to_session) = match sessions {
            Ok(sessions) => sessions,
            Err(error) => {
                self.lift(fence, from_conn).await;
                return (Err(error), Ending::Release);
            }
        };
        let sides = Sides {
            from: (from_conn, from_session.as_ref()),
            to: (to_conn, to_session.as_ref()),
        };
        let (copied, digests) = match self.copy_and_verify(&sides, from).await {
            Ok(done) => done,
            Err(error) => {
                // Before the switch the tenant still lives on `from`: its writes resume.
                self.lift(fence, from_conn).await;
                return (Err(error), Ending::Release);
            }
        };
        let text = digests_text(self.steps, &digests);
        if let Err(error) = directory
            .record_move(tenant, self.claim, from, Some(&text))
            .await
        {
            // A claim taken over belongs to another run now, fence included.
            if !matches!(error, Error::TenantMoving { .. }) {
                self.lift(fence, from_conn).await;
            }
            return (Err(error), Ending::Release);
        }
        (self.progress)(&MoveProgress::Verified);
        if let Err(error) = self.switch(from, &sides).await {
            // Switched or not is read back from the catalog in `switch`; an error here
            // leaves the fence and the claim to the next run, which reads it again.
            return (Err(error), Ending::Keep);
        }
        (self.progress)(&MoveProgress::Switched);
        // Every process that routes by a watched directory applies the switch (or stops
        // routing) before the old rows go: none can write them back there afterwards.
        if let Err(error) = self.await_routers().await {
            return (Err(error), Ending::Keep);
        }
        let removed = remove_moved(
            &sides,
            self.steps,
            tenant,
            &digests,
            self.schema.as_ref(),
            fence,
            self.progress,
        )
        .await;
        let removed = match removed {
            Ok(removed) => removed,
            Err(removal) => {
                let error = removal.into_error(tenant, from.as_str(), to.as_str());
                return (Err(error), Ending::Keep);
            }
        };
        if let Err(error) = fence.lift(from_conn).await {
            tracing::error!(
                target: "tenancy::move", tenant = %tenant, %from, %error,
                "the moved tenant's fence on its old shard was not lifted; the next move of \
                 the tenant lifts it after this one's claim lapses"
            );
            return (
                Err(Error::MoveUnfinished {
                    tenant: tenant.to_string(),
                    from: from.to_string(),
                    to: to.to_string(),
                    source: Box::new(error),
                }),
                Ending::Keep,
            );
        }
        (self.progress)(&MoveProgress::Done);
        tracing::info!(target: "tenancy::move", tenant = %tenant, %from, %to, "tenant moved");
        let report = MoveReport {
            from: from.clone(),
            to: to.clone(),
            copied,
            removed,
        };
        (Ok(report), Ending::Release)
    }

    /// Waits until every live router has applied the directory as it is now (the switch
    /// included), or stopped routing.
    pub(super) async fn await_routers(&self) -> Result<()> {
        let version = self.directory.version().await?;
        self.directory.await_routers(version).await
    }

    /// Lifts `fence` on `conn`, logging a failure: the claim then lapses, and the next run
    /// of the move lifts it.
    async fn lift(&self, fence: &Fence, conn: &DatabaseConnection) {
        if let Err(error) = fence.lift(conn).await {
            tracing::error!(
                target: "tenancy::move", tenant = %self.tenant, %error,
                "a move's fence was not lifted: the tenant's writes on its shard are refused \
                 until the next move of it (after this one's claim lapses) lifts it"
            );
        }
    }

    /// Copies the tenant's rows to `to` in one transaction (after removing the copies an
    /// interrupted move left there, where `from` holds them identically), then compares
    /// both sides by content. Returns the rows copied per table and `from`'s digests.
    async fn copy_and_verify(
        &self,
        sides: &Sides<'_>,
        from: &ShardId,
    ) -> Result<(Vec<(&'static str, u64)>, Vec<Digest>)> {
        let (tenant, to) = (&self.tenant, &self.to);
        let (to_conn, to_session) = sides.to;
        let (from_conn, from_session) = sides.from;
        let txn = match &self.schema {
            // Under schema per tenant the tenant's schema is made on `to` first (in the
            // copy's transaction: if the move fails, no schema is left there).
            Some(schema) => {
                let txn = to_conn.begin().await?;
                if !schema_exists(&txn, schema.name.as_str()).await? {
                    (schema.make)(&txn, &schema.name, schema.marked.as_ref()).await?;
                }
                let (txn, tag) = set_up(txn, to_conn, to_session).await?;
                Unit {
                    txn: UnitTxn::sea(txn),
                    tag: tag.unwrap_or_default(),
                }
            }
            None => Unit::begin(to_conn, to_session).await?,
        };
        let home = Unit::begin(from_conn, from_session).await?;
        for step in self.steps.iter().rev() {
            let (_, kept) = step.remove_verified(&home, &txn, tenant).await?;
            if kept > 0 {
                txn.rollback().await;
                return Err(Error::MoveDestinationNotEmpty {
                    tenant: tenant.to_string(),
                    shard: to.to_string(),
                    table: step.table(),
                    rows: kept,
                });
            }
        }
        let mut copied = Vec::with_capacity(self.steps.len());
        for step in self.steps {
            let rows = step.copy(&home, &txn, tenant).await?;
            copied.push((step.table(), rows));
            (self.progress)(&MoveProgress::Copying {
                table: step.table(),
                rows,
            });
        }
        home.commit().await?;
        for step in self.steps {
            step.advance_sequence(&txn).await?;
        }
        txn.commit().await?;
        (self.progress)(&MoveProgress::Copied);
        // By content: the fence refused every write since before the copy began, so both
        // sides hold the same rows unless a writer got past it (a session that disables
        // triggers); then the copies go and nothing moves.
        let kind = kind_between(
            from_conn.get_database_backend(),
            to_conn.get_database_backend(),
        );
        let mut digests = Vec::with_capacity(self.steps.len());
        for (step, (table, rows)) in self.steps.iter().zip(&copied) {
            // Both sides at once: two databases, each read once.
            let (there, here) = futures_util::future::try_join(
                read(from_conn, from_session, async |unit| {
                    step.digest(unit, tenant, kind).await
                }),
                read(to_conn, to_session, async |unit| {
                    step.digest(unit, tenant, kind).await
                }),
            )
            .await?;
            if there != here || here.rows != *rows {
                if let Err(undo) = delete_rows(to_conn, to_session, self.steps, tenant).await {
                    tracing::error!(
                        target: "tenancy::move", tenant = %tenant, %to, error = %undo,
                        "the copies of an abandoned move were not removed; the next move \
                         of the tenant clears them"
                    );
                }
                return Err(Error::MoveConflict {
                    tenant: tenant.to_string(),
                    table,
                    copied: *rows,
                    now: there.rows,
                    shard: from.to_string(),
                });
            }
            digests.push(there);
        }
        Ok((copied, digests))
    }

    /// Switches the tenant's placement in the catalog (a compare-and-set under this run's
    /// claim), then in this process's router. When the switch fails without taking, the
    /// copies on `to` are removed and the fence lifted: the tenant stays where it was.
    async fn switch(&self, from: &ShardId, sides: &Sides<'_>) -> Result<()> {
        let (tenant, to, directory) = (&self.tenant, &self.to, self.directory);
        let progress = self.progress;
        let switched = directory
            .switch(tenant, from, to, self.claim, || {
                progress(&MoveProgress::Switching);
            })
            .await;
        match switched {
            Ok(true) => return Ok(()),
            // This run's claim lapsed: another run may hold the tenant now, and its fence.
            Err(lost @ Error::TenantMoving { .. }) => return Err(lost),
            _ => {}
        }
        // Whether the switch took is read back from the catalog, not guessed from the
        // error: only a tenant still placed elsewhere has its copies removed.
        match directory.placement(tenant).await {
            Ok(Some(now)) if &now == to => {
                // It took (the error came after): carry on with the clean-up.
                if let Err(error) = directory.router().assign(tenant, to.clone()) {
                    tracing::warn!(target: "tenancy::move", %error, "router not updated");
                }
                Ok(())
            }
            Ok(placed) => {
                let (to_conn, to_session) = sides.to;
                if let Err(undo) = delete_rows(to_conn, to_session, self.steps, tenant).await {
                    tracing::error!(
                        target: "tenancy::move", tenant = %tenant, %to, error = %undo,
                        "the copies of an abandoned move were not removed; the next move of \
                         the tenant clears them"
                    );
                }
                self.lift(&self.fence(), sides.from.0).await;
                Err(match switched {
                    Err(error) => error,
                    Ok(_) => Error::StaleDirectory {
                        tenant: tenant.to_string(),
                        catalog: shard_name(placed),
                        cached: from.to_string(),
                    },
                })
            }
            // Unknown: the copies and the fence stay (the next run reads the catalog again)
            // and the error says what failed.
            Err(read) => Err(switched.err().unwrap_or(read)),
        }
    }
}
