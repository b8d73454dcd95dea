//! Why no unique id was issued: [`UniqueIdError`], inside [`Error::UniqueId`](super::Error).

/// Why `catalog::UniqueIds` issued no id, or why a row of an entity
/// whose key is `#[unique_id]` was not written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UniqueIdError {
    /// Every node number is held by a live process: no node is free for this one.
    #[error(
        "all {nodes} id nodes are held by live processes; one is freed when its process \
         releases it or its lease runs out"
    )]
    NodesExhausted {
        /// How many nodes there are.
        nodes: u16,
    },

    /// The row's key is `#[unique_id]` and not set, and the tenancy has no id generator.
    #[error(
        "the key of `{table}` is `#[unique_id]` and was not set, and this tenancy issues no \
         ids: give it one with `Tenancy::builder(..).unique_ids(UniqueIds::new(catalog))`, or \
         set the key"
    )]
    NotConfigured {
        /// The table.
        table: &'static str,
    },

    /// The id clock refused (the id time ran out).
    #[error(transparent)]
    Clock(#[from] tenancy_core::IdError),
}
