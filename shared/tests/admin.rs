//! Caches, admin and cache APIs against the real Redis and Postgres.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{TestEnv, drain, message};
use http::{Method, Request, StatusCode};
use redis::AsyncCommands;
use serde_json::{Value, json};
use switchboard::{App, domain::IncomingMessage, redis::AdmitMode};

const ADMIN: &str = "test-admin-token";

async fn env(vars: &[(&str, &str)]) -> TestEnv {
    let mut all = vec![("ADMIN_ACCESS_TOKEN", ADMIN), ("CONSUMER_BLOCK_MS", "20")];
    all.extend_from_slice(vars);
    TestEnv::with(&all, None).await
}

async fn call(app: &App, method: Method, uri: &str, body: Option<Value>, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let response = switchboard::http::route(app, request.body(body).unwrap()).await;
    (response.status(), serde_json::from_slice(response.body()).unwrap_or(Value::Null))
}

async fn admin(app: &App, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    call(app, method, uri, body, Some(ADMIN)).await
}

async fn metrics(app: &App) -> Value {
    admin(app, Method::GET, "/api/cache/metrics", None).await.1
}

#[tokio::test]
async fn a_second_read_is_served_from_cache_across_instances_and_each_invalidation_makes_the_next_read_miss() {
    let env = env(&[]).await;
    let other = env.app_with(&[]);
    let a = env.app.assistants.resolve(Some("default"), None).await.unwrap();
    let b = other.assistants.resolve(Some("default"), None).await.unwrap();
    assert_eq!(a, b);
    other.cache.flush().await.unwrap();
    let m = metrics(&env.app).await;
    assert_eq!(m["kinds"]["assistant"]["misses"], 1, "{m}");
    assert_eq!(m["kinds"]["assistant"]["hits"], 1, "{m}");

    // One assistant.
    let (code, _) = admin(
        &env.app,
        Method::POST,
        "/api/cache/invalidate",
        Some(json!({"type": "assistant", "assistantId": "default"})),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    other.assistants.resolve(Some("default"), None).await.unwrap();
    other.cache.flush().await.unwrap();
    assert_eq!(metrics(&env.app).await["kinds"]["assistant"]["misses"], 2);
    // Everything.
    env.app.assistants.resolve(Some("default"), None).await.unwrap();
    admin(&env.app, Method::POST, "/api/cache/invalidate", Some(json!({"type": "all"}))).await;
    env.app.assistants.resolve(Some("default"), None).await.unwrap();
    let m = metrics(&env.app).await;
    assert_eq!(m["kinds"]["assistant"]["misses"], 3, "{m}");
    assert_eq!(m["kinds"]["assistant"]["hits"], 2, "{m}");
    assert_eq!(m["target_hit_rate"], 0.8);
}

#[tokio::test]
async fn a_thread_invalidation_clears_the_context_and_the_next_answer_rebuilds_it_from_postgres() {
    let env = env(&[]).await;
    env.post(&message("t1", "m1", "Tôi muốn đặt lịch khám bệnh", 1.0)).await;
    drain(&env.consumer().await).await;
    let (code, body) =
        admin(&env.app, Method::POST, "/api/cache/invalidate", Some(json!({"type": "thread", "threadId": "t1"}))).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["invalidated"]["context_cleared"], true);
    env.post(&message("t1", "m2", "cảm ơn", 2.0)).await;
    let mut conn = env.redis().await;
    let ctx: Vec<String> = conn.zrange(env.keys().conversation(&common::cid("t1")).context(), 0, -1).await.unwrap();
    let ids: Vec<String> = ctx
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap()["message_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.contains(&"m1".to_owned()), "m1 came back from Postgres: {ids:?}");
    assert!(ids.iter().any(|id| id.starts_with("bot:")), "the first answer came back too: {ids:?}");
    assert_eq!(metrics(&env.app).await["kinds"]["thread"]["misses"], 1, "one rebuild from Postgres");
}

#[tokio::test]
async fn repeated_questions_are_answered_from_the_answer_cache_until_the_assistant_changes() {
    let env = env(&[]).await;
    let (_, _, first) = env.post(&message("q1", "m1", "Giá bao nhiêu?", 1.0)).await;
    let (_, _, second) = env.post(&message("q2", "m1", "giá   BAO nhiêu?", 1.0)).await;
    assert!(second["result"]["ai_response"]["cached"].as_bool().unwrap_or(false), "{second}");
    assert_eq!(second["result"]["ai_response"]["response_text"], first["result"]["ai_response"]["response_text"]);
    // Turning the answer cache off for the assistant is honoured at once.
    let (code, _) = admin(
        &env.app,
        Method::PUT,
        "/api/v1/admin/assistants/default",
        Some(json!({
            "name": "Default", "answer_cache_enabled": false, "is_default": true
        })),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let (_, _, third) = env.post(&message("q3", "m1", "Giá bao nhiêu?", 1.0)).await;
    assert!(third["result"]["ai_response"].get("cached").is_none(), "{third}");
}

#[tokio::test]
async fn warm_up_loads_the_named_assistants_and_reports_unknown_ids() {
    let env = env(&[]).await;
    for id in ["shop_a", "shop_b"] {
        let (code, _) =
            admin(&env.app, Method::PUT, &format!("/api/v1/admin/assistants/{id}"), Some(json!({"name": id}))).await;
        assert_eq!(code, StatusCode::CREATED);
    }
    let (code, body) =
        admin(&env.app, Method::POST, "/api/cache/warmup", Some(json!({"assistantIds": ["shop_a", "shop_b", "nope"]})))
            .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["warmed"], json!(["shop_a", "shop_b"]));
    assert_eq!(body["unknown"], json!(["nope"]));
    // Seed 004's own form.
    let (code, body) = admin(
        &env.app,
        Method::POST,
        "/api/cache/metrics",
        Some(json!({"action": "warmup", "assistantIds": ["shop_a"]})),
    )
    .await;
    assert_eq!((code, body["warmed"].clone()), (StatusCode::OK, json!(["shop_a"])));
    let before = metrics(&env.app).await["kinds"]["assistant"]["hits"].as_u64().unwrap();
    env.app.assistants.resolve(Some("shop_b"), None).await.unwrap();
    assert_eq!(metrics(&env.app).await["kinds"]["assistant"]["hits"].as_u64().unwrap(), before + 1);
}

#[tokio::test]
async fn assistants_are_created_read_updated_and_deleted_and_bad_input_is_refused() {
    let env = env(&[]).await;
    let path = "/api/v1/admin/assistants/shop_x";
    let (code, created) = admin(&env.app, Method::PUT, path, Some(json!({
        "name": "Shop X", "system_prompt": "Bán giày", "model": "gpt-4o-mini", "temperature": 0.5,
        "page_ids": ["page_x"], "collect_info_fields": ["phone"], "data_sources": [{"type": "faq", "url": "https://x"}]
    }))).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let version = created["assistant"]["config_version"].as_i64().unwrap();
    let (_, updated) =
        admin(&env.app, Method::PUT, path, Some(json!({"name": "Shop X2", "page_ids": ["page_x"]}))).await;
    assert_eq!(updated["assistant"]["config_version"].as_i64().unwrap(), version + 1);
    let (code, got) = admin(&env.app, Method::GET, path, None).await;
    assert_eq!((code, got["assistant"]["name"].clone()), (StatusCode::OK, json!("Shop X2")));
    // The page now resolves to it.
    assert_eq!(env.app.assistants.resolve(None, Some("page_x")).await.unwrap().id, "shop_x");
    for (body, field) in [
        (json!({"name": ""}), "name"),
        (json!({"name": "a", "temperature": 5}), "temperature"),
        (json!({"name": "a", "page_ids": [1]}), "page_ids"),
        (json!({"name": "a", "answer_cache_enabled": "yes"}), "answer_cache_enabled"),
    ] {
        let (code, err) = admin(&env.app, Method::PUT, path, Some(body)).await;
        assert_eq!((code, err["error"]["field"].clone()), (StatusCode::BAD_REQUEST, json!(field)));
    }
    assert_eq!(admin(&env.app, Method::DELETE, "/api/v1/admin/assistants/default", None).await.0, StatusCode::CONFLICT);
    assert_eq!(admin(&env.app, Method::DELETE, path, None).await.0, StatusCode::OK);
    assert_eq!(admin(&env.app, Method::GET, path, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(env.app.assistants.resolve(None, Some("page_x")).await.unwrap().id, "default");
}

#[tokio::test]
async fn health_is_degraded_without_redis_or_the_ai_and_unhealthy_without_redis_and_postgres() {
    let env = env(&[]).await;
    let (code, body) = admin(&env.app, Method::GET, "/api/v1/admin/health", None).await;
    assert_eq!((code, body["status"].clone()), (StatusCode::OK, json!("healthy")), "{body}");
    assert_eq!(body["supported_action_types"].as_array().unwrap().len(), 7);
    for field in ["timestamp", "statistics", "redis_status", "storage_backend", "stuck_conversations"] {
        assert!(body.get(field).is_some(), "{field}");
    }

    let no_redis = env.app_with(&[("REDIS_URL", "redis://127.0.0.1:1/0")]);
    let (code, body) = admin(&no_redis, Method::GET, "/api/v1/admin/health", None).await;
    assert_eq!((code, body["status"].clone()), (StatusCode::OK, json!("degraded")), "{body}");
    assert_eq!(body["redis_status"], "disconnected");

    let no_ai = env.app_with(&[("AI_SERVICE_URL", "http://127.0.0.1:1/ai")]);
    let (code, body) = admin(&no_ai, Method::GET, "/api/v1/admin/health", None).await;
    assert_eq!((code, body["status"].clone()), (StatusCode::OK, json!("degraded")), "{body}");
    assert_eq!(body["checks"]["ai"]["status"], "unreachable");

    let nothing = env
        .app_with(&[("REDIS_URL", "redis://127.0.0.1:1/0"), ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/test")]);
    let (code, body) = admin(&nothing, Method::GET, "/api/v1/admin/health", None).await;
    assert_eq!((code, body["status"].clone()), (StatusCode::SERVICE_UNAVAILABLE, json!("unhealthy")), "{body}");
}

#[tokio::test]
async fn a_stuck_conversation_appears_in_health_and_cancel_clears_it() {
    let env = env(&[("LOCK_TTL_MS", "100")]).await;
    let stuck = IncomingMessage::parse(message("stuck", "m1", "xin chào", 1.0).to_string().as_bytes(), 65536).unwrap();
    env.app.store.admit(&stuck, "{}", AdmitMode::Sync).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await; // the holder "died"
    let (_, health) = admin(&env.app, Method::GET, "/api/v1/admin/health", None).await;
    assert_eq!(health["statistics"]["stuck_conversations"], 1, "{health}");
    assert_eq!(health["stuck_conversations"][0]["conversation_id"], "stuck");
    assert_eq!(health["stuck_conversations"][0]["reason"], "owed_answers_without_lock");

    let (code, cancel) = admin(&env.app, Method::POST, "/api/v1/admin/conversations/stuck/cancel", None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(cancel["owed_messages"], 1);
    assert_eq!(cancel["owed_answered"], true, "{cancel}");
    let (_, health) = admin(&env.app, Method::GET, "/api/v1/admin/health", None).await;
    assert_eq!(health["statistics"]["stuck_conversations"], 0, "{health}");
}

#[tokio::test]
async fn resume_turns_the_bot_back_on_after_a_human_took_over() {
    let env = env(&[]).await;
    let mut agent = message("r", "a1", "để em hỗ trợ", 1.0);
    agent["sender_type"] = json!("agent");
    env.post(&agent).await;
    assert_eq!(env.post(&message("r", "c1", "alo", 2.0)).await.2["result"]["status"], "bot_paused");
    let (code, body) = admin(&env.app, Method::POST, "/api/v1/admin/conversations/r/resume", None).await;
    assert_eq!((code, body["bot_paused"].clone()), (StatusCode::OK, json!(false)));
    assert_eq!(env.post(&message("r", "c2", "alo?", 3.0)).await.2["result"]["status"], "completed");
}

#[tokio::test]
async fn stats_use_seed_001_names_and_the_conversation_list_pages_and_filters() {
    let env = env(&[]).await;
    for i in 0..5 {
        env.post(&message(&format!("s{i}"), "m1", "xin chào", 1000.0 + i as f64)).await;
    }
    let mut agent = message("s4", "a1", "nhân viên đây", 2000.0);
    agent["sender_type"] = json!("agent");
    env.post(&agent).await;
    drain(&env.consumer().await).await;

    let (code, stats) = admin(&env.app, Method::GET, "/api/v1/admin/stats", None).await;
    assert_eq!(code, StatusCode::OK);
    for field in ["total", "recent", "old", "active_processing"] {
        assert!(stats["conversations"].get(field).is_some(), "conversations.{field}: {stats}");
    }
    for field in ["connected_clients", "used_memory_human", "keyspace_hits", "keyspace_misses"] {
        assert!(stats["redis_stats"].get(field).is_some(), "redis_stats.{field}");
    }
    assert_eq!(stats["storage_backend"], "Redis");
    assert_eq!(stats["conversations"]["total"], 5);

    let (_, page1) = admin(&env.app, Method::GET, "/api/v1/admin/conversations?limit=2", None).await;
    assert_eq!(page1["total_conversations"], 5);
    let ids1: Vec<&str> =
        page1["conversations"].as_array().unwrap().iter().map(|c| c["conversation_id"].as_str().unwrap()).collect();
    assert_eq!(ids1, ["s4", "s3"]);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) =
        admin(&env.app, Method::GET, &format!("/api/v1/admin/conversations?limit=2&cursor={cursor}"), None).await;
    let ids2: Vec<&str> =
        page2["conversations"].as_array().unwrap().iter().map(|c| c["conversation_id"].as_str().unwrap()).collect();
    assert_eq!(ids2, ["s2", "s1"]);
    let first = &page1["conversations"][0];
    for field in ["last_message_id", "last_message_timestamp", "ai_processing", "context_size"] {
        assert!(first.get(field).is_some(), "{field}");
    }
    let (_, paused) = admin(&env.app, Method::GET, "/api/v1/admin/conversations?status=paused", None).await;
    assert_eq!(paused["total_conversations"], 1);
    assert_eq!(
        admin(&env.app, Method::GET, "/api/v1/admin/conversations?status=sleepy", None).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        admin(&env.app, Method::GET, "/api/v1/admin/conversations?cursor=zz", None).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn cleanup_removes_only_redis_state_older_than_the_cutoff() {
    let env = env(&[]).await;
    env.post(&message("old", "m1", "xin chào", 1.0)).await;
    env.post(&message("new", "m1", "xin chào", 1.0)).await;
    drain(&env.consumer().await).await;
    let mut conn = env.redis().await;
    let _: () = conn.hset(env.keys().conversation(&common::cid("old")).state(), "updated_ms", 1_000).await.unwrap();
    let pg_before = env.pg_counts().await;
    let (code, body) = admin(&env.app, Method::POST, "/api/v1/admin/system/cleanup?max_age_hours=1", None).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["conversations_removed"], 1);
    let old_exists: bool = conn.exists(env.keys().conversation(&common::cid("old")).state()).await.unwrap();
    let new_exists: bool = conn.exists(env.keys().conversation(&common::cid("new")).state()).await.unwrap();
    assert!(!old_exists && new_exists);
    assert_eq!(env.pg_counts().await, pg_before, "Postgres is never touched");
    assert_eq!(
        admin(&env.app, Method::POST, "/api/v1/admin/system/cleanup?max_age_hours=-3", None).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn the_cleanup_route_also_answers_at_seed_001s_path_with_the_same_token() {
    let env = env(&[]).await;
    env.post(&message("old", "m1", "xin chào", 1.0)).await;
    let mut conn = env.redis().await;
    let _: () = conn.hset(env.keys().conversation(&common::cid("old")).state(), "updated_ms", 1_000).await.unwrap();
    let (code, _) = call(&env.app, Method::POST, "/admin/system/cleanup?max_age_hours=1", None, None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, body) = admin(&env.app, Method::POST, "/admin/system/cleanup?max_age_hours=1", None).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["conversations_removed"], 1);
}

#[tokio::test]
async fn a_message_admitted_right_after_cleanup_removed_its_conversation_keeps_its_owed_index_entry() {
    let env = env(&[]).await;
    // Answered: nothing owed, no lock, so cleanup may remove it.
    env.post(&message("idle", "m1", "xin chào", 1.0)).await;
    let keys = env.keys().conversation(&common::cid("idle"));
    let late =
        IncomingMessage::parse(message("idle", "m2", "còn đó không?", 2.0).to_string().as_bytes(), 65536).unwrap();
    let store = env.app.store.clone();
    // The admit lands exactly after the removal returned: where the index
    // entry used to be removed by a command of its own, taking this
    // message's entry (added by admit's ZADD NX) with it.
    let (_, removed, _) = store
        .cleanup_observed(switchboard::clock::now_ms() + 60_000, |c| {
            let (store, late) = (&store, &late);
            async move {
                assert_eq!(c.as_str(), "idle");
                store.admit(late, "{}", AdmitMode::Sync).await.unwrap();
            }
        })
        .await
        .unwrap();
    assert_eq!(removed, 1);
    let mut conn = env.redis().await;
    let owed: u64 = conn.zcard(keys.owed()).await.unwrap();
    assert_eq!(owed, 1, "m2 is owed");
    let indexed: Option<f64> = conn.zscore(keys.shard().owed_index(), "idle").await.unwrap();
    assert!(indexed.is_some(), "a conversation with an owed message is in the owed index, where the sweep looks");
    assert_eq!(env.app.store.owed_conversations(u64::MAX, 10).await.unwrap(), ["idle"]);
}

#[tokio::test]
async fn cleanup_finds_the_conversations_of_a_key_prefix_holding_glob_metacharacters() {
    let prefix = format!("test:{}:[x]*?\\:", uuid::Uuid::new_v4().simple());
    let env = env(&[("REDIS_KEY_PREFIX", &prefix)]).await;
    env.post(&message("old", "m1", "xin chào", 1.0)).await;
    let mut conn = env.redis().await;
    let state = env.keys().conversation(&common::cid("old")).state();
    assert!(state.starts_with(&prefix));
    let _: () = conn.hset(&state, "updated_ms", 1_000).await.unwrap();
    let (code, body) = admin(&env.app, Method::POST, "/api/v1/admin/system/cleanup?max_age_hours=1", None).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["conversations_removed"], 1, "{body}");
    let exists: bool = conn.exists(&state).await.unwrap();
    assert!(!exists);
}

#[tokio::test]
async fn every_admin_and_cache_route_refuses_a_missing_or_wrong_token() {
    let env = env(&[]).await;
    for (method, path) in switchboard::openapi::ROUTES {
        if !(path.starts_with("/api/v1/admin") || path.starts_with("/api/cache")) {
            continue;
        }
        let uri = path.replace("{id}", "default");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        for token in [None, Some("test-admin-tokeN"), Some(common::TOKEN)] {
            let (code, _) = call(&env.app, method.clone(), &uri, Some(json!({})), token).await;
            assert_eq!(code, StatusCode::UNAUTHORIZED, "{method} {uri} with {token:?}");
        }
    }
    // Nothing was deleted by the refused calls.
    assert_eq!(env.count("SELECT COUNT(*) FROM assistants WHERE id = 'default'").await, 1);
}

#[tokio::test]
async fn every_route_in_the_table_is_served_by_the_router() {
    let env = env(&[("PANCAKE_WEBHOOK_SECRET", "hook")]).await;
    for (method, path) in switchboard::openapi::ROUTES {
        let uri = path.replace("{id}", "no-such-id");
        let uri = if uri.ends_with("/webhook") { format!("{uri}?token=hook") } else { uri };
        let token = if path.contains("enhanced-handle-message") { common::TOKEN } else { ADMIN };
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let (code, _) = call(&env.app, method.clone(), &uri, Some(json!({})), Some(token)).await;
        // A refusal of the empty body (400), a missing id (404 from a
        // handler, with a body naming it) or a conflict are all answers from
        // the route's handler; the router's own 404/405 is not.
        assert_ne!(code, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        if code == StatusCode::NOT_FOUND {
            assert!(path.contains("{id}"), "{method} {uri} is not routed");
        }
    }
}
