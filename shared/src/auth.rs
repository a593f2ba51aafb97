//! Bearer tokens, compared in constant time and never logged.
//!
//! Both sides are hashed with SHA-256 first so the comparison also hides the
//! expected token's length.

use http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{
    config::Secret,
    error::{AppError, AuthFailure},
};

/// The caller's address, as the entry point saw it (API Gateway's
/// `sourceIp`, the local gateway's peer), carried as a request extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIp(pub String);

/// Constant-time equality of two secrets of any length.
pub fn secrets_match(given: &[u8], expected: &[u8]) -> bool {
    let a = Sha256::digest(given);
    let b = Sha256::digest(expected);
    a.ct_eq(&b).into()
}

/// The token of an `Authorization: Bearer …` header (`401` when there is none).
pub fn bearer(headers: &HeaderMap) -> Result<&str, AppError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or(AppError::Unauthorized { reason: AuthFailure::Missing })
}

/// `Ok` when `Authorization: Bearer <token>` carries `expected`.
pub fn require_bearer(headers: &HeaderMap, expected: &Secret) -> Result<(), AppError> {
    let given = bearer(headers)?;
    if secrets_match(given.as_bytes(), expected.expose().as_bytes()) {
        Ok(())
    } else {
        Err(AppError::Unauthorized { reason: AuthFailure::Wrong })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn only_the_exact_token_passes() {
        let expected = Secret::new("s3cret");
        let mut headers = HeaderMap::new();
        assert!(require_bearer(&headers, &expected).is_err());
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer s3cre"));
        assert!(require_bearer(&headers, &expected).is_err());
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic s3cret"));
        assert!(require_bearer(&headers, &expected).is_err());
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer s3cret"));
        assert!(require_bearer(&headers, &expected).is_ok());
    }
}
