//! GET /v1/risk: the venue's totals, pools, open interest and the accounts closest to
//! liquidation.

use ballast_engine::account::Bucket as EngineBucket;
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

/// The summary, with the `closest` buckets nearest to liquidation (0: none). One pass over the
/// accounts' health (no state view, no state hash), so its cost is that of a full scan.
pub fn summary(engine: &Engine, seq: u64, closest: usize) -> Result<Value, String> {
    let mut buckets = Vec::new();
    for (id, account) in engine.accounts() {
        let isolated = account.isolated.iter().map(|(m, _)| (EngineBucket::Isolated(*m), Some(*m)));
        for (bucket, market) in std::iter::once((EngineBucket::Cross, None)).chain(isolated) {
            let h = engine.health(account, bucket).map_err(|e| format!("cannot compute the health of '{id}': {e}"))?;
            if h.maintenance > Quote::ZERO {
                buckets.push(Bucket {
                    account: id.to_string(),
                    isolated: market.map(|m| engine.markets()[m as usize].id.to_string()),
                    equity: h.equity,
                    maintenance: h.maintenance,
                    liquidatable: h.is_liquidatable(),
                });
            }
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
    let markets: serde_json::Map<String, Value> = engine
        .markets_state()
        .into_iter()
        .map(|(id, m)| {
            let v = json!({
                "status": m.status,
                "oracle_price": m.oracle_price,
                "mark_price": m.mark_price,
                "open_interest": m.open_interest,
                "trips": m.trips.len(),
            });
            (id, v)
        })
        .collect();
    let (insurance_funds, backstop) = engine.insurance_state().map_err(|e| e.to_string())?;
    let w = engine.withdrawals();
    let gate = w.gate_at(engine.now());
    Ok(json!({
        "seq": seq,
        "ts": engine.now(),
        "accounts": engine.accounts().len(),
        "buckets_with_positions": buckets.len(),
        "liquidatable": liquidatable,
        "totals": engine.totals(),
        "fee_pool": engine.fee_pool(),
        "insurance_funds": insurance_funds,
        "backstop": backstop,
        "markets": markets,
        "withdrawals": {
            "reserved": w.reserved().map_err(|e| e.to_string())?,
            "pending": w.pending.len(),
            "gated_until": gate.map(|g| g.until),
            "gate_reason": gate.map(|g| g.reason.clone()),
        },
        "closest_to_liquidation": closest,
    }))
}
