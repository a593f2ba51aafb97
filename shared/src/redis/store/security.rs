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

    /// Refused credentials so far, per route family.
    pub async fn auth_failures(&self) -> Result<Vec<(String, u64)>, AppError> {
        Ok(self.conn.clone().hgetall(self.keys.auth_failures()).await?)
    }
}
