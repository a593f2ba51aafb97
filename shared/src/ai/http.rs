//! The plain HTTP provider: `POST AI_SERVICE_URL` with the assistant and the
//! context; the response carries seed 001's `ai_response` fields and an
//! optional `actions` array.

use futures::{FutureExt, future::BoxFuture};
use serde_json::json;

use super::{AiAnswer, AiError, AiProvider, AiRequest, answer_from_json};
use crate::body_cap::read_capped;

#[derive(Debug, Clone)]
pub struct HttpAi {
    client: reqwest::Client,
    url: String,
    /// Largest answer read (`MAX_RESPONSE_BYTES`).
    max_body: usize,
}

impl HttpAi {
    pub fn new(client: reqwest::Client, url: String, max_body: usize) -> Self {
        Self { client, url, max_body }
    }
}

impl AiProvider for HttpAi {
    fn answer<'a>(&'a self, request: AiRequest<'a>) -> BoxFuture<'a, Result<AiAnswer, AiError>> {
        async move {
            let body = json!({
                "assistant": {
                    "id": request.assistant.id,
                    "name": request.assistant.name,
                    "system_prompt": request.assistant.system_prompt,
                    "model": request.assistant.model,
                    "temperature": request.assistant.temperature,
                    "collect_info_fields": request.assistant.collect_info_fields,
                },
                "conversation_id": request.conversation_id,
                "message": request.pending_text(),
                "pending_messages": request.pending,
                "context": request.context,
            });
            let response = self
                .client
                .post(&self.url)
                .json(&body)
                .send()
                .await
                .map_err(|e| AiError::Transport(e.without_url().to_string()))?;
            let status = response.status();
            if !status.is_success() {
                return Err(AiError::BadResponse(format!("HTTP {status}")));
            }
            let body = read_capped(response, self.max_body).await.map_err(|e| AiError::BadResponse(e.to_string()))?;
            let value: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| AiError::BadResponse(format!("not JSON: {e}")))?;
            answer_from_json(&value, "ai-service")
        }
        .boxed()
    }
}
