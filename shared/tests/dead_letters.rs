//! Operators' recovery routes against the real Redis and Postgres: dead
//! letters listed and replayed (exactly once, run again by the consumer),
//! and actions listed by status (above all those whose outcome is unknown).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{TestEnv, drain};
use http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use switchboard::{
    App,
    postgres::dead_letters::{self, DeadLetter},
};

const ADMIN: &str = "test-admin-token";

async fn env(vars: &[(&str, &str)]) -> TestEnv {
    let mut all = vec![("ADMIN_ACCESS_TOKEN", ADMIN), ("CONSUMER_BLOCK_MS", "20")];
    all.extend_from_slice(vars);
    TestEnv::with(&all, None).await
}

async fn call(app: &App, method: Method, uri: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = switchboard::http::route(app, request.body(Bytes::new()).unwrap()).await;
    (response.status(), serde_json::from_slice(response.body()).unwrap_or(Value::Null))
}

async fn get(app: &App, uri: &str) -> (StatusCode, Value) {
    call(app, Method::GET, uri, Some(ADMIN)).await
}

async fn replay(app: &App, id: i64) -> (StatusCode, Value) {
    call(app, Method::POST, &format!("/api/v1/admin/dead-letters/{id}/replay"), Some(ADMIN)).await
}

fn persist(conversation: &str, id: &str) -> String {
    json!({
        "conversation_id": conversation, "message_id": id, "sender_id": "customer_1", "sender_type": "user",
        "content": "cho em hỏi giá", "timestamp": 1000.0, "metadata": {}, "page_id": "page_1", "received_at": 1000.0
    })
    .to_string()
}

/// Records a dead letter as the consumer does; returns its id.
async fn record(env: &TestEnv, stream_id: &str, job_type: Option<&str>, payload: Option<&str>) -> i64 {
    let letter = DeadLetter {
        shard: 0,
        stream_id: stream_id.into(),
        job_type: job_type.map(Into::into),
        payload: payload.map(Into::into),
        outcome: None,
        error: "boom".into(),
        deliveries: 5,
    };
    dead_letters::record(&**env.app.db.get().await.unwrap(), &letter).await.unwrap();
    env.count(&format!("SELECT id FROM dead_letters WHERE stream_id = '{stream_id}'")).await
}

fn ids(page: &Value, list: &str, field: &str) -> Vec<Value> {
    page[list].as_array().unwrap().iter().map(|l| l[field].clone()).collect()
}

#[tokio::test]
async fn dead_letters_are_listed_newest_first_in_pages_with_json_payloads_parsed() {
    let env = env(&[]).await;
    for i in 0..4 {
        env.xadd(&[("type", "persist_message"), ("payload", &format!("{{not json {i}"))]).await;
    }
    env.xadd(&[("type", "launch_rocket"), ("payload", r#"{"stage": 2}"#)]).await;
    drain(&env.consumer().await).await;

    let (code, first) = get(&env.app, "/api/v1/admin/dead-letters?limit=2").await;
    assert_eq!(code, StatusCode::OK, "{first}");
    assert_eq!(first["total"], 5);
    let newest = &first["dead_letters"][0];
    assert_eq!(newest["job_type"], "launch_rocket");
    assert_eq!(newest["payload"], json!({"stage": 2}), "JSON payloads are parsed");
    assert!(newest["error"].as_str().unwrap().contains("unknown job type"), "{newest}");
    for field in ["id", "shard", "stream_id", "deliveries", "created_at"] {
        assert!(!newest[field].is_null(), "{field}: {newest}");
    }
    assert!(newest.get("replayed_at").is_none());
    assert_eq!(first["dead_letters"][1]["payload"], "{not json 3", "a payload that is not JSON is a string");

    let mut seen = ids(&first, "dead_letters", "id");
    let mut before = first["next_before"].clone();
    while let Some(cursor) = before.as_i64() {
        let (_, page) = get(&env.app, &format!("/api/v1/admin/dead-letters?limit=2&before={cursor}")).await;
        seen.extend(ids(&page, "dead_letters", "id"));
        before = page["next_before"].clone();
    }
    let seen: Vec<i64> = seen.iter().map(|v| v.as_i64().unwrap()).collect();
    assert_eq!(seen.len(), 5, "every letter once: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "newest first: {seen:?}");
}

#[tokio::test]
async fn a_replayed_message_is_enqueued_exactly_once_and_stored_by_the_consumer() {
    let env = env(&[("CONSUMER_CLAIM_IDLE_MS", "20"), ("CONSUMER_MAX_DELIVERIES", "1")]).await;
    let db = env.app.db.get().await.unwrap();
    // A bug that makes one message unwritable: it is dead-lettered.
    db.batch_execute("ALTER TABLE messages ADD CONSTRAINT bug CHECK (message_id <> 'poison')").await.unwrap();
    env.xadd(&[("type", "persist_message"), ("outcome", "rate_limited"), ("payload", &persist("dl", "poison"))]).await;
    let consumer = env.consumer().await;
    for _ in 0..50 {
        if consumer.step().await.unwrap().dead_lettered > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let (_, listed) = get(&env.app, "/api/v1/admin/dead-letters").await;
    let id = listed["dead_letters"][0]["id"].as_i64().expect("dead-lettered");
    assert_eq!(listed["dead_letters"][0]["outcome"], "rate_limited");
    assert_eq!(env.count("SELECT COUNT(*) FROM messages").await, 0);

    // The bug is fixed; the operator replays the letter, twice.
    db.batch_execute("ALTER TABLE messages DROP CONSTRAINT bug").await.unwrap();
    let entries = env.stream().await.len();
    let (code, body) = replay(&env.app, id).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["job_type"], "persist_message");
    let (code, again) = replay(&env.app, id).await;
    assert_eq!(code, StatusCode::CONFLICT, "{again}");
    assert!(again["error"]["message"].as_str().unwrap().contains("already replayed"));
    assert_eq!(env.stream().await.len(), entries + 1, "one stream entry for two replays");

    drain(&consumer).await;
    let row = env.row("SELECT admit_outcome FROM messages WHERE message_id = 'poison'").await;
    assert_eq!(row.get::<_, String>(0), "rate_limited", "the message is stored with its admit outcome");
    assert_eq!(env.count("SELECT total_messages FROM conversations WHERE conversation_id = 'dl'").await, 1);
    let (_, listed) = get(&env.app, "/api/v1/admin/dead-letters").await;
    let letter = &listed["dead_letters"][0];
    assert!(letter["replayed_at"].as_f64().is_some(), "{letter}");
    assert_eq!(letter["replay_stream_id"], body["replay_stream_id"]);
}

#[tokio::test]
async fn two_replays_of_one_letter_at_once_enqueue_one_job() {
    let env = env(&[]).await;
    let id = record(&env, "1-0", Some("persist_message"), Some(&persist("r", "m1"))).await;
    let other = env.app_with(&[]);
    let (a, b) = tokio::join!(replay(&env.app, id), replay(&other, id));
    let mut codes = [a.0, b.0];
    codes.sort();
    assert_eq!(codes, [StatusCode::OK, StatusCode::CONFLICT], "{a:?} {b:?}");
    assert_eq!(env.stream().await.len(), 1);
}

#[tokio::test]
async fn a_replay_whose_enqueue_fails_is_unmarked_and_can_be_retried() {
    let env = env(&[]).await;
    let id = record(&env, "1-0", Some("persist_message"), Some(&persist("r", "m1"))).await;
    let no_redis = env.app_with(&[("REDIS_URL", "redis://127.0.0.1:1/0")]);
    let (code, body) = replay(&no_redis, id).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        env.count(&format!("SELECT COUNT(*) FROM dead_letters WHERE id = {id} AND replayed_at IS NULL")).await,
        1
    );
    assert_eq!(replay(&env.app, id).await.0, StatusCode::OK);
    assert_eq!(env.stream().await.len(), 1);
}

#[tokio::test]
async fn a_replay_interrupted_between_its_mark_and_its_enqueue_can_be_replayed_once_the_mark_is_stale() {
    let env = env(&[]).await;
    let id = record(&env, "1-0", Some("persist_message"), Some(&persist("r", "m1"))).await;
    let db = env.app.db.get().await.unwrap();
    // Marked a moment ago, never confirmed: maybe still in flight.
    db.execute("UPDATE dead_letters SET replayed_at = now() WHERE id = $1", &[&id]).await.unwrap();
    assert_eq!(replay(&env.app, id).await.0, StatusCode::CONFLICT);
    // Marked two minutes ago and never confirmed: its process died.
    db.execute("UPDATE dead_letters SET replayed_at = now() - interval '2 minutes' WHERE id = $1", &[&id])
        .await
        .unwrap();
    let (code, body) = replay(&env.app, id).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(env.stream().await.len(), 1);
}

#[tokio::test]
async fn a_dead_letter_the_consumer_cannot_run_is_refused_with_its_reason_and_left_unreplayed() {
    let env = env(&[]).await;
    let unknown = record(&env, "1-0", Some("launch_rocket"), Some("{}")).await;
    let no_payload = record(&env, "2-0", Some("persist_message"), None).await;
    let no_type = record(&env, "3-0", None, Some("{}")).await;
    let unparseable = record(&env, "4-0", Some("persist_message"), Some("{not json")).await;
    let bad_conversation = record(&env, "5-0", Some("persist_message"), Some(&persist("", "m1"))).await;
    for (id, reason) in [
        (unknown, "unknown job type"),
        (no_payload, "no payload"),
        (no_type, "no job type"),
        (unparseable, "unparseable payload"),
        (bad_conversation, "conversation_id"),
    ] {
        let (code, body) = replay(&env.app, id).await;
        assert_eq!(code, StatusCode::CONFLICT, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(reason), "{reason}: {body}");
    }
    assert_eq!(replay(&env.app, 999_999).await.0, StatusCode::NOT_FOUND);
    for id in ["abc", "0", "-4", "99999999999999999999"] {
        let (code, body) =
            call(&env.app, Method::POST, &format!("/api/v1/admin/dead-letters/{id}/replay"), Some(ADMIN)).await;
        assert_eq!((code, body["error"]["field"].clone()), (StatusCode::BAD_REQUEST, json!("id")), "{id}");
    }
    assert_eq!(env.count("SELECT COUNT(*) FROM dead_letters WHERE replayed_at IS NOT NULL").await, 0);
    assert!(env.stream().await.is_empty(), "nothing was enqueued");
}

#[tokio::test]
async fn bad_listing_parameters_get_400_naming_the_field_and_no_token_gets_401() {
    let env = env(&[]).await;
    for (uri, field) in [
        ("/api/v1/admin/dead-letters?limit=0", "limit"),
        ("/api/v1/admin/dead-letters?limit=501", "limit"),
        ("/api/v1/admin/dead-letters?limit=ten", "limit"),
        ("/api/v1/admin/dead-letters?before=0", "before"),
        ("/api/v1/admin/dead-letters?before=x", "before"),
        ("/api/v1/admin/actions", "status"),
        ("/api/v1/admin/actions?status=sent", "status"),
        ("/api/v1/admin/actions?status=unknown&limit=-1", "limit"),
        ("/api/v1/admin/actions?status=unknown&before=12", "before"),
        (
            "/api/v1/admin/actions?status=unknown&before=99999999999999999999_00000000-0000-0000-0000-000000000000",
            "before",
        ),
    ] {
        let (code, body) = get(&env.app, uri).await;
        assert_eq!((code, body["error"]["field"].clone()), (StatusCode::BAD_REQUEST, json!(field)), "{uri}: {body}");
    }
    for uri in ["/api/v1/admin/dead-letters", "/api/v1/admin/actions?status=unknown"] {
        assert_eq!(call(&env.app, Method::GET, uri, None).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(call(&env.app, Method::GET, uri, Some(common::TOKEN)).await.0, StatusCode::UNAUTHORIZED);
    }
    let id = record(&env, "1-0", Some("persist_message"), Some(&persist("r", "m1"))).await;
    let uri = format!("/api/v1/admin/dead-letters/{id}/replay");
    assert_eq!(call(&env.app, Method::POST, &uri, None).await.0, StatusCode::UNAUTHORIZED);
    assert!(env.stream().await.is_empty(), "a refused replay enqueues nothing");
}

#[tokio::test]
async fn actions_are_listed_by_status_most_recently_changed_first_in_pages() {
    let env = env(&[]).await;
    let db = env.app.db.get().await.unwrap();
    // Three actions whose outcome is unknown (changed 1, 2 and 3 minutes
    // ago), one failed, one sent.
    for (i, status) in ["unknown", "unknown", "unknown", "failed", "sent"].iter().enumerate() {
        db.execute(
            "INSERT INTO message_actions (id, response_id, conversation_id, action_type, action_data, status,
                                          last_error, updated_at)
             VALUES (gen_random_uuid(), gen_random_uuid(), $1, 'execute_api', $2, $3, 'timed out',
                     now() - make_interval(mins => $4))",
            &[
                &format!("c{i}"),
                &json!({"integration": "crm", "path": format!("/orders/{i}")}),
                status,
                &(i as i32 + 1),
            ],
        )
        .await
        .unwrap();
    }
    let (code, first) = get(&env.app, "/api/v1/admin/actions?status=unknown&limit=2").await;
    assert_eq!(code, StatusCode::OK, "{first}");
    assert_eq!(ids(&first, "actions", "conversation_id"), [json!("c0"), json!("c1")]);
    let action = &first["actions"][0];
    assert_eq!(action["action_type"], "execute_api");
    assert_eq!(action["data"]["path"], "/orders/0");
    assert_eq!(action["last_error"], "timed out");
    for field in ["action_id", "response_id", "updated_at"] {
        assert!(!action[field].is_null(), "{field}: {action}");
    }
    let cursor = first["next_before"].as_str().unwrap();
    let (_, second) = get(&env.app, &format!("/api/v1/admin/actions?status=unknown&limit=2&before={cursor}")).await;
    assert_eq!(ids(&second, "actions", "conversation_id"), [json!("c2")]);
    assert!(second["next_before"].is_null());
    let (_, failed) = get(&env.app, "/api/v1/admin/actions?status=failed").await;
    assert_eq!(ids(&failed, "actions", "conversation_id"), [json!("c3")]);
}
