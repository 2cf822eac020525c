//! The detection index: which buckets a price step can have pushed below maintenance, without
//! scanning every account (issue 6, DESIGN §3 Liquidation).
//!
//! A bucket's buffer `B = equity − maintenance` (less a rounding allowance) is split across its
//! risk terms in proportion to their notional: one budget `b` per position and, in the cross
//! book, one per non-settlement collateral. A term is filed under the price at which its own
//! loss could first exceed its budget:
//! - a long loses at most `size × (p₀ − p)` when the mark falls (its requirement only falls);
//!   trigger `p₀ − ⌊b / size⌋`, fired when the mark is at or below it;
//! - a short loses at most `|size| × (p − p₀) × (1 + r_max)` when the mark rises, `r_max` the
//!   largest maintenance fraction the market can apply at the time of filing (top tier, current
//!   volatility fraction); trigger `p₀ + ⌊b / (|size| (1 + r_max))⌋`, fired at or above it;
//! - a collateral loses `amount × (p₀ − p) × weight`; trigger `p₀ − ⌊b / (amount × weight)⌋`.
//!
//! The distances are rounded down, so each trigger fires no later than the exact bound. While no
//! term has crossed its trigger the losses sum to at most `B`, so the bucket is still at or above
//! maintenance: a price step only needs to look at the entries it crossed. Everything else that
//! moves a buffer re-files the bucket: the engine does that for every bucket a command touches,
//! for every holder of a market on funding and on a rise of its volatility fraction.
//!
//! The index is derived data (rebuilt from the accounts on load) and never reaches an output
//! except through the sorted lists it returns.

use crate::account::Bucket;
use crate::num::{div_wide, Price, Quote, Round};
use ethnum::I256;
use smallvec::SmallVec;
use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasherDefault;

/// A bucket: the account's index in the high 32 bits, the bucket (isolated market, or
/// [`CROSS`]) in the low 32. Ordered by account, then bucket.
pub type Key = u64;

/// The low half of the key of a cross book.
pub const CROSS: u32 = u32::MAX;

pub fn key(account: u32, bucket: Bucket) -> Key {
    let b = match bucket {
        Bucket::Cross => CROSS,
        Bucket::Isolated(m) => m,
    };
    (u64::from(account) << 32) | u64::from(b)
}

pub fn unkey(key: Key) -> (u32, Bucket) {
    let b = key as u32;
    ((key >> 32) as u32, if b == CROSS { Bucket::Cross } else { Bucket::Isolated(b) })
}

/// Micro-units of rounding allowed per term: values round down and requirements up, each by
/// less than one micro-unit per evaluation, so two evaluations differ by at most two per term.
const ALLOWANCE_PER_TERM: i128 = 4;

/// What a term watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Market(u32),
    Asset(u32),
}

/// One filed entry: the price `source` must reach (`rises`: from below, else from above) for
/// the term to need a fresh look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filed {
    pub source: Source,
    pub rises: bool,
    pub trigger: i64,
}

/// One risk term of a bucket, as the buffer split sees it.
#[derive(Clone, Copy, Debug)]
pub struct Term {
    pub source: Source,
    /// True for a short: it loses when the price rises.
    pub rises: bool,
    /// The price when filed.
    pub price: Price,
    /// Raw size or amount (positive, 1e-8 units).
    pub exposure: i128,
    /// Loss per unit of exposure per unit of price, raw ratio (1e8 = 1): 1 for a long,
    /// `1 + r_max` for a short, the maintenance weight for a collateral.
    pub slope: i128,
    /// Share of the buffer: the term's notional or weighted value, raw quote.
    pub weight: i128,
}

/// The entries of a bucket with buffer `equity − maintenance` and these terms.
pub fn triggers(buffer: Quote, terms: &[Term]) -> SmallVec<[Filed; 2]> {
    let allowance = ALLOWANCE_PER_TERM * (terms.len() as i128 + 1);
    let budget = I256::from(buffer.raw().saturating_sub(allowance).max(0));
    let total: I256 = terms.iter().map(|t| I256::from(t.weight.max(0))).sum();
    terms
        .iter()
        .map(|t| {
            let b = if total > 0 { budget * I256::from(t.weight.max(0)) / total } else { I256::ZERO };
            // Δp_raw = b_raw·1e-6 / (exposure_raw·1e-8 · slope_raw·1e-8) · 1e8 = b·1e18 / (e·s).
            let den = I256::from(t.exposure.max(1)) * I256::from(t.slope.max(1));
            let distance = div_wide(b * I256::from(10i128.pow(18)), den, Round::Floor).unwrap_or(I256::MAX);
            let distance = i64::try_from(distance).unwrap_or(i64::MAX);
            let p0 = t.price.raw();
            let trigger = if t.rises { p0.saturating_add(distance) } else { p0.saturating_sub(distance) };
            Filed { source: t.source, rises: t.rises, trigger }
        })
        .collect()
}

#[derive(Clone, Debug, Default)]
struct Sets {
    /// Fired when the price is at or below the trigger.
    falls: BTreeSet<(i64, Key)>,
    /// Fired when the price is at or above the trigger.
    rises: BTreeSet<(i64, Key)>,
}

impl Sets {
    fn side(&mut self, rises: bool) -> &mut BTreeSet<(i64, Key)> {
        if rises {
            &mut self.rises
        } else {
            &mut self.falls
        }
    }
}

/// Ordered trigger sets per market and per asset, and what each bucket has filed.
#[derive(Clone, Debug, Default)]
pub struct TriggerIndex {
    markets: Vec<Sets>,
    assets: Vec<Sets>,
    filed: HashMap<Key, SmallVec<[Filed; 2]>, BuildHasherDefault<crate::engine::IdHasher>>,
}

impl TriggerIndex {
    fn sets(&mut self, source: Source) -> &mut Sets {
        let (v, i) = match source {
            Source::Market(m) => (&mut self.markets, m),
            Source::Asset(a) => (&mut self.assets, a),
        };
        if v.len() <= i as usize {
            v.resize_with(i as usize + 1, Sets::default);
        }
        &mut v[i as usize]
    }

    /// File `key` under `entries`, replacing whatever it had filed.
    pub fn file(&mut self, key: Key, entries: SmallVec<[Filed; 2]>) {
        self.remove(key);
        if entries.is_empty() {
            return;
        }
        for f in &entries {
            self.sets(f.source).side(f.rises).insert((f.trigger, key));
        }
        self.filed.insert(key, entries);
    }

    /// Take `key` out of the index.
    pub fn remove(&mut self, key: Key) {
        if let Some(entries) = self.filed.remove(&key) {
            for f in &entries {
                self.sets(f.source).side(f.rises).remove(&(f.trigger, key));
            }
        }
    }

    /// Pop every bucket with an entry of `source` crossed at `price`, taking it out of the
    /// index entirely; sorted by key, without duplicates.
    pub fn crossed(&mut self, source: Source, price: Price) -> Vec<Key> {
        let p = price.raw();
        let sets = self.sets(source);
        // Range scans cost the crossed entries only (`split_off` would count the larger half).
        let falls = sets.falls.range((p, 0)..).map(|&(_, k)| k);
        let rises = sets.rises.range(..=(p, Key::MAX)).map(|&(_, k)| k);
        let mut keys: Vec<Key> = falls.chain(rises).collect();
        keys.sort_unstable();
        keys.dedup();
        for &k in &keys {
            self.remove(k);
        }
        keys
    }

    /// The buckets filed under market `m` (its holders, bar those being liquidated), sorted.
    pub fn holders(&self, m: u32) -> Vec<Key> {
        let Some(sets) = self.markets.get(m as usize) else { return Vec::new() };
        let mut keys: Vec<Key> = sets.falls.iter().chain(&sets.rises).map(|&(_, k)| k).collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    pub fn is_filed(&self, key: Key) -> bool {
        self.filed.contains_key(&key)
    }

    /// Number of filed buckets.
    pub fn len(&self) -> usize {
        self.filed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.filed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{px, q};

    fn long(m: u32, size: i128, price: &str) -> Term {
        Term {
            source: Source::Market(m),
            rises: false,
            price: px(price),
            exposure: size,
            slope: 100_000_000,
            weight: size * px(price).raw() as i128 / 100,
        }
    }

    #[test]
    fn keys_round_trip() {
        for (a, b) in [(0, Bucket::Cross), (7, Bucket::Isolated(3)), (u32::MAX - 1, Bucket::Isolated(0))] {
            assert_eq!(unkey(key(a, b)), (a, b));
        }
        assert!(key(1, Bucket::Isolated(5)) < key(1, Bucket::Cross));
    }

    #[test]
    fn a_long_is_filed_where_its_buffer_runs_out() {
        // 1 BTC long at 50,000 with a buffer of 4,800 (less the allowance): fires at or below
        // 45,200 plus the allowance's worth of price.
        let f = triggers(q("4800"), &[long(0, 100_000_000, "50000")]);
        assert_eq!(f.len(), 1);
        let exact = px("45200").raw();
        assert!(f[0].trigger >= exact && f[0].trigger - exact <= 1_000, "{}", f[0].trigger);
    }

    #[test]
    fn a_short_accounts_for_its_requirement_growing() {
        // 1 BTC short, buffer 1,050, r_max 5%: the loss per dollar is 1.05, so 1,000 of move.
        let t = Term { rises: true, slope: 105_000_000, ..long(0, 100_000_000, "50000") };
        let f = triggers(q("1050.000008"), &[t]);
        assert_eq!(f[0].trigger, px("51000").raw());
    }

    #[test]
    fn the_buffer_is_split_by_notional() {
        let a = long(0, 100_000_000, "100");
        let b = Term { source: Source::Market(1), ..long(1, 300_000_000, "100") };
        let f = triggers(q("40.000012"), &[a, b]);
        // 10 to a (1 unit: 10 of price), 30 to b (3 units: 10 of price).
        assert_eq!(f[0].trigger, px("90").raw());
        assert_eq!(f[1].trigger, px("90").raw());
        let none = triggers(q("-5"), &[a]);
        assert_eq!(none[0].trigger, px("100").raw(), "no buffer: any fall fires");
    }

    #[test]
    fn crossing_pops_only_the_crossed_buckets() {
        let mut ix = TriggerIndex::default();
        let at = |t: i64, rises| Filed { source: Source::Market(0), rises, trigger: t };
        ix.file(1, [at(90, false)].into_iter().collect());
        ix.file(
            2,
            [at(80, false), Filed { source: Source::Market(1), rises: true, trigger: 200 }].into_iter().collect(),
        );
        ix.file(3, [at(120, true)].into_iter().collect());
        assert_eq!(ix.holders(0), vec![1, 2, 3]);
        assert_eq!(ix.crossed(Source::Market(0), Price::from_raw(95)), Vec::<Key>::new());
        assert_eq!(ix.crossed(Source::Market(0), Price::from_raw(85)), vec![1]);
        assert_eq!(ix.crossed(Source::Market(0), Price::from_raw(120)), vec![3]);
        assert!(!ix.is_filed(1) && ix.is_filed(2));
        // Popping 2 through market 0 also removes its market-1 entry.
        assert_eq!(ix.crossed(Source::Market(0), Price::from_raw(80)), vec![2]);
        assert!(ix.is_empty());
        assert_eq!(ix.holders(1), Vec::<Key>::new());
    }
}
