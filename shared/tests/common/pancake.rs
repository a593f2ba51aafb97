//! A Pancake stand-in that behaves like Pancake where delivery can go wrong:
//! each send is answered as the test says (accepted, refused, accepted but
//! answered with an error, or held until the test lets it go), and
//! `GET …/conversations/{id}/messages` lists, newest first, the sends that
//! landed, so a delivery of unknown outcome can look before it resends.
//!
//! It also holds a page's history as Pancake's API serves it
//! (`reference/pancake/openapi.yaml`): messages a test writes with
//! [`PancakeStub::write`] (a customer's or the page's, at a given time),
//! listed with the sends by `GET …/messages` (newest first, 30 a page, older
//! ones by `current_count`), and their conversations by
//! `GET /pages/{page_id}/conversations` (`since`/`until` on `updated_at`,
//! most recently updated first, 60 a page, then `last_conversation_id`).

use std::sync::{Arc, Mutex};

use http::StatusCode;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::{Recorded, Stub};

/// How the stub answers one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Delivered; 200 with a message id.
    Accept,
    /// Not delivered; answered with this status.
    Refuse(u16),
    /// Delivered, but answered with this status (a slow Pancake behind a proxy).
    LandThenFail(u16),
    /// Delivered, then held until [`PancakeStub::release`] (a holder that
    /// dies mid-send is cut off while waiting here).
    LandThenHang,
    /// Held until [`PancakeStub::release`], then refused: never delivered.
    Hang,
}

/// One message that reached the conversation.
#[derive(Debug, Clone)]
pub struct Landed {
    pub id: String,
    pub conversation_id: String,
    pub text: String,
    /// When it landed (epoch seconds).
    pub at: f64,
    /// Who sent it: the page (a send) or a customer (written by a test).
    pub from: String,
}

/// The conversations and written messages the stub's listings serve.
#[derive(Debug, Default)]
pub struct History {
    /// `(page, conversation, customer, updated_at)`.
    pub conversations: Vec<(String, String, String, f64)>,
    /// Messages written by tests, beside the sends that landed.
    pub messages: Vec<Landed>,
    /// Listings answered with this status instead (a failing Pancake).
    pub failing: Option<u16>,
}

pub struct PancakeStub {
    pub stub: Stub,
    pub landed: Arc<Mutex<Vec<Landed>>>,
    pub history: Arc<Mutex<History>>,
    release: Arc<Notify>,
}

impl PancakeStub {
    /// `plan(n)` answers the n-th send (0-based); assignments are accepted.
    pub async fn start(plan: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        let landed: Arc<Mutex<Vec<Landed>>> = Arc::default();
        let history: Arc<Mutex<History>> = Arc::default();
        let release = Arc::new(Notify::new());
        let sends = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let plan = Arc::new(plan);
        let (stored, released, written) = (landed.clone(), release.clone(), history.clone());
        let stub = Stub::start(move |request: Recorded| {
            let (landed, release, sends, plan) = (stored.clone(), released.clone(), sends.clone(), plan.clone());
            let history = written.clone();
            async move {
                let conversation = conversation_of(&request.path);
                if request.method == "GET" {
                    if let Some(status) = history.lock().unwrap().failing {
                        return (StatusCode::from_u16(status).unwrap(), json!({"success": false}));
                    }
                    if request.path.ends_with("/conversations") {
                        return (StatusCode::OK, list_conversations(&history.lock().unwrap(), &request));
                    }
                    let page = page_of(&request.path);
                    let mut all: Vec<Landed> = history.lock().unwrap().messages.clone();
                    all.extend(landed.lock().unwrap().iter().cloned());
                    // Newest first; of two at one time, the later written.
                    let mut listed: Vec<(usize, Landed)> =
                        all.into_iter().enumerate().filter(|(_, m)| m.conversation_id == conversation).collect();
                    listed.sort_by(|(i, a), (j, b)| b.at.total_cmp(&a.at).then(j.cmp(i)));
                    let from = query_of(&request.query, "current_count").and_then(|c| c.parse().ok()).unwrap_or(0);
                    let listed: Vec<Value> = listed
                        .into_iter()
                        .skip(from)
                        .take(30)
                        .map(|(_, m)| {
                            json!({"id": m.id, "conversation_id": m.conversation_id, "page_id": page, "type": "INBOX",
                                   "message": m.text, "original_message": m.text,
                                   "from": {"id": m.from, "name": m.from}, "inserted_at": utc(m.at)})
                        })
                        .collect();
                    let customer =
                        history.lock().unwrap().conversations.iter().find(|c| c.1 == conversation).map(|c| c.2.clone());
                    return (
                        StatusCode::OK,
                        json!({"success": true, "conversation_id": conversation, "messages": listed,
                               "conv_from": customer.map(|c| json!({"id": c, "name": c}))}),
                    );
                }
                if !request.path.ends_with("/messages") {
                    return (StatusCode::OK, json!({"success": true}));
                }
                let n = sends.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let id = format!("pancake_msg_{n}");
                let text = request.body["message"].as_str().unwrap_or_default().to_owned();
                let land = || {
                    landed.lock().unwrap().push(Landed {
                        id: id.clone(),
                        conversation_id: conversation.clone(),
                        text: text.clone(),
                        at: now_epoch(),
                        from: page_of(&request.path),
                    })
                };
                match plan(n) {
                    Reply::Accept => {
                        land();
                        (StatusCode::OK, json!({"success": true, "id": id}))
                    }
                    Reply::Refuse(status) => (StatusCode::from_u16(status).unwrap(), json!({"success": false})),
                    Reply::LandThenFail(status) => {
                        land();
                        (StatusCode::from_u16(status).unwrap(), json!({"success": false}))
                    }
                    Reply::Hang => {
                        release.notified().await;
                        (StatusCode::SERVICE_UNAVAILABLE, json!({"success": false}))
                    }
                    Reply::LandThenHang => {
                        land();
                        release.notified().await;
                        (StatusCode::OK, json!({"success": true, "id": id}))
                    }
                }
            }
        })
        .await;
        Self { stub, landed, history, release }
    }

    /// Writes a message into the page's history, `secs_ago` seconds ago:
    /// from the customer, or (with `from` equal to `page`) from the page.
    /// The conversation (the customer's, created at the first message) is
    /// updated to the message's time.
    pub fn write(&self, page: &str, conversation: &str, from: &str, id: &str, text: &str, secs_ago: f64) {
        let at = now_epoch() - secs_ago;
        let mut history = self.history.lock().unwrap();
        match history.conversations.iter_mut().find(|c| c.1 == conversation) {
            Some(c) => c.3 = c.3.max(at),
            None => history.conversations.push((page.into(), conversation.into(), from.into(), at)),
        }
        history.messages.push(Landed {
            id: id.into(),
            conversation_id: conversation.into(),
            text: text.into(),
            at,
            from: from.into(),
        });
    }

    /// Listings (GETs) answer with `status` from now on (`None`: normally).
    pub fn fail_listings(&self, status: Option<u16>) {
        self.history.lock().unwrap().failing = status;
    }

    /// Listing requests received (GETs of conversations and of messages).
    pub fn listings(&self) -> usize {
        self.stub.requests().iter().filter(|r| r.method == "GET").count()
    }

    pub fn url(&self) -> String {
        self.stub.url()
    }

    /// Sends received (POSTs to `…/messages`), landed or not.
    pub fn sends(&self) -> usize {
        self.stub.requests().iter().filter(|r| r.method == "POST" && r.path.ends_with("/messages")).count()
    }

    /// Look-ups received (GETs of a conversation's messages).
    pub fn lookups(&self) -> usize {
        self.stub.requests().iter().filter(|r| r.method == "GET").count()
    }

    /// Messages the customer actually got, in order.
    pub fn delivered(&self) -> Vec<String> {
        self.landed.lock().unwrap().iter().map(|m| m.text.clone()).collect()
    }

    /// Lets every held send answer.
    pub fn release(&self) {
        self.release.notify_waiters();
    }
}

/// `/pages/{page}/conversations/{conversation}/…` → conversation.
fn conversation_of(path: &str) -> String {
    path.split('/').skip_while(|s| *s != "conversations").nth(1).unwrap_or_default().to_owned()
}

fn page_of(path: &str) -> String {
    path.split('/').skip_while(|s| *s != "pages").nth(1).unwrap_or_default().to_owned()
}

/// One query parameter (the stub's ids and numbers need no decoding).
fn query_of(query: &str, name: &str) -> Option<String> {
    query.split('&').filter_map(|pair| pair.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v.to_owned())
}

/// `GET /pages/{page}/conversations`: updated in `[since, until]`, most
/// recently updated first, 60 a page after `last_conversation_id`.
fn list_conversations(history: &History, request: &Recorded) -> Value {
    let page = page_of(&request.path);
    let bound = |name| query_of(&request.query, name).and_then(|v| v.parse::<f64>().ok());
    let (since, until) = (bound("since").unwrap_or(f64::MIN), bound("until").unwrap_or(f64::MAX));
    let mut listed: Vec<&(String, String, String, f64)> =
        history.conversations.iter().filter(|c| c.0 == page && c.3 >= since && c.3 <= until).collect();
    listed.sort_by(|a, b| b.3.total_cmp(&a.3).then(b.1.cmp(&a.1)));
    let start = match query_of(&request.query, "last_conversation_id") {
        Some(last) => listed.iter().position(|c| c.1 == last).map_or(listed.len(), |i| i + 1),
        None => 0,
    };
    let conversations: Vec<Value> = listed
        .into_iter()
        .skip(start)
        .take(60)
        .map(|(page, id, customer, updated)| {
            let count = history.messages.iter().filter(|m| &m.conversation_id == id).count();
            json!({"id": id, "type": "INBOX", "page_id": page, "updated_at": utc(*updated),
                   "inserted_at": utc(*updated), "from": {"id": customer, "name": customer},
                   "message_count": count, "seen": false})
        })
        .collect();
    json!({"conversations": conversations})
}

fn now_epoch() -> f64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9
}

/// Pancake's date-time: UTC, no zone, microseconds.
fn utc(epoch: f64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos((epoch * 1e9) as i128).unwrap();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.microsecond()
    )
}
