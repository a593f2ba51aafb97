//! Side-effect jobs: answering a conversation in the background (a webhook
//! message, a spent restart budget) and retrying one action's delivery,
//! guarded by its send mark.

use uuid::Uuid;

use super::{Consumer, Summary, job::Job};
use crate::{
    domain::{ActionStatus, ConversationId},
    jobs::{self, ActionResult, ActionResults},
    pipeline,
    redis::SendMark,
};

/// Why an effect did not finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum EffectError {
    /// Someone else holds the action's send mark: retried later, never
    /// counted towards dead-lettering.
    Busy,
    Failed(String),
}

impl From<String> for EffectError {
    fn from(error: String) -> Self {
        Self::Failed(error)
    }
}

impl Consumer {
    pub(super) async fn run_effect(
        &self,
        effect: Job,
        summary: &mut Summary,
        delivered: u64,
    ) -> Result<(), EffectError> {
        match effect {
            Job::Process(job) => {
                let conversation = ConversationId::parse(&job.conversation_id).map_err(|e| e.to_string())?;
                pipeline::redrive(&self.app, &conversation, job.page_id.as_deref(), job.assistant_id.as_deref())
                    .await
                    .map_err(|e| e.to_string())?;
                summary.conversations_processed += 1;
                Ok(())
            }
            Job::Deliver(job) => {
                let conversation = ConversationId::parse(&job.conversation_id).map_err(|e| e.to_string())?;
                let attempt = job.attempt.max(delivered as u32);
                let text = job.action.customer_text();
                let result = match self.app.store.send_mark(&conversation, &job.action.action_id, text.as_deref()).await
                {
                    Err(e) => return Err(e.to_string().into()),
                    // Pancake already has it (the holder's results were lost): record, never resend.
                    Ok(SendMark::AlreadySent) => ActionResult {
                        action_id: job.action.action_id,
                        action_type: job.action.action_type.clone(),
                        status: ActionStatus::Sent,
                        pancake_message_id: None,
                        error: None,
                        retryable: false,
                        attempt,
                        response: None,
                    },
                    // Another delivery holds the mark (or died mid-send): wait for it, or for
                    // the mark to expire. Never counted as a failure: busy entries are not
                    // dead-lettered, so the action is delivered once the mark allows.
                    Ok(SendMark::Busy) => return Err(EffectError::Busy),
                    Ok(SendMark::Go) => {
                        pipeline::execute(&self.app, &conversation, job.page_id.as_deref(), &job.action, attempt).await
                    }
                };
                let failed_retryable = result.status == ActionStatus::Failed && result.retryable;
                let final_failure = failed_retryable && delivered >= self.settings.max_deliveries;
                let mut recorded = result.clone();
                if final_failure {
                    recorded.retryable = false;
                }
                let results = ActionResults {
                    response_id: job.response_id,
                    conversation_id: job.conversation_id.clone(),
                    fence: job.fence,
                    results: vec![recorded],
                };
                let sent: Vec<String> = result.pancake_message_id.clone().into_iter().collect();
                let payload = serde_json::to_string(&results).map_err(|e| e.to_string())?;
                let marks = [(job.action.action_id, result.status == ActionStatus::Sent)];
                self.app
                    .store
                    .record_delivery(
                        &conversation,
                        &Uuid::new_v4().simple().to_string(),
                        &sent,
                        &[(jobs::ACTION_RESULTS, &payload)],
                        &marks,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                summary.actions_redelivered += 1;
                if failed_retryable {
                    // Stays pending: retried after `claim_idle`; past the
                    // delivery budget it moves to the dead-letter stream (its
                    // action already recorded as finally `failed`).
                    Err(result.error.unwrap_or_else(|| "delivery failed".into()).into())
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }
}
