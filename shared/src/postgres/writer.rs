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
//! - `customers` merge field by field and never erase;
//! - a pause (an agent's message, a `transfer_to_agent` answer, an
//!   assignment) sets `bot_paused` and `paused_until`, the pausing event's
//!   time plus the pause TTL, never moving an existing deadline earlier.
//!   The event's time is in the job (`received_at`, `created_at`), so
//!   writing an entry again writes the same deadline; an assignment, which
//!   carries no time, pauses from when it is written.
//!
//! Rows are sorted by key inside each statement so concurrent consumers lock
//! rows in the same order and cannot deadlock each other. The statements of
//! `customers` and of `update_conversation` jobs live in the submodules
//! `customers` and `updates`.

mod customers;
mod updates;

use std::{collections::BTreeMap, time::Duration};

use serde_json::{Value, json};
use tokio_postgres::{Client, GenericClient};
use uuid::Uuid;

use super::chat::ChatMessage;
use crate::{
    clock::now_epoch_seconds,
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

/// Writes the batch in one transaction. `pause_ttl` (`BOT_PAUSE_TTL_SECONDS`)
/// is how long each pause in it lasts from its event.
///
/// Returns the chat log's fresh entries (`super::chat`): the messages and
/// answers logged by this batch, for their watchers.
pub async fn write(
    client: &mut Client,
    batch: &Batch,
    pause_ttl: Duration,
) -> Result<Vec<ChatMessage>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    match write_in(&tx, batch, pause_ttl).await {
        Ok(fresh) => tx.commit().await.map(|()| fresh),
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
pub async fn write_in(
    tx: &impl GenericClient,
    batch: &Batch,
    pause_ttl: Duration,
) -> Result<Vec<ChatMessage>, tokio_postgres::Error> {
    write_messages_unnest(tx, &batch.messages, pause_ttl).await?;
    customers::write_customers(tx, &batch.messages).await?;
    write_answers(tx, &batch.answers, pause_ttl).await?;
    write_results(tx, &batch.results).await?;
    updates::write_updates(tx, &batch.updates, pause_ttl).await?;
    super::chat::append(tx, &super::chat::entries_of(batch)).await
}

/// The end of a pause its event started at `event_at` (epoch seconds): the
/// writer is given the TTL rather than each job carrying its deadline, so
/// entries enqueued before `paused_until` existed get one too, and no
/// producer can forget it. Counted from no later than `now`: an answer's
/// time follows the messages it answers, and a sender's clock running ahead
/// must not lengthen the pause.
fn pause_end(event_at: f64, now: f64, pause_ttl: Duration) -> f64 {
    event_at.min(now) + pause_ttl.as_secs_f64()
}

/// The tail both message writers share: from the inserted rows to the
/// conversation counters (only rows actually inserted count, so a redelivery
/// adds nothing, and a redelivered agent message does not pause the bot
/// again after a resume), locking conversations in key order. `input` has a
/// `paused_until` column (epoch seconds; NULL unless the message pauses).
#[doc(hidden)]
pub const COUNT_INTO_CONVERSATIONS: &str = "
    pauses AS (
        SELECT i.conversation_id, max(s.paused_until) AS paused_until
          FROM inserted i JOIN input s USING (conversation_id, message_id)
         WHERE s.paused_until IS NOT NULL GROUP BY i.conversation_id
    ), per_conversation AS (
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
                                    total_messages, bot_paused, paused_until)
    SELECT p.conversation_id, pages.page_id, p.last_id, p.last_ts, p.n, p.agent_replied,
           to_timestamp(pauses.paused_until)
      FROM per_conversation p JOIN pages USING (conversation_id) LEFT JOIN pauses USING (conversation_id)
     ORDER BY p.conversation_id
    ON CONFLICT (conversation_id) DO UPDATE SET
        total_messages = c.total_messages + EXCLUDED.total_messages,
        last_message_id = CASE WHEN EXCLUDED.last_message_timestamp >= COALESCE(c.last_message_timestamp, '-Infinity')
                               THEN EXCLUDED.last_message_id ELSE c.last_message_id END,
        last_message_timestamp = GREATEST(c.last_message_timestamp, EXCLUDED.last_message_timestamp),
        page_id = COALESCE(c.page_id, EXCLUDED.page_id),
        bot_paused = c.bot_paused OR EXCLUDED.bot_paused,
        -- GREATEST skips NULLs: no pause here keeps the one in force.
        paused_until = GREATEST(c.paused_until, EXCLUDED.paused_until),
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
pub async fn write_messages_unnest(
    db: &impl GenericClient,
    rows: &[MessageRow],
    pause_ttl: Duration,
) -> Result<(), tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut cols = MessageColumns::default();
    let now = now_epoch_seconds();
    for row in rows {
        cols.push(row, now, pause_ttl);
    }
    let sql = format!(
        "WITH input AS (
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::float8[], $7::jsonb[], $8::text[], $9::text[], $10::float8[])
                 AS t(conversation_id, message_id, sender_id, sender_type, content, ts, metadata, outcome, page_id,
                      paused_until)
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
            &cols.paused_until,
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
    paused_until: Vec<Option<f64>>,
}

impl MessageColumns {
    fn push(&mut self, row: &MessageRow, now: f64, pause_ttl: Duration) {
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
        // An agent's message pauses from when it was received: the instant
        // admit (or the degraded path) paused the bot, on the same clock.
        let pauses = job.sender_type == "agent";
        self.paused_until.push(pauses.then(|| pause_end(job.received_at, now, pause_ttl)));
    }
}

async fn write_answers(
    db: &impl GenericClient,
    answers: &[PersistAnswer],
    pause_ttl: Duration,
) -> Result<(), tokio_postgres::Error> {
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
    let mut created = Vec::new();
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
        created.push(a.created_at);
    }
    // The answer's own time, not the write's: the consumer may write it
    // after later messages were stored, and the history rebuilt from
    // Postgres must keep it where the Redis context put it (after what it
    // answered, before what came later; see `answer_timestamp`).
    db.execute(
        "INSERT INTO ai_responses (id, conversation_id, fence, covered_message_ids, response_text, intent,
                                   confidence, entities, model_used, processing_time_ms, error, rejected_actions,
                                   created_at)
         SELECT t.id, t.conversation_id, t.fence, ARRAY(SELECT jsonb_array_elements_text(t.covered)), t.text,
                t.intent, t.confidence, t.entities, t.model, t.elapsed, t.error, t.rejected, to_timestamp(t.created)
           FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::jsonb[], $5::text[], $6::text[], $7::float8[],
                       $8::jsonb[], $9::text[], $10::float8[], $11::text[], $12::jsonb[], $13::float8[])
                AS t(id, conversation_id, fence, covered, text, intent, confidence, entities, model, elapsed, error,
                     rejected, created)
          ORDER BY t.id
         ON CONFLICT (id) DO NOTHING",
        &[
            &id,
            &conversation,
            &fence,
            &covered,
            &text,
            &intent,
            &confidence,
            &entities,
            &model,
            &elapsed,
            &error,
            &rejected,
            &created,
        ],
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
            // Dated by the clock, not the transaction's start: a degraded
            // answer's transaction spans its AI call, and the sweep must
            // not find its actions old while their holder still delivers.
            "INSERT INTO message_actions AS m (id, response_id, conversation_id, action_type, action_data, status, last_error,
                                               created_at)
             SELECT *, clock_timestamp() FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::text[], $7::text[])
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
    let mut paused_until = Vec::new();
    let mut conv_status = Vec::new();
    let now = now_epoch_seconds();
    for (c, a) in latest {
        conv.push(c.to_owned());
        page.push(a.page_id.clone());
        assistant.push(a.assistant_id.clone());
        conv_fence.push(a.fence);
        paused.push(a.bot_paused);
        paused_until.push(a.bot_paused.then(|| pause_end(a.created_at, now, pause_ttl)));
        let ended = a.actions.iter().any(|j| j.action.action_type == "end_conversation");
        conv_status.push(if ended { "ended" } else { "active" }.to_owned());
    }
    db.execute(
        "INSERT INTO conversations AS c (conversation_id, page_id, assistant_id, fence, bot_paused, paused_until,
                                         status)
         SELECT t.conversation_id, t.page_id, t.assistant_id, t.fence, t.paused, to_timestamp(t.paused_until), t.status
           FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::bool[], $6::float8[], $7::text[])
                AS t(conversation_id, page_id, assistant_id, fence, paused, paused_until, status)
         ON CONFLICT (conversation_id) DO UPDATE SET
             fence = EXCLUDED.fence,
             assistant_id = EXCLUDED.assistant_id,
             page_id = COALESCE(c.page_id, EXCLUDED.page_id),
             bot_paused = c.bot_paused OR EXCLUDED.bot_paused,
             paused_until = GREATEST(c.paused_until, EXCLUDED.paused_until),
             status = EXCLUDED.status,
             last_answer_at = now(),
             updated_at = now()
          WHERE c.fence <= EXCLUDED.fence",
        &[&conv, &page, &assistant, &conv_fence, &paused, &paused_until, &conv_status],
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
