//! moto's server standing in for AWS APIs (Secrets Manager here): a real
//! HTTP server speaking the AWS wire protocol, so the SDK, its signing and
//! its errors run for real. `scripts/test` starts one and exports
//! `TEST_MOTO_URL`; without it a test starts its own (`moto_server` must be
//! installed: `pip install "moto[server]"`), stopped when dropped.

use std::{
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::Duration,
};

use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};

/// Dummy credentials and the region every moto client and child process uses.
pub const REGION: &str = "us-east-1";
pub const ACCESS_KEY: &str = "testing";

#[derive(Debug)]
pub struct Moto {
    pub url: String,
    child: Option<Child>,
}

impl Moto {
    pub fn start() -> Self {
        if let Ok(url) = std::env::var("TEST_MOTO_URL") {
            return Self { url, child: None };
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server is not installed: run scripts/test, or pip install \"moto[server]\"");
        let moto = Self { url: format!("http://127.0.0.1:{port}"), child: Some(child) };
        for _ in 0..300 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return moto;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("moto_server did not listen on {port}");
    }

    /// The variables a child process needs to reach this moto as AWS.
    pub fn aws_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.url.clone()),
            ("AWS_REGION", REGION.into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", ACCESS_KEY.into()),
            // No profile file or instance metadata is looked for.
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// A Secrets Manager client of this moto.
    pub fn secrets_manager(&self) -> aws_sdk_secretsmanager::Client {
        let config = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&self.url)
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new(ACCESS_KEY, ACCESS_KEY, None, None, "moto"))
            .http_client(switchboard::config::secrets::http_client())
            .build();
        aws_sdk_secretsmanager::Client::from_conf(config)
    }

    /// A DynamoDB client of this moto.
    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .endpoint_url(&self.url)
            .region(aws_sdk_dynamodb::config::Region::new(REGION))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                ACCESS_KEY, ACCESS_KEY, None, None, "moto",
            ))
            .http_client(switchboard::config::secrets::http_client())
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    /// A fresh connections table of this moto, created as setup creates it.
    pub async fn connections_table(&self) -> switchboard::connections::Registry {
        let table = format!("connections-{}", uuid::Uuid::new_v4().simple());
        let registry = switchboard::connections::Registry::new(self.dynamodb(), table);
        registry.create_table().await.expect("the table is created");
        registry
    }

    /// Creates a secret holding `text`; its ARN.
    pub async fn create_secret(&self, name: &str, text: &str) -> String {
        let created =
            self.secrets_manager().create_secret().name(name).secret_string(text).send().await.expect("create secret");
        created.arn().expect("an ARN").to_owned()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
