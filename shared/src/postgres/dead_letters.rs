//! Dead letters in Postgres: the record of every stream entry the consumer
//! gave up on, written before the entry leaves its stream (so none is lost
//! when the bounded Redis dead-letter stream drops its oldest), and deleted
//! after the retention period (they can hold personal data).

use tokio_postgres::GenericClient;

/// One dead letter as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub shard: i32,
    /// The entry's id in its shard's `jobs` stream.
    pub stream_id: String,
    pub job_type: Option<String>,
    pub payload: Option<String>,
    pub error: String,
    pub deliveries: i32,
}

/// Records one dead letter; recording it again changes nothing.
pub async fn record(db: &impl GenericClient, letter: &DeadLetter) -> Result<(), tokio_postgres::Error> {
    db.execute(
        "INSERT INTO dead_letters (shard, stream_id, job_type, payload, error, deliveries)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (shard, stream_id) DO NOTHING",
        &[
            &letter.shard,
            &letter.stream_id,
            &letter.job_type,
            &letter.payload.as_deref().map(|p| p.replace('\0', "")),
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
