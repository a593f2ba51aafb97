//! Live chat end to end: real WebSocket clients (tokio-tungstenite)
//! through the `local-gateway` binary, which emulates API Gateway's
//! WebSocket API (`/ws`, the `@connections` management API) and calls the
//! same handlers the `ws-*` functions run; connections in DynamoDB (moto),
//! the chat log in Postgres, conversations in Redis. `scripts/test` builds
//! the gateway first; alone:
//! `cargo build -p local-gateway && cargo nextest run -p switchboard --test live_chat`.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use common::{
    TestEnv,
    moto::Moto,
    process::{Proc, binary},
};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard::{
    chat_token::{self, CustomerClaims},
    clock::now_epoch_seconds,
    config::Secret,
    connections::{Connection, Registry, Role},
};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async, tungstenite::Message};

const SECRET: &str = "a-chat-token-secret-of-32-bytes!!";
const WIDGET: &str = "public-widget-key";
const AGENT: &str = "agent-token-lan-0123456789";
const OTHER_AGENT: &str = "agent-token-minh-0123456789";
/// How long any one expected frame may take (a bound, not a measurement).
const PATIENCE: Duration = Duration::from_secs(30);

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// moto, a gateway with live chat on this test's schema and prefix, and
/// the registry its table is.
struct Stack {
    env: TestEnv,
    moto: Moto,
    table: String,
    port: u16,
    _gateway: Proc,
}

impl Stack {
    async fn start(vars: &[(&str, &str)]) -> Self {
        let env = TestEnv::new().await;
        let moto = Moto::start();
        let table = format!("connections-{}", uuid::Uuid::new_v4().simple());
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut command = Command::new(binary("local-gateway"));
        command
            .envs(&env.env)
            .envs(moto.aws_env())
            .env("PORT", port.to_string())
            .env("CONNECTIONS_TABLE", &table)
            .env("CHAT_TOKEN_SECRET", SECRET)
            .env("WIDGET_KEY", WIDGET)
            .env("AGENT_TOKENS", format!("lan={AGENT},minh={OTHER_AGENT}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in vars {
            command.env(k, v);
        }
        let gateway = Proc(command.spawn().unwrap());
        for _ in 0..600 {
            if reqwest::get(format!("http://127.0.0.1:{port}/openapi.json")).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { env, moto, table, port, _gateway: gateway }
    }

    fn registry(&self) -> Registry {
        Registry::new(self.moto.dynamodb(), &self.table)
    }

    async fn session(&self) -> Value {
        let response = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/api/v1/chat/sessions", self.port))
            .header("x-widget-key", WIDGET)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    async fn connect(&self, token: &str) -> Ws {
        self.try_connect(token).await.unwrap_or_else(|status| panic!("connection refused: {status}"))
    }

    /// The socket, or the status the handshake was refused with.
    async fn try_connect(&self, token: &str) -> Result<Ws, u16> {
        let url = format!("ws://127.0.0.1:{}/ws?token={}", self.port, urlencode(token));
        match connect_async(url).await {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
            Err(other) => panic!("websocket: {other}"),
        }
    }

    async fn history(&self, token: &str, conversation: &str, after: i64) -> (u16, Value) {
        let response = reqwest::Client::new()
            .get(format!(
                "http://127.0.0.1:{}/api/v1/chat/conversations/{conversation}/messages?after_seq={after}",
                self.port
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    async fn count(&self, sql: &str) -> i64 {
        self.env.count(sql).await
    }
}

fn urlencode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::text(frame.to_string())).await.unwrap();
}

/// Reads frames until one matches `wanted` (the others are skipped).
async fn expect(ws: &mut Ws, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    let read = async {
        while let Some(message) = ws.next().await {
            if let Ok(Message::Text(text)) = message {
                let frame: Value = serde_json::from_str(text.as_str()).unwrap();
                if wanted(&frame) {
                    return frame;
                }
            }
        }
        panic!("the socket closed before {what}");
    };
    tokio::time::timeout(PATIENCE, read).await.unwrap_or_else(|_| panic!("no {what} in {PATIENCE:?}"))
}

/// `text` as one message in frames of at most `size` bytes (browsers send
/// one frame per message; API Gateway takes frames of at most 32 KB).
async fn send_in_frames(ws: &mut Ws, text: &str, size: usize) {
    use tokio_tungstenite::tungstenite::protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    };
    let chunks: Vec<&[u8]> = text.as_bytes().chunks(size).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let opcode = OpCode::Data(if i == 0 { Data::Text } else { Data::Continue });
        ws.send(Message::Frame(Frame::message(chunk.to_vec(), opcode, i + 1 == chunks.len()))).await.unwrap();
    }
}

/// The close code the server closed the socket with.
async fn closed_with(ws: &mut Ws) -> Option<u16> {
    let read = async {
        while let Some(message) = ws.next().await {
            match message {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    };
    tokio::time::timeout(PATIENCE, read).await.unwrap_or_else(|_| panic!("the socket stayed open"))
}

fn is(kind: &'static str) -> impl Fn(&Value) -> bool {
    move |f| f["type"] == kind
}

fn message_from(sender: &'static str) -> impl Fn(&Value) -> bool {
    move |f| f["type"] == "message" && f["sender_type"] == sender
}

fn say(conversation: &str, client_id: &str, text: &str) -> Value {
    json!({"action": "sendMessage", "conversation_id": conversation, "client_message_id": client_id, "message": text})
}

#[tokio::test]
async fn a_customer_and_an_agent_chat_the_bot_answers_pauses_for_the_agent_and_resumes() {
    // No consumer: the `messages` rows are not written until one runs, so
    // what reaches the sockets plainly does not wait for them.
    let stack = Stack::start(&[("GATEWAY_CONSUMER", "off")]).await;
    let session = stack.session().await;
    let conversation = session["conversation_id"].as_str().unwrap();
    let mut agent = stack.connect(AGENT).await;
    send(&mut agent, json!({"action": "subscribe", "conversation_id": conversation})).await;
    let subscribed = expect(&mut agent, "subscribed", is("subscribed")).await;
    assert_eq!(subscribed["last_seq"], 0);
    let mut customer = stack.connect(session["token"].as_str().unwrap()).await;

    send(&mut customer, say(conversation, "m1", "Shop còn áo size M không?")).await;
    let seen = expect(&mut agent, "the customer's message", message_from("customer")).await;
    let rows = stack.count("SELECT count(*) FROM messages").await;
    assert_eq!(rows, 0, "the agent saw the message before its row was written");
    assert_eq!((seen["seq"].clone(), seen["message"].clone()), (json!(1), json!("Shop còn áo size M không?")));
    assert_eq!(seen["message_id"], "web:m1");
    let ack = expect(&mut customer, "the ack", is("ack")).await;
    assert_eq!((ack["seq"].clone(), ack["duplicate"].clone()), (json!(1), json!(false)));

    let answer = expect(&mut customer, "the bot's answer", message_from("bot")).await;
    let answer_seen = expect(&mut agent, "the bot's answer", message_from("bot")).await;
    assert_eq!(answer["seq"], 2);
    assert_eq!(answer_seen["message_id"], answer["message_id"]);

    send(&mut agent, say(conversation, "a1", "Chào bạn, mình là Lan, còn size M nhé")).await;
    let reply = expect(&mut customer, "the agent's reply", message_from("agent")).await;
    let paused = expect(&mut customer, "the paused status", is("status")).await;
    assert_eq!(paused["bot_paused"], true, "the customer learns a person took over");
    assert_eq!((reply["seq"].clone(), reply["sender_id"].clone()), (json!(3), json!("lan")));
    assert_eq!(expect(&mut agent, "the agent's ack", is("ack")).await["seq"], 3);

    // The bot is paused: the customer's next message is logged, not answered.
    send(&mut customer, say(conversation, "m2", "Vậy ship về Hà Nội bao lâu?")).await;
    let paused = expect(&mut customer, "the paused status", is("status")).await;
    assert_eq!(paused["bot_paused"], true);
    let bot = "SELECT count(*) FROM chat_messages WHERE sender_type = 'bot'";
    assert_eq!(stack.count(bot).await, 1);

    send(&mut agent, json!({"action": "resumeBot", "conversation_id": conversation})).await;
    expect(&mut customer, "the resumed status", |f| f["type"] == "status" && f["bot_paused"] == false).await;
    send(&mut customer, say(conversation, "m3", "Cảm ơn, mình đặt 1 áo")).await;
    let second = expect(&mut customer, "the second answer", message_from("bot")).await;
    assert!(second["seq"].as_i64().unwrap() > 4);

    // A consumer persists every message once; the log keeps its numbers.
    let consumer = stack.env.consumer().await;
    common::drain(&consumer).await;
    assert_eq!(stack.count("SELECT count(*) FROM messages").await, 4);
    let seqs = stack.count("SELECT count(DISTINCT seq) FROM chat_messages").await;
    let last = stack.count("SELECT max(seq) FROM chat_messages").await;
    assert_eq!((seqs, last), (6, 6));
}

#[tokio::test]
async fn after_a_dropped_connection_the_customer_catches_up_with_every_message_once_in_order() {
    let stack = Stack::start(&[]).await;
    let session = stack.session().await;
    let conversation = session["conversation_id"].as_str().unwrap().to_owned();
    let token = session["token"].as_str().unwrap().to_owned();
    let mut agent = stack.connect(AGENT).await;
    send(&mut agent, json!({"action": "subscribe", "conversation_id": conversation})).await;
    expect(&mut agent, "subscribed", is("subscribed")).await;

    let mut first = stack.connect(&token).await;
    send(&mut first, say(&conversation, "m1", "Có freeship không shop?")).await;
    let last_seen = expect(&mut first, "the ack", is("ack")).await["seq"].as_i64().unwrap();
    // Dropped without a goodbye while the answer is still being made.
    drop(first);
    expect(&mut agent, "the bot's answer", message_from("bot")).await;
    for (id, text) in [("a1", "Đơn từ 300k được freeship nhé"), ("a2", "Bạn cần thêm gì không?")] {
        send(&mut agent, say(&conversation, id, text)).await;
        expect(&mut agent, "the agent's ack", |f| f["type"] == "ack" && f["client_message_id"] == id).await;
    }

    let mut second = stack.connect(&token).await;
    let (status, missed) = stack.history(&token, &conversation, last_seen).await;
    assert_eq!(status, 200, "{missed}");
    let missed = missed["messages"].as_array().unwrap().clone();
    let kinds: Vec<(i64, String)> =
        missed.iter().map(|m| (m["seq"].as_i64().unwrap(), m["sender_type"].as_str().unwrap().to_owned())).collect();
    assert_eq!(kinds, vec![(2, "bot".into()), (3, "agent".into()), (4, "agent".into())]);

    // The send retried after the drop is the same message, not a second.
    send(&mut second, say(&conversation, "m1", "Có freeship không shop?")).await;
    let ack = expect(&mut second, "the ack of the resend", is("ack")).await;
    assert_eq!((ack["seq"].clone(), ack["duplicate"].clone()), (json!(1), json!(true)));
    // The agent paused the bot; resumed, a new message is answered — and
    // the resend never was.
    send(&mut agent, json!({"action": "resumeBot", "conversation_id": conversation})).await;
    expect(&mut second, "the resumed status", |f| f["type"] == "status" && f["bot_paused"] == false).await;
    send(&mut second, say(&conversation, "m2", "Ok cảm ơn")).await;
    expect(&mut second, "the second answer", message_from("bot")).await;
    let (_, all) = stack.history(&token, &conversation, 0).await;
    let all = all["messages"].as_array().unwrap().clone();
    let seqs: Vec<i64> = all.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    let ids: Vec<&str> = all.iter().map(|m| m["message_id"].as_str().unwrap()).collect();
    assert_eq!(ids.iter().filter(|id| **id == "web:m1").count(), 1);
    assert_eq!(all.iter().filter(|m| m["sender_type"] == "bot").count(), 2);
    let stored =
        format!("SELECT count(*) FROM messages WHERE message_id = 'web:m1' AND conversation_id = '{conversation}'");
    for _ in 0..300 {
        if stack.count(&stored).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stack.count(&stored).await, 1);
}

#[tokio::test]
async fn a_customer_token_opens_its_own_conversation_only_and_bad_tokens_are_refused() {
    let stack = Stack::start(&[("GATEWAY_CONSUMER", "off")]).await;
    let a = stack.session().await;
    let b = stack.session().await;
    let b_id = b["conversation_id"].as_str().unwrap();
    let mut customer = stack.connect(a["token"].as_str().unwrap()).await;

    send(&mut customer, json!({"action": "subscribe", "conversation_id": b_id})).await;
    let refused = expect(&mut customer, "an error", is("error")).await;
    assert_eq!((refused["code"].clone(), refused["action"].clone()), (json!("forbidden"), json!("subscribe")));
    send(&mut customer, say(b_id, "x1", "let me in")).await;
    let refused = expect(&mut customer, "an error", is("error")).await;
    assert_eq!((refused["code"].clone(), refused["client_message_id"].clone()), (json!("forbidden"), json!("x1")));
    send(&mut customer, json!({"action": "typing", "conversation_id": b_id})).await;
    assert_eq!(expect(&mut customer, "an error", is("error")).await["code"], "forbidden");
    let (status, _) = stack.history(a["token"].as_str().unwrap(), b_id, 0).await;
    assert_eq!(status, 403);
    assert_eq!(stack.count(&format!("SELECT count(*) FROM chat_messages WHERE conversation_id = '{b_id}'")).await, 0);

    let claims = |expires_at| CustomerClaims {
        conversation_id: b_id.into(),
        customer_id: b["customer_id"].as_str().unwrap().into(),
        expires_at,
        started_at: 0,
    };
    let expired = chat_token::mint(&Secret::new(SECRET), &claims(now_epoch_seconds() as u64 - 1));
    let forged = chat_token::mint(&Secret::new("not-the-servers-secret-but-as-long!"), &claims(u64::MAX / 2));
    for token in [expired.as_str(), forged.as_str(), "", "v1.e30.AAAA"] {
        assert_eq!(stack.try_connect(token).await.err(), Some(401), "token {token:?}");
    }
}

#[tokio::test]
async fn a_push_to_a_closed_connection_deletes_that_connection_only_and_the_others_still_get_theirs() {
    let stack = Stack::start(&[("GATEWAY_CONSUMER", "off")]).await;
    let session = stack.session().await;
    let conversation = session["conversation_id"].as_str().unwrap();
    let mut agent = stack.connect(AGENT).await;
    send(&mut agent, json!({"action": "subscribe", "conversation_id": conversation})).await;
    expect(&mut agent, "subscribed", is("subscribed")).await;
    // A connection the registry still lists but API Gateway has closed
    // (its `$disconnect` never ran).
    let registry = stack.registry();
    let stale = Connection {
        connection_id: "Z2hvc3QtY29ubj0=".into(),
        role: Role::Agent,
        subject: "minh".into(),
        conversation_id: None,
        // Registered a while ago: a 410 right after `$connect` is API
        // Gateway's answer to a connection still opening, not a gone one.
        connected_at: now_epoch_seconds() as u64 - 120,
    };
    registry.register(&stale).await.unwrap();
    registry.watch(&stale, conversation).await.unwrap();

    let mut customer = stack.connect(session["token"].as_str().unwrap()).await;
    send(&mut customer, say(conversation, "m1", "Alo shop")).await;
    expect(&mut agent, "the customer's message", message_from("customer")).await;
    expect(&mut customer, "the ack", is("ack")).await;
    expect(&mut customer, "the answer", message_from("bot")).await;
    assert!(registry.get(&stale.connection_id).await.unwrap().is_none(), "the gone connection is forgotten");
    let watchers: Vec<String> =
        registry.watchers(conversation).await.unwrap().into_iter().map(|c| c.connection_id).collect();
    assert_eq!(watchers.len(), 2, "the customer and the agent stay: {watchers:?}");
}

#[tokio::test]
async fn malformed_and_oversized_frames_get_error_frames_and_the_connection_stays_usable() {
    let stack = Stack::start(&[("GATEWAY_CONSUMER", "off")]).await;
    let session = stack.session().await;
    let conversation = session["conversation_id"].as_str().unwrap();
    let mut customer = stack.connect(session["token"].as_str().unwrap()).await;

    customer.send(Message::text("this is not json")).await.unwrap();
    assert_eq!(expect(&mut customer, "an error", is("error")).await["code"], "invalid_frame");
    send(&mut customer, json!({"action": "dance", "conversation_id": conversation})).await;
    assert_eq!(expect(&mut customer, "an error", is("error")).await["code"], "unknown_action");
    send(&mut customer, json!({"action": "sendMessage", "conversation_id": conversation, "message": "hi"})).await;
    let missing = expect(&mut customer, "an error", is("error")).await;
    assert_eq!(
        (missing["field"].clone(), missing["action"].clone()),
        (json!("client_message_id"), json!("sendMessage"))
    );
    // A text over 64 KiB, in frames of at most 32 KB (API Gateway's frame
    // quota), reaches the handler: an error frame, the socket stays.
    let long = say(conversation, "big", &"a".repeat(70 * 1024)).to_string();
    send_in_frames(&mut customer, &long, 30 * 1024).await;
    let refused = expect(&mut customer, "an error", is("error")).await;
    assert_eq!((refused["code"].clone(), refused["field"].clone()), (json!("payload_too_large"), json!("message")));
    // Over API Gateway's quotas (a frame over 32 KB, a message over 128 KB)
    // the socket is closed with 1009, as API Gateway closes it; a new one works.
    for (text, frame) in [(40 * 1024, 40 * 1024), (130 * 1024, 30 * 1024)] {
        let mut doomed = stack.connect(session["token"].as_str().unwrap()).await;
        send_in_frames(&mut doomed, &say(conversation, "big2", &"a".repeat(text)).to_string(), frame).await;
        assert_eq!(closed_with(&mut doomed).await, Some(1009));
    }

    send(&mut customer, json!({"action": "ping"})).await;
    expect(&mut customer, "the pong", is("pong")).await;
    send(&mut customer, say(conversation, "ok1", "Still here")).await;
    assert_eq!(expect(&mut customer, "the ack", is("ack")).await["seq"], 1);
    assert_eq!(stack.count("SELECT count(*) FROM chat_messages WHERE message_key LIKE 'web:big%'").await, 0);
}
