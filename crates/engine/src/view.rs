//! The state as integrations read it (`ballast replay --state`, later the service's queries):
//! the documented shape of DESIGN §4 and docs/commands.md. Maps are `BTreeMap`s, so output
//! order is by id, never by hash order.

use crate::account::{Account, Bucket, Position};
use crate::asset::SETTLEMENT;
use crate::breaker::{Status, Trip};
use crate::detection::{key, Key};
use crate::engine::{Engine, Totals};
use crate::error::Reject;
use crate::event::OrderSide;
use crate::health::{position_liquidation_price, position_risk, Health};
use crate::margin::TierRow;
use crate::market::{Market, MarketParams};
use crate::num::{FundingIndex, Price, Quote, Ratio, Size};
use crate::oracle::Validity;
use crate::withdrawal::WithdrawalParams;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

#[derive(Debug, Serialize)]
pub struct StateView {
    pub seq: u64,
    pub ts: u64,
    /// SHA-256 of the canonical engine state; equal streams give equal hashes on any machine.
    pub state_hash: String,
    pub accounts: BTreeMap<String, AccountView>,
    /// Insurance fund balances by id (`global` and the segments).
    pub insurance_funds: BTreeMap<String, Quote>,
    /// The backstop vault, when one is set.
    pub backstop: Option<BackstopView>,
    pub markets: BTreeMap<String, MarketView>,
    pub assets: BTreeMap<String, AssetView>,
    pub fee_pool: Quote,
    pub totals: TotalsView,
    pub withdrawals: WithdrawalsView,
}

/// Withdrawal limits, the gate and the pending requests.
#[derive(Debug, Serialize)]
pub struct WithdrawalsView {
    /// None: `withdraw` is immediate.
    pub params: Option<WithdrawalParams>,
    /// The gate's end, while it is closed at `ts`.
    pub gated_until: Option<u64>,
    pub gate_reason: Option<String>,
    /// What the outflow limiter would still let out at `ts` (None without limits).
    pub outflow_room: Option<Quote>,
    /// Σ pending amounts.
    pub reserved: Quote,
    pub pending: Vec<PendingView>,
}

#[derive(Debug, Serialize)]
pub struct PendingView {
    pub id: u64,
    pub account: String,
    pub isolated: Option<String>,
    pub amount: Quote,
    pub unlock_ts: u64,
}

#[derive(Debug, Serialize)]
pub struct AccountView {
    /// Cross-book balances by asset, in the asset's units (USDC includes realized PnL).
    pub balances: BTreeMap<String, Size>,
    /// Cross-book equity with maintenance weights.
    pub equity: Quote,
    /// Cross-book equity with initial weights (valid prices only).
    pub initial_equity: Quote,
    pub initial_requirement: Quote,
    pub liquidation_end_requirement: Quote,
    pub maintenance_requirement: Quote,
    /// Cross-book equity below maintenance.
    pub liquidatable: bool,
    /// The cross book's liquidation, while one is in progress.
    pub liquidation: Option<LiquidationView>,
    pub positions: Vec<PositionView>,
}

/// A bucket's liquidation in progress.
#[derive(Debug, Serialize)]
pub struct LiquidationView {
    /// When it fell below maintenance, and when a liquidation last moved part of it.
    pub since: u64,
    pub progress: u64,
    /// Open liquidation orders.
    pub orders: Vec<OrderView>,
}

#[derive(Debug, Serialize)]
pub struct OrderView {
    pub order: u64,
    pub market: String,
    pub side: OrderSide,
    pub size: Size,
    pub limit: Price,
    pub expires: u64,
}

#[derive(Debug, Serialize)]
pub struct BackstopView {
    pub account: String,
    pub loss_cap: Quote,
    pub capital: Quote,
    /// `capital` − the vault's equity now, when positive.
    pub loss: Quote,
}

#[derive(Debug, Serialize)]
pub struct PositionView {
    pub market: String,
    pub size: Size,
    pub entry_price: Option<Price>,
    /// None only for a flat isolated bucket in a market that was never priced.
    pub mark_price: Option<Price>,
    pub notional: Quote,
    pub unrealized_pnl: Quote,
    /// The position's cash leg: −cost of a long, +proceeds of a short (realized PnL excluded).
    /// `size × mark + cash_leg = unrealized_pnl` up to rounding of the first term.
    pub cash_leg: Quote,
    /// Funding accrued since the position last settled (positive: owed by it).
    pub funding_owed: Quote,
    pub isolated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolated_margin: Option<Quote>,
    /// The isolated position's own equity (isolated positions only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub equity: Option<Quote>,
    pub initial_requirement: Quote,
    pub maintenance_requirement: Quote,
    /// The mark at which this position's bucket meets maintenance, all else fixed.
    pub liquidation_price: Option<Price>,
    /// This position's bucket (its isolated margin, or the cross book) is below maintenance.
    pub liquidatable: bool,
    /// An isolated position's liquidation, while one is in progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub liquidation: Option<LiquidationView>,
}

#[derive(Debug, Serialize)]
pub struct MarketView {
    pub oracle_price: Option<Price>,
    pub mark_price: Option<Price>,
    pub twap: Option<Price>,
    pub validity: Validity,
    pub open_interest: Size,
    pub funding_index: FundingIndex,
    pub funding_pool: Quote,
    pub volatility_margin_fraction: Ratio,
    /// Breaker status at `ts`: `active`, `reduce_only`, `halted` or `settlement`.
    pub status: Status,
    /// Active breaker trips (`trigger`, `level`, `until`, `held`).
    pub trips: Vec<Trip>,
    /// Multiplier of the initial requirement (governance or the insurance breaker; 1 = none).
    pub initial_margin_multiplier: Ratio,
    /// Liquidations wait until this time (the oracle grace period).
    pub liquidations_resume_at: u64,
    pub tiers: Vec<TierRow>,
    pub params: MarketParams,
}

#[derive(Debug, Serialize)]
pub struct AssetView {
    pub price: Option<Price>,
    pub validity: Validity,
    pub initial_weight: Ratio,
    pub maintenance_weight: Ratio,
    /// Σ deposits − Σ withdrawals: what all balances of the asset add up to.
    pub deposits: Size,
    pub withdrawals: Size,
}

/// USDC deposited and withdrawn over the engine's life (insurance top-ups count as deposits),
/// and what the waterfall absorbed: `bad_debt` = `insurance_paid` + `backstop_absorbed` +
/// `adl_covered` + `socialized_loss`.
pub type TotalsView = Totals;

impl Engine {
    /// SHA-256 of the canonical serialization of the engine state (hex).
    pub fn state_hash(&self) -> String {
        // Streamed into the hasher: the text of a large book is never held whole.
        let mut hasher = Sha256::new();
        serde_json::to_writer(&mut hasher, self).expect("engine state serializes");
        let digest = hasher.finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The documented state view.
    pub fn view(&self) -> Result<StateView, Reject> {
        let mut accounts = BTreeMap::new();
        for (i, (id, account)) in self.accounts().enumerate() {
            accounts.insert(id.to_string(), self.account_view(i as u32, account)?);
        }
        let markets = self.markets_state();
        let mut assets = BTreeMap::new();
        assets.insert(
            SETTLEMENT.to_string(),
            AssetView {
                price: Some(Price::ONE),
                validity: Validity::Valid,
                initial_weight: Ratio::ONE,
                maintenance_weight: Ratio::ONE,
                deposits: self.totals().deposits.to_amount()?,
                withdrawals: self.totals().withdrawals.to_amount()?,
            },
        );
        for a in self.assets() {
            assets.insert(
                a.id.to_string(),
                AssetView {
                    price: a.feed.price(),
                    validity: a.feed.validity(&a.params.oracle, self.now()),
                    initial_weight: a.params.initial_weight,
                    maintenance_weight: a.params.maintenance_weight,
                    deposits: a.deposits,
                    withdrawals: a.withdrawals,
                },
            );
        }
        let (insurance_funds, backstop) = self.insurance_state()?;
        Ok(StateView {
            seq: self.seq(),
            ts: self.now(),
            state_hash: self.state_hash(),
            accounts,
            insurance_funds,
            backstop,
            markets,
            assets,
            fee_pool: self.fee_pool(),
            totals: self.totals(),
            withdrawals: self.withdrawals_view()?,
        })
    }

    /// One account as [`Engine::view`] lists it, without building the rest of the state: a
    /// service answers a read of one account in time independent of the number of accounts.
    pub fn account_state(&self, id: &str) -> Result<Option<AccountView>, Reject> {
        let Ok(i) = self.account_idx(id) else { return Ok(None) };
        let (_, account) = self.accounts().nth(i as usize).expect("an indexed account exists");
        self.account_view(i, account).map(Some)
    }

    /// One market as [`Engine::view`] lists it.
    pub fn market_state(&self, id: &str) -> Option<MarketView> {
        self.market(id).map(|m| self.market_view(m))
    }

    /// Every market as [`Engine::view`] lists them, by id.
    pub fn markets_state(&self) -> BTreeMap<String, MarketView> {
        self.markets().iter().map(|m| (m.id.to_string(), self.market_view(m))).collect()
    }

    /// The insurance fund balances and the backstop vault, as [`Engine::view`] lists them.
    pub fn insurance_state(&self) -> Result<(BTreeMap<String, Quote>, Option<BackstopView>), Reject> {
        let funds = self.insurance_funds().iter().map(|f| (f.id.to_string(), f.balance)).collect();
        Ok((funds, self.backstop_view()?))
    }

    fn withdrawals_view(&self) -> Result<WithdrawalsView, Reject> {
        let w = self.withdrawals();
        let gate = w.gate_at(self.now());
        let pool = self.totals().deposits.checked_sub(self.totals().withdrawals)?;
        let outflow_room = match &w.params {
            Some(p) => Some(w.room(p, pool, self.now())?.0),
            None => None,
        };
        let ids: Vec<&crate::event::Id> = self.accounts().map(|(id, _)| id).collect();
        Ok(WithdrawalsView {
            params: w.params.clone(),
            gated_until: gate.map(|g| g.until),
            gate_reason: gate.map(|g| g.reason.clone()),
            outflow_room,
            reserved: w.reserved()?,
            pending: w
                .pending
                .iter()
                .map(|p| PendingView {
                    id: p.id,
                    account: ids[p.account as usize].to_string(),
                    isolated: p.isolated.map(|m| self.markets()[m as usize].id.to_string()),
                    amount: p.amount,
                    unlock_ts: p.unlock_ts,
                })
                .collect(),
        })
    }

    fn backstop_view(&self) -> Result<Option<BackstopView>, Reject> {
        let Some(b) = self.backstop() else { return Ok(None) };
        let (id, vault) = self.accounts().nth(b.account as usize).expect("the vault is an account");
        let equity = self.health(vault, Bucket::Cross)?.equity;
        Ok(Some(BackstopView {
            account: id.to_string(),
            loss_cap: b.loss_cap,
            capital: b.capital,
            loss: b.capital.checked_sub(equity)?.max(Quote::ZERO),
        }))
    }

    /// The liquidation of bucket `k`, if one is in progress.
    fn liquidation_view(&self, k: Key) -> Option<LiquidationView> {
        let l = self.liquidation(k)?;
        let orders = l
            .markets
            .iter()
            .filter_map(|(m, p)| {
                p.order.map(|o| OrderView {
                    order: o.id,
                    market: self.markets()[*m as usize].id.to_string(),
                    side: o.side,
                    size: o.remaining,
                    limit: o.limit,
                    expires: o.expires,
                })
            })
            .collect();
        Some(LiquidationView { since: l.since, progress: l.progress, orders })
    }

    fn account_view(&self, i: u32, account: &Account) -> Result<AccountView, Reject> {
        let h = self.health(account, Bucket::Cross)?;
        let mut balances = BTreeMap::new();
        balances.insert(SETTLEMENT.to_string(), account.cash.to_amount()?);
        for (a, amount) in &account.collateral {
            balances.insert(self.assets()[*a as usize].id.to_string(), *amount);
        }
        let mut positions = Vec::new();
        for (m, pos) in &account.cross {
            positions.push(self.position_view(*m, pos, &h, None)?);
        }
        // Isolated buckets are listed even when flat, so their margin is visible.
        for (m, iso) in &account.isolated {
            let bucket = Bucket::Isolated(*m);
            let isolated_health = self.health(account, bucket)?;
            let mut view = self.position_view(*m, &iso.position, &isolated_health, Some(iso.margin))?;
            view.liquidation = self.liquidation_view(key(i, bucket));
            positions.push(view);
        }
        Ok(AccountView {
            balances,
            equity: h.equity,
            initial_equity: h.initial_equity,
            initial_requirement: h.initial,
            liquidation_end_requirement: h.liquidation_end,
            maintenance_requirement: h.maintenance,
            liquidatable: h.is_liquidatable(),
            liquidation: self.liquidation_view(key(i, Bucket::Cross)),
            positions,
        })
    }

    /// One position; `health` is its bucket's, `isolated_margin` is set for isolated positions.
    fn position_view(
        &self,
        m: u32,
        pos: &Position,
        health: &Health,
        isolated_margin: Option<Quote>,
    ) -> Result<PositionView, Reject> {
        let market = &self.markets()[m as usize];
        let r = position_risk(market, pos)?;
        let isolated = isolated_margin.is_some();
        let equity = isolated_margin.map(|_| health.equity);
        Ok(PositionView {
            market: market.id.to_string(),
            size: pos.size,
            entry_price: pos.entry_price(),
            mark_price: market.mark(),
            notional: r.notional,
            unrealized_pnl: pos.unrealized_pnl(r.mark)?,
            cash_leg: pos.quote,
            funding_owed: pos.funding_owed(market.funding_index)?,
            isolated,
            isolated_margin,
            equity,
            initial_requirement: r.initial,
            maintenance_requirement: r.maintenance,
            liquidation_price: position_liquidation_price(market, pos, health)?,
            liquidatable: health.is_liquidatable(),
            liquidation: None,
        })
    }

    fn market_view(&self, m: &Market) -> MarketView {
        MarketView {
            oracle_price: m.feed.price(),
            mark_price: m.mark(),
            twap: m.feed.twap(),
            validity: m.validity(self.now()),
            open_interest: m.open_interest,
            funding_index: m.funding_index,
            funding_pool: m.funding_pool,
            volatility_margin_fraction: m.vol.fraction,
            status: m.breaker.status_at(self.now()),
            trips: m.breaker.trips.clone(),
            initial_margin_multiplier: m.initial_multiplier(),
            liquidations_resume_at: m.breaker.liquidations_resume_at,
            tiers: m.tiers.rows().to_vec(),
            params: m.params.clone(),
        }
    }

    /// Invariant 1 of DESIGN §3 for the settlement asset: the sum of cash (cross and
    /// isolated, the backstop vault's included), position cash legs, the fee pool, the funding
    /// pools, the insurance funds and the amounts reserved by pending withdrawals equals
    /// deposits minus withdrawals, exactly. Returns the difference (zero when conserved).
    pub fn conservation_error(&self) -> Result<Quote, crate::num::NumError> {
        let mut held = self.fee_pool();
        for (_, a) in self.accounts() {
            held = held.checked_add(a.cash)?;
            for (_, p) in &a.cross {
                held = held.checked_add(p.quote)?;
            }
            for (_, i) in &a.isolated {
                held = held.checked_add(i.margin)?.checked_add(i.position.quote)?;
            }
        }
        for m in self.markets() {
            held = held.checked_add(m.funding_pool)?;
        }
        for f in self.insurance_funds() {
            held = held.checked_add(f.balance)?;
        }
        held = held.checked_add(self.withdrawals().reserved()?)?;
        let net = self.totals().deposits.checked_sub(self.totals().withdrawals)?;
        held.checked_sub(net)
    }
}
