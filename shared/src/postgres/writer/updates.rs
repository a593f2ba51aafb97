//! The `update_conversation` part of a batch: Pancake's `conversation`
//! events (and admin actions) applied in Pancake's `version` order. An
//! assignment pauses the bot until `paused_until`; an unassignment after an
//! assignment resumes it and clears the deadline.

use std::{collections::BTreeMap, time::Duration};

use serde_json::json;
use tokio_postgres::GenericClient;

use crate::{clock::now_epoch_seconds, jobs::UpdateConversation};

/// The newest version per conversation of the batch, applied if newer than
/// the stored one.
pub(super) async fn write_updates(
    db: &impl GenericClient,
    updates: &[UpdateConversation],
    pause_ttl: Duration,
) -> Result<(), tokio_postgres::Error> {
    let mut latest: BTreeMap<&str, &UpdateConversation> = BTreeMap::new();
    for u in updates {
        let slot = latest.entry(u.conversation_id.as_str()).or_insert(u);
        if u.pancake_version > slot.pancake_version {
            *slot = u;
        }
    }
    if latest.is_empty() {
        return Ok(());
    }
    let mut conv = Vec::new();
    let mut page = Vec::new();
    let mut version = Vec::new();
    let mut assignees = Vec::new();
    let mut paused = Vec::new();
    for (c, u) in latest {
        conv.push(c.to_owned());
        page.push(u.page_id.clone());
        version.push(u.pancake_version);
        assignees.push(json!(u.assignee_ids));
        paused.push(u.bot_paused);
    }
    // New conversations are inserted whole; known ones are updated only by a
    // newer Pancake version, and `bot_paused` only when the event says so.
    // An assignment carries no time of its own: it pauses from now (the
    // webhook's own Redis pause started moments before).
    let until = now_epoch_seconds() + pause_ttl.as_secs_f64();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [&conv, &page, &version, &assignees, &paused, &until];
    db.execute(
        "INSERT INTO conversations (conversation_id, page_id, pancake_version, assigned_to, bot_paused, paused_until)
         SELECT t.conversation_id, t.page_id, t.version, ARRAY(SELECT jsonb_array_elements_text(t.assignees)),
                COALESCE(t.paused, FALSE), CASE WHEN t.paused THEN to_timestamp($6::float8) END
           FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::jsonb[], $5::bool[])
                AS t(conversation_id, page_id, version, assignees, paused)
          ORDER BY t.conversation_id
         ON CONFLICT (conversation_id) DO NOTHING",
        &params,
    )
    .await?;
    db.execute(
        "UPDATE conversations AS c SET
             pancake_version = t.version,
             assigned_to = ARRAY(SELECT jsonb_array_elements_text(t.assignees)),
             -- Assigned pauses; unassigned after being assigned resumes.
             bot_paused = CASE WHEN t.paused IS NOT NULL THEN t.paused
                               WHEN cardinality(c.assigned_to) > 0 AND jsonb_array_length(t.assignees) = 0 THEN FALSE
                               ELSE c.bot_paused END,
             -- The same three cases: paused from now, resumed (no deadline), unchanged.
             paused_until = CASE WHEN t.paused THEN GREATEST(c.paused_until, to_timestamp($6::float8))
                                 WHEN t.paused IS NOT NULL THEN NULL
                                 WHEN cardinality(c.assigned_to) > 0 AND jsonb_array_length(t.assignees) = 0 THEN NULL
                                 ELSE c.paused_until END,
             page_id = COALESCE(c.page_id, t.page_id),
             updated_at = now()
           FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::jsonb[], $5::bool[])
                AS t(conversation_id, page_id, version, assignees, paused)
          WHERE c.conversation_id = t.conversation_id AND c.pancake_version < t.version",
        &params,
    )
    .await?;
    Ok(())
}
