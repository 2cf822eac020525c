//! Events: one for every state change, in the order the changes happen.

use crate::adl::{AdlPolicy, SocialChannel};
use crate::breaker::{Status, Trigger};
use crate::command::TransferTo;
use crate::governance::{Change, Kind, PublicKey};
use crate::num::{FundingIndex, Price, Quote, Ratio, Size};
use crate::oracle::Validity;
use crate::withdrawal::WithdrawalParams;
use serde::{Deserialize, Serialize};

/// Id of an account, market or asset. Ids of up to 24 bytes are stored inline, so copying one
/// into an event or comparing it in the id index touches no other memory.
pub type Id = compact_str::CompactString;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    AssetCreated {
        asset: Id,
    },
    MarketCreated {
        market: Id,
    },
    /// `amount` and `balance` are in the asset's units; `balance` is the bucket's balance after.
    Deposited {
        account: Id,
        asset: Id,
        amount: Size,
        #[serde(skip_serializing_if = "Option::is_none")]
        isolated: Option<Id>,
        balance: Size,
    },
    Withdrawn {
        account: Id,
        asset: Id,
        amount: Size,
        #[serde(skip_serializing_if = "Option::is_none")]
        isolated: Option<Id>,
        balance: Size,
    },
    MarginTransferred {
        account: Id,
        market: Id,
        amount: Quote,
        to: TransferTo,
        cross_cash: Quote,
        isolated_margin: Quote,
    },
    /// A source price was taken; `price` is the new aggregate, `mark` the mark after it.
    OracleUpdated {
        #[serde(skip_serializing_if = "Option::is_none")]
        market: Option<Id>,
        #[serde(skip_serializing_if = "Option::is_none")]
        asset: Option<Id>,
        source: Id,
        source_price: Price,
        price: Price,
        #[serde(skip_serializing_if = "Option::is_none")]
        mark: Option<Price>,
        fresh_sources: u32,
        validity: Validity,
    },
    OracleValidityChanged {
        #[serde(skip_serializing_if = "Option::is_none")]
        market: Option<Id>,
        #[serde(skip_serializing_if = "Option::is_none")]
        asset: Option<Id>,
        from: Validity,
        to: Validity,
    },
    VolatilityMarginChanged {
        market: Id,
        from: Ratio,
        to: Ratio,
    },
    /// Lazy funding settlement of one position: `amount` paid (negative: received).
    FundingSettled {
        account: Id,
        market: Id,
        amount: Quote,
    },
    /// A trade. Boxed: it is the largest event, and out of line it leaves every other event
    /// (a crash emits two per liquidated account) at a little over half the size.
    Filled(Box<Filled>),
    FundingApplied {
        market: Id,
        rate: Ratio,
        index_price: Price,
        funding_index: FundingIndex,
    },
    /// A circuit breaker tripped: `value` is what was observed, `limit` the threshold; the trip
    /// holds until `until` (extended while the condition persists).
    BreakerTripped {
        market: Id,
        trigger: Trigger,
        level: Status,
        until: u64,
        value: String,
        limit: String,
    },
    /// A trip expired (its cool-down passed with the condition gone).
    BreakerCleared {
        market: Id,
        trigger: Trigger,
    },
    MarketStatusChanged {
        market: Id,
        from: Status,
        to: Status,
    },
    /// `settle_market` closed one position at the settlement price.
    PositionSettled {
        account: Id,
        market: Id,
        size: Size,
        price: Price,
        realized_pnl: Quote,
        isolated: bool,
    },
    /// The market is wound down: `positions` closed at `price`; `rounding` (shorts pay their
    /// notional rounded up, longs receive it rounded down) went to the fee pool.
    MarketSettled {
        market: Id,
        price: Price,
        positions: u32,
        rounding: Quote,
    },
    WithdrawalParamsSet {
        params: Option<WithdrawalParams>,
    },
    /// `amount` left the bucket and is reserved until the withdrawal executes or is cancelled.
    WithdrawalRequested {
        id: u64,
        account: Id,
        amount: Quote,
        #[serde(skip_serializing_if = "Option::is_none")]
        isolated: Option<Id>,
        unlock_ts: u64,
    },
    WithdrawalExecuted {
        id: u64,
        account: Id,
        amount: Quote,
        #[serde(skip_serializing_if = "Option::is_none")]
        isolated: Option<Id>,
    },
    /// The amount went back to the bucket: `reason` is `requested` (`cancel_withdrawal`) or
    /// `margin` (the bucket no longer met its initial requirement when the withdrawal unlocked).
    WithdrawalCancelled {
        id: u64,
        account: Id,
        amount: Quote,
        reason: Id,
    },
    WithdrawalsGated {
        until: u64,
        reason: String,
    },
    GovernanceInstalled {
        keys: u32,
        threshold: u32,
        guardian: Option<PublicKey>,
    },
    /// `kind` (`tighten`, `loosen`, `rotation`) picks the timelock.
    ProposalCreated {
        nonce: u64,
        kind: Kind,
        change: Box<Change>,
    },
    ProposalApproved {
        nonce: u64,
        key: PublicKey,
        approvals: u32,
    },
    /// The threshold was reached; the change may execute from `eta`.
    ProposalQueued {
        nonce: u64,
        eta: u64,
    },
    ProposalExecuted {
        nonce: u64,
    },
    /// `reason`: `cancelled` (a council key) or `council rotated`.
    ProposalCancelled {
        nonce: u64,
        reason: Id,
    },
    GuardianActed {
        nonce: u64,
        change: Box<Change>,
    },
    InsuranceFundCreated {
        fund: Id,
    },
    /// `amount` entered the fund from outside (counted in deposits).
    InsuranceFunded {
        fund: Id,
        amount: Quote,
        balance: Quote,
    },
    /// `account` became the backstop vault; `capital` is what its losses are measured from.
    BackstopSet {
        account: Id,
        loss_cap: Quote,
        capital: Quote,
    },
    /// A bucket fell below maintenance. `isolated` names the market of an isolated bucket.
    LiquidationStarted {
        account: Id,
        #[serde(skip_serializing_if = "Option::is_none")]
        isolated: Option<Id>,
        equity: Quote,
        maintenance: Quote,
    },
    /// An order for the venue's book: fill it with a `fill` carrying `"liquidation": true`, at
    /// `limit` or better for the account, before `expires`.
    LiquidationOrder {
        order: u64,
        account: Id,
        market: Id,
        side: OrderSide,
        size: Size,
        limit: Price,
        expires: u64,
    },
    /// An order left the book: filled, expired (re-issued while still needed) or cancelled
    /// (the liquidation ended); `unfilled` is what was left of it.
    LiquidationOrderClosed {
        order: u64,
        account: Id,
        market: Id,
        reason: OrderClosed,
        unfilled: Size,
    },
    /// A fill of a liquidation order. `insurance_fee` went to the insurance fund (dYdX's
    /// insurance-fund delta); a fill worse than `bankruptcy_quote` instead draws the difference
    /// from the funds (an `insurance_paid` event).
    LiquidationFilled {
        order: u64,
        account: Id,
        market: Id,
        size: Size,
        price: Price,
        bankruptcy_quote: Quote,
        insurance_fee: Quote,
    },
    /// An external liquidator took `size` of the account's position at `price` (the mark
    /// less `discount` in the account's disfavour); `insurance_fee` went to the fund.
    Liquidated {
        liquidator: Id,
        account: Id,
        market: Id,
        size: Size,
        price: Price,
        mark: Price,
        discount: Ratio,
        insurance_fee: Quote,
    },
    /// The backstop vault took the bucket's positions and margin; `absorbed` is the negative
    /// equity it took on (a layer of the waterfall).
    BackstopTakeover {
        account: Id,
        #[serde(skip_serializing_if = "Option::is_none")]
        isolated: Option<Id>,
        vault: Id,
        equity: Quote,
        absorbed: Quote,
        /// Notional of the positions taken, at the mark.
        notional: Quote,
    },
    /// An insurance fund paid part of a bankrupt bucket's deficit.
    InsurancePaid {
        fund: Id,
        account: Id,
        #[serde(skip_serializing_if = "Option::is_none")]
        isolated: Option<Id>,
        amount: Quote,
        balance: Quote,
    },
    /// One winner closed `size` against the bankrupt account at the bankruptcy price.
    Deleveraged {
        market: Id,
        account: Id,
        counterparty: Id,
        size: Size,
        price: Price,
    },
    /// Summary of one deleveraging: `needed` is the bankrupt position, `closed` what was
    /// matched against winners; `policy_closed` and `overshoot_notional` what the policy's own
    /// rule selects (queues close whole positions) and its notional beyond `needed`.
    AutoDeleveraged {
        market: Id,
        account: Id,
        policy: AdlPolicy,
        bankruptcy_price: Price,
        needed: Size,
        closed: Size,
        policy_closed: Size,
        overshoot_notional: Quote,
        deficit_covered: Quote,
    },
    /// A deficit charged to `payers` accounts through `channel`; `unresolved` is what no
    /// channel could take (it stays on the account).
    SocializedLoss {
        #[serde(skip_serializing_if = "Option::is_none")]
        market: Option<Id>,
        account: Id,
        #[serde(skip_serializing_if = "Option::is_none")]
        isolated: Option<Id>,
        channel: SocialChannel,
        amount: Quote,
        payers: u32,
        unresolved: Quote,
    },
    /// One payer's part of a socialized loss.
    LossCharged {
        account: Id,
        #[serde(skip_serializing_if = "Option::is_none")]
        isolated: Option<Id>,
        amount: Quote,
    },
    LiquidationEnded {
        account: Id,
        #[serde(skip_serializing_if = "Option::is_none")]
        isolated: Option<Id>,
        reason: LiquidationEnd,
    },
    /// A liquidation step could not be computed (an arithmetic bound); the bucket stays in
    /// liquidation and is retried on the next step.
    LiquidationSkipped {
        account: Id,
        #[serde(skip_serializing_if = "Option::is_none")]
        isolated: Option<Id>,
        reason: String,
    },
}

/// The fields of [`Event::Filled`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Filled {
    pub market: Id,
    pub buyer: Id,
    pub seller: Id,
    pub size: Size,
    pub price: Price,
    /// What the buyer paid (rounded up); the seller received one micro-unit less when the
    /// exact notional is not a whole micro-unit, and that `rounding` goes to the fee pool.
    pub notional: Quote,
    pub rounding: Quote,
    pub buyer_fee: Quote,
    pub seller_fee: Quote,
    pub buyer_position: Size,
    pub seller_position: Size,
    pub buyer_realized_pnl: Quote,
    pub seller_realized_pnl: Quote,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderSide {
    Buy,
    Sell,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderClosed {
    Filled,
    Expired,
    Cancelled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LiquidationEnd {
    /// Equity is back at or above the liquidation-end level.
    Recovered,
    /// The backstop vault took the bucket over.
    TakenOver,
    /// Every position is closed and the waterfall has settled any deficit.
    Closed,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crash writes two events per liquidated account; the boxed trade keeps them small.
    #[test]
    fn an_event_stays_small() {
        assert!(std::mem::size_of::<Event>() <= 144, "{} bytes", std::mem::size_of::<Event>());
    }

    /// The boxed trade serializes as the flat object of the command contract.
    #[test]
    fn a_trade_serializes_flat() {
        let f = Filled {
            market: "BTC-PERP".into(),
            buyer: "a".into(),
            seller: "b".into(),
            size: Size::from_raw(1),
            price: Price::from_raw(2),
            notional: Quote::ZERO,
            rounding: Quote::ZERO,
            buyer_fee: Quote::ZERO,
            seller_fee: Quote::ZERO,
            buyer_position: Size::from_raw(1),
            seller_position: Size::from_raw(-1),
            buyer_realized_pnl: Quote::ZERO,
            seller_realized_pnl: Quote::ZERO,
        };
        let json = serde_json::to_value(Event::Filled(Box::new(f))).unwrap();
        assert_eq!(json["event"], "filled");
        assert_eq!(json["buyer"], "a");
        assert_eq!(json["seller_position"], "-0.00000001");
        assert_eq!(json.as_object().unwrap().len(), 14, "the tag and the 13 fields, flat: {json}");
    }
}
