//! Live chat's pieces against the real stores: the chat log's sequence
//! numbers in Postgres, the connection registry in DynamoDB (moto), the
//! session and history routes through the router. The WebSocket flows
//! end to end are in `live_chat.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::{TestEnv, moto::Moto};
use http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use switchboard::{
    chat_token::{self, CustomerClaims},
    clock::now_epoch_seconds,
    config::Secret,
    connections::{CONNECTION_TTL_SECS, Connection, Role},
    postgres::chat::{self, ChatEntry},
};

const SECRET: &str = "a-chat-token-secret-of-32-bytes!!";
const WIDGET: &str = "public-widget-key";
const AGENT: &str = "agent-token-0123456789";

fn entry(conversation: &str, key: &str, text: &str) -> ChatEntry {
    ChatEntry {
        conversation_id: conversation.into(),
        message_key: key.into(),
        sender_type: "customer".into(),
        sender_id: "c1".into(),
        client_message_id: None,
        content: text.into(),
        actions: json!([]),
        created_at: now_epoch_seconds(),
    }
}

async fn chat_env(vars: &[(&str, &str)]) -> TestEnv {
    let mut all = vec![
        ("CHAT_TOKEN_SECRET", SECRET),
        ("WIDGET_KEY", WIDGET),
        ("AGENT_TOKENS", "alice=agent-token-0123456789"),
        ("ADMIN_ACCESS_TOKEN", "admin-token"),
    ];
    all.extend_from_slice(vars);
    TestEnv::with(&all, None).await
}

async fn call(
    env: &TestEnv,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (StatusCode, http::HeaderMap, Value) {
    let mut builder = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let body = if body.is_null() { Bytes::new() } else { Bytes::from(body.to_string()) };
    let mut request = builder.body(body).unwrap();
    request.extensions_mut().insert(switchboard::http::SourceIp("127.0.0.9".into()));
    let response = switchboard::http::route(&env.app, request).await;
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, serde_json::from_slice(response.body()).unwrap_or(Value::Null))
}

async fn session(env: &TestEnv, body: Value) -> (StatusCode, Value) {
    let (status, _, body) = call(env, Method::POST, "/api/v1/chat/sessions", &[("x-widget-key", WIDGET)], body).await;
    (status, body)
}

#[tokio::test]
async fn concurrent_appends_number_a_conversations_messages_once_each_without_gaps() {
    let env = TestEnv::new().await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let db = env.app.db.clone();
            tokio::spawn(async move {
                let mut client = db.get().await.unwrap();
                chat::append_committed(&mut client, &[entry("conv-1", &format!("m{i}"), "hi")]).await.unwrap()
            })
        })
        .collect();
    let mut seqs: Vec<i64> = Vec::new();
    for task in tasks {
        seqs.extend(task.await.unwrap().iter().map(|m| m.seq));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    // Appending them again changes nothing and returns nothing fresh.
    let mut client = env.app.db.get().await.unwrap();
    let again: Vec<ChatEntry> = (0..20).map(|i| entry("conv-1", &format!("m{i}"), "hi")).collect();
    assert!(chat::append_committed(&mut client, &again).await.unwrap().is_empty());
    assert_eq!(chat::last_seq(&**client, "conv-1").await.unwrap(), 20);
    let read = chat::after(&**client, "conv-1", 15, 100).await.unwrap();
    assert_eq!(read.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![16, 17, 18, 19, 20]);
}

#[tokio::test]
async fn writers_racing_to_log_the_same_message_take_one_number_and_skip_none() {
    let env = TestEnv::new().await;
    for round in 0..5 {
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let db = env.app.db.clone();
                tokio::spawn(async move {
                    let mut client = db.get().await.unwrap();
                    chat::append_committed(&mut client, &[entry("conv-r", &format!("same-{round}"), "hi")])
                        .await
                        .unwrap()
                        .len()
                })
            })
            .collect();
        let mut logged = 0;
        for task in tasks {
            logged += task.await.unwrap();
        }
        assert_eq!(logged, 1, "one writer logs it");
    }
    let client = env.app.db.get().await.unwrap();
    let seqs: Vec<i64> = chat::after(&**client, "conv-r", 0, 100).await.unwrap().iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(chat::last_seq(&**client, "conv-r").await.unwrap(), 5);
}

#[tokio::test]
async fn one_append_numbers_entries_in_the_order_given_per_conversation() {
    let env = TestEnv::new().await;
    let mut client = env.app.db.get().await.unwrap();
    let entries = vec![
        entry("a", "1", "x"),
        entry("b", "1", "x"),
        entry("a", "2", "y"),
        entry("a", "1", "dup"),
        entry("b", "2", "z"),
    ];
    let fresh = chat::append_committed(&mut client, &entries).await.unwrap();
    let of = |c: &str| {
        fresh
            .iter()
            .filter(|m| m.entry.conversation_id == c)
            .map(|m| (m.seq, m.entry.message_key.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(of("a"), vec![(1, "1".to_string()), (2, "2".to_string())]);
    assert_eq!(of("b"), vec![(1, "1".to_string()), (2, "2".to_string())]);
    assert_eq!(chat::after(&**client, "a", 0, 10).await.unwrap()[0].entry.content, "x");
}

#[tokio::test]
async fn the_registry_finds_watchers_by_conversation_and_forgets_a_connection_whole() {
    let moto = Moto::start();
    let registry = moto.connections_table().await;
    let now = now_epoch_seconds() as u64;
    let customer = Connection {
        connection_id: "cust=".into(),
        role: Role::Customer,
        subject: "v1".into(),
        conversation_id: Some("conv-x".into()),
        connected_at: now,
    };
    let agent = Connection {
        connection_id: "agent=".into(),
        role: Role::Agent,
        subject: "alice".into(),
        conversation_id: None,
        connected_at: now,
    };
    registry.register(&customer).await.unwrap();
    registry.register(&agent).await.unwrap();
    registry.watch(&agent, "conv-x").await.unwrap();
    registry.watch(&agent, "conv-y").await.unwrap();
    let mut watchers: Vec<String> =
        registry.watchers("conv-x").await.unwrap().into_iter().map(|c| c.connection_id).collect();
    watchers.sort();
    assert_eq!(watchers, vec!["agent=".to_string(), "cust=".to_string()]);
    assert_eq!(registry.get("agent=").await.unwrap().unwrap().subject, "alice");

    registry.forget("agent=").await.unwrap();
    assert!(registry.get("agent=").await.unwrap().is_none());
    assert!(registry.watchers("conv-y").await.unwrap().is_empty());
    assert_eq!(registry.watchers("conv-x").await.unwrap().len(), 1);
    // Created again by setup: already there, nothing to do.
    assert!(!registry.create_table().await.unwrap());
}

#[tokio::test]
async fn an_expired_item_is_not_read_back_though_dynamodb_has_not_deleted_it() {
    let moto = Moto::start();
    let registry = moto.connections_table().await;
    let long_ago = now_epoch_seconds() as u64 - CONNECTION_TTL_SECS - 60;
    let stale = Connection {
        connection_id: "old=".into(),
        role: Role::Customer,
        subject: "v".into(),
        conversation_id: Some("conv-z".into()),
        connected_at: long_ago,
    };
    registry.register(&stale).await.unwrap();
    assert!(registry.get("old=").await.unwrap().is_none());
    assert!(registry.watchers("conv-z").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_widget_session_gets_a_token_for_a_new_conversation_and_resumes_it_only_with_that_token() {
    let env = chat_env(&[]).await;
    let (status, first) = session(&env, Value::Null).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let conversation = first["conversation_id"].as_str().unwrap().to_owned();
    assert!(conversation.starts_with("web-"));
    let claims =
        chat_token::verify(&Secret::new(SECRET), first["token"].as_str().unwrap(), now_epoch_seconds() as u64).unwrap();
    assert_eq!(claims.conversation_id, conversation);

    // Resuming: the same conversation and customer, with the token.
    let (status, resumed) = session(&env, json!({"conversation_id": conversation, "token": first["token"]})).await;
    assert_eq!(status, StatusCode::CREATED, "{resumed}");
    assert_eq!(resumed["conversation_id"], first["conversation_id"]);
    assert_eq!(resumed["customer_id"], first["customer_id"]);

    // A conversation id alone opens nothing with the public key.
    let (status, body) = session(&env, json!({"conversation_id": conversation})).await;
    assert_eq!((status, body["error"]["field"].clone()), (StatusCode::BAD_REQUEST, json!("token")));
    // Another conversation's token does not open this one.
    let (_, other) = session(&env, Value::Null).await;
    let (status, _) = session(&env, json!({"conversation_id": conversation, "token": other["token"]})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A token expired beyond the resume window, or forged, is refused.
    let old = chat_token::mint(
        &Secret::new(SECRET),
        &CustomerClaims {
            conversation_id: conversation.clone(),
            customer_id: "x".into(),
            expires_at: 1,
            started_at: 0,
        },
    );
    let (status, _) = session(&env, json!({"token": old})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let forged = chat_token::mint(
        &Secret::new("another-secret-of-at-least-32-bytes"),
        &CustomerClaims {
            conversation_id: conversation,
            customer_id: "x".into(),
            expires_at: u64::MAX / 2,
            started_at: 0,
        },
    );
    let (status, _) = session(&env, json!({"token": forged})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sessions_need_the_widget_key_or_the_admin_token_and_are_rate_limited_per_address() {
    let env = chat_env(&[("CHAT_SESSIONS_PER_MINUTE", "2")]).await;
    let (status, _, _) = call(&env, Method::POST, "/api/v1/chat/sessions", &[], Value::Null).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) =
        call(&env, Method::POST, "/api/v1/chat/sessions", &[("x-widget-key", "wrong")], Value::Null).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) =
        call(&env, Method::POST, "/api/v1/chat/sessions", &[("x-widget-key", WIDGET)], json!({"customer_id": 5})).await;
    assert_eq!((status, body["error"]["field"].clone()), (StatusCode::BAD_REQUEST, json!("customer_id")));
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..3 {
        let (status, headers, _) =
            call(&env, Method::POST, "/api/v1/chat/sessions", &[("x-widget-key", WIDGET)], Value::Null).await;
        statuses.push(status);
        retry_after = headers.get("retry-after").cloned().or(retry_after);
    }
    // Two a minute: the third is refused until the minute turns.
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    let wait: u64 = retry_after.expect("a Retry-After").to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait));
    // The admin is not limited, and may name the customer and conversation.
    let (status, _, body) = call(
        &env,
        Method::POST,
        "/api/v1/chat/sessions",
        &[("authorization", "Bearer admin-token")],
        json!({"conversation_id": "web-admin-1", "customer_id": "cust-9"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["customer_id"], "cust-9");
}

#[tokio::test]
async fn history_is_read_with_the_conversations_own_token_or_an_agents_and_never_across() {
    let env = chat_env(&[]).await;
    let (_, a) = session(&env, Value::Null).await;
    let (_, b) = session(&env, Value::Null).await;
    let a_id = a["conversation_id"].as_str().unwrap();
    {
        let mut client = env.app.db.get().await.unwrap();
        let entries: Vec<ChatEntry> = (1..=3).map(|i| entry(a_id, &format!("m{i}"), &format!("text {i}"))).collect();
        chat::append_committed(&mut client, &entries).await.unwrap();
    }
    let uri = format!("/api/v1/chat/conversations/{a_id}/messages?after_seq=1");
    let bearer = |t: &str| format!("Bearer {t}");
    let a_token = bearer(a["token"].as_str().unwrap());
    let (status, _, body) = call(&env, Method::GET, &uri, &[("authorization", &a_token)], Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seqs: Vec<i64> = body["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, vec![2, 3]);
    assert_eq!(body["messages"][0]["message"], "text 2");
    assert_eq!(body["last_seq"], 3);

    let (status, _, _) = call(&env, Method::GET, &uri, &[("authorization", &bearer(AGENT))], Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    let b_token = bearer(b["token"].as_str().unwrap());
    let (status, _, _) = call(&env, Method::GET, &uri, &[("authorization", &b_token)], Value::Null).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = call(&env, Method::GET, &uri, &[], Value::Null).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let expired = chat_token::mint(
        &Secret::new(SECRET),
        &CustomerClaims { conversation_id: a_id.into(), customer_id: "x".into(), expires_at: 1, started_at: 0 },
    );
    let (status, _, _) = call(&env, Method::GET, &uri, &[("authorization", &bearer(&expired))], Value::Null).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let bad = format!("/api/v1/chat/conversations/{a_id}/messages?after_seq=-1");
    let (status, _, body) = call(&env, Method::GET, &bad, &[("authorization", &a_token)], Value::Null).await;
    assert_eq!((status, body["error"]["field"].clone()), (StatusCode::BAD_REQUEST, json!("after_seq")));
}

/// A management-API client (`PostToConnection`) aimed at a recording stub.
fn management_client(url: &str) -> aws_sdk_apigatewaymanagement::Client {
    use aws_sdk_apigatewaymanagement::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_apigatewaymanagement::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(url)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .http_client(switchboard::config::secrets::http_client())
        .build();
    aws_sdk_apigatewaymanagement::Client::from_conf(config)
}

const PAGE: &str = "page_77";

fn pancake_event(conversation: &str, id: &str, from: &str, text: &str) -> Value {
    json!({
        "event_type": "messaging",
        "page_id": PAGE,
        "data": {
            "conversation": {"id": conversation, "from": {"id": "customer_7"}},
            "message": {"id": id, "conversation_id": conversation, "message": text,
                        "type": "INBOX", "from": {"id": from}, "page_id": PAGE}
        }
    })
}

#[tokio::test]
async fn a_pancake_conversations_messages_and_answers_reach_its_watchers_once_each_in_order() {
    let moto = Moto::start();
    let registry = moto.connections_table().await;
    let pushes = common::Stub::start(|_| async { (StatusCode::OK, json!({})) }).await;
    let pancake = common::pancake_stub().await;
    let pancake_url = pancake.url();
    let mut env = chat_env(&[
        ("PANCAKE_WEBHOOK_SECRET", "hook"),
        ("PANCAKE_BASE_URL", &pancake_url),
        ("PANCAKE_PAGE_ACCESS_TOKEN", "pt"),
        ("CONSUMER_BLOCK_MS", "20"),
    ])
    .await;
    env.app.live = switchboard::live::Live::with_clients(registry.clone(), Some(management_client(&pushes.url())));
    let agent = Connection {
        connection_id: "agentconn1".into(),
        role: Role::Agent,
        subject: "lan".into(),
        conversation_id: None,
        connected_at: now_epoch_seconds() as u64,
    };
    registry.register(&agent).await.unwrap();
    registry.watch(&agent, "pc-1").await.unwrap();

    let (status, body) =
        common::webhook_to(&env.app, "hook", &pancake_event("pc-1", "pm-1", "customer_7", "Còn hàng không ạ?")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    common::drain(&env.consumer().await).await;
    let pushed: Vec<Value> = pushes.requests().into_iter().map(|r| r.body).collect();
    let seen: Vec<(i64, &str)> =
        pushed.iter().map(|f| (f["seq"].as_i64().unwrap(), f["sender_type"].as_str().unwrap())).collect();
    assert_eq!(seen, vec![(1, "customer"), (2, "bot")]);
    assert!(pushes.requests().iter().all(|r| r.path == "/@connections/agentconn1"));

    // The agent's reply goes to Pancake as the page; its echo is not logged again.
    let sends_before = pancake.requests().len();
    let conversation = switchboard::domain::ConversationId::parse("pc-1").unwrap();
    let sent = switchboard::chat::send(&env.app, &agent, &conversation, "Còn ạ, bạn lấy size nào?", "a1", async |_| {})
        .await
        .unwrap();
    assert_eq!(sent.ack["seq"], 3);
    let sends = pancake.requests();
    assert_eq!(sends.len(), sends_before + 1);
    assert_eq!(sends.last().unwrap().body["message"], "Còn ạ, bạn lấy size nào?");
    let echo_id = format!("pancake_msg_{sends_before}");
    let (_, echo) =
        common::webhook_to(&env.app, "hook", &pancake_event("pc-1", &echo_id, PAGE, "Còn ạ, bạn lấy size nào?")).await;
    assert_eq!(echo["status"], "ignored_echo", "{echo}");
    // Resent, the agent's message is neither logged nor sent again.
    let again =
        switchboard::chat::send(&env.app, &agent, &conversation, "Còn ạ, bạn lấy size nào?", "a1", async |_| {})
            .await
            .unwrap();
    assert_eq!((again.ack["seq"].clone(), again.ack["duplicate"].clone()), (json!(3), json!(true)));
    assert_eq!(pancake.requests().len(), sends_before + 1);
    common::drain(&env.consumer().await).await;
    assert_eq!(env.count("SELECT count(*) FROM chat_messages WHERE conversation_id = 'pc-1'").await, 3);
}

#[tokio::test]
async fn a_web_conversation_is_answered_on_its_socket_only_never_on_an_assistants_pancake_page() {
    let pancake = common::pancake_stub().await;
    let pancake_url = pancake.url();
    let env = chat_env(&[("PANCAKE_BASE_URL", &pancake_url), ("PANCAKE_PAGE_ACCESS_TOKEN", "pt")]).await;
    // The default assistant serves a page: a Pancake conversation without
    // a page of its own would be answered there.
    env.app
        .db
        .get()
        .await
        .unwrap()
        .execute("UPDATE assistants SET page_ids = '{page_1}' WHERE id = 'default'", &[])
        .await
        .unwrap();
    let (_, session) = session(&env, Value::Null).await;
    let conversation =
        switchboard::domain::ConversationId::parse(session["conversation_id"].as_str().unwrap()).unwrap();
    let customer = Connection {
        connection_id: "custconn".into(),
        role: Role::Customer,
        subject: session["customer_id"].as_str().unwrap().into(),
        conversation_id: Some(conversation.to_string()),
        connected_at: now_epoch_seconds() as u64,
    };
    let acks = std::sync::Mutex::new(Vec::new());
    let ack_now = async |ack: &Value| acks.lock().unwrap().push(ack.clone());
    switchboard::chat::send(&env.app, &customer, &conversation, "Giờ mở cửa?", "m1", ack_now).await.unwrap();
    assert_eq!(acks.lock().unwrap().len(), 1, "acknowledged once admitted");
    assert_eq!(
        env.count("SELECT count(*) FROM chat_messages WHERE sender_type = 'bot'").await,
        0,
        "live chat is off here"
    );
    assert_eq!(env.count("SELECT count(*) FROM ai_responses").await, 0, "not persisted yet: the consumer writes it");
    common::drain(&env.consumer().await).await;
    assert_eq!(env.count("SELECT count(*) FROM ai_responses").await, 1);
    assert!(pancake.requests().is_empty(), "nothing went to Pancake: {:?}", pancake.requests().len());
    let page: Option<String> = env.row("SELECT page_id FROM conversations").await.get(0);
    assert_eq!(page, None);

    // The same client id with another text is refused, not answered as the first.
    let other = switchboard::chat::send(&env.app, &customer, &conversation, "Something else", "m1", async |_| {}).await;
    assert!(matches!(other, Err(switchboard::AppError::Conflict(_))), "{other:?}");
}

#[tokio::test]
async fn resuming_does_not_stretch_the_resume_window_past_the_sessions_first_token() {
    let env = chat_env(&[("CHAT_RESUME_WINDOW_SECONDS", "100")]).await;
    let now = now_epoch_seconds() as u64;
    let (_, first) = session(&env, Value::Null).await;
    let conversation = first["conversation_id"].as_str().unwrap().to_owned();
    let customer = first["customer_id"].as_str().unwrap().to_owned();
    // A token of a session that began longer ago than the window, still
    // unexpired (as a chain of resumes would leave it): refused.
    let old = chat_token::mint(
        &Secret::new(SECRET),
        &CustomerClaims {
            conversation_id: conversation.clone(),
            customer_id: customer.clone(),
            expires_at: now + 3_600,
            started_at: now - 200,
        },
    );
    let (status, _) = session(&env, json!({"token": old})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A resume keeps the first token's start.
    let (status, resumed) = session(&env, json!({"token": first["token"]})).await;
    assert_eq!(status, StatusCode::CREATED);
    let claims = chat_token::verify(&Secret::new(SECRET), resumed["token"].as_str().unwrap(), now).unwrap();
    let original = chat_token::verify(&Secret::new(SECRET), first["token"].as_str().unwrap(), now).unwrap();
    assert_eq!(claims.started_at, original.started_at);
    let (status, body) = session(&env, json!({"token": first["token"], "conversation_id": "pancake-123"})).await;
    assert_eq!((status, body["error"]["field"].clone()), (StatusCode::BAD_REQUEST, json!("conversation_id")));
}

#[tokio::test]
async fn a_widget_on_another_origin_may_call_the_chat_routes() {
    let env = chat_env(&[]).await;
    let (status, headers, _) =
        call(&env, Method::OPTIONS, "/api/v1/chat/sessions", &[("origin", "http://shop.example")], Value::Null).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert!(headers["access-control-allow-headers"].to_str().unwrap().contains("x-widget-key"));
    let (status, headers, _) = call(
        &env,
        Method::POST,
        "/api/v1/chat/sessions",
        &[("x-widget-key", WIDGET), ("origin", "http://shop.example")],
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["access-control-allow-origin"], "*");
}
