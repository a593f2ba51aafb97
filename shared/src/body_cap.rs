//! An outside service's response body, read up to a byte cap: a hostile or
//! broken integration (or AI) answering 20 MB must not reach memory, Redis
//! or a 6 MB Lambda response. Refused before parsing, never truncated
//! mid-JSON.

/// Reads `response`'s body, or refuses it once it passes `cap` bytes (by its
/// `Content-Length` before reading, else while reading).
pub async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(BodyError::TooLarge { cap });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| BodyError::Transport(e.without_url().to_string()))? {
        if body.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge { cap });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the response body is larger than {cap} bytes (MAX_RESPONSE_BYTES)")]
    TooLarge { cap: usize },
    #[error("reading the response failed: {0}")]
    Transport(String),
}
