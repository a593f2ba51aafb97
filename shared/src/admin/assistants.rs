//! `GET/PUT/DELETE /api/v1/admin/assistants/{id}`: an assistant's system
//! prompt, model, temperature, pages, `collect_info` fields, data sources and
//! answer-cache switch. A write bumps `config_version` and invalidates the
//! assistant's caches (before and after the write, so a reader racing the
//! write cannot re-cache the old row under the new generation).

use http::{Request, Response, StatusCode};
use serde_json::{Map, Value, json};

use super::json_body;
use crate::{App, domain::ConversationId, error::AppError, http::json_response};

const SELECT: &str = "SELECT id, name, system_prompt, model, temperature, page_ids, collect_info_fields,
                             answer_cache_enabled, config_version, data_sources, is_default,
                             extract(epoch FROM updated_at)::float8
                        FROM assistants WHERE id = $1";

fn validate_id(id: &str) -> Result<(), AppError> {
    // Same rules as every other id (non-empty, ≤ 256 bytes, no control characters).
    ConversationId::parse(id).map(drop).map_err(|_| AppError::invalid("id", "must be a valid id"))
}

async fn load(app: &App, id: &str) -> Result<Option<Value>, AppError> {
    let client = app.db.get().await?;
    Ok(client.query_opt(SELECT, &[&id]).await?.map(|r| {
        json!({
            "id": r.get::<_, String>(0),
            "name": r.get::<_, String>(1),
            "system_prompt": r.get::<_, String>(2),
            "model": r.get::<_, String>(3),
            "temperature": r.get::<_, f32>(4),
            "page_ids": r.get::<_, Vec<String>>(5),
            "collect_info_fields": r.get::<_, Vec<String>>(6),
            "answer_cache_enabled": r.get::<_, bool>(7),
            "config_version": r.get::<_, i64>(8),
            "data_sources": r.get::<_, Value>(9),
            "is_default": r.get::<_, bool>(10),
            "updated_at": r.get::<_, f64>(11),
        })
    }))
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
    let fields = string_list(&body, "collect_info_fields", 50)?;
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

    app.assistants.invalidate(id).await?;
    let mut client = app.db.get().await?;
    let tx = client.transaction().await?;
    if is_default {
        tx.execute("UPDATE assistants SET is_default = FALSE WHERE is_default AND id <> $1", &[&id]).await?;
    }
    let created: bool = tx
        .query_one(
            "INSERT INTO assistants (id, name, system_prompt, model, temperature, page_ids, collect_info_fields,
                                     data_sources, answer_cache_enabled, is_default)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (id) DO UPDATE SET
                 name = EXCLUDED.name, system_prompt = EXCLUDED.system_prompt, model = EXCLUDED.model,
                 temperature = EXCLUDED.temperature, page_ids = EXCLUDED.page_ids,
                 collect_info_fields = EXCLUDED.collect_info_fields, data_sources = EXCLUDED.data_sources,
                 answer_cache_enabled = EXCLUDED.answer_cache_enabled,
                 is_default = EXCLUDED.is_default OR assistants.is_default,
                 config_version = assistants.config_version + 1, updated_at = now()
             RETURNING (xmax = 0)",
            &[
                &id,
                &name,
                &system_prompt,
                &model,
                &temperature,
                &page_ids,
                &fields,
                &data_sources,
                &answer_cache,
                &is_default,
            ],
        )
        .await?
        .get(0);
    tx.commit().await?;
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
    let row =
        client.query_opt("SELECT is_default FROM assistants WHERE id = $1", &[&id]).await?.ok_or(AppError::NotFound)?;
    if row.get::<_, bool>(0) {
        return Err(AppError::Conflict(
            "the default assistant cannot be deleted; make another one the default first".into(),
        ));
    }
    client.execute("DELETE FROM assistants WHERE id = $1", &[&id]).await?;
    app.assistants.invalidate(id).await?;
    Ok(json_response(StatusCode::OK, &json!({"success": true, "deleted": id})))
}
