//! One stream entry parsed: a `type` field naming the job and its JSON
//! `payload` (plus the admit `outcome` of a message). Postgres jobs join the
//! batch; effects run after it.

use redis::streams::StreamId;

use crate::{
    jobs::{self, ActionResults, DeliverAction, PersistAnswer, PersistMessage, Redrive, UpdateConversation},
    postgres::writer::{Batch, MessageRow},
};

/// One parsed stream entry.
#[derive(Debug)]
pub(super) enum Job {
    Message(MessageRow),
    Answer(Box<PersistAnswer>),
    Results(ActionResults),
    Update(UpdateConversation),
    Process(Redrive),
    Deliver(Box<DeliverAction>),
}

impl Job {
    pub(super) fn parse(entry: &StreamId) -> Result<Self, String> {
        let field = |name: &str| -> Option<String> { entry.get::<String>(name) };
        let kind = field("type").ok_or("the entry has no type field")?;
        let payload = field("payload").ok_or("the entry has no payload field")?;
        Self::from_fields(&kind, &payload, field("outcome"))
    }

    /// A job from its `type`, `payload` and admit `outcome` fields: the one
    /// list of job types the consumer runs (an operator's replay is checked
    /// against it too).
    pub(super) fn from_fields(kind: &str, payload: &str, outcome: Option<String>) -> Result<Self, String> {
        fn de<T: serde::de::DeserializeOwned>(payload: &str) -> Result<T, String> {
            serde_json::from_str(payload).map_err(|e| format!("unparseable payload: {e}"))
        }
        Ok(match kind {
            jobs::PERSIST_MESSAGE => Job::Message(MessageRow {
                job: de::<PersistMessage>(payload)?,
                outcome: outcome.unwrap_or_else(|| "admitted".into()),
            }),
            jobs::PERSIST_ANSWER => Job::Answer(Box::new(de(payload)?)),
            jobs::ACTION_RESULTS => Job::Results(de(payload)?),
            jobs::UPDATE_CONVERSATION => Job::Update(de(payload)?),
            jobs::REDRIVE_CONVERSATION | jobs::PROCESS_CONVERSATION => Job::Process(de(payload)?),
            jobs::DELIVER_ACTION => Job::Deliver(Box::new(de(payload)?)),
            other => return Err(format!("unknown job type {other:?}")),
        })
    }

    /// The conversation the job belongs to (every payload names one).
    pub(super) fn conversation_id(&self) -> &str {
        match self {
            Job::Message(m) => &m.job.conversation_id,
            Job::Answer(a) => &a.conversation_id,
            Job::Results(r) => &r.conversation_id,
            Job::Update(u) => &u.conversation_id,
            Job::Process(p) => &p.conversation_id,
            Job::Deliver(d) => &d.conversation_id,
        }
    }

    pub(super) fn into_batch(self, batch: &mut Batch) -> Option<Job> {
        match self {
            Job::Message(m) => batch.messages.push(m),
            Job::Answer(a) => batch.answers.push(*a),
            Job::Results(r) => batch.results.push(r),
            Job::Update(u) => batch.updates.push(u),
            effect => return Some(effect),
        }
        None
    }
}
