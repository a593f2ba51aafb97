//! Key names, laid out for Redis Cluster.
//!
//! Every script touches one conversation's keys *and* a stream and an index
//! shared by many conversations (the persistence jobs, the owed index, the
//! page rate window). A cluster runs a script only when all its keys share a
//! slot, so the shared keys are split into **job shards**: a conversation
//! belongs to shard `fnv1a(conversation_id) % shards`, and all its keys and
//! its shard's stream, owed index and page windows carry the hash tag
//! `{sN}`. One shard (a single node) puts everything under `{s0}`, which a
//! single node does not care about; a cluster spreads `REDIS_SHARDS` tags
//! over its slots. The prefix lets tests and tenants share one server.
//!
//! Ids are escaped in key names ([`key_part`]: `%`, `:`, `{`, `}` as `%XX`),
//! so no (conversation, message) pair can name another conversation's key
//! (`kx` + message `foo:state` was `kx:seen:foo`'s state) and no id can
//! move a key's hash tag. Ids without those characters keep their key names.

use std::borrow::Cow;

use crate::domain::{ConversationId, MessageId};

/// An id as it appears in a key name: `%`, `:`, `{` and `}` percent-escaped,
/// everything else as is (an id without them is unchanged).
pub fn key_part(id: &str) -> Cow<'_, str> {
    if !id.contains(['%', ':', '{', '}']) {
        return Cow::Borrowed(id);
    }
    let mut out = String::with_capacity(id.len() + 8);
    for c in id.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The id a [`key_part`] came from (`None` if it is not one).
pub fn id_of_key_part(part: &str) -> Option<String> {
    percent_encoding::percent_decode_str(part).decode_utf8().ok().map(Cow::into_owned)
}

/// `text` as a `SCAN MATCH` pattern that matches only itself: Redis' glob
/// metacharacters (`*`, `?`, `[`, `]`, `\`) backslash-escaped. The key prefix is the
/// deployment's own and may hold any of them; unescaped, `t[1]:` would
/// match `t1:` and never the prefix's own keys.
pub fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The key prefix of one deployment (or one test) and its job shards.
#[derive(Debug, Clone)]
pub struct KeySpace {
    prefix: String,
    jobs_stream: String,
    shards: u16,
}

impl KeySpace {
    pub fn new(prefix: &str, jobs_stream: &str, shards: u16) -> Self {
        Self { prefix: prefix.to_owned(), jobs_stream: format!("{prefix}{jobs_stream}"), shards: shards.max(1) }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn shard_count(&self) -> u16 {
        self.shards
    }

    /// The shard a conversation's keys live in (stable across processes).
    pub fn shard_of(&self, id: &ConversationId) -> u16 {
        // FNV-1a: tiny, stable, and spreads short ids evenly enough.
        let hash =
            id.as_str().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        (hash % u64::from(self.shards)) as u16
    }

    pub fn shard(&self, index: u16) -> ShardKeys {
        ShardKeys { index, tag: format!("{{s{index}}}"), prefix: self.prefix.clone(), jobs: self.jobs_stream.clone() }
    }

    /// Every job shard, in order.
    pub fn shards(&self) -> impl Iterator<Item = ShardKeys> + '_ {
        (0..self.shards).map(|i| self.shard(i))
    }

    /// One page's own sliding rate window (a hash, tagged by the page): the
    /// window used with several shards, checked before admit.
    pub fn page_rate(&self, page_id: &str) -> String {
        format!("{}rl:page:{{{}}}", self.prefix, key_part(page_id))
    }

    /// Refused credentials per route family (a hash), for the stats.
    /// Chat sessions opened from one source address in one minute (`window`: the minute's number).
    pub fn session_rate(&self, source: &str, window: u64) -> String {
        format!("{}chat:sessions:{}:{window}", self.prefix, key_part(source))
    }

    pub fn auth_failures(&self) -> String {
        format!("{}security:auth_failures", self.prefix)
    }

    pub fn conversation(&self, id: &ConversationId) -> ConversationKeys {
        let shard = self.shard(self.shard_of(id));
        ConversationKeys { base: format!("{}conv:{}:{}", self.prefix, shard.tag, key_part(id.as_str())), shard }
    }
}

/// The keys one job shard shares among its conversations, in their slot.
#[derive(Debug, Clone)]
pub struct ShardKeys {
    pub index: u16,
    tag: String,
    prefix: String,
    jobs: String,
}

impl ShardKeys {
    /// The shard's Redis Stream of persistence jobs.
    pub fn jobs(&self) -> String {
        format!("{}:{}", self.jobs, self.tag)
    }

    /// Its dead-letter stream: entries that failed too often or cannot be parsed.
    pub fn dead_letters(&self) -> String {
        format!("{}:dead:{}", self.jobs, self.tag)
    }

    /// The last processing error of each pending entry (a hash).
    pub fn errors(&self) -> String {
        format!("{}:errors:{}", self.jobs, self.tag)
    }

    /// Sorted set of the shard's conversations with owed messages (score:
    /// first owed, ms), swept for stranded bursts.
    pub fn owed_index(&self) -> String {
        format!("{}owed_index:{}", self.prefix, self.tag)
    }

    /// One page's sliding rate window within this shard (a hash): admit's
    /// in-script window, exact when there is one shard.
    pub fn page_rate(&self, page_id: &str) -> String {
        format!("{}rl:page:{}:{}", self.prefix, self.tag, key_part(page_id))
    }
}

/// The keys of one conversation, all in its shard's hash slot.
#[derive(Debug, Clone)]
pub struct ConversationKeys {
    base: String,
    shard: ShardKeys,
}

impl ConversationKeys {
    /// The shard's keys (jobs stream, owed index), in the same slot.
    pub fn shard(&self) -> &ShardKeys {
        &self.shard
    }
    /// Dedupe mark of one message id (24 h).
    pub fn seen(&self, message_id: &MessageId) -> String {
        format!("{}:seen:{}", self.base, key_part(message_id.as_str()))
    }
    /// Hash: sequence, last message, pause, rate window, fencing number, processing flag.
    pub fn state(&self) -> String {
        format!("{}:state", self.base)
    }
    /// Sorted set of context entries scored by message timestamp.
    pub fn context(&self) -> String {
        format!("{}:ctx", self.base)
    }
    /// Sorted set of customer messages not yet covered by an answer, scored by arrival.
    pub fn owed(&self) -> String {
        format!("{}:owed", self.base)
    }
    /// The processing lock: a random token, `PX` the lock TTL.
    pub fn lock(&self) -> String {
        format!("{}:lock", self.base)
    }
    /// Set while the conversation is known (30 days): tells a brand-new
    /// conversation from one whose Redis context merely expired.
    pub fn known(&self) -> String {
        format!("{}:known", self.base)
    }
    /// A Pancake message id this backend sent (its webhook echo is ignored).
    pub fn sent(&self, pancake_message_id: &str) -> String {
        format!("{}:sent:{}", self.base, key_part(pancake_message_id))
    }
    /// An action's delivery mark: `sending` while it is being delivered,
    /// `sent` once Pancake accepted it (so nothing sends it twice).
    pub fn send_mark(&self, action_id: &uuid::Uuid) -> String {
        format!("{}:action:{action_id}", self.base)
    }
    /// The guard of one delivery recording (see `record_delivery.lua`).
    pub fn recorded(&self, token: &str) -> String {
        format!("{}:recorded:{}", self.base, key_part(token))
    }
    /// A text about to be sent, by digest: recognises the echo that can
    /// arrive before Pancake's answer (and its message id) does.
    pub fn echo(&self, text: &str) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(text.trim().as_bytes());
        let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
        format!("{}:echo:{hex}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_a_conversation_script_touches_shares_one_hash_tag() {
        let space = KeySpace::new("t1:", "jobs", 16);
        let id = ConversationId::parse("conv_1").unwrap();
        let keys = space.conversation(&id);
        let m = MessageId::parse("m").unwrap();
        let tag = format!("{{s{}}}", space.shard_of(&id));
        let shard = keys.shard();
        for key in [
            keys.seen(&m),
            keys.state(),
            keys.context(),
            keys.owed(),
            keys.lock(),
            keys.known(),
            shard.jobs(),
            shard.dead_letters(),
            shard.errors(),
            shard.owed_index(),
            shard.page_rate("page_1"),
        ] {
            // Redis hashes the first {…} of a key: it must be the shard's tag.
            let first = &key[key.find('{').unwrap()..=key.find('}').unwrap()];
            assert_eq!(first, tag, "{key}");
        }
    }

    #[test]
    fn conversations_spread_over_every_shard() {
        let space = KeySpace::new("", "jobs", 16);
        let mut seen = std::collections::HashSet::new();
        for i in 0..1_000 {
            seen.insert(space.shard_of(&ConversationId::parse(&format!("{i}_2459813")).unwrap()));
        }
        assert_eq!(seen.len(), 16);
        assert_eq!(KeySpace::new("", "jobs", 1).shard_of(&ConversationId::parse("x").unwrap()), 0);
    }

    #[test]
    fn a_message_id_cannot_name_another_conversations_key() {
        let space = KeySpace::new("", "jobs", 1);
        let kx = space.conversation(&ConversationId::parse("kx").unwrap());
        let other = space.conversation(&ConversationId::parse("kx:seen:foo").unwrap());
        for suffix in ["state", "ctx", "lock", "owed", "known"] {
            let seen = kx.seen(&MessageId::parse(&format!("foo:{suffix}")).unwrap());
            assert!(![other.state(), other.context(), other.lock(), other.owed(), other.known()].contains(&seen));
        }
        assert_eq!(space.conversation(&ConversationId::parse("plain_id").unwrap()).state(), "conv:{s0}:plain_id:state");
    }

    #[test]
    fn a_glob_escaped_prefix_has_no_metacharacter_left_bare() {
        assert_eq!(glob_escape("plain:"), "plain:");
        assert_eq!(glob_escape(r"t[1]*?\x:"), r"t\[1\]\*\?\\x:");
    }

    proptest::proptest! {
        #[test]
        fn key_parts_are_injective_and_reversible(a in "[a-z:%{}]{0,8}", b in "[a-z:%{}]{0,8}") {
            let back = id_of_key_part(&key_part(&a));
            proptest::prop_assert_eq!(back.as_deref(), Some(a.as_str()));
            let escaped = key_part(&a);
            proptest::prop_assert!(!escaped.contains([':', '{', '}']), "{} keeps a reserved character", escaped);
            if a != b {
                proptest::prop_assert_ne!(key_part(&a), key_part(&b));
            }
        }
    }
}
