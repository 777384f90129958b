{{/* The rules for namespaced resources, shared by the ClusterRole and the per-namespace Roles. */}}
{{- define "sovai.namespacedRules" -}}
# Kopf watches FineTuneJobs (main.py: kopf.on.create/resume/update/delete,
# kopf.timer) and patches their metadata: its finalizer and its progress annotations.
- apiGroups: [sovereign-ai.eu]
  resources: [finetunejobs]
  verbs: [list, watch, patch]
# handlers/finetunejob.py write_status(): the whole status in one merge patch on the subresource.
- apiGroups: [sovereign-ai.eu]
  resources: [finetunejobs/status]
  verbs: [patch]
# backends/kuberay.py: reconcile() ensures the RayJob (k8s/ensure.py: create, on 409 get, then
# patch drift); stop() and delete() delete it.
- apiGroups: [ray.io]
  resources: [rayjobs]
  verbs: [create, get, patch, delete]
# main.py kopf.index "sovai_rayjobs" (handlers/indexes.py rayjobs_by_owner): the level-based
# timer reads RayJob state from this cache, filtered by the job-uid label.
- apiGroups: [ray.io]
  resources: [rayjobs]
  verbs: [list, watch]
# backends/kuberay.py reconcile(): the job.json ConfigMap (builders/jobconfig.py) is ensured
# before the RayJob; delete() removes it.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [create, get, patch, delete]
# main.py kopf.index "sovai_pods" (handlers/indexes.py pods_by_owner): placement evidence and
# start-up blockers (image pull errors) of the pods the operator's RayJobs made.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# handlers/runtime.py Runtime.event() (kopf.event) and Kopf's own handler-progress events.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}
{{- define "sovai.peeringRulesNamespaced" -}}
# Kopf peering (config.replicas > 1): keep-alives in the KopfPeering object, and watching it.
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [get, list, watch, patch]
{{- end }}
