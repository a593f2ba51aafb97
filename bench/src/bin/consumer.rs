//! Consumer benchmark (issue 3): messages/s from the `jobs` stream into
//! Postgres with read batches of 1, 100 and 1,000 (the real consumer:
//! `XREADGROUP` → `UNNEST` writes in one transaction → `XACK`), against the
//! two message writers (`UNNEST`, binary `COPY` + `INSERT … SELECT`) in the
//! same read loop and row-by-row inserts, in the same run; and the
//! XADD→row latency (p50/p99) at a steady 1,000 messages/s.
//!
//! Every run uses its own schema and key prefix and removes them. Bounded in
//! count and time; loopback only.
//!
//! Usage: `cargo build --profile perf -p bench && ./target/perf/consumer [--messages N]`

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use redis::AsyncCommands;
use switchboard::{
    App, Config,
    consumer::Consumer,
    jobs::PersistMessage,
    postgres::writer::{self, MessageRow},
};

#[path = "consumer/writers.rs"]
mod writers;

const TIME_CAP: Duration = Duration::from_secs(120);
/// `BOT_PAUSE_TTL_SECONDS`' default; the benchmark's customer messages pause nothing.
const PAUSE_TTL: Duration = Duration::from_secs(86_400);

struct Env {
    app: App,
    schema: String,
    prefix: String,
}

async fn env(tag: &str, batch: usize) -> Env {
    let id = format!("{}_{}", std::process::id(), tag);
    let schema = format!("bench_{id}");
    let prefix = format!("benchc:{id}:");
    let vars: Vec<(&str, String)> = vec![
        ("PANCAKE_ACCESS_TOKEN", "bench".into()),
        (
            "DATABASE_URL",
            std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
        ),
        ("REDIS_URL", std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())),
        ("POSTGRES_SCHEMA", schema.clone()),
        ("REDIS_KEY_PREFIX", prefix.clone()),
        ("CONSUMER_BATCH_SIZE", batch.to_string()),
        ("CONSUMER_BLOCK_MS", "200".into()),
        ("CONSUMER_SWEEP_MS", "3600000".into()),
    ];
    let config = Config::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())).expect("config");
    let app = App::build(config).expect("app");
    app.migrate().await.expect("migrate");
    Env { app, schema, prefix }
}

impl Env {
    async fn cleanup(&self) {
        if let Ok(client) = self.app.db.get().await {
            let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema)).await;
        }
        let mut conn = self.app.store.connection();
        let keys: Vec<String> = {
            let iter: redis::AsyncIter<String> = conn.scan_match(format!("{}*", self.prefix)).await.expect("scan");
            iter.filter_map(|k| async move { k.ok() }).collect().await
        };
        for chunk in keys.chunks(500) {
            let _: Result<(), _> = conn.del(chunk).await;
        }
    }

    async fn messages(&self) -> i64 {
        self.app
            .db
            .get()
            .await
            .expect("db")
            .query_one("SELECT COUNT(*) FROM messages", &[])
            .await
            .expect("count")
            .get(0)
    }
}

fn job(i: usize, received_at: f64) -> PersistMessage {
    PersistMessage {
        conversation_id: format!("c{}", i % 500),
        message_id: format!("m{i}"),
        sender_id: format!("u{}", i % 500),
        sender_type: "user".into(),
        content: format!("Cho mình hỏi giá sản phẩm số {i} với ạ"),
        timestamp: 1_700_000_000.0 + i as f64,
        metadata: serde_json::Map::new(),
        page_id: Some("page_1".into()),
        received_at,
    }
}

async fn enqueue(env: &Env, n: usize) {
    let mut conn = env.app.store.connection();
    let stream = env.app.store.keys().shard(0).jobs(); // single node: one job shard
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            let payload = serde_json::to_string(&job(i, 0.0)).expect("json");
            pipe.xadd(&stream, "*", &[("type", "persist_message"), ("outcome", "admitted"), ("payload", &payload)])
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await.expect("xadd");
    }
}

/// The real consumer, stepping until every entry is written.
async fn consume_all(env: &Env, n: usize) -> Duration {
    let consumer = Consumer::connect(env.app.clone(), "bench").await.expect("consumer");
    let started = Instant::now();
    let mut written = 0u64;
    while written < n as u64 && started.elapsed() < TIME_CAP {
        written += consumer.step().await.expect("step").written;
    }
    started.elapsed()
}

/// Reads entries like the consumer and writes each with `write` (row by row or COPY).
async fn consume_with<F, Fut>(env: &Env, n: usize, write: F) -> Duration
where
    F: Fn(deadpool_postgres::Object, Vec<MessageRow>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut conn = env.app.store.connection();
    let stream = env.app.store.keys().shard(0).jobs(); // single node: one job shard
    let _: Result<(), _> = conn.xgroup_create_mkstream(&stream, "manual", "0").await;
    let started = Instant::now();
    let mut done = 0;
    while done < n && started.elapsed() < TIME_CAP {
        let options = redis::streams::StreamReadOptions::default().group("manual", "bench").count(1000);
        let reply: redis::streams::StreamReadReply =
            conn.xread_options(&[&stream], &[">"], &options).await.expect("read");
        let entries: Vec<redis::streams::StreamId> = reply.keys.into_iter().flat_map(|k| k.ids).collect();
        let rows: Vec<MessageRow> = entries
            .iter()
            .map(|e| MessageRow {
                job: serde_json::from_str(&e.get::<String>("payload").expect("payload")).expect("job"),
                outcome: "admitted".into(),
            })
            .collect();
        write(env.app.db.get().await.expect("db"), rows).await;
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        let _: i64 = conn.xack(&stream, "manual", &ids).await.expect("ack");
        done += entries.len();
    }
    started.elapsed()
}

async fn latency_at_1000_per_second(n: usize) -> (f64, f64, f64) {
    let env = env("lat", 1000).await;
    let consumer = Consumer::connect(env.app.clone(), "lat").await.expect("consumer");
    let stop = tokio::sync::watch::channel(false);
    let mut stop_rx = stop.1.clone();
    let runner = tokio::spawn(async move {
        consumer
            .run(async move {
                let _ = stop_rx.changed().await;
            })
            .await;
    });
    // Producer: one message per millisecond; the send instant of each is kept.
    let mut conn = env.app.store.connection();
    let stream = env.app.store.keys().shard(0).jobs(); // single node: one job shard
    let (tx, mut rx) = futures::channel::mpsc::unbounded::<Instant>();
    let producer = tokio::spawn(async move {
        let mut tx = tx;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        for i in 0..n {
            tick.tick().await;
            let payload = serde_json::to_string(&job(i, 0.0)).expect("json");
            let sent = Instant::now();
            let _: String = conn
                .xadd(&stream, "*", &[("type", "persist_message"), ("outcome", "admitted"), ("payload", &payload)])
                .await
                .expect("xadd");
            let _ = tx.send(sent).await;
        }
    });
    // Poller: one consumer writes in stream order, so the k-th row to become
    // visible is the k-th message sent.
    let mut latencies = Vec::with_capacity(n);
    let mut seen = 0usize;
    let started = Instant::now();
    while seen < n && started.elapsed() < TIME_CAP {
        let count = env.messages().await as usize;
        let now = Instant::now();
        while seen < count {
            match rx.next().await {
                Some(sent) => latencies.push(now.duration_since(sent).as_secs_f64() * 1000.0),
                None => break,
            }
            seen += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    let _ = producer.await;
    let _ = stop.0.send(true);
    let _ = runner.await;
    env.cleanup().await;
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    (pct(0.5), pct(0.99), n as f64 / elapsed.as_secs_f64())
}

#[tokio::main]
async fn main() {
    let mut n = 20_000usize;
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--messages") {
        n = args.get(pos + 1).and_then(|v| v.parse().ok()).unwrap_or(n);
    }
    println!("| writer | read batch | messages | seconds | messages/s |");
    println!("|---|---|---|---|---|");
    let mut baseline = None;
    for (label, batch, count) in [
        ("consumer: UNNEST (kept)", 1usize, n / 10),
        ("consumer: UNNEST (kept)", 100, n),
        ("consumer: UNNEST (kept)", 1000, n),
    ] {
        let env = env(&format!("b{batch}"), batch).await;
        enqueue(&env, count).await;
        let elapsed = consume_all(&env, count).await;
        assert_eq!(env.messages().await as usize, count);
        println!(
            "| {label} | {batch} | {count} | {:.2} | {:.0} |",
            elapsed.as_secs_f64(),
            count as f64 / elapsed.as_secs_f64()
        );
        if batch == 1000 {
            baseline = Some(count as f64 / elapsed.as_secs_f64());
        }
        env.cleanup().await;
    }
    let env_copy = env("unnest", 1000).await;
    enqueue(&env_copy, n).await;
    let elapsed = consume_with(&env_copy, n, |mut client, rows| async move {
        let tx = client.transaction().await.expect("tx");
        writer::write_messages_unnest(&*tx, &rows, PAUSE_TTL).await.expect("unnest");
        tx.commit().await.expect("commit");
    })
    .await;
    assert_eq!(env_copy.messages().await as usize, n);
    println!(
        "| UNNEST arrays (same read loop, messages only) | 1000 | {n} | {:.2} | {:.0} |",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    env_copy.cleanup().await;

    let env_copy = env("copy", 1000).await;
    enqueue(&env_copy, n).await;
    let elapsed = consume_with(&env_copy, n, |mut client, rows| async move {
        let tx = client.transaction().await.expect("tx");
        writers::write_messages_copy(&tx, &rows).await.expect("copy");
        tx.commit().await.expect("commit");
    })
    .await;
    assert_eq!(env_copy.messages().await as usize, n);
    println!(
        "| binary COPY + INSERT … SELECT (same read loop, messages only) | 1000 | {n} | {:.2} | {:.0} |",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    env_copy.cleanup().await;

    let rows_n = n / 10;
    let mut row_rates = Vec::new();
    for (label, autocommit) in
        [("row by row, one transaction per batch", false), ("row by row, each row committed", true)]
    {
        let env_rows = env(if autocommit { "rowsac" } else { "rows" }, 1000).await;
        enqueue(&env_rows, rows_n).await;
        let elapsed = consume_with(&env_rows, rows_n, |mut client, rows| async move {
            writers::write_messages_row_by_row(&mut client, &rows, autocommit).await.expect("row by row");
        })
        .await;
        assert_eq!(env_rows.messages().await as usize, rows_n);
        let rate = rows_n as f64 / elapsed.as_secs_f64();
        println!("| {label} | 1000 | {rows_n} | {:.2} | {rate:.0} |", elapsed.as_secs_f64());
        row_rates.push((label, rate));
        env_rows.cleanup().await;
    }
    if let Some(batched) = baseline {
        for (label, rate) in row_rates {
            println!("\nconsumer (batch 1,000) vs {label}: {:.1}x", batched / rate);
        }
    }

    let (p50, p99, rate) = latency_at_1000_per_second(5_000).await;
    println!("\nXADD→row latency at {rate:.0} messages/s offered (5,000 messages): p50 {p50:.1} ms, p99 {p99:.1} ms");
}
