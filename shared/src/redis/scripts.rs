//! The Lua scripts, hashed once per process. `redis::Script` sends `EVALSHA`
//! and loads the script on `NOSCRIPT`, so a restarted Redis costs one extra
//! round trip, not an error.

use std::sync::LazyLock;

use redis::Script;

/// admit and complete bound the context with the same helper, prepended.
pub(super) static ADMIT: LazyLock<Script> =
    LazyLock::new(|| Script::new(concat!(include_str!("lua/trim_context.lua"), include_str!("lua/admit.lua"))));
pub(super) static COMPLETE: LazyLock<Script> =
    LazyLock::new(|| Script::new(concat!(include_str!("lua/trim_context.lua"), include_str!("lua/complete.lua"))));
pub(super) static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/heartbeat.lua")));
pub(super) static CANCEL: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/cancel.lua")));
pub(super) static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/claim.lua")));
pub(super) static CONVERSATION_EVENT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/conversation_event.lua")));
pub(super) static ECHO: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/echo.lua")));
pub(super) static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/release.lua")));
pub(super) static SEND_MARK: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/send_mark.lua")));
pub(super) static CLEANUP: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/cleanup.lua")));
pub(super) static FORGET: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/forget.lua")));
pub(super) static RECORD_DELIVERY: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/record_delivery.lua")));
pub(super) static PAGE_RATE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/page_rate.lua")));
pub(super) static RESTORE_PAUSE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/restore_pause.lua")));
