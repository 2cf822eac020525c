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
//! Any trigger between the price and the bound is as correct (it only fires earlier, and the
//! bucket is then evaluated and filed afresh), which keeps most re-filings out of the ordered
//! sets:
//! - a bound further than [`HORIZON`] of the price is filed at the horizon, and a falling bound
//!   at or below zero at zero (no positive price reaches it);
//! - a bucket whose filed triggers still lie between the price and its new bounds keeps them
//!   ([`TriggerIndex::update`]).
//!
//! Most accounts of a venue are far from liquidation: their fills and funding payments then
//! cost no set operation at all.
//!
//! The index is derived data (rebuilt from the accounts on load) and never reaches an output
//! except through the sorted lists it returns.

use crate::account::{Account, Bucket, Position};
use crate::asset::Asset;
use crate::health::PositionRisk;
use crate::market::Market;
use crate::num::{checked_mul, div_wide, mul_div, pow10, Price, Quote, Round, RATIO_ONE};
use ethnum::I256;
use smallvec::SmallVec;
use std::collections::BTreeSet;

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

impl Term {
    /// The term of position `pos` in market `m`, at the mark its risk `r` was computed with:
    /// weighted by its notional there.
    pub fn of_position(m: u32, market: &Market, pos: &Position, r: &PositionRisk) -> Term {
        let rises = pos.size.is_negative();
        let slope = RATIO_ONE + if rises { i128::from(market.max_maintenance_fraction().raw()) } else { 0 };
        let exposure = pos.size.raw().unsigned_abs().min(i128::MAX as u128) as i128;
        Term { source: Source::Market(m), rises, price: r.mark, exposure, slope, weight: r.notional.raw() }
    }

    /// The collateral terms of `bucket`: in the cross book, one per priced asset with a positive
    /// amount and maintenance weight, weighted by its value at that weight (rounded down); none
    /// in an isolated bucket, which only its own margin backs.
    pub fn of_collateral<'a>(
        account: &'a Account,
        bucket: Bucket,
        assets: &'a [Asset],
    ) -> impl Iterator<Item = Term> + 'a {
        let collateral = if bucket == Bucket::Cross { account.collateral.as_slice() } else { &[] };
        collateral.iter().filter_map(|&(a, amount)| {
            let asset = &assets[a as usize];
            let weight = asset.params.maintenance_weight;
            let price = asset.feed.price()?;
            if !weight.is_positive() || !amount.is_positive() {
                return None;
            }
            let value = amount.value_at(price, Round::Floor).and_then(|v| v.mul_ratio_floor(weight));
            Some(Term {
                source: Source::Asset(a),
                rises: false,
                price,
                exposure: amount.raw(),
                slope: i128::from(weight.raw()),
                weight: value.map_or(i128::MAX, |v| v.raw()),
            })
        })
    }
}

/// How far from the price a trigger is filed at most, as a fraction of the price (1/2): a bound
/// further away is filed at this distance. Far buckets then file the same trigger fill after fill
/// (see [`TriggerIndex::update`]); they fire only after a move of half the price, are evaluated
/// and filed again. A 30% crash step never reaches them.
pub const HORIZON: (i64, i64) = (1, 2);

/// What one term of a bucket files: the trigger, and the bound it stands for — the exact price
/// at which the term's loss could exceed its budget, `price ± ⌊num / den⌋`. Any filed trigger
/// between the price and the bound is valid. The distance is kept as a fraction so that the
/// common questions (beyond the horizon? still covered?) are multiplications, not divisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filing {
    pub filed: Filed,
    price: i64,
    /// `b × 10^18` and `exposure × slope` (both ≥ 0, `den` ≥ 1); `(distance, 1)` when a product
    /// overflows 128 bits.
    num: i128,
    den: i128,
}

impl Filing {
    /// The bound: `price − distance` for a falling term, `price + distance` for a rising one.
    pub fn bound(&self) -> i64 {
        let distance = i64::try_from(self.num / self.den).unwrap_or(i64::MAX);
        if self.filed.rises {
            self.price.saturating_add(distance)
        } else {
            self.price.saturating_sub(distance)
        }
    }

    /// Whether the distance is at least `d`: `⌊num/den⌋ ≥ d ⇔ num ≥ d × den`.
    fn reaches(&self, d: i64) -> bool {
        d <= 0 || checked_mul(i128::from(d), self.den).is_some_and(|x| x <= self.num)
    }

    /// Whether a trigger filed earlier for this term still fires no later than the bound.
    fn covered_by(&self, earlier: &Filed) -> bool {
        let f = &self.filed;
        let gap = match f.rises {
            true => earlier.trigger.saturating_sub(self.price),
            false => self.price.saturating_sub(earlier.trigger),
        };
        (earlier.source, earlier.rises) == (f.source, f.rises) && self.reaches(gap)
    }
}

/// The filings of a bucket with buffer `equity − maintenance` and these terms.
///
/// Each term's budget is `⌊budget × weight / Σ weights⌋` and its distance
/// `⌊b × 10^18 / (exposure × slope)⌋`, both rounded down; the bound is the price moved by the
/// distance, the filed trigger the bound brought within [`HORIZON`] (a falling bound ≤ 0: 0).
/// Computed in 128 bits, with 256-bit intermediates only where a product overflows; the
/// distance is divided out only for a bound within the horizon.
pub fn triggers(buffer: Quote, terms: &[Term]) -> SmallVec<[Filing; 2]> {
    let allowance = ALLOWANCE_PER_TERM * (terms.len() as i128 + 1);
    let budget = buffer.raw().saturating_sub(allowance).max(0);
    let total = terms.iter().try_fold(0i128, |sum, t| sum.checked_add(t.weight.max(0)));
    let mut filings = SmallVec::new();
    for t in terms {
        let weight = t.weight.max(0);
        let b = match total {
            Some(0) => 0,
            Some(total) if weight == total => budget,
            // b ≤ budget, so the quotient always fits.
            Some(total) => mul_div(budget, weight, total, Round::Floor).unwrap_or(0),
            None => wide_share(budget, weight, terms),
        };
        filings.push(filing(t, b));
    }
    filings
}

/// The filing of term `t` with budget `b` (see [`triggers`]).
#[inline]
fn filing(t: &Term, b: i128) -> Filing {
    // Δp_raw = b_raw·1e-6 / (exposure_raw·1e-8 · slope_raw·1e-8) · 1e8 = b·1e18 / (e·s).
    let (e, s) = (t.exposure.max(1), t.slope.max(1));
    let (num, den) = match (checked_mul(b, pow10(18)), checked_mul(e, s)) {
        (Some(num), Some(den)) => (num, den),
        _ => {
            let d = div_wide(I256::from(b) * I256::from(pow10(18)), I256::from(e) * I256::from(s), Round::Floor);
            (d.map_or(i128::MAX, |d| i128::try_from(d).unwrap_or(i128::MAX)), 1)
        }
    };
    let p0 = t.price.raw();
    let filing = Filing { filed: Filed { source: t.source, rises: t.rises, trigger: 0 }, price: p0, num, den };
    let horizon = p0 / HORIZON.1 * HORIZON.0;
    let trigger = match (t.rises, filing.reaches(horizon)) {
        (true, true) => p0.saturating_add(horizon),
        (false, true) if filing.reaches(p0) => 0,
        (false, true) => p0 - horizon,
        (_, false) => filing.bound(),
    };
    Filing { filed: Filed { trigger, ..filing.filed }, ..filing }
}

/// `⌊budget × weight / Σ weights⌋` when the sum of the weights overflows 128 bits.
#[cold]
fn wide_share(budget: i128, weight: i128, terms: &[Term]) -> i128 {
    let total: I256 = terms.iter().map(|t| I256::from(t.weight.max(0))).sum();
    let share = div_wide(I256::from(budget) * I256::from(weight), total, Round::Floor).unwrap_or(I256::ZERO);
    i128::try_from(share).unwrap_or(0)
}

/// The entries of one source, ordered so that the entries a price crosses are always the tail:
/// a price step splits them off in one operation instead of removing them one by one.
#[derive(Clone, Debug, Default)]
struct Sets {
    /// Fired when the price is at or below the trigger: ordered by trigger, so the crossed
    /// ones (trigger ≥ price) are the tail.
    falls: BTreeSet<(i64, Key)>,
    /// Fired when the price is at or above the trigger: ordered by `!trigger` (descending
    /// trigger), so the crossed ones (trigger ≤ price) are the tail too.
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

/// From this many crossed entries on, a price step splits the tail off a set instead of
/// removing the entries one by one.
const SPLIT_FROM: usize = 32;

/// Where an entry sits in its set: the trigger, bit-inverted for a rising entry (`!t` reverses
/// the order without overflow).
fn position(f: &Filed) -> i64 {
    if f.rises {
        !f.trigger
    } else {
        f.trigger
    }
}

/// The tail of a set that a price crossed: everything at or after `position(price)`.
fn crossed_from(rises: bool, price: i64) -> i64 {
    if rises {
        !price
    } else {
        price
    }
}

/// One filed entry of an account: a [`Filed`] tagged with its bucket (the key's low half),
/// flattened so that it packs into 24 bytes.
#[derive(Clone, Copy, Debug)]
struct Entry {
    trigger: i64,
    source: Source,
    bucket: u32,
    rises: bool,
}

impl Entry {
    fn filed(&self) -> Filed {
        Filed { source: self.source, rises: self.rises, trigger: self.trigger }
    }
}

/// Ordered trigger sets per market and per asset, and what each bucket has filed.
#[derive(Clone, Debug, Default)]
pub struct TriggerIndex {
    markets: Vec<Sets>,
    assets: Vec<Sets>,
    /// The entries filed by each account, indexed by account: a direct slot rather than a hash
    /// map, so filing and popping cost one memory access per account (the crash benchmark pops
    /// thousands of buckets at random places in a million-account index).
    filed: Vec<SmallVec<[Entry; 2]>>,
    /// One bit per account: has it filed anything? 1,000,000 accounts take 125 KB, which stays
    /// in cache, so removing a bucket that is not filed (the common case when a liquidation
    /// starts) does not touch the account's slot.
    any: Vec<u64>,
    /// Number of filed buckets.
    buckets: usize,
    /// The tails split off by [`TriggerIndex::pop_crossed`] since the last
    /// [`TriggerIndex::end_pops`]: (source, rises, start position).
    popped: SmallVec<[(Source, bool, i64); 2]>,
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

    /// Make room for the slots of `accounts` accounts in all (see [`crate::Engine::reserve_accounts`]).
    pub fn reserve_accounts(&mut self, accounts: usize) {
        self.filed.reserve(accounts.saturating_sub(self.filed.len()));
        self.any.reserve((accounts / 64 + 1).saturating_sub(self.any.len()));
    }

    /// File `key` under `entries`, replacing whatever it had filed.
    pub fn file(&mut self, key: Key, entries: SmallVec<[Filed; 2]>) {
        self.remove(key);
        if entries.is_empty() {
            return;
        }
        for f in &entries {
            self.sets(f.source).side(f.rises).insert((position(f), key));
        }
        let (account, bucket) = ((key >> 32) as usize, key as u32);
        if self.filed.len() <= account {
            self.filed.resize_with(account + 1, SmallVec::new);
            self.any.resize(account / 64 + 1, 0);
        }
        self.filed[account].extend(entries.into_iter().map(|f| Entry {
            trigger: f.trigger,
            source: f.source,
            bucket,
            rises: f.rises,
        }));
        self.any[account / 64] |= 1 << (account % 64);
        self.buckets += 1;
    }

    /// File `key` for `filings`, keeping each entry it has filed that still covers its term
    /// (the same source and side, the trigger still between the price and the new bound): only
    /// the other entries move. Every trigger still fires no later than its new bound, so the
    /// bucket is covered (most re-filings move nothing, see [`HORIZON`]). During a price step's
    /// pops everything is filed afresh, as the popped entries have left their sets.
    pub fn update(&mut self, key: Key, filings: &[Filing]) {
        let (account, bucket) = ((key >> 32) as usize, key as u32);
        if !self.popped.is_empty() || !self.any_filed(account) {
            return self.file(key, filings.iter().map(|f| f.filed).collect());
        }
        // One pass over the account's entries: which of the bucket's entries cover no term
        // (stale), and which terms no entry covers (`fresh[j]`).
        let mut stale: SmallVec<[usize; 2]> = SmallVec::new();
        let mut fresh: SmallVec<[bool; 4]> = SmallVec::from_elem(true, filings.len());
        let mut had = false;
        for (i, e) in self.filed[account].iter().enumerate().filter(|(_, e)| e.bucket == bucket) {
            had = true;
            let mut covers = false;
            for (f, fresh) in filings.iter().zip(fresh.iter_mut()) {
                if f.covered_by(&e.filed()) {
                    covers = true;
                    *fresh = false;
                }
            }
            if !covers {
                stale.push(i);
            }
        }
        if stale.is_empty() && !fresh.contains(&true) {
            return;
        }
        // Back to front, so that each index still points at its entry.
        for &i in stale.iter().rev() {
            let f = self.filed[account].remove(i).filed();
            self.sets(f.source).side(f.rises).remove(&(position(&f), key));
        }
        for (f, _) in filings.iter().zip(&fresh).filter(|(_, &fresh)| fresh) {
            let f = f.filed;
            self.filed[account].push(Entry { trigger: f.trigger, source: f.source, bucket, rises: f.rises });
            self.sets(f.source).side(f.rises).insert((position(&f), key));
        }
        if self.filed[account].is_empty() {
            self.any[account / 64] &= !(1 << (account % 64));
        }
        match (had, !filings.is_empty()) {
            (false, true) => self.buckets += 1,
            (true, false) => self.buckets -= 1,
            _ => {}
        }
    }

    /// Take `key` out of the index.
    pub fn remove(&mut self, key: Key) {
        let (account, bucket) = ((key >> 32) as usize, key as u32);
        if !self.any_filed(account) {
            return;
        }
        let entries = &mut self.filed[account];
        if !entries.iter().any(|e| e.bucket == bucket) {
            return;
        }
        let mut removed = SmallVec::<[Filed; 2]>::new();
        entries.retain(|e| {
            let mine = e.bucket == bucket;
            if mine {
                removed.push(e.filed());
            }
            !mine
        });
        if entries.is_empty() {
            self.any[account / 64] &= !(1 << (account % 64));
        }
        for f in removed {
            let at = position(&f);
            let split_off = self
                .popped
                .iter()
                .any(|&(source, rises, from)| (source, rises, true) == (f.source, f.rises, at >= from));
            if !split_off {
                self.sets(f.source).side(f.rises).remove(&(at, key));
            }
        }
        self.buckets -= 1;
    }

    fn any_filed(&self, account: usize) -> bool {
        self.any.get(account / 64).is_some_and(|w| w & (1 << (account % 64)) != 0)
    }

    /// Every bucket with an entry of `source` crossed at `price`, sorted by key, without
    /// duplicates. The crossed entries leave their sets here (see `SPLIT_FROM`); the buckets' slots
    /// (and their entries under other sources) are left for the caller, which must
    /// [`remove`](Self::remove) each returned bucket — before filing anything — and then call
    /// [`end_pops`](Self::end_pops). That way a bucket's slot is read next to its account
    /// (see `Engine::detect`), not in a separate pass over a million-entry table.
    pub fn pop_crossed(&mut self, source: Source, price: Price) -> Vec<Key> {
        let p = price.raw();
        let sets = self.sets(source);
        // Splitting allocates a node per level of the tree, so a step that crosses a few
        // entries (the common case) removes them one by one; a crash splits.
        let tail = |set: &mut BTreeSet<(i64, Key)>, from: i64| -> Vec<Key> {
            // Most steps cross nothing: the last entry, down the tree's right edge, says so
            // without a search.
            if set.last().is_none_or(|&(at, _)| at < from) {
                return Vec::new();
            }
            let few: SmallVec<[(i64, Key); SPLIT_FROM]> = set.range((from, 0)..).take(SPLIT_FROM).copied().collect();
            if few.len() < SPLIT_FROM {
                for e in &few {
                    set.remove(e);
                }
                few.iter().map(|&(_, k)| k).collect()
            } else {
                set.split_off(&(from, 0)).into_iter().map(|(_, k)| k).collect()
            }
        };
        let falls = tail(&mut sets.falls, crossed_from(false, p));
        let rises = tail(&mut sets.rises, crossed_from(true, p));
        for (rises, popped) in [(false, &falls), (true, &rises)] {
            if !popped.is_empty() {
                self.popped.push((source, rises, crossed_from(rises, p)));
            }
        }
        let mut keys = falls;
        keys.extend(rises);
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Close the pops since the last call: every popped bucket has been removed.
    pub fn end_pops(&mut self) {
        self.popped.clear();
    }

    /// The buckets filed under market `m` (its holders, bar those being liquidated), sorted.
    pub fn holders(&self, m: u32) -> Vec<Key> {
        let Some(sets) = self.markets.get(m as usize) else { return Vec::new() };
        let mut keys: Vec<Key> = sets.falls.iter().chain(&sets.rises).map(|&(_, k)| k).collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// A self-check for tests: the sets hold exactly the filed entries (nothing stale, nothing
    /// missing), the per-account bits and the bucket count agree, and no pop is open.
    pub fn is_consistent(&self) -> bool {
        let in_sets: usize = self.markets.iter().chain(&self.assets).map(|s| s.falls.len() + s.rises.len()).sum();
        let in_slots: usize = self.filed.iter().map(SmallVec::len).sum();
        let mut buckets = 0;
        for (account, entries) in self.filed.iter().enumerate() {
            if self.any_filed(account) == entries.is_empty() {
                return false;
            }
            let mut seen: SmallVec<[u32; 2]> = SmallVec::new();
            for e in entries {
                let (v, i) = match e.source {
                    Source::Market(m) => (&self.markets, m),
                    Source::Asset(a) => (&self.assets, a),
                };
                let key = ((account as u64) << 32) | u64::from(e.bucket);
                let side = v.get(i as usize).map(|s| if e.rises { &s.rises } else { &s.falls });
                if !side.is_some_and(|set| set.contains(&(position(&e.filed()), key))) {
                    return false;
                }
                if !seen.contains(&e.bucket) {
                    seen.push(e.bucket);
                }
            }
            buckets += seen.len();
        }
        in_sets == in_slots && buckets == self.buckets && self.popped.is_empty()
    }

    /// How many entries `account` has filed (reads its slot).
    pub fn filed_entries(&self, account: u32) -> usize {
        self.filed.get(account as usize).map_or(0, SmallVec::len)
    }

    pub fn is_filed(&self, key: Key) -> bool {
        let account = (key >> 32) as usize;
        self.any_filed(account) && self.filed[account].iter().any(|e| e.bucket == key as u32)
    }

    /// Number of filed buckets.
    pub fn len(&self) -> usize {
        self.buckets
    }

    pub fn is_empty(&self) -> bool {
        self.buckets == 0
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
    fn an_entry_packs_into_24_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 24);
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
        assert!(f[0].filed.trigger >= exact && f[0].filed.trigger - exact <= 1_000, "{}", f[0].filed.trigger);
    }

    #[test]
    fn a_short_accounts_for_its_requirement_growing() {
        // 1 BTC short, buffer 1,050, r_max 5%: the loss per dollar is 1.05, so 1,000 of move.
        let t = Term { rises: true, slope: 105_000_000, ..long(0, 100_000_000, "50000") };
        let f = triggers(q("1050.000008"), &[t]);
        assert_eq!(f[0].filed.trigger, px("51000").raw());
    }

    #[test]
    fn the_buffer_is_split_by_notional() {
        let a = long(0, 100_000_000, "100");
        let b = Term { source: Source::Market(1), ..long(1, 300_000_000, "100") };
        let f = triggers(q("40.000012"), &[a, b]);
        // 10 to a (1 unit: 10 of price), 30 to b (3 units: 10 of price).
        assert_eq!(f[0].filed.trigger, px("90").raw());
        assert_eq!(f[1].filed.trigger, px("90").raw());
        let none = triggers(q("-5"), &[a]);
        assert_eq!(none[0].filed.trigger, px("100").raw(), "no buffer: any fall fires");
    }

    #[test]
    fn far_bounds_are_filed_at_the_horizon() {
        // 1 BTC at 50,000. A buffer of 30,000 puts a long's bound at 20,000: filed at 25,000,
        // half the price away. A buffer of 60,000 puts it below zero: filed at zero, never fired.
        let far = triggers(q("30000"), &[long(0, 100_000_000, "50000")]);
        assert!(far[0].bound() < px("20000").raw() + 1_000 && far[0].bound() >= px("20000").raw());
        assert_eq!(far[0].filed.trigger, px("25000").raw());
        let never = triggers(q("60000"), &[long(0, 100_000_000, "50000")]);
        assert!(never[0].bound() < 0);
        assert_eq!(never[0].filed.trigger, 0);
        // A short with the same buffer: bound near 80,000, filed at 75,000.
        let short = Term { rises: true, ..long(0, 100_000_000, "50000") };
        let f = triggers(q("30000"), &[short]);
        assert_eq!(f[0].filed.trigger, px("75000").raw());
    }

    #[test]
    fn a_bucket_keeps_its_entries_while_they_cover_its_bounds() {
        let mut ix = TriggerIndex::default();
        let filing = |trigger: i64, bound: i64| Filing {
            price: bound,
            num: 0,
            den: 1,
            filed: Filed { source: Source::Market(0), rises: false, trigger },
        };
        ix.update(7, &[filing(90, 90)]);
        assert_eq!(ix.pop_crossed(Source::Market(0), Price::from_raw(95)), Vec::<Key>::new());
        ix.end_pops();
        // The bound moved away (more margin): the entry at 90 still fires first, so it stays.
        ix.update(7, &[filing(60, 60)]);
        let crossed = ix.pop_crossed(Source::Market(0), Price::from_raw(90));
        assert_eq!(crossed, vec![7], "still filed at 90");
        ix.remove(7);
        ix.end_pops();
        // The bound moved closer (less margin): re-filed at the new trigger.
        ix.update(7, &[filing(90, 90)]);
        ix.update(7, &[filing(95, 95)]);
        assert_eq!(ix.pop_crossed(Source::Market(0), Price::from_raw(94)), vec![7]);
        ix.remove(7);
        ix.end_pops();
        // A new term is filed next to a covering entry, which stays where it was.
        ix.update(7, &[filing(50, 50)]);
        let other = Filing {
            filed: Filed { source: Source::Market(1), rises: true, trigger: 200 },
            price: 300,
            num: 0,
            den: 1,
        };
        ix.update(7, &[filing(40, 40), other]);
        assert_eq!(ix.holders(1), vec![7]);
        assert!(ix.is_consistent());
        assert_eq!(ix.pop_crossed(Source::Market(0), Price::from_raw(45)), vec![7], "still filed at 50");
        ix.remove(7);
        ix.end_pops();
        // A term that is gone (a closed position) takes its entry with it.
        ix.update(7, &[filing(40, 40), other]);
        ix.update(7, &[other]);
        assert_eq!((ix.holders(0), ix.holders(1)), (vec![], vec![7]));
        ix.update(7, &[]);
        assert!(ix.is_empty() && ix.is_consistent());
    }

    /// The buffer split and distances of [`triggers`] as plain 256-bit formulas.
    fn triggers_wide(buffer: Quote, terms: &[Term]) -> Vec<i64> {
        let allowance = ALLOWANCE_PER_TERM * (terms.len() as i128 + 1);
        let budget = I256::from(buffer.raw().saturating_sub(allowance).max(0));
        let total: I256 = terms.iter().map(|t| I256::from(t.weight.max(0))).sum();
        terms
            .iter()
            .map(|t| {
                let b = if total > 0 { budget * I256::from(t.weight.max(0)) / total } else { I256::ZERO };
                let den = I256::from(t.exposure.max(1)) * I256::from(t.slope.max(1));
                let d = div_wide(b * I256::from(pow10(18)), den, Round::Floor).unwrap();
                let d = i64::try_from(d).unwrap_or(i64::MAX);
                let p0 = t.price.raw();
                if t.rises {
                    p0.saturating_add(d)
                } else {
                    p0.saturating_sub(d)
                }
            })
            .collect()
    }

    proptest::proptest! {
        /// The 128-bit computation gives exactly the 256-bit result, overflowing weights included.
        #[test]
        fn triggers_match_the_wide_formula(
            buffer in proptest::prop_oneof![-1_000_000i128..1 << 50, 0i128..i128::MAX / 2],
            raw in proptest::collection::vec((
                proptest::prop_oneof![1i128..1 << 50, 1i128..i128::MAX / 4],
                proptest::prop_oneof![100_000_000i128..200_000_000, 1i128..1 << 70],
                proptest::prop_oneof![0i128..1 << 60, 0i128..i128::MAX / 2],
                1i64..i64::MAX / 2,
                proptest::bool::ANY,
            ), 1..4),
        ) {
            let terms: Vec<Term> = raw
                .iter()
                .enumerate()
                .map(|(i, &(exposure, slope, weight, price, rises))| Term {
                    source: Source::Market(i as u32),
                    rises,
                    price: Price::from_raw(price),
                    exposure,
                    slope,
                    weight,
                })
                .collect();
            let filings = triggers(Quote::from_raw(buffer), &terms);
            let bounds: Vec<i64> = filings.iter().map(Filing::bound).collect();
            proptest::prop_assert_eq!(bounds, triggers_wide(Quote::from_raw(buffer), &terms));
            // Each filed trigger lies between the price and its bound, at most half the price
            // away; a falling bound at or below zero files zero.
            for (f, t) in filings.iter().zip(&terms) {
                let (p0, trigger) = (t.price.raw(), f.filed.trigger);
                let reach = p0 / 2;
                if t.rises {
                    proptest::prop_assert_eq!(trigger, f.bound().min(p0 + reach));
                } else if f.bound() <= 0 {
                    proptest::prop_assert_eq!(trigger, 0);
                } else {
                    proptest::prop_assert_eq!(trigger, f.bound().max(p0 - reach));
                }
            }
        }
    }

    /// A step crossing many entries splits the sets instead of removing entries one by one:
    /// the same buckets come out, and nothing else.
    #[test]
    fn a_crash_splits_the_crossed_tail_off() {
        let mut ix = TriggerIndex::default();
        for k in 0..200u64 {
            let rises = k % 2 == 1;
            let trigger = if rises { 1_000 + k as i64 } else { 1_000 - k as i64 };
            ix.file(k << 32, [Filed { source: Source::Market(0), rises, trigger }].into_iter().collect());
        }
        // A fall to 900 crosses the falling triggers ≥ 900: k even and ≤ 100.
        let keys = ix.pop_crossed(Source::Market(0), Price::from_raw(900));
        let expected: Vec<Key> = (0..=100u64).filter(|k| k % 2 == 0).map(|k| k << 32).collect();
        assert!(expected.len() >= SPLIT_FROM);
        assert_eq!(keys, expected);
        for &k in &keys {
            ix.remove(k);
        }
        ix.end_pops();
        assert!(ix.is_consistent());
        assert_eq!(ix.len(), 200 - expected.len());
        // A rise to 1,150 crosses the rising triggers ≤ 1,150: k odd and ≤ 150.
        let keys = ix.pop_crossed(Source::Market(0), Price::from_raw(1_150));
        assert_eq!(keys, (0..=150u64).filter(|k| k % 2 == 1).map(|k| k << 32).collect::<Vec<_>>());
        for &k in &keys {
            ix.remove(k);
        }
        ix.end_pops();
        assert!(ix.is_consistent());
    }

    #[test]
    fn a_price_step_pops_only_the_crossed_buckets() {
        let mut ix = TriggerIndex::default();
        let at = |t: i64, rises| Filed { source: Source::Market(0), rises, trigger: t };
        ix.file(1, [at(90, false)].into_iter().collect());
        ix.file(
            2,
            [at(80, false), Filed { source: Source::Market(1), rises: true, trigger: 200 }].into_iter().collect(),
        );
        ix.file(3, [at(120, true)].into_iter().collect());
        ix.file(4, [at(110, true)].into_iter().collect());
        assert_eq!(ix.holders(0), vec![1, 2, 3, 4]);
        let pop = |ix: &mut TriggerIndex, m: u32, price: i64| {
            let keys = ix.pop_crossed(Source::Market(m), Price::from_raw(price));
            for &k in &keys {
                ix.remove(k);
            }
            ix.end_pops();
            keys
        };
        assert_eq!(pop(&mut ix, 0, 95), Vec::<Key>::new());
        assert_eq!(ix.len(), 4);
        assert!(ix.is_consistent());
        // A fall crosses the falling triggers at or above the price.
        assert_eq!(pop(&mut ix, 0, 90), vec![1]);
        assert!(!ix.is_filed(1) && ix.is_filed(2));
        // A rise crosses the rising triggers at or below it, nearest first included.
        assert_eq!(pop(&mut ix, 0, 115), vec![4]);
        assert_eq!(pop(&mut ix, 7, 120), Vec::<Key>::new());
        // Popping 2 through market 0 also removes its market-1 entry.
        assert_eq!(pop(&mut ix, 0, 80), vec![2]);
        assert_eq!(ix.holders(1), Vec::<Key>::new());
        assert_eq!(ix.holders(0), vec![3]);
        assert!(ix.is_consistent());
        // Re-filed during a pop at a trigger inside the popped range, a bucket is still
        // removed properly afterwards.
        let keys = ix.pop_crossed(Source::Market(0), Price::from_raw(120));
        assert_eq!(keys, vec![3]);
        ix.remove(3);
        ix.file(3, [at(120, true)].into_iter().collect());
        ix.end_pops();
        ix.remove(3);
        assert!(ix.is_empty() && ix.is_consistent());
        assert_eq!(ix.holders(0), Vec::<Key>::new(), "no entry left behind in the sets");
    }
}
