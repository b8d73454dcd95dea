//! Operations on a [`Tenancy`](crate::Tenancy), as `impl Tenancy` blocks over the layers
//! below: provisioning tenant schemas and databases and migrating the fleet (`fleet`),
//! creating, dropping and migrating shards and following the catalog (`shards`), writes to
//! global tables (`globals`), moving a tenant between shards (`moves`, running
//! `move_steps`, comparing by `move_digest` and ending with `move_cleanup`) and removing what moves left
//! (`leftovers`); migrations of a tenant schema keep its shape marker (`markers`).

mod fleet;
mod globals;
mod leftovers;
mod markers;
mod move_cleanup;
mod move_digest;
mod move_fence;
mod move_resume;
mod move_run;
mod move_steps;
mod moves;
mod rebalance;
mod rebalance_plan;
mod shards;

pub use fleet::{FleetProgress, FleetReport};
pub use globals::Globals;
pub use leftovers::{LeftoverRemoval, LeftoverReport};
pub use moves::{MoveProgress, MoveReport, TenantMove};
pub use rebalance::{
    Balance, PlannedMove, Rebalance, RebalancePlan, RebalanceProgress, RebalanceReport,
};
pub use shards::CatalogRefresh;
