//! 64-bit ids unique across shards and processes without coordination per id: a time part,
//! a node part and a sequence, like Twitter's Snowflake, with one difference that makes
//! uniqueness independent of clocks: a node issues ids only up to a *ceiling* in time that
//! it has recorded first (in the catalog, see `tenancy-sea`'s `UniqueIds`), and whoever
//! holds the node next starts above that ceiling. A clock that jumps back, two machines
//! whose clocks disagree, or a process that goes on issuing after losing its node cannot
//! make two equal ids: each node's ids grow strictly, and holders of one node issue in
//! disjoint, ascending spans of time.
//!
//! ```
//! use tenancy_core::{IdClock, UniqueIdParts};
//!
//! // Node 3, nothing issued on it before; its holder has recorded a ceiling of 10 s
//! // after the id epoch.
//! let mut clock = IdClock::new(3, 0)?;
//! clock.raise_ceiling(10_000);
//! let a = clock.next_id(5_000)?;
//! let b = clock.next_id(4_000)?; // the clock went back: still a larger id
//! assert!(b > a);
//! assert_eq!(UniqueIdParts::of(a).node, 3);
//! assert!(clock.next_id(10_001).is_err()); // past the ceiling: raise it first
//! # Ok::<(), tenancy_core::IdError>(())
//! ```

/// Bits of an id for the node that issued it: 1,024 nodes (processes) at once.
pub const NODE_BITS: u32 = 10;
/// Bits of an id for its sequence within one millisecond of one node: 4,096 per ms.
pub const SEQUENCE_BITS: u32 = 12;
/// Bits of an id for its milliseconds since [`ID_EPOCH_MILLIS`]: about 69 years.
pub const TIME_BITS: u32 = 63 - NODE_BITS - SEQUENCE_BITS;
/// The number of nodes: node numbers are `0..MAX_NODES`.
pub const MAX_NODES: u16 = 1 << NODE_BITS;
/// The start of id time, in milliseconds since the Unix epoch (2026-01-01T00:00:00Z).
pub const ID_EPOCH_MILLIS: u64 = 1_767_225_600_000;

const MAX_SEQUENCE: u16 = (1 << SEQUENCE_BITS) - 1;
const MAX_TIME: u64 = (1 << TIME_BITS) - 1;

/// Why no id was issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The node's ids have reached its recorded ceiling: the holder records a higher one
    /// (a round trip to the catalog) and asks again.
    #[error(
        "node {node} has issued ids up to its recorded ceiling ({ceiling} ms after the id \
         epoch); record a higher ceiling before issuing more"
    )]
    CeilingReached {
        /// The node.
        node: u16,
        /// Its ceiling, in milliseconds after [`ID_EPOCH_MILLIS`].
        ceiling: u64,
    },
    /// A node number outside `0..MAX_NODES`.
    #[error("node {0} is out of range: nodes are 0 to {max}", max = MAX_NODES - 1)]
    NodeOutOfRange(u32),
    /// The id time has run out (the year 2095).
    #[error("the id time has run out: {TIME_BITS} bits of milliseconds since 2026 are used up")]
    TimeExhausted,
}

/// The parts of an id made by an [`IdClock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UniqueIdParts {
    /// Milliseconds after [`ID_EPOCH_MILLIS`] (the issuing node's logical time, which never
    /// runs behind its wall clock and may run ahead of it under a burst).
    pub millis: u64,
    /// The node that issued it.
    pub node: u16,
    /// Its sequence within that millisecond of that node.
    pub sequence: u16,
}

impl UniqueIdParts {
    /// The parts of `id`.
    #[must_use]
    pub fn of(id: i64) -> Self {
        let id = id.unsigned_abs();
        UniqueIdParts {
            millis: id >> (NODE_BITS + SEQUENCE_BITS),
            // Masked to their widths first: the casts cannot truncate.
            node: ((id >> SEQUENCE_BITS) & u64::from(MAX_NODES - 1)) as u16,
            sequence: (id & u64::from(MAX_SEQUENCE)) as u16,
        }
    }

    /// The id of these parts.
    #[must_use]
    pub fn id(&self) -> i64 {
        let raw = (self.millis & MAX_TIME) << (NODE_BITS + SEQUENCE_BITS)
            | u64::from(self.node & (MAX_NODES - 1)) << SEQUENCE_BITS
            | u64::from(self.sequence & MAX_SEQUENCE);
        // 63 bits at most: always a positive i64.
        i64::try_from(raw).unwrap_or(i64::MAX)
    }
}

/// One node's id clock: the last id it issued and the ceiling it may issue up to.
///
/// Pure state, no I/O and no clock of its own: the caller passes the time (milliseconds
/// after [`ID_EPOCH_MILLIS`]) and keeps the ceiling recorded before raising it here.
#[derive(Debug, Clone)]
pub struct IdClock {
    node: u16,
    /// The time part of the last id issued (or the floor the node starts above).
    last_millis: u64,
    /// The sequence of the last id at `last_millis`; `None` when none was issued there.
    last_sequence: Option<u16>,
    ceiling: u64,
}

impl IdClock {
    /// A clock for `node` whose earlier holders issued nothing after `floor` (their recorded
    /// ceiling): its ids have a time part above `floor`. The ceiling starts at `floor`, so
    /// nothing is issued until [`raise_ceiling`](Self::raise_ceiling).
    ///
    /// # Errors
    ///
    /// [`IdError::NodeOutOfRange`] for a node of [`MAX_NODES`] or more.
    pub fn new(node: u32, floor: u64) -> Result<Self, IdError> {
        let node = u16::try_from(node)
            .ok()
            .filter(|n| *n < MAX_NODES)
            .ok_or(IdError::NodeOutOfRange(node))?;
        Ok(IdClock {
            node,
            last_millis: floor,
            last_sequence: Some(MAX_SEQUENCE),
            ceiling: floor,
        })
    }

    /// The node.
    #[must_use]
    pub fn node(&self) -> u16 {
        self.node
    }

    /// The ceiling: no id has a time part above it.
    #[must_use]
    pub fn ceiling(&self) -> u64 {
        self.ceiling
    }

    /// The time part the next id would have at `now` (never below the last one).
    #[must_use]
    pub fn next_millis(&self, now: u64) -> u64 {
        match self.last_sequence {
            Some(MAX_SEQUENCE) if now <= self.last_millis => self.last_millis + 1,
            _ => now.max(self.last_millis),
        }
    }

    /// Lets the clock issue ids up to `ceiling`, once the holder has recorded it where the
    /// node's next holder reads it. A lower ceiling than the current one changes nothing.
    pub fn raise_ceiling(&mut self, ceiling: u64) {
        self.ceiling = self.ceiling.max(ceiling.min(MAX_TIME));
    }

    /// The next id at `now` (milliseconds after [`ID_EPOCH_MILLIS`]): larger than every id
    /// this clock issued before, whatever `now` says.
    ///
    /// # Errors
    ///
    /// [`IdError::CeilingReached`] when the id would pass the ceiling (nothing is issued);
    /// [`IdError::TimeExhausted`] past the last representable millisecond.
    pub fn next_id(&mut self, now: u64) -> Result<i64, IdError> {
        let millis = self.next_millis(now);
        if millis > MAX_TIME {
            return Err(IdError::TimeExhausted);
        }
        if millis > self.ceiling {
            return Err(IdError::CeilingReached {
                node: self.node,
                ceiling: self.ceiling,
            });
        }
        let sequence = match self.last_sequence {
            Some(last) if millis == self.last_millis => last + 1,
            _ => 0,
        };
        self.last_millis = millis;
        self.last_sequence = Some(sequence);
        Ok(UniqueIdParts {
            millis,
            node: self.node,
            sequence,
        }
        .id())
    }
}

/// Milliseconds after [`ID_EPOCH_MILLIS`] of a Unix time in milliseconds (0 before it).
#[must_use]
pub fn id_millis(unix_millis: u64) -> u64 {
    unix_millis.saturating_sub(ID_EPOCH_MILLIS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(node: u32, floor: u64, ceiling: u64) -> IdClock {
        let mut clock = IdClock::new(node, floor).unwrap_or_else(|e| panic!("{e}"));
        clock.raise_ceiling(ceiling);
        clock
    }

    #[test]
    fn parts_round_trip() {
        let parts = UniqueIdParts {
            millis: MAX_TIME,
            node: MAX_NODES - 1,
            sequence: MAX_SEQUENCE,
        };
        assert_eq!(parts.id(), i64::MAX);
        assert_eq!(UniqueIdParts::of(parts.id()), parts);
        assert_eq!(UniqueIdParts::of(0).id(), 0);
    }

    #[test]
    fn a_burst_borrows_the_next_milliseconds_up_to_the_ceiling() {
        let mut c = clock(1, 0, 3);
        let ids: Vec<i64> = (0..3 * 4096)
            .map(|_| c.next_id(1).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(UniqueIdParts::of(ids[0]).millis, 1);
        assert_eq!(UniqueIdParts::of(ids[3 * 4096 - 1]).millis, 3);
        // Milliseconds 1 to 3 are full: the next would pass the ceiling, and is refused.
        assert_eq!(
            c.next_id(1),
            Err(IdError::CeilingReached {
                node: 1,
                ceiling: 3
            })
        );
        c.raise_ceiling(4);
        assert!(c.next_id(1).is_ok_and(|id| id > ids[3 * 4096 - 1]));
    }

    #[test]
    fn a_new_holder_starts_above_the_floor() {
        let mut c = clock(9, 500, 1_000);
        let id = c.next_id(10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(UniqueIdParts::of(id).millis, 501);
        assert_eq!(UniqueIdParts::of(id).node, 9);
    }

    #[test]
    fn nodes_out_of_range_are_refused() {
        assert_eq!(
            IdClock::new(1024, 0).err(),
            Some(IdError::NodeOutOfRange(1024))
        );
    }
}
