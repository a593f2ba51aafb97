//! Secrets from Secrets Manager (moto's server standing in for AWS): a
//! process started with only `SECRET_IDS` takes its tokens and store URLs
//! from the secrets, over its environment, and never logs them; a secret
//! that is missing or malformed stops a function at start with an error
//! naming the secret and never quoting a value. Needs the binaries:
//! `cargo build -p local-gateway -p handle-message` (scripts/test does).

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    fs,
    process::{Command, Stdio},
    time::Duration,
};

use common::{
    TestEnv,
    moto::Moto,
    process::{Proc, binary},
};
use http::StatusCode;

fn unique(name: &str) -> String {
    format!("switchboard-test/{name}-{}", uuid::Uuid::new_v4().simple())
}

async fn wait_port(port: u16) {
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {port}");
}

#[tokio::test]
async fn a_process_started_with_only_secret_ids_takes_its_tokens_and_stores_from_secrets_manager() {
    let env = TestEnv::new().await;
    let moto = Moto::start();
    let stores = moto
        .create_secret(
            &unique("stores"),
            &serde_json::json!({"DATABASE_URL": common::database_url(), "REDIS_URL": common::redis_url()}).to_string(),
        )
        .await;
    let pancake_token = format!("pancake-from-secrets-{}", uuid::Uuid::new_v4().simple());
    let admin_token = format!("admin-from-secrets-{}", uuid::Uuid::new_v4().simple());
    let pancake = moto
        .create_secret(&unique("pancake"), &serde_json::json!({"PANCAKE_ACCESS_TOKEN": pancake_token}).to_string())
        .await;
    let admin =
        moto.create_secret(&unique("admin"), &serde_json::json!({"ADMIN_ACCESS_TOKEN": admin_token}).to_string()).await;

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let logs = std::env::temp_dir().join(format!("switchboard-secrets-{}.log", uuid::Uuid::new_v4().simple()));
    let mut command = Command::new(binary("local-gateway"));
    command
        .env_clear()
        .env("POSTGRES_SCHEMA", &env.schema)
        .env("REDIS_KEY_PREFIX", &env.prefix)
        // A plain variable loses to the secret's.
        .env("PANCAKE_ACCESS_TOKEN", "from-the-environment")
        .env("SECRET_IDS", format!("{stores}, {pancake},{admin}"))
        .env("PORT", port.to_string())
        .env("RUST_LOG", "debug")
        .envs(moto.aws_env())
        .stdout(Stdio::from(fs::File::create(&logs).unwrap()))
        .stderr(Stdio::from(fs::File::create(logs.with_extension("err")).unwrap()));
    let gateway = Proc(command.spawn().unwrap());
    wait_port(port).await;

    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/v1/enhanced-handle-message");
    let message = common::seed_request();
    let refused = client.post(&url).bearer_auth("from-the-environment").json(&message).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let answered = client.post(&url).bearer_auth(&pancake_token).json(&message).send().await.unwrap();
    assert_eq!(answered.status(), StatusCode::OK, "the token and the stores came from the secrets");
    let health = client
        .get(format!("http://127.0.0.1:{port}/api/v1/admin/health"))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    drop(gateway);

    let mut printed = fs::read_to_string(&logs).unwrap();
    printed.push_str(&fs::read_to_string(logs.with_extension("err")).unwrap());
    let _ = fs::remove_file(&logs);
    let _ = fs::remove_file(logs.with_extension("err"));
    assert!(!printed.contains(&pancake_token) && !printed.contains(&admin_token), "a secret reached the logs");
}

/// Runs the `handle-message` function with `SECRET_IDS` and no Lambda
/// runtime: it reads its configuration first, so a bad secret stops it there.
fn start_handle_message(moto: &Moto, secret_ids: &str) -> (bool, String) {
    let output = Command::new(binary("handle-message"))
        .env_clear()
        .env("SECRET_IDS", secret_ids)
        .envs(moto.aws_env())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let mut printed = String::from_utf8_lossy(&output.stdout).into_owned();
    printed.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), printed)
}

#[tokio::test]
async fn a_missing_secret_stops_a_function_at_start_naming_the_secret() {
    let moto = Moto::start();
    let present = moto
        .create_secret(&unique("admin"), &serde_json::json!({"ADMIN_ACCESS_TOKEN": "hunter2-token"}).to_string())
        .await;
    let missing = unique("never-created");
    let (started, printed) = start_handle_message(&moto, &format!("{present},{missing}"));
    assert!(!started);
    assert!(printed.contains(&missing), "the error names the missing secret: {printed}");
    assert!(printed.contains("could not be read"), "{printed}");
    assert!(!printed.contains("hunter2"), "{printed}");
}

#[tokio::test]
async fn a_malformed_secret_stops_a_function_at_start_without_quoting_it() {
    let moto = Moto::start();
    let malformed = moto.create_secret(&unique("malformed"), r#"{"PANCAKE_ACCESS_TOKEN": "hunter2-token""#).await;
    let (started, printed) = start_handle_message(&moto, &malformed);
    assert!(!started);
    assert!(printed.contains(&malformed), "the error names the secret: {printed}");
    assert!(!printed.contains("hunter2"), "{printed}");
}
