//! An OpenAI-compatible `chat/completions` provider (OpenAI, Azure OpenAI,
//! vLLM, Ollama…). The model is asked for a JSON object with seed 001's
//! fields; a plain-text answer is still used, as the reply text.

use futures::{FutureExt, future::BoxFuture};
use serde_json::{Value, json};

use super::{AiAnswer, AiError, AiProvider, AiRequest, answer_from_json};
use crate::body_cap::read_capped;
use crate::config::Secret;

const FORMAT_INSTRUCTIONS: &str = "Answer with one JSON object and nothing else: \
{\"response_text\": string, \"intent\": string, \"confidence\": number 0..1, \
\"entities\": object, \"actions\": [{\"type\": one of send_message, send_quick_replies, \
send_carousel, transfer_to_agent, collect_info, execute_api, end_conversation, \"data\": object}]}.";

#[derive(Debug, Clone)]
pub struct OpenAi {
    client: reqwest::Client,
    base_url: String,
    api_key: Secret,
    model: String,
    /// Largest answer read (`MAX_RESPONSE_BYTES`).
    max_body: usize,
}

impl OpenAi {
    pub fn new(client: reqwest::Client, base_url: String, api_key: Secret, model: String, max_body: usize) -> Self {
        Self { client, base_url, api_key, model, max_body }
    }
}

impl AiProvider for OpenAi {
    fn answer<'a>(&'a self, request: AiRequest<'a>) -> BoxFuture<'a, Result<AiAnswer, AiError>> {
        async move {
            // An assistant may name its own model; "embedded" (the default
            // assistant's) means "whatever this deployment is configured with".
            let model = match request.assistant.model.as_str() {
                "" | "embedded" => self.model.as_str(),
                m => m,
            };
            let mut messages = vec![json!({
                "role": "system",
                "content": format!("{}\n\n{FORMAT_INSTRUCTIONS}", request.assistant.system_prompt),
            })];
            messages.extend(request.context.iter().map(|entry| {
                let role = if entry.sender_type == "bot" { "assistant" } else { "user" };
                json!({ "role": role, "content": entry.content })
            }));
            let mut call = self.client.post(format!("{}/chat/completions", self.base_url)).json(&json!({
                "model": model,
                "temperature": request.assistant.temperature,
                "messages": messages,
            }));
            if !self.api_key.expose().is_empty() {
                call = call.bearer_auth(self.api_key.expose());
            }
            let response = call.send().await.map_err(|e| AiError::Transport(e.without_url().to_string()))?;
            let status = response.status();
            if !status.is_success() {
                return Err(AiError::BadResponse(format!("HTTP {status}")));
            }
            let body = read_capped(response, self.max_body).await.map_err(|e| AiError::BadResponse(e.to_string()))?;
            let body: Value =
                serde_json::from_slice(&body).map_err(|e| AiError::BadResponse(format!("not JSON: {e}")))?;
            let content = body["choices"][0]["message"]["content"]
                .as_str()
                .ok_or_else(|| AiError::BadResponse("choices[0].message.content is missing".into()))?;
            let model_used = body["model"].as_str().unwrap_or(model);
            Ok(parse_content(content, model_used))
        }
        .boxed()
    }
}

/// The model's content as JSON (also inside a ```json fence), else as plain text.
fn parse_content(content: &str, model_used: &str) -> AiAnswer {
    let trimmed = content.trim();
    let unfenced = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|s| s.strip_suffix("```"))
        .map(str::trim)
        .unwrap_or(trimmed);
    serde_json::from_str::<Value>(unfenced).ok().and_then(|v| answer_from_json(&v, model_used).ok()).unwrap_or_else(
        || AiAnswer {
            response_text: trimmed.to_owned(),
            intent: "unknown".into(),
            confidence: 0.5,
            entities: Default::default(),
            model_used: model_used.to_owned(),
            actions: None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_is_parsed_and_plain_text_falls_back() {
        let json =
            parse_content("```json\n{\"response_text\":\"Chào\",\"intent\":\"greeting\",\"confidence\":0.9}\n```", "m");
        assert_eq!((json.response_text.as_str(), json.intent.as_str()), ("Chào", "greeting"));
        let text = parse_content("Just words", "m");
        assert_eq!((text.response_text.as_str(), text.intent.as_str()), ("Just words", "unknown"));
    }
}
