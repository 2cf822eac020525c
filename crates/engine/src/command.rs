//! The command contract: one JSON object per line, `ts` (unix ms) and `cmd` in every command,
//! amounts, prices and fractions as decimal strings. docs/commands.md is the full text.
//!
//! Decoding is strict: unknown fields, wrong types and numbers with more decimals than their
//! scale are errors that name the field, so a typo never silently falls back to a default.

use crate::asset::AssetParams;
use crate::governance::{Change, Council, PublicKey, Signature};
use crate::insurance::FundParams;
use crate::market::MarketParams;
use crate::num::{Price, Quote, Ratio, Size};
use crate::withdrawal::WithdrawalParams;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A command with its timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimedCommand {
    /// Unix milliseconds; never decreases from one command to the next.
    pub ts: u64,
    pub cmd: Command,
}

/// One command. The rare commands with large payloads (asset and market parameters, governance
/// proposals and guardian actions) hold them boxed, so that a command is as small as a fill:
/// streams and batches of commands are mostly fills and prices (144 bytes a timed command
/// instead of 320, see the size test below).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    CreateAsset { asset: String, params: Box<AssetParams> },
    CreateMarket { market: String, params: Box<MarketParams> },
    Deposit(Deposit),
    Withdraw(Withdraw),
    TransferMargin(TransferMargin),
    Oracle(OraclePrice),
    Fill(Fill),
    Funding(Funding),
    Tick,
    Liquidate(Liquidate),
    CreateInsuranceFund { fund: String, params: FundParams },
    FundInsurance { fund: String, amount: Size },
    SetBackstop { account: String, loss_cap: Quote },
    SettleMarket(SettleMarket),
    ConfigureWithdrawals(WithdrawalParams),
    RequestWithdrawal(RequestWithdrawal),
    CancelWithdrawal(CancelWithdrawal),
    InitGovernance(InitGovernance),
    Propose(Box<Propose>),
    Approve(SignedNonce),
    Execute(Execute),
    Cancel(SignedNonce),
    Guardian(Box<GuardianAction>),
}

impl Command {
    /// The `cmd` name of this command.
    pub fn name(&self) -> &'static str {
        match self {
            Command::CreateAsset { .. } => "create_asset",
            Command::CreateMarket { .. } => "create_market",
            Command::Deposit(_) => "deposit",
            Command::Withdraw(_) => "withdraw",
            Command::TransferMargin(_) => "transfer_margin",
            Command::Oracle(_) => "oracle",
            Command::Fill(_) => "fill",
            Command::Funding(_) => "funding",
            Command::Tick => "tick",
            Command::Liquidate(_) => "liquidate",
            Command::CreateInsuranceFund { .. } => "create_insurance_fund",
            Command::FundInsurance { .. } => "fund_insurance",
            Command::SetBackstop { .. } => "set_backstop",
            Command::SettleMarket(_) => "settle_market",
            Command::ConfigureWithdrawals(_) => "configure_withdrawals",
            Command::RequestWithdrawal(_) => "request_withdrawal",
            Command::CancelWithdrawal(_) => "cancel_withdrawal",
            Command::InitGovernance(_) => "init_governance",
            Command::Propose(_) => "propose",
            Command::Approve(_) => "approve",
            Command::Execute(_) => "execute",
            Command::Cancel(_) => "cancel",
            Command::Guardian(_) => "guardian",
        }
    }
}

/// Every command name, in the order docs/commands.md lists them.
pub const COMMAND_NAMES: [&str; 23] = [
    "create_asset",
    "create_market",
    "deposit",
    "withdraw",
    "transfer_margin",
    "oracle",
    "fill",
    "funding",
    "tick",
    "liquidate",
    "create_insurance_fund",
    "fund_insurance",
    "set_backstop",
    "settle_market",
    "configure_withdrawals",
    "request_withdrawal",
    "cancel_withdrawal",
    "init_governance",
    "propose",
    "approve",
    "execute",
    "cancel",
    "guardian",
];

/// Add collateral. Asset amounts use 8 decimals; USDC amounts at most 6.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deposit {
    pub account: String,
    pub asset: String,
    pub amount: Size,
    /// Deposit USDC as the isolated collateral of this market's position.
    #[serde(default)]
    pub isolated: Option<String>,
}

/// Take collateral out, margin-checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Withdraw {
    pub account: String,
    pub asset: String,
    pub amount: Size,
    /// Withdraw from this market's isolated collateral instead of the cross book.
    #[serde(default)]
    pub isolated: Option<String>,
}

/// Move USDC between the cross book and one isolated position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferMargin {
    pub account: String,
    pub market: String,
    pub amount: Size,
    pub to: TransferTo,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferTo {
    Isolated,
    Cross,
}

/// One source's price for a market or for a collateral asset (exactly one of the two).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OraclePrice {
    #[serde(default)]
    pub market: Option<String>,
    #[serde(default)]
    pub asset: Option<String>,
    pub source: String,
    pub price: Price,
    /// The source's own timestamp; defaults to the command's `ts`.
    #[serde(default)]
    pub publish_ts: Option<u64>,
}

/// A trade between two accounts, reported by the venue's matching engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fill {
    pub market: String,
    pub buyer: String,
    pub seller: String,
    pub size: Size,
    pub price: Price,
    /// Which side took liquidity and pays the taker fee; the other pays the maker fee.
    #[serde(default)]
    pub taker: Side,
    /// The fill executes the engine's liquidation orders of the buyer or the seller (or both).
    #[serde(default)]
    pub liquidation: bool,
}

/// An external liquidator takes over (part of) a liquidatable position at the mark less an
/// escalating discount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Liquidate {
    pub liquidator: String,
    pub account: String,
    pub market: String,
    /// The most the liquidator takes; the engine may transfer less (pacing, what the shortage
    /// needs).
    pub size: Size,
    /// Worst transfer price the liquidator accepts: highest when buying a long, lowest when
    /// taking over a short.
    #[serde(default)]
    pub limit: Option<Price>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FundAmount {
    fund: String,
    amount: Size,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBackstop {
    account: String,
    loss_cap: Quote,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    #[default]
    Buyer,
    Seller,
}

/// One funding period: a given rate, or one computed from a premium (given, or the mark's
/// premium over the oracle when neither is given).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Funding {
    pub market: String,
    #[serde(default)]
    pub rate: Option<Ratio>,
    #[serde(default)]
    pub premium: Option<Ratio>,
}

/// Wind a market down: close every position at `price`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettleMarket {
    pub market: String,
    pub price: Price,
}

/// Reserve USDC of a bucket for a delayed withdrawal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestWithdrawal {
    pub account: String,
    pub amount: Size,
    /// From this market's isolated margin instead of the cross book.
    #[serde(default)]
    pub isolated: Option<String>,
}

/// Give a pending withdrawal back to its bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelWithdrawal {
    pub account: String,
    /// The id from `withdrawal_requested`.
    pub id: u64,
}

/// Install the first governance council.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitGovernance {
    pub council: Council,
}

/// A parameter change for the council to approve.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Propose {
    /// Above every nonce used before (proposals and guardian actions share the sequence).
    pub nonce: u64,
    pub change: Change,
}

/// A council key's signature about proposal `nonce` (`approve` and `cancel`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedNonce {
    pub nonce: u64,
    pub key: PublicKey,
    pub signature: Signature,
}

/// Apply queued proposal `nonce` after its timelock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Execute {
    pub nonce: u64,
}

/// A tightening change the guardian key makes at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardianAction {
    pub nonce: u64,
    pub change: Change,
    pub signature: Signature,
}

/// Why a line could not be decoded into a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not a JSON object: {0}")]
    NotJson(String),
    #[error("missing \"ts\" (unix milliseconds)")]
    MissingTs,
    #[error("\"ts\" must be a non-negative integer (unix milliseconds)")]
    BadTs,
    #[error("missing \"cmd\"")]
    MissingCmd,
    #[error("unknown cmd {0}; expected one of: {list}", list = COMMAND_NAMES.join(", "))]
    UnknownCmd(String),
    #[error("{cmd}: {message}")]
    Fields { cmd: &'static str, message: String },
}

/// Decode one line of the command contract.
pub fn parse_line(line: &str) -> Result<TimedCommand, ParseError> {
    let value: Value = serde_json::from_str(line).map_err(|e| ParseError::NotJson(e.to_string()))?;
    let Value::Object(mut map) = value else {
        return Err(ParseError::NotJson("expected an object".into()));
    };
    let ts = match map.remove("ts") {
        None => return Err(ParseError::MissingTs),
        Some(v) => v.as_u64().ok_or(ParseError::BadTs)?,
    };
    let cmd = match map.remove("cmd") {
        None => return Err(ParseError::MissingCmd),
        Some(Value::String(s)) => s,
        Some(other) => return Err(ParseError::UnknownCmd(other.to_string())),
    };
    let cmd = match cmd.as_str() {
        "create_asset" => {
            let asset = take_string(&mut map, "create_asset", "asset")?;
            Command::CreateAsset { asset, params: fields("create_asset", map)? }
        }
        "create_market" => {
            let market = take_string(&mut map, "create_market", "market")?;
            Command::CreateMarket { market, params: fields("create_market", map)? }
        }
        "deposit" => Command::Deposit(fields("deposit", map)?),
        "withdraw" => Command::Withdraw(fields("withdraw", map)?),
        "transfer_margin" => Command::TransferMargin(fields("transfer_margin", map)?),
        "oracle" => Command::Oracle(fields("oracle", map)?),
        "fill" => Command::Fill(fields("fill", map)?),
        "funding" => Command::Funding(fields("funding", map)?),
        "tick" => {
            let _: Empty = fields("tick", map)?;
            Command::Tick
        }
        "liquidate" => Command::Liquidate(fields("liquidate", map)?),
        "create_insurance_fund" => {
            let fund = take_string(&mut map, "create_insurance_fund", "fund")?;
            Command::CreateInsuranceFund { fund, params: fields("create_insurance_fund", map)? }
        }
        "fund_insurance" => {
            let FundAmount { fund, amount } = fields("fund_insurance", map)?;
            Command::FundInsurance { fund, amount }
        }
        "set_backstop" => {
            let SetBackstop { account, loss_cap } = fields("set_backstop", map)?;
            Command::SetBackstop { account, loss_cap }
        }
        "settle_market" => Command::SettleMarket(fields("settle_market", map)?),
        "configure_withdrawals" => Command::ConfigureWithdrawals(fields("configure_withdrawals", map)?),
        "request_withdrawal" => Command::RequestWithdrawal(fields("request_withdrawal", map)?),
        "cancel_withdrawal" => Command::CancelWithdrawal(fields("cancel_withdrawal", map)?),
        "init_governance" => Command::InitGovernance(fields("init_governance", map)?),
        "propose" => Command::Propose(fields("propose", map)?),
        "approve" => Command::Approve(fields("approve", map)?),
        "execute" => Command::Execute(fields("execute", map)?),
        "cancel" => Command::Cancel(fields("cancel", map)?),
        "guardian" => Command::Guardian(fields("guardian", map)?),
        _ => return Err(ParseError::UnknownCmd(format!("\"{cmd}\""))),
    };
    Ok(TimedCommand { ts, cmd })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

fn fields<T: DeserializeOwned>(cmd: &'static str, map: Map<String, Value>) -> Result<T, ParseError> {
    serde_json::from_value(Value::Object(map)).map_err(|e| ParseError::Fields { cmd, message: e.to_string() })
}

fn take_string(map: &mut Map<String, Value>, cmd: &'static str, key: &str) -> Result<String, ParseError> {
    match map.remove(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ParseError::Fields { cmd, message: format!("\"{key}\" must be a string") }),
        None => Err(ParseError::Fields { cmd, message: format!("missing field `{key}`") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timed_command_is_as_small_as_a_fill() {
        // The largest unboxed payloads are a fill's and a liquidation's (112 bytes); a new
        // variant with a larger one should box it, as `CreateMarket` does.
        assert_eq!(std::mem::size_of::<Fill>(), 112);
        assert_eq!(std::mem::size_of::<TimedCommand>(), 144);
    }

    #[test]
    fn decodes_the_core_commands_of_the_design() {
        let lines = [
            r#"{"ts":0,"cmd":"create_market","market":"BTC-PERP","initial_margin":"0.008","maintenance_margin":"0.004"}"#,
            r#"{"ts":0,"cmd":"deposit","account":"alice","asset":"USDC","amount":"5000"}"#,
            r#"{"ts":0,"cmd":"deposit","account":"alice","asset":"USDC","amount":"5000","isolated":"BTC-PERP"}"#,
            r#"{"ts":1000,"cmd":"oracle","market":"BTC-PERP","source":"s1","price":"50000"}"#,
            r#"{"ts":1000,"cmd":"fill","market":"BTC-PERP","buyer":"alice","seller":"bob","size":"1","price":"50000"}"#,
            r#"{"ts":2000,"cmd":"tick"}"#,
        ];
        let names: Vec<_> = lines.iter().map(|l| parse_line(l).unwrap().cmd.name()).collect();
        assert_eq!(names, ["create_market", "deposit", "deposit", "oracle", "fill", "tick"]);
    }

    #[test]
    fn rejects_unknown_fields_and_names_them() {
        let e = parse_line(r#"{"ts":1,"cmd":"deposit","account":"a","asset":"USDC","amount":"1","amont":"2"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("amont"), "{e}");
        let e = parse_line(r#"{"ts":1,"cmd":"create_market","market":"X","initial_margin":"0.1","maintenance_margin":"0.05","maker_fe":"0"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("maker_fe"), "{e}");
        let e = parse_line(r#"{"ts":1,"cmd":"tick","extra":1}"#).unwrap_err();
        assert!(e.to_string().contains("extra"), "{e}");
    }

    #[test]
    fn rejects_bad_envelopes() {
        assert!(matches!(parse_line("not json"), Err(ParseError::NotJson(_))));
        assert!(matches!(parse_line("[1]"), Err(ParseError::NotJson(_))));
        assert_eq!(parse_line(r#"{"cmd":"tick"}"#), Err(ParseError::MissingTs));
        assert_eq!(parse_line(r#"{"ts":-1,"cmd":"tick"}"#), Err(ParseError::BadTs));
        assert_eq!(parse_line(r#"{"ts":1.5,"cmd":"tick"}"#), Err(ParseError::BadTs));
        assert_eq!(parse_line(r#"{"ts":1}"#), Err(ParseError::MissingCmd));
        assert!(matches!(parse_line(r#"{"ts":1,"cmd":"liquidate_everyone"}"#), Err(ParseError::UnknownCmd(_))));
    }

    #[test]
    fn rejects_numbers_that_are_not_exact_decimal_strings() {
        for amount in ["5000", "\"1e3\"", "\"1.000000001\"", "\"\""] {
            let line = format!(r#"{{"ts":1,"cmd":"deposit","account":"a","asset":"USDC","amount":{amount}}}"#);
            assert!(matches!(parse_line(&line), Err(ParseError::Fields { .. })), "{line}");
        }
    }
}
