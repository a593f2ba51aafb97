//! `admit.lua`'s keys and arguments by name. The script reads 9 `KEYS` and
//! 24 positional `ARGV`; this is the one place the Rust side lists them, in
//! the script's order (its header comment numbers the same list), and a test
//! checks that the script reads exactly as many as are built here.

use redis::ToRedisArgs;

use crate::domain::MessageId;
use crate::redis::keys::ConversationKeys;

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

/// `ARGV` 1–24, in order: one field each.
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
    /// `sync` (try the lock now), `defer` (enqueue `process_job`) or
    /// `store` (record, never answer).
    pub mode: &'a str,
    pub process_job: &'a str,
    /// The page window inside the script (one shard); 0 = off.
    pub page_rate_max: u32,
    pub known_ttl_secs: u64,
    /// `page_rate.lua`'s verdict with several shards: empty, or seconds to wait.
    pub page_verdict: &'a str,
    /// Context entries kept (the newest).
    pub context_max: usize,
    /// Context bytes kept (the newest entry always stays); 0 = no byte bound.
    pub context_max_bytes: usize,
}

fn arg(name: &'static str, value: impl ToRedisArgs) -> (&'static str, Vec<u8>) {
    let parts = value.to_redis_args();
    debug_assert_eq!(parts.len(), 1, "{name} must encode as one argument");
    (name, parts.concat())
}

impl AdmitArgs<'_> {
    /// The arguments as sent (each encoded exactly as `.arg(field)` would),
    /// with the name `admit.lua`'s header gives it.
    pub(super) fn argv(&self) -> Vec<(&'static str, Vec<u8>)> {
        vec![
            arg("message_id", self.message_id),               // 1
            arg("timestamp", self.timestamp),                 // 2
            arg("context_entry", self.context_entry),         // 3
            arg("sender_kind", self.sender_kind),             // 4
            arg("persist_job", self.persist_job),             // 5
            arg("lock_token", self.lock_token),               // 6
            arg("lock_ttl_ms", self.lock_ttl_ms),             // 7
            arg("context_ttl_secs", self.context_ttl_secs),   // 8
            arg("dedupe_ttl_secs", self.dedupe_ttl_secs),     // 9
            arg("rate_max", self.rate_max),                   // 10
            arg("rate_window_ms", self.rate_window_ms),       // 11
            arg("now_ms", self.now_ms),                       // 12
            arg("pause_ttl_secs", self.pause_ttl_secs),       // 13
            arg("owed_member", self.owed_member),             // 14
            arg("conversation_id", self.conversation_id),     // 15
            arg("page_id", self.page_id),                     // 16
            arg("assistant_id", self.assistant_id),           // 17
            arg("mode", self.mode),                           // 18
            arg("process_job", self.process_job),             // 19
            arg("page_rate_max", self.page_rate_max),         // 20
            arg("known_ttl_secs", self.known_ttl_secs),       // 21
            arg("page_verdict", self.page_verdict),           // 22
            arg("context_max", self.context_max),             // 23
            arg("context_max_bytes", self.context_max_bytes), // 24
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
            context_max: 50,
            context_max_bytes: 0,
        };
        assert_eq!(args.argv().len(), highest(script, "ARGV"));
        assert_eq!(args.argv()[1].1, b"1.5");
        // The header numbers the same names in the same order.
        let header: Vec<(usize, &str)> = script
            .lines()
            .skip_while(|l| !l.starts_with("-- ARGV"))
            .skip(1)
            .take_while(|l| l.starts_with("-- "))
            .filter_map(|l| {
                let mut words = l.strip_prefix("--")?.split_whitespace();
                Some((words.next()?.parse().ok()?, words.next()?))
            })
            .collect();
        let built: Vec<(usize, &str)> = args.argv().iter().enumerate().map(|(i, (name, _))| (i + 1, *name)).collect();
        assert_eq!(header, built);
    }
}
