-- Argo CD health check for clickhouse.cloud/ManagedPostgres (Lua 5.1, as Argo CD runs it).
--
--   deletionTimestamp set                                   -> Progressing "Pending deletion"
--   Synced or Ready is False with a Terminal* reason (or InvalidSpec, QuotaExceeded), and the
--     condition is about the current generation             -> Degraded (needs a spec fix or a human)
--   status.observedGeneration < metadata.generation         -> Progressing (change not fully applied)
--   Ready=True, service running, generation observed        -> Healthy
--   anything else                                           -> Progressing
--
-- A terminal condition is checked before observedGeneration because the operator does not bump
-- status.observedGeneration for a spec it rejects; its conditions carry their own observedGeneration.

-- Reasons that need a change by a human: every "Terminal*" reason the operator writes, plus these.
local TERMINAL_REASONS = { InvalidSpec = true, QuotaExceeded = true }
local TERMINAL_PREFIX = "Terminal"

local function is_terminal(reason)
  if reason == nil then
    return false
  end
  return TERMINAL_REASONS[reason] == true or string.sub(reason, 1, string.len(TERMINAL_PREFIX)) == TERMINAL_PREFIX
end

local function find_condition(conditions, ctype)
  if conditions == nil then
    return nil
  end
  for _, condition in ipairs(conditions) do
    if condition.type == ctype then
      return condition
    end
  end
  return nil
end

-- A condition written for an older generation says nothing about the current spec.
local function is_current(condition, generation)
  return generation == nil or condition.observedGeneration == nil or condition.observedGeneration >= generation
end

local function describe(condition, fallback)
  if condition ~= nil and condition.message ~= nil and condition.message ~= "" then
    return condition.message
  end
  if condition ~= nil and condition.reason ~= nil and condition.reason ~= "" then
    return condition.reason
  end
  return fallback
end

local hs = {}
local metadata = obj.metadata or {}
local generation = metadata.generation

if metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Pending deletion"
  return hs
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local conditions = status.conditions
for _, ctype in ipairs({ "Synced", "Ready" }) do
  local condition = find_condition(conditions, ctype)
  if condition ~= nil and condition.status == "False" and is_terminal(condition.reason)
      and is_current(condition, generation) then
    hs.status = "Degraded"
    hs.message = condition.reason .. ": " .. describe(condition, "terminal error")
    return hs
  end
end

local ready = find_condition(conditions, "Ready")
local applied = generation == nil or (status.observedGeneration ~= nil and status.observedGeneration >= generation)
local running = status.state == nil or status.state == "running"

if applied and running and ready ~= nil and ready.status == "True" and is_current(ready, generation) then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  return hs
end

hs.status = "Progressing"
-- Ready written for this very generation tells what is going on; otherwise the operator has not
-- looked at the current spec yet.
local ready_now = ready ~= nil and (generation == nil or ready.observedGeneration == generation)
if not applied and not ready_now then
  hs.message = "Waiting for the operator to apply generation " .. tostring(generation)
elseif not running then
  hs.message = "Service is " .. status.state .. ": " .. describe(ready, "not ready yet")
else
  hs.message = describe(ready, "Waiting for the Ready condition")
end
return hs
