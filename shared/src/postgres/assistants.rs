//! Assistant lookups with a small in-process cache.
//!
//! Which assistant answers: `metadata.assistant_id` if it names one, else the
//! assistant serving `metadata.page_id`, else the default assistant. Results
//! are kept in process for 60 s so a warm Lambda asks Postgres once a minute
//! per assistant, not once per message; a change made in Postgres is seen
//! within that minute. (The shared Redis cache with versioned invalidation is
//! a later issue.)

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use deadpool_postgres::Pool;
use tokio_postgres::Row;

use crate::{domain::Assistant, error::AppError};

const TTL: Duration = Duration::from_secs(60);

/// `(metadata.assistant_id, metadata.page_id)` → when fetched, what.
type Cache = HashMap<(Option<String>, Option<String>), (Instant, Assistant)>;

#[derive(Debug)]
pub struct AssistantDirectory {
    pool: Pool,
    cache: Mutex<Cache>,
}

impl AssistantDirectory {
    pub fn new(pool: Pool) -> Self {
        Self { pool, cache: Mutex::new(HashMap::new()) }
    }

    /// The assistant for this message (see the module docs for the order).
    pub async fn resolve(&self, assistant_id: Option<&str>, page_id: Option<&str>) -> Result<Assistant, AppError> {
        let key = (assistant_id.map(String::from), page_id.map(String::from));
        if let Ok(cache) = self.cache.lock()
            && let Some((at, assistant)) = cache.get(&key)
            && at.elapsed() < TTL
        {
            return Ok(assistant.clone());
        }
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT id, name, system_prompt, model, temperature, page_ids, collect_info_fields,
                        answer_cache_enabled, config_version
                   FROM assistants
                  WHERE id = $1 OR $2 = ANY(page_ids) OR is_default
                  ORDER BY (id = $1) DESC NULLS LAST, ($2 = ANY(page_ids)) DESC NULLS LAST, is_default DESC
                  LIMIT 1",
                &[&assistant_id, &page_id],
            )
            .await?;
        let assistant = row.map(from_row).unwrap_or_else(builtin_default);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(key, (Instant::now(), assistant.clone()));
        }
        Ok(assistant)
    }
}

fn from_row(row: Row) -> Assistant {
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
