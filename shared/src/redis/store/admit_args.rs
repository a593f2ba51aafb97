//! `admit.lua`'s keys and arguments by name. The script reads 9 `KEYS` and
//! 22 positional `ARGV`; this is the one place the Rust side lists them, in
//! the script's order (its header comment numbers the same list), and a test
//! checks that the script reads exactly as many as are built here.

use redis::ToRedisArgs;

use super::super::keys::ConversationKeys;
use crate::domain::MessageId;

/// `KEYS` 1–9, in order.
pub(super) fn admit_keys(keys: &ConversationKeys, message: &MessageId, page_id: Option<&str>) -> Vec<String> {
    vec![
        keys.seen(message),                             // 1
        keys.state(),                                   // 2
        keys.context(),                                 // 3
        keys.owed(),                                    // 4
        keys.lock(),                                    // 5
        keys.shard().jobs(),                            // 6
        keys.shard().owed_index(),                      // 7
        keys.shard().page_rate(page_id.unwrap_or("-")), // 8
        keys.known(),                                   // 9
    ]
}

/// `ARGV` 1–22, in order: one field each.
#[derive(Debug)]
pub(super) struct AdmitArgs<'a> {
    pub message_id: &'a str,
    pub timestamp: f64,
    /// The context entry (JSON).
    pub context_entry: &'a str,
    /// `customer`, `agent` or `other`.
    pub sender_kind: &'a str,
    /// The `persist_message` job (JSON).
    pub persist_job: &'a str,
    pub lock_token: &'a str,
    pub lock_ttl_ms: u64,
    pub context_ttl_secs: u64,
    pub dedupe_ttl_secs: u64,
    pub rate_max: u32,
    pub rate_window_ms: u64,
    pub now_ms: u64,
    pub pause_ttl_secs: u64,
    /// The owed-set member (JSON).
    pub owed_member: &'a str,
    pub conversation_id: &'a str,
    /// Empty when unknown.
    pub page_id: &'a str,
    /// Empty when unknown.
    pub assistant_id: &'a str,
    /// `sync` (try the lock now) or `defer` (enqueue `process_job`).
    pub mode: &'a str,
    pub process_job: &'a str,
    /// The page window inside the script (one shard); 0 = off.
    pub page_rate_max: u32,
    pub known_ttl_secs: u64,
    /// `page_rate.lua`'s verdict with several shards: empty, or seconds to wait.
    pub page_verdict: &'a str,
}

fn arg(value: impl ToRedisArgs) -> Vec<u8> {
    value.to_redis_args().concat()
}

impl AdmitArgs<'_> {
    /// The arguments as sent, exactly as `.arg(field)` would encode each.
    pub(super) fn argv(&self) -> Vec<Vec<u8>> {
        vec![
            arg(self.message_id),       // 1
            arg(self.timestamp),        // 2
            arg(self.context_entry),    // 3
            arg(self.sender_kind),      // 4
            arg(self.persist_job),      // 5
            arg(self.lock_token),       // 6
            arg(self.lock_ttl_ms),      // 7
            arg(self.context_ttl_secs), // 8
            arg(self.dedupe_ttl_secs),  // 9
            arg(self.rate_max),         // 10
            arg(self.rate_window_ms),   // 11
            arg(self.now_ms),           // 12
            arg(self.pause_ttl_secs),   // 13
            arg(self.owed_member),      // 14
            arg(self.conversation_id),  // 15
            arg(self.page_id),          // 16
            arg(self.assistant_id),     // 17
            arg(self.mode),             // 18
            arg(self.process_job),      // 19
            arg(self.page_rate_max),    // 20
            arg(self.known_ttl_secs),   // 21
            arg(self.page_verdict),     // 22
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{domain::ConversationId, redis::KeySpace};

    /// The highest `NAME[n]` the script reads.
    fn highest(script: &str, name: &str) -> usize {
        let needle = format!("{name}[");
        script
            .match_indices(&needle)
            .filter_map(|(at, _)| {
                let rest = &script[at + needle.len()..];
                rest[..rest.find(']')?].parse().ok()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn the_rust_side_builds_exactly_what_admit_lua_reads() {
        let script = include_str!("../lua/admit.lua");
        let space = KeySpace::new("", "jobs", 1);
        let conversation = ConversationId::parse("c").unwrap();
        let message = MessageId::parse("m").unwrap();
        let keys = admit_keys(&space.conversation(&conversation), &message, None);
        assert_eq!(keys.len(), highest(script, "KEYS"));
        let args = AdmitArgs {
            message_id: "m",
            timestamp: 1.5,
            context_entry: "{}",
            sender_kind: "customer",
            persist_job: "{}",
            lock_token: "t",
            lock_ttl_ms: 1,
            context_ttl_secs: 1,
            dedupe_ttl_secs: 1,
            rate_max: 1,
            rate_window_ms: 1,
            now_ms: 1,
            pause_ttl_secs: 1,
            owed_member: "{}",
            conversation_id: "c",
            page_id: "",
            assistant_id: "",
            mode: "sync",
            process_job: "",
            page_rate_max: 0,
            known_ttl_secs: 1,
            page_verdict: "",
        };
        assert_eq!(args.argv().len(), highest(script, "ARGV"));
        assert_eq!(args.argv()[1], b"1.5");
    }
}
