//! Message-path benchmark (issue 2): `handle-message` with the embedded AI
//! over distinct conversations, at concurrency 1 and 32, in-process (the
//! router called directly, as the Lambda adapter does) and through the local
//! gateway (a child process on a free loopback port, real HTTP).
//!
//! Reports p50/p99 latency, throughput, and Redis commands per message from
//! `INFO commandstats` (client-issued `EVALSHA` calls and the commands the
//! scripts run inside Redis, separately). Bounded in count and time; loopback
//! only. Figures and the command go to BENCHMARKS.md.
//!
//! Usage: `cargo build --profile perf -p bench -p local-gateway &&
//! ./target/perf/message-path [--messages N] [--gateway-bin PATH] [--redis-down]`
//!
//! `REDIS_URL` may be a cluster's node list. `--redis-down` points the app
//! at a closed port: the circuit breaker opens during the warm-up and every
//! measured message takes the degraded path (Postgres advisory lock, direct
//! writes).

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::{StreamExt, stream};
use serde_json::json;
use switchboard::{
    App, Config,
    redis::{RedisConnection, Timeouts},
};

const TOKEN: &str = "bench-token";
/// No run may take longer than this, whatever N is.
const TIME_CAP: Duration = Duration::from_secs(60);

struct Args {
    messages: usize,
    gateway_bin: String,
    database_url: String,
    redis_url: String,
    redis_down: bool,
}

fn args() -> Args {
    let mut args = Args {
        messages: 20_000,
        gateway_bin: "target/perf/local-gateway".into(),
        database_url: std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
        redis_url: std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into()),
        redis_down: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--redis-down" {
            args.redis_down = true;
            continue;
        }
        match (flag.as_str(), it.next()) {
            ("--messages", Some(n)) => args.messages = n.parse().unwrap_or(args.messages),
            ("--gateway-bin", Some(p)) => args.gateway_bin = p,
            _ => eprintln!("ignored argument {flag}"),
        }
    }
    args
}

fn body(run: &str, i: usize) -> String {
    json!({
        "conversation_id": format!("{run}-c{i}"),
        "message_id": format!("m{i}"),
        "message_content": "Tôi muốn đặt lịch khám bệnh",
        "sender_id": format!("u{i}"),
        "sender_type": "user",
        "timestamp": 1_699_123_456.789 + i as f64,
    })
    .to_string()
}

struct Run {
    label: String,
    latencies: Vec<Duration>,
    elapsed: Duration,
    redis: BTreeMap<String, u64>,
}

impl Run {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
    }
    fn row(&self) -> String {
        let n = self.latencies.len() as f64;
        // What the message path sends itself (Pancake delivery disabled):
        // its scripts and the cache reads (`MGET`, never run by a script).
        // The answer-cache `SET` on a miss cannot be told apart from the
        // scripts' own `SET`s and is left out.
        let client: u64 = ["evalsha", "eval", "script|load", "mget"].iter().filter_map(|c| self.redis.get(*c)).sum();
        let total: u64 = self.redis.values().sum();
        format!(
            "| {} | {} | {:.3} | {:.3} | {:.0} | {:.2} | {:.1} |",
            self.label,
            self.latencies.len(),
            self.percentile(0.50).as_secs_f64() * 1000.0,
            self.percentile(0.99).as_secs_f64() * 1000.0,
            n / self.elapsed.as_secs_f64(),
            client as f64 / n,
            total as f64 / n,
        )
    }
}

async fn redis_reset(redis: &mut RedisConnection) {
    // Every node of a cluster (CONFIG RESETSTAT is routed to all).
    let _: redis::Value = redis::cmd("CONFIG").arg("RESETSTAT").query_async(redis).await.expect("CONFIG RESETSTAT");
}

/// Calls per command since the last reset, summed over a cluster's
/// primaries (the INFO call itself excluded).
async fn redis_calls(redis: &mut RedisConnection) -> BTreeMap<String, u64> {
    let mut calls = BTreeMap::new();
    for info in redis.info("commandstats").await.expect("INFO") {
        for line in info.lines() {
            let Some((name, rest)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else { continue };
            let n: u64 =
                rest.split(',').find_map(|kv| kv.strip_prefix("calls=")).and_then(|v| v.parse().ok()).unwrap_or(0);
            if !matches!(name, "info" | "config" | "cluster") {
                *calls.entry(name.to_owned()).or_default() += n;
            }
        }
    }
    calls
}

async fn in_process(app: &App, run: &str, n: usize, concurrency: usize) -> (Vec<Duration>, Duration) {
    let started = Instant::now();
    let latencies: Vec<Duration> = stream::iter(0..n)
        .take_while(|_| futures::future::ready(started.elapsed() < TIME_CAP))
        .map(|i| async move {
            let request = http::Request::builder()
                .method("POST")
                .uri("/api/v1/enhanced-handle-message")
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(Bytes::from(body(run, i)))
                .expect("request");
            let t = Instant::now();
            let response = switchboard::http::route(app, request).await;
            // The warm-up of a --redis-down run meets 503s until the breaker opens.
            assert!(run == "warm" || response.status() == 200, "{:?}", response.body());
            t.elapsed()
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    (latencies, started.elapsed())
}

async fn through_gateway(url: &str, run: &str, n: usize, concurrency: usize) -> (Vec<Duration>, Duration) {
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().expect("client");
    let started = Instant::now();
    let latencies: Vec<Duration> = stream::iter(0..n)
        .take_while(|_| futures::future::ready(started.elapsed() < TIME_CAP))
        .map(|i| {
            let client = client.clone();
            async move {
                let t = Instant::now();
                let response = client
                    .post(format!("{url}/api/v1/enhanced-handle-message"))
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(body(run, i))
                    .send()
                    .await
                    .expect("gateway reachable");
                assert!(run == "gwarm" || response.status() == 200, "{}", response.status());
                let _ = response.bytes().await;
                t.elapsed()
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    (latencies, started.elapsed())
}

#[tokio::main]
async fn main() {
    let args = args();
    let id = std::process::id();
    let schema = format!("bench_{id}");
    let prefix = format!("bench:{id}:");
    let app_redis = if args.redis_down { "redis://127.0.0.1:1/0".to_owned() } else { args.redis_url.clone() };
    let env: Vec<(&str, String)> = vec![
        ("PANCAKE_ACCESS_TOKEN", TOKEN.into()),
        ("DATABASE_URL", args.database_url.clone()),
        ("POSTGRES_SCHEMA", schema.clone()),
        ("REDIS_URL", app_redis),
        // Degraded runs: once open, the breaker stays open for the whole run.
        ("REDIS_BREAKER_COOLDOWN_MS", "600000".into()),
        ("REDIS_KEY_PREFIX", prefix.clone()),
        ("RATE_LIMIT_CONVERSATION_MAX", "0".into()),
        ("RUST_LOG", "warn".into()),
    ];
    let config =
        Config::from_lookup(|k| env.iter().find(|(name, _)| *name == k).map(|(_, v)| v.clone())).expect("config");
    let app = Arc::new(App::build(config).expect("app"));
    app.migrate().await.expect("migrate");
    let timeouts = Timeouts { connect: Duration::from_secs(2), response: Duration::from_secs(5) };
    let mut redis =
        RedisConnection::open(&args.redis_url, args.redis_url.contains(','), None, timeouts).expect("redis");

    // Warm up: connections, script cache, assistant cache.
    in_process(&app, "warm", 200, 8).await;

    let mut runs = Vec::new();
    for concurrency in [1, 32] {
        let n = if concurrency == 1 { args.messages / 4 } else { args.messages };
        redis_reset(&mut redis).await;
        let (latencies, elapsed) = in_process(&app, &format!("ip{concurrency}"), n, concurrency).await;
        runs.push(Run {
            label: format!("in-process, concurrency {concurrency}"),
            latencies,
            elapsed,
            redis: redis_calls(&mut redis).await,
        });
    }

    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let mut gateway = tokio::process::Command::new(&args.gateway_bin)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("PORT", port.to_string())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the local gateway (build it with: cargo build --profile perf -p local-gateway)");
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    through_gateway(&url, "gwarm", 200, 8).await;
    for concurrency in [1, 32] {
        let n = if concurrency == 1 { args.messages / 4 } else { args.messages };
        redis_reset(&mut redis).await;
        let (latencies, elapsed) = through_gateway(&url, &format!("gw{concurrency}"), n, concurrency).await;
        runs.push(Run {
            label: format!("local gateway (HTTP), concurrency {concurrency}"),
            latencies,
            elapsed,
            redis: redis_calls(&mut redis).await,
        });
    }
    let _ = gateway.kill().await;

    println!(
        "| run | messages | p50 ms | p99 ms | messages/s | client Redis commands/msg (scripts + MGET) | Redis commands/msg incl. inside scripts |"
    );
    println!("|---|---|---|---|---|---|---|");
    for run in &runs {
        println!("{}", run.row());
    }
    if let Some(last) = runs.last() {
        println!("\nRedis commands (all, incl. inside scripts) per message, last run:");
        let n = last.latencies.len() as f64;
        for (name, calls) in &last.redis {
            println!("  {name:<20} {:.2}", *calls as f64 / n);
        }
    }

    // Leave nothing behind.
    if let Ok(client) = app.db.get().await {
        let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
    }
    for key in redis.scan_keys(&format!("{prefix}*")).await.unwrap_or_default() {
        let _: Result<(), _> = redis::AsyncCommands::del(&mut redis, key).await;
    }
}
