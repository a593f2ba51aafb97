//! `PANCAKE_PAGE_ACCESS_TOKENS`: one Pancake `page_access_token` per page
//! (Pancake scopes each token to exactly one page), as
//! `page_id:token,page_id:token`. A page not listed uses
//! `PANCAKE_PAGE_ACCESS_TOKEN`. The page id is everything before the first
//! `:` (page ids have none; a token may). A malformed list fails at start
//! naming the variable, never echoing a token.

use std::collections::HashMap;

use super::{ConfigError, Secret, malformed};

const NAME: &str = "PANCAKE_PAGE_ACCESS_TOKENS";

/// The list, by page id; empty when unset.
pub fn parse(value: Option<&str>) -> Result<HashMap<String, Secret>, ConfigError> {
    let mut tokens = HashMap::new();
    let Some(value) = value else {
        return Ok(tokens);
    };
    for (n, entry) in value.split(',').map(str::trim).filter(|e| !e.is_empty()).enumerate() {
        let (page, token) = entry
            .split_once(':')
            .map(|(p, t)| (p.trim(), t.trim()))
            .filter(|(p, t)| !p.is_empty() && !t.is_empty())
            .ok_or_else(|| malformed(NAME, format!("entry {} is not page_id:token", n + 1)))?;
        if tokens.insert(page.to_owned(), Secret::new(token)).is_some() {
            return Err(malformed(NAME, format!("entry {} repeats a page", n + 1)));
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_map_to_their_tokens_and_a_token_may_hold_a_colon() {
        let tokens = parse(Some(" p1:tok1 , p2:a:b ,")).unwrap();
        assert_eq!(tokens["p1"].expose(), "tok1");
        assert_eq!(tokens["p2"].expose(), "a:b");
        assert!(parse(None).unwrap().is_empty());
    }

    #[test]
    fn a_malformed_list_names_the_entry_never_the_token() {
        for bad in ["p1", "p1:", ":secret-token", "p1:x,p1:secret-token"] {
            let err = parse(Some(bad)).unwrap_err();
            assert!(matches!(err, ConfigError::Malformed { name: NAME, .. }), "{bad}");
            assert!(!err.to_string().contains("secret-token"), "{err}");
        }
    }
}
