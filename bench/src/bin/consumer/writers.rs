//! The writers the consumer benchmark compares against the library's
//! `UNNEST` writer ([`switchboard::postgres::writer`]): binary `COPY` into a
//! staging table, and row by row. Benchmark-only, so they live here.

use serde_json::Value;
use switchboard::postgres::writer::{COUNT_INTO_CONVERSATIONS, INSERT_MESSAGES, MessageRow};
use tokio_postgres::Client;

/// Messages by binary `COPY` into a per-session staging table, then one
/// idempotent `INSERT … SELECT`: the alternative to
/// [`switchboard::postgres::writer::write_messages_unnest`], kept for the
/// benchmark that compares the two.
/// It measured no faster (BENCHMARKS.md) and its staging table pins the
/// session, which a transaction-pooling proxy (RDS Proxy) cannot share.
pub async fn write_messages_copy(
    tx: &tokio_postgres::Transaction<'_>,
    rows: &[MessageRow],
) -> Result<(), tokio_postgres::Error> {
    use tokio_postgres::{binary_copy::BinaryCopyInWriter, types::Type};
    if rows.is_empty() {
        return Ok(());
    }
    tx.batch_execute(
        "CREATE TEMP TABLE IF NOT EXISTS staging_messages (
             conversation_id text, message_id text, sender_id text, sender_type text, content text,
             ts float8, metadata jsonb, outcome text, page_id text) ON COMMIT DELETE ROWS",
    )
    .await?;
    let sink = tx.copy_in("COPY staging_messages FROM STDIN (FORMAT binary)").await?;
    let types =
        [Type::TEXT, Type::TEXT, Type::TEXT, Type::TEXT, Type::TEXT, Type::FLOAT8, Type::JSONB, Type::TEXT, Type::TEXT];
    let writer = BinaryCopyInWriter::new(sink, &types);
    futures::pin_mut!(writer);
    for row in rows {
        let j = &row.job;
        let content = j.content.replace('\0', "");
        let metadata = Value::Object(j.metadata.clone());
        writer
            .as_mut()
            .write(&[
                &j.conversation_id,
                &j.message_id,
                &j.sender_id,
                &j.sender_type,
                &content,
                &j.timestamp,
                &metadata,
                &row.outcome,
                &j.page_id,
            ])
            .await?;
    }
    writer.finish().await?;
    tx.execute(
        // The benchmark's rows are customer messages: none pauses the bot.
        &format!(
            "WITH input AS (SELECT *, NULL::float8 AS paused_until FROM staging_messages),
             {INSERT_MESSAGES} {COUNT_INTO_CONVERSATIONS}"
        ),
        &[],
    )
    .await?;
    Ok(())
}

/// Row by row, for the benchmark's comparison only: one `INSERT` per message
/// and per conversation update, in one transaction (`autocommit: false`) or
/// each statement committed on its own (`autocommit: true`, what a
/// per-message writer does).
pub async fn write_messages_row_by_row(
    client: &mut Client,
    rows: &[MessageRow],
    autocommit: bool,
) -> Result<(), tokio_postgres::Error> {
    // Prepared once per call, as a careful per-row writer would.
    let insert = client
        .prepare(
            "INSERT INTO messages (conversation_id, message_id, sender_id, sender_type, content, timestamp, metadata, admit_outcome)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (conversation_id, message_id) DO NOTHING",
        )
        .await?;
    let upsert = client
        .prepare(
            "INSERT INTO conversations AS c (conversation_id, page_id, last_message_id, last_message_timestamp, total_messages)
             VALUES ($1, $2, $3, $4, 1)
             ON CONFLICT (conversation_id) DO UPDATE SET
                 total_messages = c.total_messages + 1,
                 last_message_id = CASE WHEN EXCLUDED.last_message_timestamp >= COALESCE(c.last_message_timestamp, '-Infinity')
                                        THEN EXCLUDED.last_message_id ELSE c.last_message_id END,
                 last_message_timestamp = GREATEST(c.last_message_timestamp, EXCLUDED.last_message_timestamp)",
        )
        .await?;
    let statements = (&insert, &upsert);
    if autocommit {
        for row in rows {
            let tx = client.transaction().await?;
            insert_row(&tx, statements, row).await?;
            tx.commit().await?;
        }
        return Ok(());
    }
    let tx = client.transaction().await?;
    for row in rows {
        insert_row(&tx, statements, row).await?;
    }
    tx.commit().await
}

async fn insert_row(
    tx: &tokio_postgres::Transaction<'_>,
    (insert, upsert): (&tokio_postgres::Statement, &tokio_postgres::Statement),
    row: &MessageRow,
) -> Result<(), tokio_postgres::Error> {
    let j = &row.job;
    let metadata = Value::Object(j.metadata.clone());
    let inserted = tx
        .execute(
            insert,
            &[
                &j.conversation_id,
                &j.message_id,
                &j.sender_id,
                &j.sender_type,
                &j.content,
                &j.timestamp,
                &metadata,
                &row.outcome,
            ],
        )
        .await?;
    if inserted == 1 {
        tx.execute(upsert, &[&j.conversation_id, &j.page_id, &j.message_id, &j.timestamp]).await?;
    }
    Ok(())
}
