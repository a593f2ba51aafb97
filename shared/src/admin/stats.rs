//! `GET /api/v1/admin/stats` (seed 001's shape plus Postgres, queue, cache
//! and AI figures) and `GET /api/v1/admin/conversations` (cursor-paginated,
//! filterable by status, enriched with live Redis state; `status=unanswered`
//! lists what reconciliation stored for the agents to answer).

use http::{Request, Response, StatusCode};
use serde_json::{Value, json};

use super::query_param;
use crate::{App, clock, error::AppError, postgres::admin as admin_rows, response::json_response};

/// "Recent" means a message within this many seconds.
const RECENT_SECS: f64 = 24.0 * 3600.0;

pub async fn stats(app: &App) -> Result<Response<bytes::Bytes>, AppError> {
    let now = clock::now_epoch_seconds();
    let client = app.db.get().await?;
    let figures = admin_rows::figures(&**client, now - RECENT_SECS).await?;
    // The streams keep the newest DEAD_LETTER_STREAM_MAX; Postgres keeps them all.
    let recorded_dead = crate::postgres::dead_letters::count(&**client).await?;
    drop(client);
    let conn = app.store.connection();
    // One INFO per primary on a cluster: counters are summed, texts taken
    // from the first node.
    let nodes = conn.inner().info("default").await?;
    let values = |name: &str| {
        let prefix = format!("{name}:");
        nodes
            .iter()
            .filter_map(move |info| info.lines().find_map(|l| l.strip_prefix(&prefix)).map(|v| v.trim().to_owned()))
            .collect::<Vec<_>>()
    };
    let field = |name: &str| values(name).into_iter().next();
    let number = |name: &str| values(name).iter().filter_map(|v| v.parse::<u64>().ok()).sum::<u64>();
    let (depth, pending, dead) = app.store.queue_totals(&app.config.consumer.group).await?;
    let auth_failures: serde_json::Map<String, Value> =
        app.store.auth_failures().await?.into_iter().map(|(route, n)| (route, json!(n))).collect();
    let active = app.store.owed_with_locks(u64::MAX, 1000).await?.iter().filter(|(_, _, locked)| *locked).count();
    let in_flight = app.store.ai_calls_in_flight().await?;
    let _ = app.cache.flush().await;
    let cache: serde_json::Map<String, Value> =
        app.cache.metrics().await?.into_iter().map(|(kind, m)| (kind.to_owned(), json!(m))).collect();

    Ok(json_response(
        StatusCode::OK,
        &json!({
            "timestamp": now,
            "conversations": {
                "total": figures.conversations,
                "recent": figures.recent,
                "old": figures.old,
                "active_processing": active,
                "bot_paused": figures.bot_paused,
            },
            "redis_stats": {
                "connected_clients": number("connected_clients"),
                "used_memory_human": field("used_memory_human"),
                "keyspace_hits": number("keyspace_hits"),
                "keyspace_misses": number("keyspace_misses"),
            },
            "postgres_stats": {
                "messages": figures.messages,
                "ai_responses": figures.ai_responses,
                "customers": figures.customers,
                "actions_by_status": figures.actions_by_status,
                "pool": {"size": app.db.status().size, "available": app.db.status().available},
            },
            "queue": {"depth": depth, "pending": pending, "dead_letters": dead, "dead_letters_recorded": recorded_dead},
            "security": {"auth_failures": auth_failures},
            "cache": cache,
            "ai": {
                "avg_processing_time_ms_24h": figures.avg_processing_time_ms_24h,
                "responses_24h": figures.responses_24h,
                "errors_24h": figures.errors_24h,
                "in_flight": in_flight,
            },
            "storage_backend": "Redis",
        }),
    ))
}

/// A page position: the last row's (timestamp, id), as an opaque hex string.
fn encode_cursor(ts: f64, id: &str) -> String {
    json!([ts, id]).to_string().bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_cursor(cursor: &str) -> Option<(f64, String)> {
    let bytes: Option<Vec<u8>> = (0..cursor.len())
        .step_by(2)
        .map(|i| {
            cursor
                .get(i..i + 2)
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    let value: Value = serde_json::from_slice(&bytes?).ok()?;
    // A NUL cannot be a stored id (Postgres text refuses it): not a cursor of ours.
    let id = value.get(1)?.as_str().filter(|id| !id.contains('\0'))?;
    Some((value.get(0)?.as_f64()?, id.to_owned()))
}

pub async fn conversations(app: &App, request: &Request<bytes::Bytes>) -> Result<Response<bytes::Bytes>, AppError> {
    let limit: i64 = match query_param(request, "limit") {
        None => 20,
        Some(v) => v
            .parse()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| AppError::invalid("limit", "must be 1 to 100"))?,
    };
    let status = query_param(request, "status");
    if let Some(s) = &status
        && !matches!(s.as_str(), "active" | "ended" | "paused" | "unanswered")
    {
        return Err(AppError::invalid("status", "must be active, ended, paused or unanswered"));
    }
    let cursor = match query_param(request, "cursor") {
        None => None,
        Some(c) => Some(decode_cursor(&c).ok_or_else(|| AppError::invalid("cursor", "is not a cursor from this API"))?),
    };
    let after = cursor.as_ref().map(|(ts, id)| (*ts, if id.is_empty() { "\u{10FFFF}" } else { id.as_str() }));
    let (total, rows) = admin_rows::conversation_page(&**app.db.get().await?, status.as_deref(), after, limit).await?;
    let ids: Vec<String> = rows.iter().map(|r| r.conversation_id.clone()).collect();
    let live = app.store.conversation_states(&ids).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| encode_cursor(r.last_message_timestamp, &r.conversation_id)))
        .flatten();
    let conversations: Vec<Value> = rows
        .into_iter()
        .zip(live)
        .map(|(r, (locked, context, owed))| {
            json!({
                "conversation_id": r.conversation_id,
                "last_message_id": r.last_message_id,
                "last_message_timestamp": r.last_message_timestamp,
                "ai_processing": locked,
                "context_size": context,
                "owed_messages": owed,
                "status": r.status,
                "bot_paused": r.bot_paused,
                "total_messages": r.total_messages,
                "page_id": r.page_id,
            })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "total_conversations": total,
            "conversations": conversations,
            "next_cursor": next,
            "storage_backend": "Redis",
        }),
    ))
}
