-- Argo CD resource health for every virt.dev kind (VirtualMachine, Volume, VirtualNetwork,
-- StoragePool, VirtualMachineSnapshot, VirtualMachineRestore). The operator writes kstatus
-- conditions on each: Stalled=True when only a user can fix the object (name or UUID conflict,
-- checksum mismatch, unsupported feature, a failed snapshot or restore), Reconciling=True while
-- it converges, Ready=True once done. Argo CD runs this with the object as the global `obj`.
local hs = { status = "Progressing", message = "waiting for the operator to report status" }
local st = obj.status
if st == nil or st.conditions == nil then
  return hs
end
local gen = obj.metadata and obj.metadata.generation
if gen ~= nil and st.observedGeneration ~= nil and st.observedGeneration < gen then
  hs.message = "the operator has not observed generation " .. gen .. " yet"
  return hs
end
local c = {}
for _, cond in ipairs(st.conditions) do
  c[cond.type] = cond
end
local function say(cond)
  return (cond.reason or "") .. ": " .. (cond.message or "")
end
if c.Stalled ~= nil and c.Stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = say(c.Stalled)
  return hs
end
-- Still converging, even where what exists is usable (Ready=True): a Volume whose grow is
-- being retried says Reconciling=True next to Ready=True, as kstatus and Flux read it.
if c.Reconciling ~= nil and c.Reconciling.status == "True" then
  hs.message = say(c.Reconciling)
  return hs
end
if c.Ready ~= nil and c.Ready.status == "True" then
  -- A machine paused on purpose is fine but not serving: Argo CD's Suspended.
  if obj.kind == "VirtualMachine" and st.phase == "Paused" then
    hs.status = "Suspended"
    hs.message = say(c.Ready)
    return hs
  end
  hs.status = "Healthy"
  hs.message = say(c.Ready)
  return hs
end
if c.Ready ~= nil then
  hs.message = say(c.Ready)
end
return hs
