//! Accounts, positions and the arithmetic of a fill on one position.
//!
//! A position is a signed size plus a *cash leg* (`quote`): buying pays the notional into the
//! leg, selling receives it. The leg is the position's cost basis (`entry_price = −quote/size`),
//! and `size × mark + quote` its unrealized PnL. Because every fill moves the same cash from the
//! buyer's leg to the seller's, value is conserved exactly; when a position shrinks, the part of
//! the leg that belonged to the closed size is realized into the bucket's cash.

use crate::num::{FundingIndex, NumError, NumResult, Price, Quote, Round, Size};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// Entries of an account's lists, kept sorted by index. The first ones are stored inline in the
/// account (most accounts hold one or two positions), so a fill touches no further memory;
/// serialized exactly like a `Vec`.
pub type Entries<T, const N: usize> = SmallVec<[(u32, T); N]>;

/// Index of a market or asset in the engine's tables.
pub type MarketIdx = u32;
pub type AssetIdx = u32;

/// One perpetual position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Signed size: positive long, negative short.
    pub size: Size,
    /// Cash leg: −(cost of a long) or +(proceeds of a short), realized PnL excluded.
    pub quote: Quote,
    /// The market's funding index when this position last settled funding.
    pub funding_index: FundingIndex,
}

impl Position {
    /// No size and no cash leg left (the funding index does not matter).
    pub fn is_flat(&self) -> bool {
        self.size.is_zero() && self.quote.is_zero()
    }

    /// Average entry price `|quote| / |size|`, rounded down; `None` when flat, or when the cost
    /// per unit lies beyond the price range (only dust charged a socialized loss through the
    /// funding index gets there: thousands of USDC on 1e-8 units).
    pub fn entry_price(&self) -> Option<Price> {
        if self.size.is_zero() {
            return None;
        }
        self.quote.checked_neg().and_then(|q| q.per_unit(self.size, Round::Floor)).ok()
    }

    /// Unrealized PnL at `mark`: `size × mark + quote`, the value rounded down (against the account).
    pub fn unrealized_pnl(&self, mark: Price) -> NumResult<Quote> {
        self.size.value_at(mark, Round::Floor)?.checked_add(self.quote)
    }

    /// Funding this position owes at `index` since it last settled (negative: it is owed),
    /// `size × (index − last index)` rounded up: a payer pays the extra micro-unit and a
    /// receiver gets the smaller amount.
    #[inline]
    pub fn funding_owed(&self, index: FundingIndex) -> NumResult<Quote> {
        if index == self.funding_index {
            return Ok(Quote::ZERO);
        }
        index.checked_sub(self.funding_index)?.owed_by(self.size, Round::Ceil)
    }

    /// True when `next` is at least as exposed as `self`: larger, or on the other side.
    pub fn increases_risk(&self, next: &Position) -> bool {
        let (a, b) = (self.size.raw(), next.size.raw());
        b != 0 && (a == 0 || a.signum() != b.signum() || b.unsigned_abs() > a.unsigned_abs())
    }

    /// Apply a trade of `delta` base (signed) for `cash` quote (signed: negative when buying).
    ///
    /// Returns the new position and the PnL realized by the part that was closed. On a
    /// reduction the kept part keeps its pro-rata share of the cash leg (rounded down) and
    /// the rest of the leg is realized; a flip closes the whole old position, splitting the
    /// trade's cash pro-rata between the closing and the opening part (rounded down for the
    /// closing part), so the two parts sum exactly to `cash`.
    pub fn trade(&self, delta: Size, cash: Quote) -> NumResult<(Position, Quote)> {
        let old = self.size;
        let new_size = old.checked_add(delta)?;
        let same_side = old.is_zero() || old.signum() == delta.signum();
        if same_side {
            let next = Position { size: new_size, quote: self.quote.checked_add(cash)?, ..*self };
            return Ok((next, Quote::ZERO));
        }
        let closes_fully_or_flips = new_size.is_zero() || new_size.signum() != old.signum();
        if !closes_fully_or_flips {
            let leg = self.quote.checked_add(cash)?;
            let kept = self.quote.mul_div_size(new_size, old, Round::Floor)?;
            let next = Position { size: new_size, quote: kept, ..*self };
            return Ok((next, leg.checked_sub(kept)?));
        }
        // Close all of `old` with the first |old| of the trade, open the rest.
        let closing_cash = cash.mul_div_size(old.checked_neg()?, delta, Round::Floor)?;
        let realized = self.quote.checked_add(closing_cash)?;
        let next = Position { size: new_size, quote: cash.checked_sub(closing_cash)?, ..*self };
        Ok((next, realized))
    }
}

/// An isolated position with its own collateral (settlement asset only): it can lose that
/// collateral and nothing else.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Isolated {
    pub margin: Quote,
    pub position: Position,
}

/// One account: a cross book (settlement cash, other collateral, cross positions) and isolated
/// positions. Vectors are kept sorted by index so iteration order is deterministic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Settlement-asset balance of the cross book; realized PnL, fees and funding land here.
    pub cash: Quote,
    /// Other collateral, by asset, never negative.
    pub collateral: Vec<(AssetIdx, Size)>,
    /// Cross positions, by market.
    pub cross: Entries<Position, 2>,
    /// Isolated positions, by market; the first inline (an account rarely isolates more
    /// than one market), so an isolated account needs no allocation of its own.
    pub isolated: Entries<Isolated, 1>,
}

/// Where a market's position of an account lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    Cross,
    Isolated(MarketIdx),
}

impl Account {
    pub fn cross_position(&self, m: MarketIdx) -> Option<&Position> {
        find(&self.cross, m)
    }
    pub fn isolated(&self, m: MarketIdx) -> Option<&Isolated> {
        find(&self.isolated, m)
    }
    pub fn isolated_mut(&mut self, m: MarketIdx) -> Option<&mut Isolated> {
        find_mut(&mut self.isolated, m)
    }
    pub fn collateral(&self, a: AssetIdx) -> Size {
        find(&self.collateral, a).copied().unwrap_or_default()
    }

    /// Fills in a market go to the isolated position when the account holds isolated
    /// collateral for that market, otherwise to the cross book.
    pub fn bucket_for(&self, m: MarketIdx) -> Bucket {
        if self.isolated(m).is_some() {
            Bucket::Isolated(m)
        } else {
            Bucket::Cross
        }
    }

    /// The position of market `m` in `bucket` (flat if none).
    pub fn position(&self, bucket: Bucket, m: MarketIdx) -> Position {
        match bucket {
            Bucket::Cross => self.cross_position(m).copied(),
            Bucket::Isolated(_) => self.isolated(m).map(|i| i.position),
        }
        .unwrap_or_default()
    }

    /// Replace the position of market `m` in `bucket`; a flat cross position is removed.
    pub fn set_position(&mut self, bucket: Bucket, m: MarketIdx, p: Position) {
        match bucket {
            Bucket::Cross if p.size.is_zero() => {
                debug_assert!(p.quote.is_zero(), "a flat position has realized its cash leg");
                remove(&mut self.cross, m);
            }
            Bucket::Cross => upsert(&mut self.cross, m, p),
            Bucket::Isolated(_) => {
                let iso = find_or_insert(&mut self.isolated, m);
                iso.position = p;
            }
        }
    }

    /// Settlement cash of `bucket`.
    pub fn cash(&self, bucket: Bucket) -> Quote {
        match bucket {
            Bucket::Cross => self.cash,
            Bucket::Isolated(m) => self.isolated(m).map(|i| i.margin).unwrap_or_default(),
        }
    }

    /// Set the settlement cash of `bucket`, creating an isolated bucket if needed.
    pub fn set_cash(&mut self, bucket: Bucket, value: Quote) {
        match bucket {
            Bucket::Cross => self.cash = value,
            Bucket::Isolated(m) => find_or_insert(&mut self.isolated, m).margin = value,
        }
    }

    /// Add `delta` (signed) to the settlement cash of `bucket`, creating an isolated bucket if needed.
    pub fn add_cash(&mut self, bucket: Bucket, delta: Quote) -> NumResult<()> {
        let slot = match bucket {
            Bucket::Cross => &mut self.cash,
            Bucket::Isolated(m) => &mut find_or_insert(&mut self.isolated, m).margin,
        };
        *slot = slot.checked_add(delta)?;
        Ok(())
    }

    /// Add `delta` (signed) to a non-settlement collateral balance; errors if it would go negative.
    pub fn add_collateral(&mut self, a: AssetIdx, delta: Size) -> NumResult<()> {
        let next = self.collateral(a).checked_add(delta)?;
        if next.is_negative() {
            return Err(NumError::Overflow);
        }
        if next.is_zero() {
            remove(&mut self.collateral, a);
        } else {
            upsert(&mut self.collateral, a, next);
        }
        Ok(())
    }

    /// Drop an isolated bucket that holds neither collateral nor a position, so later fills in
    /// that market go to the cross book again.
    pub fn drop_empty_isolated(&mut self, m: MarketIdx) {
        if self.isolated(m).is_some_and(|i| i.margin.is_zero() && i.position.is_flat()) {
            remove(&mut self.isolated, m);
        }
    }
}

fn find<T>(v: &[(u32, T)], k: u32) -> Option<&T> {
    v.binary_search_by_key(&k, |e| e.0).ok().map(|i| &v[i].1)
}

fn find_mut<T>(v: &mut [(u32, T)], k: u32) -> Option<&mut T> {
    v.binary_search_by_key(&k, |e| e.0).ok().map(|i| &mut v[i].1)
}

fn find_or_insert<T: Default, V: Sorted<T>>(v: &mut V, k: u32) -> &mut T {
    let i = match v.binary_search_by_key(&k, |e| e.0) {
        Ok(i) => i,
        Err(i) => {
            v.insert_at(i, (k, T::default()));
            i
        }
    };
    &mut v[i].1
}

fn upsert<T: Default, V: Sorted<T>>(v: &mut V, k: u32, value: T) {
    *find_or_insert(v, k) = value;
}

/// The sorted-by-index lists of an account (a `Vec` or an inline `SmallVec`).
trait Sorted<T>: std::ops::DerefMut<Target = [(u32, T)]> {
    fn insert_at(&mut self, i: usize, entry: (u32, T));
    fn remove_at(&mut self, i: usize);
}

impl<T> Sorted<T> for Vec<(u32, T)> {
    fn insert_at(&mut self, i: usize, entry: (u32, T)) {
        self.insert(i, entry);
    }
    fn remove_at(&mut self, i: usize) {
        self.remove(i);
    }
}

impl<T, const N: usize> Sorted<T> for Entries<T, N>
where
    [(u32, T); N]: smallvec::Array<Item = (u32, T)>,
{
    fn insert_at(&mut self, i: usize, entry: (u32, T)) {
        self.insert(i, entry);
    }
    fn remove_at(&mut self, i: usize) {
        self.remove(i);
    }
}

fn remove<T, V: Sorted<T>>(v: &mut V, k: u32) {
    if let Ok(i) = v.binary_search_by_key(&k, |e| e.0) {
        v.remove_at(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Size {
        Size::parse(x).unwrap()
    }
    fn q(x: &str) -> Quote {
        Quote::parse(x).unwrap()
    }

    #[test]
    fn opening_and_adding_accumulate_the_cost_basis() {
        let (p, r) = Position::default().trade(s("1"), q("-50000")).unwrap();
        assert_eq!((p.size, p.quote, r), (s("1"), q("-50000"), Quote::ZERO));
        let (p, _) = p.trade(s("1"), q("-52000")).unwrap();
        assert_eq!(p.entry_price().unwrap().to_string(), "51000");
    }

    #[test]
    fn partial_close_realizes_the_closed_share() {
        let long = Position { size: s("2"), quote: q("-100000"), ..Default::default() };
        // Sell 0.5 at 55,000: the closed half-unit earned 0.5 × 5,000.
        let (p, realized) = long.trade(s("-0.5"), q("27500")).unwrap();
        assert_eq!(p.size, s("1.5"));
        assert_eq!(p.quote, q("-75000"));
        assert_eq!(realized, q("2500"));
        assert_eq!(p.entry_price().unwrap().to_string(), "50000");
    }

    #[test]
    fn full_close_realizes_everything() {
        let short = Position { size: s("-1"), quote: q("50000"), ..Default::default() };
        let (p, realized) = short.trade(s("1"), q("-51000")).unwrap();
        assert_eq!(p.size, Size::ZERO);
        assert_eq!(p.quote, Quote::ZERO);
        assert_eq!(realized, q("-1000"));
    }

    #[test]
    fn flip_closes_then_opens_at_the_trade_price() {
        let long = Position { size: s("1"), quote: q("-50000"), ..Default::default() };
        // Sell 3 at 48,000: close 1 (loss 2,000), open 2 short at 48,000.
        let (p, realized) = long.trade(s("-3"), q("144000")).unwrap();
        assert_eq!(realized, q("-2000"));
        assert_eq!(p.size, s("-2"));
        assert_eq!(p.quote, q("96000"));
        assert_eq!(p.entry_price().unwrap().to_string(), "48000");
    }

    #[test]
    fn trade_conserves_cash_exactly_with_awkward_numbers() {
        let pos = Position { size: s("3"), quote: q("-100"), ..Default::default() };
        for (delta, cash) in
            [("-1", "33.333333"), ("-4", "133.333331"), ("-3", "99.999999"), ("-0.00000007", "0.000003")]
        {
            let (next, realized) = pos.trade(s(delta), q(cash)).unwrap();
            // old leg + trade cash = new leg + realized
            assert_eq!(
                pos.quote.checked_add(q(cash)).unwrap(),
                next.quote.checked_add(realized).unwrap(),
                "{delta} for {cash}"
            );
        }
    }

    #[test]
    fn funding_owed_rounds_against_the_position() {
        let idx = FundingIndex::parse("0.0000000000000001").unwrap();
        let long = Position { size: s("1"), ..Default::default() };
        let short = Position { size: s("-1"), ..Default::default() };
        assert_eq!(long.funding_owed(idx).unwrap(), Quote::from_raw(1), "a payer pays the rounded-up micro-unit");
        assert_eq!(short.funding_owed(idx).unwrap(), Quote::ZERO, "a receiver gets the rounded-down amount");
    }

    #[test]
    fn risk_increase_detection() {
        let p = |x: &str| Position { size: s(x), ..Default::default() };
        assert!(p("0").increases_risk(&p("1")));
        assert!(p("1").increases_risk(&p("2")));
        assert!(p("1").increases_risk(&p("-0.5")), "a flip opens a new exposure");
        assert!(!p("2").increases_risk(&p("1")));
        assert!(!p("-2").increases_risk(&p("0")));
    }

    #[test]
    fn buckets_route_fills_and_clean_up() {
        let mut a = Account::default();
        assert_eq!(a.bucket_for(3), Bucket::Cross);
        a.add_cash(Bucket::Isolated(3), q("10")).unwrap();
        assert_eq!(a.bucket_for(3), Bucket::Isolated(3));
        a.add_cash(Bucket::Isolated(3), q("-10")).unwrap();
        // A position closed after funding moved keeps a non-zero index; the bucket still goes.
        let flat = Position { funding_index: FundingIndex::parse("0.5").unwrap(), ..Default::default() };
        a.set_position(Bucket::Isolated(3), 3, flat);
        a.drop_empty_isolated(3);
        assert_eq!(a.bucket_for(3), Bucket::Cross);
        assert!(a.add_collateral(1, s("-1")).is_err());
    }
}
