//! The embedded responder: deterministic intents in Vietnamese and English,
//! so the whole system runs (and is tested) with no outside AI service.
//!
//! Intents, in priority order: human handoff ("gặp nhân viên"), booking
//! ("đặt lịch"), pricing ("giá"), goodbye, greeting, fallback. Phone numbers
//! (Vietnamese formats) and e-mail addresses are extracted as entities.

use futures::{FutureExt, future::BoxFuture};
use serde_json::{Map, Value, json};

use super::{AiAnswer, AiError, AiProvider, AiRequest};
use crate::customer_info::{EMAIL, PHONE};

pub const MODEL: &str = "embedded-rules-v1";

#[derive(Debug, Clone, Copy, Default)]
pub struct Embedded;

impl AiProvider for Embedded {
    fn answer<'a>(&'a self, request: AiRequest<'a>) -> BoxFuture<'a, Result<AiAnswer, AiError>> {
        let text = request.pending_text();
        async move { Ok(respond(&text)) }.boxed()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    HumanHandoff,
    BookAppointment,
    Pricing,
    Goodbye,
    Greeting,
    Fallback,
}

fn contains_any(text: &str, needles: &[&str]) -> bool {
    needles.iter().any(|n| text.contains(n))
}

/// Whole-word match for short English words ("hi" must not match "this").
fn has_word(text: &str, words: &[&str]) -> bool {
    text.split(|c: char| !c.is_alphanumeric()).any(|w| words.contains(&w))
}

fn classify(text: &str) -> Intent {
    let t = text.to_lowercase();
    if contains_any(
        &t,
        &[
            "gặp nhân viên",
            "nhân viên",
            "tư vấn viên",
            "người thật",
            "gap nhan vien",
            "real person",
            "human agent",
            "talk to a human",
            "talk to someone",
        ],
    ) || has_word(&t, &["agent", "human", "staff"])
    {
        Intent::HumanHandoff
    } else if contains_any(&t, &["đặt lịch", "dat lich", "đặt hẹn", "lịch hẹn", "appointment", "book a", "schedule a"])
        || has_word(&t, &["book", "booking"])
    {
        Intent::BookAppointment
    } else if contains_any(&t, &["giá", "bao nhiêu tiền", "bao nhiêu", "how much", "bảng giá", "chi phí"])
        || has_word(&t, &["price", "prices", "pricing", "cost"])
    {
        Intent::Pricing
    } else if contains_any(&t, &["tạm biệt", "hẹn gặp lại", "goodbye", "see you"]) || has_word(&t, &["bye"]) {
        Intent::Goodbye
    } else if contains_any(&t, &["xin chào", "chào"]) || has_word(&t, &["hello", "hi", "hey", "alo"]) {
        Intent::Greeting
    } else {
        Intent::Fallback
    }
}

/// Vietnamese when the text carries Vietnamese letters or words.
fn is_vietnamese(text: &str) -> bool {
    const MARKS: &str = "ăâđêôơưáàảãạấầẩẫậắằẳẵặéèẻẽẹếềểễệíìỉĩịóòỏõọốồổỗộớờởỡợúùủũụứừửữựýỳỷỹỵ";
    let lower = text.to_lowercase();
    lower.chars().any(|c| MARKS.contains(c))
        || has_word(&lower, &["toi", "ban", "muon", "dat", "lich", "gia", "chao", "alo"])
}

fn entities(text: &str) -> Map<String, Value> {
    let mut map = Map::new();
    let phones: Vec<String> = PHONE
        .find_iter(text)
        .map(|m| m.as_str().chars().filter(|c| c.is_ascii_digit() || *c == '+').collect())
        .collect();
    if let Some(first) = phones.first() {
        map.insert("phone".into(), json!(first));
        map.insert("phones".into(), json!(phones));
    }
    let emails: Vec<&str> = EMAIL.find_iter(text).map(|m| m.as_str()).collect();
    if let Some(first) = emails.first() {
        map.insert("email".into(), json!(first));
        map.insert("emails".into(), json!(emails));
    }
    let lower = text.to_lowercase();
    let service = [
        (&["khám bệnh", "kham benh", "khám sức khỏe", "checkup", "check-up", "medical"][..], "medical_checkup"),
        (&["nha khoa", "răng", "dental", "dentist"][..], "dental"),
        (&["spa", "massage", "làm đẹp"][..], "beauty"),
    ]
    .into_iter()
    .find(|(needles, _)| contains_any(&lower, needles));
    if let Some((_, service)) = service {
        map.insert("service_type".into(), json!(service));
    }
    map
}

fn send(message: &str) -> Value {
    json!({ "type": "send_message", "data": { "message": message } })
}

/// The deterministic answer to `text`.
pub fn respond(text: &str) -> AiAnswer {
    let intent = classify(text);
    let vi = is_vietnamese(text) || text.trim().is_empty();
    let entities = entities(text);
    let medical = entities.get("service_type").and_then(Value::as_str) == Some("medical_checkup");
    let (reply, confidence, actions): (String, f64, Vec<Value>) = match intent {
        Intent::HumanHandoff => {
            let reply = if vi {
                "Mình sẽ chuyển bạn đến nhân viên tư vấn ngay, bạn vui lòng chờ trong giây lát."
            } else {
                "I'm connecting you with a member of our team now, please hold on."
            };
            (
                reply.into(),
                0.93,
                vec![send(reply), json!({"type": "transfer_to_agent", "data": {"reason": "customer_requested_human"}})],
            )
        }
        Intent::BookAppointment => {
            let reply = match (vi, medical) {
                (true, true) => "Tôi sẽ giúp bạn đặt lịch khám bệnh.",
                (true, false) => "Tôi sẽ giúp bạn đặt lịch hẹn.",
                (false, true) => "I'll help you book a medical check-up.",
                (false, false) => "I'll help you book an appointment.",
            };
            (reply.into(), 0.95, vec![send(reply)])
        }
        Intent::Pricing => {
            let (reply, options) = if vi {
                (
                    "Bạn quan tâm đến sản phẩm hoặc dịch vụ nào để mình báo giá chi tiết ạ?",
                    ["Bảng giá dịch vụ", "Khuyến mãi", "Gặp nhân viên"],
                )
            } else {
                (
                    "Which product or service would you like a price for?",
                    ["Price list", "Promotions", "Talk to an agent"],
                )
            };
            (
                reply.into(),
                0.9,
                vec![json!({"type": "send_quick_replies", "data": {"message": reply, "quick_replies": options}})],
            )
        }
        Intent::Goodbye => {
            let reply = if vi {
                "Cảm ơn bạn đã liên hệ. Hẹn gặp lại bạn!"
            } else {
                "Thank you for reaching out. See you soon!"
            };
            (
                reply.into(),
                0.9,
                vec![send(reply), json!({"type": "end_conversation", "data": {"reason": "customer_goodbye"}})],
            )
        }
        Intent::Greeting => {
            let reply =
                if vi { "Xin chào! Mình có thể giúp gì cho bạn?" } else { "Hello! How can I help you today?" };
            (reply.into(), 0.9, vec![send(reply)])
        }
        Intent::Fallback => {
            let reply = if vi {
                "Mình chưa hiểu rõ ý bạn. Bạn có thể nói rõ hơn, hoặc nhắn \"gặp nhân viên\" để được hỗ trợ."
            } else {
                "Sorry, I didn't quite get that. Could you rephrase, or type \"agent\" to talk to our team?"
            };
            (reply.into(), 0.3, vec![send(reply)])
        }
    };
    let intent = match intent {
        Intent::HumanHandoff => "human_handoff",
        Intent::BookAppointment => "book_appointment",
        Intent::Pricing => "pricing",
        Intent::Goodbye => "goodbye",
        Intent::Greeting => "greeting",
        Intent::Fallback => "fallback",
    };
    AiAnswer {
        response_text: reply,
        intent: intent.into(),
        confidence,
        entities,
        model_used: MODEL.into(),
        actions: Some(actions),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_example_books_a_medical_checkup() {
        let a = respond("Tôi muốn đặt lịch khám bệnh");
        assert_eq!(a.intent, "book_appointment");
        assert_eq!(a.response_text, "Tôi sẽ giúp bạn đặt lịch khám bệnh.");
        assert_eq!(a.entities["service_type"], "medical_checkup");
    }

    #[test]
    fn intents_are_recognised_in_both_languages() {
        for (text, intent) in [
            ("Xin chào shop", "greeting"),
            ("hi there", "greeting"),
            ("this is odd", "fallback"),
            ("Áo này giá bao nhiêu?", "pricing"),
            ("How much is it?", "pricing"),
            ("Cho mình gặp nhân viên", "human_handoff"),
            ("I want to talk to a human", "human_handoff"),
            ("Tạm biệt nhé", "goodbye"),
            ("I'd like to book an appointment", "book_appointment"),
        ] {
            assert_eq!(respond(text).intent, intent, "{text}");
        }
    }

    #[test]
    fn phones_and_emails_are_extracted() {
        let a = respond("Số của tôi là 0912 345 678, email lan.nguyen@example.vn");
        assert_eq!(a.entities["phone"], "0912345678");
        assert_eq!(a.entities["email"], "lan.nguyen@example.vn");
        assert_eq!(respond("call +84 912 345 678").entities["phone"], "+84912345678");
    }
}
