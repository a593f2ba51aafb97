//! Live chat's HTTP side and its credentials.
//!
//! - `POST /api/v1/chat/sessions` mints a customer's token for one
//!   conversation: with the admin token (any customer, any conversation),
//!   or with the public `WIDGET_KEY` a website embeds (`X-Widget-Key`),
//!   rate-limited per source address. Without `conversation_id` it starts a
//!   web conversation; with one, it resumes it — through the widget key
//!   only for a caller holding a token of that conversation (expired
//!   within `CHAT_RESUME_WINDOW_SECONDS` is fine), since the widget key is
//!   public and a conversation id alone must never open a conversation.
//! - `GET /api/v1/chat/conversations/{id}/messages?after_seq=N&limit=L`:
//!   what a client missed, in sequence order — the truth pushes only hint
//!   at. A customer token reads its own conversation, an agent's or the
//!   admin token any.
//! - `GET /api/v1/chat/conversations`: the conversations list for an
//!   agent's token (the admin listing's fields).
//! - [`authenticate`]: who a token is (`$connect`'s `token` query
//!   parameter, and the history's bearer token).

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    App,
    admin::query_param,
    auth::{SourceIp, secrets_match},
    chat_token::{self, CustomerClaims, TokenError},
    clock::now_epoch_seconds,
    connections::Role,
    domain::{ConversationId, WEB_CONVERSATION_PREFIX, check_id},
    error::{AppError, AuthFailure},
    live::message_frame,
    postgres::chat,
    response::json_response,
};

/// Who a chat credential belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    /// The customer id, the agent's name, or `admin`.
    pub subject: String,
    /// A customer's one conversation.
    pub conversation_id: Option<String>,
}

/// The most messages one history read returns.
const MAX_HISTORY: i64 = 500;

/// Who `token` is: an agent token (by name), the admin token (agent
/// `admin`), or a valid, unexpired customer token. Every agent token is
/// compared (in constant time), whichever matches.
pub fn authenticate(app: &App, token: &str) -> Result<Caller, AppError> {
    let chat = &app.config.chat;
    let mut agent = None;
    for (name, secret) in &chat.agent_tokens {
        if secrets_match(token.as_bytes(), secret.expose().as_bytes()) {
            agent = Some(name.clone());
        }
    }
    if let Some(admin) = &app.config.admin_access_token
        && secrets_match(token.as_bytes(), admin.expose().as_bytes())
    {
        agent = Some("admin".into());
    }
    if let Some(subject) = agent {
        return Ok(Caller { role: Role::Agent, subject, conversation_id: None });
    }
    let Some(secret) = &chat.token_secret else {
        return Err(AppError::Unauthorized { reason: AuthFailure::Wrong });
    };
    match chat_token::verify(secret, token, now_epoch_seconds() as u64) {
        Ok(claims) => Ok(Caller {
            role: Role::Customer,
            subject: claims.customer_id,
            conversation_id: Some(claims.conversation_id),
        }),
        Err(_) => Err(AppError::Unauthorized { reason: AuthFailure::Wrong }),
    }
}

fn bearer(request: &Request<Bytes>) -> Result<&str, AppError> {
    crate::auth::bearer(request.headers())
}

/// `GET /api/v1/chat/conversations`: the agent console's list — the
/// admin listing (`limit`, `status`, `cursor`), for an agent's token too
/// (never a customer's).
pub async fn conversations(app: &App, request: &Request<Bytes>) -> Result<Response<Bytes>, AppError> {
    let caller = authenticate(app, bearer(request)?)?;
    if caller.role != Role::Agent {
        return Err(AppError::Forbidden);
    }
    crate::admin::stats::conversations(app, request).await
}

/// `GET /api/v1/chat/conversations/{id}/messages`.
pub async fn history(app: &App, id: &str, request: &Request<Bytes>) -> Result<Response<Bytes>, AppError> {
    let caller = authenticate(app, bearer(request)?)?;
    let conversation = ConversationId::parse(id)?;
    if caller.role == Role::Customer && caller.conversation_id.as_deref() != Some(conversation.as_str()) {
        return Err(AppError::Forbidden);
    }
    let after_seq = match query_param(request, "after_seq") {
        None => 0,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| AppError::invalid("after_seq", "must be a whole number from 0"))?,
    };
    let limit = match query_param(request, "limit") {
        None => 100,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_HISTORY).contains(n))
            .ok_or_else(|| AppError::invalid("limit", format!("must be from 1 to {MAX_HISTORY}")))?,
    };
    let client = app.db.get().await?;
    // One more than asked: whether there is more to read.
    let mut messages = chat::after(&**client, conversation.as_str(), after_seq, limit + 1).await?;
    let has_more = messages.len() as i64 > limit;
    messages.truncate(limit as usize);
    let last_seq = chat::last_seq(&**client, conversation.as_str()).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "success": true,
            "conversation_id": conversation.as_str(),
            "after_seq": after_seq,
            "messages": messages.iter().map(message_frame).collect::<Vec<_>>(),
            "has_more": has_more,
            "last_seq": last_seq,
        }),
    ))
}

/// `POST /api/v1/chat/sessions`.
pub async fn open_session(app: &App, request: &Request<Bytes>) -> Result<Response<Bytes>, AppError> {
    let chat_config = &app.config.chat;
    let admin = match (&app.config.admin_access_token, bearer(request)) {
        (Some(admin), Ok(given)) => {
            if !secrets_match(given.as_bytes(), admin.expose().as_bytes()) {
                return Err(AppError::Unauthorized { reason: AuthFailure::Wrong });
            }
            true
        }
        (None, Ok(_)) => return Err(AppError::Unauthorized { reason: AuthFailure::Wrong }),
        (_, Err(_)) => {
            let given = request.headers().get("x-widget-key").and_then(|v| v.to_str().ok());
            match (&chat_config.widget_key, given) {
                (_, None) => return Err(AppError::Unauthorized { reason: AuthFailure::Missing }),
                (None, Some(_)) => return Err(AppError::Unauthorized { reason: AuthFailure::NotConfigured }),
                (Some(key), Some(given)) if secrets_match(given.as_bytes(), key.expose().as_bytes()) => false,
                (Some(_), Some(_)) => return Err(AppError::Unauthorized { reason: AuthFailure::Wrong }),
            }
        }
    };
    let secret = chat_config.token_secret.as_ref().ok_or(AppError::Unavailable { dependency: "chat tokens" })?;
    let body: Value = if request.body().is_empty() {
        json!({})
    } else {
        serde_json::from_slice(request.body()).map_err(|_| AppError::invalid("body", "must be a JSON object"))?
    };
    let Value::Object(body) = body else { return Err(AppError::invalid("body", "must be a JSON object")) };
    let text = |field: &'static str| -> Result<Option<String>, AppError> {
        match body.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => check_id(field, s).map(|()| Some(s.clone())),
            Some(_) => Err(AppError::invalid(field, "must be a string")),
        }
    };
    let asked_conversation = text("conversation_id")?;
    let asked_customer = text("customer_id")?;
    let previous = match body.get("token") {
        None | Some(Value::Null) => None,
        Some(Value::String(token)) => Some(token.clone()),
        Some(_) => return Err(AppError::invalid("token", "must be a string")),
    };
    if !admin {
        let source = request.extensions().get::<SourceIp>().map_or("unknown", |s| s.0.as_str());
        if let Some(retry_after_secs) = app.store.count_session(source, chat_config.sessions_per_minute).await? {
            return Err(AppError::TooManyRequests { retry_after_secs });
        }
    }
    // Who the session is for, and whether it resumes a conversation.
    let now = now_epoch_seconds() as u64;
    if asked_conversation.as_deref().is_some_and(|c| !c.starts_with(WEB_CONVERSATION_PREFIX)) {
        return Err(AppError::invalid("conversation_id", "a web chat conversation's id starts with web-"));
    }
    let (conversation, customer, started_at) = match (admin, asked_conversation, previous) {
        (true, conversation, _) => (
            conversation.unwrap_or_else(|| format!("{WEB_CONVERSATION_PREFIX}{}", Uuid::new_v4())),
            asked_customer.unwrap_or_else(|| format!("visitor-{}", Uuid::new_v4())),
            now,
        ),
        (false, None, None) => {
            (format!("{WEB_CONVERSATION_PREFIX}{}", Uuid::new_v4()), format!("visitor-{}", Uuid::new_v4()), now)
        }
        (false, asked, Some(token)) => {
            let claims = resumable(app, secret, &token)?;
            if asked.as_deref().is_some_and(|c| c != claims.conversation_id) {
                return Err(AppError::Forbidden);
            }
            let started_at = session_start(&claims);
            (claims.conversation_id, claims.customer_id, started_at)
        }
        (false, Some(_), None) => {
            return Err(AppError::invalid("token", "is required to resume a conversation with the widget key"));
        }
    };
    let client = app.db.get().await?;
    let owner = chat::open_conversation(&**client, &conversation, &customer, "web").await?;
    if owner != customer {
        // The conversation is another customer's: only an admin could ask
        // for it, and even then the token names its real customer.
        if !admin {
            return Err(AppError::Forbidden);
        }
    }
    let last_seq = chat::last_seq(&**client, &conversation).await?;
    let expires_at = now + chat_config.token_ttl.as_secs();
    let claims =
        CustomerClaims { conversation_id: conversation.clone(), customer_id: owner.clone(), expires_at, started_at };
    let token = chat_token::mint(secret, &claims);
    Ok(json_response(
        StatusCode::CREATED,
        &json!({
            "success": true,
            "conversation_id": conversation,
            "customer_id": owner,
            "token": token,
            "expires_at": expires_at,
            "websocket_url": chat_config.public_url,
            "last_seq": last_seq,
        }),
    ))
}

/// When a token's session began (its expiry, for tokens without a start).
fn session_start(claims: &CustomerClaims) -> u64 {
    if claims.started_at == 0 { claims.expires_at } else { claims.started_at }
}

/// A previous token that may resume its conversation: signed by us, and
/// expired no longer ago than the resume window.
fn resumable(app: &App, secret: &crate::config::Secret, token: &str) -> Result<CustomerClaims, AppError> {
    let claims = chat_token::verify_signature(secret, token).map_err(|e| match e {
        TokenError::Malformed | TokenError::BadSignature | TokenError::Expired => {
            AppError::Unauthorized { reason: AuthFailure::Wrong }
        }
    })?;
    let now = now_epoch_seconds() as u64;
    // From the session's first token: resuming does not extend the window.
    if session_start(&claims) + app.config.chat.resume_window.as_secs() <= now {
        return Err(AppError::Unauthorized { reason: AuthFailure::Wrong });
    }
    Ok(claims)
}
