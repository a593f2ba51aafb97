//! A Pancake stand-in that behaves like Pancake where delivery can go wrong:
//! each send is answered as the test says (accepted, refused, accepted but
//! answered with an error, or held until the test lets it go), and
//! `GET …/conversations/{id}/messages` lists, newest first, the sends that
//! landed, so a delivery of unknown outcome can look before it resends.

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
}

pub struct PancakeStub {
    pub stub: Stub,
    pub landed: Arc<Mutex<Vec<Landed>>>,
    release: Arc<Notify>,
}

impl PancakeStub {
    /// `plan(n)` answers the n-th send (0-based); assignments are accepted.
    pub async fn start(plan: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        let landed: Arc<Mutex<Vec<Landed>>> = Arc::default();
        let release = Arc::new(Notify::new());
        let sends = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let plan = Arc::new(plan);
        let (stored, released) = (landed.clone(), release.clone());
        let stub = Stub::start(move |request: Recorded| {
            let (landed, release, sends, plan) = (stored.clone(), released.clone(), sends.clone(), plan.clone());
            async move {
                let conversation = conversation_of(&request.path);
                if request.method == "GET" {
                    let listed: Vec<Value> = landed
                        .lock()
                        .unwrap()
                        .iter()
                        .rev()
                        .filter(|m| m.conversation_id == conversation)
                        .map(|m| {
                            json!({"id": m.id, "conversation_id": m.conversation_id, "message": m.text,
                                   "original_message": m.text, "from": {"id": page_of(&request.path)},
                                   "inserted_at": now_utc()})
                        })
                        .collect();
                    return (StatusCode::OK, json!({"success": true, "messages": listed}));
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
        Self { stub, landed, release }
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

fn now_utc() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}
