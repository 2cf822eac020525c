//! Gauges of engine state for /metrics, read at scrape time: fund balances, the backstop,
//! breaker states, open interest, totals.

use ballast_engine::breaker::Status;
use ballast_engine::Engine;
use std::fmt::Write;

const STATUSES: [(Status, &str); 4] = [
    (Status::Active, "active"),
    (Status::ReduceOnly, "reduce_only"),
    (Status::Halted, "halted"),
    (Status::Settlement, "settlement"),
];

/// The gauges in the Prometheus text format (a comment line if the view cannot be computed).
pub fn render(engine: &Engine, seq: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# HELP ballast_journal_last_seq The last journaled sequence number.\n# TYPE ballast_journal_last_seq gauge\nballast_journal_last_seq {seq}");
    let _ = writeln!(out, "# HELP ballast_engine_ts The engine's time (ts of the last command, unix ms).\n# TYPE ballast_engine_ts gauge\nballast_engine_ts {}", engine.now());
    let view = match engine.view() {
        Ok(v) => v,
        Err(e) => {
            let _ = writeln!(out, "# state view unavailable: {e}");
            return out;
        }
    };
    out.push_str("# HELP ballast_insurance_fund_balance Insurance fund balance (USDC) by fund.\n# TYPE ballast_insurance_fund_balance gauge\n");
    for (fund, balance) in &view.insurance_funds {
        let _ = writeln!(out, "ballast_insurance_fund_balance{{fund=\"{fund}\"}} {balance}");
    }
    if let Some(b) = &view.backstop {
        out.push_str("# HELP ballast_backstop_capital The backstop vault's capital and loss (USDC).\n# TYPE ballast_backstop_capital gauge\n");
        let _ = writeln!(out, "ballast_backstop_capital{{account=\"{}\"}} {}", b.account, b.capital);
        let _ = writeln!(
            out,
            "# TYPE ballast_backstop_loss gauge\nballast_backstop_loss{{account=\"{}\"}} {}",
            b.account, b.loss
        );
    }
    out.push_str("# HELP ballast_market_status 1 for the market's current breaker status, 0 for the others.\n# TYPE ballast_market_status gauge\n");
    for (id, m) in &view.markets {
        for (status, name) in STATUSES {
            let _ = writeln!(
                out,
                "ballast_market_status{{market=\"{id}\",status=\"{name}\"}} {}",
                u8::from(m.status == status)
            );
        }
    }
    out.push_str("# HELP ballast_market_breaker_trips Active breaker trips by market.\n# TYPE ballast_market_breaker_trips gauge\n");
    for (id, m) in &view.markets {
        let _ = writeln!(out, "ballast_market_breaker_trips{{market=\"{id}\"}} {}", m.trips.len());
    }
    out.push_str(
        "# HELP ballast_open_interest Open interest (base units) by market.\n# TYPE ballast_open_interest gauge\n",
    );
    for (id, m) in &view.markets {
        let _ = writeln!(out, "ballast_open_interest{{market=\"{id}\"}} {}", m.open_interest);
    }
    out.push_str("# HELP ballast_mark_price Mark price by market (absent before the first price).\n# TYPE ballast_mark_price gauge\n");
    for (id, m) in &view.markets {
        if let Some(p) = m.mark_price {
            let _ = writeln!(out, "ballast_mark_price{{market=\"{id}\"}} {p}");
        }
    }
    let t = &view.totals;
    out.push_str("# HELP ballast_total Lifetime totals (USDC): deposits, withdrawals, bad debt and how the waterfall covered it.\n# TYPE ballast_total gauge\n");
    for (name, v) in [
        ("deposits", t.deposits),
        ("withdrawals", t.withdrawals),
        ("bad_debt", t.bad_debt),
        ("insurance_paid", t.insurance_paid),
        ("backstop_absorbed", t.backstop_absorbed),
        ("adl_covered", t.adl_covered),
        ("socialized_loss", t.socialized_loss),
        ("liquidated_notional", t.liquidated_notional),
        ("adl_notional", t.adl_notional),
    ] {
        let _ = writeln!(out, "ballast_total{{kind=\"{name}\"}} {v}");
    }
    let _ = writeln!(
        out,
        "# HELP ballast_fee_pool Fee pool (USDC).\n# TYPE ballast_fee_pool gauge\nballast_fee_pool {}",
        view.fee_pool
    );
    let _ = writeln!(
        out,
        "# HELP ballast_accounts Accounts.\n# TYPE ballast_accounts gauge\nballast_accounts {}",
        view.accounts.len()
    );
    let _ = writeln!(out, "# HELP ballast_withdrawals_reserved USDC reserved by pending withdrawals.\n# TYPE ballast_withdrawals_reserved gauge\nballast_withdrawals_reserved {}", view.withdrawals.reserved);
    out
}
