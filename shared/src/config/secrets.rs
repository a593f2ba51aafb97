//! Secrets from AWS Secrets Manager, read once at cold start and laid over
//! the environment, so that tokens and passwords never sit in a function's
//! plaintext environment (the console shows it to anyone who can read the
//! function) and each function reads only the secrets it names.
//!
//! `SECRET_IDS` lists the secrets (ARNs or names, comma-separated). Each is a
//! JSON object whose keys are configuration variables
//! (`{"POSTGRES_PASSWORD": "…", "REDIS_PASSWORD": "…"}`); a string value is
//! taken as is, any other JSON value (an `INTEGRATIONS` object) as its JSON
//! text. A variable found in a secret wins over the same variable in the
//! environment. Without `SECRET_IDS` nothing is fetched: plain environment
//! variables keep working locally. A secret that cannot be read or parsed
//! stops the start with an error naming the secret, never quoting its value;
//! the endpoint (`AWS_ENDPOINT_URL`), region and credentials are the AWS
//! SDK's usual ones.

use std::{collections::HashMap, time::Duration};

use aws_config::{BehaviorVersion, timeout::TimeoutConfig};
use aws_sdk_secretsmanager::config::SharedHttpClient;
use aws_sdk_secretsmanager::{
    Client,
    error::{DisplayErrorContext, ProvideErrorMetadata},
};
use aws_smithy_http_client::tls;

use super::{Config, ConfigError};

/// The variable that lists the secrets a function reads.
pub const SECRET_IDS: &str = "SECRET_IDS";

/// Secrets Manager must answer within Lambda's 10 s initialisation phase; a
/// function without a route to it (no NAT, no VPC endpoint) fails with the
/// secret's name instead of hanging until the phase is cut.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(8);

impl Config {
    /// What every entry point calls once per cold start: the secrets listed
    /// in `SECRET_IDS` fetched from Secrets Manager (none listed: nothing
    /// fetched, no AWS call) and laid over the process environment.
    pub async fn load() -> Result<Self, ConfigError> {
        let ids = ids(std::env::var(SECRET_IDS).ok().as_deref());
        let loaded = match ids.is_empty() {
            true => Self::from_env(),
            false => match fetch(&client().await, &ids).await {
                Ok(overlay) => Self::from_env_with(&overlay),
                Err(e) => Err(e),
            },
        };
        if let Err(e) = &loaded {
            // The error's text in the function's log (CloudWatch), beside
            // the runtime's own report of the failed start.
            tracing::error!(error = %e, "configuration failed");
        }
        loaded
    }
}

/// The secret ids a `SECRET_IDS` value lists (blank entries skipped).
pub fn ids(value: Option<&str>) -> Vec<String> {
    value.unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// A Secrets Manager client configured the SDK's usual way (environment,
/// profile, Lambda's role), speaking rustls on ring like every other
/// client here.
pub async fn client() -> Client {
    let timeouts =
        TimeoutConfig::builder().connect_timeout(CONNECT_TIMEOUT).operation_timeout(OPERATION_TIMEOUT).build();
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .timeout_config(timeouts)
        .load()
        .await;
    Client::new(&shared)
}

/// The SDK's HTTP client: rustls on ring (also plain `http://` endpoints,
/// as a local emulator's).
pub fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https()
}

/// Reads every secret in `ids` (concurrently: they share the start's
/// budget) into one map of configuration variables.
pub async fn fetch(client: &Client, ids: &[String]) -> Result<HashMap<String, String>, ConfigError> {
    let reads = ids.iter().map(|id| async move {
        let output = client.get_secret_value().secret_id(id).send().await.map_err(|e| match e.as_service_error() {
            // What Secrets Manager said (`ResourceNotFoundException`,
            // `AccessDeniedException`…), without the raw response.
            Some(refused) => unreadable(
                id,
                format!("{}: {}", refused.code().unwrap_or("error"), refused.message().unwrap_or_default()),
            ),
            None => unreadable(id, DisplayErrorContext(&e).to_string()),
        })?;
        let text = output
            .secret_string()
            .ok_or_else(|| unreadable(id, "it has no SecretString (binary secrets are not read)"))?;
        parse(id, text)
    });
    let mut merged: HashMap<String, String> = HashMap::new();
    let mut origin: HashMap<String, &str> = HashMap::new();
    for (id, vars) in ids.iter().zip(futures::future::join_all(reads).await) {
        for (name, value) in vars? {
            if let Some(first) = origin.insert(name.clone(), id) {
                return Err(unreadable(id, format!("{name} is also set by secret {first}")));
            }
            merged.insert(name, value);
        }
    }
    Ok(merged)
}

/// One secret's variables. Errors say where the text is wrong, never what
/// it says.
fn parse(id: &str, text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let json: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| unreadable(id, format!("not JSON (line {}, column {})", e.line(), e.column())))?;
    let serde_json::Value::Object(object) = json else {
        return Err(unreadable(id, "must be a JSON object of configuration variables"));
    };
    object
        .into_iter()
        .map(|(name, value)| {
            let well_formed = name.starts_with(|c: char| c.is_ascii_uppercase())
                && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if !well_formed {
                // A key is a variable name, not a secret: naming it helps.
                return Err(unreadable(id, format!("key {name:?} is not a configuration variable (A-Z, 0-9, _)")));
            }
            let value = match value {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            Ok((name, value))
        })
        .collect()
}

fn unreadable(id: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Secret { id: id.to_owned(), reason: reason.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_of_secret_ids_skips_blank_entries() {
        assert_eq!(ids(Some(" arn:a , ,arn:b,")), vec!["arn:a".to_owned(), "arn:b".to_owned()]);
        assert!(ids(None).is_empty());
    }

    #[test]
    fn a_secret_is_an_object_of_variables_whose_non_string_values_stay_json() {
        let vars = parse("s", r#"{"ADMIN_ACCESS_TOKEN": "t", "INTEGRATIONS": {"crm": {"base_url": "https://c"}}}"#)
            .expect("parses");
        assert!(vars.contains(&("ADMIN_ACCESS_TOKEN".into(), "t".into())));
        assert!(vars.contains(&("INTEGRATIONS".into(), r#"{"crm":{"base_url":"https://c"}}"#.into())));
    }

    #[test]
    fn a_malformed_secret_is_named_and_its_value_never_quoted() {
        for text in [r#""hunter2-secret""#, r#"{"ADMIN_ACCESS_TOKEN": "hunter2-secret""#, "hunter2-secret"] {
            let err = parse("arn:stores", text).expect_err(text).to_string();
            assert!(err.contains("arn:stores"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        let err = parse("arn:stores", r#"{"password": "hunter2-secret"}"#).expect_err("lower case").to_string();
        assert!(err.contains("\"password\"") && !err.contains("hunter2"), "{err}");
    }
}
