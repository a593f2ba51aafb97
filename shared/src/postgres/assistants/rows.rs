//! The operators' view of the `assistants` table (`/api/v1/admin/assistants/{id}`):
//! the whole row as a document, and the writes. Cache invalidation around
//! the writes is the caller's ([`super::AssistantDirectory::invalidate`]);
//! lookups for the message path are the directory's (`super`).

use serde_json::{Value, json};
use tokio_postgres::GenericClient;

const SELECT: &str = "SELECT id, name, system_prompt, model, temperature, page_ids, collect_info_fields,
                             answer_cache_enabled, config_version, data_sources, is_default,
                             extract(epoch FROM updated_at)::float8
                        FROM assistants WHERE id = $1";

/// What an operator may set on an assistant (validated by the handler).
#[derive(Debug, Clone, PartialEq)]
pub struct AssistantFields {
    pub name: String,
    pub system_prompt: String,
    pub model: String,
    pub temperature: f32,
    pub page_ids: Vec<String>,
    pub collect_info_fields: Vec<String>,
    pub data_sources: Value,
    pub answer_cache_enabled: bool,
    pub is_default: bool,
}

/// The whole row as the API returns it.
pub async fn document(db: &impl GenericClient, id: &str) -> Result<Option<Value>, tokio_postgres::Error> {
    Ok(db.query_opt(SELECT, &[&id]).await?.map(|r| {
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

/// Creates or replaces the assistant in one transaction (a new default
/// takes the flag from the old one); `true` when it was created. A
/// replacement bumps `config_version`.
pub async fn upsert(
    client: &mut deadpool_postgres::Client,
    id: &str,
    f: &AssistantFields,
) -> Result<bool, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    // Ended explicitly on every path: a dropped transaction only queues its
    // ROLLBACK, and a Lambda frozen right after would keep its row locks.
    let written = async {
        if f.is_default {
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
                    &f.name,
                    &f.system_prompt,
                    &f.model,
                    &f.temperature,
                    &f.page_ids,
                    &f.collect_info_fields,
                    &f.data_sources,
                    &f.answer_cache_enabled,
                    &f.is_default,
                ],
            )
            .await?
            .get(0);
        Ok::<bool, tokio_postgres::Error>(created)
    }
    .await;
    match written {
        Ok(created) => {
            tx.commit().await?;
            Ok(created)
        }
        Err(err) => {
            let _ = tx.rollback().await;
            Err(err)
        }
    }
}

/// Whether the assistant is the default; `None` when it does not exist.
pub async fn is_default(db: &impl GenericClient, id: &str) -> Result<Option<bool>, tokio_postgres::Error> {
    Ok(db.query_opt("SELECT is_default FROM assistants WHERE id = $1", &[&id]).await?.map(|r| r.get(0)))
}

pub async fn delete(db: &impl GenericClient, id: &str) -> Result<(), tokio_postgres::Error> {
    db.execute("DELETE FROM assistants WHERE id = $1", &[&id]).await.map(drop)
}
