//! Auto-deleveraging and socialized-loss math, pure and stateless: ranking of the winners,
//! allocation of the size to close among them (queue or pro-rata, with an optional cap on the
//! share of a winner's profit that may be taken), the largest-remainder split, and the two
//! socialized-loss channels (holders pro-rata, funding index over open interest).
//!
//! Sources (../shared/reference): BitMEX and Binance ADL rankings (anchors-offchain.md §2.1,
//! §2.2), Hyperliquid's ranking index (§1.3), Chitra's queue-vs-pro-rata analysis of the
//! 10 Oct 2025 event (§4.1), Drift's social loss through the funding index (anchors-onchain.md
//! §2).
//!
//! Exactness: ranking scores are fractions of integers compared exactly (cross-multiplication in
//! 256 bits, and Euclid's continued-fraction comparison when a product would not fit), never
//! through floats or rounded ratios; ties go to the smaller id. Splits use the largest-remainder
//! method, so the parts sum exactly to the whole and each part is within one unit of its exact
//! share. Inputs outside the engine's ranges (DESIGN §3 Numbers) may return
//! [`NumError::Overflow`]; nothing panics.

use crate::error::{check_range, ParamError};
use crate::num::{mul_div, out_of_range, pow10, FundingIndex, NumError, NumResult, Price, Quote, Ratio, Round, Size};
use ethnum::U256;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

// ---------------------------------------------------------------------------------------------
// 1. Policy and parameters
// ---------------------------------------------------------------------------------------------

/// Who is deleveraged, and how much.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdlPolicy {
    /// Queue by BitMEX's ranking (anchors-offchain.md §2.2): `PnL% × effective leverage` when
    /// PnL > 0, else `PnL% / effective leverage`, with `PnL% = upnl / entry notional` and
    /// `effective leverage = notional / equity`.
    Bitmex,
    /// Queue by Binance's "LeveragePnL" (anchors-offchain.md §2.1): `max(0, upnl) / max(1,
    /// wallet balance) × maintenance / (wallet balance + upnl)`, 0 when equity ≤ 0. The wallet
    /// balance is [`Candidate::collateral`].
    Binance,
    /// Queue by Hyperliquid's sort index (anchors-offchain.md §1.3): `(mark / entry) × (notional
    /// / equity)` for a long. The reference does not state the convention for shorts; we use
    /// `(entry / mark) × (notional / equity)`, so that for both sides the first factor is
    /// `1 + PnL%`-like and grows with the profit (a short gains as the mark falls below entry).
    Hyperliquid,
    /// Split pro-rata to position size (Chitra's pro-rata, anchors-offchain.md §4.1). The default:
    /// it takes exactly what is needed.
    #[default]
    ProRata,
    /// Split pro-rata to `size × effective leverage` (Chitra's risk-aware pro-rata).
    LeverageWeightedProRata,
}

impl AdlPolicy {
    /// Queue policies close whole positions in rank order; the others split pro-rata.
    pub fn is_queue(self) -> bool {
        matches!(self, AdlPolicy::Bitmex | AdlPolicy::Binance | AdlPolicy::Hyperliquid)
    }
}

/// ADL configuration of a market.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdlParams {
    /// When false the waterfall skips deleveraging: a deficit the insurance funds cannot pay is
    /// socialized once the position is closed. Default true.
    pub enabled: bool,
    /// Default `pro_rata`.
    pub policy: AdlPolicy,
    /// At most this share of a winner's unrealized profit may be taken by one deleveraging:
    /// closing `q` at the bankruptcy price costs the winner `q × |bankruptcy − mark|` against the
    /// mark, which must stay ≤ `profit_cap × max(0, upnl)`. Bounds: 0 < profit_cap ≤ 1.
    /// Default none (no cap: a whole position may be closed).
    pub profit_cap: Option<Ratio>,
}

impl Default for AdlParams {
    fn default() -> Self {
        AdlParams { enabled: true, policy: AdlPolicy::default(), profit_cap: None }
    }
}

/// Who pays a deficit that neither the insurance funds nor deleveraging covered (DESIGN §3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SocialChannel {
    /// Every open position of the market, long and short, pro-rata to its size, charged to its
    /// cash leg: the effect of Drift's funding-index channel, applied at once and split exactly.
    #[default]
    OpenInterest,
    /// Positions of the market with unrealized profit, pro-rata to that profit (Deribit).
    Winners,
    /// Settlement-asset balances of every account, pro-rata to the balance (the segment's
    /// depositors; one segment per venue until segments carry their own depositors).
    Depositors,
}

impl AdlParams {
    pub fn validate(&self) -> Result<(), ParamError> {
        if let Some(cap) = self.profit_cap {
            check_range("adl.profit_cap", cap, Ratio::from_raw(1), Ratio::ONE, "0 < profit_cap ≤ 1")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Exact fractions
// ---------------------------------------------------------------------------------------------

fn umul(a: U256, b: U256) -> NumResult<U256> {
    a.checked_mul(b).ok_or(NumError::Overflow)
}

fn u(x: i128) -> U256 {
    U256::from(x.unsigned_abs())
}

/// `x` as a `u64` when it fits.
fn small(x: U256) -> Option<u64> {
    u64::try_from(x).ok()
}

/// Compare `a/b` with `c/d` exactly (`b, d > 0`): by cross-multiplication when both products fit
/// in 256 bits, otherwise by Euclid's algorithm on the continued fractions (integer parts, then
/// the reciprocals of the remainders), which never overflows.
///
/// Operands that fit in 64 bits (sizes, prices and most scores of a real book) cross-multiply in
/// 128 bits, where the same comparison costs a fraction of the 256-bit one: a deleveraging ranks
/// every winner of the market, thousands in a large book.
fn cmp_frac(a: U256, b: U256, c: U256, d: U256) -> Ordering {
    match (small(a), small(b), small(c), small(d)) {
        (Some(a), Some(b), Some(c), Some(d)) => (u128::from(a) * u128::from(d)).cmp(&(u128::from(c) * u128::from(b))),
        _ => cmp_frac_wide(a, b, c, d),
    }
}

/// [`cmp_frac`] in 256 bits, for operands of any size.
fn cmp_frac_wide(mut a: U256, mut b: U256, mut c: U256, mut d: U256) -> Ordering {
    loop {
        if let (Some(x), Some(y)) = (a.checked_mul(d), c.checked_mul(b)) {
            return x.cmp(&y);
        }
        let (q1, r1, q2, r2) = (a / b, a % b, c / d, c % d);
        if q1 != q2 {
            return q1.cmp(&q2);
        }
        match (r1 == U256::ZERO, r2 == U256::ZERO) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            // r1/b vs r2/d  ⇔  d/r2 vs b/r1.
            (false, false) => (a, b, c, d) = (d, r2, b, r1),
        }
    }
}

/// A signed fraction `±num/den`, `den > 0`.
#[derive(Clone, Copy, Debug)]
struct Frac {
    negative: bool,
    num: U256,
    den: U256,
}

impl Frac {
    fn new(negative: bool, num: U256, den: U256) -> Frac {
        Frac { negative: negative && num != U256::ZERO, num, den }
    }
    fn cmp(&self, other: &Frac) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => cmp_frac(self.num, self.den, other.num, other.den),
            (true, true) => cmp_frac(other.num, other.den, self.num, self.den),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Candidates and ranking
// ---------------------------------------------------------------------------------------------

/// A position that may be deleveraged: on the side opposite the bankrupt one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// Unique among the candidates; ties of every ordering go to the smaller id.
    pub id: u32,
    /// The winner's signed position size (all candidates on the same side).
    pub size: Size,
    /// Average entry price, positive.
    pub entry_price: Price,
    /// Equity of the account (or of the isolated position) at the mark.
    pub equity: Quote,
    /// Wallet balance without unrealized PnL (Binance's WB).
    pub collateral: Quote,
    /// Maintenance requirement of the account (or isolated position), ≥ 0.
    pub maintenance: Quote,
    /// Unrealized PnL of this position at the mark.
    pub unrealized_pnl: Quote,
}

/// Equity below one micro-unit counts as one micro-unit in leverage denominators: a winner
/// with non-positive equity is maximally leveraged and comes first in the leverage-based queues.
fn equity_floor(c: &Candidate) -> U256 {
    U256::from(c.equity.raw().max(1) as u128)
}

/// Effective leverage as a raw ratio (1e-8), `notional / equity`, rounded down, clamped to
/// `[1e-8, 1e6]` so that every position of non-zero size has a positive weight and the weights
/// of [`AdlPolicy::LeverageWeightedProRata`] stay within 256-bit products.
const MAX_LEVERAGE_RAW: u128 = 1_000_000 * Ratio::ONE_RAW as u128;

fn leverage_raw(c: &Candidate, mark: Price) -> NumResult<U256> {
    // notional_raw = |s|·mark/1e10 (quote raw); leverage_raw = notional_raw·1e8/equity.
    let n = umul(u(c.size.raw()), u(i128::from(mark.raw())))?;
    let lev = n / umul(equity_floor(c), U256::from(100u8))?;
    Ok(lev.clamp(U256::ONE, U256::from(MAX_LEVERAGE_RAW)))
}

/// The ranking score of one candidate (size ≠ 0), up to a positive factor common to all
/// candidates of one call (every score is formed from raw integers; constant scale factors
/// cancel in comparisons).
fn score(policy: AdlPolicy, c: &Candidate, mark: Price) -> NumResult<Frac> {
    let size = u(c.size.raw());
    let entry = u(i128::from(c.entry_price.raw()));
    let markv = u(i128::from(mark.raw()));
    let upnl = c.unrealized_pnl.raw();
    Ok(match policy {
        // PnL% × lev = (upnl/(|s|·entry))·(|s|·mark/equity) = upnl·mark/(entry·equity);
        // PnL% / lev = upnl·equity/(|s|²·entry·mark), mark common to all: upnl·equity/(|s|²·entry).
        AdlPolicy::Bitmex if upnl > 0 => Frac::new(false, umul(u(upnl), markv)?, umul(entry, equity_floor(c))?),
        AdlPolicy::Bitmex => Frac::new(true, umul(u(upnl), equity_floor(c))?, umul(umul(size, size)?, entry)?),
        // max(0, upnl)/max($1, WB) × MM/equity; 0 when equity ≤ 0.
        AdlPolicy::Binance => {
            if upnl <= 0 || !c.equity.is_positive() {
                Frac::new(false, U256::ZERO, U256::ONE)
            } else {
                let wallet = U256::from(c.collateral.raw().max(Quote::ONE_RAW) as u128);
                Frac::new(false, umul(u(upnl), u(c.maintenance.raw()))?, umul(wallet, u(c.equity.raw()))?)
            }
        }
        // long: (mark/entry)·(|s|·mark/equity); short: (entry/mark)·(|s|·mark/equity) = entry·|s|/equity.
        AdlPolicy::Hyperliquid if c.size.is_positive() => {
            Frac::new(false, umul(umul(markv, markv)?, size)?, umul(entry, equity_floor(c))?)
        }
        AdlPolicy::Hyperliquid => Frac::new(false, umul(entry, size)?, equity_floor(c)),
        AdlPolicy::ProRata | AdlPolicy::LeverageWeightedProRata => {
            Frac::new(false, weight(policy, c, mark)?, U256::ONE)
        }
    })
}

/// Pro-rata weight: `|size|` raw, or `|size| × leverage_raw`.
fn weight(policy: AdlPolicy, c: &Candidate, mark: Price) -> NumResult<U256> {
    match policy {
        AdlPolicy::LeverageWeightedProRata if !c.size.is_zero() => umul(u(c.size.raw()), leverage_raw(c, mark)?),
        _ => Ok(u(c.size.raw())),
    }
}

fn check_candidates(candidates: &[Candidate], mark: Price) -> NumResult<()> {
    if !mark.is_positive() {
        return Err(out_of_range("mark", mark));
    }
    let mut ids: Vec<u32> = candidates.iter().map(|c| c.id).collect();
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(out_of_range("duplicate candidate id", w[0]));
    }
    let side = candidates.iter().map(|c| c.size.signum()).find(|&s| s != 0);
    for c in candidates {
        if c.size.signum() != 0 && Some(c.size.signum()) != side {
            return Err(out_of_range("candidate size (all candidates must be on one side)", c.size));
        }
        if !c.size.is_zero() && !c.entry_price.is_positive() {
            return Err(out_of_range("candidate entry_price", c.entry_price));
        }
        if c.maintenance.is_negative() {
            return Err(out_of_range("candidate maintenance", c.maintenance));
        }
    }
    Ok(())
}

/// The deleveraging order: best-ranked (first to be deleveraged) first.
///
/// Queue policies sort by their score (see [`AdlPolicy`]) descending; pro-rata policies by their
/// weight (size, or size × leverage) descending — the order in which their parts are reported.
/// Ties go to the smaller id; candidates of size 0 come last. Scores are compared exactly.
/// Errors: duplicate ids, candidates on both sides, a non-positive mark or entry price.
pub fn rank(policy: AdlPolicy, candidates: &[Candidate], mark: Price) -> NumResult<Vec<u32>> {
    Ok(rank_indices(policy, candidates, mark)?.into_iter().map(|i| candidates[i].id).collect())
}

/// [`rank`] as indices into `candidates`.
fn rank_indices(policy: AdlPolicy, candidates: &[Candidate], mark: Price) -> NumResult<Vec<usize>> {
    check_candidates(candidates, mark)?;
    let mut keyed = Vec::with_capacity(candidates.len());
    for (i, c) in candidates.iter().enumerate() {
        let s = if c.size.is_zero() { None } else { Some(score(policy, c, mark)?) };
        keyed.push((s, c.id, i));
    }
    keyed.sort_by(|(sa, ia, _), (sb, ib, _)| {
        let by_score = match (sa, sb) {
            (Some(a), Some(b)) => b.cmp(a),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        by_score.then(ia.cmp(ib))
    });
    Ok(keyed.into_iter().map(|(_, _, i)| i).collect())
}

// ---------------------------------------------------------------------------------------------
// 4. Allocation
// ---------------------------------------------------------------------------------------------

/// How much of one candidate may be closed: `|size|`, and with a profit cap at most
/// `⌊profit_cap × max(0, upnl) / h⌋` where `h` is what closing one unit at the bankruptcy price
/// costs the winner against the mark (`bankruptcy − mark` for a short winner buying back,
/// `mark − bankruptcy` for a long winner selling). When `h ≤ 0` closing costs the winner
/// nothing and the cap does not bind. Rounded down: never beyond the cap.
pub fn capacity(c: &Candidate, profit_cap: Option<Ratio>, bankruptcy_price: Price, mark: Price) -> NumResult<Size> {
    let size = c.size.abs()?;
    let Some(cap) = profit_cap else { return Ok(size) };
    let h = if c.size.is_negative() {
        i128::from(bankruptcy_price.raw()) - i128::from(mark.raw())
    } else {
        i128::from(mark.raw()) - i128::from(bankruptcy_price.raw())
    };
    if h <= 0 {
        return Ok(size);
    }
    let profit = c.unrealized_pnl.raw().max(0);
    // size_raw = cap_raw/1e8 × profit_raw/1e6 / (h_raw/1e8) × 1e8 = cap·profit·100/h.
    let limit = umul(umul(u(i128::from(cap.raw().max(0))), u(profit))?, U256::from(100u8))? / u(h);
    Ok(Size::from_raw(i128::try_from(limit.min(u(size.raw()))).map_err(|_| NumError::Overflow)?))
}

/// The outcome of one deleveraging.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// `(id, size to close)`, positive sizes, in rank order; candidates closed for 0 omitted.
    pub per_candidate: Vec<(u32, Size)>,
    /// Σ of `per_candidate`.
    pub closed: Size,
    /// `(closed − needed)⁺ × mark`, rounded up: the notional closed beyond what the deficit
    /// required (0 for pro-rata).
    pub overshoot_notional: Quote,
}

impl Allocation {
    /// The allocation trimmed to `min(needed, closed)`: the last entries are cut to the remainder
    /// (in rank order), so each deleveraged unit has a counterpart in the bankrupt position. For
    /// pro-rata allocations this is the allocation itself.
    pub fn matched(&self, needed: Size) -> Vec<(u32, Size)> {
        let mut left = needed.raw().max(0);
        let mut out = Vec::with_capacity(self.per_candidate.len());
        for &(id, s) in &self.per_candidate {
            let take = s.raw().min(left);
            if take > 0 {
                out.push((id, Size::from_raw(take)));
            }
            left -= take;
        }
        out
    }
}

/// Allocate the deleveraging of `needed` among `candidates`.
///
/// **What `needed` means.** `needed` is the size (base units, ≥ 0) that must be closed at
/// `bankruptcy_price` to resolve the deficit — normally the bankrupt account's remaining
/// position in this market. Each unit closed there moves `|bankruptcy_price − mark|` from the
/// winner to the bankrupt account, so `needed × |bankruptcy_price − mark|` is the deficit: what
/// Chitra calls `B_needed` (anchors-offchain.md §4.1).
///
/// - **Queue policies** (`bitmex`, `binance`, `hyperliquid`) close **whole positions** — each
///   candidate's [`capacity`] (its size, or its profit-capped part) — in [`rank`] order until
///   the closed total covers `needed`: the production greedy queue of Chitra §4.1 ("fully close
///   until the deficit is covered"). The last position is closed whole too, so `closed` may
///   exceed `needed`; that excess, valued at the mark, is the **overshoot**. An engine that must
///   match every deleveraged unit with the bankrupt position uses [`Allocation::matched`].
/// - **Pro-rata policies** split exactly `min(needed, Σ capacity)` proportional to size (or to
///   size × leverage), with the largest-remainder method and water-filling: a candidate whose
///   share would exceed its capacity is closed at its capacity and the rest is re-split among
///   the others. Overshoot 0.
///
/// Every candidate gets at most its capacity. When the total capacity is below `needed`, everything
/// available is closed and the caller socializes the rest.
///
/// Errors: as [`rank`], plus a negative `needed` or a non-positive `bankruptcy_price`.
pub fn allocate(
    params: &AdlParams,
    candidates: &[Candidate],
    needed: Size,
    bankruptcy_price: Price,
    mark: Price,
) -> NumResult<Allocation> {
    if needed.is_negative() {
        return Err(out_of_range("needed", needed));
    }
    if !bankruptcy_price.is_positive() {
        return Err(out_of_range("bankruptcy_price", bankruptcy_price));
    }
    let order = rank_indices(params.policy, candidates, mark)?;
    let mut caps = Vec::with_capacity(order.len());
    for &i in &order {
        let c = &candidates[i];
        caps.push((c, capacity(c, params.profit_cap, bankruptcy_price, mark)?));
    }
    let mut per_candidate = Vec::new();
    let mut closed = Size::ZERO;
    if params.policy.is_queue() {
        for &(c, cap) in &caps {
            if closed >= needed {
                break;
            }
            if cap.is_positive() {
                per_candidate.push((c.id, cap));
                closed = closed.checked_add(cap)?;
            }
        }
    } else {
        let total_cap = caps.iter().try_fold(Size::ZERO, |acc, &(_, cap)| acc.checked_add(cap))?;
        let target = needed.min(total_cap);
        let mut items = Vec::with_capacity(caps.len());
        for &(c, cap) in &caps {
            items.push((c.id, weight(params.policy, c, mark)?, cap.raw()));
        }
        let parts = capped_split(target.raw(), &items)?;
        for (&(c, _), part) in caps.iter().zip(parts) {
            if part > 0 {
                per_candidate.push((c.id, Size::from_raw(part)));
            }
        }
        closed = target;
    }
    let excess = closed.checked_sub(needed)?.max(Size::ZERO);
    Ok(Allocation { per_candidate, closed, overshoot_notional: excess.notional(mark, Round::Ceil)? })
}

/// Split `total` (≤ Σ caps) proportional to the weights without giving anyone more than their
/// cap (water-filling): visit items by `cap / weight` ascending (ties by id); an item whose cap
/// is at most its share of what is left, `cap ≤ left × w / W`, is filled to its cap; the rest
/// split what is left by the largest-remainder method — each share is then strictly below the
/// cap, so its rounded-up part is at most the cap. Items of weight 0 get 0.
fn capped_split(total: i128, items: &[(u32, U256, i128)]) -> NumResult<Vec<i128>> {
    let mut parts = vec![0i128; items.len()];
    let mut idx: Vec<usize> = (0..items.len()).filter(|&i| items[i].1 > U256::ZERO && items[i].2 > 0).collect();
    idx.sort_by(|&i, &j| {
        let (a, b) = (&items[i], &items[j]);
        cmp_frac(u(a.2), a.1, u(b.2), b.1).then(a.0.cmp(&b.0))
    });
    let mut left = total;
    let mut w_left =
        idx.iter().try_fold(U256::ZERO, |acc, &i| acc.checked_add(items[i].1)).ok_or(NumError::Overflow)?;
    let mut k = 0;
    while k < idx.len() {
        let (_, w, cap) = items[idx[k]];
        if cmp_frac(u(cap), w, u(left), w_left) == Ordering::Greater {
            break;
        }
        parts[idx[k]] = cap;
        left -= cap;
        w_left -= w;
        k += 1;
    }
    if left > 0 {
        let rest: Vec<(u32, U256)> = idx[k..].iter().map(|&i| (items[i].0, items[i].1)).collect();
        if rest.is_empty() {
            return Err(out_of_range("allocation beyond total capacity", left));
        }
        let split = split_u256(left.unsigned_abs(), &rest)?;
        for (&i, p) in idx[k..].iter().zip(split) {
            // p ≤ left ≤ i128::MAX.
            parts[i] = p as i128;
        }
    }
    Ok(parts)
}

// ---------------------------------------------------------------------------------------------
// 5. Largest remainder and socialized loss
// ---------------------------------------------------------------------------------------------

/// Largest-remainder split of `total ≥ 0` by weights (Σ w > 0 unless total is 0): parts
/// `⌊total·w/W⌋`, then one more unit to the largest remainders, ties by id. Same order as input.
fn split_u256(total: u128, items: &[(u32, U256)]) -> NumResult<Vec<u128>> {
    if total == 0 {
        return Ok(vec![0; items.len()]);
    }
    let w_total = items.iter().try_fold(U256::ZERO, |acc, &(_, w)| acc.checked_add(w)).ok_or(NumError::Overflow)?;
    if w_total == U256::ZERO {
        return Err(NumError::DivisionByZero);
    }
    let t = U256::from(total);
    let mut parts = Vec::with_capacity(items.len());
    let mut rems = Vec::with_capacity(items.len());
    let mut given: u128 = 0;
    // With the total and every weight below 2^64, each product and the weights' sum fit in 128
    // bits, and 128-bit division gives the same quotients and remainders as the 256-bit one.
    let narrow =
        small(t).is_some() && u128::try_from(w_total).is_ok() && items.iter().all(|&(_, w)| small(w).is_some());
    for &(_, w) in items {
        let (part, rem) = share(t, w, w_total, narrow)?;
        given += part;
        parts.push(part);
        rems.push(rem);
    }
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&i, &j| rems[j].cmp(&rems[i]).then(items[i].0.cmp(&items[j].0)));
    // Σ remainders / W = total − given < number of items.
    for &i in order.iter().take((total - given) as usize) {
        parts[i] += 1;
    }
    Ok(parts)
}

/// `⌊t·w/W⌋` and the remainder, with `w ≤ W`; in 128 bits when `narrow` (the caller has checked
/// that `t` and `w` are below 2^64 and `W` below 2^128).
fn share(t: U256, w: U256, w_total: U256, narrow: bool) -> NumResult<(u128, U256)> {
    if narrow {
        let (p, wt) = (t.as_u128() * w.as_u128(), w_total.as_u128());
        return Ok((p / wt, U256::from(p % wt)));
    }
    let p = umul(t, w)?;
    // ⌊t·w/W⌋ ≤ t: fits u128.
    Ok(((p / w_total).as_u128(), p % w_total))
}

/// Split `total` exactly in proportion to the weights by the largest-remainder method (DESIGN
/// §3): each part is `⌊|total|·w/W⌋` or one more, the extra units going to the largest
/// remainders, ties to the smaller id; the parts sum exactly to `total` and each is within one
/// unit of its exact share `total·w/W`. A negative total is split as its magnitude, negated.
/// The result is in the input order and does not depend on it.
///
/// Errors: negative weights, duplicate ids, or all weights 0 with `total ≠ 0`.
pub fn largest_remainder(total: i128, weights: &[(u32, i128)]) -> NumResult<Vec<(u32, i128)>> {
    let mut ids: Vec<u32> = weights.iter().map(|&(id, _)| id).collect();
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(out_of_range("duplicate id", w[0]));
    }
    if let Some(&(id, w)) = weights.iter().find(|&&(_, w)| w < 0) {
        return Err(out_of_range(&format!("weight of id {id}"), w));
    }
    let items: Vec<(u32, U256)> = weights.iter().map(|&(id, w)| (id, u(w))).collect();
    let parts = split_u256(total.unsigned_abs(), &items)?;
    // Each part ≤ |total| ≤ 2^127, and a part equal to 2^127 only when total = i128::MIN.
    Ok(weights
        .iter()
        .zip(parts)
        .map(|(&(id, _), p)| (id, if total < 0 { (p as i128).wrapping_neg() } else { p as i128 }))
        .collect())
}

/// Socialize `loss` (≥ 0: what the holders pay together) pro-rata to the holders' sizes (sign
/// ignored: both sides pay), by [`largest_remainder`]: the payments sum exactly to the loss,
/// each within one micro-unit of its exact share. This is the "winners pro-rata" (Deribit) and
/// "segment depositors pro-rata" channel of DESIGN §3 (pass deposits as sizes for the latter).
pub fn socialize(loss: Quote, holders: &[(u32, Size)]) -> NumResult<Vec<(u32, Quote)>> {
    if loss.is_negative() {
        return Err(out_of_range("loss", loss));
    }
    let weights: Vec<(u32, i128)> =
        holders.iter().map(|&(id, s)| Ok((id, s.abs()?.raw()))).collect::<NumResult<_>>()?;
    Ok(largest_remainder(loss.raw(), &weights)?.into_iter().map(|(id, p)| (id, Quote::from_raw(p))).collect())
}

/// The funding-index channel of socialized loss (Drift `resolve_perp_bankruptcy` /
/// `calculate_funding_rate_deltas_to_resolve_bankruptcy`, anchors-onchain.md §2): every unit of
/// open interest, long or short, pays the same
///
/// `δ = |loss| / (|long_oi| + |short_oi|)` per unit of base,
///
/// rounded **up** to the index scale (1e-16 quote per base) so the loss is always covered.
/// Applying it: the long side's index rises by δ and the short side's falls by δ (Drift's
/// `cumulative_funding_rate_long += δ, short −= δ`); with [`FundingIndex::owed_by`] (size ×
/// Δindex, rounded up for payers) each position then owes `|size| × δ`.
///
/// Units: Drift's cumulative funding rate is quote per base at `FUNDING_RATE_PRECISION` 1e9;
/// ours is quote per base at 1e16. Drift rounds up at 1e-6 quote per base, then scales by 1e3.
/// No open interest is an error (Drift errors too).
pub fn funding_delta_for_loss(loss: Quote, long_oi: Size, short_oi: Size) -> NumResult<FundingIndex> {
    let oi = long_oi.abs()?.checked_add(short_oi.abs()?)?;
    if oi.is_zero() {
        return Err(NumError::DivisionByZero);
    }
    // δ_raw = |loss_raw|/1e6 / (oi_raw/1e8) × 1e16 = |loss_raw|·1e18 / oi_raw.
    const SCALE: u32 = FundingIndex::DECIMALS + Size::DECIMALS - Quote::DECIMALS;
    let loss = loss.abs()?.raw();
    Ok(FundingIndex::from_raw(mul_div(loss, pow10(SCALE), oi.raw(), Round::Ceil)?))
}

// ---------------------------------------------------------------------------------------------
// 6. Policy studies
// ---------------------------------------------------------------------------------------------

/// A book of short winners reproducing one ADL wave of 10 Oct 2025 from its aggregates
/// (data/adl-2025-10-10: `budget_needed` B, `budget_prod` H, `total_cap`), for comparing
/// policies on it. Position-level data is not public, so the book is built: a bankrupt long at
/// `mark` with bankruptcy price `mark + 1`, so each unit closed moves $1 from a winner and sizes
/// in base equal USD of haircut, and ten short winners (entry 1.2 × mark) holding `total_cap`.
/// The three top-ranked (leverage 10, 9, 8) hold H — two of 0.4·B each and the third the rest
/// — and seven lower-ranked (leverage 7..1) share `total_cap − H` by weights 7..1. A
/// whole-position queue then closes exactly H (its overshoot is H − B) and pro-rata exactly
/// min(B, total_cap). Needs B ≤ H ≤ total_cap (the waves where the queue overshot); `None`
/// otherwise.
pub fn wave_book(needed: Size, taken: Size, total_cap: Size, mark: Price) -> Option<Vec<Candidate>> {
    if needed > taken || taken > total_cap || !needed.is_positive() || !mark.is_positive() {
        return None;
    }
    let top = needed.mul_div(Size::from_raw(40_000_000), Size::ONE, Round::Floor).ok()?;
    let third = taken.checked_sub(top).ok()?.checked_sub(top).ok()?;
    let weights: Vec<(u32, i128)> = (1..=7).map(|k| (k, i128::from(8 - k))).collect();
    let rest = largest_remainder(total_cap.checked_sub(taken).ok()?.raw(), &weights).ok()?;
    let mut sizes = vec![top, top, third];
    sizes.extend(rest.into_iter().map(|(_, s)| Size::from_raw(s)));
    let entry = mark.scale(Ratio::from_raw(120_000_000), Round::Floor).ok()?;
    let mut book = Vec::with_capacity(sizes.len());
    for (i, s) in sizes.into_iter().enumerate() {
        let size = s.checked_neg().ok()?;
        let notional = s.notional(mark, Round::Floor).ok()?;
        let equity = Quote::from_raw(notional.raw() / (10 - i as i128));
        let unrealized_pnl =
            size.value_at(mark, Round::Floor).ok()?.checked_sub(size.value_at(entry, Round::Floor).ok()?).ok()?;
        let collateral = equity.checked_sub(unrealized_pnl).ok()?;
        let maintenance = s.notional(mark, Round::Ceil).ok()?.mul_ratio_ceil(Ratio::from_raw(1_000_000)).ok()?;
        book.push(Candidate {
            id: i as u32 + 1,
            size,
            entry_price: entry,
            equity,
            collateral,
            maintenance,
            unrealized_pnl,
        });
    }
    Some(book)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ethnum::I256;
    use proptest::prelude::*;

    use crate::testkit::{px, q, r, sz};

    /// A short winner at `mark` with entry `entry` and the given equity; collateral = equity −
    /// upnl, maintenance 1% of the notional.
    fn short(id: u32, size: &str, entry: &str, equity: &str, mark: Price) -> Candidate {
        let s = sz(size).checked_neg().unwrap();
        let upnl =
            s.value_at(mark, Round::Floor).unwrap().checked_sub(s.value_at(px(entry), Round::Floor).unwrap()).unwrap();
        Candidate {
            id,
            size: s,
            entry_price: px(entry),
            equity: q(equity),
            collateral: q(equity).checked_sub(upnl).unwrap(),
            maintenance: s.notional(mark, Round::Ceil).unwrap().mul_ratio_ceil(r("0.01")).unwrap(),
            unrealized_pnl: upnl,
        }
    }

    #[test]
    fn cmp_frac_is_exact_beyond_256_bit_products() {
        let big = U256::MAX / 3;
        assert_eq!(cmp_frac(big, big - 1, big + 1, big), Ordering::Greater);
        assert_eq!(cmp_frac(big - 1, big, big, big + 1), Ordering::Less);
        assert_eq!(cmp_frac(big * 2, big, U256::from(4u8), U256::from(2u8)), Ordering::Equal);
        assert_eq!(cmp_frac(U256::ONE, U256::from(3u8), U256::from(2u8), U256::from(6u8)), Ordering::Equal);
        assert_eq!(cmp_frac(U256::ZERO, U256::ONE, U256::ZERO, big), Ordering::Equal);
    }

    #[test]
    fn rankings() {
        let mark = px("100");
        // Longs winning at mark 100.
        let long = |id: u32, size: &str, entry: &str, equity: &str, wb: &str, mm: &str| {
            let s = sz(size);
            let upnl = s
                .value_at(mark, Round::Floor)
                .unwrap()
                .checked_sub(s.value_at(px(entry), Round::Floor).unwrap())
                .unwrap();
            Candidate {
                id,
                size: s,
                entry_price: px(entry),
                equity: q(equity),
                collateral: q(wb),
                maintenance: q(mm),
                unrealized_pnl: upnl,
            }
        };
        let book = [
            // id 1: PnL% 25% (entry 80), lev 10 → BitMEX 2.5; HL 1.25 × 10 = 12.5.
            long(1, "1", "80", "10", "-10", "1"),
            // id 2: PnL% 100% (entry 50), lev 2 → BitMEX 2.0; HL 2 × 2 = 4.
            long(2, "1", "50", "50", "0", "1"),
            // id 3: PnL% 25%, lev 10 (a tie with id 1 for BitMEX; HL too).
            long(3, "2", "80", "20", "-20", "2"),
            // id 4: losing (entry 125: PnL% −20%), lev 1 → BitMEX −0.2.
            long(4, "1", "125", "100", "125", "1"),
            // id 5: size 0: always last.
            long(5, "0", "100", "5", "5", "0"),
        ];
        assert_eq!(rank(AdlPolicy::Bitmex, &book, mark).unwrap(), vec![1, 3, 2, 4, 5]);
        assert_eq!(rank(AdlPolicy::Hyperliquid, &book, mark).unwrap(), vec![1, 3, 2, 4, 5]);
        // Binance: max(0,upnl)/max(1,WB) × MM/equity: id1 20/1 × 1/10 = 2; id2 50/1 × 1/50 = 1;
        // id3 40/1 × 2/20 = 4; id4 0.
        assert_eq!(rank(AdlPolicy::Binance, &book, mark).unwrap(), vec![3, 1, 2, 4, 5]);
        // Pro-rata: by size, then id.
        assert_eq!(rank(AdlPolicy::ProRata, &book, mark).unwrap(), vec![3, 1, 2, 4, 5]);
        // Leverage weighted: id1 1×10, id2 1×2, id3 2×10, id4 1×1.
        assert_eq!(rank(AdlPolicy::LeverageWeightedProRata, &book, mark).unwrap(), vec![3, 1, 2, 4, 5]);

        // Shorts for Hyperliquid: entry/mark × notional/equity.
        let a = short(1, "1", "120", "20", mark); // 1.2 × 5 = 6
        let b = short(2, "1", "150", "50", mark); // 1.5 × 2 = 3
        let c = short(3, "1", "101", "10", mark); // 1.01 × 10 = 10.1
        assert_eq!(rank(AdlPolicy::Hyperliquid, &[a, b, c], mark).unwrap(), vec![3, 1, 2]);
        // Non-positive equity counts as maximal leverage: first in the leverage queues.
        let broke = Candidate { equity: q("-1"), ..short(4, "1", "101", "10", mark) };
        assert_eq!(rank(AdlPolicy::Hyperliquid, &[a, b, c, broke], mark).unwrap(), vec![4, 3, 1, 2]);
        assert_eq!(rank(AdlPolicy::Binance, &[a, broke], mark).unwrap(), vec![1, 4]);

        // Ties decided exactly, not by rounded ratios: 3·100/(99·300) = 1/99 against
        // 100/(99·100.000001), which agree to 14 significant digits; then an exact tie (by id).
        let t1 = long(7, "3", "99", "300", "0", "0");
        let t2 = long(6, "1", "99", "100.000001", "0", "0");
        assert_eq!(rank(AdlPolicy::Bitmex, &[t1, t2], mark).unwrap(), vec![7, 6]);
        let t3 = long(6, "1", "99", "100", "0", "0");
        assert_eq!(rank(AdlPolicy::Bitmex, &[t1, t3], mark).unwrap(), vec![6, 7]);

        // Bad input.
        assert!(rank(AdlPolicy::Bitmex, &[a, long(9, "1", "80", "1", "1", "1")], mark).is_err());
        assert!(rank(AdlPolicy::Bitmex, &[a, a], mark).is_err());
        assert!(rank(AdlPolicy::Bitmex, &[a], Price::ZERO).is_err());
        assert!(rank(AdlPolicy::Bitmex, &[Candidate { entry_price: Price::ZERO, ..a }], mark).is_err());
    }

    #[test]
    fn queue_closes_whole_positions_and_pro_rata_exactly_what_is_needed() {
        let (mark, bp) = (px("100"), px("101"));
        let book = [
            short(1, "3", "120", "30", mark),  // lev 10
            short(2, "5", "120", "100", mark), // lev 5
            short(3, "2", "120", "200", mark), // lev 1
        ];
        let queue = AdlParams { enabled: true, policy: AdlPolicy::Bitmex, profit_cap: None };
        let a = allocate(&queue, &book, sz("4"), bp, mark).unwrap();
        assert_eq!(a.per_candidate, vec![(1, sz("3")), (2, sz("5"))]);
        assert_eq!(a.closed, sz("8"));
        assert_eq!(a.overshoot_notional, q("400"));
        assert_eq!(a.matched(sz("4")), vec![(1, sz("3")), (2, sz("1"))]);

        let pr = AdlParams { enabled: true, policy: AdlPolicy::ProRata, profit_cap: None };
        let a = allocate(&pr, &book, sz("4"), bp, mark).unwrap();
        // 4 × 3/10, 4 × 5/10, 4 × 2/10.
        assert_eq!(a.per_candidate, vec![(2, sz("2")), (1, sz("1.2")), (3, sz("0.8"))]);
        assert_eq!((a.closed, a.overshoot_notional), (sz("4"), Quote::ZERO));
        assert_eq!(a.matched(sz("4")), a.per_candidate);

        // Leverage-weighted: weights 3×10, 5×5, 2×1 = 30, 25, 2 of 57.
        let lw = AdlParams { enabled: true, policy: AdlPolicy::LeverageWeightedProRata, profit_cap: None };
        let a = allocate(&lw, &book, sz("0.57"), bp, mark).unwrap();
        assert_eq!(a.per_candidate, vec![(1, sz("0.3")), (2, sz("0.25")), (3, sz("0.02"))]);
        // Water-filling: 9 of 10 needed; id 1's share 9×30/57 = 4.74 exceeds its 3, so it is
        // filled and 6 is split 25:2 → 5.5555…, 0.4444…; id 2's share then exceeds 5 too.
        let a = allocate(&lw, &book, sz("9"), bp, mark).unwrap();
        assert_eq!(a.per_candidate, vec![(1, sz("3")), (2, sz("5")), (3, sz("1"))]);

        // More needed than the book holds: everything, no overshoot; the caller socializes the rest.
        for p in [queue, pr, lw] {
            let a = allocate(&p, &book, sz("12"), bp, mark).unwrap();
            assert_eq!((a.closed, a.overshoot_notional), (sz("10"), Quote::ZERO), "{p:?}");
        }
        // Nothing needed: nothing closed.
        assert_eq!(allocate(&queue, &book, Size::ZERO, bp, mark).unwrap().per_candidate, vec![]);
        assert!(allocate(&queue, &book, sz("-1"), bp, mark).is_err());
        assert!(allocate(&queue, &book, sz("1"), Price::ZERO, mark).is_err());
    }

    #[test]
    fn profit_cap_limits_each_winner() {
        let (mark, bp) = (px("100"), px("101"));
        // Closing costs the short winners $1 per unit at 101. id 1: upnl 20 × 3 = 60, 10% is 6
        // → 6 units, more than its 3. id 2: upnl 2 × 5 = 10, 10% is 1 → 1 unit of its 5.
        let book = [short(1, "3", "120", "30", mark), short(2, "5", "102", "100", mark)];
        let cap = Some(r("0.1"));
        assert_eq!(capacity(&book[0], cap, bp, mark).unwrap(), sz("3"));
        assert_eq!(capacity(&book[1], cap, bp, mark).unwrap(), sz("1"));
        // A bankruptcy price on the winner's side costs nothing: no cap.
        assert_eq!(capacity(&book[1], cap, px("99"), mark).unwrap(), sz("5"));
        // A losing winner cannot be touched under a cap.
        let loser = short(3, "5", "90", "100", mark);
        assert_eq!(capacity(&loser, cap, bp, mark).unwrap(), Size::ZERO);
        assert_eq!(capacity(&loser, None, bp, mark).unwrap(), sz("5"));

        let params = AdlParams { enabled: true, policy: AdlPolicy::ProRata, profit_cap: cap };
        let a = allocate(&params, &book, sz("3"), bp, mark).unwrap();
        // Shares 3×5/8 = 1.875 for id 2 exceed its cap 1: id 2 → 1, id 1 → 2.
        assert_eq!(a.per_candidate, vec![(2, sz("1")), (1, sz("2"))]);
        let a = allocate(
            &AdlParams { enabled: true, policy: AdlPolicy::Bitmex, profit_cap: cap },
            &book,
            sz("3.5"),
            bp,
            mark,
        )
        .unwrap();
        assert_eq!(a.closed, sz("4"));
        assert_eq!(a.overshoot_notional, q("50"));
    }

    #[test]
    fn largest_remainder_examples() {
        // 100 over weights 1,1,1: 34, 33, 33 — the tie of remainders goes to the smallest id.
        assert_eq!(largest_remainder(100, &[(3, 1), (1, 1), (2, 1)]).unwrap(), vec![(3, 33), (1, 34), (2, 33)]);
        assert_eq!(largest_remainder(-100, &[(3, 1), (1, 1), (2, 1)]).unwrap(), vec![(3, -33), (1, -34), (2, -33)]);
        // Remainders decide before ids: 10 over 1,2,4 → exact 1.43, 2.86, 5.71 → 1, 3, 6.
        assert_eq!(largest_remainder(10, &[(1, 1), (2, 2), (3, 4)]).unwrap(), vec![(1, 1), (2, 3), (3, 6)]);
        assert_eq!(largest_remainder(0, &[(1, 0)]).unwrap(), vec![(1, 0)]);
        assert_eq!(largest_remainder(5, &[(1, 0), (2, 0)]), Err(NumError::DivisionByZero));
        assert!(largest_remainder(5, &[(1, 1), (1, 2)]).is_err());
        assert!(largest_remainder(5, &[(1, -1), (2, 2)]).is_err());
        // Extremes: the whole i128 range.
        let split = largest_remainder(i128::MIN, &[(1, i128::MAX), (2, i128::MAX)]).unwrap();
        assert_eq!(split, vec![(1, i128::MIN / 2), (2, i128::MIN / 2)]);
    }

    #[test]
    fn drift_social_loss() {
        // anchors-onchain.md §2, vector 6 (Drift controller/liquidation/tests.rs
        // successful_resolve_perp_bankruptcy): user quote −$100, market 5 long / 5 short.
        // Winners pro-rata channel: each 5-base holder pays $50.
        let paid = socialize(q("100"), &[(1, sz("5")), (2, sz("-5"))]).unwrap();
        assert_eq!(paid, vec![(1, q("50")), (2, q("50"))]);
        // Funding channel: cumulative funding long 1000 → 1010 and short −1000 → −1010 in Drift's
        // units (quote per base, FUNDING_RATE_PRECISION): δ = 10 quote per base, our index 10.
        let delta = funding_delta_for_loss(q("-100"), sz("5"), sz("-5")).unwrap();
        assert_eq!(delta, FundingIndex::parse("10").unwrap());
        let long_pays = delta.owed_by(sz("5"), Round::Ceil).unwrap();
        let short_pays = delta.checked_neg().unwrap().owed_by(sz("-5"), Round::Ceil).unwrap();
        assert_eq!((long_pays, short_pays), (q("50"), q("50")));

        // anchors-onchain.md §2, vector 4 (Drift math/liquidation/tests.rs
        // calculate_funding_rate_deltas_to_resolve_bankruptcy): loss $100, 7 long + 4 short base
        // → 9,090,910,000 at 1e9, i.e. 9.09091: Drift rounds 100/11 = 9.0909…  up at 1e-6 quote
        // per base. We round up at 1e-16: 9.0909090909090910. Both cover the loss.
        let delta = funding_delta_for_loss(q("100"), sz("7"), sz("-4")).unwrap();
        assert_eq!(delta.to_string(), "9.090909090909091");
        assert_eq!(delta.raw(), 90_909_090_909_090_910);
        let paid =
            delta.owed_by(sz("7"), Round::Ceil).unwrap().checked_add(delta.owed_by(sz("4"), Round::Ceil).unwrap());
        assert_eq!(paid.unwrap(), q("100.000001"));
        // The same loss split exactly by the winners channel.
        let paid = socialize(q("100"), &[(1, sz("7")), (2, sz("-4"))]).unwrap();
        assert_eq!(paid, vec![(1, q("63.636364")), (2, q("36.363636"))]);
        assert_eq!(funding_delta_for_loss(q("1"), Size::ZERO, Size::ZERO), Err(NumError::DivisionByZero));
        assert!(socialize(q("-1"), &[(1, sz("1"))]).is_err());
    }

    #[test]
    fn params_serde_and_bounds() {
        let p: AdlParams =
            serde_json::from_str(r#"{"policy": "leverage_weighted_pro_rata", "profit_cap": "0.5"}"#).unwrap();
        assert_eq!(
            p,
            AdlParams { enabled: true, policy: AdlPolicy::LeverageWeightedProRata, profit_cap: Some(r("0.5")) }
        );
        p.validate().unwrap();
        assert_eq!(serde_json::from_str::<AdlParams>("{}").unwrap(), AdlParams::default());
        assert_eq!(AdlParams::default().policy, AdlPolicy::ProRata);
        assert!(serde_json::from_str::<AdlParams>(r#"{"policy": "queue"}"#).is_err());
        assert!(serde_json::from_str::<AdlParams>(r#"{"policy": "bitmex", "cap": "0.5"}"#).is_err());
        for name in ["bitmex", "binance", "hyperliquid", "pro_rata", "leverage_weighted_pro_rata"] {
            let p: AdlPolicy = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{name}\""));
        }
        for bad in [Ratio::ZERO, r("1.00000001"), r("-0.1")] {
            let e =
                AdlParams { enabled: true, policy: AdlPolicy::Bitmex, profit_cap: Some(bad) }.validate().unwrap_err();
            assert!(matches!(e, ParamError::OutOfBounds { name: "adl.profit_cap", .. }));
        }
    }

    /// Books built from the 10 Oct 2025 ADL waves.
    ///
    /// Figures from ../shared/data/adl-2025-10-10/out/policy_per_wave_metrics.csv (rows wave = 7,
    /// 8 and 13; columns budget_needed = B, budget_prod = H, overshoot_prod = H − B,
    /// total_cap), rounded to 1e-6 USD. Data: github.com/pluriholonomic/autodeleveraging-analysis
    /// @ aae0be8, MIT licence, © 2025 T. Chitra, V. Xu, N. Thogiti, M. Trujillo (T. Chitra,
    /// "Autodeleveraging: Impossibilities and Optimization", arXiv 2512.01112).
    ///
    /// Books: [`wave_book`].
    const WAVES: [(u32, &str, &str, &str, &str); 3] = [
        // (wave, B = budget_needed, H = budget_prod, H − B = overshoot_prod, total_cap)
        (7, "8055.871928", "8995.085465", "939.213537", "48764.420238"),
        (8, "1576039.218553", "11415047.961085", "9839008.742532", "547076495.896477"),
        (13, "5584123.653721", "38449033.213866", "32864909.560145", "643417039.330521"),
    ];

    #[test]
    fn queue_overshoots_where_pro_rata_does_not_on_the_10_oct_2025_waves() {
        let (mark, bp) = (px("100"), px("101"));
        for (wave, b, h, over, cap) in WAVES {
            let (b, h, cap) = (sz(b), sz(h), sz(cap));
            let book = wave_book(b, h, cap, mark).unwrap();
            let total: Size = book.iter().fold(Size::ZERO, |acc, c| acc.checked_add(c.size.abs().unwrap()).unwrap());
            assert_eq!(total, cap, "wave {wave}");
            for policy in [AdlPolicy::Bitmex, AdlPolicy::Hyperliquid] {
                let a = allocate(&AdlParams { enabled: true, policy, profit_cap: None }, &book, b, bp, mark).unwrap();
                assert_eq!(a.per_candidate.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 2, 3], "wave {wave}");
                assert_eq!(a.closed, h, "wave {wave} {policy:?}: the queue takes H");
                // Overshoot in haircut dollars: (closed − needed) × $1 per unit = H − B.
                let over_usd = a.closed.checked_sub(b).unwrap().notional(bp.checked_sub(mark).unwrap(), Round::Ceil);
                assert_eq!(over_usd.unwrap(), q(over), "wave {wave} {policy:?}");
                // The same as notional at the $100 mark.
                assert_eq!(a.overshoot_notional, q(over).mul_ratio_ceil(r("100")).unwrap(), "wave {wave}");
            }
            // Binance ranks by PnL/collateral × margin ratio: another order, still an overshoot.
            let a = allocate(
                &AdlParams { enabled: true, policy: AdlPolicy::Binance, profit_cap: None },
                &book,
                b,
                bp,
                mark,
            )
            .unwrap();
            assert!(a.closed > b && a.overshoot_notional.is_positive(), "wave {wave}: {a:?}");
            for policy in [AdlPolicy::ProRata, AdlPolicy::LeverageWeightedProRata] {
                let a = allocate(&AdlParams { enabled: true, policy, profit_cap: None }, &book, b, bp, mark).unwrap();
                // budget_pr = min(B, total_cap) = B for these waves.
                assert_eq!(a.closed, b.min(cap), "wave {wave} {policy:?}");
                let sum = a.per_candidate.iter().fold(Size::ZERO, |acc, p| acc.checked_add(p.1).unwrap());
                assert_eq!(sum, b, "wave {wave} {policy:?}");
                assert_eq!(a.overshoot_notional, Quote::ZERO, "wave {wave} {policy:?}");
                assert_eq!(a.per_candidate.len(), 10, "pro-rata touches every winner");
            }
        }
        // Wave 13 in words: the deficit needed $5.58M, the queue closed $38.45M of winners.
        let (_, b, h, over, _) = WAVES[2];
        assert_eq!(sz(h).checked_sub(sz(b)).unwrap(), sz(over));
    }

    fn candidates_strategy() -> impl Strategy<Value = (Vec<Candidate>, bool)> {
        let one = (
            1i128..2_000_000_000_000,
            1i64..30_000_000_000,
            -1_000_000_000_000i128..100_000_000_000_000,
            -10_000_000_000i128..10_000_000_000,
        );
        (proptest::collection::vec(one, 1..12), any::<bool>()).prop_map(|(rows, long)| {
            let mark = Price::from_raw(10_000_000_000);
            let cands = rows
                .into_iter()
                .enumerate()
                .map(|(i, (size, entry, equity, collateral))| {
                    let s = Size::from_raw(if long { size } else { -size });
                    let upnl = s
                        .value_at(mark, Round::Floor)
                        .unwrap()
                        .checked_sub(s.value_at(Price::from_raw(entry), Round::Floor).unwrap())
                        .unwrap();
                    Candidate {
                        id: (i as u32 * 7919) % 1000,
                        size: s,
                        entry_price: Price::from_raw(entry),
                        equity: Quote::from_raw(equity),
                        collateral: Quote::from_raw(collateral),
                        maintenance: s
                            .notional(mark, Round::Ceil)
                            .unwrap()
                            .mul_ratio_ceil(Ratio::from_raw(1_000_000))
                            .unwrap(),
                        unrealized_pnl: upnl,
                    }
                })
                .collect();
            (cands, long)
        })
    }

    proptest! {
        /// The 128-bit shortcuts of `cmp_frac` and `share` give what the 256-bit paths give
        /// (small operands too, where equal fractions are common).
        #[test]
        fn narrow_arithmetic_matches_the_wide(
            a in prop_oneof![any::<u64>(), 0u64..8],
            b in prop_oneof![1u64.., 1u64..8],
            c in prop_oneof![any::<u64>(), 0u64..8],
            d in prop_oneof![1u64.., 1u64..8],
            k in 1u64..4,
            t in any::<u64>(),
            extra in any::<u64>(),
        ) {
            let [a, b, c, d, k] = [a, b, c, d, k].map(U256::from);
            prop_assert_eq!(cmp_frac(a, b, c, d), cmp_frac_wide(a, b, c, d));
            prop_assert_eq!(cmp_frac(a, b, a * k, b * k), Ordering::Equal);
            let (t, w) = (U256::from(t), a);
            let w_total = w + U256::from(extra);
            prop_assume!(w_total > U256::ZERO);
            prop_assert_eq!(share(t, w, w_total, true).unwrap(), share(t, w, w_total, false).unwrap());
        }

        /// Exact sum, each part within one unit of its exact share, and independent of the input order.
        #[test]
        fn largest_remainder_is_exact_and_order_independent(
            total in prop_oneof![any::<i128>(), -1_000_000i128..1_000_000],
            weights in proptest::collection::vec(prop_oneof![0i128..1000, 0i128..(i128::MAX >> 8)], 1..20),
            rotate in 0usize..20,
        ) {
            let items: Vec<(u32, i128)> = weights.iter().enumerate().map(|(i, &w)| (i as u32 * 31 % 97, w)).collect();
            let w_total: I256 = items.iter().map(|&(_, w)| I256::from(w)).sum();
            prop_assume!(w_total > 0);
            let parts = largest_remainder(total, &items).unwrap();
            prop_assert_eq!(parts.iter().map(|&(_, p)| I256::from(p)).sum::<I256>(), I256::from(total));
            for (&(id, w), &(pid, p)) in items.iter().zip(&parts) {
                prop_assert_eq!(id, pid);
                // |p·W − total·w| < W.
                let diff = I256::from(p) * w_total - I256::from(total) * I256::from(w);
                prop_assert!(diff.abs() < w_total);
            }
            let mut rotated = items.clone();
            rotated.rotate_left(rotate % items.len());
            rotated.reverse();
            let mut again = largest_remainder(total, &rotated).unwrap();
            again.sort();
            let mut sorted = parts.clone();
            sorted.sort();
            prop_assert_eq!(again, sorted);
        }

        /// Pro-rata closes exactly min(needed, capacity); a queue closes whole capacities and
        /// covers min(needed, capacity) minimally; nobody beyond their size or their profit cap.
        #[test]
        fn allocation_bounds((cands, long) in candidates_strategy(), needed in 0i128..20_000_000_000_000,
                             cap in prop_oneof![Just(None), (1i64..=100_000_000).prop_map(|c| Some(Ratio::from_raw(c)))],
                             off in 0i64..2_000_000_000, policy in 0usize..5) {
            let policy = [AdlPolicy::Bitmex, AdlPolicy::Binance, AdlPolicy::Hyperliquid, AdlPolicy::ProRata,
                AdlPolicy::LeverageWeightedProRata][policy];
            let mark = Price::from_raw(10_000_000_000);
            // The bankrupt side is opposite the winners: above the mark for short winners.
            let bp = Price::from_raw(if long { 10_000_000_000 - off } else { 10_000_000_000 + off });
            let params = AdlParams { enabled: true, policy, profit_cap: cap };
            let needed = Size::from_raw(needed);
            let a = allocate(&params, &cands, needed, bp, mark).unwrap();
            let caps: Vec<(u32, i128)> = cands.iter().map(|c| (c.id, capacity(c, cap, bp, mark).unwrap().raw())).collect();
            let total_cap: i128 = caps.iter().map(|c| c.1).sum();
            let target = needed.raw().min(total_cap);
            let sum: i128 = a.per_candidate.iter().map(|p| p.1.raw()).sum();
            prop_assert_eq!(sum, a.closed.raw());
            for &(id, s) in &a.per_candidate {
                let c = cands.iter().find(|c| c.id == id).unwrap();
                let k = caps.iter().find(|c| c.0 == id).unwrap().1;
                prop_assert!(s.is_positive() && s.raw() <= k && s.raw() <= c.size.raw().abs());
                if policy.is_queue() {
                    prop_assert_eq!(s.raw(), k, "a queue closes whole (capped) positions");
                }
            }
            if policy.is_queue() {
                prop_assert!(sum >= target);
                if let Some(last) = a.per_candidate.last() {
                    prop_assert!(sum - last.1.raw() < needed.raw(), "the queue stops once covered");
                }
                // closed ≥ needed, or everything was closed (sum = total capacity = target).
                let over = Size::from_raw(sum - target).notional(mark, Round::Ceil).unwrap();
                prop_assert_eq!(a.overshoot_notional, over);
            } else {
                prop_assert_eq!(sum, target);
                prop_assert_eq!(a.overshoot_notional, Quote::ZERO);
            }
            let matched: i128 = a.matched(needed).iter().map(|p| p.1.raw()).sum();
            prop_assert_eq!(matched, target);
        }
    }
}
