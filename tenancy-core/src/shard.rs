use crate::TenantId;
use std::any::TypeId;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

/// The Rust type of the keys a router is asked to place, so that a router can refuse a
/// key whose canonical bytes it would misread (a string of eight bytes read as an
/// integer, a `String` tenant looked up in a directory of `i64` tenants).
#[derive(Clone, Copy, Debug)]
pub struct KeyType {
    id: TypeId,
    name: &'static str,
    integer: bool,
}

impl KeyType {
    /// The key type `K`.
    pub fn of<K: TenantId>() -> Self {
        KeyType {
            id: TypeId::of::<K>(),
            name: K::TYPE_NAME,
            integer: K::INTEGER,
        }
    }

    /// The type's name, e.g. `"i64"`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether its canonical bytes are an integer's ([`TenantId::INTEGER`]).
    pub fn is_integer(&self) -> bool {
        self.integer
    }

    /// Whether keys of this type and of `other` are the same keys: the same type, or two
    /// integer types (whose canonical bytes are the same `i64`).
    pub fn same_keys(&self, other: &KeyType) -> bool {
        self.id == other.id || (self.integer && other.integer)
    }
}

impl PartialEq for KeyType {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for KeyType {}

/// The name of a shard, e.g. `"shard_3"`. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(Arc<str>);

impl ShardId {
    /// A shard named `name`.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        ShardId(name.into())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ShardId {
    fn from(name: &str) -> Self {
        ShardId::new(name)
    }
}

/// Why a key could not be placed on a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoutingError {
    /// The router has no shards.
    NoShards,
    /// The router cannot place keys of this kind (e.g. a range router given a string).
    UnsupportedKey(&'static str),
    /// No range covers the key.
    OutOfRange(i64),
    /// The directory has no entry for the key.
    Unassigned,
    /// The shard is not one of the router's.
    UnknownShard(String),
    /// The router places keys by its list of shards (hash, range), so the list cannot
    /// change without moving keys.
    FixedShards(String),
    /// The directory has no room for another shard.
    TooManyShards(usize),
    /// The router places keys of another type than the one it was given.
    WrongKeyType {
        /// The type of keys the router places.
        expected: &'static str,
        /// The type of the key given.
        found: &'static str,
    },
    /// The shard still holds keys, so it cannot be withdrawn.
    ShardInUse {
        /// The shard.
        shard: String,
        /// How many keys and key ranges are placed on it.
        keys: usize,
    },
    /// The directory was not refreshed within its lease
    /// ([`DirectoryRouter::lease_until`]): a key may have moved since, so the router
    /// places none until it is refreshed.
    DirectoryStale,
}

impl fmt::Display for RoutingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoutingError::NoShards => f.write_str("the router has no shards"),
            RoutingError::UnsupportedKey(why) => write!(f, "unsupported shard key: {why}"),
            RoutingError::OutOfRange(key) => write!(f, "no shard range covers key {key}"),
            RoutingError::Unassigned => f.write_str("the directory assigns this key to no shard"),
            RoutingError::UnknownShard(shard) => {
                write!(f, "{shard} is not one of the router's shards")
            }
            RoutingError::FixedShards(shard) => write!(
                f,
                "this router places keys by its list of shards, so shard {shard} cannot be \
                 added or removed without moving keys; use a directory router"
            ),
            RoutingError::TooManyShards(n) => {
                write!(f, "the directory holds {n} shard names already, its limit")
            }
            RoutingError::WrongKeyType { expected, found } => {
                write!(f, "this router places keys of type {expected}, not {found}")
            }
            RoutingError::ShardInUse { shard, keys } => {
                write!(
                    f,
                    "shard {shard} still holds {keys} placed key(s) or key range(s)"
                )
            }
            RoutingError::DirectoryStale => f.write_str(
                "the directory was not refreshed within its lease, so keys may have moved: \
                 no key is placed until it is refreshed",
            ),
        }
    }
}

impl std::error::Error for RoutingError {}

/// Places a key on a shard: pure, deterministic, no I/O.
///
/// A key is given by its canonical bytes ([`TenantId::write_canonical_bytes`]), so the
/// same key lands on the same shard whatever its Rust type (`7i32` and `7i64` alike).
pub trait ShardRouter: Send + Sync {
    /// The shard of the key whose canonical bytes are `key`: borrowed from the router
    /// where it can be (no reference count touched on the hot path), owned otherwise.
    fn route_bytes(&self, key: &[u8]) -> Result<Cow<'_, ShardId>, RoutingError>;

    /// Every shard this router can return now, in order.
    fn shards(&self) -> Vec<ShardId>;

    /// Whether this router can place keys of type `key` by their canonical bytes. A hash
    /// router places any key; a range router only integers; a directory only keys of
    /// the type it was made for.
    fn places(&self, key: &KeyType) -> bool {
        let _ = key;
        true
    }

    /// Whether [`add_shard`](Self::add_shard) can work: `false` for routers whose
    /// placement depends on the list of shards (hash, range), where a new shard would move
    /// keys whose rows are still on their old shard.
    fn accepts_new_shards(&self) -> bool {
        false
    }

    /// The name of the key type this router places, for error messages (`any` when it
    /// places every key).
    fn key_type_name(&self) -> &'static str {
        "any"
    }

    /// Makes `shard` available for placements, moving no key.
    fn add_shard(&self, shard: &ShardId) -> Result<(), RoutingError> {
        Err(RoutingError::FixedShards(shard.to_string()))
    }

    /// Withdraws `shard`; refused while any key is placed on it.
    fn remove_shard(&self, shard: &ShardId) -> Result<(), RoutingError> {
        Err(RoutingError::FixedShards(shard.to_string()))
    }

    /// The router as [`Any`](std::any::Any), for code that holds it behind a
    /// `dyn ShardRouter` and needs its concrete type back (a [`DirectoryRouter`] to
    /// assign keys to); `None` by default.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }

    /// The shard of `key`; a key of a type the router does not place is
    /// [`RoutingError::WrongKeyType`].
    fn route<K: TenantId>(&self, key: &K) -> Result<ShardId, RoutingError>
    where
        Self: Sized,
    {
        let key_type = KeyType::of::<K>();
        if !self.places(&key_type) {
            return Err(RoutingError::WrongKeyType {
                expected: self.key_type_name(),
                found: key_type.name(),
            });
        }
        let mut bytes = Vec::with_capacity(16);
        key.write_canonical_bytes(&mut bytes);
        self.route_bytes(&bytes).map(Cow::into_owned)
    }
}

/// A shared router routes as the router it shares, so an application can keep a handle to
/// a [`DirectoryRouter`] (to assign keys) while a topology routes through it.
impl<R: ShardRouter + ?Sized> ShardRouter for Arc<R> {
    fn route_bytes(&self, key: &[u8]) -> Result<Cow<'_, ShardId>, RoutingError> {
        (**self).route_bytes(key)
    }

    fn shards(&self) -> Vec<ShardId> {
        (**self).shards()
    }

    fn places(&self, key: &KeyType) -> bool {
        (**self).places(key)
    }

    fn key_type_name(&self) -> &'static str {
        (**self).key_type_name()
    }

    fn accepts_new_shards(&self) -> bool {
        (**self).accepts_new_shards()
    }

    fn add_shard(&self, shard: &ShardId) -> Result<(), RoutingError> {
        (**self).add_shard(shard)
    }

    fn remove_shard(&self, shard: &ShardId) -> Result<(), RoutingError> {
        (**self).remove_shard(shard)
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        (**self).as_any()
    }
}

/// A stable hash router: XXH3-64 of the key's canonical bytes (seed 0), then jump
/// consistent hashing over the shards in order.
///
/// Both algorithms are fixed by their published specifications, and a golden test pins
/// the shard of 10,000 keys, so upgrading the library never moves data. Jump consistent
/// hashing moves only `1/n` of the keys when an `n`-th shard is appended; it places keys
/// by position, so shards are only ever added at the end.
///
/// ```
/// use tenancy_core::{HashRouter, ShardRouter};
///
/// let router = HashRouter::new(["s0", "s1", "s2", "s3"]);
/// let shard = router.route(&42i64)?;
/// assert_eq!(router.route(&42i32)?, shard); // same key, same shard
/// # Ok::<(), tenancy_core::RoutingError>(())
/// ```
#[derive(Clone, Debug)]
pub struct HashRouter {
    shards: Vec<ShardId>,
}

impl HashRouter {
    /// A router over `shards`, in this order.
    pub fn new<S: Into<ShardId>>(shards: impl IntoIterator<Item = S>) -> Self {
        HashRouter {
            shards: shards.into_iter().map(Into::into).collect(),
        }
    }

    /// The 64-bit hash the router places a key by.
    pub fn hash(key: &[u8]) -> u64 {
        xxhash_rust::xxh3::xxh3_64(key)
    }
}

/// Jump consistent hash (Lamping and Veach, 2014): the bucket in `0..buckets` of `key`.
pub fn jump_consistent_hash(mut key: u64, buckets: u32) -> u32 {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    // `b` is in 0..buckets here, since buckets > 0 is checked by the caller.
    u32::try_from(b).unwrap_or(0)
}

impl ShardRouter for HashRouter {
    fn route_bytes(&self, key: &[u8]) -> Result<Cow<'_, ShardId>, RoutingError> {
        let buckets = u32::try_from(self.shards.len()).map_err(|_| RoutingError::NoShards)?;
        if buckets == 0 {
            return Err(RoutingError::NoShards);
        }
        let bucket = jump_consistent_hash(Self::hash(key), buckets);
        self.shards
            .get(bucket as usize)
            .map(Cow::Borrowed)
            .ok_or(RoutingError::NoShards)
    }

    fn shards(&self) -> Vec<ShardId> {
        self.shards.clone()
    }
}

/// A range router for integer keys: each shard takes the keys from its lower bound up to
/// the next shard's.
///
/// ```
/// use tenancy_core::{RangeRouter, ShardRouter};
///
/// let router = RangeRouter::new([(0, "small"), (1_000, "medium"), (1_000_000, "large")])?;
/// assert_eq!(router.route(&999i64)?.as_str(), "small");
/// assert_eq!(router.route(&1_000i64)?.as_str(), "medium");
/// assert!(router.route(&-1i64).is_err());
/// # Ok::<(), tenancy_core::RoutingError>(())
/// ```
#[derive(Clone, Debug)]
pub struct RangeRouter {
    lower_bounds: Vec<i64>,
    shards: Vec<ShardId>,
}

impl RangeRouter {
    /// A router from `(lower bound, shard)` pairs, in any order; bounds must differ.
    pub fn new<S: Into<ShardId>>(
        ranges: impl IntoIterator<Item = (i64, S)>,
    ) -> Result<Self, RoutingError> {
        let mut ranges: Vec<(i64, ShardId)> =
            ranges.into_iter().map(|(b, s)| (b, s.into())).collect();
        if ranges.is_empty() {
            return Err(RoutingError::NoShards);
        }
        ranges.sort_by_key(|(bound, _)| *bound);
        if ranges.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(RoutingError::UnsupportedKey(
                "two ranges start at the same bound",
            ));
        }
        let (lower_bounds, shards) = ranges.into_iter().unzip();
        Ok(RangeRouter {
            lower_bounds,
            shards,
        })
    }
}

impl ShardRouter for RangeRouter {
    fn route_bytes(&self, key: &[u8]) -> Result<Cow<'_, ShardId>, RoutingError> {
        let bytes: [u8; 8] = key
            .try_into()
            .map_err(|_| RoutingError::UnsupportedKey("range routing needs an integer key"))?;
        let key = i64::from_be_bytes(bytes);
        let index = self.lower_bounds.partition_point(|bound| *bound <= key);
        match index.checked_sub(1) {
            Some(i) => self
                .shards
                .get(i)
                .map(Cow::Borrowed)
                .ok_or(RoutingError::OutOfRange(key)),
            None => Err(RoutingError::OutOfRange(key)),
        }
    }

    fn shards(&self) -> Vec<ShardId> {
        self.shards.clone()
    }

    fn places(&self, key: &KeyType) -> bool {
        key.is_integer()
    }

    fn key_type_name(&self) -> &'static str {
        "integer"
    }
}

/// A directory router: an explicit map from key to shard, for tenants placed by hand
/// (a big tenant on its own shard, a move between shards), and from ranges of integer keys
/// to shards. A key's own entry wins over its range. Lookups take a read lock and one
/// hash-map probe (then, for an integer key without an entry, one ordered-map probe);
/// changes are rare and take the write lock. `tenancy-sea` keeps the directory in a
/// catalog database and loads it into this router.
///
/// The router is typed by its keys (`DirectoryRouter<i64>`, `DirectoryRouter<String>`):
/// it takes keys of that type only, and places only integer keys by range, so a `String`
/// key of eight bytes is never read as a number.
///
/// ```
/// use tenancy_core::{DirectoryRouter, ShardRouter};
///
/// let router = DirectoryRouter::<i64>::new(["s0", "s1", "s2"]);
/// router.assign(&42, "s1")?;
/// router.assign_range(1_000, "s2")?; // integer keys from 1,000 up (to the next range)
/// assert_eq!(router.route(&42i64)?.as_str(), "s1");
/// assert_eq!(router.route(&5_000i64)?.as_str(), "s2");
/// assert!(router.route(&7i64).is_err()); // never guessed: unassigned keys are an error
/// # Ok::<(), tenancy_core::RoutingError>(())
/// ```
pub struct DirectoryRouter<K> {
    /// Every shard name the directory has known, by index: set once, never cleared, so a
    /// lookup can hand out a reference to it after releasing the lock.
    names: Box<[OnceLock<ShardId>]>,
    state: RwLock<Directory>,
    /// When the router was made: the origin of `deadline`.
    born: Instant,
    /// Nanoseconds after `born` from which the router places no key, or 0 for never.
    deadline: AtomicU64,
    keys: PhantomData<fn(&K)>,
}

impl<K: TenantId> fmt::Debug for DirectoryRouter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectoryRouter")
            .field("keys", &K::TYPE_NAME)
            .field("shards", &self.shards())
            .field("entries", &self.len())
            .finish_non_exhaustive()
    }
}

/// How many shards a directory can gain after it is made (a withdrawn shard that comes
/// back reuses its place).
pub const DIRECTORY_SPARE_SHARDS: usize = 1024;

/// A key's canonical bytes as the directory stores them: inline up to 16 bytes (every
/// integer and UUID key, short string keys), so that a lookup compares the key in the
/// table's own bucket instead of following a pointer to a separate allocation (one cache
/// miss fewer per lookup of a directory larger than the cache, and 32 bytes fewer per
/// entry).
type EntryKey = smallvec::SmallVec<[u8; 16]>;

#[derive(Debug, Default)]
struct Directory {
    /// How many of `names` are set.
    known: usize,
    /// The indexes of the shards in service, in order.
    active: Vec<usize>,
    keys: HashMap<EntryKey, usize>,
    /// Integer key ranges by lower bound: each runs up to the next bound.
    ranges: BTreeMap<i64, usize>,
    /// How many times the entries or shards changed in this process.
    changes: u64,
    /// The version of the stored directory the entries were last replaced from.
    version: u64,
}

impl Directory {
    fn placed_on(&self, index: usize) -> usize {
        self.keys
            .values()
            .chain(self.ranges.values())
            .filter(|i| **i == index)
            .count()
    }
}

impl<K: TenantId> Default for DirectoryRouter<K> {
    fn default() -> Self {
        DirectoryRouter::new(Vec::<ShardId>::new())
    }
}

impl<K: TenantId> DirectoryRouter<K> {
    /// An empty directory over `shards`.
    pub fn new<S: Into<ShardId>>(shards: impl IntoIterator<Item = S>) -> Self {
        let mut initial: Vec<ShardId> = Vec::new();
        for shard in shards.into_iter().map(Into::into) {
            if !initial.contains(&shard) {
                initial.push(shard);
            }
        }
        let names: Box<[OnceLock<ShardId>]> = (0..initial.len() + DIRECTORY_SPARE_SHARDS)
            .map(|_| OnceLock::new())
            .collect();
        for (slot, shard) in names.iter().zip(&initial) {
            let _ = slot.set(shard.clone());
        }
        DirectoryRouter {
            names,
            state: RwLock::new(Directory {
                known: initial.len(),
                active: (0..initial.len()).collect(),
                ..Directory::default()
            }),
            born: Instant::now(),
            deadline: AtomicU64::new(0),
            keys: PhantomData,
        }
    }

    /// Places keys until `deadline` and none after it ([`RoutingError::DirectoryStale`]),
    /// unless leased again: what a process that keeps its directory in step with a
    /// catalog sets after each refresh, so that a process that cannot refresh any more
    /// stops routing rather than place a key that may have moved. A router never leased
    /// places keys for ever.
    pub fn lease_until(&self, deadline: Instant) {
        let nanos = deadline.saturating_duration_since(self.born).as_nanos();
        // 0 means no lease: a deadline at the router's birth is one nanosecond after it.
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX).max(1);
        self.deadline.store(nanos, Ordering::Release);
    }

    /// Lifts the lease: the router places keys for ever again.
    pub fn unlease(&self) {
        self.deadline.store(0, Ordering::Release);
    }

    /// Whether the router's lease has run out (see [`lease_until`](Self::lease_until)).
    pub fn is_stale(&self) -> bool {
        let deadline = self.deadline.load(Ordering::Acquire);
        deadline != 0
            && u64::try_from(self.born.elapsed().as_nanos()).unwrap_or(u64::MAX) > deadline
    }

    fn name(&self, index: usize) -> Option<&ShardId> {
        self.names.get(index).and_then(OnceLock::get)
    }

    /// The index of `shard` among those in service.
    fn active_index(&self, state: &Directory, shard: &ShardId) -> Result<usize, RoutingError> {
        state
            .active
            .iter()
            .copied()
            .find(|i| self.name(*i) == Some(shard))
            .ok_or_else(|| RoutingError::UnknownShard(shard.to_string()))
    }

    /// Places `key` on `shard` (replacing any earlier entry).
    pub fn assign(&self, key: &K, shard: impl Into<ShardId>) -> Result<(), RoutingError> {
        let shard = shard.into();
        let mut state = self.write();
        let index = self.active_index(&state, &shard)?;
        state
            .keys
            .insert(EntryKey::from_slice(&key.canonical_bytes()), index);
        Ok(())
    }

    /// Replaces every key and range at once with `keys` and `ranges`, as read from version
    /// `version` of a stored directory: a lookup sees the old entries or the new ones,
    /// never a mix.
    ///
    /// Nothing changes, and the result is `Ok(false)`, when the router has changed since
    /// [`changes`](Self::changes) returned `unchanged_since` (an entry assigned meanwhile
    /// is newer than what was read), or when it holds a newer `version` already: read
    /// again and retry. A shard not in service is [`RoutingError::UnknownShard`], and
    /// then nothing changes either.
    ///
    /// ```
    /// use tenancy_core::{DirectoryRouter, ShardRouter};
    /// let router = DirectoryRouter::<i64>::new(["s0", "s1"]);
    /// router.assign(&1, "s0")?;
    /// let before = router.changes();
    /// assert!(router.replace([(2i64, "s1")], [(100, "s0")], 7, before)?);
    /// assert!(router.route(&1i64).is_err()); // gone with the old entries
    /// assert_eq!(router.route(&2i64)?.as_str(), "s1");
    /// assert_eq!(router.route(&150i64)?.as_str(), "s0");
    /// assert_eq!(router.version(), 7);
    /// // Read before a change made here: refused, the change stands.
    /// let stale = router.changes();
    /// router.assign(&3i64, "s1")?;
    /// assert!(!router.replace([(2i64, "s1")], [], 8, stale)?);
    /// assert_eq!(router.route(&3i64)?.as_str(), "s1");
    /// # Ok::<(), tenancy_core::RoutingError>(())
    /// ```
    pub fn replace<S: Into<ShardId>>(
        &self,
        keys: impl IntoIterator<Item = (K, S)>,
        ranges: impl IntoIterator<Item = (i64, S)>,
        version: u64,
        unchanged_since: u64,
    ) -> Result<bool, RoutingError> {
        let mut state = self
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.changes != unchanged_since || version < state.version {
            return Ok(false);
        }
        let keys = keys.into_iter();
        let mut new_keys = HashMap::with_capacity(keys.size_hint().0);
        // Each shard's name is looked up among the shards in service once, not once a key.
        let mut indexes: HashMap<ShardId, usize> = HashMap::new();
        for (key, shard) in keys {
            let shard = shard.into();
            let index = match indexes.get(&shard) {
                Some(index) => *index,
                None => {
                    let index = self.active_index(&state, &shard)?;
                    indexes.insert(shard, index);
                    index
                }
            };
            new_keys.insert(EntryKey::from_slice(&key.canonical_bytes()), index);
        }
        let mut new_ranges = BTreeMap::new();
        for (bound, shard) in ranges {
            if !K::INTEGER {
                return Err(RANGES_NEED_INTEGERS);
            }
            let index = self.active_index(&state, &shard.into())?;
            new_ranges.insert(bound, index);
        }
        state.keys = new_keys;
        state.ranges = new_ranges;
        state.changes += 1;
        state.version = version;
        Ok(true)
    }

    /// Applies the changes of the stored directory from `from_version` up to `to_version`
    /// (each a key placed on a shard, or forgotten with `None`), if the router holds
    /// exactly `from_version` and has not changed since `unchanged_since` (see
    /// [`changes`](Self::changes)); returns whether it did. Every shard is checked before
    /// anything changes: an unknown one is an error and nothing is applied.
    pub fn apply<S: Into<ShardId>>(
        &self,
        changes: impl IntoIterator<Item = (K, Option<S>)>,
        from_version: u64,
        to_version: u64,
        unchanged_since: u64,
    ) -> Result<bool, RoutingError> {
        let mut state = self
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.changes != unchanged_since || state.version != from_version {
            return Ok(false);
        }
        let mut resolved = Vec::new();
        for (key, shard) in changes {
            let index = match shard {
                Some(shard) => Some(self.active_index(&state, &shard.into())?),
                None => None,
            };
            resolved.push((EntryKey::from_slice(&key.canonical_bytes()), index));
        }
        for (key, index) in resolved {
            match index {
                Some(index) => state.keys.insert(key, index),
                None => state.keys.remove(&key),
            };
        }
        state.changes += 1;
        state.version = to_version;
        Ok(true)
    }

    /// How many times this router's entries or shards have changed (by any method);
    /// give it to [`replace`](Self::replace) to refuse a reload read before a change.
    pub fn changes(&self) -> u64 {
        self.read().changes
    }

    /// The version given to the last [`replace`](Self::replace) (0 before any).
    pub fn version(&self) -> u64 {
        self.read().version
    }

    /// Forgets `key`.
    pub fn remove(&self, key: &K) {
        self.write().keys.remove(key.canonical_bytes().as_slice());
    }

    /// Places the integer keys from `lower_bound` up to the next range's bound on `shard`
    /// (replacing a range with the same bound). A directory of keys that are not integers
    /// has no ranges: [`RoutingError::UnsupportedKey`].
    pub fn assign_range(
        &self,
        lower_bound: i64,
        shard: impl Into<ShardId>,
    ) -> Result<(), RoutingError> {
        if !K::INTEGER {
            return Err(RANGES_NEED_INTEGERS);
        }
        let shard = shard.into();
        let mut state = self.write();
        let index = self.active_index(&state, &shard)?;
        state.ranges.insert(lower_bound, index);
        Ok(())
    }

    /// Forgets the range starting at `lower_bound`: its keys fall to the range below.
    pub fn remove_range(&self, lower_bound: i64) {
        self.write().ranges.remove(&lower_bound);
    }

    /// The ranges, by lower bound.
    pub fn ranges(&self) -> Vec<(i64, ShardId)> {
        self.read()
            .ranges
            .iter()
            .filter_map(|(bound, index)| Some((*bound, self.name(*index)?.clone())))
            .collect()
    }

    /// How many keys and ranges are placed on `shard`.
    pub fn keys_on(&self, shard: &ShardId) -> usize {
        let state = self.read();
        match self.active_index(&state, shard) {
            Ok(index) => state.placed_on(index),
            Err(_) => 0,
        }
    }

    /// How many keys are assigned.
    pub fn len(&self) -> usize {
        self.read().keys.len()
    }

    /// Whether no key is assigned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // A panic while holding the lock leaves the map consistent (each update is one insert
    // or remove), so a poisoned lock is still usable.
    fn read(&self) -> RwLockReadGuard<'_, Directory> {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state, to change: counted in `changes`.
    fn write(&self) -> RwLockWriteGuard<'_, Directory> {
        let mut state = self
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.changes += 1;
        state
    }
}

/// What a directory of keys that are not integers answers to a range.
const RANGES_NEED_INTEGERS: RoutingError = RoutingError::UnsupportedKey(
    "ranges place integer keys; this directory's keys are not integers",
);

impl<K: TenantId> ShardRouter for DirectoryRouter<K> {
    fn route_bytes(&self, key: &[u8]) -> Result<Cow<'_, ShardId>, RoutingError> {
        if self.is_stale() {
            return Err(RoutingError::DirectoryStale);
        }
        let index = {
            let state = self.read();
            match state.keys.get(key) {
                Some(index) => *index,
                // Only integer keys (8 big-endian bytes) have ranges.
                None if !K::INTEGER => return Err(RoutingError::Unassigned),
                None => match <[u8; 8]>::try_from(key).map(i64::from_be_bytes) {
                    Ok(key) => *state
                        .ranges
                        .range(..=key)
                        .next_back()
                        .map(|(_, index)| index)
                        .ok_or(RoutingError::Unassigned)?,
                    Err(_) => return Err(RoutingError::Unassigned),
                },
            }
        };
        self.name(index)
            .map(Cow::Borrowed)
            .ok_or(RoutingError::Unassigned)
    }

    fn shards(&self) -> Vec<ShardId> {
        self.read()
            .active
            .iter()
            .filter_map(|i| self.name(*i).cloned())
            .collect()
    }

    fn places(&self, key: &KeyType) -> bool {
        key.same_keys(&KeyType::of::<K>())
    }

    fn key_type_name(&self) -> &'static str {
        K::TYPE_NAME
    }

    fn accepts_new_shards(&self) -> bool {
        true
    }

    fn add_shard(&self, shard: &ShardId) -> Result<(), RoutingError> {
        let mut state = self.write();
        let known = state.known;
        let index = match (0..known).find(|i| self.name(*i) == Some(shard)) {
            Some(index) => index,
            None => {
                let slot = self
                    .names
                    .get(known)
                    .ok_or(RoutingError::TooManyShards(self.names.len()))?;
                let _ = slot.set(shard.clone());
                state.known += 1;
                known
            }
        };
        if !state.active.contains(&index) {
            state.active.push(index);
        }
        Ok(())
    }

    fn remove_shard(&self, shard: &ShardId) -> Result<(), RoutingError> {
        let mut state = self.write();
        let Ok(index) = self.active_index(&state, shard) else {
            return Ok(());
        };
        let placed = state.placed_on(index);
        if placed > 0 {
            return Err(RoutingError::ShardInUse {
                shard: shard.to_string(),
                keys: placed,
            });
        }
        state.active.retain(|i| *i != index);
        Ok(())
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sixteen() -> HashRouter {
        HashRouter::new((0..16).map(|i| ShardId::new(format!("s{i:x}"))))
    }

    /// The shard of the keys 0..10,000 over 16 shards, one hex digit per key. Placement
    /// must never change: if this test fails, the library would move users' data.
    #[test]
    fn golden_placement_of_10000_keys() {
        let router = sixteen();
        let placement: String = (0..10_000i64)
            .map(|k| router.route(&k).unwrap().as_str()[1..].to_owned())
            .collect();
        let golden = include_str!("../tests/golden/hash_router_16_shards.txt").trim();
        assert_eq!(placement.len(), 10_000);
        assert_eq!(placement, golden);
        // And the placement is even: every shard gets 625 ± 15% of the keys.
        for shard in "0123456789abcdef".chars() {
            let n = golden.chars().filter(|c| *c == shard).count();
            assert!((530..720).contains(&n), "shard {shard}: {n} keys");
        }
    }

    #[test]
    fn hash_is_xxh3_of_canonical_bytes() {
        // XXH3-64 of the empty input, seed 0, from the specification's test vectors.
        assert_eq!(HashRouter::hash(b""), 0x2D06_8005_38D3_94C2);
        assert_eq!(
            sixteen().route(&"acme".to_owned()).unwrap(),
            sixteen().route_bytes(b"acme").unwrap().into_owned()
        );
    }

    #[test]
    fn jump_moves_about_one_nth_when_a_shard_is_added() {
        let moved = (0..10_000u64)
            .filter(|k| {
                let h = HashRouter::hash(&k.to_be_bytes());
                jump_consistent_hash(h, 10) != jump_consistent_hash(h, 11)
            })
            .count();
        // Expected 10,000 / 11 ≈ 909.
        assert!((800..1_020).contains(&moved), "{moved} keys moved");
        assert!(HashRouter::new(Vec::<ShardId>::new()).route(&1i64).is_err());
    }

    #[test]
    fn ranges() {
        let router = RangeRouter::new([(100, "b"), (i64::MIN, "a")]).unwrap();
        assert_eq!(router.route(&-5i64).unwrap().as_str(), "a");
        assert_eq!(router.route(&100i32).unwrap().as_str(), "b");
        assert_eq!(
            router.route(&"x".to_owned()),
            Err(RoutingError::WrongKeyType {
                expected: "integer",
                found: "String"
            })
        );
        assert_eq!(
            router.route_bytes(b"x"),
            Err(RoutingError::UnsupportedKey(
                "range routing needs an integer key"
            ))
        );
        assert!(RangeRouter::new([(1, "a"), (1, "b")]).is_err());
        assert!(RangeRouter::new(Vec::<(i64, ShardId)>::new()).is_err());
    }

    #[test]
    fn directory() {
        let router = DirectoryRouter::<i64>::new(["a", "b"]);
        assert!(router.is_empty());
        router.assign(&1i64, "a").unwrap();
        router.assign(&9, "b").unwrap();
        assert_eq!(router.route(&1i32).unwrap().as_str(), "a");
        assert_eq!(router.route(&9i64).unwrap().as_str(), "b");
        router.assign(&1i64, "b").unwrap();
        assert_eq!(router.route(&1i64).unwrap().as_str(), "b");
        assert_eq!(
            router.assign(&2i64, "c"),
            Err(RoutingError::UnknownShard("c".to_owned()))
        );
        router.remove(&1i64);
        assert_eq!(router.route(&1i64), Err(RoutingError::Unassigned));
        assert_eq!(router.len(), 1);
    }

    #[test]
    fn changes_apply_only_on_the_version_they_follow() {
        let router = DirectoryRouter::<i64>::new(["s0", "s1"]);
        assert!(
            router
                .replace([(1i64, "s0"), (2, "s0")], [], 5, router.changes())
                .unwrap()
        );
        let since = router.changes();
        // Not the version they follow: nothing applied.
        assert!(!router.apply([(1i64, Some("s1"))], 4, 6, since).unwrap());
        // An unknown shard: an error, nothing applied.
        assert!(
            router
                .apply([(1i64, Some("s1")), (2, Some("s9"))], 5, 7, since)
                .is_err()
        );
        assert_eq!(router.route(&1i64).unwrap().as_str(), "s0");
        assert!(
            router
                .apply([(1i64, Some("s1")), (2, None)], 5, 7, since)
                .unwrap()
        );
        assert_eq!(router.route(&1i64).unwrap().as_str(), "s1");
        assert_eq!(router.route(&2i64), Err(RoutingError::Unassigned));
        assert_eq!(router.version(), 7);
        // A change made here since the changes were read: refused.
        assert!(!router.apply([(1i64, Some("s0"))], 7, 8, since).unwrap());
    }

    #[test]
    fn a_leased_directory_stops_routing_when_its_lease_runs_out() {
        let router = DirectoryRouter::<i64>::new(["s0"]);
        router.assign(&1, "s0").unwrap();
        // Never leased: routes for ever.
        assert!(!router.is_stale());
        router.lease_until(Instant::now() + std::time::Duration::from_secs(60));
        assert_eq!(router.route(&1i64).unwrap().as_str(), "s0");
        router.lease_until(Instant::now() - std::time::Duration::from_millis(1));
        assert!(router.is_stale());
        assert_eq!(router.route(&1i64), Err(RoutingError::DirectoryStale));
        // A refresh leases it again; lifting the lease routes for ever.
        router.lease_until(Instant::now() + std::time::Duration::from_secs(60));
        assert_eq!(router.route(&1i64).unwrap().as_str(), "s0");
        router.lease_until(Instant::now() - std::time::Duration::from_millis(1));
        router.unlease();
        assert_eq!(router.route(&1i64).unwrap().as_str(), "s0");
    }

    #[test]
    fn directory_ranges() {
        let router = DirectoryRouter::<i64>::new(["a", "b", "c"]);
        router.assign_range(0, "a").unwrap();
        router.assign_range(100, "b").unwrap();
        router.assign(&150i64, "c").unwrap(); // a key's own entry wins over its range
        let shard = |k: i64| router.route(&k).map(|s| s.to_string());
        assert_eq!(shard(-1), Err(RoutingError::Unassigned)); // below every range
        assert_eq!(shard(0).unwrap(), "a");
        assert_eq!(shard(99).unwrap(), "a");
        assert_eq!(shard(100).unwrap(), "b");
        assert_eq!(shard(i64::MAX).unwrap(), "b");
        assert_eq!(shard(150).unwrap(), "c");
        assert_eq!(router.route(&99i32).unwrap().as_str(), "a"); // same key, any width
        // A key of another type is refused, not read as an integer.
        assert_eq!(
            router.route(&"abcdefgh".to_owned()),
            Err(RoutingError::WrongKeyType {
                expected: "i64",
                found: "String"
            })
        );
        assert_eq!(
            router.assign_range(5, "z"),
            Err(RoutingError::UnknownShard("z".to_owned()))
        );
        // A shard holding a range cannot be withdrawn; once the range goes, it can.
        assert!(matches!(
            router.remove_shard(&ShardId::new("b")),
            Err(RoutingError::ShardInUse { keys: 1, .. })
        ));
        router.remove_range(100);
        assert_eq!(shard(100).unwrap(), "a");
        router.remove_shard(&ShardId::new("b")).unwrap();
        assert_eq!(router.shards(), [ShardId::new("a"), ShardId::new("c")]);
        assert_eq!(router.ranges(), [(0, ShardId::new("a"))]);
    }

    /// Ids of the wrong type: a directory of `String` keys never reads an eight-byte key
    /// as an integer (no ranges), and routers refuse keys of a type they do not place.
    #[test]
    fn ids_of_the_wrong_type() {
        let strings = DirectoryRouter::<String>::new(["a", "b"]);
        assert!(strings.assign_range(0, "a").is_err());
        assert!(
            strings
                .replace(Vec::<(String, &str)>::new(), [(0, "a")], 1, 0)
                .is_err()
        );
        // Unplaced: an eight-byte string, whose bytes would read as an integer, and the
        // raw bytes of one.
        let key = "abcdefgh".to_owned();
        assert_eq!(strings.route(&key), Err(RoutingError::Unassigned));
        assert_eq!(
            strings.route_bytes(b"abcdefgh"),
            Err(RoutingError::Unassigned)
        );
        strings.assign(&key, "b").unwrap();
        assert_eq!(strings.route(&key).unwrap().as_str(), "b");
        assert!(matches!(
            strings.route(&42i64),
            Err(RoutingError::WrongKeyType {
                expected: "String",
                found: "i64"
            })
        ));
        // Integers of either width are the same keys; other types are not.
        let ints = DirectoryRouter::<i64>::new(["a"]);
        assert!(ints.places(&KeyType::of::<i32>()));
        assert!(!ints.places(&KeyType::of::<String>()));
        assert!(!ints.places(&KeyType::of::<uuid::Uuid>()));
        let range = RangeRouter::new([(0, "a")]).unwrap();
        assert!(matches!(
            range.route(&"abcdefgh".to_owned()),
            Err(RoutingError::WrongKeyType { .. })
        ));
        assert!(HashRouter::new(["a"]).places(&KeyType::of::<String>()));
    }

    #[test]
    fn replacing_the_directory_is_all_or_nothing() {
        let router = DirectoryRouter::<i64>::new(["a", "b"]);
        router.assign(&1i64, "a").unwrap();
        router.assign_range(0, "b").unwrap();
        let since = router.changes();
        let refused = router.replace([(2i64, "a"), (3, "gone")], [], 4, since);
        assert_eq!(refused, Err(RoutingError::UnknownShard("gone".into())));
        assert_eq!(router.route(&1i64).unwrap().as_str(), "a");
        assert_eq!(
            router.route(&2i64).unwrap().as_str(),
            "b",
            "by the old range"
        );
        assert_eq!(router.version(), 0);
        assert!(router.replace([(2i64, "a")], [], 5, since).unwrap());
        assert!(router.route(&1i64).is_err());
        assert!(router.ranges().is_empty());
        assert_eq!(router.version(), 5);
        // An older version than the one held is refused, whatever the changes.
        let now = router.changes();
        assert!(!router.replace([(9i64, "b")], [], 4, now).unwrap());
        assert!(router.route(&9i64).is_err());
    }

    /// Keys on both sides of the 16 bytes kept inline, and look-alikes of each other
    /// (a prefix, one byte more, another case), each route to their own shard, whether
    /// placed one by one, by a reload or by applied changes; a key never assigned is not
    /// found through a look-alike.
    #[test]
    fn inline_and_longer_keys_never_stand_for_each_other() {
        let router = DirectoryRouter::<String>::new(["a", "b"]);
        let keys = [
            "tenant-00000001",                          // 15 bytes
            "tenant-000000012",                         // 16
            "tenant-0000000123",                        // 17
            "Tenant-000000012",                         // 16, another case
            "tenant-000000012-with-a-longer-tail-here", // 40, the 16 as a prefix
        ];
        let shard_of = |n: usize| if n.is_multiple_of(2) { "a" } else { "b" };
        for (n, key) in keys.iter().enumerate() {
            router.assign(&(*key).to_owned(), shard_of(n)).unwrap();
        }
        let check = |router: &DirectoryRouter<String>| {
            for (n, key) in keys.iter().enumerate() {
                let routed = router.route(&(*key).to_owned()).unwrap();
                assert_eq!(routed.as_str(), shard_of(n), "{key}");
            }
            for stranger in ["tenant-0000000", "tenant-0000000123 ", "TENANT-000000012"] {
                assert!(router.route(&stranger.to_owned()).is_err(), "{stranger}");
            }
        };
        check(&router);
        let reloaded = DirectoryRouter::<String>::new(["a", "b"]);
        let placed = keys
            .iter()
            .enumerate()
            .map(|(n, key)| ((*key).to_owned(), shard_of(n)));
        assert!(reloaded.replace(placed, [], 1, 0).unwrap());
        check(&reloaded);
        let applied = DirectoryRouter::<String>::new(["a", "b"]);
        let changes = keys
            .iter()
            .enumerate()
            .map(|(n, key)| ((*key).to_owned(), Some(shard_of(n))));
        assert!(applied.apply(changes, 0, 1, 0).unwrap());
        check(&applied);
        // Forgetting the 16-byte key leaves its 40-byte extension placed.
        applied.remove(&keys[1].to_owned());
        assert!(applied.route(&keys[1].to_owned()).is_err());
        assert_eq!(applied.route(&keys[4].to_owned()).unwrap().as_str(), "a");
    }
}
