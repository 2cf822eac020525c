//! The real `ballast keygen` and `ballast sign`: keys made, a proposal signed by two of them,
//! and the signed lines accepted by a replay.

use serde_json::Value;

mod common;

use common::ballast;

#[test]
fn keygen_then_sign_a_proposal_that_the_engine_accepts() {
    let dir = std::env::temp_dir().join(format!("ballast-keys-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let mut keys = Vec::new();
    for name in ["k1.json", "k2.json"] {
        let out = ballast(&["keygen", "--out", &path(name)]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        keys.push(String::from_utf8(out.stdout).unwrap().trim().to_string());
    }
    assert_ne!(keys[0], keys[1]);
    assert_eq!(keys[0].len(), 64);
    let again = ballast(&["keygen", "--out", &path("k1.json")]);
    assert!(!again.status.success(), "an existing key file is never overwritten");

    let file = path("gov.jsonl");
    let mut text = format!(
        "{}\n{}\n{}\n",
        r#"{"ts":0,"cmd":"create_market","market":"M","initial_margin":"0.1","maintenance_margin":"0.05"}"#,
        format_args!(
            r#"{{"ts":0,"cmd":"init_governance","council":{{"keys":["{}","{}"],"threshold":2,"timelocks":{{"tighten_ms":10,"loosen_ms":20,"rotation_ms":30}}}}}}"#,
            keys[0], keys[1]
        ),
        r#"{"ts":1,"cmd":"propose","nonce":1,"change":{"type":"set_margin_multiplier","market":"M","multiplier":"1.5"}}"#,
    );
    std::fs::write(&file, &text).unwrap();
    for key in ["k1.json", "k2.json"] {
        let out = ballast(&["sign", "--key", &path(key), "--file", &file, "--nonce", "1"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        text.push_str(&String::from_utf8(out.stdout).unwrap());
    }
    text.push_str("{\"ts\":11,\"cmd\":\"execute\",\"nonce\":1}\n");
    std::fs::write(&file, &text).unwrap();
    let out = ballast(&["replay", &file]);
    let events: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert!(!kinds.contains(&"rejected"), "{events:?}");
    assert_eq!(kinds.last(), Some(&"proposal_executed"));

    let missing = ballast(&["sign", "--key", &path("k1.json"), "--file", &file, "--nonce", "7"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nonce 7"));
}
