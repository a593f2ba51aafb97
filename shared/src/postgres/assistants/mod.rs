//! Assistant lookups through the shared Redis cache (kinds `assistant`,
//! 30 min, and `schema`, 1 h; see [`crate::cache`]).
//!
//! Which assistant answers: `metadata.assistant_id` if it names one, else the
//! assistant serving `metadata.page_id`, else the default assistant. A write
//! to any assistant bumps the `assistant` generation (all resolutions are
//! re-read once: a deployment has few assistants, and a page moved from one
//! assistant to another must not keep resolving to the old one) and that
//! assistant's `schema` and `answer` scopes.

pub mod rows;

use std::{sync::Arc, time::Instant};

use deadpool_postgres::Pool;
use sha2::{Digest, Sha256};
use tokio_postgres::Row;

use crate::{
    cache::{Cache, CacheKind},
    domain::Assistant,
    error::AppError,
};

const COLUMNS: &str = "id, name, system_prompt, model, temperature, page_ids, collect_info_fields,
                       answer_cache_enabled, config_version";

#[derive(Debug)]
pub struct AssistantDirectory {
    pool: Pool,
    cache: Arc<Cache>,
}

impl AssistantDirectory {
    pub fn new(pool: Pool, cache: Arc<Cache>) -> Self {
        Self { pool, cache }
    }

    /// The assistant for this message (see the module docs for the order).
    pub async fn resolve(&self, assistant_id: Option<&str>, page_id: Option<&str>) -> Result<Assistant, AppError> {
        let key = route_key(assistant_id, page_id);
        // A cache outage must not stop answers: fall through to Postgres.
        let cached = self.cache.get(CacheKind::Assistant, "routes", &key).await;
        if let Ok((Some(json), _)) = &cached
            && let Ok(assistant) = serde_json::from_str::<Assistant>(json)
        {
            return Ok(assistant);
        }
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM assistants
                      WHERE id = $1 OR $2 = ANY(page_ids) OR is_default
                      ORDER BY (id = $1) DESC NULLS LAST, ($2 = ANY(page_ids)) DESC NULLS LAST, is_default DESC
                      LIMIT 1"
                ),
                &[&assistant_id, &page_id],
            )
            .await?;
        let assistant = row.map(from_row).unwrap_or_else(builtin_default);
        if let Ok((_, stamp)) = cached
            && let Ok(json) = serde_json::to_string(&assistant)
        {
            let _ = self.cache.put(CacheKind::Assistant, "routes", &key, &json, &stamp).await;
        }
        Ok(assistant)
    }

    /// The fields `collect_info` gathers for `assistant_id` (its schema).
    pub async fn schema(&self, assistant_id: &str) -> Result<Vec<String>, AppError> {
        let cached = self.cache.get(CacheKind::Schema, assistant_id, "fields").await;
        if let Ok((Some(json), _)) = &cached
            && let Ok(fields) = serde_json::from_str::<Vec<String>>(json)
        {
            return Ok(fields);
        }
        let client = self.pool.get().await?;
        let fields: Vec<String> = client
            .query_opt("SELECT collect_info_fields FROM assistants WHERE id = $1", &[&assistant_id])
            .await?
            .map(|row| row.get(0))
            .unwrap_or_default();
        if let Ok((_, stamp)) = cached {
            let json = serde_json::to_string(&fields).unwrap_or_default();
            let _ = self.cache.put(CacheKind::Schema, assistant_id, "fields", &json, &stamp).await;
        }
        Ok(fields)
    }

    /// One assistant by id, from Postgres.
    pub async fn get(&self, id: &str) -> Result<Option<Assistant>, AppError> {
        let client = self.pool.get().await?;
        let row = client.query_opt(&format!("SELECT {COLUMNS} FROM assistants WHERE id = $1"), &[&id]).await?;
        Ok(row.map(from_row))
    }

    /// Loads the named assistants into the cache; returns the unknown ids.
    pub async fn warm(&self, ids: &[String]) -> Result<(Vec<String>, Vec<String>), AppError> {
        let (mut loaded, mut unknown) = (Vec::new(), Vec::new());
        for id in ids {
            let started = Instant::now();
            match self.get(id).await? {
                Some(assistant) => {
                    let (_, stamp) = self.cache.get(CacheKind::Assistant, "routes", &route_key(Some(id), None)).await?;
                    let json = serde_json::to_string(&assistant).map_err(|_| AppError::Internal)?;
                    self.cache.put(CacheKind::Assistant, "routes", &route_key(Some(id), None), &json, &stamp).await?;
                    let (_, stamp) = self.cache.get(CacheKind::Schema, id, "fields").await?;
                    let fields =
                        serde_json::to_string(&assistant.collect_info_fields).map_err(|_| AppError::Internal)?;
                    self.cache.put(CacheKind::Schema, id, "fields", &fields, &stamp).await?;
                    tracing::info!(assistant_id = %id, elapsed_ms = started.elapsed().as_secs_f64() * 1000.0, "warmed");
                    loaded.push(id.clone());
                }
                None => unknown.push(id.clone()),
            }
        }
        Ok((loaded, unknown))
    }

    /// After a write to `id`: every resolution, and `id`'s schema and answers.
    pub async fn invalidate(&self, id: &str) -> Result<(), AppError> {
        self.cache.invalidate_kind(CacheKind::Assistant).await?;
        self.cache.invalidate_scope(CacheKind::Schema, id).await?;
        self.cache.invalidate_scope(CacheKind::Answer, id).await
    }
}

/// The cache key of one resolution: a digest, so ids with separators cannot collide.
fn route_key(assistant_id: Option<&str>, page_id: Option<&str>) -> String {
    let digest = Sha256::digest(serde_json::json!([assistant_id, page_id]).to_string().as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn from_row(row: Row) -> Assistant {
    Assistant {
        id: row.get(0),
        name: row.get(1),
        system_prompt: row.get(2),
        model: row.get(3),
        temperature: row.get(4),
        page_ids: row.get(5),
        collect_info_fields: row.get(6),
        answer_cache_enabled: row.get(7),
        config_version: row.get(8),
    }
}

/// Used when the default row was deleted: answering beats failing.
fn builtin_default() -> Assistant {
    Assistant {
        id: "default".into(),
        name: "Default assistant".into(),
        system_prompt: String::new(),
        model: "embedded".into(),
        temperature: 0.3,
        page_ids: vec![],
        collect_info_fields: vec!["name".into(), "phone".into(), "email".into(), "address".into()],
        answer_cache_enabled: true,
        config_version: 0,
    }
}
