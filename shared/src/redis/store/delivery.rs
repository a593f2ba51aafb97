//! Delivery bookkeeping: `sending`/`sent` marks so no action is delivered
//! twice, echo recognition of what the bot sent, delivery results and
//! retries recorded in one round trip, owed entries an answer covered.

use super::{ConversationStore, ECHO_TTL_SECS, MarkAfter, SENT_TTL_SECS, SendMark};

/// How long a recording's guard outlives it: far longer than its retries
/// (half a second apart).
const RECORDED_TTL_SECS: u64 = 60;
use crate::redis::scripts;
use crate::{clock::millis, clock::now_ms, domain::ConversationId, error::AppError};

impl ConversationStore {
    /// Whether a page-sent message is the echo of one this backend sent.
    pub async fn is_echo(
        &self,
        conversation: &ConversationId,
        pancake_message_id: &str,
        text: &str,
    ) -> Result<bool, AppError> {
        let keys = self.keys.conversation(conversation);
        let echo: i64 = scripts::ECHO
            .key(keys.sent(pancake_message_id))
            .key(keys.echo(text))
            .arg(self.dedupe_ttl.as_secs().max(1))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(echo == 1)
    }

    /// Raises the echo mark of `text` (what `complete` does for the bot's
    /// texts) before a send that is not the bot's — an agent's reply — so
    /// its webhook echo is recognised even when it arrives before Pancake's answer.
    pub async fn mark_echo(&self, conversation: &ConversationId, text: &str) -> Result<(), AppError> {
        let key = self.keys.conversation(conversation).echo(text);
        let ttl = self.dedupe_ttl.as_secs().max(1) as i64;
        let (_, _): (i64, bool) =
            redis::pipe().atomic().incr(&key, 1).expire(&key, ttl).query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Which of these Pancake message ids of one conversation Redis knows:
    /// admitted (the dedupe mark) or sent by this backend (the echo's id).
    /// One pipeline (the conversation's keys share a slot).
    pub async fn known_messages(&self, conversation: &ConversationId, ids: &[&str]) -> Result<Vec<bool>, AppError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.keys.conversation(conversation);
        let mut pipe = redis::pipe();
        for id in ids {
            // An id that is no valid message id was never admitted.
            let seen = crate::domain::MessageId::parse(id).map(|m| keys.seen(&m)).unwrap_or_else(|_| keys.sent(id));
            pipe.exists(seen).exists(keys.sent(id));
        }
        let found: Vec<bool> = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(found.chunks(2).map(|pair| pair.iter().any(|&f| f)).collect())
    }

    /// After delivery: remember Pancake's ids of what we sent (to ignore their
    /// echoes), settle the send marks and enqueue `jobs` — `(type, payload)`
    /// pairs, as [`ConversationStore::enqueue`] takes them: the results and a
    /// retry per retryable failure — in one atomic step. `token` names this
    /// recording: a retry after a lost reply passes the same one and changes
    /// nothing (see `record_delivery.lua`).
    pub async fn record_delivery(
        &self,
        conversation: &ConversationId,
        token: &str,
        sent_ids: &[String],
        jobs: &[(&str, &str)],
        marks: &[(uuid::Uuid, MarkAfter)],
    ) -> Result<(), AppError> {
        let keys = self.keys.conversation(conversation);
        let mut invocation = scripts::RECORD_DELIVERY.prepare_invoke();
        invocation.key(keys.recorded(token)).key(keys.shard().jobs());
        for (action_id, _) in marks {
            invocation.key(keys.send_mark(action_id));
        }
        for id in sent_ids {
            invocation.key(keys.sent(id));
        }
        invocation
            .arg(RECORDED_TTL_SECS)
            .arg(marks.len())
            .arg(sent_ids.len())
            .arg(SENT_TTL_SECS)
            .arg(self.dedupe_ttl.as_secs().max(1))
            .arg(format!("unknown:{}", now_ms().saturating_add(millis(self.unknown_grace))));
        for (_, after) in marks {
            invocation.arg(match after {
                MarkAfter::Sent => "1",
                MarkAfter::Free => "0",
                MarkAfter::Unknown => "u",
            });
        }
        for (kind, payload) in jobs {
            invocation.arg(*kind).arg(*payload);
        }
        let _: i64 = invocation.invoke_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Drops owed entries an answer in Postgres already covers (see
    /// `forget.lua`). Returns how many were dropped.
    pub async fn forget_answered(
        &self,
        conversation: &ConversationId,
        message_ids: &[String],
    ) -> Result<i64, AppError> {
        let keys = self.keys.conversation(conversation);
        let mut forget = scripts::FORGET.key(keys.owed());
        forget.key(keys.shard().owed_index()).arg(conversation.as_str());
        for id in message_ids {
            forget.arg(id);
        }
        Ok(forget.invoke_async(&mut self.conn.clone()).await?)
    }

    /// Takes an action's delivery mark (consumer retries and sweeps); with
    /// `echo_text`, the text about to be sent, its echo mark is raised in the
    /// same step so the webhook echo of this send is never taken for a human.
    /// `unknown_if_absent`: the job comes from the sweep of an answer whose
    /// holder may have died mid-send (in degraded mode no mark was set), so
    /// no mark means "unknown", not "go".
    pub async fn send_mark(
        &self,
        conversation: &ConversationId,
        action_id: &uuid::Uuid,
        echo_text: Option<&str>,
        unknown_if_absent: bool,
    ) -> Result<SendMark, AppError> {
        let keys = self.keys.conversation(conversation);
        let mut invocation = scripts::SEND_MARK.prepare_invoke();
        invocation
            .key(keys.send_mark(action_id))
            .arg(now_ms())
            .arg(millis(self.mark_window))
            .arg(SENT_TTL_SECS)
            .arg(if unknown_if_absent { "1" } else { "0" });
        if let Some(text) = echo_text {
            invocation.key(keys.echo(text)).arg(ECHO_TTL_SECS);
        }
        let mark: String = invocation.invoke_async(&mut self.conn.clone()).await?;
        Ok(match mark.as_str() {
            "sent" => SendMark::AlreadySent,
            "busy" => SendMark::Busy,
            "unknown" => SendMark::Unknown,
            _ => SendMark::Go,
        })
    }
}
