//! Seed 004's cache endpoints: `GET /api/cache/health`, `GET /api/cache/metrics`
//! (hit rate and latency per kind and overall against the > 80 % target),
//! `POST /api/cache/invalidate` (`assistant`, `thread`, `all`, and
//! `integration` for cached `execute_api` GET responses), and warm-up by
//! `POST /api/cache/warmup {"assistantIds": […]}` or seed 004's own form
//! `POST /api/cache/metrics {"action": "warmup", "assistantIds": […]}`.

use std::time::Instant;

use http::{Request, Response, StatusCode};
use serde_json::{Map, Value, json};

use super::json_body;
use crate::{
    App,
    cache::CacheKind,
    clock::{self, now_epoch_seconds},
    domain::ConversationId,
    error::AppError,
    response::json_response,
};

/// The hit rate seed 004 asks operators to keep above.
pub const TARGET_HIT_RATE: f64 = 0.8;

pub async fn health(app: &App) -> Result<Response<bytes::Bytes>, AppError> {
    let started = Instant::now();
    let generations = app.cache.generations().await;
    let latency = clock::elapsed_ms(started.elapsed());
    let ttls: Map<String, Value> =
        CacheKind::ALL.iter().map(|k| (k.as_str().to_owned(), json!(k.ttl().as_secs()))).collect();
    let (status, code, generations) = match generations {
        Ok(g) => {
            ("healthy", StatusCode::OK, Value::Object(g.into_iter().map(|(k, v)| (k.to_owned(), json!(v))).collect()))
        }
        Err(_) => ("unhealthy", StatusCode::SERVICE_UNAVAILABLE, Value::Null),
    };
    Ok(json_response(
        code,
        &json!({
            "status": status,
            "redis": {"status": if code == StatusCode::OK { "connected" } else { "unreachable" }, "latency_ms": latency},
            "generations": generations,
            "ttl_seconds": ttls,
            "timestamp": now_epoch_seconds(),
        }),
    ))
}

pub async fn metrics(app: &App) -> Result<Response<bytes::Bytes>, AppError> {
    app.cache.flush().await?;
    let kinds = app.cache.metrics().await?;
    let (hits, misses): (u64, u64) = kinds.iter().fold((0, 0), |(h, m), (_, k)| (h + k.hits, m + k.misses));
    let reads = hits + misses;
    let avg = if reads == 0 {
        0.0
    } else {
        kinds.iter().map(|(_, k)| k.avg_latency_ms * (k.hits + k.misses) as f64).sum::<f64>() / reads as f64
    };
    let hit_rate = if reads == 0 { 0.0 } else { hits as f64 / reads as f64 };
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "kinds": kinds.into_iter().map(|(k, m)| (k.to_owned(), json!(m))).collect::<Map<String, Value>>(),
            "overall": {"hits": hits, "misses": misses, "hit_rate": hit_rate, "avg_latency_ms": avg},
            "target_hit_rate": TARGET_HIT_RATE,
            "meets_target": reads > 0 && hit_rate > TARGET_HIT_RATE,
            "timestamp": now_epoch_seconds(),
        }),
    ))
}

/// `POST /api/cache/metrics`: seed 004's warm-up form (the only action it has).
pub async fn metrics_action(app: &App, request: &Request<bytes::Bytes>) -> Result<Response<bytes::Bytes>, AppError> {
    let body = json_body(request)?;
    match body.get("action").and_then(Value::as_str) {
        Some("warmup") => warm(app, &body).await,
        _ => Err(AppError::invalid("action", "must be \"warmup\"")),
    }
}

pub async fn warmup(app: &App, request: &Request<bytes::Bytes>) -> Result<Response<bytes::Bytes>, AppError> {
    warm(app, &json_body(request)?).await
}

async fn warm(app: &App, body: &Map<String, Value>) -> Result<Response<bytes::Bytes>, AppError> {
    let ids: Vec<String> = match body.get("assistantIds") {
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= 100 => items
            .iter()
            .map(|v| v.as_str().filter(|s| ConversationId::parse(s).is_ok()).map(String::from))
            .collect::<Option<_>>()
            .ok_or_else(|| AppError::invalid("assistantIds", "must be valid ids"))?,
        _ => return Err(AppError::invalid("assistantIds", "must be an array of 1 to 100 assistant ids")),
    };
    let started = Instant::now();
    let (loaded, unknown) = app.assistants.warm(&ids).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"success": true, "warmed": loaded, "unknown": unknown, "elapsed_ms": clock::elapsed_ms(started.elapsed())}),
    ))
}

pub async fn invalidate(app: &App, request: &Request<bytes::Bytes>) -> Result<Response<bytes::Bytes>, AppError> {
    let body = json_body(request)?;
    let id_field = |field: &'static str| -> Result<String, AppError> {
        body.get(field)
            .and_then(Value::as_str)
            .filter(|s| ConversationId::parse(s).is_ok())
            .map(String::from)
            .ok_or_else(|| AppError::invalid(field, "is required"))
    };
    let invalidated = match body.get("type").and_then(Value::as_str) {
        Some("assistant") => {
            let id = id_field("assistantId")?;
            app.assistants.invalidate(&id).await?;
            json!({"type": "assistant", "assistantId": id})
        }
        Some("thread") => {
            let id = id_field("threadId")?;
            let conversation = ConversationId::parse(&id)?;
            app.cache.invalidate_scope(CacheKind::Thread, &id).await?;
            let cleared = app.store.clear_context(&conversation).await?;
            json!({"type": "thread", "threadId": id, "context_cleared": cleared})
        }
        Some("integration") => {
            let name = body
                .get("integration")
                .and_then(Value::as_str)
                .ok_or_else(|| AppError::invalid("integration", "is required"))?;
            app.integrations
                .invalidate(name)
                .await
                .map_err(|_| AppError::invalid("integration", "is not a configured integration"))?;
            json!({"type": "integration", "integration": name})
        }
        Some("all") => {
            app.cache.invalidate_all().await?;
            json!({"type": "all"})
        }
        _ => return Err(AppError::invalid("type", "must be assistant, thread, integration or all")),
    };
    Ok(json_response(StatusCode::OK, &json!({"success": true, "invalidated": invalidated})))
}
