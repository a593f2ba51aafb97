-- trim_context: prepended to the scripts that bound a conversation's
-- context (admit, complete). Keeps the newest `max_entries` entries and at
-- most `max_bytes` bytes of them (0 = no byte bound; the newest always
-- stays), except that an entry whose message id is in `protected` (an owed
-- message: its text is what the AI must answer) is never dropped. Entries
-- are context members: JSON objects with a `message_id`.
local function trim_context(ctx_key, protected, max_entries, max_bytes)
  local kept, bytes = 0, 0
  for _, member in ipairs(redis.call('ZREVRANGE', ctx_key, 0, -1)) do
    local keep = kept < max_entries and (max_bytes == 0 or kept == 0 or bytes + #member <= max_bytes)
    if not keep then
      local ok, entry = pcall(cjson.decode, member)
      keep = ok and type(entry) == 'table' and protected[entry['message_id']] == true
    end
    if keep then
      kept = kept + 1
      bytes = bytes + #member
    else
      redis.call('ZREM', ctx_key, member)
    end
  end
end

-- The message ids of owed members (JSON with a `message_id`); a malformed
-- member is skipped, never an error.
local function owed_ids(members)
  local ids = {}
  for _, member in ipairs(members) do
    local ok, owed = pcall(cjson.decode, member)
    if ok and type(owed) == 'table' and owed['message_id'] then ids[owed['message_id']] = true end
  end
  return ids
end

