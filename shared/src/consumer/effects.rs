//! Side-effect jobs: answering a conversation in the background (a webhook
//! message, a spent restart budget) and retrying one action's delivery,
//! guarded by its send mark.

use uuid::Uuid;

use super::{Consumer, Summary, job::Job};
use crate::{
    domain::{ActionStatus, ConversationId},
    jobs::{self, ActionResults},
    pipeline,
    redis::{MarkAfter, SendMark},
};

/// Time a delivery's result takes to record, after its last call.
const DELIVERY_RECORD_TIME: std::time::Duration = std::time::Duration::from_secs(2);

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
        claimed: bool,
    ) -> Result<(), EffectError> {
        match effect {
            // A hand-off answers it: the entry waits as the safety net until
            // it has been pending `claim_idle`, then finds nothing owed (or
            // answers what the hand-off did not).
            Job::Process(job) if job.handed_off && !claimed => Err(EffectError::Busy),
            Job::Process(job) => {
                // Too close to the invocation's end for a round: left pending
                // (never counted) for the next invocation, rather than
                // started and cut off, or handed off and read again at once.
                if !crate::deadline::allows(pipeline::min_round_time(&self.app)) {
                    return Err(EffectError::Busy);
                }
                let conversation = ConversationId::parse(&job.conversation_id).map_err(|e| e.to_string())?;
                pipeline::redrive(&self.app, &conversation, job.page_id.as_deref(), job.assistant_id.as_deref())
                    .await
                    .map_err(|e| e.to_string())?;
                summary.conversations_processed += 1;
                Ok(())
            }
            Job::Deliver(job) => {
                // A delivery cut off by the invocation's end has an unknown
                // outcome: one that might not finish is left for the next.
                if !crate::deadline::allows(self.app.config.delivery_time() + DELIVERY_RECORD_TIME) {
                    return Err(EffectError::Busy);
                }
                let conversation = ConversationId::parse(&job.conversation_id).map_err(|e| e.to_string())?;
                let attempt = job.attempt.max(delivered as u32);
                let text = job.action.customer_text();
                let page_id = job.page_id.as_deref();
                let mark = self
                    .app
                    .store
                    .send_mark(&conversation, &job.action.action_id, text.as_deref(), job.holder_may_have_sent)
                    .await;
                let result = match mark {
                    Err(e) => return Err(e.to_string().into()),
                    // Pancake already has it (the holder's results were lost): record, never resend.
                    Ok(SendMark::AlreadySent) => {
                        let mut sent = pipeline::blank_result(&job.action, attempt);
                        sent.status = ActionStatus::Sent;
                        sent
                    }
                    // Another delivery owns the mark: wait for it, or for its window to
                    // end. Never counted as a failure: busy entries are not dead-lettered.
                    Ok(SendMark::Busy) => return Err(EffectError::Busy),
                    Ok(SendMark::Go) => {
                        pipeline::execute(&self.app, &conversation, page_id, &job.action, attempt).await
                    }
                    // An earlier attempt may have landed: look before sending. A failed
                    // look-up leaves the mark ours until its window ends; then the next
                    // attempt finds it unknown again and looks again.
                    Ok(SendMark::Unknown) => {
                        let (app, action, answered_at) = (&self.app, &job.action, job.answered_at);
                        match pipeline::execute_unsure(app, &conversation, page_id, action, attempt, answered_at).await
                        {
                            Ok(result) => result,
                            Err(error) => {
                                // Still unknown: the next attempt looks again.
                                let marks = [(action.action_id, MarkAfter::Unknown)];
                                let token = Uuid::new_v4().simple().to_string();
                                let _ = app.store.record_delivery(&conversation, &token, &[], &[], &marks).await;
                                return Err(error.into());
                            }
                        }
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
                let marks = [(job.action.action_id, pipeline::mark_after(&result))];
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
