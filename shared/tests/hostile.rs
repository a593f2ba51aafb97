//! Hostile input and hostile integrations (issue 12): each case a probe found
//! against a running gateway, replayed against the real Redis and Postgres,
//! with loopback stub servers for the integration, the AI and Pancake.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, http::header, response::IntoResponse, routing::any};
use common::{Stub, TestEnv, drain, message};
use http::{Method, Request, StatusCode};
use redis::AsyncCommands;
use serde_json::{Map, Value, json};

/// A loopback server answering every request with a redirect to `location`,
/// counting the requests it gets.
async fn redirector(location: String) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let router = Router::new().fallback(any(move || {
        let location = location.clone();
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            (StatusCode::FOUND, [(header::LOCATION, location)], "").into_response()
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://{addr}"), hits)
}

/// A test environment delivering to the `pancake` stub, plus `vars`.
async fn with_pancake(pancake: &Stub, vars: &[(&str, &str)]) -> TestEnv {
    let url = pancake.url();
    let mut all = vec![
        ("PANCAKE_BASE_URL", url.as_str()),
        ("PANCAKE_PAGE_ACCESS_TOKEN", "page-token"),
        ("CONSUMER_BLOCK_MS", "20"),
    ];
    all.extend_from_slice(vars);
    TestEnv::with(&all, None).await
}

fn call(integration: &str, path: &str) -> Map<String, Value> {
    json!({"integration": integration, "method": "GET", "path": path}).as_object().unwrap().clone()
}

#[tokio::test]
async fn an_integration_never_follows_a_redirect_to_another_host_or_outside_its_base() {
    let target = Stub::start(|_| async { (StatusCode::OK, json!({"iam": "secrets"})) }).await;
    let (elsewhere, _) = redirector(format!("{}/latest/meta-data/iam", target.url())).await;
    let (same_host, same_host_hits) = redirector("/outside/base".into()).await;
    let integrations = json!({
        "crm": {"base_url": format!("{elsewhere}/v1")},
        "own": {"base_url": format!("{same_host}/v1"), "auth": {"type": "bearer", "token": "integration-token"}},
    })
    .to_string();
    let env = TestEnv::with(&[("INTEGRATIONS", &integrations)], None).await;
    let error = env.app.integrations.execute(&call("crm", "/orders")).await.unwrap_err();
    assert!(error.message.contains("302") && error.message.contains("not followed"), "{error}");
    let error = env.app.integrations.execute(&call("own", "/orders")).await.unwrap_err();
    assert!(error.message.contains("302"), "{error}");
    assert!(target.requests().is_empty(), "the redirect target was never called");
    assert_eq!(same_host_hits.load(Ordering::SeqCst), 1, "only the first request reached the same host");
}

#[tokio::test]
async fn paths_that_decode_outside_the_base_are_refused_before_any_call() {
    let api = Stub::start(|_| async { (StatusCode::OK, json!({"ok": true})) }).await;
    let integrations = json!({"crm": {"base_url": format!("{}/v1", api.url())}}).to_string();
    let env = TestEnv::with(&[("INTEGRATIONS", &integrations)], None).await;
    for path in ["..;/x", "%252e%252e/x", "%2e%2e%2fadmin", "a/..;/..;/x"] {
        let error = env.app.integrations.execute(&call("crm", path)).await.unwrap_err();
        assert!(error.message.contains("base URL"), "{path}: {error}");
    }
    assert!(api.requests().is_empty());
}

#[tokio::test]
async fn a_huge_integration_answer_is_refused_and_nothing_of_it_is_cached_or_returned() {
    let huge = "x".repeat(3 * 1024 * 1024);
    let api = Stub::start(move |_| {
        let huge = huge.clone();
        async move { (StatusCode::OK, json!({"blob": huge})) }
    })
    .await;
    let integrations = json!({"crm": {"base_url": format!("{}/v1", api.url()), "cache_ttl_seconds": 60}}).to_string();
    let env = TestEnv::with(&[("INTEGRATIONS", &integrations), ("MAX_RESPONSE_BYTES", "1048576")], None).await;
    let error = env.app.integrations.execute(&call("crm", "/big")).await.unwrap_err();
    assert!(error.message.contains("larger than 1048576 bytes"), "{error}");
    let mut conn = env.redis().await;
    let keys = common::scan_keys(&mut conn, env.keys().prefix()).await;
    for key in keys {
        let len: usize = conn.strlen(&key).await.unwrap_or(0);
        assert!(len < 64 * 1024, "{key} holds {len} bytes");
    }
}

#[tokio::test]
async fn a_large_but_allowed_integration_answer_is_stored_cut() {
    let big = "y".repeat(100 * 1024);
    let api = Stub::start(move |_| {
        let big = big.clone();
        async move { (StatusCode::OK, json!({"blob": big})) }
    })
    .await;
    let integrations = json!({"crm": {"base_url": format!("{}/v1", api.url()), "cache_ttl_seconds": 60}}).to_string();
    let env = TestEnv::with(&[("INTEGRATIONS", &integrations)], None).await;
    let stored = env.app.integrations.execute(&call("crm", "/big")).await.unwrap();
    let text = stored.as_str().unwrap();
    assert!(text.len() < 17 * 1024 && text.ends_with("[cut at 16384 bytes]"), "{} bytes", text.len());
}

#[tokio::test]
async fn a_huge_ai_answer_gets_the_fallback_reply_not_an_out_of_memory() {
    let huge = "z".repeat(2 * 1024 * 1024);
    let ai = Stub::start(move |_| {
        let huge = huge.clone();
        async move { (StatusCode::OK, json!({"response_text": huge, "intent": "x", "confidence": 1.0})) }
    })
    .await;
    let env = TestEnv::with(&[("AI_SERVICE_URL", &ai.url()), ("MAX_RESPONSE_BYTES", "65536")], None).await;
    let (status, _, body) = env.post(&message("ai-huge", "m1", "hello", 1.0)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer = &body["result"]["ai_response"];
    assert!(answer["error"].as_str().unwrap().contains("larger than 65536 bytes"), "{answer}");
    assert!(answer["response_text"].as_str().unwrap().len() < 1024);
}

#[tokio::test]
async fn a_customer_cannot_grow_the_context_past_its_entry_and_byte_bounds() {
    let env = TestEnv::with(
        &[
            ("CONTEXT_MAX_MESSAGES", "50"),
            ("CONTEXT_MAX_BYTES", "262144"),
            ("RATE_LIMIT_CONVERSATION_MAX", "0"),
            ("BOT_PAUSE_TTL_SECONDS", "3600"),
        ],
        None,
    )
    .await;
    // A paused conversation is never completed, so only admit can bound it.
    let mut agent = message("grow", "agent-1", "a human takes over", 1.0);
    agent["sender_type"] = json!("agent");
    env.post(&agent).await;
    for i in 0..200 {
        env.post(&message("grow", &format!("m{i}"), "spam", 2.0 + f64::from(i))).await;
    }
    let key = env.keys().conversation(&common::cid("grow")).context();
    let mut conn = env.redis().await;
    let entries: u64 = conn.zcard(&key).await.unwrap();
    assert_eq!(entries, 50);
    let newest: Vec<String> = conn.zrevrange(&key, 0, 0).await.unwrap();
    assert!(newest[0].contains("\"m199\""), "the newest entry stays: {}", newest[0]);

    let big = "x".repeat(60 * 1024);
    for i in 0..20 {
        env.post(&message("grow-bytes", &format!("b{i}"), &big, 1.0 + f64::from(i))).await;
    }
    let key = env.keys().conversation(&common::cid("grow-bytes")).context();
    let members: Vec<String> = conn.zrange(&key, 0, -1).await.unwrap();
    let bytes: usize = members.iter().map(String::len).sum();
    assert!(bytes <= 262_144 + 61 * 1024, "{bytes} bytes in {} entries", members.len());
    assert!(members.iter().any(|m| m.contains("\"b19\"")), "the newest message stays");
}

#[tokio::test]
async fn ids_with_colons_cannot_reach_another_conversations_keys() {
    let env = TestEnv::new().await;
    for suffix in ["state", "ctx", "lock", "owed", "known"] {
        let (status, _, body) = env.post(&message("kx", &format!("foo:{suffix}"), "hi", 1.0)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // The conversation whose keys those message ids used to name still works.
    let (status, _, body) = env.post(&message("kx:seen:foo", "m1", "hello", 1.0)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["status"], "completed", "{body}");
    drain(&env.consumer().await).await;
    assert_eq!(env.count("SELECT COUNT(*) FROM messages WHERE conversation_id IN ('kx', 'kx:seen:foo')").await, 6);
    assert_eq!(env.count("SELECT COUNT(*) FROM ai_responses").await, 6, "each message answered once");
}

#[tokio::test]
async fn a_key_of_the_wrong_type_fails_admit_before_the_dedupe_mark_so_the_retry_is_answered() {
    let env = TestEnv::new().await;
    let keys = env.keys().conversation(&common::cid("typed"));
    let mut conn = env.redis().await;
    let _: () = conn.set(keys.context(), "not a sorted set").await.unwrap();
    let (status, _, _) = env.post(&message("typed", "m1", "hello", 1.0)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let seen: bool = conn.exists(keys.seen(&switchboard::domain::MessageId::parse("m1").unwrap())).await.unwrap();
    assert!(!seen, "no dedupe mark before the failing step");
    let _: () = conn.del(keys.context()).await.unwrap();
    let (status, _, body) = env.post(&message("typed", "m1", "hello", 1.0)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["result"]["status"], "completed", "the retry is answered, not a duplicate: {body}");
}

#[tokio::test]
async fn bad_ids_and_timestamps_get_a_400_naming_the_field_and_change_nothing() {
    let env = TestEnv::new().await;
    let before = (env.redis_dump().await, env.pg_counts().await);
    let cases: Vec<(&str, Value, &str)> = vec![
        ("conversation_id", json!("."), "conversation_id"),
        ("conversation_id", json!(".."), "conversation_id"),
        ("message_id", json!(98_765_432_109_876_543_210_001.0_f64), "message_id"),
        ("timestamp", json!(1e308), "timestamp"),
        ("timestamp", json!(4_000_000_000.0), "timestamp"),
    ];
    for (key, value, field) in cases {
        let mut body = message("c", "m", "hi", 1.0);
        body[key] = value;
        let (status, _, reply) = env.post(&body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{key}: {reply}");
        assert_eq!(reply["error"]["field"], field);
    }
    // Exact integers stay accepted, and two large ones stay distinct.
    let raw = |id: &str| {
        format!(
            r#"{{"conversation_id": "big", "message_id": {id}, "message_content": "hi", "sender_id": "u",
                 "sender_type": "user", "timestamp": 1.0}}"#
        )
        .into_bytes()
    };
    let (status, _, reply) = env.post_raw(Some(common::TOKEN), raw("98765432109876543210001")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert_eq!(before, (env.redis_dump().await, env.pg_counts().await), "the refused requests changed nothing");
    let (status, _, reply) = env.post_raw(Some(common::TOKEN), raw("18446744073709551615")).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
}

#[tokio::test]
async fn webhook_page_ids_and_assignees_are_checked_like_every_id() {
    let env = TestEnv::with(&[("PANCAKE_WEBHOOK_SECRET", "hook")], None).await;
    let messaging = |page: &str| {
        json!({"event_type": "messaging", "page_id": page, "data": {
            "conversation": {"id": "c1", "from": {"id": "cust"}},
            "message": {"id": "m1", "conversation_id": "c1", "message": "hi", "from": {"id": "cust"}}}})
    };
    for page in ["x".repeat(200 * 1024), "y".repeat(20 * 1024), "..".into()] {
        let (status, reply) = env.post_webhook(Some("hook"), messaging(&page).to_string().as_bytes()).await;
        assert!(matches!(status, StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE), "{reply}");
    }
    let conversation = json!({"event_type": "conversation", "page_id": "p1", "data": {"conversation": {
        "id": "c1", "version": 1, "assignee_ids": ["z".repeat(20 * 1024)]}}});
    let (status, reply) = env.post_webhook(Some("hook"), conversation.to_string().as_bytes()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(reply["error"]["field"], "data.conversation.assignee_ids");
    let future = json!({"event_type": "messaging", "page_id": "p1", "data": {
        "conversation": {"id": "c1", "from": {"id": "cust"}},
        "message": {"id": "m2", "conversation_id": "c1", "message": "hi", "from": {"id": "cust"},
                    "inserted_at": "9999-12-31T00:00:00"}}});
    let (status, reply) = env.post_webhook(Some("hook"), future.to_string().as_bytes()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(reply["error"]["field"], "data.message.inserted_at");
    assert!(env.stream().await.is_empty(), "nothing was enqueued");
    let mut conn = env.redis().await;
    assert!(common::scan_keys(&mut conn, env.keys().prefix()).await.iter().all(|k| !k.contains("conv:")));
}

#[tokio::test]
async fn refused_credentials_are_counted_and_name_the_right_credential() {
    let env = TestEnv::with(&[("PANCAKE_WEBHOOK_SECRET", "hook"), ("ADMIN_ACCESS_TOKEN", "adm")], None).await;
    let (status, reply) = env.post_webhook(Some("wrong"), b"{}").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains("token query parameter") && !message.contains("bearer"), "{message}");
    for token in [None, Some("nope")] {
        let mut request = Request::builder().method(Method::GET).uri("/api/v1/admin/stats");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = switchboard::http::route(&env.app, request.body(bytes::Bytes::new()).unwrap()).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let request = Request::builder()
        .method(Method::GET)
        .uri("/api/v1/admin/stats")
        .header("authorization", "Bearer adm")
        .body(bytes::Bytes::new())
        .unwrap();
    let response = switchboard::http::route(&env.app, request).await;
    let stats: Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(stats["security"]["auth_failures"], json!({"webhook": 1, "admin": 2}), "{stats}");
}

#[tokio::test]
async fn the_page_window_says_page_and_a_nul_cursor_names_the_cursor() {
    let env = TestEnv::with(
        &[("RATE_LIMIT_PAGE_MAX", "1"), ("RATE_LIMIT_CONVERSATION_MAX", "0"), ("ADMIN_ACCESS_TOKEN", "adm")],
        None,
    )
    .await;
    env.post(&message("page-a", "m1", "hi", 1.0)).await;
    let (status, _, reply) = env.post(&message("page-b", "m1", "hi", 1.0)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    assert_eq!(reply["result"]["reason"], "page_rate_limit");
    let cursor: String = json!([1.0, "a\u{0}b"]).to_string().bytes().map(|b| format!("{b:02x}")).collect();
    let request = Request::builder()
        .method(Method::GET)
        .uri(format!("/api/v1/admin/conversations?cursor={cursor}"))
        .header("authorization", "Bearer adm")
        .body(bytes::Bytes::new())
        .unwrap();
    let response = switchboard::http::route(&env.app, request).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let reply: Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(reply["error"]["field"], "cursor");
}

#[tokio::test]
async fn delivery_stops_at_its_budget_and_the_consumer_delivers_the_rest_once() {
    let pancake = Stub::start(|_| async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        (StatusCode::OK, json!({"success": true}))
    })
    .await;
    let actions: Vec<Value> =
        (0..10).map(|i| json!({"type": "send_message", "data": {"message": format!("part {i}")}})).collect();
    let ai =
        Stub::start(move |_| {
            let actions = actions.clone();
            async move {
                (StatusCode::OK, json!({"response_text": "", "intent": "x", "confidence": 1.0, "actions": actions}))
            }
        })
        .await;
    let env = with_pancake(&pancake, &[("AI_SERVICE_URL", &ai.url()), ("DELIVERY_BUDGET_MS", "1000")]).await;
    let (status, _, body) = env.post(&message("slow-page", "m1", "hi", 1.0)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let result = &body["result"]["pancake_result"];
    let handed_off = result["actions_handed_off"].as_u64().unwrap_or(0);
    assert!(handed_off > 0, "{result}");
    let consumer = env.consumer().await;
    for _ in 0..20 {
        drain(&consumer).await;
        if env.count("SELECT COUNT(*) FROM message_actions WHERE status = 'sent'").await >= 10 {
            break;
        }
    }
    let mut texts: Vec<String> =
        pancake.requests().iter().map(|r| r.body["message"].as_str().unwrap_or_default().to_owned()).collect();
    texts.sort();
    let mut expected: Vec<String> = (0..10).map(|i| format!("part {i}")).collect();
    expected.sort();
    assert_eq!(texts, expected, "every part sent exactly once");
}

#[tokio::test]
async fn dead_letters_are_kept_in_postgres_bounded_in_redis_and_expire_after_the_retention() {
    let env = TestEnv::with(&[("DEAD_LETTER_STREAM_MAX", "5"), ("DEAD_LETTER_RETENTION_DAYS", "30")], None).await;
    let mut conn = env.redis().await;
    let dead = env.shard0().dead_letters();
    // A letter from long ago (its id is its time: 1970), before the others.
    let _: String = conn.xadd(&dead, "1000-0", &[("error", "ancient")]).await.unwrap();
    for i in 0..3 {
        env.xadd(&[("type", "persist_message"), ("payload", &format!("{{not json {i} +84 912 345 678"))]).await;
    }
    let consumer = env.consumer().await;
    drain(&consumer).await;
    assert_eq!(env.count("SELECT COUNT(*) FROM dead_letters").await, 3, "every letter is in Postgres");
    let ids: Vec<String> = redis::cmd("XRANGE")
        .arg(&dead)
        .arg("-")
        .arg("+")
        .query_async::<Vec<(String, Vec<(String, String)>)>>(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids.len(), 3, "the sweep trimmed the 1970 entry and kept the recent ones: {ids:?}");
    assert!(!ids.contains(&"1000-0".to_owned()));

    // Past the retention: old rows and old stream entries go, recent ones stay.
    env.app
        .db
        .get()
        .await
        .unwrap()
        .execute("UPDATE dead_letters SET created_at = now() - interval '31 days' WHERE payload LIKE '%json 0 %'", &[])
        .await
        .unwrap();
    consumer.sweep().await.unwrap();
    assert_eq!(env.count("SELECT COUNT(*) FROM dead_letters").await, 2);

    // Bounded: more letters than DEAD_LETTER_STREAM_MAX keep the newest five.
    for i in 3..15 {
        env.xadd(&[("type", "persist_message"), ("payload", &format!("{{not json {i}"))]).await;
    }
    drain(&consumer).await;
    let kept: usize = conn.xlen(&dead).await.unwrap();
    assert_eq!(kept, 5, "the dead-letter stream is bounded");
    assert_eq!(env.count("SELECT COUNT(*) FROM dead_letters").await, 14, "and Postgres keeps them all");
}

#[tokio::test]
async fn an_owed_message_keeps_its_text_in_the_context_however_old_its_timestamp() {
    let ai =
        Stub::start(|_| async { (StatusCode::OK, json!({"response_text": "ok", "intent": "x", "confidence": 1.0})) })
            .await;
    let env = TestEnv::with(
        &[("AI_SERVICE_URL", &ai.url()), ("CONTEXT_MAX_MESSAGES", "4"), ("RATE_LIMIT_CONVERSATION_MAX", "0")],
        None,
    )
    .await;
    // Answers are stamped with the server's clock, so they outrank these
    // customer timestamps and fill the context.
    for i in 0..5 {
        env.post(&message("late", &format!("m{i}"), &format!("question {i}"), 1_000.0 + f64::from(i))).await;
    }
    let (status, _, body) = env.post(&message("late", "m5", "the late question", 1_005.0)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let asked = ai.requests().last().unwrap().body.clone();
    assert_eq!(asked["message"], "the late question", "the AI was asked the owed message: {asked}");
}

#[tokio::test]
async fn a_pancake_send_accepted_with_an_oversized_reply_counts_as_sent_and_is_not_resent() {
    let huge = "p".repeat(200 * 1024);
    let pancake = Stub::start(move |_| {
        let huge = huge.clone();
        async move { (StatusCode::OK, json!({"success": true, "id": "pm1", "padding": huge})) }
    })
    .await;
    let env = with_pancake(&pancake, &[("MAX_RESPONSE_BYTES", "65536")]).await;
    let (_, _, body) = env.post(&message("oversized-reply", "m1", "hi", 1.0)).await;
    assert_eq!(body["result"]["pancake_result"]["results"][0]["status"], "sent", "{body}");
    drain(&env.consumer().await).await;
    assert_eq!(pancake.requests().len(), 1, "sent once, never retried");
}

#[tokio::test]
async fn a_busy_send_mark_never_dead_letters_the_delivery_that_waits_for_it() {
    // Pancake fails the first real attempt (503), then accepts: the wait
    // must not have spent the retry budget that attempt needs.
    let pancake = common::pancake::PancakeStub::start(|n| {
        if n == 0 { common::pancake::Reply::Refuse(503) } else { common::pancake::Reply::Accept }
    })
    .await;
    let env = with_pancake(
        &pancake.stub,
        &[("CONSUMER_MAX_DELIVERIES", "2"), ("CONSUMER_CLAIM_IDLE_MS", "50"), ("UNKNOWN_OUTCOME_GRACE_MS", "0")],
    )
    .await;
    let conversation = common::cid("busy");
    let action_id = uuid::Uuid::new_v4();
    // A holder that died mid-send left its mark; it expires in a second.
    let mark = env.keys().conversation(&conversation).send_mark(&action_id);
    let mut conn = env.redis().await;
    let _: () = conn.set_ex(&mark, "sending", 1).await.unwrap();
    let job = json!({
        "response_id": uuid::Uuid::new_v4(), "conversation_id": "busy", "page_id": "page_1", "fence": 1, "attempt": 1,
        "action": {"action_id": action_id, "type": "send_message", "data": {"message": "hello"}},
    });
    let shard = env.keys().shard(env.keys().shard_of(&conversation));
    let _: String =
        conn.xadd(shard.jobs(), "*", &[("type", "deliver_action"), ("payload", &job.to_string())]).await.unwrap();
    let consumer = env.consumer().await;
    for _ in 0..60 {
        consumer.step().await.unwrap();
        if pancake.delivered().len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(pancake.sends(), 2, "one transient failure, then delivered, once the mark expired");
    assert_eq!(pancake.delivered().len(), 1);
    let dead: usize = conn.xlen(shard.dead_letters()).await.unwrap();
    assert_eq!(dead, 0, "waiting for a busy mark is not a failure");
}

#[tokio::test]
async fn a_retried_delivery_recording_cannot_release_a_mark_taken_since() {
    let env = TestEnv::new().await;
    let conversation = common::cid("recorded");
    let action_id = uuid::Uuid::new_v4();
    let mark = env.keys().conversation(&conversation).send_mark(&action_id);
    let jobs = [("deliver_action", "{}")];
    env.app
        .store
        .record_delivery(&conversation, "token-1", &[], &jobs, &[(action_id, switchboard::redis::MarkAfter::Free)])
        .await
        .unwrap();
    // The consumer delivered the handed-off action meanwhile.
    let mut conn = env.redis().await;
    let _: () = conn.set(&mark, "sent").await.unwrap();
    // The first attempt's reply was lost: the holder retries with the same token.
    env.app
        .store
        .record_delivery(&conversation, "token-1", &[], &jobs, &[(action_id, switchboard::redis::MarkAfter::Free)])
        .await
        .unwrap();
    let value: Option<String> = conn.get(&mark).await.unwrap();
    assert_eq!(value.as_deref(), Some("sent"), "the retry released nothing");
    let shard = env.keys().shard(env.keys().shard_of(&conversation));
    let entries: usize = conn.xlen(shard.jobs()).await.unwrap();
    assert_eq!(entries, 1, "and enqueued nothing twice");
}
