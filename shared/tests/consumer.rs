//! The background consumer against the real Redis and Postgres: exactly-once
//! storage through duplicates, crashes, outages and poison entries.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{TestEnv, drain, pancake_stub};
use redis::AsyncCommands;
use serde_json::{Value, json};
use switchboard::{
    consumer::Consumer,
    domain::IncomingMessage,
    jobs::PersistMessage,
    postgres::writer::{self, Batch, MessageRow},
    redis::{Admission, AdmitMode},
};

fn persist(conversation: &str, id: &str, ts: f64) -> String {
    json!({
        "conversation_id": conversation, "message_id": id, "sender_id": format!("s-{conversation}"),
        "sender_type": "user", "content": format!("tin nhắn {id}"), "timestamp": ts,
        "metadata": {}, "page_id": "page_1", "received_at": ts
    })
    .to_string()
}

/// Enqueues `n` messages over `conversations` conversations, each entry `copies` times.
async fn enqueue(env: &TestEnv, n: usize, conversations: usize, copies: usize) {
    let mut conn = env.redis().await;
    let stream = env.shard0().jobs();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            let payload = persist(&format!("c{}", i % conversations), &format!("m{i}"), 1000.0 + i as f64);
            for _ in 0..copies {
                pipe.xadd(&stream, "*", &[("type", "persist_message"), ("outcome", "admitted"), ("payload", &payload)])
                    .ignore();
            }
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
    }
}

async fn pending(env: &TestEnv) -> usize {
    let mut conn = env.redis().await;
    let reply: redis::streams::StreamPendingReply = conn.xpending(env.shard0().jobs(), "persist").await.unwrap();
    reply.count()
}

#[tokio::test]
async fn ten_thousand_messages_across_500_conversations_each_delivered_twice_are_stored_exactly_once() {
    let env = TestEnv::with(&[("CONSUMER_BATCH_SIZE", "1000"), ("CONSUMER_BLOCK_MS", "50")], None).await;
    enqueue(&env, 10_000, 500, 2).await;
    let consumer = env.consumer().await;
    let summary = drain(&consumer).await;
    assert_eq!(summary.read, 20_000);
    assert_eq!(env.count("SELECT COUNT(*) FROM messages").await, 10_000);
    assert_eq!(env.count("SELECT COUNT(*) FROM conversations").await, 500);
    assert_eq!(env.count("SELECT COUNT(*) FROM conversations WHERE total_messages <> 20").await, 0);
    // The last message of c7 is m9507 (the highest index with i % 500 == 7).
    let row =
        env.row("SELECT last_message_id, last_message_timestamp FROM conversations WHERE conversation_id = 'c7'").await;
    assert_eq!(row.get::<_, String>(0), "m9507");
    assert_eq!(row.get::<_, f64>(1), 10_507.0);
    assert_eq!(pending(&env).await, 0);

    // Delivering the whole stream again changes nothing.
    enqueue(&env, 10_000, 500, 1).await;
    drain(&consumer).await;
    assert_eq!(env.count("SELECT COUNT(*) FROM messages").await, 10_000);
    assert_eq!(env.count("SELECT SUM(total_messages)::int8 FROM conversations").await, 10_000);
}

#[tokio::test]
async fn a_consumer_killed_between_read_and_acknowledgement_is_reclaimed_with_nothing_lost_or_doubled() {
    let env = TestEnv::with(&[("CONSUMER_CLAIM_IDLE_MS", "50"), ("CONSUMER_BLOCK_MS", "50")], None).await;
    enqueue(&env, 300, 30, 1).await;
    // The doomed consumer reads everything, commits half of it, then dies
    // before acknowledging anything.
    let doomed = env.consumer().await;
    let mut conn = env.redis().await;
    let options = redis::streams::StreamReadOptions::default().group("persist", "doomed").count(300);
    let read: redis::streams::StreamReadReply =
        conn.xread_options(&[env.shard0().jobs()], &[">"], &options).await.unwrap();
    let entries = &read.keys[0].ids;
    assert_eq!(entries.len(), 300);
    let half: Vec<MessageRow> = entries[..150]
        .iter()
        .map(|e| MessageRow {
            job: serde_json::from_str::<PersistMessage>(&e.get::<String>("payload").unwrap()).unwrap(),
            outcome: "admitted".into(),
        })
        .collect();
    let mut client = env.app.db.get().await.unwrap();
    let pause_ttl = env.app.config.bot_pause_ttl;
    writer::write(&mut client, &Batch { messages: half, ..Default::default() }, pause_ttl).await.unwrap();
    drop(client);
    drop(doomed);
    assert_eq!(pending(&env).await, 300);

    tokio::time::sleep(Duration::from_millis(100)).await;
    let survivor = Consumer::connect(env.app.clone(), "survivor").await.unwrap();
    let summary = drain(&survivor).await;
    assert_eq!(summary.reclaimed, 300);
    assert_eq!(env.count("SELECT COUNT(*) FROM messages").await, 300);
    assert_eq!(env.count("SELECT COUNT(*) FROM conversations WHERE total_messages <> 10").await, 0);
    assert_eq!(pending(&env).await, 0);
}

#[tokio::test]
async fn with_postgres_unreachable_nothing_is_acknowledged_and_everything_lands_when_it_returns() {
    let env = TestEnv::with(
        // A delivery budget smaller than the outage: an outage must never
        // push entries into the dead letters.
        &[
            ("CONSUMER_CLAIM_IDLE_MS", "50"),
            ("CONSUMER_BLOCK_MS", "50"),
            ("CONSUMER_BATCH_SIZE", "1000"),
            ("CONSUMER_MAX_DELIVERIES", "2"),
        ],
        None,
    )
    .await;
    enqueue(&env, 1_000, 100, 1).await;
    let down = env.app_with(&[("DATABASE_URL", "postgres://postgres@127.0.0.1:1/test")]);
    let blind = Consumer::connect(down, "blind").await.unwrap();
    for _ in 0..5 {
        // Each step reads (or reclaims, once idle) the whole backlog and fails.
        assert!(blind.step().await.is_err(), "a step without Postgres must fail, not acknowledge");
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    assert_eq!(pending(&env).await, 1_000, "read but unacknowledged");
    let mut conn = env.redis().await;
    let dead: usize = conn.xlen(env.shard0().dead_letters()).await.unwrap();
    assert_eq!(dead, 0, "an outage dead-lettered entries");
    assert_eq!(env.count("SELECT COUNT(*) FROM messages").await, 0);

    // Postgres "returns": a consumer with a working pool drains the backlog.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let healthy = env.consumer().await;
    drain(&healthy).await;
    assert_eq!(env.count("SELECT COUNT(*) FROM messages").await, 1_000);
    assert_eq!(pending(&env).await, 0);
}

#[tokio::test]
async fn an_entry_that_always_fails_lands_in_the_dead_letter_stream_after_n_deliveries_with_its_error() {
    let env = TestEnv::with(
        &[("CONSUMER_CLAIM_IDLE_MS", "20"), ("CONSUMER_BLOCK_MS", "20"), ("CONSUMER_MAX_DELIVERIES", "3")],
        None,
    )
    .await;
    let bad = json!({"conversation_id": "", "page_id": null, "assistant_id": null, "reason": "test"}).to_string();
    env.xadd(&[("type", "process_conversation"), ("payload", &bad)]).await;
    let consumer = env.consumer().await;
    let mut failures = 0;
    for _ in 0..50 {
        let step = consumer.step().await.unwrap();
        failures += step.failed;
        if step.dead_lettered > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(failures, 3, "processed exactly N times before giving up");
    let mut conn = env.redis().await;
    let dead: redis::streams::StreamRangeReply = conn.xrange_all(env.shard0().dead_letters()).await.unwrap();
    assert_eq!(dead.ids.len(), 1);
    let entry = &dead.ids[0];
    assert!(entry.get::<String>("error").unwrap().contains("conversation_id"));
    assert_eq!(entry.get::<String>("type").unwrap(), "process_conversation");
    assert_eq!(pending(&env).await, 0);
}

#[tokio::test]
async fn a_poison_entry_goes_straight_to_the_dead_letters_without_blocking_its_batch() {
    let env = TestEnv::with(&[("CONSUMER_BLOCK_MS", "20")], None).await;
    env.xadd(&[("type", "persist_message"), ("payload", "{not json")]).await;
    env.xadd(&[("type", "launch_rocket"), ("payload", "{}")]).await;
    env.xadd(&[("type", "persist_message"), ("outcome", "admitted"), ("payload", &persist("c", "m1", 1.0))]).await;
    let consumer = env.consumer().await;
    let summary = drain(&consumer).await;
    assert_eq!(summary.dead_lettered, 2);
    assert_eq!(env.count("SELECT COUNT(*) FROM messages").await, 1);
    let mut conn = env.redis().await;
    let dead: usize = conn.xlen(env.shard0().dead_letters()).await.unwrap();
    assert_eq!(dead, 2);
}

fn answer(fence: i64, response: &str, action: &str) -> String {
    json!({
        "response_id": response, "conversation_id": "fenced", "fence": fence, "page_id": "p",
        "assistant_id": "default", "covered_message_ids": ["m1"],
        "ai_response": {"response_text": "ok", "intent": "x", "confidence": 0.5, "entities": {},
                        "processing_time_ms": 1.0, "model_used": "m"},
        "actions": [{"action_id": uuid::Uuid::new_v4(), "type": action, "data": {}, "status": "not_sent"}],
        "rejected_actions": [], "bot_paused": action == "transfer_to_agent", "created_at": 1.0
    })
    .to_string()
}

#[tokio::test]
async fn a_stale_fencing_number_cannot_overwrite_a_newer_conversation_state() {
    let env = TestEnv::with(&[("CONSUMER_BLOCK_MS", "20")], None).await;
    let newer = "00000000-0000-0000-0000-000000000200";
    let stale = "00000000-0000-0000-0000-000000000100";
    env.xadd(&[("type", "persist_answer"), ("payload", &answer(200, newer, "end_conversation"))]).await;
    env.xadd(&[("type", "persist_answer"), ("payload", &answer(100, stale, "transfer_to_agent"))]).await;
    drain(&env.consumer().await).await;
    let row = env
        .app
        .db
        .get()
        .await
        .unwrap()
        .query_one("SELECT fence, status, bot_paused FROM conversations WHERE conversation_id = 'fenced'", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 200);
    assert_eq!(row.get::<_, String>(1), "ended");
    assert!(!row.get::<_, bool>(2), "the stale writer must not pause the bot");
    assert_eq!(env.count("SELECT COUNT(*) FROM ai_responses").await, 2);
}

#[tokio::test]
async fn the_message_path_and_the_consumer_store_messages_answers_actions_and_customers() {
    let pancake = pancake_stub().await;
    let env = TestEnv::with(
        &[("CONSUMER_BLOCK_MS", "20"), ("PANCAKE_BASE_URL", &pancake.url()), ("PANCAKE_PAGE_ACCESS_TOKEN", "pt")],
        None,
    )
    .await;
    let mut body = common::message("full", "m1", "Tên tôi là Lan, số 0912345678. Tôi muốn đặt lịch", 1.0);
    body["metadata"]["sender_name"] = json!("Lan N.");
    let (_, _, response) = env.post(&body).await;
    assert_eq!(response["result"]["status"], "completed");
    drain(&env.consumer().await).await;
    assert_eq!(env.count("SELECT COUNT(*) FROM messages").await, 1);
    assert_eq!(env.count("SELECT COUNT(*) FROM ai_responses").await, 1);
    assert_eq!(
        env.count("SELECT COUNT(*) FROM message_actions WHERE status = 'sent' AND pancake_message_id IS NOT NULL")
            .await,
        1
    );
    let client = env.app.db.get().await.unwrap();
    let customer =
        client.query_one("SELECT name, phone FROM customers WHERE sender_id = 'customer_1'", &[]).await.unwrap();
    assert_eq!(customer.get::<_, String>(0), "Lan");
    assert_eq!(customer.get::<_, String>(1), "0912345678");
    let rows = client
        .query("SELECT action_type, COUNT(*), AVG(retry_count) FROM message_actions GROUP BY action_type", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
}

#[tokio::test]
async fn a_lock_holder_that_died_leaves_a_stranded_burst_that_the_sweep_answers() {
    let env = TestEnv::with(&[("LOCK_TTL_MS", "100"), ("CONSUMER_BLOCK_MS", "20")], None).await;
    let message =
        IncomingMessage::parse(common::message("strand", "m1", "xin chào", 1.0).to_string().as_bytes(), 65536).unwrap();
    let admission = env.app.store.admit(&message, &persist("strand", "m1", 1.0), AdmitMode::Sync).await.unwrap();
    assert!(matches!(admission, Admission::Acquired { .. }));
    // The holder dies here: no complete, the lock just expires.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let consumer = env.consumer().await;
    let summary = consumer.sweep().await.unwrap();
    assert_eq!(summary.stranded_redriven, 1);
    drain(&consumer).await;
    let covered: Value = env
        .app
        .db
        .get()
        .await
        .unwrap()
        .query_one("SELECT to_jsonb(covered_message_ids) FROM ai_responses WHERE conversation_id = 'strand'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(covered, json!(["m1"]));
    // Nothing is owed any more: a second sweep finds nothing.
    assert_eq!(consumer.sweep().await.unwrap().stranded_redriven, 0);
}

#[tokio::test]
async fn a_failed_delivery_is_retried_by_the_consumer_and_its_retry_count_kept() {
    // A 502 may come after Pancake acted: each retry looks first (the
    // stub lists what landed; nothing did), then sends.
    let pancake = common::pancake::PancakeStub::start(|n| {
        if n < 2 { common::pancake::Reply::Refuse(502) } else { common::pancake::Reply::Accept }
    })
    .await;
    let env = TestEnv::with(
        &[
            ("CONSUMER_BLOCK_MS", "20"),
            ("CONSUMER_CLAIM_IDLE_MS", "30"),
            ("UNKNOWN_OUTCOME_GRACE_MS", "0"),
            ("PANCAKE_BASE_URL", &pancake.url()),
            ("PANCAKE_PAGE_ACCESS_TOKEN", "pt"),
        ],
        None,
    )
    .await;
    let (_, _, response) = env.post(&common::message("retry", "m1", "xin chào", 1.0)).await;
    assert_eq!(response["result"]["pancake_result"]["status"], "failed");
    let consumer = env.consumer().await;
    for _ in 0..20 {
        drain(&consumer).await;
        if env.count("SELECT COUNT(*) FROM message_actions WHERE status = 'sent'").await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let row = env.row("SELECT status, retry_count, pancake_message_id FROM message_actions").await;
    assert_eq!(row.get::<_, String>(0), "sent");
    assert_eq!(row.get::<_, i32>(1), 2);
    assert_eq!(row.get::<_, String>(2), "pancake_msg_2");
    assert_eq!(pancake.sends(), 3, "sent once successfully, never doubled");
    assert_eq!(pancake.lookups(), 2, "each retry after an unknown outcome looked first");
    assert_eq!(pancake.delivered().len(), 1);
}

#[tokio::test]
async fn in_lambda_mode_the_consumer_drains_until_shortly_before_the_deadline_and_reports() {
    let env = TestEnv::with(&[("CONSUMER_BLOCK_MS", "50"), ("CONSUMER_SAFETY_MARGIN_MS", "300")], None).await;
    enqueue(&env, 250, 25, 1).await;
    let consumer = env.consumer().await;
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let started = std::time::Instant::now();
    let summary = consumer.drain(now_ms + 1_000).await;
    // Returns on its own (a generous bound, not a timing assertion).
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(summary.written, 250);
    assert_eq!(summary.acknowledged, 250);
    let json = serde_json::to_value(&summary).unwrap();
    for field in ["read", "written", "acknowledged", "dead_lettered", "stranded_redriven"] {
        assert!(json.get(field).is_some(), "{field} missing from the summary");
    }
    assert_eq!(env.count("SELECT COUNT(*) FROM messages").await, 250);
}

#[tokio::test]
async fn an_action_already_delivered_is_recorded_and_never_sent_twice() {
    let pancake = pancake_stub().await;
    let env = TestEnv::with(
        &[("CONSUMER_BLOCK_MS", "20"), ("PANCAKE_BASE_URL", &pancake.url()), ("PANCAKE_PAGE_ACCESS_TOKEN", "pt")],
        None,
    )
    .await;
    let (_, _, body) = env.post(&common::message("once", "m1", "xin chào", 1.0)).await;
    assert_eq!(body["result"]["pancake_result"]["status"], "success");
    let consumer = env.consumer().await;
    drain(&consumer).await;
    // A retry of the same action arrives anyway (the holder's results were
    // lost, the sweep re-enqueued it): it is recorded, not resent.
    let action: Value = env
        .app
        .db
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT jsonb_build_object('action_id', id, 'type', action_type, 'data', action_data) FROM message_actions",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let job = json!({"response_id": uuid::Uuid::new_v4(), "conversation_id": "once", "page_id": "page_1",
                     "fence": 1, "action": action, "attempt": 1});
    env.xadd(&[("type", "deliver_action"), ("payload", &job.to_string())]).await;
    drain(&consumer).await;
    assert_eq!(pancake.requests().len(), 1, "sent exactly once");
    assert_eq!(env.count("SELECT COUNT(*) FROM message_actions WHERE status = 'sent'").await, 1);
}
