//! Live chat's pushes through the local gateway (issue 14): an agent's
//! `sendMessage` fanned out to 1, 10 and 100 sockets subscribed to the
//! conversation — the time from sending the frame to each socket's receipt
//! (p50, p99) — and how many WebSocket connections per second the gateway
//! accepts (each `$connect` checks a token and writes its DynamoDB item).
//! DynamoDB is moto's server, started here on loopback.
//!
//! Usage: `cargo build --profile perf -p bench --bin ws-fanout && cargo
//! build --profile perf -p local-gateway && ./target/perf/ws-fanout
//! [--sizes 1,10,100] [--rounds 50] [--connections 200] [--gateway-bin PATH]`.
//! Bounded: every wait has a deadline.

use std::{
    collections::HashMap,
    process::Stdio,
    time::{Duration, Instant},
};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::{connect_async, tungstenite::Message};

const AGENT: &str = "bench-agent-token-0123456789";
const ADMIN: &str = "bench-admin-token";

struct Args {
    sizes: Vec<usize>,
    rounds: usize,
    connections: usize,
    gateway_bin: String,
    database_url: String,
    redis_url: String,
}

fn args() -> Args {
    let mut args = Args {
        sizes: vec![1, 10, 100],
        rounds: 50,
        connections: 200,
        gateway_bin: "target/perf/local-gateway".into(),
        database_url: std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
        redis_url: std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match (flag.as_str(), it.next()) {
            ("--sizes", Some(v)) => args.sizes = v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
            ("--rounds", Some(v)) => args.rounds = v.parse().expect("a count"),
            ("--connections", Some(v)) => args.connections = v.parse().expect("a count"),
            ("--gateway-bin", Some(v)) => args.gateway_bin = v,
            (other, _) => panic!("unknown flag {other}"),
        }
    }
    args
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port()
}

async fn wait_http(url: &str) {
    for _ in 0..600 {
        if reqwest::get(url).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never answered");
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(ws_url: &str, token: &str) -> Ws {
    connect_async(format!("{ws_url}?token={token}")).await.expect("websocket").0
}

/// Reads frames until `wanted`, or gives up at `deadline`.
async fn until(ws: &mut Ws, deadline: Instant, wanted: impl Fn(&Value) -> bool) -> Option<Value> {
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline.into(), ws.next()).await {
        if let Message::Text(text) = message
            && let Ok(frame) = serde_json::from_str::<Value>(text.as_str())
            && wanted(&frame)
        {
            return Some(frame);
        }
    }
    None
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

/// One row: `n` watchers, `rounds` messages; every receipt's delay.
async fn fan_out(ws_url: &str, conversation: &str, n: usize, rounds: usize, run: &str) -> (Vec<Duration>, usize) {
    let mut watchers = Vec::with_capacity(n);
    for _ in 0..n {
        let mut ws = connect(ws_url, AGENT).await;
        ws.send(Message::text(json!({"action": "subscribe", "conversation_id": conversation}).to_string()))
            .await
            .expect("subscribe");
        until(&mut ws, Instant::now() + Duration::from_secs(30), |f| f["type"] == "subscribed")
            .await
            .expect("subscribed");
        watchers.push(ws);
    }
    let mut sender = connect(ws_url, AGENT).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let readers: Vec<_> = watchers
        .into_iter()
        .map(|mut ws| {
            let tx = tx.clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(120);
                while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline.into(), ws.next()).await {
                    if let Message::Text(text) = message
                        && let Ok(frame) = serde_json::from_str::<Value>(text.as_str())
                        && frame["type"] == "message"
                        && frame["sender_type"] == "agent"
                    {
                        let id = frame["client_message_id"].as_str().unwrap_or_default().to_owned();
                        if tx.send((id, Instant::now())).is_err() {
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    drop(tx);
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let mut delays = Vec::with_capacity(n * rounds);
    for round in 0..rounds {
        let id = format!("{run}-{round}");
        let frame = json!({"action": "sendMessage", "conversation_id": conversation, "client_message_id": id, "message": format!("bench {round}")});
        sent.insert(id.clone(), Instant::now());
        sender.send(Message::text(frame.to_string())).await.expect("send");
        // Wait for this round's receipts (all n), bounded, then the next.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = 0;
        while got < n {
            match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
                Ok(Some((id, at))) => {
                    if let Some(start) = sent.get(&id) {
                        delays.push(at - *start);
                        got += 1;
                    }
                }
                _ => break,
            }
        }
        until(&mut sender, Instant::now() + Duration::from_secs(10), |f| f["type"] == "status").await;
    }
    for reader in readers {
        reader.abort();
    }
    let expected = n * rounds;
    (delays, expected)
}

/// Connections accepted per second: `total` handshakes, 20 at a time.
async fn accept_rate(ws_url: &str, total: usize) -> (f64, usize) {
    let started = Instant::now();
    let opened: Vec<Option<Ws>> = futures::stream::iter(0..total)
        .map(|_| async move { connect_async(format!("{ws_url}?token={AGENT}")).await.ok().map(|(ws, _)| ws) })
        .buffer_unordered(20)
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let accepted = opened.iter().filter(|ws| ws.is_some()).count();
    (accepted as f64 / elapsed, accepted)
}

#[tokio::main]
async fn main() {
    let args = args();
    let _ = switchboard::app::http_client();
    let id = std::process::id();
    let moto_port = free_port();
    let mut moto = tokio::process::Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &moto_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("moto_server (pip install \"moto[server]\")");
    let moto_url = format!("http://127.0.0.1:{moto_port}");
    wait_http(&moto_url).await;

    let schema = format!("bench_ws_{id}");
    let port = free_port();
    let mut gateway = tokio::process::Command::new(&args.gateway_bin)
        .env("DATABASE_URL", &args.database_url)
        .env("POSTGRES_SCHEMA", &schema)
        .env("REDIS_URL", &args.redis_url)
        .env("REDIS_KEY_PREFIX", format!("bench:ws:{id}:"))
        .env("ADMIN_ACCESS_TOKEN", ADMIN)
        .env("AGENT_TOKENS", format!("bench={AGENT}"))
        .env("CHAT_TOKEN_SECRET", "bench-chat-token-secret-of-32-bytes")
        .env("CONNECTIONS_TABLE", format!("bench-connections-{id}"))
        .env("AWS_ENDPOINT_URL", &moto_url)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "warn")
        .env("PORT", port.to_string())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the local gateway (cargo build --profile perf -p local-gateway)");
    let url = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{url}/openapi.json")).await;
    let ws_url = format!("ws://127.0.0.1:{port}/ws");
    let session: Value = reqwest::Client::new()
        .post(format!("{url}/api/v1/chat/sessions"))
        .bearer_auth(ADMIN)
        .json(&json!({}))
        .send()
        .await
        .expect("session")
        .json()
        .await
        .expect("session body");
    let conversation = session["conversation_id"].as_str().expect("a conversation").to_owned();

    // Warm up: the pools, the table, the scripts.
    fan_out(&ws_url, &conversation, 2, 5, "warm").await;
    println!("| subscribed sockets | messages | receipts | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    for &n in &args.sizes {
        let (mut delays, expected) = fan_out(&ws_url, &conversation, n, args.rounds, &format!("n{n}")).await;
        delays.sort();
        println!(
            "| {n} | {} | {}/{expected} | {:.1} | {:.1} |",
            args.rounds,
            delays.len(),
            percentile(&delays, 0.5),
            percentile(&delays, 0.99)
        );
    }
    let (rate, accepted) = accept_rate(&ws_url, args.connections).await;
    println!();
    println!("connections accepted: {accepted}/{} at {rate:.0} per second (20 handshakes at a time)", args.connections);

    let _ = gateway.kill().await;
    let _ = moto.kill().await;
    if let Ok((client, connection)) = tokio_postgres::connect(&args.database_url, tokio_postgres::NoTls).await {
        tokio::spawn(connection);
        let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
    }
    if let Ok(client) = redis::Client::open(args.redis_url.as_str())
        && let Ok(mut conn) = client.get_multiplexed_async_connection().await
    {
        let keys: Vec<String> =
            redis::AsyncCommands::keys(&mut conn, format!("bench:ws:{id}:*")).await.unwrap_or_default();
        for key in keys {
            let _: Result<(), _> = redis::AsyncCommands::del(&mut conn, key).await;
        }
    }
}
