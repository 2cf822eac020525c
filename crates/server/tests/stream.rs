//! The WebSocket event stream on a real listener: the backlog from a seq, then live events,
//! and a resume from a later seq that neither repeats nor skips.

use ballast_journal::{JournaledEngine, Options};
use ballast_server::auth::hash_key;
use ballast_server::client::Client;
use ballast_server::config::{Config, KeyConfig};
use futures_util::StreamExt;
use serde_json::Value;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

async fn next_event(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next()).await.expect("an event in time");
        match msg.expect("stream open").expect("no error") {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            _ => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_replays_from_a_seq_then_follows() {
    let dir = tempfile::tempdir().unwrap();
    let (journaled, _) = JournaledEngine::open(dir.path(), Options::default()).unwrap();
    let mut config = Config::default();
    for (name, role) in [("venue", "venue"), ("viewer", "viewer")] {
        config.keys.push(KeyConfig {
            name: name.into(),
            sha256: hash_key(name),
            role: serde_json::from_value(Value::from(role)).unwrap(),
            account: None,
            source: None,
        });
    }
    let (router, _handle) = ballast_server::build(journaled, &config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let post = move |body: &'static str| {
        tokio::task::spawn_blocking(move || {
            let reply = Client::new(addr, Some("venue")).post("/v1/commands", body.as_bytes()).unwrap();
            assert_eq!(reply.status, 200, "{}", reply.text());
        })
    };
    post(r#"[{"ts":0,"cmd":"deposit","account":"a","asset":"USDC","amount":"1"},{"ts":0,"cmd":"deposit","account":"b","asset":"USDC","amount":"2"}]"#)
        .await
        .unwrap();

    let url = format!("ws://{addr}/v1/stream?from=0&key=viewer");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let first = next_event(&mut ws).await;
    assert_eq!((first["seq"].as_u64(), first["account"].as_str()), (Some(1), Some("a")));
    assert_eq!(next_event(&mut ws).await["seq"], 2);
    post(r#"{"ts":0,"cmd":"deposit","account":"c","asset":"USDC","amount":"3"}"#).await.unwrap();
    let live = next_event(&mut ws).await;
    assert_eq!((live["seq"].as_u64(), live["event"].as_str()), (Some(3), Some("deposited")));

    // Resume from seq 2: exactly 2 and 3, in order.
    let (mut again, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/v1/stream?from=2&key=viewer")).await.unwrap();
    assert_eq!(next_event(&mut again).await["seq"], 2);
    assert_eq!(next_event(&mut again).await["seq"], 3);

    // Without a key the upgrade is refused.
    let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/stream?from=0")).await;
    assert!(refused.is_err());
}
