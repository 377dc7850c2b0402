//! How many containers each language's pool keeps: pure logic over a clock the caller passes
//! in, so that it is tested without a daemon or a runtime.
//!
//! - **Grow on a miss.** A claim that finds its pool empty raises the pool's target to the
//!   claims seen in the last [`BURST_WINDOW`] (the size the burst under way needed), and at
//!   least by one. Hits alone never grow a pool: a pool that refills in time is big enough.
//! - **Shrink when idle.** A pool that has not missed for `idle` loses one container of its
//!   target, and another for each further `idle`, down to its floor. A pool shrunk too far
//!   misses once and grows back to the burst size.
//! - **Floor and ceiling.** Every pool has a range it stays in: it starts at its table size,
//!   never goes below the floor (by default 1, so the first run of any language is warm and an
//!   unused language holds one paused container) nor above the ceiling.
//! - **One memory budget.** Each pooled container is charged its language's memory limit (the
//!   most it can ever hold: a paused container is frozen, the hot head is blocked on stdin).
//!   The targets together stay within the budget; a pool that must grow and does not fit takes
//!   room from pools above their floor that have not missed within the burst window, the least
//!   recently missed first. The floors alone must fit ([`SizingError`]).
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Claims this close together count as one burst: a miss grows the pool to their number.
pub const BURST_WINDOW: Duration = Duration::from_secs(10);
/// A pool that has not missed for this long shrinks by one (the default of `--pool-idle-seconds`).
pub const DEFAULT_IDLE: Duration = Duration::from_secs(60);
/// The ceiling of a pool that follows demand, unless configured.
pub const DEFAULT_CEILING: usize = 8;

/// The sizes a pool may take: `floor <= start <= ceiling`. A pinned pool has all three equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeRange {
    pub floor: usize,
    pub start: usize,
    pub ceiling: usize,
}

impl SizeRange {
    /// A pool of exactly `n` containers, whatever the demand (`--pool LANG=N`).
    pub fn pinned(n: usize) -> SizeRange {
        SizeRange {
            floor: n,
            start: n,
            ceiling: n,
        }
    }

    /// A pool that follows demand between `floor` and `ceiling`, starting at `start` (clamped).
    pub fn following(floor: usize, start: usize, ceiling: usize) -> SizeRange {
        let ceiling = ceiling.max(floor);
        SizeRange {
            floor,
            start: start.clamp(floor, ceiling),
            ceiling,
        }
    }

    /// The default of a language whose table size is `table`: start there, keep at least one,
    /// grow up to [`DEFAULT_CEILING`]. A table size of 0 means no pool.
    pub fn default_for(table: usize) -> SizeRange {
        if table == 0 {
            SizeRange::pinned(0)
        } else {
            SizeRange::following(1, table, DEFAULT_CEILING.max(table))
        }
    }

    pub fn is_pinned(&self) -> bool {
        self.floor == self.ceiling
    }
}

/// One pool as the sizing sees it.
#[derive(Debug, Clone)]
pub struct PoolPlan {
    pub language: String,
    /// What one pooled container is charged against the budget (the language's memory limit).
    pub cost_mib: u64,
    pub range: SizeRange,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SizingError {
    #[error("the pools' floors need {needed} MiB ({detail}), more than the pool memory budget of {budget} MiB (--pool-memory-mib); raise the budget or lower the floors with --pool LANG=MIN-MAX")]
    FloorsOverBudget {
        needed: u64,
        budget: u64,
        detail: String,
    },
}

#[derive(Debug, Clone)]
struct State {
    plan: PoolPlan,
    target: usize,
    /// Claims within the last [`BURST_WINDOW`], oldest first (at most `ceiling` kept).
    claims: VecDeque<Instant>,
    last_miss: Option<Instant>,
    /// When the target last changed (or the sizing started).
    last_change: Instant,
}

/// The targets of every pool of one engine.
#[derive(Debug, Clone)]
pub struct Sizing {
    budget_mib: u64,
    idle: Duration,
    pools: Vec<State>,
}

impl Sizing {
    /// Targets at each pool's start size, lowered toward the floors (last pools first) where
    /// the starts together do not fit the budget.
    pub fn new(
        budget_mib: u64,
        idle: Duration,
        plans: Vec<PoolPlan>,
        now: Instant,
    ) -> Result<Sizing, SizingError> {
        let floors: u64 = plans
            .iter()
            .map(|p| p.range.floor as u64 * p.cost_mib)
            .sum();
        if floors > budget_mib {
            let detail = plans
                .iter()
                .filter(|p| p.range.floor > 0)
                .map(|p| format!("{} {} x {} MiB", p.language, p.range.floor, p.cost_mib))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(SizingError::FloorsOverBudget {
                needed: floors,
                budget: budget_mib,
                detail,
            });
        }
        let mut sizing = Sizing {
            budget_mib,
            idle,
            pools: plans
                .into_iter()
                .map(|plan| State {
                    target: plan.range.floor,
                    plan,
                    claims: VecDeque::new(),
                    last_miss: None,
                    last_change: now,
                })
                .collect(),
        };
        for i in 0..sizing.pools.len() {
            let start = sizing.pools[i].plan.range.start;
            while sizing.pools[i].target < start && sizing.fits(i) {
                sizing.pools[i].target += 1;
            }
        }
        Ok(sizing)
    }

    pub fn len(&self) -> usize {
        self.pools.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }

    pub fn plan(&self, pool: usize) -> &PoolPlan {
        &self.pools[pool].plan
    }

    /// The containers pool `pool` should hold (ready or being made).
    pub fn target(&self, pool: usize) -> usize {
        self.pools[pool].target
    }

    /// MiB the targets are charged, in all.
    pub fn charged_mib(&self) -> u64 {
        self.pools
            .iter()
            .map(|s| s.target as u64 * s.plan.cost_mib)
            .sum()
    }

    pub fn budget_mib(&self) -> u64 {
        self.budget_mib
    }

    /// Whether one more container of pool `pool` fits in the budget.
    fn fits(&self, pool: usize) -> bool {
        self.charged_mib()
            .saturating_add(self.pools[pool].plan.cost_mib)
            <= self.budget_mib
    }

    /// A claim on pool `pool`: a hit, or a miss (the pool was empty). Returns the pools whose
    /// target changed (the one that grew, and any that gave it room).
    pub fn claimed(&mut self, pool: usize, hit: bool, now: Instant) -> Vec<usize> {
        let state = &mut self.pools[pool];
        while state
            .claims
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) > BURST_WINDOW)
        {
            state.claims.pop_front();
        }
        state.claims.push_back(now);
        while state.claims.len() > state.plan.range.ceiling.max(1) {
            state.claims.pop_front();
        }
        if hit {
            return Vec::new();
        }
        state.last_miss = Some(now);
        let want = (state.target + 1)
            .max(state.claims.len())
            .min(state.plan.range.ceiling);
        let mut changed = Vec::new();
        while self.pools[pool].target < want {
            if !self.fits(pool) {
                match self.donor(pool, now) {
                    Some(donor) => {
                        self.pools[donor].target -= 1;
                        self.pools[donor].last_change = now;
                        if !changed.contains(&donor) {
                            changed.push(donor);
                        }
                        continue;
                    }
                    None => break,
                }
            }
            self.pools[pool].target += 1;
            self.pools[pool].last_change = now;
            if !changed.contains(&pool) {
                changed.push(pool);
            }
        }
        changed
    }

    /// The pool to take a container's room from for `pool`: above its floor, no miss within
    /// the burst window, the least recently missed first (never missed is the least recent).
    fn donor(&self, pool: usize, now: Instant) -> Option<usize> {
        self.pools
            .iter()
            .enumerate()
            .filter(|&(i, s)| {
                i != pool
                    && s.target > s.plan.range.floor
                    && s.last_miss
                        .is_none_or(|t| now.saturating_duration_since(t) > BURST_WINDOW)
            })
            .min_by_key(|(_, s)| s.last_miss)
            .map(|(i, _)| i)
    }

    /// Shrink the pools that have not missed (nor changed) for the idle period, one container
    /// each. Returns the pools whose target changed.
    pub fn tick(&mut self, now: Instant) -> Vec<usize> {
        let idle = self.idle;
        let mut changed = Vec::new();
        for (i, s) in self.pools.iter_mut().enumerate() {
            let quiet_since = s.last_miss.map_or(s.last_change, |m| m.max(s.last_change));
            if s.target > s.plan.range.floor && now.saturating_duration_since(quiet_since) >= idle {
                s.target -= 1;
                s.last_change = now;
                changed.push(i);
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(language: &str, cost_mib: u64, range: SizeRange) -> PoolPlan {
        PoolPlan {
            language: language.into(),
            cost_mib,
            range,
        }
    }

    const IDLE: Duration = Duration::from_secs(60);

    fn secs(t0: Instant, s: f64) -> Instant {
        t0 + Duration::from_secs_f64(s)
    }

    #[test]
    fn a_burst_that_misses_grows_the_pool_to_the_burst_size() {
        let t0 = Instant::now();
        let mut s = Sizing::new(
            10_000,
            IDLE,
            vec![plan("java", 768, SizeRange::following(1, 2, 8))],
            t0,
        )
        .unwrap();
        assert_eq!(s.target(0), 2);
        // Five runs a second apart: two hits, then the pool is empty.
        assert!(s.claimed(0, true, secs(t0, 0.0)).is_empty());
        assert!(s.claimed(0, true, secs(t0, 1.0)).is_empty());
        assert_eq!(s.target(0), 2, "hits never grow a pool");
        assert_eq!(s.claimed(0, false, secs(t0, 2.0)), [0]);
        assert_eq!(s.target(0), 3, "three claims in the window");
        s.claimed(0, true, secs(t0, 3.0));
        s.claimed(0, false, secs(t0, 4.0));
        assert_eq!(s.target(0), 5, "the burst's five claims");
        // Claims outside the window do not count: a lone miss later grows by one.
        s.claimed(0, false, secs(t0, 30.0));
        assert_eq!(s.target(0), 6);
    }

    #[test]
    fn a_miss_after_hits_that_refilled_in_time_grows_to_all_claims_of_the_burst() {
        let t0 = Instant::now();
        let mut s = Sizing::new(
            10_000,
            IDLE,
            vec![plan("python", 256, SizeRange::following(1, 1, 8))],
            t0,
        )
        .unwrap();
        for i in 0..4 {
            s.claimed(0, true, secs(t0, f64::from(i) * 0.5));
        }
        s.claimed(0, false, secs(t0, 2.0));
        assert_eq!(s.target(0), 5);
    }

    #[test]
    fn growth_stops_at_the_ceiling() {
        let t0 = Instant::now();
        let mut s = Sizing::new(
            100_000,
            IDLE,
            vec![plan("python", 256, SizeRange::following(1, 1, 3))],
            t0,
        )
        .unwrap();
        for i in 0..10 {
            s.claimed(0, false, secs(t0, f64::from(i) * 0.1));
            assert!(s.target(0) <= 3);
        }
        assert_eq!(s.target(0), 3);
        assert!(
            s.claimed(0, false, secs(t0, 2.0)).is_empty(),
            "nothing changes at the ceiling"
        );
    }

    #[test]
    fn an_idle_pool_shrinks_one_step_per_idle_period_down_to_its_floor() {
        let t0 = Instant::now();
        let mut s = Sizing::new(
            100_000,
            IDLE,
            vec![plan("java", 768, SizeRange::following(1, 2, 8))],
            t0,
        )
        .unwrap();
        for i in 0..3 {
            s.claimed(0, false, secs(t0, f64::from(i)));
        }
        assert_eq!(s.target(0), 5, "2, then one more per miss");
        let missed = secs(t0, 2.0);
        assert!(s.tick(missed + IDLE - Duration::from_millis(1)).is_empty());
        assert_eq!(s.tick(missed + IDLE), [0]);
        assert_eq!(s.target(0), 4);
        assert!(
            s.tick(missed + IDLE + Duration::from_secs(1)).is_empty(),
            "one step per idle period"
        );
        // Hits do not keep a pool big: only misses say it is too small.
        s.claimed(0, true, missed + IDLE + Duration::from_secs(2));
        let mut t = missed + IDLE;
        for _ in 0..10 {
            t += IDLE;
            s.tick(t);
        }
        assert_eq!(s.target(0), 1, "down to the floor, never below");
        // Shrunk too far: one miss brings it back to what a burst needs.
        let later = t + Duration::from_secs(1);
        s.claimed(0, true, later);
        s.claimed(0, false, later + Duration::from_secs(1));
        assert_eq!(s.target(0), 2);
    }

    #[test]
    fn a_floor_of_zero_lets_an_unused_language_cost_nothing() {
        let t0 = Instant::now();
        let mut s = Sizing::new(
            100_000,
            IDLE,
            vec![plan("node", 512, SizeRange::following(0, 2, 4))],
            t0,
        )
        .unwrap();
        s.tick(t0 + IDLE);
        s.tick(t0 + IDLE * 2);
        s.tick(t0 + IDLE * 3);
        assert_eq!(s.target(0), 0);
    }

    #[test]
    fn pinned_pools_never_move() {
        let t0 = Instant::now();
        let mut s = Sizing::new(
            100_000,
            IDLE,
            vec![plan("python", 256, SizeRange::pinned(2))],
            t0,
        )
        .unwrap();
        for i in 0..5 {
            s.claimed(0, false, secs(t0, f64::from(i)));
        }
        s.tick(t0 + IDLE * 10);
        assert_eq!(s.target(0), 2);
    }

    #[test]
    fn the_budget_holds_across_languages_and_idle_pools_give_room() {
        let t0 = Instant::now();
        // 4 GiB: java 768 and python 256 a container.
        let mut s = Sizing::new(
            4096,
            IDLE,
            vec![
                plan("python", 256, SizeRange::following(1, 4, 8)),
                plan("java", 768, SizeRange::following(1, 2, 8)),
            ],
            t0,
        )
        .unwrap();
        assert_eq!((s.target(0), s.target(1)), (4, 2));
        assert_eq!(s.charged_mib(), 4 * 256 + 2 * 768);
        // A java burst: java grows, python (not missing) gives back down to its floor.
        for i in 0..8 {
            s.claimed(1, false, secs(t0, f64::from(i) * 0.5));
            assert!(s.charged_mib() <= 4096, "{}", s.charged_mib());
        }
        assert_eq!(s.target(0), 1, "python gave all it had above its floor");
        assert_eq!(s.target(1), (4096 - 256) as usize / 768);
        // Now python bursts, right after java missed: java is not a donor within the window.
        for i in 0..4 {
            s.claimed(0, false, secs(t0, 4.0 + f64::from(i) * 0.1));
            assert!(s.charged_mib() <= 4096);
        }
        assert_eq!(s.target(1), 5, "java missed within the window: kept");
        assert_eq!(s.target(0), 1 + (4096 - 256 - 5 * 768) as usize / 256);
        // Once java's burst is older than the window, python may take from it.
        s.claimed(0, false, secs(t0, 30.0));
        assert_eq!(s.target(1), 4);
        assert!(s.charged_mib() <= 4096);
    }

    #[test]
    fn starts_that_do_not_fit_are_lowered_and_floors_that_do_not_fit_are_refused() {
        let t0 = Instant::now();
        let s = Sizing::new(
            2000,
            IDLE,
            vec![
                plan("python", 256, SizeRange::following(1, 2, 8)),
                plan("java", 768, SizeRange::following(1, 2, 8)),
            ],
            t0,
        )
        .unwrap();
        assert_eq!((s.target(0), s.target(1)), (2, 1));
        assert!(s.charged_mib() <= 2000);
        let err = Sizing::new(
            1000,
            IDLE,
            vec![
                plan("python", 256, SizeRange::following(1, 2, 8)),
                plan("java", 768, SizeRange::following(1, 2, 8)),
            ],
            t0,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("1024 MiB")
                && text.contains("--pool-memory-mib")
                && text.contains("java 1 x 768 MiB"),
            "{text}"
        );
    }

    #[test]
    fn default_ranges_start_at_the_table_size_and_keep_one() {
        assert_eq!(
            SizeRange::default_for(2),
            SizeRange {
                floor: 1,
                start: 2,
                ceiling: DEFAULT_CEILING
            }
        );
        assert_eq!(SizeRange::default_for(0), SizeRange::pinned(0));
        assert!(SizeRange::pinned(3).is_pinned());
        assert_eq!(SizeRange::following(2, 9, 4).start, 4);
    }
}
