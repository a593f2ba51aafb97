//! Refused credentials, counted per route family so brute force shows in
//! the stats (the log line is the router's).

use redis::AsyncCommands;

use super::ConversationStore;
use crate::error::AppError;

impl ConversationStore {
    /// Counts one refused credential on `route` (a bounded label).
    pub async fn count_auth_failure(&self, route: &str) -> Result<(), AppError> {
        let _: i64 = self.conn.clone().hincr(self.keys.auth_failures(), route, 1).await?;
        Ok(())
    }

    /// Counts one chat session opened from `source` in the current minute;
    /// `Some(seconds to wait)` once `limit` is passed.
    pub async fn count_session(&self, source: &str, limit: u32) -> Result<Option<u64>, AppError> {
        if limit == 0 {
            return Ok(None);
        }
        let now = crate::clock::now_ms() / 1000;
        let key = self.keys.session_rate(source, now / 60);
        let (count, _): (u64, bool) =
            redis::pipe().atomic().incr(&key, 1).expire(&key, 120).query_async(&mut self.conn.clone()).await?;
        Ok((count > u64::from(limit)).then(|| 60 - now % 60))
    }

    /// Refused credentials so far, per route family.
    pub async fn auth_failures(&self) -> Result<Vec<(String, u64)>, AppError> {
        Ok(self.conn.clone().hgetall(self.keys.auth_failures()).await?)
    }
}
