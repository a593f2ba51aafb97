//! `POST /api/v1/admin/pages/{page_id}/reconcile`: fetch from Pancake's API
//! what its webhook did not deliver (an outage here, a suspended webhook —
//! Pancake resumes with new events only — or a page cut off for any other
//! reason), admit it through the webhook's own admit path, and answer only
//! what is recent.
//!
//! The window is `since` and `until`, unix seconds (integers, as Pancake's
//! listing takes them), in the query string or a JSON body (the query wins);
//! `until` defaults to now, `since` to 24 hours before `until`. At most
//! [`MAX_WINDOW_SECS`]: Pancake's reference states no bound for the
//! listing, so the bound is ours (a month of a page's conversations is far
//! more than one call can walk; see `complete` below).
//!
//! The walk itself is [`walk`]. Its report: `pages_fetched` (Pancake
//! listing pages read, conversations' and messages'), `conversations_seen`,
//! `messages_found` (messages we did not have yet), `admitted`, `answered`
//! (queued for the bot), `stored_unanswered` (customer messages older than
//! `RECONCILE_ANSWER_WITHIN_SECS` or already followed by a reply from the
//! page: listed by `GET /api/v1/admin/conversations?status=unanswered`),
//! `from_page`, `bot_paused`, `duplicates`, `ignored`; `complete: false`
//! with `resume_until` when the call's time ran out (rerun with
//! `until=resume_until`, or the same window: both are safe).

mod walk;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use serde_json::{Value, json};

use super::{json_body, query_param};
use crate::{
    App, clock::now_epoch_seconds, domain::check_id, error::AppError, pancake::PancakeError, pipeline,
    response::json_response,
};

pub use walk::Report;

/// The default window: the last 24 hours.
pub const DEFAULT_WINDOW_SECS: i64 = 24 * 3600;
/// The largest window accepted (30 days).
pub const MAX_WINDOW_SECS: i64 = 30 * 24 * 3600;

/// The window to walk, in epoch seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub since: i64,
    pub until: i64,
}

pub async fn reconcile(app: &App, page_id: &str, request: &Request<Bytes>) -> Result<Response<Bytes>, AppError> {
    check_id("page_id", page_id)?;
    let window = window(request, now_epoch_seconds() as i64)?;
    if let Err(error) = app.pancake.serves(page_id) {
        return Err(AppError::Conflict(match error {
            PancakeError::Disabled => "Pancake's page API is not configured (PANCAKE_BASE_URL)".into(),
            _ => "no page access token is configured for this page \
                  (PANCAKE_PAGE_ACCESS_TOKENS or PANCAKE_PAGE_ACCESS_TOKEN)"
                .into(),
        }));
    }
    // Reconciliation writes through Redis only: with Redis away it waits
    // (the webhook, meanwhile, is served from Postgres).
    if app.store.breaker().is_open() {
        return Err(AppError::Unavailable { dependency: "redis" });
    }
    pipeline::degraded::restore_redis(app).await;
    let report = walk::walk(app, page_id, window).await?;
    tracing::info!(page_id, since = window.since, until = window.until, ?report, "reconciled");
    Ok(json_response(
        StatusCode::OK,
        &json!({"success": true, "page_id": page_id, "since": window.since,
                                              "until": window.until, "report": report}),
    ))
}

/// `since` and `until` from the query or the JSON body: `400` naming the field.
pub fn window(request: &Request<Bytes>, now: i64) -> Result<Window, AppError> {
    let body = json_body(request)?;
    let read = |field: &'static str| -> Result<Option<i64>, AppError> {
        let bad = || AppError::invalid(field, "must be unix seconds (a non-negative integer)");
        let value = match query_param(request, field) {
            Some(text) => Some(text.trim().parse::<i64>().map_err(|_| bad())?),
            None => match body.get(field) {
                None | Some(Value::Null) => None,
                Some(value) => Some(value.as_i64().ok_or_else(bad)?),
            },
        };
        // Up to the year 33658: far out, and no overflow below.
        value.map(|v| if (0..=1_000_000_000_000).contains(&v) { Ok(v) } else { Err(bad()) }).transpose()
    };
    let (since, until) = (read("since")?, read("until")?);
    let until = until.unwrap_or(now);
    let since = since.unwrap_or(until - DEFAULT_WINDOW_SECS).max(0);
    if since > now {
        return Err(AppError::invalid("since", "must not be in the future"));
    }
    if until <= since {
        return Err(AppError::invalid("until", "must be after since"));
    }
    if until - since > MAX_WINDOW_SECS {
        return Err(AppError::invalid(
            "since",
            format!("the window must be at most {MAX_WINDOW_SECS} seconds (30 days)"),
        ));
    }
    Ok(Window { since, until })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(query: &str, body: &str) -> Request<Bytes> {
        Request::builder()
            .uri(format!("/api/v1/admin/pages/p/reconcile{query}"))
            .body(Bytes::copy_from_slice(body.as_bytes()))
            .unwrap()
    }

    fn field(result: Result<Window, AppError>) -> &'static str {
        match result {
            Err(AppError::InvalidField { field, .. }) => field,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn the_window_defaults_to_the_last_day_and_reads_query_or_body() {
        let now = 1_800_000_000;
        assert_eq!(window(&request("", ""), now).unwrap(), Window { since: now - DEFAULT_WINDOW_SECS, until: now });
        assert_eq!(window(&request("?since=100&until=200", ""), now).unwrap(), Window { since: 100, until: 200 });
        assert_eq!(
            window(&request("", r#"{"since": 100, "until": 200}"#), now).unwrap(),
            Window { since: 100, until: 200 }
        );
        assert_eq!(window(&request("?until=500", r#"{"until": 200}"#), now).unwrap().until, 500);
    }

    #[test]
    fn a_bad_window_names_its_field() {
        let now = 1_800_000_000;
        assert_eq!(field(window(&request("?since=yesterday", ""), now)), "since");
        assert_eq!(field(window(&request("", r#"{"until": "soon"}"#), now)), "until");
        assert_eq!(field(window(&request("?since=-5", ""), now)), "since");
        assert_eq!(field(window(&request("?since=300&until=200", ""), now)), "until");
        assert_eq!(field(window(&request(&format!("?since={}", now + 10), ""), now)), "since");
        assert_eq!(field(window(&request(&format!("?since={}", now - MAX_WINDOW_SECS - 1), ""), now)), "since");
        assert!(window(&request(&format!("?since={}", now - MAX_WINDOW_SECS), ""), now).is_ok());
    }
}
