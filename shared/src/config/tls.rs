//! TLS settings of the two stores: the CA bundles (`REDIS_CA_FILE`,
//! `POSTGRES_CA_FILE`, read and checked at start) and Postgres' `sslmode`.
//!
//! `sslmode` and `sslrootcert` are libpq's, read from `DATABASE_URL` (which
//! tokio-postgres would otherwise refuse for `verify-full`) or from
//! `POSTGRES_SSLMODE`; they are taken out of the URL handed to the driver.
//! Their meaning follows libpq, so a connection string means here what it
//! means to `psql`: `require` checks the chain only when a CA bundle is
//! given (libpq with a root certificate), `verify-full` always checks the
//! chain and the hostname. README's "TLS" section says why.

use std::fmt;

use super::{ConfigError, malformed};
use crate::tls;

/// A CA bundle read at start. `Debug` shows the path and the count only.
#[derive(Clone, PartialEq, Eq)]
pub struct CaBundle {
    pub path: String,
    pub pem: Vec<u8>,
    count: usize,
}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaBundle({}, {} certificates)", self.path, self.count)
    }
}

impl CaBundle {
    /// Reads and checks `path` (named by `variable` in errors).
    pub fn read(variable: &'static str, path: &str) -> Result<Self, ConfigError> {
        let pem = std::fs::read(path).map_err(|e| malformed(variable, format!("cannot read {path}: {e}")))?;
        let count = tls::pem_certificates(&pem).map_err(|e| malformed(variable, format!("{path} {e}")))?.len();
        Ok(Self { path: path.to_owned(), pem, count })
    }
}

/// libpq's `sslmode` (`allow` is not offered: plaintext first is never wanted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// TLS when the server offers it, plaintext otherwise (libpq's default).
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(name: &'static str, value: &str) -> Result<Self, ConfigError> {
        Ok(match value {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return Err(malformed(name, "sslmode must be disable, prefer, require, verify-ca or verify-full")),
        })
    }

    /// How the server's certificate is checked in this mode, given whether
    /// a CA bundle was configured.
    pub fn verify(self, has_ca: bool) -> tls::Verify {
        match self {
            Self::VerifyFull => tls::Verify::Full,
            Self::VerifyCa => tls::Verify::Chain,
            Self::Disable | Self::Prefer | Self::Require if has_ca => tls::Verify::Chain,
            Self::Disable | Self::Prefer | Self::Require => tls::Verify::Nothing,
        }
    }
}

/// How the pool reaches Postgres.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresTls {
    pub mode: SslMode,
    /// `POSTGRES_CA_FILE` or the URL's `sslrootcert`; none means the Mozilla
    /// roots for `verify-*`, and no check for `require`.
    pub ca: Option<CaBundle>,
}

/// Takes `sslmode` and `sslrootcert` out of `url`'s query and resolves them
/// with `POSTGRES_SSLMODE` / `POSTGRES_CA_FILE` (the URL's `sslmode` wins over
/// the variable, the variable's CA file over `sslrootcert`). Returns the URL
/// the driver gets and the TLS settings.
pub fn postgres(
    url: &str,
    url_variable: &'static str,
    sslmode: Option<String>,
    ca_file: Option<String>,
) -> Result<(String, PostgresTls), ConfigError> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (mut url_mode, mut root_cert) = (None, None);
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned();
        match key {
            "sslmode" => url_mode = Some(value),
            "sslrootcert" => root_cert = Some(value),
            _ => kept.push(pair),
        }
    }
    let mode = match (url_mode, sslmode) {
        (Some(mode), _) => SslMode::parse(url_variable, &mode)?,
        (None, Some(mode)) => SslMode::parse("POSTGRES_SSLMODE", mode.trim())?,
        (None, None) => SslMode::Prefer,
    };
    let ca = match (ca_file, root_cert) {
        (Some(path), _) => Some(CaBundle::read("POSTGRES_CA_FILE", path.trim())?),
        // libpq's `sslrootcert=system`: the usual public roots.
        (None, Some(path)) if path == "system" => None,
        (None, Some(path)) => Some(CaBundle::read(url_variable, &path)?),
        (None, None) => None,
    };
    let url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    Ok((url, PostgresTls { mode, ca }))
}

/// `REDIS_CA_FILE`, refused when no node is `rediss://` (a CA bundle for a
/// plaintext connection is a mistake worth failing on). An `#insecure` URL
/// (the redis crate's "skip verification") is refused outright.
pub fn redis_ca(url: &str, ca_file: Option<String>) -> Result<Option<CaBundle>, ConfigError> {
    if url.contains("#insecure") {
        return Err(malformed("REDIS_URL", "#insecure (no certificate check) is not supported: set REDIS_CA_FILE"));
    }
    let nodes: Vec<&str> = url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
    let secure = nodes.iter().filter(|u| u.starts_with("rediss://")).count();
    if secure != 0 && secure != nodes.len() {
        return Err(malformed("REDIS_URL", "every node of a list is rediss:// or none is"));
    }
    match ca_file {
        None => Ok(None),
        Some(_) if secure == 0 => Err(malformed("REDIS_CA_FILE", "set, but REDIS_URL is not rediss://")),
        Some(path) => CaBundle::read("REDIS_CA_FILE", path.trim()).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    fn config(pairs: &[(&str, &str)]) -> Config {
        let map: std::collections::HashMap<&str, &str> = pairs.iter().copied().collect();
        Config::from_lookup(|k| map.get(k).map(|v| v.to_string())).unwrap()
    }

    #[test]
    fn redis_variables_build_an_rbac_url_over_tls() {
        let c = config(&[
            ("PANCAKE_ACCESS_TOKEN", "t"),
            ("REDIS_HOST", "cache.example"),
            ("REDIS_TLS", "true"),
            ("REDIS_USERNAME", "app"),
            ("REDIS_PASSWORD", "p@ss"),
        ]);
        assert_eq!(c.redis_url.expose(), "rediss://app:p%40ss@cache.example:6379/0");
    }

    #[test]
    fn postgres_sslmode_require_is_accepted_in_the_variable_and_in_the_url() {
        let c = config(&[("PANCAKE_ACCESS_TOKEN", "t"), ("POSTGRES_SSLMODE", "require")]);
        assert_eq!(c.postgres_tls.mode, SslMode::Require);
        let url = "postgres://app:pw@db.example:5432/chat?sslmode=require";
        let c = config(&[("PANCAKE_ACCESS_TOKEN", "t"), ("DATABASE_URL", url)]);
        assert_eq!(c.postgres_tls.mode, SslMode::Require);
        assert_eq!(c.database_url.expose(), "postgres://app:pw@db.example:5432/chat");
    }

    #[test]
    fn sslmode_and_sslrootcert_leave_the_url_and_other_parameters_stay() {
        let (url, tls) =
            postgres("postgres://u:p@db:5432/app?sslmode=verify-full&application_name=x", "DATABASE_URL", None, None)
                .unwrap();
        assert_eq!(url, "postgres://u:p@db:5432/app?application_name=x");
        assert_eq!(tls, PostgresTls { mode: SslMode::VerifyFull, ca: None });
        let (url, tls) = postgres("postgres://db/app?sslrootcert=system", "DATABASE_URL", None, None).unwrap();
        assert_eq!((url.as_str(), tls.mode), ("postgres://db/app", SslMode::Prefer));
    }

    #[test]
    fn the_urls_sslmode_wins_over_the_variable() {
        let (_, tls) =
            postgres("postgres://db/app?sslmode=require", "DATABASE_URL", Some("disable".into()), None).unwrap();
        assert_eq!(tls.mode, SslMode::Require);
        let (_, tls) = postgres("postgres://db/app", "DATABASE_URL", Some("verify-ca".into()), None).unwrap();
        assert_eq!(tls.mode, SslMode::VerifyCa);
    }

    #[test]
    fn an_unknown_sslmode_or_an_unreadable_ca_file_names_its_variable() {
        let err = postgres("postgres://db/app?sslmode=allow", "DATABASE_URL", None, None).unwrap_err();
        assert!(matches!(err, ConfigError::Malformed { name: "DATABASE_URL", .. }));
        let err = postgres("postgres://db/app", "DATABASE_URL", Some("always".into()), None).unwrap_err();
        assert!(matches!(err, ConfigError::Malformed { name: "POSTGRES_SSLMODE", .. }));
        let err = postgres("postgres://db/app", "DATABASE_URL", None, Some("/nonexistent/ca.pem".into())).unwrap_err();
        assert!(matches!(err, ConfigError::Malformed { name: "POSTGRES_CA_FILE", .. }), "{err}");
    }

    #[test]
    fn require_checks_the_chain_only_with_a_ca_bundle_and_verify_full_always_checks_the_name() {
        assert_eq!(SslMode::Require.verify(false), tls::Verify::Nothing);
        assert_eq!(SslMode::Require.verify(true), tls::Verify::Chain);
        assert_eq!(SslMode::VerifyCa.verify(false), tls::Verify::Chain);
        assert_eq!(SslMode::VerifyFull.verify(false), tls::Verify::Full);
        assert_eq!(SslMode::VerifyFull.verify(true), tls::Verify::Full);
    }

    #[test]
    fn a_redis_ca_file_needs_a_rediss_url_and_insecure_is_refused() {
        let err = redis_ca("redis://127.0.0.1:6379/0", Some("/tmp/ca.pem".into())).unwrap_err();
        assert!(matches!(err, ConfigError::Malformed { name: "REDIS_CA_FILE", .. }));
        let err = redis_ca("rediss://cache.example:6379/#insecure", None).unwrap_err();
        assert!(matches!(err, ConfigError::Malformed { name: "REDIS_URL", .. }));
        let err = redis_ca("rediss://a:1,redis://b:2", None).unwrap_err();
        assert!(matches!(err, ConfigError::Malformed { name: "REDIS_URL", .. }));
        assert_eq!(redis_ca("rediss://a:1,rediss://b:2", None).unwrap(), None);
    }
}
