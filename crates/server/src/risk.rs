//! GET /v1/risk: the venue's totals, pools, open interest and the accounts closest to
//! liquidation, from the engine's state view.

use ballast_engine::num::Quote;
use ballast_engine::Engine;
use serde_json::{json, Value};

/// A bucket (the cross book or one isolated position) and its distance to liquidation.
struct Bucket {
    account: String,
    isolated: Option<String>,
    equity: Quote,
    maintenance: Quote,
    liquidatable: bool,
}

impl Bucket {
    /// equity / maintenance requirement (below 1: liquidatable).
    fn ratio(&self) -> f64 {
        self.equity.raw() as f64 / self.maintenance.raw() as f64
    }
}

/// The summary, with the `closest` buckets nearest to liquidation (0: none).
pub fn summary(engine: &Engine, seq: u64, closest: usize) -> Result<Value, String> {
    let view = engine.view().map_err(|e| format!("cannot compute the state view: {e}"))?;
    let mut buckets = Vec::new();
    for (id, a) in &view.accounts {
        if a.maintenance_requirement > Quote::ZERO {
            buckets.push(Bucket {
                account: id.clone(),
                isolated: None,
                equity: a.equity,
                maintenance: a.maintenance_requirement,
                liquidatable: a.liquidatable,
            });
        }
        for p in a.positions.iter().filter(|p| p.isolated && p.maintenance_requirement > Quote::ZERO) {
            buckets.push(Bucket {
                account: id.clone(),
                isolated: Some(p.market.clone()),
                equity: p.equity.unwrap_or(Quote::ZERO),
                maintenance: p.maintenance_requirement,
                liquidatable: p.liquidatable,
            });
        }
    }
    let liquidatable = buckets.iter().filter(|b| b.liquidatable).count();
    buckets.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()).then_with(|| a.account.cmp(&b.account)));
    let closest: Vec<Value> = buckets
        .iter()
        .take(closest)
        .map(|b| {
            json!({
                "account": b.account,
                "isolated": b.isolated,
                "equity": b.equity,
                "maintenance_requirement": b.maintenance,
                "margin_ratio": format!("{:.4}", b.ratio()),
                "liquidatable": b.liquidatable,
            })
        })
        .collect();
    let markets: serde_json::Map<String, Value> = view
        .markets
        .iter()
        .map(|(id, m)| {
            let v = json!({
                "status": m.status,
                "oracle_price": m.oracle_price,
                "mark_price": m.mark_price,
                "open_interest": m.open_interest,
                "trips": m.trips.len(),
            });
            (id.clone(), v)
        })
        .collect();
    Ok(json!({
        "seq": seq,
        "ts": view.ts,
        "state_hash": view.state_hash,
        "accounts": view.accounts.len(),
        "buckets_with_positions": buckets.len(),
        "liquidatable": liquidatable,
        "totals": view.totals,
        "fee_pool": view.fee_pool,
        "insurance_funds": view.insurance_funds,
        "backstop": view.backstop,
        "markets": markets,
        "withdrawals": {
            "reserved": view.withdrawals.reserved,
            "pending": view.withdrawals.pending.len(),
            "gated_until": view.withdrawals.gated_until,
            "gate_reason": view.withdrawals.gate_reason,
        },
        "closest_to_liquidation": closest,
    }))
}
