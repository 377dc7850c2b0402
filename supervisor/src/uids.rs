//! Distinct unprivileged uids for live containers, from a configured range.
//!
//! The kernel keeps some counters per user, not per container: RLIMIT_NPROC, inotify instances
//! and watches, keyrings, message queue bytes. Two containers running as one uid share them, so
//! one run could exhaust them for another. Every container therefore runs as a uid of its own:
//! it takes a [`UidLease`] when it is created (a pooled container at pool-fill time), and the
//! uid goes back only once the container has been removed ([`UidLease::park`] holds it while a
//! removal failed). A uid is at any time either free or held by exactly one lease.
//!
//! The uids need no /etc/passwd entry: the container's environment sets `HOME=/work`, and
//! CPython, PyPy, Node.js and the JVM (user.home) take their home from it.
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// An inclusive range of uids, `first-last`; the container's group id is its uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    first: u32,
    last: u32,
}

/// Lowest uid a range may start at: below it are the system's and its users' own ids (Debian
/// hands out 1000 and up to people), which a run must share nothing with.
pub const MIN_UID: u32 = 10_000;
/// Highest uid a range may end at: above 2^31 some tools read a uid as negative.
pub const MAX_UID: u32 = i32::MAX as u32 - 1;
/// `nobody`, and the 16-bit -1: ids that files and tools give a meaning of their own.
const RESERVED: [u32; 2] = [65_534, 65_535];

impl UidRange {
    /// 1000 uids, far more than the running slots and the pools of one machine need.
    pub const DEFAULT: UidRange = UidRange {
        first: 20_000,
        last: 20_999,
    };

    pub fn new(first: u32, last: u32) -> Result<UidRange, String> {
        if first > last {
            return Err(format!("{first}-{last}: the first uid is above the last"));
        }
        if first < MIN_UID || last > MAX_UID {
            return Err(format!(
                "{first}-{last}: uids must lie within {MIN_UID}-{MAX_UID} (unprivileged, apart from the system's and its users')"
            ));
        }
        if let Some(uid) = RESERVED.iter().find(|&&uid| (first..=last).contains(&uid)) {
            return Err(format!(
                "{first}-{last}: holds {uid}, which stands for nobody or -1"
            ));
        }
        Ok(UidRange { first, last })
    }

    pub const fn first(&self) -> u32 {
        self.first
    }

    pub const fn last(&self) -> u32 {
        self.last
    }

    /// How many uids the range holds (at least 1).
    pub const fn len(&self) -> usize {
        (self.last - self.first) as usize + 1
    }

    /// Never true: a range holds at least one uid (here for clippy's `len_without_is_empty`).
    pub const fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, uid: u32) -> bool {
        (self.first..=self.last).contains(&uid)
    }
}

impl Default for UidRange {
    fn default() -> Self {
        UidRange::DEFAULT
    }
}

impl fmt::Display for UidRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for UidRange {
    type Err = String;

    /// `START-END`, both inclusive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((first, last)) = s.split_once('-') else {
            return Err(format!("{s:?}: expected START-END, e.g. 20000-20999"));
        };
        let number = |part: &str| {
            part.trim()
                .parse::<u32>()
                .map_err(|_| format!("{s:?}: {part:?} is not a uid (a whole number)"))
        };
        UidRange::new(number(first)?, number(last)?)
    }
}

/// Every uid of the range is held by a live container (or one whose removal failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no free uid in {range}: {held} held by live containers, {parked} by containers not removed yet (widen --run-uids)")]
pub struct NoFreeUid {
    pub range: UidRange,
    pub held: usize,
    pub parked: usize,
}

/// The allocator of one supervisor. Cheap to clone; clones share the uids.
#[derive(Clone)]
pub struct Uids {
    shared: Arc<Shared>,
}

struct Shared {
    range: UidRange,
    state: Mutex<State>,
}

struct State {
    /// The lowest uid never handed out; it and the ones above it are free. Counted, not
    /// listed, so a wide range costs no memory.
    untouched: u64,
    /// Uids given back, the longest free first. They go out only once the untouched ones are
    /// gone, so a uid rests as long as the range allows before it is used again.
    returned: VecDeque<u32>,
    /// Uids of containers whose removal failed, by container id: free once it is removed.
    parked: HashMap<String, u32>,
}

impl Uids {
    pub fn new(range: UidRange) -> Uids {
        Uids {
            shared: Arc::new(Shared {
                range,
                state: Mutex::new(State {
                    untouched: u64::from(range.first),
                    returned: VecDeque::new(),
                    parked: HashMap::new(),
                }),
            }),
        }
    }

    pub fn range(&self) -> UidRange {
        self.shared.range
    }

    /// A free uid, held until the lease is dropped (or parked).
    pub fn take(&self) -> Result<UidLease, NoFreeUid> {
        let mut state = self.shared.state.lock().expect("uids lock");
        let untouched = u32::try_from(state.untouched)
            .ok()
            .filter(|&uid| uid <= self.shared.range.last);
        let uid = match untouched {
            Some(uid) => {
                state.untouched += 1;
                Some(uid)
            }
            None => state.returned.pop_front(),
        };
        match uid {
            Some(uid) => Ok(UidLease {
                uid,
                shared: Some(self.shared.clone()),
            }),
            None => Err(NoFreeUid {
                range: self.shared.range,
                held: self.shared.range.len() - state.parked.len(),
                parked: state.parked.len(),
            }),
        }
    }

    /// Uids free now.
    pub fn free(&self) -> usize {
        let state = self.shared.state.lock().expect("uids lock");
        let untouched = (u64::from(self.shared.range.last) + 1).saturating_sub(state.untouched);
        untouched as usize + state.returned.len()
    }

    /// Ids of the containers whose uid waits for their removal.
    pub fn parked(&self) -> Vec<String> {
        let state = self.shared.state.lock().expect("uids lock");
        state.parked.keys().cloned().collect()
    }

    /// The parked container `container_id` has been removed: its uid is free again.
    pub fn removed(&self, container_id: &str) {
        let mut state = self.shared.state.lock().expect("uids lock");
        if let Some(uid) = state.parked.remove(container_id) {
            state.returned.push_back(uid);
        }
    }
}

/// One uid, held by one container. Dropping the lease frees the uid: drop it only once the
/// container is gone, or [`park`](Self::park) it under the container's id.
#[derive(Debug)]
#[must_use = "dropping the lease frees the uid at once"]
pub struct UidLease {
    uid: u32,
    /// Taken when the lease is parked, so that its drop frees nothing.
    shared: Option<Arc<Shared>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uids({})", self.range)
    }
}

impl UidLease {
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The container `container_id` that holds this uid could not be removed: keep the uid
    /// from being handed out until [`Uids::removed`] says it is gone.
    pub fn park(mut self, container_id: &str) {
        if let Some(shared) = self.shared.take() {
            let mut state = shared.state.lock().expect("uids lock");
            state.parked.insert(container_id.to_string(), self.uid);
        }
    }
}

impl Drop for UidLease {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            let mut state = shared.state.lock().expect("uids lock");
            state.returned.push_back(self.uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn range(first: u32, last: u32) -> UidRange {
        UidRange::new(first, last).unwrap()
    }

    #[test]
    fn ranges_parse_from_start_dash_end() {
        let r: UidRange = "20000-20999".parse().unwrap();
        assert_eq!((r.first(), r.last(), r.len()), (20_000, 20_999, 1000));
        assert_eq!(r.to_string(), "20000-20999");
        assert_eq!("30000-30000".parse::<UidRange>().unwrap().len(), 1);
        assert_eq!(UidRange::default(), UidRange::DEFAULT);
        assert_eq!("100000-165535".parse::<UidRange>().unwrap().len(), 65_536);
        for bad in [
            "",
            "20000",
            "20000-",
            "-20000",
            "a-b",
            "20999-20000",
            "0-10",
            "65000-66000",
        ] {
            assert!(bad.parse::<UidRange>().is_err(), "{bad:?} parsed");
        }
        let err = "0-999".parse::<UidRange>().unwrap_err();
        assert!(err.contains("within 10000-"), "{err}");
    }

    #[test]
    fn exhaustion_is_an_error_that_names_the_range() {
        let uids = Uids::new(range(20_000, 20_001));
        let a = uids.take().unwrap();
        let b = uids.take().unwrap();
        assert_ne!(a.uid(), b.uid());
        let err = uids.take().unwrap_err();
        assert_eq!(err.range, range(20_000, 20_001));
        assert_eq!((err.held, err.parked), (2, 0));
        assert!(err.to_string().contains("20000-20001"), "{err}");
        assert!(err.to_string().contains("--run-uids"), "{err}");
    }

    #[test]
    fn a_freed_uid_is_handed_out_again() {
        let uids = Uids::new(range(20_000, 20_001));
        let a = uids.take().unwrap();
        let b = uids.take().unwrap();
        let freed = a.uid();
        drop(a);
        assert_eq!(uids.free(), 1);
        let c = uids.take().unwrap();
        assert_eq!(c.uid(), freed);
        assert_ne!(c.uid(), b.uid());
    }

    #[test]
    fn the_longest_free_uid_goes_first() {
        let uids = Uids::new(range(20_000, 20_002));
        let a = uids.take().unwrap();
        assert_eq!(a.uid(), 20_000);
        drop(a);
        // 20000 went to the back of the queue: the two never handed out come first.
        let next: Vec<u32> = (0..3)
            .map(|_| uids.take().unwrap())
            .map(|l| {
                let uid = l.uid();
                std::mem::forget(l);
                uid
            })
            .collect();
        assert_eq!(next, [20_001, 20_002, 20_000]);
    }

    #[test]
    fn a_parked_uid_stays_taken_until_its_container_is_removed() {
        let uids = Uids::new(range(20_000, 20_000));
        let lease = uids.take().unwrap();
        lease.park("c1");
        assert_eq!(uids.parked(), ["c1"]);
        let err = uids.take().unwrap_err();
        assert_eq!((err.held, err.parked), (0, 1));
        uids.removed("someone-else");
        assert!(uids.take().is_err());
        uids.removed("c1");
        assert!(uids.parked().is_empty());
        assert_eq!(uids.take().unwrap().uid(), 20_000);
    }

    #[test]
    fn concurrent_takers_never_hold_the_same_uid() {
        let uids = Uids::new(range(20_000, 20_007));
        let held = Arc::new(Mutex::new(HashSet::new()));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (uids, held) = (uids.clone(), held.clone());
                std::thread::spawn(move || {
                    let mut took = 0;
                    for _ in 0..2000 {
                        // Each thread holds one uid at a time: 8 uids are always enough.
                        let lease = uids.take().expect("a free uid");
                        assert!(
                            held.lock().unwrap().insert(lease.uid()),
                            "{} twice",
                            lease.uid()
                        );
                        std::thread::yield_now();
                        assert!(held.lock().unwrap().remove(&lease.uid()));
                        drop(lease);
                        took += 1;
                    }
                    took
                })
            })
            .collect();
        let took: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(took, 8 * 2000);
        assert_eq!(uids.free(), 8, "every uid came back");
    }
}
