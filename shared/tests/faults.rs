//! The fault suite: real processes (the `local-gateway` binary, a throwaway
//! `redis-server`, a cuttable TCP proxy in front of Postgres) stopped and
//! started under load. Bounded in size and time; loopback only. Each test
//! prints one line of RELIABILITY.md's table (sent / stored / duplicated /
//! lost). `scripts/test` builds the gateway first; run one with
//! `cargo build -p local-gateway && cargo nextest run -p switchboard --test faults`.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    collections::{HashMap, HashSet},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::{
    Stub, TestEnv,
    process::{Proc, binary},
};
use futures::StreamExt;
use http::StatusCode;
use serde_json::{Value, json};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spawn_gateway(env: &TestEnv, args: &[&str], vars: &[(&str, String)]) -> Proc {
    let mut command = Command::new(binary("local-gateway"));
    command.args(args).envs(&env.env).env("RUST_LOG", "warn").stdout(Stdio::null()).stderr(Stdio::null());
    for (k, v) in vars {
        command.env(k, v);
    }
    Proc(command.spawn().unwrap())
}

async fn wait_port(port: u16) {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {port}");
}

/// Polls `sql` (a count) until it reaches `want` or `limit` passes.
async fn wait_count(env: &TestEnv, sql: &str, want: i64, limit: Duration) -> i64 {
    let started = Instant::now();
    loop {
        let n = match env.app.db.get().await {
            Ok(c) => c.query_one(sql, &[]).await.map(|r| r.get::<_, i64>(0)).unwrap_or(-1),
            Err(_) => -1,
        };
        if n >= want || started.elapsed() > limit {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn report(fault: &str, sent: usize, stored: i64, duplicated: i64) {
    let lost = sent as i64 - stored;
    println!("| {fault} | {sent} | {stored} | {duplicated} | {lost} |");
}

/// Posts `body` to a gateway until it is accepted (a `503` or a refused
/// connection is retried after `pause`, as Pancake retries): the result
/// object and how many attempts failed first.
async fn send_until_accepted(client: &reqwest::Client, port: u16, body: &Value, pause: Duration) -> (Value, usize) {
    for failed in 0..300 {
        let response = client
            .post(format!("http://127.0.0.1:{port}/api/v1/enhanced-handle-message"))
            .bearer_auth(common::TOKEN)
            .json(body)
            .send()
            .await;
        if let Ok(response) = response
            && response.status() == 200
        {
            let value: Value = response.json().await.unwrap();
            return (value["result"].clone(), failed);
        }
        tokio::time::sleep(pause).await;
    }
    panic!("{body} never accepted");
}

fn persist(conversation: &str, id: &str, ts: f64) -> String {
    json!({"conversation_id": conversation, "message_id": id, "sender_id": "s", "sender_type": "user",
           "content": "tin nhắn", "timestamp": ts, "metadata": {}, "page_id": "page_1", "received_at": ts})
    .to_string()
}

#[tokio::test]
async fn a_consumer_process_killed_mid_batch_is_reclaimed_with_nothing_lost_or_doubled() {
    let env = TestEnv::new().await;
    let total = 20_000;
    let mut conn = env.redis().await;
    for chunk in (0..total).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            let payload = persist(&format!("k{}", i % 200), &format!("m{i}"), i as f64);
            pipe.xadd(env.shard0().jobs(), "*", &[("type", "persist_message"), ("payload", payload.as_str())]).ignore();
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
    }
    let vars = [
        ("CONSUMER_BATCH_SIZE", "1000".to_owned()),
        ("CONSUMER_CLAIM_IDLE_MS", "500".to_owned()),
        ("CONSUMER_BLOCK_MS", "100".to_owned()),
    ];
    let first = spawn_gateway(&env, &["consume"], &vars);
    let midway = wait_count(&env, "SELECT COUNT(*) FROM messages", 3_000, Duration::from_secs(60)).await;
    drop(first); // SIGKILL, most likely between a read and its acknowledgement
    assert!(midway < total as i64, "the consumer finished before it could be killed");
    let _second = spawn_gateway(&env, &["consume"], &vars);
    let stored = wait_count(&env, "SELECT COUNT(*) FROM messages", total as i64, Duration::from_secs(90)).await;
    let counted = env.count("SELECT COALESCE(SUM(total_messages), 0)::int8 FROM conversations").await;
    report("consumer SIGKILLed mid-batch", total, stored, counted - stored);
    assert_eq!(stored, total as i64);
    assert_eq!(counted, total as i64, "conversation counters doubled or lost");
}

/// An AI stub that records how many calls per conversation run at once.
struct OverlapAi {
    stub: Stub,
    max_overlap: Arc<AtomicUsize>,
}

async fn overlap_ai(delay: Duration) -> OverlapAi {
    let in_flight: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let max_overlap = Arc::new(AtomicUsize::new(0));
    let (flight, max) = (in_flight.clone(), max_overlap.clone());
    let stub = Stub::start(move |r| {
        let (flight, max) = (flight.clone(), max.clone());
        async move {
            let conversation = r.body["conversation_id"].as_str().unwrap_or_default().to_owned();
            let now = {
                let mut map = flight.lock().unwrap();
                let n = map.entry(conversation.clone()).or_default();
                *n += 1;
                *n
            };
            max.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            *flight.lock().unwrap().get_mut(&conversation).unwrap() -= 1;
            (StatusCode::OK, json!({"response_text": "Dạ shop đã nhận tin ạ", "intent": "ack", "confidence": 0.9}))
        }
    })
    .await;
    OverlapAi { stub, max_overlap }
}

#[tokio::test]
async fn four_gateway_processes_hammering_one_conversation_never_overlap_and_cover_every_message() {
    let ai = overlap_ai(Duration::from_millis(30)).await;
    let env = TestEnv::with(&[("AI_SERVICE_URL", &ai.stub.url())], None).await;
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let vars = |port: u16| {
        vec![
            ("PORT", port.to_string()),
            ("AI_SERVICE_URL", ai.stub.url()),
            ("CONSUMER_BLOCK_MS", "100".to_owned()),
            ("CONSUMER_SWEEP_MS", "500".to_owned()),
            ("RATE_LIMIT_CONVERSATION_MAX", "0".to_owned()),
            ("RATE_LIMIT_PAGE_MAX", "0".to_owned()),
        ]
    };
    let _gateways: Vec<Proc> = ports.iter().map(|p| spawn_gateway(&env, &[], &vars(*p))).collect();
    for port in &ports {
        wait_port(*port).await;
    }
    let client = reqwest::Client::new();
    let total = 200;
    let sends = (0..total).map(|i| {
        let client = client.clone();
        let port = ports[i % 4];
        async move {
            let body = common::message("hammer", &format!("h{i}"), &format!("câu hỏi {i}"), 1000.0 + i as f64);
            let response = client
                .post(format!("http://127.0.0.1:{port}/api/v1/enhanced-handle-message"))
                .bearer_auth(common::TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    });
    futures::stream::iter(sends).buffer_unordered(16).collect::<Vec<_>>().await;
    // Whatever the restart budget left owed is answered by the consumers.
    let sql = "SELECT COUNT(DISTINCT id) FROM (SELECT unnest(covered_message_ids) AS id FROM ai_responses) c";
    let covered = wait_count(&env, sql, total as i64, Duration::from_secs(60)).await;
    let doubled = env
        .count(
            "SELECT COUNT(*) - COUNT(DISTINCT id) FROM (SELECT unnest(covered_message_ids) AS id FROM ai_responses) c",
        )
        .await;
    let stored = wait_count(&env, "SELECT COUNT(*) FROM messages", total as i64, Duration::from_secs(30)).await;
    report("4 gateways, one conversation, 200 messages", total, stored, doubled);
    assert_eq!(ai.max_overlap.load(Ordering::SeqCst), 1, "two AI calls for one conversation overlapped");
    assert_eq!(covered, total as i64, "every message covered by an answer");
    assert_eq!(doubled, 0, "no message answered twice");
    assert_eq!(stored, total as i64);
}

/// A TCP proxy in front of Postgres that can refuse service for a while
/// (accepted connections are dropped at once while it is cut).
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy_to(target: u16) -> Proxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let cut = Arc::new(AtomicBool::new(false));
    let generation = Arc::new(AtomicUsize::new(0));
    let flag = cut.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else { continue };
            if flag.load(Ordering::SeqCst) {
                drop(inbound);
                continue;
            }
            let (flag, generation) = (flag.clone(), generation.clone());
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else { return };
                let born = generation.load(Ordering::SeqCst);
                let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                tokio::pin!(copy);
                // Established connections die when the cut begins.
                loop {
                    tokio::select! {
                        _ = &mut copy => return,
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {
                            if flag.load(Ordering::SeqCst) || generation.load(Ordering::SeqCst) != born {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    Proxy { port, cut, task }
}

#[tokio::test]
async fn postgres_unreachable_under_load_loses_nothing_and_the_backlog_drains_after() {
    let outage: u64 = std::env::var("FAULT_OUTAGE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let env = TestEnv::new().await;
    let proxy = proxy_to(5432).await;
    let database = common::database_url().replace("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port));
    let port = free_port();
    let _gateway = spawn_gateway(
        &env,
        &[],
        &[
            ("PORT", port.to_string()),
            ("DATABASE_URL", database),
            ("CONSUMER_BLOCK_MS", "100".to_owned()),
            ("CONSUMER_CLAIM_IDLE_MS", "1000".to_owned()),
            ("RATE_LIMIT_PAGE_MAX", "0".to_owned()),
        ],
    );
    wait_port(port).await;
    let client = reqwest::Client::new();
    let send = |i: usize| {
        let client = client.clone();
        async move {
            let body = common::message(&format!("pg{}", i % 50), &format!("p{i}"), "xin chào", 1000.0 + i as f64);
            client
                .post(format!("http://127.0.0.1:{port}/api/v1/enhanced-handle-message"))
                .bearer_auth(common::TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // Warm the assistant cache while Postgres is up, then cut it.
    assert_eq!(send(0).await, 200);
    proxy.cut.store(true, Ordering::SeqCst);
    // The proxy notices the cut within 50 ms on each open connection: until
    // then a consumer transaction already under way could still commit the
    // first messages of the burst (seen once in a fresh-clone run).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let total = 1_000;
    let started = Instant::now();
    let statuses: Vec<StatusCode> = futures::stream::iter(1..total).map(send).buffer_unordered(8).collect().await;
    assert!(statuses.iter().all(|s| *s == 200), "the message path does not need Postgres");
    let during = env.count("SELECT COUNT(*) FROM messages").await;
    tokio::time::sleep(Duration::from_secs(outage).saturating_sub(started.elapsed())).await;
    proxy.cut.store(false, Ordering::SeqCst);
    let stored = wait_count(&env, "SELECT COUNT(*) FROM messages", total as i64, Duration::from_secs(90)).await;
    let counted = env.count("SELECT COALESCE(SUM(total_messages), 0)::int8 FROM conversations").await;
    report(&format!("Postgres unreachable {outage} s under load"), total, stored, counted - stored);
    assert!(during <= 1, "nothing could be written during the outage");
    assert_eq!(stored, total as i64);
    assert_eq!(counted, total as i64);
}

#[tokio::test]
async fn redis_restarted_in_the_middle_of_a_burst_stores_every_message_exactly_once() {
    let redis_port = free_port();
    let dir = std::env::temp_dir().join(format!("switchboard-redis-{redis_port}"));
    std::fs::create_dir_all(&dir).unwrap();
    // A durable stream, as ElastiCache with replication gives: append-only, fsync always.
    let start_redis = || {
        Proc(
            Command::new("redis-server")
                .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
                .args(["--appendfsync", "always", "--dir", dir.to_str().unwrap()])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut redis_server = start_redis();
    wait_port(redis_port).await;
    let redis_url = format!("redis://127.0.0.1:{redis_port}/0");
    let env = TestEnv::with(&[("REDIS_URL", &redis_url)], None).await;
    let port = free_port();
    let _gateway = spawn_gateway(
        &env,
        &[],
        &[
            ("PORT", port.to_string()),
            ("CONSUMER_BLOCK_MS", "100".to_owned()),
            ("CONSUMER_CLAIM_IDLE_MS", "1000".to_owned()),
            ("RATE_LIMIT_PAGE_MAX", "0".to_owned()),
        ],
    );
    wait_port(port).await;
    let client = reqwest::Client::new();
    let total = 2_000;
    let answered = Arc::new(Mutex::new(HashSet::new()));
    let retries = Arc::new(AtomicUsize::new(0));
    let (record, retried) = (answered.clone(), retries.clone());
    let sends = (0..total).map(move |i| {
        let (client, answered, retried) = (client.clone(), record.clone(), retried.clone());
        async move {
            let body = common::message(&format!("rr{}", i % 100), &format!("r{i}"), "xin chào", 1000.0 + i as f64);
            // The sender retries until it gets an answer, as Pancake does.
            let (result, failed) = send_until_accepted(&client, port, &body, Duration::from_millis(100)).await;
            if result["status"] == "completed" {
                answered.lock().unwrap().insert(i);
            }
            retried.fetch_add(failed, Ordering::SeqCst);
        }
    });
    let burst = tokio::spawn(futures::stream::iter(sends).buffer_unordered(16).collect::<Vec<_>>());
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(redis_server); // SIGKILL mid-burst
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis_server = start_redis();
    burst.await.unwrap();
    let stored = wait_count(&env, "SELECT COUNT(*) FROM messages", total as i64, Duration::from_secs(90)).await;
    let counted = env.count("SELECT COALESCE(SUM(total_messages), 0)::int8 FROM conversations").await;
    // Answers resumed: messages after the restart were answered again.
    let after_restart = answered.lock().unwrap().iter().filter(|i| **i >= total - 100).count();
    report("Redis SIGKILLed and restarted mid-burst", total, stored, counted - stored);
    assert_eq!(stored, total as i64);
    assert_eq!(counted, total as i64);
    assert!(after_restart > 0, "answers resumed after the restart");
    assert!(retries.load(Ordering::SeqCst) > 0, "the restart happened during the burst (senders had to retry)");
    let mut conn = redis::Client::open(redis_url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    drop(redis_server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn with_redis_down_a_burst_is_answered_from_postgres_once_each_and_never_concurrently() {
    let redis_port = free_port();
    let start_redis = || {
        Proc(
            Command::new("redis-server")
                .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let redis_server = start_redis();
    wait_port(redis_port).await;
    let redis_url = format!("redis://127.0.0.1:{redis_port}/0");
    let ai = overlap_ai(Duration::from_millis(20)).await;
    let env = TestEnv::with(&[("REDIS_URL", &redis_url), ("AI_SERVICE_URL", &ai.stub.url())], None).await;
    let port = free_port();
    let _gateway = spawn_gateway(
        &env,
        &[],
        &[
            ("PORT", port.to_string()),
            ("AI_SERVICE_URL", ai.stub.url()),
            ("ADMIN_ACCESS_TOKEN", "fault-admin".to_owned()),
            ("REDIS_BREAKER_COOLDOWN_MS", "1000".to_owned()),
            ("CONSUMER_BLOCK_MS", "100".to_owned()),
            ("CONSUMER_SWEEP_MS", "500".to_owned()),
            ("RATE_LIMIT_CONVERSATION_MAX", "0".to_owned()),
            ("RATE_LIMIT_PAGE_MAX", "0".to_owned()),
        ],
    );
    wait_port(port).await;
    let client = reqwest::Client::new();
    // Sends until accepted (a 503 is retried, as Pancake does); the status.
    let send = |conversation: String, id: String, ts: f64| {
        let client = client.clone();
        async move {
            let body = common::message(&conversation, &id, &format!("câu hỏi {id}"), ts);
            let (result, _) = send_until_accepted(&client, port, &body, Duration::from_millis(50)).await;
            let field = |name: &str| result[name].as_str().unwrap_or_default().to_owned();
            (field("storage_backend"), field("status"))
        }
    };
    drop(redis_server); // SIGKILL: Redis is gone for the whole burst
    let total = 200;
    let backends: Vec<(String, String)> = futures::stream::iter(0..total)
        .map(|i| send(format!("down{}", i % 10), format!("d{i}"), 1000.0 + i as f64))
        .buffer_unordered(16)
        .collect()
        .await;
    let health = || async {
        let response = client.get(format!("http://127.0.0.1:{port}/api/v1/admin/health")).bearer_auth("fault-admin");
        response.send().await.unwrap().json::<Value>().await.unwrap()
    };
    let degraded_health = health().await;
    let covered_sql = "SELECT COUNT(DISTINCT id) FROM (SELECT unnest(covered_message_ids) AS id FROM ai_responses) c";
    let covered = wait_count(&env, covered_sql, total as i64, Duration::from_secs(60)).await;
    let doubled_sql =
        "SELECT COUNT(*) - COUNT(DISTINCT id) FROM (SELECT unnest(covered_message_ids) AS id FROM ai_responses) c";
    let stored = env.count("SELECT COUNT(*) FROM messages").await;
    report("Redis down for a whole burst (degraded mode)", total, stored, env.count(doubled_sql).await);
    assert!(backends.iter().all(|(b, _)| b == "Postgres"), "every message went the degraded path");
    assert_eq!(degraded_health["status"], "degraded", "{degraded_health}");
    assert_eq!(degraded_health["storage_backend"], "Postgres (degraded mode)");
    assert_eq!(stored, total as i64);
    assert_eq!(covered, total as i64, "every message covered by an answer");
    assert_eq!(env.count(doubled_sql).await, 0, "no message answered twice");
    assert_eq!(ai.max_overlap.load(Ordering::SeqCst), 1, "the advisory lock kept AI calls apart");

    // Redis back (empty): answers go through Redis again, retries stay duplicates.
    let _redis_server = start_redis();
    wait_port(redis_port).await;
    // The breaker closes at the first successful probe after its cooldown
    // (health's PING is one).
    let mut breaker = Value::Null;
    for _ in 0..100 {
        breaker = health().await["circuit_breaker"]["state"].clone();
        if breaker == "closed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(breaker, "closed");
    let (retried, status) = send("down0".into(), "d0".into(), 1000.0).await;
    assert_eq!((retried.as_str(), status.as_str()), ("Redis", "duplicate"), "a degraded message retried after");
    let after: Vec<(String, String)> = futures::stream::iter(0..20)
        .map(|i| send(format!("down{}", i % 10), format!("after{i}"), 5000.0 + i as f64))
        .buffer_unordered(4)
        .collect()
        .await;
    assert!(after.iter().all(|(b, _)| b == "Redis"), "{after:?}");
    let stored = wait_count(&env, "SELECT COUNT(*) FROM messages", total as i64 + 20, Duration::from_secs(60)).await;
    let covered = wait_count(&env, covered_sql, total as i64 + 20, Duration::from_secs(60)).await;
    assert_eq!(stored, total as i64 + 20);
    assert_eq!(covered, total as i64 + 20);
    assert_eq!(env.count(doubled_sql).await, 0, "nothing answered twice across the switch back");
}
