//! Work spread over several shards, committed: each shard's transaction in turn, the
//! shards that committed named when a later one fails.

use crate::error::{Error, Result};

/// Commits each shard's transaction in turn. A commit that fails after others succeeded is
/// [`Error::PartialCommit`], naming both; the transactions after it roll back.
pub(crate) async fn commit_all(
    open: impl IntoIterator<Item = (String, crate::scope::UnitTxn)>,
) -> Result<()> {
    let mut committed = Vec::new();
    for (shard, txn) in open {
        if let Err(source) = txn.commit().await {
            if committed.is_empty() {
                return Err(Error::Shard { shard, source });
            }
            return Err(Error::PartialCommit {
                committed,
                failed: shard,
                source,
            });
        }
        committed.push(shard);
    }
    Ok(())
}
