//! Dead letters in Postgres: the record of every stream entry the consumer
//! gave up on, written before the entry leaves its stream (so none is lost
//! when the bounded Redis dead-letter stream drops its oldest), deleted after
//! the retention period (they can hold personal data), listed for operators
//! and marked when an operator replays one.
//!
//! A replay is marked *before* its job is enqueued ([`mark_replayed`], a
//! conditional update), so two replays racing cannot both enqueue; the mark
//! is undone if the enqueue fails ([`unmark_replayed`]) and completed with the
//! new entry's id when it succeeds ([`confirm_replayed`]).

use tokio_postgres::{GenericClient, Row};

/// One dead letter as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub shard: i32,
    /// The entry's id in its shard's `jobs` stream.
    pub stream_id: String,
    pub job_type: Option<String>,
    pub payload: Option<String>,
    /// A `persist_message` entry's admit outcome.
    pub outcome: Option<String>,
    pub error: String,
    pub deliveries: i32,
}

/// Records one dead letter; recording it again changes nothing.
pub async fn record(db: &impl GenericClient, letter: &DeadLetter) -> Result<(), tokio_postgres::Error> {
    db.execute(
        "INSERT INTO dead_letters (shard, stream_id, job_type, payload, outcome, error, deliveries)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (shard, stream_id) DO NOTHING",
        &[
            &letter.shard,
            &letter.stream_id,
            &letter.job_type,
            &letter.payload.as_deref().map(|p| p.replace('\0', "")),
            &letter.outcome.as_deref().map(|o| o.replace('\0', "")),
            &letter.error.replace('\0', ""),
            &letter.deliveries,
        ],
    )
    .await
    .map(drop)
}

/// Deletes dead letters older than `retention_secs`; returns how many.
pub async fn expire(db: &impl GenericClient, retention_secs: f64) -> Result<u64, tokio_postgres::Error> {
    db.execute("DELETE FROM dead_letters WHERE created_at < now() - make_interval(secs => $1)", &[&retention_secs])
        .await
}

/// How many dead letters are kept.
pub async fn count(db: &impl GenericClient) -> Result<i64, tokio_postgres::Error> {
    Ok(db.query_one("SELECT COUNT(*) FROM dead_letters", &[]).await?.get(0))
}

/// A recorded dead letter as operators see it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLetter {
    pub id: i64,
    pub letter: DeadLetter,
    /// Epoch seconds.
    pub created_at: f64,
    /// Epoch seconds; set while a replay is marked or done.
    pub replayed_at: Option<f64>,
    /// The replayed entry's id in its `jobs` stream.
    pub replay_stream_id: Option<String>,
}

const COLUMNS: &str = "id, shard, stream_id, job_type, payload, outcome, error, deliveries,
                       extract(epoch FROM created_at)::float8, extract(epoch FROM replayed_at)::float8,
                       replay_stream_id";

fn stored(row: &Row) -> StoredLetter {
    StoredLetter {
        id: row.get(0),
        letter: DeadLetter {
            shard: row.get(1),
            stream_id: row.get(2),
            job_type: row.get(3),
            payload: row.get(4),
            outcome: row.get(5),
            error: row.get(6),
            deliveries: row.get(7),
        },
        created_at: row.get(8),
        replayed_at: row.get(9),
        replay_stream_id: row.get(10),
    }
}

/// Up to `limit` dead letters, newest (highest id) first, below `before`.
pub async fn page(
    db: &impl GenericClient,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<StoredLetter>, tokio_postgres::Error> {
    let rows = db
        .query(
            &format!(
                "SELECT {COLUMNS} FROM dead_letters WHERE id < COALESCE($1, 9223372036854775807)
                  ORDER BY id DESC LIMIT $2"
            ),
            &[&before, &limit],
        )
        .await?;
    Ok(rows.iter().map(stored).collect())
}

/// One dead letter by id.
pub async fn get(db: &impl GenericClient, id: i64) -> Result<Option<StoredLetter>, tokio_postgres::Error> {
    Ok(db.query_opt(&format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1"), &[&id]).await?.as_ref().map(stored))
}

/// Marks a dead letter replayed, if nobody has: never replayed, or a replay
/// marked more than `stale_secs` ago that never reached the stream (its
/// process died between the mark and the enqueue). Returns the mark's time
/// (the token [`unmark_replayed`] takes), `None` when another replay holds it.
pub async fn mark_replayed(
    db: &impl GenericClient,
    id: i64,
    stale_secs: f64,
) -> Result<Option<f64>, tokio_postgres::Error> {
    // The row lock makes a concurrent replay wait and then re-check the
    // condition, which it no longer meets: exactly one of them marks.
    let row = db
        .query_opt(
            "UPDATE dead_letters SET replayed_at = clock_timestamp(), replay_stream_id = NULL
              WHERE id = $1
                AND (replayed_at IS NULL
                     OR (replay_stream_id IS NULL AND replayed_at < now() - make_interval(secs => $2)))
              RETURNING extract(epoch FROM replayed_at)::float8",
            &[&id, &stale_secs],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Undoes this replay's mark (the enqueue failed), so it can be retried.
/// Only the mark made at `marked_at` is undone, never a later one.
pub async fn unmark_replayed(db: &impl GenericClient, id: i64, marked_at: f64) -> Result<(), tokio_postgres::Error> {
    db.execute(
        "UPDATE dead_letters SET replayed_at = NULL
          WHERE id = $1 AND replay_stream_id IS NULL AND extract(epoch FROM replayed_at)::float8 = $2",
        &[&id, &marked_at],
    )
    .await
    .map(drop)
}

/// Completes a replay: the job is in the stream as `stream_id`.
pub async fn confirm_replayed(db: &impl GenericClient, id: i64, stream_id: &str) -> Result<(), tokio_postgres::Error> {
    db.execute("UPDATE dead_letters SET replay_stream_id = $2 WHERE id = $1", &[&id, &stream_id]).await.map(drop)
}
