//! `GET/PUT/DELETE /api/v1/admin/assistants/{id}`: an assistant's system
//! prompt, model, temperature, pages, `collect_info` fields, data sources and
//! answer-cache switch. A write bumps `config_version` and invalidates the
//! assistant's caches (before and after the write, so a reader racing the
//! write cannot re-cache the old row under the new generation).

use http::{Request, Response, StatusCode};
use serde_json::{Map, Value, json};

use super::json_body;
use crate::{
    App,
    domain::ConversationId,
    error::AppError,
    postgres::assistants::rows::{self as assistant_rows, AssistantFields},
    response::json_response,
};

fn validate_id(id: &str) -> Result<(), AppError> {
    // Same rules as every other id (non-empty, ≤ 256 bytes, no control characters).
    ConversationId::parse(id).map(drop).map_err(|_| AppError::invalid("id", "must be a valid id"))
}

async fn load(app: &App, id: &str) -> Result<Option<Value>, AppError> {
    Ok(assistant_rows::document(&**app.db.get().await?, id).await?)
}

pub async fn get(app: &App, id: &str) -> Result<Response<bytes::Bytes>, AppError> {
    validate_id(id)?;
    let assistant = load(app, id).await?.ok_or(AppError::NotFound)?;
    Ok(json_response(StatusCode::OK, &json!({"success": true, "assistant": assistant})))
}

fn string_list(body: &Map<String, Value>, field: &'static str, max: usize) -> Result<Vec<String>, AppError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) if items.len() <= max => items
            .iter()
            .map(|v| v.as_str().filter(|s| !s.trim().is_empty() && s.len() <= 256).map(String::from))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| AppError::invalid(field, "must be an array of non-empty strings")),
        Some(_) => Err(AppError::invalid(field, format!("must be an array of at most {max} strings"))),
    }
}

/// Creates or replaces the assistant (`201` when created).
pub async fn put(app: &App, id: &str, request: &Request<bytes::Bytes>) -> Result<Response<bytes::Bytes>, AppError> {
    validate_id(id)?;
    let body = json_body(request)?;
    let name = match body.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 200 => s.clone(),
        _ => return Err(AppError::invalid("name", "is required: a non-empty string of at most 200 bytes")),
    };
    let system_prompt = match body.get("system_prompt") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) if s.len() <= 20_000 => s.clone(),
        Some(_) => return Err(AppError::invalid("system_prompt", "must be a string of at most 20,000 bytes")),
    };
    let model = match body.get("model") {
        None | Some(Value::Null) => "embedded".to_owned(),
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 100 => s.clone(),
        Some(_) => return Err(AppError::invalid("model", "must be a non-empty string")),
    };
    let temperature = match body.get("temperature") {
        None | Some(Value::Null) => 0.3,
        Some(v) => v
            .as_f64()
            .filter(|t| (0.0..=2.0).contains(t))
            .ok_or_else(|| AppError::invalid("temperature", "must be a number from 0 to 2"))?,
    } as f32;
    let page_ids = string_list(&body, "page_ids", 100)?;
    // Page ids become Pancake URL segments and key parts: the id rules apply.
    for page in &page_ids {
        crate::domain::check_id("page_ids", page)?;
    }
    let collect_info_fields = string_list(&body, "collect_info_fields", 50)?;
    let data_sources = match body.get("data_sources") {
        None | Some(Value::Null) => json!([]),
        Some(Value::Array(items)) if Value::Array(items.clone()).to_string().len() <= 64 * 1024 => {
            Value::Array(items.clone())
        }
        Some(_) => return Err(AppError::invalid("data_sources", "must be an array of at most 64 KiB")),
    };
    let bool_field = |field: &'static str, default: bool| match body.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(AppError::invalid(field, "must be true or false")),
    };
    let answer_cache = bool_field("answer_cache_enabled", true)?;
    let is_default = bool_field("is_default", false)?;

    let fields = AssistantFields {
        name,
        system_prompt,
        model,
        temperature,
        page_ids,
        collect_info_fields,
        data_sources,
        answer_cache_enabled: answer_cache,
        is_default,
    };
    app.assistants.invalidate(id).await?;
    let created = assistant_rows::upsert(&mut app.db.get().await?, id, &fields).await?;
    app.assistants.invalidate(id).await?;
    // A DELETE racing this PUT can remove the row between commit and read.
    let assistant = load(app, id)
        .await?
        .ok_or_else(|| AppError::Conflict("the assistant was deleted by a concurrent request".into()))?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(json_response(status, &json!({"success": true, "created": created, "assistant": assistant})))
}

pub async fn delete(app: &App, id: &str) -> Result<Response<bytes::Bytes>, AppError> {
    validate_id(id)?;
    let client = app.db.get().await?;
    if assistant_rows::is_default(&**client, id).await?.ok_or(AppError::NotFound)? {
        return Err(AppError::Conflict(
            "the default assistant cannot be deleted; make another one the default first".into(),
        ));
    }
    assistant_rows::delete(&**client, id).await?;
    app.assistants.invalidate(id).await?;
    Ok(json_response(StatusCode::OK, &json!({"success": true, "deleted": id})))
}
