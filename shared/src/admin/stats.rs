//! `GET /api/v1/admin/stats` (seed 001's shape plus Postgres, queue, cache
//! and AI figures) and `GET /api/v1/admin/conversations` (cursor-paginated,
//! filterable by status, enriched with live Redis state).

use http::{Request, Response, StatusCode};
use serde_json::{Value, json};

use super::query_param;
use crate::{App, error::AppError, http::json_response, now_epoch_seconds};

/// "Recent" means a message within this many seconds.
const RECENT_SECS: f64 = 24.0 * 3600.0;

pub async fn stats(app: &App) -> Result<Response<bytes::Bytes>, AppError> {
    let client = app.db.get().await?;
    let now = now_epoch_seconds();
    let row = client
        .query_one(
            "SELECT COUNT(*),
                    COUNT(*) FILTER (WHERE last_message_timestamp >= $1),
                    COUNT(*) FILTER (WHERE last_message_timestamp < $1 OR last_message_timestamp IS NULL),
                    COUNT(*) FILTER (WHERE bot_paused),
                    (SELECT COUNT(*) FROM messages),
                    (SELECT COUNT(*) FROM ai_responses),
                    (SELECT COUNT(*) FROM customers),
                    (SELECT COALESCE(AVG(processing_time_ms), 0)::float8 FROM ai_responses WHERE created_at > now() - interval '24 hours'),
                    (SELECT COUNT(*) FROM ai_responses WHERE created_at > now() - interval '24 hours'),
                    (SELECT COUNT(*) FROM ai_responses WHERE created_at > now() - interval '24 hours' AND error IS NOT NULL)
               FROM conversations",
            &[&(now - RECENT_SECS)],
        )
        .await?;
    let actions = client.query("SELECT status, COUNT(*) FROM message_actions GROUP BY status", &[]).await?;
    let actions_by_status: serde_json::Map<String, Value> =
        actions.into_iter().map(|r| (r.get::<_, String>(0), json!(r.get::<_, i64>(1)))).collect();

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
    let active = app.store.owed_with_locks(u64::MAX, 1000).await?.iter().filter(|(_, _, locked)| *locked).count();
    let _ = app.cache.flush().await;
    let cache: serde_json::Map<String, Value> =
        app.cache.metrics().await?.into_iter().map(|(kind, m)| (kind.to_owned(), json!(m))).collect();

    Ok(json_response(
        StatusCode::OK,
        &json!({
            "timestamp": now,
            "conversations": {
                "total": row.get::<_, i64>(0),
                "recent": row.get::<_, i64>(1),
                "old": row.get::<_, i64>(2),
                "active_processing": active,
                "bot_paused": row.get::<_, i64>(3),
            },
            "redis_stats": {
                "connected_clients": number("connected_clients"),
                "used_memory_human": field("used_memory_human"),
                "keyspace_hits": number("keyspace_hits"),
                "keyspace_misses": number("keyspace_misses"),
            },
            "postgres_stats": {
                "messages": row.get::<_, i64>(4),
                "ai_responses": row.get::<_, i64>(5),
                "customers": row.get::<_, i64>(6),
                "actions_by_status": actions_by_status,
                "pool": {"size": app.db.status().size, "available": app.db.status().available},
            },
            "queue": {"depth": depth, "pending": pending, "dead_letters": dead},
            "cache": cache,
            "ai": {
                "avg_processing_time_ms_24h": row.get::<_, f64>(7),
                "responses_24h": row.get::<_, i64>(8),
                "errors_24h": row.get::<_, i64>(9),
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
        .map(|i| cursor.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    let value: Value = serde_json::from_slice(&bytes?).ok()?;
    Some((value.get(0)?.as_f64()?, value.get(1)?.as_str()?.to_owned()))
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
        && !matches!(s.as_str(), "active" | "ended" | "paused")
    {
        return Err(AppError::invalid("status", "must be active, ended or paused"));
    }
    let cursor = match query_param(request, "cursor") {
        None => None,
        Some(c) => Some(decode_cursor(&c).ok_or_else(|| AppError::invalid("cursor", "is not a cursor from this API"))?),
    };
    let (after_ts, after_id) = cursor.unwrap_or((f64::INFINITY, String::new()));
    let filter = "($1::text IS NULL OR ($1 = 'paused' AND bot_paused) OR ($1 <> 'paused' AND status = $1))";
    let client = app.db.get().await?;
    let total: i64 =
        client.query_one(&format!("SELECT COUNT(*) FROM conversations WHERE {filter}"), &[&status]).await?.get(0);
    let rows = client
        .query(
            &format!(
                "SELECT conversation_id, last_message_id, COALESCE(last_message_timestamp, 0)::float8, status, bot_paused,
                        total_messages, page_id
                   FROM conversations
                  WHERE {filter}
                    AND (COALESCE(last_message_timestamp, 0), conversation_id) < ($2::float8, $3::text)
                  ORDER BY COALESCE(last_message_timestamp, 0) DESC, conversation_id DESC
                  LIMIT $4"
            ),
            &[&status, &after_ts, &if after_id.is_empty() { "\u{10FFFF}".to_owned() } else { after_id }, &limit],
        )
        .await?;
    let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let live = app.store.conversation_states(&ids).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| encode_cursor(r.get(2), r.get::<_, &str>(0))))
        .flatten();
    let conversations: Vec<Value> = rows
        .iter()
        .zip(live)
        .map(|(r, (locked, context, owed))| {
            json!({
                "conversation_id": r.get::<_, String>(0),
                "last_message_id": r.get::<_, Option<String>>(1),
                "last_message_timestamp": r.get::<_, f64>(2),
                "ai_processing": locked,
                "context_size": context,
                "owed_messages": owed,
                "status": r.get::<_, String>(3),
                "bot_paused": r.get::<_, bool>(4),
                "total_messages": r.get::<_, i64>(5),
                "page_id": r.get::<_, Option<String>>(6),
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
