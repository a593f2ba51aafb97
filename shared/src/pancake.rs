//! The client for Pancake's page API: send a message
//! (`POST /pages/{page_id}/conversations/{conversation_id}/messages`,
//! `{"action": "reply_inbox", "message": …}`) and assign staff
//! (`POST …/assign`, `{"assignee_ids": […]}`), authenticated by the
//! `page_access_token` query parameter.
//!
//! With no `PANCAKE_BASE_URL`, delivery is *disabled*: every action is
//! reported as not sent, never silently dropped.

use serde_json::{Value, json};

use crate::body_cap::read_capped;
use crate::config::{Config, Secret};

#[derive(Debug, thiserror::Error)]
pub enum PancakeError {
    #[error("Pancake delivery is disabled (PANCAKE_BASE_URL is not set)")]
    Disabled,
    #[error("no page access token is configured (PANCAKE_PAGE_ACCESS_TOKEN)")]
    NoToken,
    #[error("Pancake could not be reached: {0}")]
    Transport(String),
    #[error("Pancake answered HTTP {status}: {body}")]
    Rejected { status: u16, body: String },
}

impl PancakeError {
    /// 429 and 5xx are worth retrying from the job stream; the rest are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport(_) => true,
            Self::Rejected { status, .. } => *status == 429 || *status >= 500,
            Self::Disabled | Self::NoToken => false,
        }
    }
}

/// How long one Pancake call may take: it bounds how far a delivery already
/// in flight can run past `DELIVERY_BUDGET_MS`.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Pancake {
    client: reqwest::Client,
    base_url: Option<String>,
    page_access_token: Option<Secret>,
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
        Ok(reply.get("id").and_then(|id| match id {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }))
    }

    /// Assigns the configured staff to the conversation.
    pub async fn assign(&self, page_id: &str, conversation_id: &str) -> Result<(), PancakeError> {
        let body = json!({ "assignee_ids": self.assign_user_ids });
        self.post(page_id, conversation_id, "assign", &body).await.map(drop)
    }

    async fn post(
        &self,
        page_id: &str,
        conversation_id: &str,
        tail: &str,
        body: &Value,
    ) -> Result<Value, PancakeError> {
        let base = self.base_url.as_deref().ok_or(PancakeError::Disabled)?;
        let token = self.page_access_token.as_ref().ok_or(PancakeError::NoToken)?;
        let mut url = reqwest::Url::parse(base).map_err(|e| PancakeError::Transport(e.to_string()))?;
        url.path_segments_mut()
            .map_err(|_| PancakeError::Transport("PANCAKE_BASE_URL cannot be a base".into()))?
            .pop_if_empty()
            .extend(["pages", page_id, "conversations", conversation_id, tail]);
        url.query_pairs_mut().append_pair("page_access_token", token.expose());
        // `without_url`: the URL carries the page token and must not reach a log.
        let response = self
            .client
            .post(url)
            .json(body)
            .timeout(SEND_TIMEOUT)
            .send()
            .await
            .map_err(|e| PancakeError::Transport(e.without_url().to_string()))?;
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
