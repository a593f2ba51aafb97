//! The live sockets of the emulated WebSocket API, by connection id: what
//! the management API (`/@connections/{id}`) reaches. A socket is listed
//! from the moment its `$connect` succeeded until it closes, so a push
//! made in between waits for the upgrade rather than finding it gone; once
//! it closes, or the gateway starts closing it, it is gone (`410`).
//!
//! Frames to a socket go through one queue, written in order by one task;
//! a push is answered when its frame was written (or could not be), so a
//! caller that pushes one frame after another (`Live::publish`) gets them
//! delivered in that order and learns of a closed socket at once.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use axum::extract::{FromRef, ws::Message};
use bytes::Bytes;
use switchboard::App;
use tokio::sync::{mpsc, oneshot};

use crate::events::{Identity, now_ms};

/// How long a push may wait for its frame to be written (a client that
/// stopped reading); the SDK gives up sooner (`live.rs`).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the writer of one socket is asked to do.
#[derive(Debug)]
pub enum Outbound {
    /// A frame, and whether it was written.
    Frame(Message, oneshot::Sender<bool>),
    /// The gateway closes the connection: a close frame with this code and reason.
    Close(u16, String),
}

/// What became of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posted {
    Sent,
    Gone,
    /// Not written in time: the socket is alive but not reading.
    Stuck,
}

/// What `GET /@connections/{id}` tells.
#[derive(Debug, Clone)]
pub struct Info {
    pub connected_at: i64,
    pub last_active_at: i64,
    pub identity: Identity,
}

#[derive(Debug)]
struct Socket {
    outbox: mpsc::UnboundedSender<Outbound>,
    connected_at: i64,
    last_active: Arc<AtomicI64>,
    identity: Identity,
}

/// Connection id → live socket.
#[derive(Debug, Clone, Default)]
pub struct Sockets(Arc<Mutex<HashMap<String, Socket>>>);

impl Sockets {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Socket>> {
        // A panic while holding the lock leaves the map whole: keep using it.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Lists a socket whose `$connect` succeeded; its writer reads the
    /// returned queue, and bumps the returned time of last activity.
    pub fn open(
        &self,
        id: &str,
        connected_at: i64,
        identity: Identity,
    ) -> (mpsc::UnboundedReceiver<Outbound>, Arc<AtomicI64>) {
        let (outbox, inbox) = mpsc::unbounded_channel();
        let last_active = Arc::new(AtomicI64::new(connected_at));
        let socket = Socket { outbox, connected_at, last_active: last_active.clone(), identity };
        self.lock().insert(id.to_owned(), socket);
        (inbox, last_active)
    }

    /// Forgets a socket (it closed): pushes to it are `410` from now on.
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Starts closing a socket with a close frame (`DELETE`, a frame too
    /// big, idle too long): forgotten at once. Whether it was live.
    pub fn close(&self, id: &str, code: u16, reason: &str) -> bool {
        let Some(socket) = self.lock().remove(id) else { return false };
        let _ = socket.outbox.send(Outbound::Close(code, reason.to_owned()));
        true
    }

    /// Sends `data` to a socket: a text frame (a binary one if it is not
    /// UTF-8), as API Gateway sends what `PostToConnection` is given.
    pub async fn post(&self, id: &str, data: Bytes) -> Posted {
        let frame = match String::from_utf8(data.to_vec()) {
            Ok(text) => Message::text(text),
            Err(_) => Message::Binary(data),
        };
        let (written, answer) = oneshot::channel();
        {
            let sockets = self.lock();
            let Some(socket) = sockets.get(id) else { return Posted::Gone };
            if socket.outbox.send(Outbound::Frame(frame, written)).is_err() {
                return Posted::Gone;
            }
            socket.last_active.store(now_ms(), Ordering::Relaxed);
        }
        match tokio::time::timeout(WRITE_TIMEOUT, answer).await {
            Ok(Ok(true)) => Posted::Sent,
            Ok(Ok(false) | Err(_)) => Posted::Gone,
            Err(_) => Posted::Stuck,
        }
    }

    pub fn info(&self, id: &str) -> Option<Info> {
        self.lock().get(id).map(|socket| Info {
            connected_at: socket.connected_at,
            last_active_at: socket.last_active.load(Ordering::Relaxed),
            identity: socket.identity.clone(),
        })
    }
}

/// The gateway's state: the app every route calls, and the live sockets.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub app: App,
    pub sockets: Sockets,
    /// The port the gateway listens on (`X-Forwarded-Port` of `$connect`).
    pub port: u16,
}

impl FromRef<Gateway> for App {
    fn from_ref(gateway: &Gateway) -> Self {
        gateway.app.clone()
    }
}
