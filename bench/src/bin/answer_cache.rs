//! Answer-cache benchmark (issue 4): a replayed conversation log — 1,000
//! conversations opening with one of 50 FAQ questions (with the case and
//! spacing variations real customers type), 30 % of them with a follow-up —
//! through handle-message in-process, with the embedded AI wrapped in a
//! counter. Reports the answer-cache hit rate (from the cache metrics every
//! instance reads) and the AI calls saved.
//!
//! Usage: `cargo build --profile perf -p bench && ./target/perf/answer-cache`

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use bytes::Bytes;
use futures::{FutureExt, StreamExt, future::BoxFuture};
use serde_json::json;
use switchboard::{
    App, Config,
    ai::{AiAnswer, AiError, AiProvider, AiRequest, embedded},
    app::http_client,
};

#[derive(Debug, Default)]
struct Counting(AtomicUsize);

impl AiProvider for Counting {
    fn answer<'a>(&'a self, request: AiRequest<'a>) -> BoxFuture<'a, Result<AiAnswer, AiError>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let text = request.pending_text();
        async move { Ok(embedded::respond(&text)) }.boxed()
    }
}

const TOPICS: [&str; 10] =
    ["áo thun", "quần jean", "váy", "giày", "túi xách", "mũ", "áo khoác", "đồng hồ", "kính", "ví"];
const ASKS: [&str; 5] = [
    "giá bao nhiêu",
    "còn size M không",
    "ship về Hà Nội mất mấy ngày",
    "có màu đen không",
    "đặt lịch thử đồ được không",
];
const FOLLOW_UPS: [&str; 3] = ["cảm ơn shop", "cho mình gặp nhân viên", "tạm biệt"];

/// A small deterministic generator so every run replays the same log.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n
    }
}

fn vary(text: &str, rng: &mut Lcg) -> String {
    match rng.next(3) {
        0 => text.to_owned(),
        1 => format!("  {}  ", text.to_uppercase()),
        _ => text.replace(' ', "  "),
    }
}

#[tokio::main]
async fn main() {
    let id = std::process::id();
    let vars: Vec<(&str, String)> = vec![
        ("PANCAKE_ACCESS_TOKEN", "bench".into()),
        (
            "DATABASE_URL",
            std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
        ),
        ("REDIS_URL", std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())),
        ("POSTGRES_SCHEMA", format!("bench_cache_{id}")),
        ("REDIS_KEY_PREFIX", format!("benchac:{id}:")),
        ("RATE_LIMIT_PAGE_MAX", "0".into()),
    ];
    let config = Config::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())).expect("config");
    let ai = Arc::new(Counting::default());
    let app = App::with_ai(config, ai.clone(), http_client().expect("http")).expect("app");
    app.migrate().await.expect("migrate");

    let openers: Vec<String> = TOPICS.iter().flat_map(|t| ASKS.iter().map(move |a| format!("{t} {a}?"))).collect();
    assert_eq!(openers.len(), 50);
    let mut rng = Lcg(42);
    let mut log: Vec<(String, String, String)> = Vec::new();
    for c in 0..1_000 {
        let conversation = format!("faq{c}");
        log.push((conversation.clone(), "m1".into(), vary(&openers[rng.next(50)], &mut rng)));
        if rng.next(10) < 3 {
            log.push((conversation, "m2".into(), vary(FOLLOW_UPS[rng.next(3)], &mut rng)));
        }
    }
    // Conversations run concurrently, each one's messages in order.
    let mut by_conversation: Vec<Vec<(String, String, String)>> = Vec::new();
    for entry in log.iter().cloned() {
        match by_conversation.last_mut() {
            Some(last) if last[0].0 == entry.0 => last.push(entry),
            _ => by_conversation.push(vec![entry]),
        }
    }
    let app = &app;
    let started = std::time::Instant::now();
    futures::stream::iter(by_conversation)
        .for_each_concurrent(16, |messages| async move {
            for (i, (conversation, message_id, text)) in messages.into_iter().enumerate() {
                let body = json!({"conversation_id": conversation, "message_id": message_id, "message_content": text,
                                  "sender_id": "u", "sender_type": "user", "timestamp": 1_700_000_000.0 + i as f64});
                let request = http::Request::post("/api/v1/enhanced-handle-message")
                    .header("authorization", "Bearer bench")
                    .body(Bytes::from(body.to_string()))
                    .expect("request");
                let response = switchboard::http::route(app, request).await;
                assert_eq!(response.status(), 200);
            }
        })
        .await;
    let elapsed = started.elapsed();
    app.cache.flush().await.expect("flush");
    let metrics = app.cache.metrics().await.expect("metrics");
    let answer = metrics.iter().find(|(k, _)| *k == "answer").map(|(_, m)| m.clone()).expect("answer metrics");
    let calls = ai.0.load(Ordering::SeqCst);
    println!("| messages | AI calls | AI calls saved | answer-cache hits | misses | hit rate | seconds |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {calls} | {} ({:.1} %) | {} | {} | {:.1} % | {:.2} |",
        log.len(),
        log.len() - calls,
        100.0 * (log.len() - calls) as f64 / log.len() as f64,
        answer.hits,
        answer.misses,
        answer.hit_rate * 100.0,
        elapsed.as_secs_f64()
    );

    if let Ok(client) = app.db.get().await {
        let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS bench_cache_{id} CASCADE")).await;
    }
    let mut conn = app.store.connection();
    let keys: Vec<String> = {
        let iter: redis::AsyncIter<String> =
            redis::AsyncCommands::scan_match(&mut conn, format!("benchac:{id}:*")).await.expect("scan");
        iter.filter_map(|k| async move { k.ok() }).collect().await
    };
    for chunk in keys.chunks(500) {
        let _: Result<(), _> = redis::AsyncCommands::del(&mut conn, chunk).await;
    }
}
