//! A conversation's life on the message path: admit (dedupe, context, rate
//! limit, pause, lock, fencing number and the persistence job in one
//! script), the holder's heartbeat and `complete`, `claim` for a re-drive,
//! `cancel` and `release`, and Pancake's conversation events.

use redis::Value;

use super::admit_args::{AdmitArgs, admit_keys};
use super::{
    Admission, AdmitMode, AnswerRecord, Claim, Completion, ConversationStore, ECHO_TTL_SECS, KNOWN_TTL_SECS, Lease,
    SENT_TTL_SECS,
    reply::{array, parse_json, protocol, snapshot, string, to_json},
};
use crate::redis::{keys::ConversationKeys, scripts};
use crate::{
    clock::{millis, now_ms},
    domain::{ContextEntry, ConversationId, IncomingMessage, OwedMessage, SenderType},
    error::{AppError, RateScope},
};

impl ConversationStore {
    /// Admits one validated message; `persist_job` is written to the stream
    /// in the same atomic step unless the message is a duplicate.
    pub async fn admit(
        &self,
        message: &IncomingMessage,
        persist_job: &str,
        mode: AdmitMode<'_>,
    ) -> Result<Admission, AppError> {
        self.admit_as(message, persist_job, mode, &uuid::Uuid::new_v4().simple().to_string()).await
    }

    /// [`Self::admit`] as the call named `token` (its lock token): the same
    /// call run twice — as a client re-sends a script after a dropped
    /// connection — answers the same both times (see `admit.lua`). Public
    /// for the tests that re-send a call.
    #[doc(hidden)]
    pub async fn admit_as(
        &self,
        message: &IncomingMessage,
        persist_job: &str,
        mode: AdmitMode<'_>,
        token: &str,
    ) -> Result<Admission, AppError> {
        let keys = self.keys.conversation(&message.conversation_id);
        let entry = ContextEntry {
            message_id: message.message_id.as_str().to_owned(),
            sender_type: message.sender_type.as_str().to_owned(),
            content: message.message_content.clone(),
            timestamp: message.timestamp,
        };
        let owed = OwedMessage { message_id: entry.message_id.clone(), timestamp: message.timestamp, seq: 0 };
        let kind = match message.sender_type {
            s if s.is_customer() => "customer",
            SenderType::Agent => "agent",
            _ => "other",
        };
        // The page window: inside admit on one shard (exact, no extra round
        // trip); with several shards a page's conversations live in other
        // slots, so its own window is checked first (one more round trip,
        // and a duplicate or paused message counts against the page too).
        let page = message.page_id().filter(|_| self.page_rate_max > 0);
        let page_in_script = page.is_some() && self.keys.shard_count() == 1;
        let page_verdict = match page {
            // A message stored unanswered sends nothing: it spends no quota.
            Some(page) if !page_in_script && message.sender_type.is_customer() && !matches!(mode, AdmitMode::Store) => {
                let wait: u64 = scripts::PAGE_RATE
                    .key(self.keys.page_rate(&page))
                    .arg(now_ms())
                    .arg(millis(self.rate_window))
                    .arg(self.page_rate_max)
                    .invoke_async(&mut self.conn.clone())
                    .await?;
                if wait > 0 { wait.to_string() } else { String::new() }
            }
            _ => String::new(),
        };
        let (page_id, assistant_id) = (message.page_id(), message.assistant_id());
        let (entry, owed) = (to_json(&entry), to_json(&owed));
        let args = AdmitArgs {
            message_id: message.message_id.as_str(),
            timestamp: message.timestamp,
            context_entry: &entry,
            sender_kind: kind,
            persist_job,
            lock_token: token,
            lock_ttl_ms: millis(self.lock_ttl),
            context_ttl_secs: self.context_ttl.as_secs().max(1),
            dedupe_ttl_secs: self.dedupe_ttl.as_secs().max(1),
            rate_max: self.rate_max,
            rate_window_ms: millis(self.rate_window),
            now_ms: now_ms(),
            pause_ttl_secs: self.pause_ttl.as_secs().max(1),
            owed_member: &owed,
            conversation_id: message.conversation_id.as_str(),
            page_id: page_id.as_deref().unwrap_or_default(),
            assistant_id: assistant_id.as_deref().unwrap_or_default(),
            mode: match mode {
                AdmitMode::Sync => "sync",
                AdmitMode::Defer { .. } => "defer",
                AdmitMode::Store => "store",
            },
            process_job: match mode {
                AdmitMode::Sync | AdmitMode::Store => "",
                AdmitMode::Defer { process_job } => process_job,
            },
            page_rate_max: if page_in_script { self.page_rate_max } else { 0 },
            known_ttl_secs: KNOWN_TTL_SECS,
            page_verdict: &page_verdict,
            context_max: self.context_max,
            context_max_bytes: self.context_max_bytes,
        };
        let mut invocation = scripts::ADMIT.prepare_invoke();
        for key in admit_keys(&keys, &message.message_id, page_id.as_deref()) {
            invocation.key(key);
        }
        for (_, arg) in args.argv() {
            invocation.arg(arg);
        }
        let reply: Value = invocation.invoke_async(&mut self.conn.clone()).await?;
        let mut parts = array(reply)?.into_iter();
        let tag = string(parts.next())?;
        Ok(match tag.as_str() {
            "duplicate" => Admission::Duplicate,
            "stored" | "unanswered" => Admission::Stored,
            "bot_paused" => Admission::BotPaused,
            "locked" => Admission::Locked,
            "queued" => Admission::Queued,
            "rate_limited" => Admission::RateLimited {
                retry_after_secs: string(parts.next())?.parse().map_err(|_| protocol("rate_limited"))?,
                scope: match string(parts.next())?.as_str() {
                    "page" => RateScope::Page,
                    _ => RateScope::Conversation,
                },
            },
            "acquired" => {
                let fence = string(parts.next())?.parse().map_err(|_| protocol("fence"))?;
                let mut snapshot = snapshot(parts.next(), parts.next())?;
                snapshot.returning = string(parts.next())? == "1";
                Admission::Acquired { lease: Lease { token: token.to_owned(), fence }, snapshot }
            }
            other => return Err(protocol(other)),
        })
    }

    /// Extends the lock; `false` means it was lost and the holder must stop.
    pub async fn heartbeat(&self, conversation: &ConversationId, lease: &Lease) -> Result<bool, AppError> {
        let extended: i64 = scripts::HEARTBEAT
            .key(self.keys.conversation(conversation).lock())
            .arg(&lease.token)
            .arg(millis(self.lock_ttl))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(extended == 1)
    }

    /// Completes one answer. With `is_final` the answer is recorded even when
    /// newer messages arrived (the restart budget is spent).
    pub async fn complete(
        &self,
        conversation: &ConversationId,
        lease: &Lease,
        covered_seq: i64,
        is_final: bool,
        answer: &AnswerRecord<'_>,
    ) -> Result<Completion, AppError> {
        let keys: ConversationKeys = self.keys.conversation(conversation);
        let mut invocation = scripts::COMPLETE.prepare_invoke();
        invocation
            .key(keys.lock())
            .key(keys.state())
            .key(keys.context())
            .key(keys.owed())
            .key(keys.shard().jobs())
            .key(keys.shard().owed_index());
        for text in answer.echo_texts {
            invocation.key(keys.echo(text));
        }
        for action_id in answer.send_marks {
            invocation.key(keys.send_mark(action_id));
        }
        let reply: Value = invocation
            .arg(&lease.token)
            .arg(covered_seq)
            .arg(if is_final { "1" } else { "0" })
            .arg(to_json(answer.context_entry))
            .arg(answer.context_entry.timestamp)
            .arg(answer.job)
            .arg(if answer.pause_bot { "1" } else { "0" })
            .arg(self.pause_ttl.as_secs().max(1))
            .arg(self.context_ttl.as_secs().max(1))
            .arg(self.context_max)
            .arg(millis(self.lock_ttl))
            .arg(now_ms())
            .arg(answer.redrive_job)
            .arg(conversation.as_str())
            .arg(ECHO_TTL_SECS)
            .arg(answer.echo_texts.len())
            .arg(millis(self.mark_window))
            .arg(SENT_TTL_SECS)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let mut parts = array(reply)?.into_iter();
        Ok(match string(parts.next())?.as_str() {
            "lost" => Completion::Lost,
            "paused" => Completion::Paused,
            "newer" => Completion::Newer(snapshot(parts.next(), parts.next())?),
            "done" => Completion::Done {
                still_owed: array(parts.next().unwrap_or(Value::Nil))?
                    .into_iter()
                    .map(|m| parse_json::<OwedMessage>(Some(m)))
                    .collect::<Result<_, _>>()?,
            },
            other => return Err(protocol(other)),
        })
    }

    /// Force-releases the lock and clears the processing flag. Returns whether
    /// a lock was held and how many messages are still owed.
    pub async fn cancel(&self, conversation: &ConversationId) -> Result<(bool, u64), AppError> {
        let keys = self.keys.conversation(conversation);
        let (released, owed): (i64, u64) = scripts::CANCEL
            .key(keys.lock())
            .key(keys.state())
            .key(keys.owed())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok((released == 1, owed))
    }

    /// Takes the lock of a conversation to answer its owed messages.
    pub async fn claim(&self, conversation: &ConversationId) -> Result<Claim, AppError> {
        self.claim_as(conversation, &uuid::Uuid::new_v4().simple().to_string()).await
    }

    /// [`Self::claim`] as the call named `token`; run twice, it answers the
    /// same (see `claim.lua`). Public for the tests that re-send a call.
    #[doc(hidden)]
    pub async fn claim_as(&self, conversation: &ConversationId, token: &str) -> Result<Claim, AppError> {
        let keys = self.keys.conversation(conversation);
        let reply: Value = scripts::CLAIM
            .key(keys.state())
            .key(keys.context())
            .key(keys.owed())
            .key(keys.lock())
            .key(keys.shard().owed_index())
            .arg(token)
            .arg(millis(self.lock_ttl))
            .arg(now_ms())
            .arg(conversation.as_str())
            .invoke_async(&mut self.conn.clone())
            .await?;
        let mut parts = array(reply)?.into_iter();
        Ok(match string(parts.next())?.as_str() {
            "nothing" => Claim::Nothing,
            "bot_paused" => Claim::BotPaused,
            "locked" => Claim::Locked,
            "acquired" => {
                let fence = string(parts.next())?.parse().map_err(|_| protocol("fence"))?;
                let snapshot = snapshot(parts.next(), parts.next())?;
                let page_id = Some(string(parts.next())?).filter(|s| !s.is_empty());
                let assistant_id = Some(string(parts.next())?).filter(|s| !s.is_empty());
                Claim::Acquired { lease: Lease { token: token.to_owned(), fence }, snapshot, page_id, assistant_id }
            }
            other => return Err(protocol(other)),
        })
    }

    /// Gives the lock back if we still hold it.
    pub async fn release(&self, conversation: &ConversationId, lease: &Lease) -> Result<bool, AppError> {
        let keys = self.keys.conversation(conversation);
        let released: i64 = scripts::RELEASE
            .key(keys.lock())
            .key(keys.state())
            .arg(&lease.token)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(released == 1)
    }

    /// Applies a Pancake conversation event in version order; `job` (an
    /// `update_conversation` payload) is enqueued when it applies. Returns
    /// `stale`, `paused`, `resumed` or `applied`.
    pub async fn conversation_event(
        &self,
        conversation: &ConversationId,
        version: i64,
        assigned: bool,
        job: &str,
    ) -> Result<String, AppError> {
        let keys = self.keys.conversation(conversation);
        Ok(scripts::CONVERSATION_EVENT
            .key(keys.state())
            .key(keys.shard().jobs())
            .arg(version)
            .arg(if assigned { "1" } else { "0" })
            .arg(now_ms())
            .arg(self.pause_ttl.as_secs().max(1))
            .arg(self.context_ttl.as_secs().max(1))
            .arg(job)
            .invoke_async(&mut self.conn.clone())
            .await?)
    }
}
