//! Processing semantics beyond the happy path: restarts, pauses, rate limits,
//! late messages, AI providers and failures, and the Postgres schema.
#![allow(clippy::unwrap_used)]

mod common;

use std::{sync::Arc, time::Duration};

use common::{Stub, TestEnv, message, pancake_stub};
use futures::{FutureExt, future::BoxFuture};
use http::StatusCode;
use redis::AsyncCommands;
use serde_json::{Value, json};
use switchboard::ai::{AiAnswer, AiError, AiProvider, AiRequest, embedded};

/// An AI that takes `delay` per call, so other messages can arrive meanwhile.
#[derive(Debug)]
struct Slow(Duration);

impl AiProvider for Slow {
    fn answer<'a>(&'a self, request: AiRequest<'a>) -> BoxFuture<'a, Result<AiAnswer, AiError>> {
        async move {
            tokio::time::sleep(self.0).await;
            Ok(embedded::respond(&request.pending_text()))
        }
        .boxed()
    }
}

fn of_kind(stream: &[(String, Option<String>, Value)], kind: &str) -> Vec<Value> {
    stream.iter().filter(|(k, _, _)| k == kind).map(|(_, _, p)| p.clone()).collect()
}

#[tokio::test]
async fn a_message_arriving_during_the_ai_call_restarts_with_the_fuller_context() {
    let env = Arc::new(TestEnv::with(&[], Some(Arc::new(Slow(Duration::from_millis(150))))).await);
    let first = {
        let env = env.clone();
        tokio::spawn(async move { env.post(&message("c", "m1", "xin chào", 1.0)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (_, _, second) = env.post(&message("c", "m2", "cho mình hỏi giá", 2.0)).await;
    assert_eq!(second["result"]["status"], "locked");
    assert_eq!(second["result"]["reason"], "processing_in_progress");
    let (_, _, first) = first.await.unwrap();
    let result = &first["result"];
    assert_eq!(result["status"], "completed", "{first}");
    assert_eq!(result["restarts"], 1);
    assert_eq!(result["covered_message_ids"], json!(["m1", "m2"]));
    // The burst reads as one message: the pricing question wins over the greeting.
    assert_eq!(result["ai_response"]["intent"], "pricing");
    // Only the delivered answer is enqueued, not the discarded first draft.
    assert_eq!(of_kind(&env.stream().await, "persist_answer").len(), 1);
}

#[tokio::test]
async fn once_the_restart_budget_is_spent_the_answer_is_delivered_and_newer_messages_stay_owed() {
    let env = Arc::new(TestEnv::with(&[("MAX_RESTARTS", "0")], Some(Arc::new(Slow(Duration::from_millis(150))))).await);
    let first = {
        let env = env.clone();
        tokio::spawn(async move { env.post(&message("c", "m1", "xin chào", 1.0)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    env.post(&message("c", "m2", "giá bao nhiêu", 2.0)).await;
    let (status, _, body) = first.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let result = &body["result"];
    assert_eq!(result["status"], "restart_needed", "{body}");
    assert_eq!(result["newer_messages"], json!([{"message_id": "m2", "timestamp": 2.0}]));
    let current = &result["current_result"];
    for field in ["ai_response", "extracted_actions", "pancake_result"] {
        assert!(!current[field].is_null(), "current_result.{field} missing");
    }
    assert_eq!(current["covered_message_ids"], json!(["m1"]));
    // The owed message is handed to the background re-drive.
    let stream = env.stream().await;
    let redrive = of_kind(&stream, "redrive_conversation");
    assert_eq!(redrive.len(), 1);
    assert_eq!(redrive[0]["conversation_id"], "c");
    // And it is still owed: the next admitted message's answer covers both.
    let (_, _, third) = env.post(&message("c", "m3", "alo", 3.0)).await;
    assert_eq!(third["result"]["covered_message_ids"], json!(["m2", "m3"]));
}

#[tokio::test]
async fn a_late_message_is_inserted_into_the_context_in_timestamp_order() {
    let env = TestEnv::new().await;
    env.post(&message("late", "m2", "second", 20.0)).await;
    env.post(&message("late", "m1", "first, delivered late", 10.0)).await;
    let mut conn = env.redis().await;
    let ctx: Vec<String> = conn.zrange(env.keys().conversation(&common::cid("late")).context(), 0, -1).await.unwrap();
    let ids: Vec<String> = ctx
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap()["message_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids[0], "m1");
    assert_eq!(ids[1], "m2");
    // The "last message" of the conversation does not move backwards.
    let last: String =
        conn.hget(env.keys().conversation(&common::cid("late")).state(), "last_message_id").await.unwrap();
    assert_eq!(last, "m2");
}

#[tokio::test]
async fn an_agent_message_pauses_the_bot_and_later_customer_messages_are_stored_unanswered() {
    let env = TestEnv::new().await;
    let mut agent = message("p", "a1", "Chào chị, em là nhân viên shop", 1.0);
    agent["sender_type"] = json!("agent");
    let (_, _, body) = env.post(&agent).await;
    assert_eq!(body["result"]["status"], "bot_paused");
    let (_, _, body) = env.post(&message("p", "c1", "giá bao nhiêu?", 2.0)).await;
    assert_eq!(body["result"]["status"], "bot_paused");
    let stream = env.stream().await;
    let outcomes: Vec<Option<String>> = stream.iter().map(|(_, outcome, _)| outcome.clone()).collect();
    assert_eq!(outcomes, [Some("bot_paused".into()), Some("bot_paused".into())]);
    assert!(of_kind(&stream, "persist_answer").is_empty());
}

#[tokio::test]
async fn transfer_to_agent_pauses_the_bot_and_assigns_in_pancake_when_configured() {
    let pancake = pancake_stub().await;
    let env = TestEnv::with(
        &[
            ("PANCAKE_BASE_URL", &pancake.url()),
            ("PANCAKE_PAGE_ACCESS_TOKEN", "pt"),
            ("PANCAKE_ASSIGN_USER_IDS", "staff_1,staff_2"),
        ],
        None,
    )
    .await;
    let (_, _, body) = env.post(&message("t", "m1", "cho mình gặp nhân viên", 1.0)).await;
    let result = &body["result"];
    assert_eq!(result["ai_response"]["intent"], "human_handoff");
    assert_eq!(result["pancake_result"]["actions_executed"], 2, "{body}");
    let calls = pancake.requests();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].path, "/pages/page_1/conversations/t/assign");
    assert_eq!(calls[1].body, json!({"assignee_ids": ["staff_1", "staff_2"]}));
    let (_, _, next) = env.post(&message("t", "m2", "alo?", 2.0)).await;
    assert_eq!(next["result"]["status"], "bot_paused");
}

#[tokio::test]
async fn past_the_rate_limit_a_message_is_stored_owed_and_answered_once_the_window_reopens_without_a_resend() {
    let env = TestEnv::with(
        &[("RATE_LIMIT_CONVERSATION_MAX", "2"), ("RATE_LIMIT_WINDOW_SECONDS", "1"), ("LOCK_TTL_MS", "30")],
        None,
    )
    .await;
    for i in 0..2 {
        let (status, _, _) = env.post(&message("rl", &format!("m{i}"), "hi", i as f64)).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, headers, body) = env.post(&message("rl", "m2", "hi again", 3.0)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(!headers.contains_key("retry-after"), "nothing invites a resend");
    assert_eq!(body["result"]["status"], "rate_limited");
    assert_eq!(body["result"]["resend"], false);
    assert_eq!(body["result"]["will_be_answered"], true);
    let stream = env.stream().await;
    let limited: Vec<_> = stream.iter().filter(|(_, o, _)| o.as_deref() == Some("rate_limited")).collect();
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].2["message_id"], "m2");
    // A resend changes nothing.
    let (status, _, again) = env.post(&message("rl", "m2", "hi again", 3.0)).await;
    assert_eq!((status, again["result"]["status"].as_str()), (StatusCode::OK, Some("duplicate")));
    // Nothing else arrives: once the window reopens, the sweep answers it.
    let consumer = env.consumer().await;
    consumer.sweep().await.unwrap();
    let answered = |stream: &[(String, Option<String>, Value)]| {
        stream.iter().filter(|(k, _, p)| k == "persist_answer" && p["covered_message_ids"] == json!(["m2"])).count()
    };
    assert_eq!(answered(&env.stream().await), 0, "not before the window reopens");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    consumer.sweep().await.unwrap();
    assert_eq!(answered(&env.stream().await), 1, "answered once the window reopened, without a resend");
    consumer.sweep().await.unwrap();
    assert_eq!(answered(&env.stream().await), 1, "and only once");
}

#[tokio::test]
async fn a_slow_ai_service_times_out_into_the_fallback_reply_with_the_error_recorded() {
    let ai = Stub::start(|_| async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        (StatusCode::OK, json!({"response_text": "too late"}))
    })
    .await;
    let env = TestEnv::with(
        &[("AI_SERVICE_URL", &ai.url()), ("AI_SERVICE_TIMEOUT", "0.2"), ("AI_FALLBACK_REPLY", "Xin lỗi, chờ chút nhé")],
        None,
    )
    .await;
    let (status, _, body) = env.post(&message("slow", "m1", "hello", 1.0)).await;
    assert_eq!(status, StatusCode::OK);
    let ai_response = &body["result"]["ai_response"];
    assert_eq!(ai_response["response_text"], "Xin lỗi, chờ chút nhé");
    assert_eq!(ai_response["model_used"], "fallback");
    assert!(ai_response["error"].as_str().unwrap().contains("did not answer"));
    let answers = of_kind(&env.stream().await, "persist_answer");
    assert!(answers[0]["ai_response"]["error"].is_string());
}

#[tokio::test]
async fn the_http_provider_posts_the_assistant_and_context_and_its_actions_are_validated() {
    let ai = Stub::start(|_| async {
        (StatusCode::OK, json!({
            "ai_response": {"response_text": "Mời bạn chọn", "intent": "menu", "confidence": 0.8, "entities": {}, "model_used": "gpt-4"},
            "actions": [
                {"type": "send_quick_replies", "data": {"message": "Mời bạn chọn", "quick_replies": ["Áo", "Quần"]}},
                {"type": "self_destruct", "data": {}}
            ]
        }))
    })
    .await;
    let env = TestEnv::with(&[("AI_SERVICE_URL", &format!("{}/v1/answer", ai.url()))], None).await;
    let (_, _, body) = env.post(&message("h", "m1", "menu?", 1.0)).await;
    let result = &body["result"];
    assert_eq!(result["ai_response"]["model_used"], "gpt-4");
    assert_eq!(result["extracted_actions"][0]["type"], "send_quick_replies");
    assert_eq!(result["rejected_actions"][0]["type"], "self_destruct");
    let calls = ai.requests();
    assert_eq!(calls[0].path, "/v1/answer");
    assert_eq!(calls[0].body["assistant"]["id"], "default");
    assert_eq!(calls[0].body["message"], "menu?");
    assert_eq!(calls[0].body["context"][0]["content"], "menu?");
}

#[tokio::test]
async fn the_openai_provider_sends_chat_completions_and_reads_json_or_plain_text() {
    let ai = Stub::start(|request| async move {
        let last = request.body["messages"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap().to_owned();
        let content = if last.contains("json") {
            json!({"response_text": "Dạ có ạ", "intent": "stock", "confidence": 0.7}).to_string()
        } else {
            "Plain answer".to_owned()
        };
        (
            StatusCode::OK,
            json!({"model": "gpt-4o-mini", "choices": [{"message": {"role": "assistant", "content": content}}]}),
        )
    })
    .await;
    let base = format!("{}/v1", ai.url());
    let env = TestEnv::with(
        &[("OPENAI_BASE_URL", &base), ("OPENAI_API_KEY", "sk-test"), ("OPENAI_MODEL", "gpt-4o-mini")],
        None,
    )
    .await;
    let (_, _, body) = env.post(&message("o", "m1", "please answer in json", 1.0)).await;
    assert_eq!(body["result"]["ai_response"]["intent"], "stock", "{body}");
    let (_, _, body) = env.post(&message("o2", "m1", "plain please", 1.0)).await;
    assert_eq!(body["result"]["ai_response"]["response_text"], "Plain answer");
    let calls = ai.requests();
    assert_eq!(calls[0].path, "/v1/chat/completions");
    assert_eq!(calls[0].body["model"], "gpt-4o-mini");
    assert_eq!(calls[0].body["messages"][0]["role"], "system");
}

#[tokio::test]
async fn a_failing_pancake_is_reported_and_the_failure_enqueued_for_retry() {
    let pancake = Stub::start(|_| async { (StatusCode::SERVICE_UNAVAILABLE, json!({"success": false})) }).await;
    let env = TestEnv::with(&[("PANCAKE_BASE_URL", &pancake.url()), ("PANCAKE_PAGE_ACCESS_TOKEN", "pt")], None).await;
    let (status, _, body) = env.post(&message("f", "m1", "hi", 1.0)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["result"]["pancake_result"]["status"], "failed");
    let results = of_kind(&env.stream().await, "action_results");
    assert_eq!(results[0]["results"][0]["status"], "failed");
    assert_eq!(results[0]["results"][0]["retryable"], true);
    // The page token never appears in what is stored.
    assert!(!results[0].to_string().contains("page_access_token"));
}

#[tokio::test]
async fn with_redis_unreachable_the_request_gets_503_and_postgres_is_untouched() {
    let env = TestEnv::with(&[("REDIS_URL", "redis://127.0.0.1:1/0")], None).await;
    let before = env.pg_counts().await;
    let (status, headers, body) = env.post(&message("down", "m1", "hi", 1.0)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(body["error"]["message"], "redis is unavailable");
    assert_eq!(env.pg_counts().await, before);
}

#[tokio::test]
async fn migrations_apply_once_and_the_seed_monitoring_queries_run_as_written() {
    let env = TestEnv::new().await;
    env.app.migrate().await.unwrap(); // a second run is a no-op
    let client = env.app.db.get().await.unwrap();
    client
        .query(
            "SELECT conversation_id, last_message_timestamp, total_messages
FROM conversations
ORDER BY last_message_timestamp DESC
LIMIT 10;",
            &[],
        )
        .await
        .unwrap();
    client
        .query("SELECT action_type, COUNT(*), AVG(retry_count)\nFROM message_actions\nGROUP BY action_type;", &[])
        .await
        .unwrap();
    let default: i64 = client.query_one("SELECT COUNT(*) FROM assistants WHERE is_default", &[]).await.unwrap().get(0);
    assert_eq!(default, 1);
    // The unique key that makes message writes idempotent.
    let insert = "INSERT INTO messages (conversation_id, message_id, sender_id, sender_type, content, timestamp)
                  VALUES ('c', 'm', 'u', 'user', 'x', 1) ON CONFLICT (conversation_id, message_id) DO NOTHING";
    assert_eq!(client.execute(insert, &[]).await.unwrap(), 1);
    assert_eq!(client.execute(insert, &[]).await.unwrap(), 0);
}

#[tokio::test]
async fn the_page_id_falls_back_to_the_assistants_page() {
    let pancake = pancake_stub().await;
    let env = TestEnv::with(&[("PANCAKE_BASE_URL", &pancake.url()), ("PANCAKE_PAGE_ACCESS_TOKEN", "pt")], None).await;
    env.app
        .db
        .get()
        .await
        .unwrap()
        .execute("INSERT INTO assistants (id, name, page_ids) VALUES ('shop', 'Shop', '{page_9}')", &[])
        .await
        .unwrap();
    let mut body = message("pg", "m1", "hi", 1.0);
    body["metadata"] = json!({"assistant_id": "shop"});
    let (_, _, response) = env.post(&body).await;
    assert_eq!(response["result"]["pancake_result"]["status"], "success", "{response}");
    assert_eq!(pancake.requests()[0].path, "/pages/page_9/conversations/pg/messages");
}

#[tokio::test]
async fn past_the_page_limit_messages_of_other_conversations_on_that_page_are_stored_and_limited() {
    let env = TestEnv::with(&[("RATE_LIMIT_PAGE_MAX", "3"), ("RATE_LIMIT_WINDOW_SECONDS", "60")], None).await;
    for i in 0..3 {
        let (status, _, _) = env.post(&message(&format!("pc{i}"), "m1", "hi", 1.0)).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _, body) = env.post(&message("pc3", "m1", "hi", 1.0)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["result"]["reason"], "page_rate_limit");
    // Another page has its own window.
    let mut other = message("pc4", "m1", "hi", 1.0);
    other["metadata"]["page_id"] = json!("page_2");
    assert_eq!(env.post(&other).await.0, StatusCode::OK);
    // The limited message is still stored.
    let stream = env.stream().await;
    assert!(
        stream
            .iter()
            .any(|(_, outcome, p)| outcome.as_deref() == Some("rate_limited") && p["conversation_id"] == "pc3")
    );
}

#[tokio::test]
async fn an_agent_reply_during_the_ai_call_discards_the_bot_answer() {
    let pancake = pancake_stub().await;
    let env = Arc::new(
        TestEnv::with(
            &[("PANCAKE_BASE_URL", &pancake.url()), ("PANCAKE_PAGE_ACCESS_TOKEN", "pt")],
            Some(Arc::new(Slow(Duration::from_millis(200)))),
        )
        .await,
    );
    let customer = {
        let env = env.clone();
        tokio::spawn(async move { env.post(&message("takeover", "c1", "giá bao nhiêu?", 1.0)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut agent = message("takeover", "a1", "Dạ em là nhân viên, em báo giá ngay ạ", 2.0);
    agent["sender_type"] = json!("agent");
    assert_eq!(env.post(&agent).await.2["result"]["status"], "bot_paused");
    let (_, _, body) = customer.await.unwrap();
    assert_eq!(body["result"]["status"], "bot_paused", "{body}");
    assert!(pancake.requests().is_empty(), "the bot did not talk over the human");
    assert!(of_kind(&env.stream().await, "persist_answer").is_empty());
}
