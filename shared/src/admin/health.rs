//! `GET /api/v1/admin/health`: Redis, Postgres and AI reachability with
//! latency, the job queue, stuck conversations and supported action types.
//!
//! `healthy` (200) when everything answers; `degraded` (200) when Redis, the
//! AI or Postgres alone is unreachable (answers or persistence continue in a
//! reduced form: with Redis away and the circuit breaker open, messages are
//! answered from Postgres and `storage_backend` says so); `unhealthy` (503)
//! when Redis and Postgres both are.

use std::time::Instant;

use http::{Response, StatusCode};
use serde_json::{Value, json};

use crate::{
    App, actions::SUPPORTED_ACTION_TYPES, clock::now_epoch_seconds, clock::now_ms, config::AiConfig, error::AppError,
    response::json_response,
};

/// A dependency check: up or not, and how long it took.
async fn check<F, T, E>(f: F) -> (bool, f64, Option<T>)
where
    F: std::future::Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let result = tokio::time::timeout(std::time::Duration::from_secs(2), f).await;
    let elapsed = crate::clock::elapsed_ms(started.elapsed());
    match result {
        Ok(Ok(v)) => (true, elapsed, Some(v)),
        _ => (false, elapsed, None),
    }
}

/// Live chat's connection registry: `not_configured` without
/// `CONNECTIONS_TABLE` (only live chat needs it).
async fn dynamodb_status(app: &App) -> Value {
    if !app.live.enabled() {
        return json!({"status": "not_configured"});
    }
    let (up, latency, _) = check(async { app.live.registry().await?.ping().await }).await;
    json!({"status": if up { "connected" } else { "unreachable" }, "latency_ms": latency})
}

/// Whether the configured AI answers at all (any HTTP status counts as reachable).
async fn ai_reachable(app: &App) -> (Value, bool) {
    let url = match &app.config.ai {
        AiConfig::Embedded => return (json!({"status": "embedded", "provider": "embedded"}), true),
        AiConfig::Http { url } => url.clone(),
        AiConfig::OpenAi { base_url, .. } => format!("{base_url}/models"),
    };
    let (up, latency, _) = check(app.http.get(&url).send()).await;
    let provider = if matches!(app.config.ai, AiConfig::Http { .. }) { "http" } else { "openai" };
    (json!({"status": if up { "reachable" } else { "unreachable" }, "provider": provider, "latency_ms": latency}), up)
}

pub async fn health(app: &App) -> Result<Response<bytes::Bytes>, AppError> {
    let mut conn = app.store.connection();
    let (redis_up, redis_ms, _) = check(redis::cmd("PING").query_async::<String>(&mut conn)).await;
    let (pg_up, pg_ms, total) = check(async {
        let client = app.db.get().await.map_err(|e| e.to_string())?;
        crate::postgres::admin::conversation_count(&**client).await.map_err(|e| e.to_string())
    })
    .await;
    let (ai, ai_up) = ai_reachable(app).await;
    let dynamodb = dynamodb_status(app).await;

    let mut queue = json!(null);
    let mut stuck = Vec::new();
    let mut active = 0;
    let mut memory = json!(null);
    if redis_up {
        let (depth, pending, dead) = app.store.queue_totals(&app.config.consumer.group).await?;
        queue = json!({"depth": depth, "pending": pending, "dead_letters": dead});
        let cutoff = now_ms().saturating_sub(crate::clock::millis(app.config.lock_ttl));
        for (id, since, locked) in app.store.owed_with_locks(cutoff, 100).await? {
            stuck.push(json!({
                "conversation_id": id,
                "owed_since": since / 1000.0,
                "reason": if locked { "processing_longer_than_lock_ttl" } else { "owed_answers_without_lock" },
            }));
        }
        // AI calls in flight in every process (not locked conversations: a
        // lock is also held while delivering, and a 4 s call is no stuck one).
        active = app.store.ai_calls_in_flight().await?;
        memory = memory_status(&mut conn).await;
    }

    let breaker = app.store.breaker();
    // Open: messages are answered from Postgres (degraded mode) until it closes.
    let degraded_path = breaker.state() != crate::redis::BreakerState::Closed && app.config.degraded_mode;
    let dynamodb_up = dynamodb["status"] != "unreachable";
    let status = match (redis_up, pg_up, ai_up && dynamodb_up) {
        (false, false, _) => "unhealthy",
        (true, true, true) => "healthy",
        _ => "degraded",
    };
    let body = json!({
        "status": status,
        "timestamp": now_epoch_seconds(),
        "statistics": {
            "total_conversations": total,
            "active_ai_tasks": active,
            "stuck_conversations": stuck.len(),
        },
        "redis_status": if redis_up { "connected" } else { "disconnected" },
        "storage_backend": if degraded_path { "Postgres (degraded mode)" } else { "Redis" },
        "circuit_breaker": {"state": breaker.state().as_str(), "trips": breaker.trips()},
        "stuck_conversations": stuck,
        "supported_action_types": SUPPORTED_ACTION_TYPES,
        "checks": {
            "redis": {"status": if redis_up { "connected" } else { "unreachable" }, "latency_ms": redis_ms, "memory": memory},
            "postgres": {"status": if pg_up { "connected" } else { "unreachable" }, "latency_ms": pg_ms},
            "ai": ai,
            "dynamodb": dynamodb,
        },
        "queue": queue,
    });
    let code = if status == "unhealthy" { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    Ok(json_response(code, &body))
}

/// Used memory against `maxmemory`; a warning above 80 % (DESIGN §7). On a
/// cluster, the fullest primary is the one that refuses writes first: it
/// is the one reported.
async fn memory_status(conn: &mut crate::redis::BreakerConnection) -> Value {
    let nodes = conn.inner().info("memory").await.unwrap_or_default();
    let fullest = nodes
        .iter()
        .map(|info| {
            let field = |name: &str| {
                info.lines().find_map(|l| l.strip_prefix(&format!("{name}:"))).map(|v| v.trim().to_owned())
            };
            let used: u64 = field("used_memory").and_then(|v| v.parse().ok()).unwrap_or(0);
            let max: u64 = field("maxmemory").and_then(|v| v.parse().ok()).unwrap_or(0);
            let ratio = if max == 0 { None } else { Some(used as f64 / max as f64) };
            (ratio, used, max, field("used_memory_human"), field("maxmemory_policy"))
        })
        .max_by(|a, b| a.0.unwrap_or(0.0).total_cmp(&b.0.unwrap_or(0.0)).then(a.1.cmp(&b.1)));
    let Some((ratio, _, max, used_human, policy)) = fullest else { return Value::Null };
    json!({
        "used_memory_human": used_human,
        "maxmemory": max,
        "maxmemory_policy": policy,
        "used_ratio": ratio,
        "warning": ratio.is_some_and(|r| r > 0.8).then_some("Redis memory above 80 % of maxmemory"),
        "nodes": nodes.len(),
    })
}
