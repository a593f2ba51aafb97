//! Customer tokens for live chat: `v1.<payload>.<signature>`, the payload
//! base64url JSON of the conversation id, the customer id and the expiry
//! (epoch seconds), the signature HMAC-SHA256 over `v1.<payload>` with
//! `CHAT_TOKEN_SECRET`, compared in constant time. A token opens one
//! conversation and no other; minted by `POST /api/v1/chat/sessions`.
//!
//! Tokens ride in a WebSocket URL's query (browsers cannot set headers on
//! a WebSocket), so they are short-lived; an expired one still proves who
//! the customer is to `POST /api/v1/chat/sessions` within the resume window,
//! which mints a fresh one for the same conversation.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::{config::Secret, domain::check_id};

/// Longest token accepted before any decoding (ids are at most 256 bytes each).
const MAX_TOKEN_BYTES: usize = 2_048;
const VERSION: &str = "v1";

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerClaims {
    #[serde(rename = "c")]
    pub conversation_id: String,
    #[serde(rename = "u")]
    pub customer_id: String,
    /// Expiry, epoch seconds.
    #[serde(rename = "e")]
    pub expires_at: u64,
    /// When the session began (epoch seconds): a resume keeps it, so the
    /// resume window runs from the first token, not the latest (0 in tokens
    /// minted before it existed: their expiry stands for it).
    #[serde(rename = "s", default)]
    pub started_at: u64,
}

/// Why a token was refused (logged, never shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    BadSignature,
    Expired,
}

/// Signs `claims` with `secret`.
pub fn mint(secret: &Secret, claims: &CustomerClaims) -> String {
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signed = format!("{VERSION}.{payload}");
    let signature = URL_SAFE_NO_PAD.encode(sign(secret, signed.as_bytes()));
    format!("{signed}.{signature}")
}

/// The claims of a token signed with `secret`, whatever its expiry: the
/// signature is checked in constant time before the payload is read.
pub fn verify_signature(secret: &Secret, token: &str) -> Result<CustomerClaims, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed);
    }
    let (signed, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let (version, payload) = signed.split_once('.').ok_or(TokenError::Malformed)?;
    if version != VERSION {
        return Err(TokenError::Malformed);
    }
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
    let mut mac = mac(secret);
    mac.update(signed.as_bytes());
    mac.verify_slice(&signature).map_err(|_| TokenError::BadSignature)?;
    let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?;
    let claims: CustomerClaims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
    if check_id("conversation_id", &claims.conversation_id).is_err()
        || check_id("customer_id", &claims.customer_id).is_err()
    {
        return Err(TokenError::Malformed);
    }
    Ok(claims)
}

/// The claims of a valid token not expired at `now` (epoch seconds).
pub fn verify(secret: &Secret, token: &str, now: u64) -> Result<CustomerClaims, TokenError> {
    let claims = verify_signature(secret, token)?;
    if claims.expires_at <= now {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

fn mac(secret: &Secret) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes()).unwrap_or_else(|_| unreachable!())
}

fn sign(secret: &Secret, data: &[u8]) -> Vec<u8> {
    let mut mac = mac(secret);
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secret() -> Secret {
        Secret::new("0123456789abcdef0123456789abcdef")
    }

    fn claims() -> CustomerClaims {
        CustomerClaims {
            conversation_id: "web-a".into(),
            customer_id: "cust-1".into(),
            expires_at: 2_000,
            started_at: 1_000,
        }
    }

    #[test]
    fn a_minted_token_verifies_until_it_expires() {
        let token = mint(&secret(), &claims());
        assert_eq!(verify(&secret(), &token, 1_999), Ok(claims()));
        assert_eq!(verify(&secret(), &token, 2_000), Err(TokenError::Expired));
        assert_eq!(verify_signature(&secret(), &token), Ok(claims()));
    }

    #[test]
    fn another_secret_or_an_edited_payload_is_refused() {
        let token = mint(&secret(), &claims());
        assert_eq!(verify(&Secret::new("another secret of enough length!!"), &token, 0), Err(TokenError::BadSignature));
        let other = CustomerClaims { conversation_id: "web-b".into(), ..claims() };
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).unwrap());
        let signature = token.rsplit_once('.').unwrap().1;
        let forged = format!("v1.{forged_payload}.{signature}");
        assert_eq!(verify(&secret(), &forged, 0), Err(TokenError::BadSignature));
    }

    proptest! {
        #[test]
        fn no_garbage_verifies(token in "\\PC{0,300}") {
            prop_assert!(verify(&secret(), &token, 0).is_err());
        }
    }
}
