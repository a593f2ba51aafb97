//! The AI behind one trait, [`AiProvider`], with three providers chosen by
//! configuration ([`crate::config::AiConfig`]): [`embedded`] rules (no outside
//! service), a plain [`http`] service, and an [`openai`]-compatible API.
//!
//! [`ask`] wraps every call with `AI_SERVICE_TIMEOUT`: on timeout or error the
//! customer gets the configured fallback reply and the error is recorded with
//! the answer, so a slow or broken AI never leaves a message unanswered.

pub mod embedded;
pub mod http;
pub mod openai;

use std::{sync::Arc, time::Instant};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    config::{AiConfig, Config},
    domain::{Assistant, ContextEntry, OwedMessage},
};

/// What a provider is asked.
#[derive(Debug, Clone, Copy)]
pub struct AiRequest<'a> {
    pub assistant: &'a Assistant,
    pub conversation_id: &'a str,
    /// The conversation in timestamp order, answers included.
    pub context: &'a [ContextEntry],
    /// The customer messages this answer must cover, in arrival order.
    pub pending: &'a [OwedMessage],
}

impl AiRequest<'_> {
    /// The text of the messages to answer (a burst reads as one message).
    pub fn pending_text(&self) -> String {
        let texts: Vec<&str> = self
            .pending
            .iter()
            .filter_map(|p| self.context.iter().find(|c| c.message_id == p.message_id))
            .map(|c| c.content.as_str())
            .collect();
        if texts.is_empty() {
            // Nothing owed (e.g. a re-drive after the owed set expired): answer the last customer line.
            self.context
                .iter()
                .rev()
                .find(|c| c.sender_type == "user" || c.sender_type == "customer")
                .map(|c| c.content.clone())
                .unwrap_or_default()
        } else {
            texts.join("\n")
        }
    }
}

/// A provider's answer, before action validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AiAnswer {
    pub response_text: String,
    pub intent: String,
    pub confidence: f64,
    pub entities: Map<String, Value>,
    pub model_used: String,
    /// Proposed actions as the provider sent them; validated by [`crate::actions`].
    pub actions: Option<Vec<Value>>,
}

#[derive(Debug, thiserror::Error)]
pub enum AiError {
    #[error("the AI service did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("the AI service could not be reached: {0}")]
    Transport(String),
    #[error("the AI service answered with an unusable response: {0}")]
    BadResponse(String),
}

pub trait AiProvider: Send + Sync + std::fmt::Debug {
    fn answer<'a>(&'a self, request: AiRequest<'a>) -> BoxFuture<'a, Result<AiAnswer, AiError>>;
}

/// An answer with its timing and, when the fallback was used, the error.
#[derive(Debug, Clone)]
pub struct AiOutcome {
    pub answer: AiAnswer,
    pub processing_time_ms: f64,
    pub error: Option<String>,
    /// Served from the answer cache, not the provider.
    pub cached: bool,
}

/// Builds the provider the configuration names.
pub fn provider(config: &Config, client: reqwest::Client) -> Arc<dyn AiProvider> {
    match &config.ai {
        AiConfig::Embedded => Arc::new(embedded::Embedded),
        AiConfig::Http { url } => Arc::new(http::HttpAi::new(client, url.clone(), config.max_response_bytes)),
        AiConfig::OpenAi { base_url, api_key, model } => Arc::new(openai::OpenAi::new(
            client,
            base_url.clone(),
            api_key.clone(),
            model.clone(),
            config.max_response_bytes,
        )),
    }
}

/// Asks `provider`, bounded by the timeout; falls back to `fallback_reply`.
pub async fn ask(provider: &dyn AiProvider, request: AiRequest<'_>, config: &Config) -> AiOutcome {
    let started = Instant::now();
    let result = match tokio::time::timeout(config.ai_timeout, provider.answer(request)).await {
        Ok(result) => result,
        Err(_) => Err(AiError::Timeout(config.ai_timeout)),
    };
    let processing_time_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(answer) => AiOutcome { answer: without_nul(answer), processing_time_ms, error: None, cached: false },
        Err(err) => {
            tracing::warn!(error = %err, conversation_id = request.conversation_id, "AI failed; fallback reply sent");
            AiOutcome {
                answer: AiAnswer {
                    response_text: config.ai_fallback_reply.clone(),
                    intent: "fallback".into(),
                    confidence: 0.0,
                    entities: Map::new(),
                    model_used: "fallback".into(),
                    actions: None,
                },
                processing_time_ms,
                error: Some(err.to_string()),
                cached: false,
            }
        }
    }
}

/// What an outside AI sends is stored in Postgres, which refuses NUL.
fn without_nul(answer: AiAnswer) -> AiAnswer {
    let value = serde_json::to_value(&answer).map(crate::domain::strip_nul);
    value.ok().and_then(|v| serde_json::from_value(v).ok()).unwrap_or(answer)
}

/// Reads an answer from a JSON object with seed 001's `ai_response` fields,
/// either at the top level or under `ai_response` (with `actions` beside it).
pub fn answer_from_json(value: &Value, default_model: &str) -> Result<AiAnswer, AiError> {
    let body = value.get("ai_response").filter(|v| v.is_object()).unwrap_or(value);
    let response_text = body
        .get("response_text")
        .and_then(Value::as_str)
        .ok_or_else(|| AiError::BadResponse("response_text is missing".into()))?
        .to_owned();
    let actions = value.get("actions").or_else(|| body.get("actions")).and_then(Value::as_array).cloned();
    Ok(AiAnswer {
        response_text,
        intent: body.get("intent").and_then(Value::as_str).unwrap_or("unknown").to_owned(),
        confidence: body
            .get("confidence")
            .and_then(Value::as_f64)
            .filter(|c| c.is_finite())
            .unwrap_or(0.5)
            .clamp(0.0, 1.0),
        entities: body.get("entities").and_then(Value::as_object).cloned().unwrap_or_default(),
        model_used: body.get("model_used").and_then(Value::as_str).unwrap_or(default_model).to_owned(),
        actions,
    })
}
