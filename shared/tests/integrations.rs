//! `execute_api` integrations: one OAuth token refresh across instances,
//! cached GET responses, errors recorded on the action.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use common::{Stub, TestEnv, drain, message};
use http::StatusCode;
use serde_json::{Map, Value, json};

struct Servers {
    token: Stub,
    api: Stub,
    token_calls: Arc<AtomicUsize>,
}

async fn servers() -> Servers {
    let token_calls = Arc::new(AtomicUsize::new(0));
    let calls = token_calls.clone();
    let token = Stub::start(move |_| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            // Slow enough that every concurrent caller finds the token missing.
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            (StatusCode::OK, json!({"access_token": format!("tok-{n}"), "token_type": "Bearer", "expires_in": 3600}))
        }
    })
    .await;
    let api =
        Stub::start(|r| async move { (StatusCode::OK, json!({"ok": true, "path": r.path, "query": r.query})) }).await;
    Servers { token, api, token_calls }
}

fn integrations(s: &Servers, ttl: u64) -> String {
    json!({"crm": {
        "base_url": format!("{}/v1", s.api.url()),
        "auth": {"type": "oauth_client_credentials", "token_url": format!("{}/oauth/token", s.token.url()),
                 "client_id": "switchboard", "client_secret": "very-secret", "scope": "orders"},
        "cache_ttl_seconds": ttl
    }})
    .to_string()
}

fn call(path: &str) -> Map<String, Value> {
    json!({"integration": "crm", "method": "GET", "path": path}).as_object().unwrap().clone()
}

#[tokio::test]
async fn fifty_concurrent_calls_needing_an_expired_token_make_exactly_one_token_request() {
    let s = servers().await;
    let env = TestEnv::with(&[("INTEGRATIONS", &integrations(&s, 0))], None).await;
    let other = env.app_with(&[]);
    let calls = (0..50).map(|i| {
        let app = if i % 2 == 0 { env.app.clone() } else { other.clone() };
        tokio::spawn(async move { app.integrations.execute(&call(&format!("/orders/{i}"))).await })
    });
    for result in futures::future::join_all(calls).await {
        assert_eq!(result.unwrap().unwrap()["ok"], true);
    }
    assert_eq!(s.token_calls.load(Ordering::SeqCst), 1, "one token request for all 50 calls, across two instances");
    assert_eq!(s.api.requests().len(), 50);
    let form = &s.token.requests()[0];
    assert_eq!(form.path, "/oauth/token");
}

#[tokio::test]
async fn get_responses_are_cached_per_integration_until_invalidated() {
    let s = servers().await;
    let env = TestEnv::with(&[("INTEGRATIONS", &integrations(&s, 60)), ("ADMIN_ACCESS_TOKEN", "adm")], None).await;
    let mut query = call("/products");
    query.insert("query".into(), json!({"sku": "A1"}));
    let first = env.app.integrations.execute(&query).await.unwrap();
    let second = env.app.integrations.execute(&query).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(s.api.requests().len(), 1, "the second GET came from the cache");
    assert_eq!(s.api.requests()[0].query, "sku=A1");
    let request = http::Request::post("/api/cache/invalidate")
        .header("authorization", "Bearer adm")
        .body(bytes::Bytes::from(json!({"type": "integration", "integration": "crm"}).to_string()))
        .unwrap();
    assert_eq!(switchboard::http::route(&env.app, request).await.status(), StatusCode::OK);
    env.app.integrations.execute(&query).await.unwrap();
    assert_eq!(s.api.requests().len(), 2);
}

#[tokio::test]
async fn an_execute_api_action_runs_and_its_error_is_recorded_on_the_action() {
    let s = servers().await;
    let ai = Stub::start(|_| async {
        (
            StatusCode::OK,
            json!({
                "response_text": "Để mình kiểm tra đơn hàng", "intent": "order_status", "confidence": 0.9,
                "actions": [
                    {"type": "execute_api", "data": {"integration": "crm", "path": "/orders/42"}},
                    {"type": "execute_api", "data": {"integration": "billing", "path": "/x"}}
                ]
            }),
        )
    })
    .await;
    let env = TestEnv::with(
        &[("INTEGRATIONS", &integrations(&s, 0)), ("AI_SERVICE_URL", &ai.url()), ("CONSUMER_BLOCK_MS", "20")],
        None,
    )
    .await;
    let (_, _, body) = env.post(&message("api", "m1", "đơn 42 của tôi đâu?", 1.0)).await;
    let results = body["result"]["pancake_result"]["results"].as_array().unwrap().clone();
    let by_type: Vec<(String, String)> = results
        .iter()
        .map(|r| (r["action_type"].as_str().unwrap().to_owned(), r["status"].as_str().unwrap().to_owned()))
        .collect();
    // Pancake delivery is disabled here: the reply is recorded as not sent.
    assert_eq!(by_type[0], ("send_message".into(), "not_sent".into()), "{body}");
    assert_eq!(by_type[1], ("execute_api".into(), "sent".into()), "{body}");
    assert_eq!(results[1]["response"]["path"], "/v1/orders/42");
    assert_eq!(by_type[2], ("execute_api".into(), "failed".into()));
    assert!(results[2]["error"].as_str().unwrap().contains("allow-list"));
    drain(&env.consumer().await).await;
    assert_eq!(
        env.count("SELECT COUNT(*) FROM message_actions WHERE action_type = 'execute_api' AND status = 'failed' AND last_error LIKE '%allow-list%'").await,
        1
    );
    // The client secret never reaches what is stored.
    assert_eq!(env.count("SELECT COUNT(*) FROM message_actions WHERE action_data::text LIKE '%very-secret%' OR last_error LIKE '%very-secret%'").await, 0);
}

#[test]
fn integration_secrets_are_redacted_in_the_configuration_debug_output() {
    let json = r#"{"crm": {"base_url": "https://crm.example", "auth": {"type": "oauth_client_credentials",
        "token_url": "https://crm.example/token", "client_id": "id", "client_secret": "hunter2"}}}"#;
    let config = switchboard::Config::from_lookup(|k| match k {
        "PANCAKE_ACCESS_TOKEN" => Some("t".into()),
        "INTEGRATIONS" => Some(json.into()),
        _ => None,
    })
    .unwrap();
    assert!(!format!("{config:?}").contains("hunter2"));
    assert!(
        switchboard::Config::from_lookup(|k| match k {
            "PANCAKE_ACCESS_TOKEN" => Some("t".into()),
            "INTEGRATIONS" => Some("{not json".into()),
            _ => None,
        })
        .is_err()
    );
}

#[tokio::test]
async fn an_integration_path_cannot_escape_its_base_url() {
    let s = servers().await;
    let env = TestEnv::with(&[("INTEGRATIONS", &integrations(&s, 0))], None).await;
    for path in ["../admin", "%2e%2e/admin", "..\\admin", "/x?admin=1", "http://127.0.0.1:1/", "./x"] {
        let error = env.app.integrations.execute(&call(path)).await.unwrap_err();
        assert!(error.message.contains("base URL"), "{path}: {error}");
    }
    assert!(s.api.requests().is_empty(), "nothing was called");
}
