//! The plain HTTP provider: `POST AI_SERVICE_URL` with the assistant and the
//! context; the response carries seed 001's `ai_response` fields and an
//! optional `actions` array.

use futures::{FutureExt, future::BoxFuture};
use serde_json::json;

use super::{AiAnswer, AiError, AiProvider, AiRequest, answer_from_json};

#[derive(Debug, Clone)]
pub struct HttpAi {
    client: reqwest::Client,
    url: String,
}

impl HttpAi {
    pub fn new(client: reqwest::Client, url: String) -> Self {
        Self { client, url }
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
            let value: serde_json::Value =
                response.json().await.map_err(|e| AiError::BadResponse(e.without_url().to_string()))?;
            answer_from_json(&value, "ai-service")
        }
        .boxed()
    }
}
