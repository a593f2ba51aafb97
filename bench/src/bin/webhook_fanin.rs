//! Webhook fan-in through the local gateway (issue 13): N customers each
//! send one webhook message to N different conversations at once; a stub AI
//! takes D per call. Measures the seconds from the first webhook until
//! every conversation's reply reached the stub Pancake, and the most AI
//! calls in flight at once — with the gateway's inline hand-off (what the
//! `process-conversation` Lambda does in AWS) and with the consumer alone
//! (`HANDOFF=none`).
//!
//! Usage: `cargo build --profile perf -p bench --bin webhook-fanin && cargo
//! build --profile perf -p local-gateway && ./target/perf/webhook-fanin
//! [--sizes 10,100,500] [--ai-delay-ms 1000] [--gateway-bin PATH]`.
//! Bounded: each row waits at most two minutes.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, extract::State, http::Uri};
use serde_json::{Value, json};

const SECRET: &str = "bench-hook-secret";
const PAGE: &str = "page_bench";

struct Args {
    sizes: Vec<usize>,
    ai_delay: Duration,
    gateway_bin: String,
    database_url: String,
    redis_url: String,
}

fn args() -> Args {
    let mut args = Args {
        sizes: vec![10, 100, 500],
        ai_delay: Duration::from_millis(1_000),
        gateway_bin: "target/perf/local-gateway".into(),
        database_url: std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
        redis_url: std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match (flag.as_str(), it.next()) {
            ("--sizes", Some(v)) => args.sizes = v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
            ("--ai-delay-ms", Some(v)) => args.ai_delay = Duration::from_millis(v.parse().expect("milliseconds")),
            ("--gateway-bin", Some(v)) => args.gateway_bin = v,
            (other, _) => panic!("unknown flag {other}"),
        }
    }
    args
}

/// What the stubs saw.
#[derive(Default)]
struct Seen {
    ai_now: AtomicUsize,
    ai_max: AtomicUsize,
    /// Conversations that got a reply.
    replied: Mutex<HashSet<String>>,
    sends: AtomicUsize,
}

async fn ai(State((seen, delay)): State<(Arc<Seen>, Duration)>) -> axum::Json<Value> {
    let now = seen.ai_now.fetch_add(1, Ordering::SeqCst) + 1;
    seen.ai_max.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(delay).await;
    seen.ai_now.fetch_sub(1, Ordering::SeqCst);
    axum::Json(json!({"response_text": "Dạ shop còn hàng ạ", "intent": "stock", "confidence": 0.9}))
}

async fn pancake(State(seen): State<Arc<Seen>>, uri: Uri) -> axum::Json<Value> {
    // `/pages/{page}/conversations/{conversation}/messages`
    let conversation = uri.path().split('/').skip_while(|s| *s != "conversations").nth(1).unwrap_or_default();
    let n = seen.sends.fetch_add(1, Ordering::SeqCst);
    seen.replied.lock().expect("lock").insert(conversation.to_owned());
    axum::Json(json!({"success": true, "id": format!("bench_msg_{n}")}))
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
    url
}

fn event(conversation: &str) -> String {
    json!({
        "event_type": "messaging",
        "page_id": PAGE,
        "data": {
            "conversation": {"id": conversation, "from": {"id": format!("cust_{conversation}")}},
            "message": {"id": format!("{conversation}_m1"), "conversation_id": conversation,
                        // A text of its own: the answer cache must not answer it.
                        "message": format!("{conversation}: còn áo size M không?"), "type": "INBOX",
                        "from": {"id": format!("cust_{conversation}")}, "page_id": PAGE}
        }
    })
    .to_string()
}

/// One row: N webhooks at once, then wait for N replies.
async fn row(url: &str, seen: &Seen, run: &str, n: usize) -> (Duration, usize, usize) {
    seen.ai_max.store(0, Ordering::SeqCst);
    seen.replied.lock().expect("lock").clear();
    let client = switchboard::app::http_client().expect("client");
    let started = Instant::now();
    let acks = futures::future::join_all((0..n).map(|i| {
        let (client, body) = (client.clone(), event(&format!("{run}_{i}")));
        async move {
            client
                .post(format!("{url}/api/v1/pancake/webhook?token={SECRET}"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false)
        }
    }))
    .await;
    let acknowledged = acks.iter().filter(|ok| **ok).count();
    while seen.replied.lock().expect("lock").len() < n && started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let replied = seen.replied.lock().expect("lock").len();
    (started.elapsed(), seen.ai_max.load(Ordering::SeqCst), replied.min(acknowledged))
}

#[tokio::main]
async fn main() {
    let args = args();
    // reqwest is built without a provider: the library's one (ring).
    let _ = switchboard::app::http_client();
    let seen = Arc::new(Seen::default());
    let ai_url = serve(Router::new().fallback(ai).with_state((seen.clone(), args.ai_delay))).await;
    let pancake_url = serve(Router::new().fallback(pancake).with_state(seen.clone())).await;
    let id = std::process::id();
    println!(
        "| hand-off | conversations | AI delay | seconds until all answered | max AI calls in flight | answered |"
    );
    println!("|---|---|---|---|---|---|");
    for handoff in ["inline", "none"] {
        let schema = format!("bench_fanin_{id}_{handoff}");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let mut gateway = tokio::process::Command::new(&args.gateway_bin)
            .env("PANCAKE_ACCESS_TOKEN", "bench-token")
            .env("PANCAKE_WEBHOOK_SECRET", SECRET)
            .env("PANCAKE_BASE_URL", &pancake_url)
            .env("PANCAKE_PAGE_ACCESS_TOKEN", "bench-page-token")
            .env("AI_SERVICE_URL", &ai_url)
            .env("DATABASE_URL", &args.database_url)
            .env("POSTGRES_SCHEMA", &schema)
            .env("REDIS_URL", &args.redis_url)
            .env("REDIS_KEY_PREFIX", format!("bench:fanin:{id}:{handoff}:"))
            // The page's send quota would hold back a burst of 500 conversations.
            .env("RATE_LIMIT_PAGE_MAX", "0")
            .env("HANDOFF", handoff)
            .env("RUST_LOG", "warn")
            .env("PORT", port.to_string())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the local gateway (cargo build --profile perf -p local-gateway)");
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..300 {
            if reqwest::get(format!("{url}/api/v1/admin/health")).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Warm up: connections, scripts, the assistant cache.
        row(&url, &seen, &format!("warm{handoff}"), 5).await;
        for &n in &args.sizes {
            let (elapsed, most, answered) = row(&url, &seen, &format!("{handoff}{n}"), n).await;
            println!(
                "| {handoff} | {n} | {} ms | {:.2} | {most} | {answered}/{n} |",
                args.ai_delay.as_millis(),
                elapsed.as_secs_f64()
            );
        }
        let _ = gateway.kill().await;
        if let Ok((client, connection)) = tokio_postgres::connect(&args.database_url, tokio_postgres::NoTls).await {
            tokio::spawn(connection);
            let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
        }
    }
    if let Ok(client) = redis::Client::open(args.redis_url.as_str())
        && let Ok(mut conn) = client.get_multiplexed_async_connection().await
    {
        let keys: Vec<String> =
            redis::AsyncCommands::keys(&mut conn, format!("bench:fanin:{id}:*")).await.unwrap_or_default();
        for key in keys {
            let _: Result<(), _> = redis::AsyncCommands::del(&mut conn, key).await;
        }
    }
}
