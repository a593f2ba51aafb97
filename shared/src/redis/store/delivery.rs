//! Delivery bookkeeping: `sending`/`sent` marks so no action is delivered
//! twice, echo recognition of what the bot sent, delivery results and
//! retries recorded in one round trip, owed entries an answer covered.

use super::{ConversationStore, SENDING_TTL_SECS, SENT_TTL_SECS, SendMark};
use crate::redis::scripts;
use crate::{domain::ConversationId, error::AppError};

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

    /// After delivery: remember Pancake's ids of what we sent (to ignore their
    /// echoes), settle the send marks and enqueue `jobs` — `(type, payload)`
    /// pairs, as [`ConversationStore::enqueue`] takes them: the results and a
    /// retry per retryable failure — in one round trip.
    pub async fn record_delivery(
        &self,
        conversation: &ConversationId,
        sent_ids: &[String],
        jobs: &[(&str, &str)],
        marks: &[(uuid::Uuid, bool)],
    ) -> Result<(), AppError> {
        let keys = self.keys.conversation(conversation);
        let mut pipe = redis::pipe();
        // Delivered actions are marked `sent` for good; failed ones unmarked
        // so a retry may send them.
        for (action_id, delivered) in marks {
            if *delivered {
                pipe.set_ex(keys.send_mark(action_id), "sent", SENT_TTL_SECS).ignore();
            } else {
                pipe.del(keys.send_mark(action_id)).ignore();
            }
        }
        for id in sent_ids {
            pipe.set_ex(keys.sent(id), 1, self.dedupe_ttl.as_secs().max(1)).ignore();
        }
        let stream = keys.shard().jobs();
        for (kind, payload) in jobs {
            pipe.xadd(&stream, "*", &[("type", *kind), ("payload", *payload)]).ignore();
        }
        let () = pipe.query_async(&mut self.conn.clone()).await?;
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

    /// Takes an action's delivery mark (consumer retries and sweeps).
    pub async fn send_mark(&self, conversation: &ConversationId, action_id: &uuid::Uuid) -> Result<SendMark, AppError> {
        let mark: String = scripts::SEND_MARK
            .key(self.keys.conversation(conversation).send_mark(action_id))
            .arg(SENDING_TTL_SECS)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(match mark.as_str() {
            "sent" => SendMark::AlreadySent,
            "busy" => SendMark::Busy,
            _ => SendMark::Go,
        })
    }
}
