//! Customer details found in what customers write: phone, e-mail, name and
//! address (Vietnamese and English phrasings). The consumer merges them into
//! `customers`, never erasing a known value with an unknown one.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// A Vietnamese phone number (+84, 84 or 0, then 9–10 digits in groups).
pub(crate) static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:\+84|\b84|\b0)[\s.\-]?\d{2,3}[\s.\-]?\d{3}[\s.\-]?\d{3,4}\b").expect("valid phone regex")
});
/// An e-mail address.
pub(crate) static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}").expect("valid email regex"));

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerInfo {
    pub name: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub address: Option<String>,
}

impl CustomerInfo {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.phone.is_none() && self.email.is_none() && self.address.is_none()
    }

    /// `later` wins field by field where it knows something.
    pub fn merge(&mut self, later: CustomerInfo) {
        self.name = later.name.or(self.name.take());
        self.phone = later.phone.or(self.phone.take());
        self.email = later.email.or(self.email.take());
        self.address = later.address.or(self.address.take());
    }
}

static NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:tên (?:tôi|mình|em|của tôi|của mình) là|tôi tên là|mình tên là|em tên là|tôi là|my name is|i am|i'm)\s+([\p{L}][\p{L} ]{0,40}?)(?:[,.!\n]|$| và | and | sđt| số)")
        .expect("valid name regex")
});
static ADDRESS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:địa chỉ|dia chi|giao (?:hàng )?(?:đến|tới|về)|address|ship to)\s*(?:là|:)?\s*([^\n]{5,160})")
        .expect("valid address regex")
});

/// What `text` tells about its writer. Cheap tests run first so the
/// consumer's hot path pays for a regex only when one can match.
pub fn extract(text: &str) -> CustomerInfo {
    let clean = |s: &str| Some(s.trim().trim_end_matches(['.', ',', '!']).trim().to_owned()).filter(|s| !s.is_empty());
    let lower = text.to_lowercase();
    let has_any = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    let digits = text.bytes().filter(u8::is_ascii_digit).count();
    CustomerInfo {
        phone: (digits >= 9)
            .then(|| PHONE.find(text))
            .flatten()
            .map(|m| m.as_str().chars().filter(|c| c.is_ascii_digit() || *c == '+').collect()),
        email: text.contains('@').then(|| EMAIL.find(text)).flatten().map(|m| m.as_str().to_lowercase()),
        name: has_any(&["tên", "tôi là", "my name", "i am", "i'm"])
            .then(|| NAME.captures(text))
            .flatten()
            .and_then(|c| c.get(1))
            .and_then(|m| clean(m.as_str())),
        address: has_any(&["địa chỉ", "dia chi", "giao", "address", "ship to"])
            .then(|| ADDRESS.captures(text))
            .flatten()
            .and_then(|c| c.get(1))
            .and_then(|m| clean(m.as_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_found_in_vietnamese_and_english() {
        let info = extract("Tên tôi là Nguyễn Văn An, sđt 0912345678. Địa chỉ: 12 Lý Thường Kiệt, Hà Nội");
        assert_eq!(info.name.as_deref(), Some("Nguyễn Văn An"));
        assert_eq!(info.phone.as_deref(), Some("0912345678"));
        assert_eq!(info.address.as_deref(), Some("12 Lý Thường Kiệt, Hà Nội"));
        let info = extract("My name is Lan. Email: Lan@Example.com");
        assert_eq!(info.name.as_deref(), Some("Lan"));
        assert_eq!(info.email.as_deref(), Some("lan@example.com"));
        assert!(extract("giá bao nhiêu?").is_empty());
    }

    #[test]
    fn merging_never_erases_a_known_value() {
        let mut known = CustomerInfo { phone: Some("0912345678".into()), ..Default::default() };
        known.merge(CustomerInfo { email: Some("a@b.vn".into()), ..Default::default() });
        assert_eq!(known.phone.as_deref(), Some("0912345678"));
        assert_eq!(known.email.as_deref(), Some("a@b.vn"));
    }
}
