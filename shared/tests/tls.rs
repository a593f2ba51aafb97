//! TLS to both stores, for real: a TLS-only `redis-server` and a TLS-only
//! Postgres cluster (`ssl = on`, `hostssl` only) that `scripts/test` starts
//! with certificates from a CA it makes (`start_tls_stores` in
//! `scripts/lib.sh`). Migrations, the message path and the consumer run over
//! both; a wrong CA, plaintext to a TLS-only server and refused credentials
//! fail at start, naming the store.
//!
//! Plain `cargo test` on a laptop has no such servers: each test then prints
//! a note and passes without checking anything. `scripts/test` always sets
//! the variables, so CI never skips them.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::{TestEnv, drain, seed_request};
use http::StatusCode;
use switchboard::{App, Config, app::StartupError};

/// Where `scripts/test` put the TLS servers and the CAs.
struct Servers {
    redis: String,
    redis_rbac: String,
    postgres: String,
    ca: String,
    wrong_ca: String,
}

const VARIABLES: [&str; 5] = [
    "TEST_REDIS_TLS_URL",
    "TEST_REDIS_TLS_RBAC_URL",
    "TEST_POSTGRES_TLS_URL",
    "TEST_TLS_CA_FILE",
    "TEST_TLS_WRONG_CA_FILE",
];

/// The servers, or `None` (with a printed note) when none is configured.
fn servers(test: &str) -> Option<Servers> {
    let values: Vec<Option<String>> = VARIABLES.iter().map(|name| std::env::var(name).ok()).collect();
    if values.iter().all(Option::is_none) {
        eprintln!("{test}: skipped, {} not set (scripts/test starts the TLS servers and sets them)", VARIABLES[0]);
        return None;
    }
    let get = |i: usize| values[i].clone().unwrap_or_else(|| panic!("{} is not set (the others are)", VARIABLES[i]));
    Some(Servers { redis: get(0), redis_rbac: get(1), postgres: get(2), ca: get(3), wrong_ca: get(4) })
}

impl Servers {
    /// A configuration with `vars` over the TLS stores, trusting the right CA.
    fn config(&self, vars: &[(&str, &str)]) -> Config {
        let mut env: HashMap<String, String> = [
            ("PANCAKE_ACCESS_TOKEN", common::TOKEN.to_owned()),
            ("REDIS_URL", self.redis.clone()),
            ("REDIS_CA_FILE", self.ca.clone()),
            ("DATABASE_URL", format!("{}?sslmode=verify-full", self.postgres)),
            ("POSTGRES_CA_FILE", self.ca.clone()),
            ("POSTGRES_POOL_SIZE", "2".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (k, v) in vars {
            match *v {
                "" => env.remove(*k),
                v => env.insert((*k).to_owned(), v.to_owned()),
            };
        }
        Config::from_lookup(|k| env.get(k).cloned()).expect("TLS test config")
    }

    /// What the start of a function with `vars` says about the stores.
    async fn start(&self, vars: &[(&str, &str)]) -> Result<(), StartupError> {
        App::build(self.config(vars)).expect("clients build without connecting").check_stores().await
    }
}

/// `Err(message)` of a start that must fail.
fn failure(result: Result<(), StartupError>) -> String {
    let message = result.expect_err("the start must fail").to_string();
    eprintln!("start failed: {message}");
    message
}

#[tokio::test]
async fn migrations_the_message_path_and_the_consumer_run_over_tls_to_both_stores() {
    let Some(servers) = servers("migrations_the_message_path_and_the_consumer_run_over_tls_to_both_stores") else {
        return;
    };
    let postgres = format!("{}?sslmode=verify-full", servers.postgres);
    let vars = [
        ("REDIS_URL", servers.redis.as_str()),
        ("REDIS_CA_FILE", servers.ca.as_str()),
        ("DATABASE_URL", postgres.as_str()),
        ("POSTGRES_CA_FILE", servers.ca.as_str()),
    ];
    // `with` applies the migrations, over TLS.
    let env = TestEnv::with(&vars, None).await;
    env.app.check_stores().await.expect("both stores verify");
    assert!(env.count("SELECT COUNT(*) FROM refinery_schema_history").await > 0);
    let ssl: bool = env.row("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").await.get(0);
    assert!(ssl, "the pool's connections are encrypted");

    let (status, _, body) = env.post(&seed_request()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["status"], "completed");
    assert_eq!(body["result"]["storage_backend"], "Redis");

    let consumer = env.consumer().await;
    drain(&consumer).await;
    assert_eq!(env.count("SELECT COUNT(*) FROM messages WHERE message_id = 'msg_67890'").await, 1);
    assert_eq!(env.count("SELECT COUNT(*) FROM ai_responses").await, 1);
}

#[tokio::test]
async fn sslmode_require_in_the_url_encrypts_without_a_ca_bundle() {
    let Some(servers) = servers("sslmode_require_in_the_url_encrypts_without_a_ca_bundle") else { return };
    let url = format!("{}?sslmode=require", servers.postgres);
    let app = App::build(servers.config(&[("DATABASE_URL", &url), ("POSTGRES_CA_FILE", "")])).unwrap();
    app.check_stores().await.expect("require does not check the certificate without a bundle");
    let client = app.db.get().await.unwrap();
    let ssl: bool =
        client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap().get(0);
    assert!(ssl);
}

#[tokio::test]
async fn postgres_sslmode_from_the_variable_verifies_with_the_ca_file() {
    let Some(servers) = servers("postgres_sslmode_from_the_variable_verifies_with_the_ca_file") else { return };
    servers.start(&[("DATABASE_URL", &servers.postgres), ("POSTGRES_SSLMODE", "verify-full")]).await.unwrap();
    let err = failure(
        servers
            .start(&[
                ("DATABASE_URL", &servers.postgres),
                ("POSTGRES_SSLMODE", "require"),
                ("POSTGRES_CA_FILE", &servers.wrong_ca),
            ])
            .await,
    );
    assert!(err.starts_with("postgres: ") && err.contains("certificate"), "{err}");
}

#[tokio::test]
async fn a_wrong_ca_fails_at_start_naming_redis() {
    let Some(servers) = servers("a_wrong_ca_fails_at_start_naming_redis") else { return };
    let err = failure(servers.start(&[("REDIS_CA_FILE", &servers.wrong_ca)]).await);
    assert!(err.starts_with("redis: ") && err.contains("certificate"), "{err}");
    // Without a bundle the Mozilla roots are used: the test CA is not one of them.
    let err = failure(servers.start(&[("REDIS_CA_FILE", "")]).await);
    assert!(err.starts_with("redis: ") && err.contains("certificate"), "{err}");
}

#[tokio::test]
async fn a_wrong_ca_fails_at_start_naming_postgres() {
    let Some(servers) = servers("a_wrong_ca_fails_at_start_naming_postgres") else { return };
    let err = failure(servers.start(&[("POSTGRES_CA_FILE", &servers.wrong_ca)]).await);
    assert!(err.starts_with("postgres: ") && err.contains("certificate"), "{err}");
    let err = failure(servers.start(&[("POSTGRES_CA_FILE", "")]).await);
    assert!(err.starts_with("postgres: ") && err.contains("certificate"), "{err}");
}

#[tokio::test]
async fn plaintext_to_a_tls_only_redis_fails_at_start_naming_redis() {
    let Some(servers) = servers("plaintext_to_a_tls_only_redis_fails_at_start_naming_redis") else { return };
    let plaintext = servers.redis.replacen("rediss://", "redis://", 1);
    let err = failure(servers.start(&[("REDIS_URL", &plaintext), ("REDIS_CA_FILE", "")]).await);
    assert!(err.starts_with("redis: ") && err.contains("rediss://"), "{err}");
}

#[tokio::test]
async fn plaintext_to_a_tls_only_postgres_fails_at_start_naming_postgres() {
    let Some(servers) = servers("plaintext_to_a_tls_only_postgres_fails_at_start_naming_postgres") else { return };
    let url = format!("{}?sslmode=disable", servers.postgres);
    let err = failure(servers.start(&[("DATABASE_URL", &url)]).await);
    assert!(err.starts_with("postgres: ") && err.contains("no encryption"), "{err}");
}

#[tokio::test]
async fn an_rbac_user_and_password_in_a_rediss_url_authenticate_and_a_wrong_one_fails_at_start() {
    let Some(servers) =
        servers("an_rbac_user_and_password_in_a_rediss_url_authenticate_and_a_wrong_one_fails_at_start")
    else {
        return;
    };
    let app = App::build(servers.config(&[("REDIS_URL", &servers.redis_rbac)])).unwrap();
    app.check_stores().await.unwrap();
    let whoami: String = redis::cmd("ACL").arg("WHOAMI").query_async(&mut app.store.connection()).await.unwrap();
    assert_eq!(whoami, "switchboard");
    let wrong = servers.redis_rbac.replace(":tls-test-secret@", ":not-the-secret@");
    let err = failure(servers.start(&[("REDIS_URL", &wrong)]).await);
    assert!(err.starts_with("redis: "), "{err}");
    assert!(!err.contains("not-the-secret"), "the password never reaches the message: {err}");
}

#[tokio::test]
async fn the_cluster_client_carries_the_ca_and_the_credentials_to_its_nodes() {
    // The TLS server is a single node: a cluster client that got the CA and
    // the credentials gets through TLS and AUTH and is then told the node is
    // not a cluster; one without the CA fails on the certificate.
    let Some(servers) = servers("the_cluster_client_carries_the_ca_and_the_credentials_to_its_nodes") else {
        return;
    };
    let cluster = [("REDIS_URL", servers.redis_rbac.as_str()), ("REDIS_CLUSTER", "true")];
    let err = failure(servers.start(&cluster).await);
    assert!(err.starts_with("redis: ") && !err.contains("certificate") && !err.contains("WRONGPASS"), "{err}");
    assert!(err.to_lowercase().contains("cluster"), "{err}");
    let err = failure(servers.start(&[cluster[0], cluster[1], ("REDIS_CA_FILE", &servers.wrong_ca)]).await);
    assert!(err.starts_with("redis: ") && err.contains("certificate"), "{err}");
}

#[tokio::test]
async fn stores_that_are_down_at_start_are_logged_and_the_start_goes_on() {
    // Nothing listens on these ports: a store that is away may come back,
    // so only a store that answers wrongly stops the start.
    let closed = common::redis_server::RedisServer::spare_port();
    for cluster in ["false", "true"] {
        let vars = HashMap::from([
            ("PANCAKE_ACCESS_TOKEN", common::TOKEN.to_owned()),
            ("REDIS_URL", format!("redis://127.0.0.1:{closed}/0")),
            ("REDIS_CLUSTER", cluster.to_owned()),
            ("DATABASE_URL", format!("postgres://postgres@127.0.0.1:{closed}/test")),
        ]);
        let config = Config::from_lookup(|k| vars.get(k).cloned()).unwrap();
        App::build(config).unwrap().check_stores().await.unwrap();
    }
}
