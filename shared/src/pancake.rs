//! The client for Pancake's page API: send a message
//! (`POST /pages/{page_id}/conversations/{conversation_id}/messages`,
//! `{"action": "reply_inbox", "message": …}`), look for a message already
//! sent (`GET` on the same path, to settle a send whose outcome is unknown)
//! and assign staff (`POST …/assign`, `{"assignee_ids": […]}`),
//! authenticated by the `page_access_token` query parameter (the page's own
//! from `PANCAKE_PAGE_ACCESS_TOKENS`, else `PANCAKE_PAGE_ACCESS_TOKEN`).
//! Reconciliation reads through it too: a page's conversations updated in a
//! window (`GET /pages/{page_id}/conversations`, Pancake's v2 API) and a
//! conversation's messages a page at a time (`GET …/messages`).
//!
//! With no `PANCAKE_BASE_URL`, delivery is *disabled*: every action is
//! reported as not sent, never silently dropped.

use serde_json::{Value, json};

use crate::body_cap::read_capped;
use crate::config::{Config, PANCAKE_CALL_TIMEOUT as SEND_TIMEOUT, Secret};
use crate::dates::parse_utc;

#[derive(Debug, thiserror::Error)]
pub enum PancakeError {
    #[error("Pancake delivery is disabled (PANCAKE_BASE_URL is not set)")]
    Disabled,
    #[error("no page access token is configured (PANCAKE_PAGE_ACCESS_TOKEN)")]
    NoToken,
    /// The request never left (no connection, or no URL to send it to).
    #[error("Pancake could not be reached: {0}")]
    Unreachable(String),
    /// The request may have left: a timeout or a connection lost mid-way.
    #[error("Pancake did not answer: {0}")]
    Transport(String),
    #[error("Pancake answered HTTP {status}: {body}")]
    Rejected { status: u16, body: String },
    /// A listing answered `200` with something that is not a listing.
    #[error("unreadable Pancake listing: {0}")]
    Unreadable(String),
}

impl PancakeError {
    /// 429, 5xx and network failures are worth retrying from the job
    /// stream; the rest are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable(_) | Self::Transport(_) => true,
            Self::Rejected { status, .. } => *status == 429 || *status >= 500,
            Self::Disabled | Self::NoToken | Self::Unreadable(_) => false,
        }
    }

    /// Whether Pancake may have acted on the request anyway: it left and no
    /// definite answer came back (a timeout, a cut connection, a 5xx). Such
    /// a send is looked for before it is retried, never blindly resent.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Self::Transport(_) => true,
            Self::Rejected { status, .. } => *status >= 500,
            Self::Unreachable(_) | Self::Disabled | Self::NoToken | Self::Unreadable(_) => false,
        }
    }
}

/// A message the page sent with the text looked for (see
/// [`Pancake::find_sent`]): Pancake's id for it, when it gives one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub message_id: Option<String>,
}

/// Messages Pancake returns per page of a conversation's messages.
pub const MESSAGES_PER_PAGE: usize = 30;

/// One conversation of a page's listing.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationSummary {
    pub id: String,
    /// `INBOX`, `COMMENT`, `LIVESTREAM`.
    pub kind: Option<String>,
    /// Its latest activity (epoch seconds), when readable.
    pub updated_at: Option<f64>,
    /// Who owns the thread (usually the customer), as Pancake gives it.
    pub from: Value,
}

/// One page of a conversation's messages.
#[derive(Debug, Clone, PartialEq)]
pub struct MessagePage {
    /// Newest first, as Pancake gives them.
    pub messages: Vec<Value>,
    /// The customer who owns the conversation (`conv_from`), when given.
    pub customer: Value,
}

/// A reqwest failure as a Pancake error: a request that could not connect
/// never left; anything else may have.
fn transport(error: reqwest::Error) -> PancakeError {
    let connect = error.is_connect() || error.is_builder();
    let text = error.without_url().to_string();
    if connect { PancakeError::Unreachable(text) } else { PancakeError::Transport(text) }
}

#[derive(Debug, Clone)]
pub struct Pancake {
    client: reqwest::Client,
    base_url: Option<String>,
    page_access_token: Option<Secret>,
    page_access_tokens: std::collections::HashMap<String, Secret>,
    assign_user_ids: Vec<String>,
    /// Largest reply read (`MAX_RESPONSE_BYTES`).
    max_body: usize,
}

impl Pancake {
    pub fn new(config: &Config, client: reqwest::Client) -> Self {
        Self {
            client,
            base_url: config.pancake_base_url.clone(),
            page_access_token: config.pancake_page_access_token.clone(),
            page_access_tokens: config.pancake_page_access_tokens.clone(),
            assign_user_ids: config.pancake_assign_user_ids.clone(),
            max_body: config.max_response_bytes,
        }
    }

    pub fn enabled(&self) -> bool {
        self.base_url.is_some()
    }

    /// Whether `transfer_to_agent` also assigns staff in Pancake.
    pub fn assigns(&self) -> bool {
        !self.assign_user_ids.is_empty()
    }

    /// Sends one text message; returns Pancake's message id when it gives one
    /// (remembered to recognise the echo webhook).
    pub async fn send_text(
        &self,
        page_id: &str,
        conversation_id: &str,
        text: &str,
    ) -> Result<Option<String>, PancakeError> {
        let body = json!({ "action": "reply_inbox", "message": text });
        let reply = self.post(page_id, conversation_id, "messages", &body).await?;
        Ok(id_of(reply.get("id")))
    }

    /// Assigns the configured staff to the conversation.
    pub async fn assign(&self, page_id: &str, conversation_id: &str) -> Result<(), PancakeError> {
        let body = json!({ "assignee_ids": self.assign_user_ids });
        self.post(page_id, conversation_id, "assign", &body).await.map(drop)
    }

    /// Looks for `text` among the conversation's newest messages (one page,
    /// the 30 newest) sent by the page at or after `since` (epoch seconds;
    /// a minute of clock skew allowed): how a send whose outcome is unknown
    /// is settled before anyone resends it (Pancake takes no idempotency
    /// key). Every match, newest first: the caller tells its own send from
    /// an earlier one with the same words.
    pub async fn find_sent(
        &self,
        page_id: &str,
        conversation_id: &str,
        text: &str,
        since: Option<f64>,
    ) -> Result<Vec<Match>, PancakeError> {
        let url = self.url(page_id, conversation_id, "messages")?;
        // `transport`: the URL carries the page token and must not reach a log.
        let response = self.client.get(url).timeout(SEND_TIMEOUT).send().await.map_err(transport)?;
        let status = response.status();
        let body = read_capped(response, self.max_body).await;
        if !status.is_success() {
            return Err(PancakeError::Rejected { status: status.as_u16(), body: String::new() });
        }
        // Anything but a listing is a failed look-up, never "not there": an
        // answer read as absent would resend a message the customer has.
        let unreadable = |why: &str| PancakeError::Transport(format!("unreadable message listing: {why}"));
        let body = body.map_err(|e| unreadable(&e.to_string()))?;
        let listing: Value = serde_json::from_slice(&body).map_err(|e| unreadable(&e.to_string()))?;
        if listing.get("success") == Some(&Value::Bool(false)) {
            return Err(unreadable("success is false"));
        }
        let messages =
            listing.get("messages").and_then(Value::as_array).ok_or_else(|| unreadable("no messages array"))?;
        let wanted = collapse(text);
        let found = messages.iter().filter(|m| {
            let from_page = id_of(m.pointer("/from/id")).as_deref() == Some(page_id);
            // The raw text as it is; the rendered one without its markup.
            let raw = m.get("original_message").and_then(Value::as_str).is_some_and(|t| collapse(t) == wanted);
            let rendered = m.get("message").and_then(Value::as_str).is_some_and(|t| plain(t) == wanted);
            let same_text = raw || rendered;
            let recent = match (since, m.get("inserted_at").and_then(Value::as_str).and_then(parse_utc)) {
                (Some(since), Some(at)) => at >= since - 60.0,
                _ => true,
            };
            from_page && same_text && recent
        });
        Ok(found.map(|m| Match { message_id: id_of(m.get("id")) }).collect())
    }

    /// The page's own token, else the shared one.
    fn token(&self, page_id: &str) -> Option<&Secret> {
        self.page_access_tokens.get(page_id).or(self.page_access_token.as_ref())
    }

    /// Whether the page API can be read for `page_id` (a base URL and a token).
    pub fn serves(&self, page_id: &str) -> Result<(), PancakeError> {
        self.base_url.as_ref().ok_or(PancakeError::Disabled)?;
        self.token(page_id).map(drop).ok_or(PancakeError::NoToken)
    }

    /// `{base}/pages/{page}/conversations/{conversation}/{tail}` with the token.
    fn url(&self, page_id: &str, conversation_id: &str, tail: &str) -> Result<reqwest::Url, PancakeError> {
        let base = self.base_url.as_deref().ok_or(PancakeError::Disabled)?;
        self.page_url(base, page_id, &["conversations", conversation_id, tail])
    }

    /// `{base}/pages/{page}/{segments…}?page_access_token=…`.
    fn page_url(&self, base: &str, page_id: &str, segments: &[&str]) -> Result<reqwest::Url, PancakeError> {
        let token = self.token(page_id).ok_or(PancakeError::NoToken)?;
        let mut url = reqwest::Url::parse(base).map_err(|e| PancakeError::Unreachable(e.to_string()))?;
        url.path_segments_mut()
            .map_err(|_| PancakeError::Unreachable("PANCAKE_BASE_URL cannot be a base".into()))?
            .pop_if_empty()
            .push("pages")
            .push(page_id)
            .extend(segments);
        url.query_pairs_mut().append_pair("page_access_token", token.expose());
        Ok(url)
    }

    /// One page (up to 60) of the page's conversations updated in
    /// `[since, until]` (epoch seconds), most recently updated first; the
    /// next page starts after `last_conversation_id`. Pancake serves this
    /// listing on its v2 API: a base URL ending in `/v1` is read as `/v2`
    /// here (any other base, a stand-in, as it is).
    pub async fn conversations(
        &self,
        page_id: &str,
        since: i64,
        until: i64,
        last_conversation_id: Option<&str>,
    ) -> Result<Vec<ConversationSummary>, PancakeError> {
        let base = self.base_url.as_deref().ok_or(PancakeError::Disabled)?;
        let base = base.strip_suffix("/v1").map_or_else(|| base.to_owned(), |stem| format!("{stem}/v2"));
        let mut url = self.page_url(&base, page_id, &["conversations"])?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("since", &since.to_string());
            query.append_pair("until", &until.to_string());
            query.append_pair("order_by", "updated_at");
            if let Some(last) = last_conversation_id {
                query.append_pair("last_conversation_id", last);
            }
        }
        let listing = self.get_listing(url).await?;
        let items = listing
            .get("conversations")
            .and_then(Value::as_array)
            .ok_or_else(|| PancakeError::Unreadable("no conversations array".into()))?;
        Ok(items
            .iter()
            .filter_map(|c| {
                Some(ConversationSummary {
                    id: id_of(c.get("id"))?,
                    kind: c.get("type").and_then(Value::as_str).map(String::from),
                    updated_at: c.get("updated_at").and_then(Value::as_str).and_then(parse_utc),
                    from: c.get("from").cloned().unwrap_or(Value::Null),
                })
            })
            .collect())
    }

    /// One page of a conversation's messages, newest first: the newest
    /// [`MESSAGES_PER_PAGE`] with `current_count` 0, and with `current_count`
    /// n the ones before the n newest (Pancake's paging by index).
    pub async fn messages(
        &self,
        page_id: &str,
        conversation_id: &str,
        current_count: usize,
    ) -> Result<MessagePage, PancakeError> {
        let mut url = self.url(page_id, conversation_id, "messages")?;
        if current_count > 0 {
            url.query_pairs_mut().append_pair("current_count", &current_count.to_string());
        }
        let listing = self.get_listing(url).await?;
        let messages = listing
            .get("messages")
            .and_then(Value::as_array)
            .ok_or_else(|| PancakeError::Unreadable("no messages array".into()))?
            .clone();
        Ok(MessagePage { messages, customer: listing.get("conv_from").cloned().unwrap_or(Value::Null) })
    }

    /// A `GET` of a listing: `200` with a JSON object whose `success` is not `false`.
    async fn get_listing(&self, url: reqwest::Url) -> Result<Value, PancakeError> {
        // `transport`: the URL carries the page token and must not reach a log.
        let response = self.client.get(url).timeout(SEND_TIMEOUT).send().await.map_err(transport)?;
        let status = response.status();
        let body = read_capped(response, self.max_body).await;
        if !status.is_success() {
            return Err(PancakeError::Rejected { status: status.as_u16(), body: String::new() });
        }
        let body = body.map_err(|e| PancakeError::Unreadable(e.to_string()))?;
        let listing: Value = serde_json::from_slice(&body).map_err(|e| PancakeError::Unreadable(e.to_string()))?;
        if !listing.is_object() || listing.get("success") == Some(&Value::Bool(false)) {
            return Err(PancakeError::Unreadable("not a successful listing".into()));
        }
        Ok(listing)
    }

    async fn post(
        &self,
        page_id: &str,
        conversation_id: &str,
        tail: &str,
        body: &Value,
    ) -> Result<Value, PancakeError> {
        let url = self.url(page_id, conversation_id, tail)?;
        // `transport`: the URL carries the page token and must not reach a log.
        let response = self.client.post(url).json(body).timeout(SEND_TIMEOUT).send().await.map_err(transport)?;
        let status = response.status();
        let body = read_capped(response, self.max_body).await;
        if !status.is_success() {
            let text = body.map(|b| String::from_utf8_lossy(&b).chars().take(300).collect()).unwrap_or_default();
            return Err(PancakeError::Rejected { status: status.as_u16(), body: text });
        }
        // Accepted: a reply too large (or cut) to read does not undo the
        // send, and retrying it would send the message twice.
        let Ok(body) = body else {
            tracing::warn!(status = status.as_u16(), "pancake accepted the send; its reply was not read");
            return Ok(Value::Null);
        };
        let text = String::from_utf8_lossy(&body);
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        // Pancake reports some failures as 200 with `"success": false`.
        if value.get("success") == Some(&Value::Bool(false)) {
            return Err(PancakeError::Rejected { status: status.as_u16(), body: text.chars().take(300).collect() });
        }
        Ok(value)
    }
}

/// Pancake's message id, a string or a number.
fn id_of(id: Option<&Value>) -> Option<String> {
    match id? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A text with its whitespace collapsed, as [`Pancake::find_sent`] compares.
fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Pancake's rendered `message` (e.g. `<div>…</div>`) as plain text: tags
/// (a `<` followed by a letter, `/` or `!`) read as a space, a few entities
/// decoded, whitespace collapsed. A `<` that starts no tag (`<3`, `< 500k`)
/// is text.
fn plain(html: &str) -> String {
    let mut text = String::with_capacity(html.len());
    let mut chars = html.chars().peekable();
    while let Some(c) = chars.next() {
        let starts_tag = c == '<' && chars.peek().is_some_and(|n| n.is_ascii_alphabetic() || matches!(n, '/' | '!'));
        if starts_tag {
            for t in chars.by_ref() {
                if t == '>' {
                    break;
                }
            }
            text.push(' ');
        } else {
            text.push(c);
        }
    }
    let text = text.replace("&nbsp;", " ").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"");
    collapse(&text.replace("&#39;", "'").replace("&amp;", "&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_and_raw_texts_compare_equal() {
        assert_eq!(plain("<div>Dạ  còn hàng ạ</div>"), collapse("Dạ còn hàng ạ"));
        assert_eq!(plain("1 &lt; 2 &amp; 3"), "1 < 2 & 3");
        assert_eq!(plain("a<br>1. M<br/>2. L"), collapse("a\n1. M\n2. L"));
        assert_eq!(plain("Cảm ơn <3"), "Cảm ơn <3");
        assert_eq!(plain("giá < 500k, còn <b>2</b> cái"), "giá < 500k, còn 2 cái");
        assert_ne!(plain("Cảm ơn <3 nhé"), plain("Cảm ơn <3"));
    }
}
