//! Distributions of nanosecond durations in bounded memory: a log-linear
//! [`Sketch`] for percentiles, and a [`Log2Hist`] for the picture BCC's tools
//! draw.
//!
//! Both keep only the buckets that hold samples, so a group that sees one
//! duration costs one bucket, and no group ever holds more than the fixed
//! number of buckets its range has, however many samples it sees.

use std::fmt::Write as _;

/// Every power of two above [`SUB`] is split into `SUB` equal buckets, and
/// values below it get one bucket each. A bucket is then at most 1/64 of its
/// lower bound wide, so its midpoint is within 1/128 (0.8%) of any value in it.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;

/// How many buckets a [`Sketch`] can ever hold: the exact ones below 64, then
/// 64 per power of two from 2^6 to 2^63.
pub const SKETCH_BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB as usize;

/// Counts per bucket index, for the buckets that have any, in index order.
/// Parallel vectors rather than pairs: 10 bytes a bucket instead of 16.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Sparse {
    idx: Vec<u16>,
    counts: Vec<u64>,
}

impl Sparse {
    fn add(&mut self, i: u16, n: u64) {
        match self.idx.binary_search(&i) {
            Ok(p) => self.counts[p] += n,
            Err(p) => {
                self.idx.insert(p, i);
                self.counts.insert(p, n);
            }
        }
    }

    fn merge(&mut self, other: &Sparse) {
        let mut idx = Vec::with_capacity(self.idx.len() + other.idx.len());
        let mut counts = Vec::with_capacity(idx.capacity());
        let (mut a, mut b) = (0, 0);
        while a < self.idx.len() || b < other.idx.len() {
            let ia = self.idx.get(a).copied().unwrap_or(u16::MAX);
            let ib = other.idx.get(b).copied().unwrap_or(u16::MAX);
            let (i, mut n) = (ia.min(ib), 0);
            if ia == i && a < self.idx.len() {
                n += self.counts[a];
                a += 1;
            }
            if ib == i && b < other.idx.len() {
                n += other.counts[b];
                b += 1;
            }
            idx.push(i);
            counts.push(n);
        }
        self.idx = idx;
        self.counts = counts;
    }

    fn iter(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.idx.iter().copied().zip(self.counts.iter().copied())
    }

    fn len(&self) -> usize {
        self.idx.len()
    }
}

fn sketch_bucket(v: u64) -> u16 {
    if v < SUB {
        return v as u16;
    }
    // v = m << shift with m in [64, 128): the bucket is m's place after the
    // `shift` powers of two (64 buckets each) below it.
    let shift = 63 - v.leading_zeros() - SUB_BITS;
    (u64::from(shift) * SUB + (v >> shift)) as u16
}

/// The smallest and largest value of a sketch bucket.
fn sketch_bounds(i: u16) -> (u64, u64) {
    let i = u64::from(i);
    if i < SUB {
        return (i, i);
    }
    let shift = i / SUB - 1;
    let lo = (i % SUB + SUB) << shift;
    (lo, lo + ((1u64 << shift) - 1))
}

/// A distribution of durations in nanoseconds: count, sum, min and max exact;
/// percentiles (nearest rank) within 1% of the exact value over the same
/// samples; memory bounded by [`SKETCH_BUCKETS`] buckets of 10 bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sketch {
    count: u64,
    /// u128: a u64 of nanoseconds overflows after 584 years of summed durations,
    /// which a long run over many hour-long samples can reach.
    sum: u128,
    min: u64,
    max: u64,
    buckets: Sparse,
}

impl Sketch {
    /// An empty sketch.
    pub fn new() -> Sketch {
        Sketch::default()
    }

    /// Adds one sample.
    pub fn add(&mut self, ns: u64) {
        if self.count == 0 || ns < self.min {
            self.min = ns;
        }
        self.max = self.max.max(ns);
        self.count += 1;
        self.sum += u128::from(ns);
        self.buckets.add(sketch_bucket(ns), 1);
    }

    /// Adds every sample of `other`, as if they had been added here.
    pub fn merge(&mut self, other: &Sketch) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 || other.min < self.min {
            self.min = other.min;
        }
        self.max = self.max.max(other.max);
        self.count += other.count;
        self.sum += other.sum;
        self.buckets.merge(&other.buckets);
    }

    /// How many samples were added.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The exact sum of the samples.
    pub fn sum(&self) -> u128 {
        self.sum
    }

    /// The smallest sample; `None` when empty.
    pub fn min(&self) -> Option<u64> {
        (self.count > 0).then_some(self.min)
    }

    /// The largest sample; `None` when empty.
    pub fn max(&self) -> Option<u64> {
        (self.count > 0).then_some(self.max)
    }

    /// The mean, rounded to the nearest nanosecond; `None` when empty.
    pub fn mean(&self) -> Option<u64> {
        let n = u128::from(self.count);
        // The mean lies between min and max, so it fits a u64.
        (n > 0).then(|| ((self.sum + n / 2) / n) as u64)
    }

    /// The `p`th percentile (0 to 100) by nearest rank: the smallest sample
    /// that at least `p`% of the samples are at or below. Within 1% of the
    /// exact value, always between min and max; exact for p = 100 (the max),
    /// for a rank of 1 (the min) and for values below 64 ns. `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        // In parts per million, so that e.g. p90 of 10 samples is rank 9
        // exactly rather than rank 10 through a float just above 9.
        let ppm = (p * 10_000.0).round().clamp(0.0, 1_000_000.0) as u128;
        let rank = (ppm * u128::from(self.count)).div_ceil(1_000_000).max(1) as u64;
        if rank >= self.count {
            return Some(self.max);
        }
        if rank == 1 {
            return Some(self.min);
        }
        let mut seen = 0;
        for (i, n) in self.buckets.iter() {
            seen += n;
            if seen >= rank {
                let (lo, hi) = sketch_bounds(i);
                return Some((lo + (hi - lo) / 2).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// How many buckets hold samples (at most [`SKETCH_BUCKETS`]).
    pub fn buckets_used(&self) -> usize {
        self.buckets.len()
    }
}

/// A log2 histogram of durations in microseconds, the way BCC's tools
/// (tcprtt, biolatency) bucket them: `0 -> 1`, `2 -> 3`, `4 -> 7`, ... µs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Log2Hist {
    slots: Sparse,
}

/// One bucket of a [`Log2Hist`]: `count` samples with `lo_ns <= v < hi_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Log2Bucket {
    /// The smallest duration in the bucket.
    pub lo_ns: u64,
    /// The bucket's end, exclusive; saturates at `u64::MAX` for the last slot (durations over
    /// 570 years).
    pub hi_ns: u64,
    /// Samples in the bucket.
    pub count: u64,
}

/// BCC's slot for a value: its bit length, with 0 sharing slot 1 with 1.
fn log2_slot(ns: u64) -> u16 {
    let us = ns / 1_000;
    (64 - us.leading_zeros()).max(1) as u16
}

/// A slot's bounds in whole microseconds, both inclusive, as BCC prints them.
fn log2_bounds_us(slot: u16) -> (u64, u64) {
    if slot <= 1 {
        return (0, 1);
    }
    let lo = 1u64 << (slot - 1);
    (lo, lo + (lo - 1))
}

/// The widest a histogram's lines may be, and BCC's bar at its usual width.
const HIST_COLUMNS: usize = 80;
const STARS_MAX: usize = 40;

impl Log2Hist {
    /// An empty histogram.
    pub fn new() -> Log2Hist {
        Log2Hist::default()
    }

    /// Adds one duration in nanoseconds.
    pub fn add(&mut self, ns: u64) {
        self.slots.add(log2_slot(ns), 1);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Log2Hist) {
        self.slots.merge(&other.slots);
    }

    /// The buckets that hold samples, shortest durations first.
    pub fn buckets(&self) -> Vec<Log2Bucket> {
        self.slots
            .iter()
            .map(|(s, count)| {
                let (lo, hi) = log2_bounds_us(s);
                Log2Bucket {
                    lo_ns: lo * 1_000,
                    hi_ns: (hi + 1).saturating_mul(1_000),
                    count,
                }
            })
            .collect()
    }

    /// Draws the histogram as BCC does, with `label` (e.g. `rtt usecs`) in the
    /// header: from the first bucket with samples to the last, empty ones
    /// between included; every line at most 80 columns. Empty when there are
    /// no samples.
    pub fn draw(&self, label: &str) -> String {
        let (Some(&first), Some(&last)) = (self.slots.idx.first(), self.slots.idx.last()) else {
            return String::new();
        };
        let peak = self.slots.counts.iter().copied().max().unwrap_or(1).max(1);
        let digits = |n: u64| n.to_string().len();
        // BCC's columns (10-digit bounds, 8-digit counts, 40 stars), widened
        // for larger numbers, the bar shrinking to keep within 80 columns
        // (at most 17 + 17 + 20 digits leave 16 stars).
        let nw = digits(log2_bounds_us(last).1).max(10);
        let cw = digits(peak).max(8);
        let sw = STARS_MAX.min(HIST_COLUMNS - (2 * nw + cw + 10));
        let mut out = String::new();
        let pad = nw - 5;
        let _ = writeln!(
            out,
            "{:pad$}{label:<lw$} : {:<cw$}  distribution",
            "",
            "count",
            lw = 2 * nw + 4 - pad
        );
        let mut counts = self.slots.iter().peekable();
        for s in first..=last {
            let n = match counts.peek() {
                Some(&(i, n)) if i == s => {
                    counts.next();
                    n
                }
                _ => 0,
            };
            // At least one star for any sample: a lone outlier is what the
            // picture is often looked at for, and BCC's rounding hides it.
            let stars = if n == 0 {
                0
            } else {
                ((u128::from(n) * sw as u128 / u128::from(peak)) as usize).max(1)
            };
            let (lo, hi) = log2_bounds_us(s);
            let _ = writeln!(
                out,
                "{lo:>nw$} -> {hi:<nw$} : {n:<cw$} |{:<sw$}|",
                "*".repeat(stars)
            );
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small deterministic generator (xorshift64*), so failures reproduce.
    pub(crate) struct Rng(pub u64);
    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        pub fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Nearest rank over sorted samples: the ceil(p/100 * n)th smallest.
    fn exact(sorted: &[u64], p: f64) -> u64 {
        let n = sorted.len() as f64;
        let rank = ((p / 100.0 * n - 1e-9).ceil() as usize).max(1);
        sorted[rank - 1]
    }

    const PS: [f64; 12] = [
        0.0, 0.1, 1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 99.0, 99.9, 99.99, 100.0,
    ];

    /// Checks every percentile of PS (and min, max, mean, count) against the
    /// samples sorted.
    fn check(name: &str, samples: &[u64]) {
        let mut s = Sketch::new();
        for &v in samples {
            s.add(v);
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        assert_eq!(s.count(), samples.len() as u64, "{name}");
        assert_eq!(s.min(), sorted.first().copied(), "{name}");
        assert_eq!(s.max(), sorted.last().copied(), "{name}");
        let sum: u128 = samples.iter().map(|&v| u128::from(v)).sum();
        assert_eq!(s.sum(), sum, "{name}");
        for p in PS {
            let want = exact(&sorted, p);
            let got = s.percentile(p).expect("samples");
            let err = got.abs_diff(want);
            assert!(
                u128::from(err) * 100 <= u128::from(want),
                "{name}: p{p} is {got}, exact {want} (error {err})"
            );
            assert!(
                got >= sorted[0] && got <= sorted[sorted.len() - 1],
                "{name}: p{p}"
            );
        }
        assert!(s.buckets_used() <= SKETCH_BUCKETS);
    }

    #[test]
    fn bucket_indexes_and_bounds_agree_over_the_whole_range() {
        let mut rng = Rng(7);
        let edges = [
            0,
            1,
            63,
            64,
            65,
            127,
            128,
            129,
            1 << 40,
            u64::MAX - 1,
            u64::MAX,
        ];
        for v in edges
            .into_iter()
            .chain((0..100_000).map(|_| rng.next() >> rng.below(64)))
        {
            let i = sketch_bucket(v);
            let (lo, hi) = sketch_bounds(i);
            assert!(lo <= v && v <= hi, "{v} outside bucket {i} = [{lo}, {hi}]");
            assert!((i as usize) < SKETCH_BUCKETS);
            // Narrow enough for the 1% promise: width at most lo/64.
            assert!((hi - lo) <= lo / 64, "bucket {i} = [{lo}, {hi}] too wide");
        }
        assert_eq!(sketch_bucket(u64::MAX) as usize, SKETCH_BUCKETS - 1);
        // Adjacent buckets tile the line with no gap.
        for i in 0..SKETCH_BUCKETS as u16 - 1 {
            assert_eq!(
                sketch_bounds(i).1 + 1,
                sketch_bounds(i + 1).0,
                "after bucket {i}"
            );
        }
    }

    #[test]
    fn percentiles_of_random_data_are_within_one_percent_of_exact() {
        let mut rng = Rng(0x5eed);
        for round in 0..20 {
            let n = 1 + rng.below(20_000) as usize;
            // Log-uniform from 1 µs to 10 s, like real round trips.
            let samples: Vec<u64> = (0..n)
                .map(|_| {
                    let e = 3.0 + (rng.below(1_000_000) as f64 / 1e6) * 7.0;
                    10f64.powf(e) as u64
                })
                .collect();
            check(&format!("log-uniform round {round} n={n}"), &samples);
            let uniform: Vec<u64> = (0..n).map(|_| 10_000 + rng.below(90_000_000)).collect();
            check(&format!("uniform round {round} n={n}"), &uniform);
        }
    }

    #[test]
    fn percentiles_of_adversarial_data_are_within_one_percent_of_exact() {
        let mut rng = Rng(99);
        check("one sample", &[12_345_678]);
        check("all equal", &vec![31_020_000; 5_000]);
        check("two samples", &[1_000, 1_000_000_000]);
        let mut two_modes = vec![200_000; 900];
        two_modes.extend(vec![150_000_000; 100]);
        check("two modes far apart", &two_modes);
        let mut split: Vec<u64> = (0..500).map(|_| 5_000 + rng.below(100)).collect();
        split.extend((0..500).map(|_| 3_000_000_000 + rng.below(1_000_000)));
        check("two modes, half each", &split);
        // Pareto-like: most near 100 µs, a few up to many seconds.
        let tail: Vec<u64> = (0..50_000)
            .map(|_| {
                let u = (rng.below(1_000_000) + 1) as f64 / 1e6;
                (100_000.0 / u.powf(1.5)) as u64
            })
            .collect();
        check("heavy tail", &tail);
        let hours: Vec<u64> = (0..1_000)
            .map(|_| 3_600_000_000_000 * (1 + rng.below(24)) + rng.below(1 << 30))
            .collect();
        check("hours", &hours);
        check(
            "near u64::MAX",
            &[u64::MAX, u64::MAX - 1, u64::MAX / 3, 1 << 63],
        );
        let tiny: Vec<u64> = (0..1_000).map(|_| rng.below(8)).collect();
        check("a few ns", &tiny);
        check("zeros", &[0, 0, 0]);
        let steps: Vec<u64> = (0..10_000).map(|i| 63 + i % 3).collect();
        check("across the exact/log boundary", &steps);
    }

    #[test]
    fn small_values_and_extreme_ranks_are_exact() {
        let mut s = Sketch::new();
        for v in [3, 5, 7, 9_000_001, 9_000_003] {
            s.add(v);
        }
        assert_eq!(s.percentile(0.0), Some(3));
        assert_eq!(s.percentile(20.0), Some(3));
        assert_eq!(s.percentile(40.0), Some(5));
        assert_eq!(s.percentile(60.0), Some(7));
        assert_eq!(s.percentile(100.0), Some(9_000_003));
        assert_eq!(s.mean(), Some(3_600_004));
        // p90 of 10 samples is the 9th, not the 10th.
        let mut t = Sketch::new();
        for v in 1..=10 {
            t.add(v);
        }
        assert_eq!(t.percentile(90.0), Some(9));
        assert_eq!(Sketch::new().percentile(50.0), None);
        assert_eq!(Sketch::new().mean(), None);
    }

    #[test]
    fn merge_equals_adding_everything_to_one() {
        let mut rng = Rng(3);
        let (mut a, mut b, mut all) = (Sketch::new(), Sketch::new(), Sketch::new());
        for i in 0..10_000 {
            let v = rng.next() >> (20 + rng.below(30));
            let part = if i % 3 == 0 { &mut a } else { &mut b };
            part.add(v);
            all.add(v);
        }
        let mut m = a.clone();
        m.merge(&b);
        assert_eq!(m, all);
        let mut e = Sketch::new();
        e.merge(&a);
        assert_eq!(e, a);
        a.merge(&Sketch::new());
        assert_eq!(e, a);
    }

    #[test]
    fn memory_is_bounded_by_the_range_not_the_samples() {
        let mut s = Sketch::new();
        let mut rng = Rng(11);
        // 10 µs to 10.24 ms: 10 powers of two, 64 buckets each at most.
        for _ in 0..1_000_000 {
            s.add(10_000 + rng.below(10_230_000));
        }
        assert!(s.buckets_used() <= 11 * 64, "{}", s.buckets_used());
        let used = s.buckets_used();
        for _ in 0..1_000_000 {
            s.add(10_000 + rng.below(10_230_000));
        }
        assert_eq!(s.buckets_used(), used);
        let mut one = Sketch::new();
        for _ in 0..100_000 {
            one.add(12_345);
        }
        assert_eq!(one.buckets_used(), 1);
    }

    #[test]
    fn log2_buckets_follow_bcc_in_microseconds() {
        let mut h = Log2Hist::new();
        for ns in [0, 999, 1_999, 2_000, 3_999, 4_000, 16_000, 31_999, 32_000] {
            h.add(ns);
        }
        let b: Vec<(u64, u64, u64)> = h
            .buckets()
            .iter()
            .map(|b| (b.lo_ns, b.hi_ns, b.count))
            .collect();
        assert_eq!(
            b,
            [
                (0, 2_000, 3),
                (2_000, 4_000, 2),
                (4_000, 8_000, 1),
                (16_000, 32_000, 2),
                (32_000, 64_000, 1)
            ]
        );
        let mut big = Log2Hist::new();
        big.add(u64::MAX);
        assert_eq!(big.buckets()[0].hi_ns, u64::MAX);
        let mut m = h.clone();
        m.merge(&big);
        assert_eq!(m.buckets().len(), 6);
        assert_eq!(m.buckets()[5].count, 1);
    }

    #[test]
    fn log2_drawing_looks_like_bcc_and_fits_80_columns() {
        let mut h = Log2Hist::new();
        for _ in 0..5 {
            h.add(20_000);
        }
        for _ in 0..40 {
            h.add(9_000);
        }
        h.add(300_000);
        let text = h.draw("usecs");
        let want = "     usecs               : count     distribution\n\
                    \x20        8 -> 15         : 40       |****************************************|\n\
                    \x20       16 -> 31         : 5        |*****                                   |\n\
                    \x20       32 -> 63         : 0        |                                        |\n\
                    \x20       64 -> 127        : 0        |                                        |\n\
                    \x20      128 -> 255        : 0        |                                        |\n\
                    \x20      256 -> 511        : 1        |*                                       |\n";
        assert_eq!(text, want);
        assert_eq!(Log2Hist::new().draw("usecs"), "");
    }

    #[test]
    fn log2_drawing_of_huge_values_and_counts_stays_within_80_columns() {
        let mut h = Log2Hist::new();
        h.slots.add(log2_slot(0), 12_345_678_901_234);
        h.add(u64::MAX);
        let text = h.draw("local usecs");
        for line in text.lines() {
            assert!(line.len() <= 80, "{} columns: {line}", line.len());
        }
        let bars: Vec<usize> = text
            .lines()
            .skip(1)
            .map(|l| l.find('|').expect("bar"))
            .collect();
        assert!(bars.windows(2).all(|w| w[0] == w[1]), "{text}");
        assert!(
            text.lines()
                .nth(1)
                .expect("first")
                .contains(" 12345678901234 "),
            "{text}"
        );
        assert!(text.lines().last().expect("last").contains("|*"), "{text}");
        assert_eq!(text.lines().count(), 1 + 55);
    }
}
