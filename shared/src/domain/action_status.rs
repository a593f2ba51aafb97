//! Where an action stands, as the API reports it and `message_actions.status`
//! stores it: one enum instead of strings spread over the pipeline, the
//! consumer and the writer.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    /// Recorded with the answer; delivery follows.
    Pending,
    /// Pancake (or the integration) accepted it.
    Sent,
    /// Nothing to call: recorded only (`collect_info`, `end_conversation`, …).
    Done,
    Failed,
    /// Delivery is disabled (`PANCAKE_BASE_URL` unset).
    NotSent,
    /// Failed with a retryable error; the consumer delivers it again.
    Retrying,
    /// An unsafe integration call (`POST`) whose outcome is unknown (a
    /// timeout, a 5xx, its deliverer died mid-call): never retried blindly,
    /// listed for operators (`GET /api/v1/admin/actions?status=unknown`).
    Unknown,
}

impl ActionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::NotSent => "not_sent",
            Self::Retrying => "retrying",
            Self::Unknown => "unknown",
        }
    }

    /// Carried out: sent, or nothing needed sending.
    pub fn is_executed(self) -> bool {
        matches!(self, Self::Sent | Self::Done)
    }
}

impl std::fmt::Display for ActionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_name_and_the_stored_name_are_the_same() {
        for status in [
            ActionStatus::Pending,
            ActionStatus::Sent,
            ActionStatus::Done,
            ActionStatus::Failed,
            ActionStatus::NotSent,
            ActionStatus::Retrying,
            ActionStatus::Unknown,
        ] {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
    }
}
