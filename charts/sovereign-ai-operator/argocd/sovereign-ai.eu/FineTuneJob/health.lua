-- Argo CD health check for sovereign-ai.eu/FineTuneJob, read from argocd-cm under
-- resource.customizations.health.sovereign-ai.eu_FineTuneJob (argocd/argocd-cm.yaml holds
-- exactly this text). Argo CD runs it on gopher-lua (Lua 5.1) with only the base, table and
-- package libraries: no string, math or io functions, no string methods such as s:find().
-- Its cases are health_test.yaml and testdata/ beside this file, in Argo CD's own layout.
-- A finished job is Healthy only when it succeeded; Failed and Cancelled are Degraded, so a
-- sync that created the job does not report success for work that never produced a model.
local hs = {}

local function condition_message(status, wanted)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == wanted and c.message ~= nil and c.message ~= "" then
      return c.message
    end
  end
  return nil
end

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to pick up the job"
  return hs
end

local status = obj.status
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local phase = status.phase
if phase == "Succeeded" then
  hs.status = "Healthy"
  if status.fineTunedModel ~= nil then
    hs.message = "Fine-tuned model " .. status.fineTunedModel
  else
    hs.message = "Succeeded"
  end
elseif phase == "Failed" or phase == "Cancelled" then
  hs.status = "Degraded"
  local message = nil
  if status.error ~= nil then
    message = status.error.message
  end
  message = message or condition_message(status, phase == "Failed" and "Failed" or "Succeeded")
  hs.message = phase .. ": " .. (message or "no reason given")
elseif phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = condition_message(status, "Suspended") or "Suspended (spec.suspend is true)"
elseif phase == "Pending" or phase == "Validating" or phase == "Queued" or phase == "Running" then
  hs.status = "Progressing"
  local progress = status.progress
  if phase == "Running" and progress ~= nil and progress.percentage ~= nil then
    hs.message = "Running: " .. tostring(progress.percentage) .. "%"
  else
    hs.message = phase
  end
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
