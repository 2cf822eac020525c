//! Events: one for every state change, in the order the changes happen.

use crate::breaker::{Status, Trigger};
use crate::command::TransferTo;
use crate::governance::{Change, Kind, PublicKey};
use crate::num::{FundingIndex, Price, Quote, Ratio, Size};
use crate::oracle::Validity;
use crate::withdrawal::WithdrawalParams;
use serde::Serialize;

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
    Filled {
        market: Id,
        buyer: Id,
        seller: Id,
        size: Size,
        price: Price,
        /// What the buyer paid (rounded up); the seller received one micro-unit less when the
        /// exact notional is not a whole micro-unit, and that `rounding` goes to the fee pool.
        notional: Quote,
        rounding: Quote,
        buyer_fee: Quote,
        seller_fee: Quote,
        buyer_position: Size,
        seller_position: Size,
        buyer_realized_pnl: Quote,
        seller_realized_pnl: Quote,
    },
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
        change: Change,
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
        change: Change,
    },
}
