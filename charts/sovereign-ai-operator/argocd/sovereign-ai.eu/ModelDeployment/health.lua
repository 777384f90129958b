-- Argo CD health check for sovereign-ai.eu/ModelDeployment, read from argocd-cm under
-- resource.customizations.health.sovereign-ai.eu_ModelDeployment (argocd/argocd-cm.yaml holds
-- exactly this text). Argo CD runs it on gopher-lua (Lua 5.1) with only the base, table and
-- package libraries: no string, math or io functions, no string methods such as s:find().
-- Its cases are health_test.yaml and testdata/ beside this file, in Argo CD's own layout.
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
  hs.message = "Waiting for the operator to pick up the deployment"
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
if phase == "Ready" then
  hs.status = "Healthy"
  if status.url ~= nil then
    hs.message = "Serving at " .. status.url
  else
    hs.message = "Ready"
  end
elseif phase == "Degraded" or phase == "Failed" then
  hs.status = "Degraded"
  hs.message = phase .. ": " .. (condition_message(status, "Ready") or condition_message(status, "Progressing") or "no reason given")
elseif phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = "Suspended (spec.suspend is true)"
elseif phase == "Pending" or phase == "Deploying" then
  hs.status = "Progressing"
  hs.message = condition_message(status, "Progressing") or phase
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
