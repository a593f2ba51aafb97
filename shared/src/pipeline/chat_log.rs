//! An answer reaches live chat the moment `complete` has made it final:
//! logged in the chat log after the messages it covers (which the consumer
//! may not have logged yet: a webhook's message is persisted a moment after
//! it is answered), then pushed to the conversation's sockets. Before
//! delivery to Pancake, which can take seconds.
//!
//! Best effort here: if the log cannot be written now, the consumer logs
//! and pushes the answer when it persists the answer job (the same key, so
//! never twice).

use crate::{
    App,
    domain::Snapshot,
    jobs::PersistAnswer,
    postgres::chat::{self, ChatEntry},
};

/// Logs and pushes `answer` (and the messages of `snapshot` it covers, first).
pub(super) async fn publish_answer(app: &App, snapshot: &Snapshot, answer: &PersistAnswer) {
    if !app.live.enabled() {
        return;
    }
    let covered = snapshot.context.iter().filter(|e| answer.covered_message_ids.contains(&e.message_id));
    let mut entries: Vec<ChatEntry> = covered
        .map(|entry| ChatEntry {
            conversation_id: answer.conversation_id.clone(),
            message_key: entry.message_id.clone(),
            sender_type: chat::chat_sender(&entry.sender_type).to_owned(),
            // The context keeps no sender id; the consumer's row has it.
            sender_id: String::new(),
            client_message_id: None,
            content: entry.content.clone(),
            actions: serde_json::Value::Array(Vec::new()),
            created_at: entry.timestamp,
        })
        .collect();
    entries.push(chat::answer_entry(answer));
    let appended = match app.db.get().await {
        Ok(mut client) => chat::append_committed(&mut client, &entries).await.map_err(|e| e.to_string()),
        Err(err) => Err(err.to_string()),
    };
    match appended {
        Ok(fresh) => app.live.publish(&fresh, None).await,
        Err(error) => {
            tracing::warn!(conversation_id = %answer.conversation_id, %error, "answer not logged for live chat yet; the consumer will")
        }
    }
}
