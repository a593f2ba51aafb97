//! `GET /api/v1/admin/actions?status=unknown` — actions by delivery status,
//! for the operators, newest change first, paged. Above all the `unknown`
//! ones: an unsafe integration call whose outcome nobody knows is recorded
//! `unknown` and never retried (a retry could do it twice), so a human must
//! look at it; `failed`, `pending` and `retrying` are listed the same way.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{page_limit, query_param};
use crate::{App, error::AppError, postgres::admin as admin_rows, response::json_response};

/// The statuses that can be listed: the ones a human may have to act on.
pub const LISTED_STATUSES: &[&str] = &["unknown", "failed", "pending", "retrying"];

/// Bounds of a cursor's time (µs since the epoch; the upper one is year
/// 5138), so a forged cursor is a `400`, never an out-of-range timestamp.
const MAX_CURSOR_MICROS: i64 = 100_000_000_000_000_000;

/// A page position: the last row's update time (µs) and id.
fn encode_cursor(micros: i64, id: &Uuid) -> String {
    format!("{micros}_{id}")
}

fn decode_cursor(cursor: &str) -> Option<(i64, Uuid)> {
    let (micros, id) = cursor.split_once('_')?;
    let micros = micros.parse::<i64>().ok().filter(|m| (0..=MAX_CURSOR_MICROS).contains(m))?;
    Some((micros, Uuid::parse_str(id).ok()?))
}

pub async fn list(app: &App, request: &Request<Bytes>) -> Result<Response<Bytes>, AppError> {
    let status = query_param(request, "status")
        .filter(|s| LISTED_STATUSES.contains(&s.as_str()))
        .ok_or_else(|| AppError::invalid("status", "must be unknown, failed, pending or retrying"))?;
    let limit = page_limit(request)?;
    let before = match query_param(request, "before") {
        None => None,
        Some(c) => {
            Some(decode_cursor(&c).ok_or_else(|| AppError::invalid("before", "is not a next_before of this API"))?)
        }
    };
    let rows = admin_rows::actions_page(&**app.db.get().await?, &status, before, limit).await?;
    let next =
        (rows.len() as i64 == limit).then(|| rows.last().map(|r| encode_cursor(r.updated_micros, &r.id))).flatten();
    let actions: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            json!({
                "action_id": r.id,
                "conversation_id": r.conversation_id,
                "response_id": r.response_id,
                "action_type": r.action_type,
                "data": r.data,
                "status": r.status,
                "retry_count": r.retry_count,
                "last_error": r.last_error,
                "pancake_message_id": r.pancake_message_id,
                "created_at": r.created_at,
                "updated_at": r.updated_at,
            })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"success": true, "status": status, "actions": actions, "next_before": next}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_a_forged_one_is_refused() {
        let id = Uuid::new_v4();
        assert_eq!(decode_cursor(&encode_cursor(1_796_122_049_023_981, &id)), Some((1_796_122_049_023_981, id)));
        for forged in ["", "12", "_", "-1_00000000-0000-0000-0000-000000000000", "9223372036854775807_x"] {
            assert_eq!(decode_cursor(forged), None, "{forged}");
        }
        assert_eq!(decode_cursor(&format!("{}_{id}", MAX_CURSOR_MICROS + 1)), None);
    }
}
