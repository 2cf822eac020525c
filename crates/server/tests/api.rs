//! The API in process (tower's `oneshot` on the router): bad input and faults answer 4xx/5xx
//! with a JSON error and journal nothing; roles stay inside their rights.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use ballast_engine::{Engine, TimedCommand};
use ballast_journal::{JournalError, JournaledEngine, Options, Submitted};
use ballast_server::auth::hash_key;
use ballast_server::config::{Config, KeyConfig};
use ballast_server::{Backend, EngineHandle};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tower::ServiceExt;

fn key(name: &str, role: &str, account: Option<&str>, source: Option<&str>) -> KeyConfig {
    let role = serde_json::from_value(json!(role)).unwrap();
    KeyConfig {
        name: name.into(),
        sha256: hash_key(&format!("{name}-secret")),
        role,
        account: account.map(Into::into),
        source: source.map(Into::into),
    }
}

fn config() -> Config {
    let mut c = Config {
        keys: vec![
            key("venue", "venue", None, None),
            key("oracle", "oracle", None, Some("s1")),
            key("alice", "trader", Some("alice"), None),
            key("liq", "liquidator", Some("liq"), None),
            key("viewer", "viewer", None, None),
        ],
        ..Config::default()
    };
    c.limits.max_body_bytes = 4096;
    c
}

/// Fails every group commit while `fail` is set, like a disk whose fdatasync fails.
struct FlakyDisk {
    inner: JournaledEngine,
    fail: Arc<AtomicBool>,
}

impl Backend for FlakyDisk {
    fn submit_batch(&mut self, lines: &[&str], cmds: Vec<TimedCommand>) -> Result<Submitted, JournalError> {
        if self.fail.load(Ordering::SeqCst) {
            // ENOSPC, as a full disk reports it.
            return Err(JournalError::Sync(std::io::Error::from_raw_os_error(28)));
        }
        self.inner.submit_decoded(lines, cmds.into_iter().map(Ok).collect())
    }
    fn engine(&self) -> &Engine {
        self.inner.engine()
    }
    fn last_seq(&self) -> u64 {
        self.inner.last_seq()
    }
}

struct Fixture {
    router: Router,
    handle: EngineHandle,
    fail: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

fn fixture_with(config: Config) -> Fixture {
    fixture_in(config, Options::default())
}

fn fixture_in(config: Config, options: Options) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (inner, _) = JournaledEngine::open(dir.path(), options).unwrap();
    let fail = Arc::new(AtomicBool::new(false));
    let (router, handle) = ballast_server::build(FlakyDisk { inner, fail: fail.clone() }, &config);
    Fixture { router, handle, fail, _dir: dir }
}

fn fixture() -> Fixture {
    fixture_with(config())
}

async fn call(f: &Fixture, method: &str, path: &str, who: Option<&str>, body: Option<String>) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(who) = who {
        req = req.header("authorization", format!("Bearer {who}-secret"));
    }
    let req = req.body(body.map_or_else(Body::empty, Body::from)).unwrap();
    let res = f.router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn post(f: &Fixture, who: &str, body: &str) -> (StatusCode, Value) {
    call(f, "POST", "/v1/commands", Some(who), Some(body.to_string())).await
}

async fn last_seq(f: &Fixture) -> u64 {
    f.handle.read(|_, seq| seq).await.unwrap()
}

const SETUP: &str = r#"[
 {"ts":0,"cmd":"create_market","market":"BTC-PERP","initial_margin":"0.1","maintenance_margin":"0.05"},
 {"ts":0,"cmd":"oracle","market":"BTC-PERP","source":"s1","price":"50000"},
 {"ts":0,"cmd":"deposit","account":"alice","asset":"USDC","amount":"10000"},
 {"ts":0,"cmd":"deposit","account":"bob","asset":"USDC","amount":"10000"},
 {"ts":1000,"cmd":"fill","market":"BTC-PERP","buyer":"alice","seller":"bob","size":"1","price":"50000"}
]"#;

/// The venue's setup, except the oracle line, which the oracle key sends.
async fn setup(f: &Fixture) {
    let cmds: Vec<Value> = serde_json::from_str(SETUP).unwrap();
    for c in cmds {
        let who = if c["cmd"] == "oracle" { "oracle" } else { "venue" };
        let (status, body) = post(f, who, &c.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["results"][0]["accepted"], true, "{body}");
    }
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[tokio::test]
async fn a_batch_is_journaled_in_order_with_seqs_and_events() {
    let f = fixture();
    let (status, body) = post(&f, "venue", &SETUP.replace(r#""cmd":"oracle""#, r#""cmd":"tick","x":1"#)).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_command");
    assert!(body["error"]["message"].as_str().unwrap().starts_with("command 1:"), "{body}");
    assert_eq!(last_seq(&f).await, 0);
    setup(&f).await;
    assert_eq!(last_seq(&f).await, 5);
    // An engine rejection is durable too: 200, accepted false, with the reason.
    let too_big =
        r#"{"ts":2000,"cmd":"fill","market":"BTC-PERP","buyer":"alice","seller":"bob","size":"100","price":"50000"}"#;
    let (status, body) = post(&f, "venue", too_big).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["results"][0]["seq"], 6);
    assert_eq!(body["results"][0]["accepted"], false);
    assert!(body["results"][0]["reason"].as_str().unwrap().contains("initial requirement"), "{body}");
    // Without the events in the reply.
    let (status, body) =
        call(&f, "POST", "/v1/commands?events=false", Some("venue"), Some(r#"{"ts":2000,"cmd":"tick"}"#.into())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["results"][0]["seq"].as_u64(), body["results"][0].get("events")), (Some(7), None));
    let (status, body) =
        call(&f, "POST", "/v1/commands?evnts=false", Some("venue"), Some(r#"{"ts":2000,"cmd":"tick"}"#.into())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, events) = call(&f, "GET", "/v1/events?from=5", Some("viewer"), None).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = events["events"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(names.first(), Some(&"filled"));
    assert_eq!(names.last(), Some(&"rejected"));
}

#[tokio::test]
async fn malformed_json_unknown_fields_and_wrong_types_are_400_and_journal_nothing() {
    let f = fixture();
    setup(&f).await;
    for (body, code) in [
        ("{not json", "malformed_json"),
        ("", "malformed_json"),
        ("42", "invalid_command"),
        ("[]", "invalid_command"),
        (r#"{"ts":2000,"cmd":"deposit","account":"alice","asset":"USDC","amount":"1","amont":"2"}"#, "invalid_command"),
        (r#"{"ts":2000,"cmd":"deposit","account":"alice","asset":"USDC","amount":1}"#, "invalid_command"),
        (r#"{"ts":"soon","cmd":"tick"}"#, "invalid_command"),
        (r#"{"ts":2000,"cmd":"print_money"}"#, "invalid_command"),
    ] {
        let (status, reply) = post(&f, "venue", body).await;
        assert_error(status, &reply, StatusCode::BAD_REQUEST, code);
    }
    assert_eq!(last_seq(&f).await, 5);
}

#[tokio::test]
async fn oversize_bodies_and_batches_are_413() {
    let mut c = config();
    c.limits.max_batch = 3;
    let f = fixture_with(c);
    let big = format!(r#"{{"ts":0,"cmd":"tick","pad":"{}"}}"#, "x".repeat(5000));
    let (status, body) = post(&f, "venue", &big).await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    let four = format!("[{}]", [r#"{"ts":0,"cmd":"tick"}"#; 4].join(","));
    let (status, body) = post(&f, "venue", &four).await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large");
    assert_eq!(last_seq(&f).await, 0);
}

#[tokio::test]
async fn roles_act_only_within_their_rights() {
    let f = fixture();
    setup(&f).await;
    let cases = [
        // The oracle may not fill, nor publish as another source.
        (
            "oracle",
            r#"{"ts":2000,"cmd":"fill","market":"BTC-PERP","buyer":"alice","seller":"bob","size":"0.1","price":"50000"}"#,
        ),
        ("oracle", r#"{"ts":2000,"cmd":"oracle","market":"BTC-PERP","source":"s2","price":"1"}"#),
        // The venue may not publish prices.
        ("venue", r#"{"ts":2000,"cmd":"oracle","market":"BTC-PERP","source":"s1","price":"1"}"#),
        // A trader may not withdraw for another account, nor fill.
        ("alice", r#"{"ts":2000,"cmd":"request_withdrawal","account":"bob","amount":"1"}"#),
        ("alice", r#"{"ts":2000,"cmd":"withdraw","account":"alice","asset":"USDC","amount":"1"}"#),
        // A liquidator takes over into its own account only.
        (
            "liq",
            r#"{"ts":2000,"cmd":"liquidate","liquidator":"other","account":"alice","market":"BTC-PERP","size":"1"}"#,
        ),
        // A viewer sends nothing.
        ("viewer", r#"{"ts":2000,"cmd":"tick"}"#),
    ];
    for (who, body) in cases {
        let (status, reply) = post(&f, who, body).await;
        assert_error(status, &reply, StatusCode::FORBIDDEN, "forbidden");
    }
    // One forbidden command refuses the whole batch.
    let mixed =
        r#"[{"ts":2000,"cmd":"tick"},{"ts":2000,"cmd":"oracle","market":"BTC-PERP","source":"s1","price":"1"}]"#;
    let (status, reply) = post(&f, "venue", mixed).await;
    assert_error(status, &reply, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(last_seq(&f).await, 5);
    // Within its rights, a trader's request is journaled.
    let (status, reply) =
        post(&f, "alice", r#"{"ts":2000,"cmd":"request_withdrawal","account":"alice","amount":"1"}"#).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(last_seq(&f).await, 6);
}

#[tokio::test]
async fn keys_are_required_and_checked() {
    let f = fixture();
    let (status, body) = call(&f, "GET", "/v1/markets", None, None).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, body) = call(&f, "GET", "/v1/markets", Some("mallory"), None).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, body) = post(&f, "mallory", r#"{"ts":0,"cmd":"tick"}"#).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(last_seq(&f).await, 0);
}

#[tokio::test]
async fn a_trader_reads_its_own_account_only() {
    let f = fixture();
    setup(&f).await;
    let (status, body) = call(&f, "GET", "/v1/accounts/alice", Some("alice"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["view"]["positions"][0]["size"], "1");
    assert!(body["view"]["positions"][0]["liquidation_price"].is_string(), "{body}");
    let (status, body) = call(&f, "GET", "/v1/accounts/bob", Some("alice"), None).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (status, body) = call(&f, "GET", "/v1/events?from=0", Some("alice"), None).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (status, body) = call(&f, "GET", "/v1/accounts/bob", Some("viewer"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call(&f, "GET", "/v1/accounts/carol", Some("viewer"), None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn a_failing_fdatasync_acknowledges_nothing_and_says_why() {
    let f = fixture();
    setup(&f).await;
    let hash = f.handle.read(|e, _| e.state_hash()).await.unwrap();
    f.fail.store(true, Ordering::SeqCst);
    let (status, body) =
        post(&f, "venue", r#"{"ts":2000,"cmd":"deposit","account":"carol","asset":"USDC","amount":"5"}"#).await;
    assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, "not_durable");
    assert!(body["error"]["message"].as_str().unwrap().contains("fdatasync"), "{body}");
    let (status, health) = call(&f, "GET", "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert!(health["last_journal_error"].as_str().unwrap().contains("fdatasync"), "{health}");
    assert_eq!(last_seq(&f).await, 5);
    assert_eq!(f.handle.read(|e, _| e.state_hash()).await.unwrap(), hash);
    // The disk recovers: the next command is journaled right after the last durable one.
    f.fail.store(false, Ordering::SeqCst);
    let (status, body) =
        post(&f, "venue", r#"{"ts":2000,"cmd":"deposit","account":"carol","asset":"USDC","amount":"5"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["seq"], 6);
}

#[tokio::test]
async fn the_rate_limit_answers_429() {
    let mut c = config();
    c.limits.rate_per_sec = 0.001;
    c.limits.burst = 2.0;
    let f = fixture_with(c);
    for _ in 0..2 {
        assert_eq!(call(&f, "GET", "/v1/markets", Some("viewer"), None).await.0, StatusCode::OK);
    }
    let (status, body) = call(&f, "GET", "/v1/markets", Some("viewer"), None).await;
    assert_error(status, &body, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // Buckets are per key.
    assert_eq!(call(&f, "GET", "/v1/markets", Some("venue"), None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn concurrent_single_commands_get_distinct_contiguous_seqs() {
    let f = Arc::new(fixture());
    let mut tasks = Vec::new();
    for i in 0..40 {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let body = format!(r#"{{"ts":0,"cmd":"deposit","account":"a{i}","asset":"USDC","amount":"1"}}"#);
            let (status, reply) = post(&f, "venue", &body).await;
            assert_eq!(status, StatusCode::OK, "{reply}");
            reply["results"][0]["seq"].as_u64().unwrap()
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort();
    assert_eq!(seqs, (1..=40).collect::<Vec<u64>>());
}

/// Lone commands (answered on the engine thread when the reply thread is idle) and batches (sent
/// to the reply thread) interleave: the ring still holds every event once, in seq order, and
/// each caller finds its own events in the ring when it hears back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_and_large_groups_reach_the_ring_in_order() {
    let f = Arc::new(fixture());
    let mut tasks = Vec::new();
    for i in 0..24u64 {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let n = if i % 3 == 0 { 200 } else { 1 };
            let lines: Vec<ballast_server::Prepared> = (0..n)
                .map(|j| {
                    let line =
                        format!(r#"{{"ts":0,"cmd":"deposit","account":"a{i}-{j}","asset":"USDC","amount":"1"}}"#);
                    ballast_server::Prepared::new(line).unwrap()
                })
                .collect();
            let results = f.handle.submit(lines).await.unwrap();
            let last = results.last().unwrap().seq;
            // Read-your-writes: the group's events are in the ring before the reply.
            let ring = f.handle.events.since(last, 10).unwrap();
            assert_eq!(ring.first().map(|r| r.0), Some(last));
            results.into_iter().map(|r| r.seq).collect::<Vec<u64>>()
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.extend(t.await.unwrap());
    }
    seqs.sort();
    let n = 8 * 200 + 16;
    assert_eq!(seqs, (1..=n).collect::<Vec<u64>>());
    let ring: Vec<u64> = f.handle.events.since(0, usize::MAX).unwrap().into_iter().map(|r| r.0).collect();
    assert_eq!(ring, (1..=n).collect::<Vec<u64>>(), "one deposit event per command, in seq order");
}

async fn metrics_text(f: &Fixture) -> String {
    let res = f.router.clone().oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    String::from_utf8(axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap()
}

#[tokio::test]
async fn automatic_snapshots_are_counted_in_the_metrics() {
    // Written in place, so each is on disk when its group commit returns.
    let f = fixture_in(config(), Options { snapshot_every: 2, ..Options::default() });
    let text = metrics_text(&f).await;
    assert!(text.contains("ballast_snapshots_total{outcome=\"written\"} 0\n"), "{text}");
    setup(&f).await;
    // Five commands, one per group commit: snapshots after seq 2 and 4.
    let text = metrics_text(&f).await;
    assert!(text.contains("ballast_snapshots_total{outcome=\"written\"} 2\n"), "{text}");
    assert!(text.contains("ballast_snapshots_total{outcome=\"failed\"} 0\n"), "{text}");
    assert!(text.contains("ballast_snapshot_seq 4\n"), "{text}");
}

#[tokio::test]
async fn queries_metrics_openapi_and_dashboard_answer() {
    let f = fixture();
    setup(&f).await;
    let (status, body) = call(&f, "GET", "/v1/risk?closest=5", Some("viewer"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["markets"]["BTC-PERP"]["open_interest"], "1");
    assert_eq!(body["closest_to_liquidation"].as_array().unwrap().len(), 2, "{body}");
    let (status, body) = call(&f, "GET", "/v1/state/hash", Some("viewer"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["seq"], 5);
    assert_eq!(body["state_hash"].as_str().unwrap().len(), 64);
    for path in ["/v1/markets", "/v1/markets/BTC-PERP", "/v1/insurance", "/v1/governance", "/v1/state"] {
        let (status, body) = call(&f, "GET", path, Some("viewer"), None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let (status, body) = call(&f, "GET", "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["paths"]["/v1/commands"]["post"].is_object());
    // A refused command counts as a command, not as an event.
    let too_big =
        r#"{"ts":2000,"cmd":"fill","market":"BTC-PERP","buyer":"alice","seller":"bob","size":"100","price":"50000"}"#;
    let (_, body) = post(&f, "venue", too_big).await;
    assert_eq!(body["results"][0]["accepted"], false, "{body}");
    let text = metrics_text(&f).await;
    assert!(text.contains("ballast_commands_total{cmd=\"fill\",outcome=\"accepted\"} 1"), "{text}");
    assert!(text.contains("ballast_commands_total{cmd=\"fill\",outcome=\"rejected\"} 1"), "{text}");
    assert!(text.contains("ballast_events_total{event=\"filled\"} 1"), "{text}");
    assert!(text.contains("ballast_events_total{event=\"deposited\"} 2"), "{text}");
    assert!(!text.contains("event=\"rejected\""), "{text}");
    assert!(text.contains("ballast_market_status{market=\"BTC-PERP\",status=\"active\"} 1"), "{text}");
    assert!(text.contains("ballast_journal_commit_seconds_count"), "{text}");
    let res = f.router.clone().oneshot(Request::get("/").body(Body::empty()).unwrap()).await.unwrap();
    let page = String::from_utf8(axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap();
    assert!(page.contains("<table id=\"markets\">"));
    // Self-contained: no script, style or image loaded from elsewhere.
    for outside in ["src=", "href=", "@import", "url("] {
        assert!(!page.contains(outside), "the page loads something: {outside}");
    }
}
