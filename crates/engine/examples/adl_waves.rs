//! Queue versus pro-rata deleveraging on the ADL waves of 10 Oct 2025.
//!
//! For every wave of data/adl-2025-10-10/policy_per_wave_metrics.csv in which the production
//! queue took more than the deficit needed (H > B), builds the wave's book of winners
//! ([`adl::wave_book`]) and runs our allocator under each policy: the queue policies close whole
//! positions and overshoot by H − B; pro-rata closes exactly B. Waves where production took less
//! than B are listed and skipped (a whole-position queue cannot take less than it needs).
//!
//! Run: `cargo run --release -p ballast-engine --example adl_waves`

use ballast_engine::adl::{self, AdlParams, AdlPolicy};
use ballast_engine::num::{Price, Quote, Round, Size};

const CSV: &str = include_str!("../../../data/adl-2025-10-10/policy_per_wave_metrics.csv");

/// A decimal from the CSV, cut to 8 decimals (the size scale).
fn size(text: &str) -> Size {
    let cut = match text.split_once('.') {
        Some((int, frac)) => format!("{int}.{}", &frac[..frac.len().min(8)]),
        None => text.to_string(),
    };
    Size::parse(&cut).unwrap_or_else(|e| panic!("bad number {text}: {e}"))
}

fn main() {
    let mut lines = CSV.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no column {name}"));
    let (wave, needed, taken, cap) = (col("wave"), col("budget_needed"), col("budget_prod"), col("total_cap"));
    let (mark, bankruptcy) = (Price::parse("100").unwrap(), Price::parse("101").unwrap());
    let policies = [AdlPolicy::Bitmex, AdlPolicy::Binance, AdlPolicy::Hyperliquid, AdlPolicy::ProRata];
    println!("{:>4} {:>16} {:>16} | overshoot in USD of haircut by policy", "wave", "needed B", "production H");
    println!("{:>39} | {:>14} {:>14} {:>14} {:>14}", "", "bitmex", "binance", "hyperliquid", "pro_rata");
    println!("(the CSV's overshoot_prod is H − B; bitmex and hyperliquid reproduce it exactly)");
    let mut totals = [Quote::ZERO; 4];
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let (b, h, c) = (size(f[needed]), size(f[taken]), size(f[cap]));
        let Some(book) = adl::wave_book(b, h, c, mark) else {
            println!(
                "{:>4} {:>16} {:>16} | production took less than needed: skipped",
                f[wave],
                b.to_string(),
                h.to_string()
            );
            continue;
        };
        let mut row = String::new();
        for (i, policy) in policies.into_iter().enumerate() {
            let params = AdlParams { enabled: true, policy, profit_cap: None };
            let a = adl::allocate(&params, &book, b, bankruptcy, mark).expect("allocation");
            // Each unit closed beyond B is $1 of haircut beyond what the deficit needed.
            let over = a.closed.checked_sub(b).unwrap().max(Size::ZERO).notional(Price::ONE, Round::Ceil).unwrap();
            totals[i] = totals[i].checked_add(over).unwrap();
            row.push_str(&format!(" {:>14}", over.to_string()));
        }
        println!("{:>4} {:>16} {:>16} |{row}", f[wave], b.to_string(), h.to_string());
    }
    let row: String = totals.iter().map(|t| format!(" {:>14}", t.to_string())).collect();
    println!("{:>39} |{row}", "total");
}
