//! A state found by the property test (`invariants.rs`, seed kept in proptest-regressions): a
//! bankrupt account's deficit, with ADL disabled, is socialized through the funding index over
//! an open interest of two dust positions (1e-8 units each), so each is charged about 5,136
//! USDC. Their cost per unit then lies far beyond the price range: the state view must still
//! build, with no entry price for them, instead of failing with an overflow.

use ballast_engine::{parse_line, Engine};

const STORY: &str = r#"{"ts":0,"cmd":"create_market","market":"SOL-PERP","adl":{"enabled":false},"initial_margin":"0.001","liquidation":{"backstop_threshold":"0","backstop_timeout_ms":1000,"max_fraction_per_window":"0.72436428","order_ttl_ms":500,"partial_threshold":"45529.66","window_ms":1000},"maintenance_margin":"0.001"}
{"ts":3646,"cmd":"deposit","account":"alice","asset":"USDC","amount":"101.6056"}
{"ts":4500,"cmd":"oracle","market":"SOL-PERP","source":"s1","price":"5523649.449697"}
{"ts":8155,"cmd":"deposit","account":"mm","asset":"USDC","amount":"12686.5"}
{"ts":13268,"cmd":"fill","market":"SOL-PERP","buyer":"mm","seller":"alice","size":"0.01220746","price":"6305429.88956352"}
{"ts":13268,"cmd":"deposit","account":"carol","asset":"USDC","amount":"26.2675","isolated":"SOL-PERP"}
{"ts":18005,"cmd":"fill","market":"SOL-PERP","buyer":"carol","seller":"alice","size":"0.00000001","price":"6225399.48177621"}
{"ts":19117,"cmd":"oracle","market":"SOL-PERP","source":"s1","price":"4429904.9906324"}
{"ts":19117,"cmd":"fill","market":"SOL-PERP","buyer":"alice","seller":"mm","size":"0.00442132","price":"4423260.13306618","taker":"buyer","liquidation":true}
{"ts":19765,"cmd":"create_market","market":"ETH-PERP","adl":{"enabled":false},"initial_margin":"0.001","liquidation":{"backstop_threshold":"0","backstop_timeout_ms":1000,"max_fraction_per_window":"0.01","order_ttl_ms":500,"partial_threshold":"1","window_ms":1000},"maintenance_margin":"0.001"}
{"ts":19765,"cmd":"liquidate","liquidator":"alice","account":"mm","market":"SOL-PERP","size":"0.00778614"}"#;

#[test]
fn dust_charged_a_socialized_loss_has_no_entry_price_and_the_view_builds() {
    let mut engine = Engine::new();
    let mut events = Vec::new();
    for line in STORY.lines() {
        engine.apply(&parse_line(line).expect("a valid line"), &mut events).expect("accepted");
    }
    let view = engine.view().expect("the view of a valid state builds");
    for id in ["alice", "carol"] {
        let dust = &view.accounts[id].positions[0];
        assert_eq!(dust.size.raw().abs(), 1, "{id} holds 1e-8 units");
        assert_eq!(dust.entry_price, None, "{id}: a cost of thousands per 1e-8 units is no price");
        assert!(dust.cash_leg.raw() < -5_000_000_000, "{id} was charged more than 5,000 USDC");
    }
}
