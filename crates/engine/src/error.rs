//! Typed errors: why a parameter set is invalid, why a command was rejected.

use crate::num::NumError;

/// A parameter outside its documented bounds. The message names the parameter and the bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("{name} = {value} is out of bounds: {bound}")]
    OutOfBounds { name: &'static str, value: String, bound: &'static str },
    #[error("{0}")]
    Inconsistent(String),
}

impl ParamError {
    pub fn out_of_bounds(name: &'static str, value: impl std::fmt::Display, bound: &'static str) -> Self {
        ParamError::OutOfBounds { name, value: value.to_string(), bound }
    }
}

/// Check `lo ≤ value ≤ hi`, naming the parameter in the error.
pub fn check_range<T: PartialOrd + std::fmt::Display>(
    name: &'static str,
    value: T,
    lo: T,
    hi: T,
    bound: &'static str,
) -> Result<(), ParamError> {
    if value < lo || value > hi {
        return Err(ParamError::out_of_bounds(name, value, bound));
    }
    Ok(())
}

impl From<NumError> for ParamError {
    fn from(e: NumError) -> Self {
        ParamError::Inconsistent(format!("arithmetic: {e}"))
    }
}

/// Why a command was rejected. A rejected command leaves the state unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("ts {ts} is before the previous command's ts {last}; commands must be in time order")]
    TimeWentBackwards { ts: u64, last: u64 },
    #[error("unknown market '{0}'; create it with create_market first")]
    UnknownMarket(String),
    #[error("unknown asset '{0}'; create it with create_asset first (USDC is built in)")]
    UnknownAsset(String),
    #[error("unknown account '{0}'; an account is created by its first deposit")]
    UnknownAccount(String),
    #[error("{kind} '{id}' already exists")]
    AlreadyExists { kind: &'static str, id: String },
    #[error("invalid id '{0}': use 1 to 64 characters from A-Z a-z 0-9 and - _ . : /")]
    InvalidId(String),
    #[error("{field} must be positive, got {value}")]
    NotPositive { field: &'static str, value: String },
    #[error("{field} {value} is above the largest supported price {max}")]
    PriceOutOfRange { field: &'static str, value: String, max: String },
    #[error("self-trade: buyer and seller are both '{0}'")]
    SelfTrade(String),
    #[error("invalid parameters: {0}")]
    Params(#[from] ParamError),
    #[error("oracle: {0}")]
    Oracle(#[from] crate::oracle::OracleError),
    #[error("market '{0}' has no oracle price yet")]
    NoPrice(String),
    #[error("oracle of '{market}' is {validity}, which does not allow {action}")]
    OracleNotValidFor { market: String, validity: crate::oracle::Validity, action: &'static str },
    #[error("account '{account}' would have equity {equity} below its initial requirement {requirement}{where_}")]
    InsufficientMargin { account: String, equity: String, requirement: String, where_: String },
    #[error("account '{account}' is below its initial requirement{where_}; it may only reduce risk without worsening its health")]
    NotRiskReducing { account: String, where_: String },
    #[error("insufficient {asset}: available {available}, requested {requested}")]
    InsufficientBalance { asset: String, available: String, requested: String },
    #[error("deposit cap of {asset} reached: cap {cap}, deposited {deposited}, requested {requested}")]
    DepositCap { asset: String, cap: String, deposited: String, requested: String },
    #[error("{0}")]
    Conflict(String),
    #[error("funding rate {rate} exceeds the market's max_rate {max}")]
    FundingRateTooLarge { rate: String, max: String },
    #[error("unknown insurance fund '{0}'; create it with create_insurance_fund first (\"global\" is built in)")]
    UnknownFund(String),
    #[error("account '{account}' is not liquidatable: equity {equity} is not below its maintenance requirement {maintenance}")]
    NotLiquidatable { account: String, equity: String, maintenance: String },
    #[error("the liquidation of '{account}' in {market} already used this window's allowance; next window at {until}")]
    Cooldown { account: String, market: String, until: u64 },
    #[error("price {price} is worse than the limit {limit}")]
    LimitBroken { price: String, limit: String },
    #[error("liquidation fill refused: {0}")]
    LiquidationFill(String),
    #[error("{field}: {reason}")]
    InvalidNumber { field: &'static str, reason: NumError },
    #[error("market '{market}' is {status}: '{account}' may only reduce risk there")]
    MarketStatus { market: String, status: crate::breaker::Status, account: String },
    #[error("market '{0}' is settled; it accepts no fills")]
    MarketSettled(String),
    #[error("fill price {price} is outside the band of {band} around the oracle price {oracle} of '{market}'")]
    PriceOutsideBand { market: String, price: String, oracle: String, band: String },
    #[error("open interest of '{market}' would be {open_interest}, above its cap {cap}")]
    OpenInterestCap { market: String, open_interest: String, cap: String },
    #[error("withdrawals are gated until {until} ({reason})")]
    WithdrawalsGated { until: u64, reason: String },
    #[error("withdrawal of {amount} is above the outflow limit {limit} of one window")]
    OutflowLimit { amount: String, limit: String },
    #[error("no withdrawal limits are configured; use withdraw (configure_withdrawals enables requests)")]
    WithdrawalsNotConfigured,
    #[error("withdrawal limits are configured: USDC leaves through request_withdrawal")]
    UseRequestWithdrawal,
    #[error("no pending withdrawal {id} of account '{account}'")]
    UnknownWithdrawal { id: u64, account: String },
    #[error("no governance council is installed; init_governance first")]
    GovernanceNotInstalled,
    #[error("governance is already installed; the council changes through a set_council proposal")]
    GovernanceAlreadyInstalled,
    #[error("{0}: parameters are governed; propose the change to the council")]
    Governed(&'static str),
    #[error("nonce {nonce} is not above the last nonce used, {last}")]
    StaleNonce { nonce: u64, last: u64 },
    #[error("no open proposal with nonce {0}")]
    UnknownProposal(u64),
    #[error("unknown key: {0}")]
    UnknownKey(String),
    #[error("key {key} already approved proposal {nonce}")]
    DuplicateApproval { nonce: u64, key: String },
    #[error("the signature does not verify for nonce {nonce} with that key and change")]
    BadSignature { nonce: u64 },
    #[error("proposal {nonce} has {have} approvals of the {need} needed")]
    NotEnoughApprovals { nonce: u64, have: u32, need: u32 },
    #[error("proposal {nonce} is timelocked until {eta} (now {ts})")]
    Timelocked { nonce: u64, eta: u64, ts: u64 },
    #[error("the guardian may only tighten ({0} would loosen or is not a guardian action)")]
    GuardianMayOnlyTighten(&'static str),
    #[error("arithmetic overflow or out-of-range value ({0})")]
    Math(#[from] NumError),
}
