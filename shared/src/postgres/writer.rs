//! Batched, idempotent Postgres writes of one read batch of the `jobs` stream.
//!
//! A whole batch is one transaction: one `UNNEST` statement per table (the
//! arrays are bound as parameters, so a batch of 1,000 is a handful of
//! statements), committed before the consumer acknowledges anything. (Binary
//! `COPY` into a staging table measured the same speed; see BENCHMARKS.md.) Every
//! statement conflicts on the natural key of its table, so writing the same
//! entry twice — a redelivery, a reclaimed batch, a duplicated entry —
//! changes nothing:
//! - `messages` on `(conversation_id, message_id)`; conversation counters
//!   grow only by the rows actually inserted;
//! - `ai_responses` on the response id, `message_actions` on the action id;
//! - conversation state written by an answer is guarded by the fencing
//!   number (`WHERE fence <= new`), by Pancake's `version` for assignments;
//! - `customers` merge field by field and never erase.
//!
//! Rows are sorted by key inside each statement so concurrent consumers lock
//! rows in the same order and cannot deadlock each other.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tokio_postgres::{Client, GenericClient};
use uuid::Uuid;

use crate::{
    customer_info::{self, CustomerInfo},
    domain::ActionStatus,
    jobs::{ActionResults, PersistAnswer, PersistMessage, UpdateConversation},
};

/// A stored message with its admit outcome (a stream field beside the payload).
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRow {
    pub job: PersistMessage,
    pub outcome: String,
}

/// The Postgres part of one read batch.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub messages: Vec<MessageRow>,
    pub answers: Vec<PersistAnswer>,
    pub results: Vec<ActionResults>,
    pub updates: Vec<UpdateConversation>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.answers.is_empty() && self.results.is_empty() && self.updates.is_empty()
    }

    pub fn len(&self) -> usize {
        self.messages.len() + self.answers.len() + self.results.len() + self.updates.len()
    }
}

/// Writes the batch in one transaction.
pub async fn write(client: &mut Client, batch: &Batch) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    match write_in(&tx, batch).await {
        Ok(()) => tx.commit().await,
        // Rolled back now, not on drop (which only queues the ROLLBACK): a
        // Lambda frozen right after would otherwise keep its row locks.
        Err(err) => {
            let _ = tx.rollback().await;
            Err(err)
        }
    }
}

/// Writes the batch inside the caller's transaction (the degraded path
/// records an answer in the transaction that holds its advisory lock).
pub async fn write_in(tx: &impl GenericClient, batch: &Batch) -> Result<(), tokio_postgres::Error> {
    write_messages_unnest(tx, &batch.messages).await?;
    write_customers(tx, &batch.messages).await?;
    write_answers(tx, &batch.answers).await?;
    write_results(tx, &batch.results).await?;
    write_updates(tx, &batch.updates).await
}

/// The tail both message writers share: from the inserted rows to the
/// conversation counters (only rows actually inserted count, so a redelivery
/// adds nothing), locking conversations in key order.
#[doc(hidden)]
pub const COUNT_INTO_CONVERSATIONS: &str = "
    per_conversation AS (
        SELECT i.conversation_id,
               COUNT(*) AS n,
               MAX(i.timestamp) AS last_ts,
               (array_agg(i.message_id ORDER BY i.timestamp DESC, i.message_id DESC))[1] AS last_id,
               bool_or(i.sender_type = 'agent') AS agent_replied
          FROM inserted i GROUP BY i.conversation_id
    ), pages AS (
        SELECT conversation_id, max(page_id) AS page_id FROM input GROUP BY conversation_id
    )
    INSERT INTO conversations AS c (conversation_id, page_id, last_message_id, last_message_timestamp,
                                    total_messages, bot_paused)
    SELECT p.conversation_id, pages.page_id, p.last_id, p.last_ts, p.n, p.agent_replied
      FROM per_conversation p JOIN pages USING (conversation_id) ORDER BY p.conversation_id
    ON CONFLICT (conversation_id) DO UPDATE SET
        total_messages = c.total_messages + EXCLUDED.total_messages,
        last_message_id = CASE WHEN EXCLUDED.last_message_timestamp >= COALESCE(c.last_message_timestamp, '-Infinity')
                               THEN EXCLUDED.last_message_id ELSE c.last_message_id END,
        last_message_timestamp = GREATEST(c.last_message_timestamp, EXCLUDED.last_message_timestamp),
        page_id = COALESCE(c.page_id, EXCLUDED.page_id),
        bot_paused = c.bot_paused OR EXCLUDED.bot_paused,
        updated_at = now()";

/// The head of every message writer: from an `input` relation to the
/// inserted rows (the benchmark's `COPY` writer shares it).
#[doc(hidden)]
pub const INSERT_MESSAGES: &str = "
    inserted AS (
        INSERT INTO messages (conversation_id, message_id, sender_id, sender_type, content, timestamp,
                              metadata, admit_outcome)
        SELECT DISTINCT ON (conversation_id, message_id)
               conversation_id, message_id, sender_id, sender_type, content, ts, metadata, outcome
          FROM input ORDER BY conversation_id, message_id
        ON CONFLICT (conversation_id, message_id) DO NOTHING
        RETURNING conversation_id, message_id, timestamp, sender_type
    ),";

/// Messages by `UNNEST` of bound arrays in one statement: the writer the
/// consumer uses (as fast as `COPY` in BENCHMARKS.md, and no staging table;
/// the benchmark's alternative writers live in `bench/`).
pub async fn write_messages_unnest(db: &impl GenericClient, rows: &[MessageRow]) -> Result<(), tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut cols = MessageColumns::default();
    for row in rows {
        cols.push(row);
    }
    let sql = format!(
        "WITH input AS (
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::float8[], $7::jsonb[], $8::text[], $9::text[])
                 AS t(conversation_id, message_id, sender_id, sender_type, content, ts, metadata, outcome, page_id)
         ), {INSERT_MESSAGES} {COUNT_INTO_CONVERSATIONS}"
    );
    db.execute(
        &sql,
        &[
            &cols.conversation_id,
            &cols.message_id,
            &cols.sender_id,
            &cols.sender_type,
            &cols.content,
            &cols.timestamp,
            &cols.metadata,
            &cols.outcome,
            &cols.page_id,
        ],
    )
    .await?;
    Ok(())
}

#[derive(Default)]
struct MessageColumns {
    conversation_id: Vec<String>,
    message_id: Vec<String>,
    sender_id: Vec<String>,
    sender_type: Vec<String>,
    content: Vec<String>,
    timestamp: Vec<f64>,
    metadata: Vec<Value>,
    outcome: Vec<String>,
    page_id: Vec<Option<String>>,
}

impl MessageColumns {
    fn push(&mut self, row: &MessageRow) {
        let job = &row.job;
        self.conversation_id.push(job.conversation_id.clone());
        self.message_id.push(job.message_id.clone());
        self.sender_id.push(job.sender_id.clone());
        self.sender_type.push(job.sender_type.clone());
        // Postgres text cannot hold NUL; everything else is kept verbatim.
        self.content.push(job.content.replace('\0', ""));
        self.timestamp.push(job.timestamp);
        self.metadata.push(Value::Object(job.metadata.clone()));
        self.outcome.push(row.outcome.clone());
        self.page_id.push(job.page_id.clone());
    }
}

/// Customer details from customer messages, merged per (page, sender) in
/// timestamp order before the upsert (one row per key per statement).
async fn write_customers(db: &impl GenericClient, rows: &[MessageRow]) -> Result<(), tokio_postgres::Error> {
    let mut merged: BTreeMap<(String, String), (f64, String, CustomerInfo)> = BTreeMap::new();
    let mut ordered: Vec<&MessageRow> =
        rows.iter().filter(|r| matches!(r.job.sender_type.as_str(), "user" | "customer")).collect();
    ordered.sort_by(|a, b| a.job.timestamp.total_cmp(&b.job.timestamp));
    for row in ordered {
        let mut info = customer_info::extract(&row.job.content);
        if info.name.is_none() {
            info.name = row.job.metadata.get("sender_name").and_then(Value::as_str).map(String::from);
        }
        if info.is_empty() {
            continue;
        }
        let key = (row.job.page_id.clone().unwrap_or_default(), row.job.sender_id.clone());
        let entry = merged
            .entry(key)
            .or_insert_with(|| (row.job.timestamp, row.job.conversation_id.clone(), CustomerInfo::default()));
        entry.2.merge(info);
    }
    if merged.is_empty() {
        return Ok(());
    }
    let (mut page, mut sender, mut conversation) = (Vec::new(), Vec::new(), Vec::new());
    let (mut name, mut phone, mut email, mut address) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((p, s), (_, c, info)) in merged {
        page.push(p);
        sender.push(s);
        conversation.push(c);
        name.push(info.name);
        phone.push(info.phone);
        email.push(info.email);
        address.push(info.address);
    }
    db.execute(
        "INSERT INTO customers AS cu (page_id, sender_id, conversation_id, name, phone, email, address)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
         ON CONFLICT (page_id, sender_id) DO UPDATE SET
             name = COALESCE(EXCLUDED.name, cu.name),
             phone = COALESCE(EXCLUDED.phone, cu.phone),
             email = COALESCE(EXCLUDED.email, cu.email),
             address = COALESCE(EXCLUDED.address, cu.address),
             conversation_id = COALESCE(cu.conversation_id, EXCLUDED.conversation_id),
             updated_at = now()",
        &[&page, &sender, &conversation, &name, &phone, &email, &address],
    )
    .await?;
    Ok(())
}

async fn write_answers(db: &impl GenericClient, answers: &[PersistAnswer]) -> Result<(), tokio_postgres::Error> {
    if answers.is_empty() {
        return Ok(());
    }
    let mut id = Vec::new();
    let mut conversation = Vec::new();
    let mut fence = Vec::new();
    let mut covered = Vec::new();
    let mut text = Vec::new();
    let mut intent = Vec::new();
    let mut confidence = Vec::new();
    let mut entities = Vec::new();
    let mut model = Vec::new();
    let mut elapsed = Vec::new();
    let mut error = Vec::new();
    let mut rejected = Vec::new();
    for a in answers {
        id.push(a.response_id);
        conversation.push(a.conversation_id.clone());
        fence.push(a.fence);
        covered.push(json!(a.covered_message_ids));
        text.push(a.ai_response.response_text.replace('\0', ""));
        intent.push(a.ai_response.intent.clone());
        confidence.push(a.ai_response.confidence);
        entities.push(Value::Object(a.ai_response.entities.clone()));
        model.push(a.ai_response.model_used.clone());
        elapsed.push(a.ai_response.processing_time_ms);
        error.push(a.ai_response.error.clone());
        rejected.push(json!(a.rejected_actions));
    }
    db.execute(
        "INSERT INTO ai_responses (id, conversation_id, fence, covered_message_ids, response_text, intent,
                                   confidence, entities, model_used, processing_time_ms, error, rejected_actions)
         SELECT t.id, t.conversation_id, t.fence, ARRAY(SELECT jsonb_array_elements_text(t.covered)), t.text,
                t.intent, t.confidence, t.entities, t.model, t.elapsed, t.error, t.rejected
           FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::jsonb[], $5::text[], $6::text[], $7::float8[],
                       $8::jsonb[], $9::text[], $10::float8[], $11::text[], $12::jsonb[])
                AS t(id, conversation_id, fence, covered, text, intent, confidence, entities, model, elapsed, error, rejected)
          ORDER BY t.id
         ON CONFLICT (id) DO NOTHING",
        &[&id, &conversation, &fence, &covered, &text, &intent, &confidence, &entities, &model, &elapsed, &error, &rejected],
    )
    .await?;

    let mut action_id = Vec::new();
    let mut response_id = Vec::new();
    let mut action_conversation = Vec::new();
    let mut action_type = Vec::new();
    let mut data = Vec::new();
    let mut status = Vec::new();
    let mut last_error = Vec::new();
    for a in answers {
        for job in &a.actions {
            action_id.push(job.action.action_id);
            response_id.push(a.response_id);
            action_conversation.push(a.conversation_id.clone());
            action_type.push(job.action.action_type.clone());
            data.push(Value::Object(job.action.data.clone()));
            status.push(job.status.as_str().to_owned());
            last_error.push(job.last_error.clone());
        }
    }
    if !action_id.is_empty() {
        // A results entry may have been written first (another consumer, an
        // earlier batch): then only the action's data is filled in.
        db.execute(
            "INSERT INTO message_actions AS m (id, response_id, conversation_id, action_type, action_data, status, last_error)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::text[], $7::text[])
              ORDER BY 1
             ON CONFLICT (id) DO UPDATE SET action_data = EXCLUDED.action_data, response_id = EXCLUDED.response_id
              WHERE m.action_data = '{}'::jsonb",
            &[&action_id, &response_id, &action_conversation, &action_type, &data, &status, &last_error],
        )
        .await?;
    }

    // Conversation state the answer implies, newest fence per conversation.
    let mut latest: BTreeMap<&str, &PersistAnswer> = BTreeMap::new();
    for a in answers {
        let slot = latest.entry(a.conversation_id.as_str()).or_insert(a);
        if a.fence > slot.fence {
            *slot = a;
        }
    }
    let mut conv = Vec::new();
    let mut page = Vec::new();
    let mut assistant = Vec::new();
    let mut conv_fence = Vec::new();
    let mut paused = Vec::new();
    let mut conv_status = Vec::new();
    for (c, a) in latest {
        conv.push(c.to_owned());
        page.push(a.page_id.clone());
        assistant.push(a.assistant_id.clone());
        conv_fence.push(a.fence);
        paused.push(a.bot_paused);
        let ended = a.actions.iter().any(|j| j.action.action_type == "end_conversation");
        conv_status.push(if ended { "ended" } else { "active" }.to_owned());
    }
    db.execute(
        "INSERT INTO conversations AS c (conversation_id, page_id, assistant_id, fence, bot_paused, status)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::bool[], $6::text[])
         ON CONFLICT (conversation_id) DO UPDATE SET
             fence = EXCLUDED.fence,
             assistant_id = EXCLUDED.assistant_id,
             page_id = COALESCE(c.page_id, EXCLUDED.page_id),
             bot_paused = c.bot_paused OR EXCLUDED.bot_paused,
             status = EXCLUDED.status,
             last_answer_at = now(),
             updated_at = now()
          WHERE c.fence <= EXCLUDED.fence",
        &[&conv, &page, &assistant, &conv_fence, &paused, &conv_status],
    )
    .await?;
    Ok(())
}

async fn write_results(db: &impl GenericClient, batches: &[ActionResults]) -> Result<(), tokio_postgres::Error> {
    // Newest attempt per action wins within the batch.
    let mut latest: BTreeMap<Uuid, (&ActionResults, &crate::jobs::ActionResult)> = BTreeMap::new();
    for batch in batches {
        for r in &batch.results {
            let slot = latest.entry(r.action_id).or_insert((batch, r));
            if r.attempt >= slot.1.attempt {
                *slot = (batch, r);
            }
        }
    }
    if latest.is_empty() {
        return Ok(());
    }
    let mut id = Vec::new();
    let mut response = Vec::new();
    let mut conversation = Vec::new();
    let mut action_type = Vec::new();
    let mut status = Vec::new();
    let mut error = Vec::new();
    let mut pancake_id = Vec::new();
    let mut attempt = Vec::new();
    for (action_id, (batch, r)) in latest {
        id.push(action_id);
        response.push(batch.response_id);
        conversation.push(batch.conversation_id.clone());
        action_type.push(r.action_type.clone());
        // A retryable failure stays `retrying` until the consumer's retries settle it.
        let stored = if r.status == ActionStatus::Failed && r.retryable { ActionStatus::Retrying } else { r.status };
        status.push(stored.as_str().to_owned());
        error.push(r.error.clone());
        pancake_id.push(r.pancake_message_id.clone());
        attempt.push(r.attempt as i32);
    }
    // A delivered action never goes back to an earlier state.
    db.execute(
        "INSERT INTO message_actions AS m (id, response_id, conversation_id, action_type, action_data, status,
                                           last_error, pancake_message_id, retry_count)
         SELECT t.id, t.response_id, t.conversation_id, t.action_type, '{}'::jsonb, t.status, t.error, t.pancake_id, t.attempt
           FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int4[])
                AS t(id, response_id, conversation_id, action_type, status, error, pancake_id, attempt)
         ON CONFLICT (id) DO UPDATE SET
             status = EXCLUDED.status,
             last_error = EXCLUDED.last_error,
             pancake_message_id = COALESCE(EXCLUDED.pancake_message_id, m.pancake_message_id),
             retry_count = GREATEST(m.retry_count, EXCLUDED.retry_count),
             updated_at = now()
          WHERE m.status NOT IN ('sent', 'done') AND m.retry_count <= EXCLUDED.retry_count",
        &[&id, &response, &conversation, &action_type, &status, &error, &pancake_id, &attempt],
    )
    .await?;
    Ok(())
}

async fn write_updates(db: &impl GenericClient, updates: &[UpdateConversation]) -> Result<(), tokio_postgres::Error> {
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
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [&conv, &page, &version, &assignees, &paused];
    db.execute(
        "INSERT INTO conversations (conversation_id, page_id, pancake_version, assigned_to, bot_paused)
         SELECT t.conversation_id, t.page_id, t.version, ARRAY(SELECT jsonb_array_elements_text(t.assignees)),
                COALESCE(t.paused, FALSE)
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
