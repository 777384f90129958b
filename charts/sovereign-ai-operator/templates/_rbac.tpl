{{/* The rules for namespaced resources, shared by the ClusterRole and the per-namespace Roles. */}}
{{- define "sovai.namespacedRules" -}}
# Kopf watches FineTuneJobs and ModelDeployments (main.py and handlers/modeldeployment.py
# register(): kopf.on.create/resume/update/delete; main.py kopf.index "sovai_finetunejobs",
# each job's phase, which a ModelDeployment serving it follows) and patches their metadata: its
# finalizer and its progress annotations (Kopf's status writes are in the status rule below).
- apiGroups: [sovereign-ai.eu]
  resources: [finetunejobs, modeldeployments]
  verbs: [list, watch, patch]
# handlers/modeldeployment.py reconcile(): reads the FineTuneJob a ModelDeployment's
# spec.model.fineTuneJobRef names, to serve the model it registered; handlers/state.py
# OperatorState.current(): the follow-up sweep reads each job and deployment it passes over.
- apiGroups: [sovereign-ai.eu]
  resources: [finetunejobs, modeldeployments]
  verbs: [get]
# handlers/finetunejob.py reconcile() and handlers/modeldeployment.py write_status(): the whole
# status in one merge patch on the status subresource (from the create/resume/update handlers
# through Kopf's own patch, with its status.lastHandledConfiguration).
- apiGroups: [sovereign-ai.eu]
  resources: [finetunejobs/status, modeldeployments/status]
  verbs: [patch]
# builders/context.py owner references set blockOwnerDeletion; API servers that run the
# OwnerReferencesPermissionEnforcement admission plugin (e.g. OpenShift) then require update on
# the owner's finalizers to create the children.
- apiGroups: [sovereign-ai.eu]
  resources: [finetunejobs/finalizers, modeldeployments/finalizers]
  verbs: [update]
# backends/kuberay.py: reconcile() ensures the RayJob (k8s/ensure.py: create, on 409 get, then
# server-side apply of what drifted); stop() and delete() delete it.
- apiGroups: [ray.io]
  resources: [rayjobs]
  verbs: [create, get, patch, delete]
# main.py kopf.index "sovai_rayjobs" (handlers/indexes.py rayjobs_by_owner): the level-based
# timer reads RayJob state from this cache, filtered by the job-uid label.
- apiGroups: [ray.io]
  resources: [rayjobs]
  verbs: [list, watch]
# main.py kopf.index "sovai_workloads" (handlers/indexes.py workloads_waiting): where a job that
# Kueue holds for quota stands in its LocalQueue (backends/kueue.py). Without Kueue installed
# the watch never starts.
- apiGroups: [kueue.x-k8s.io]
  resources: [workloads]
  verbs: [list, watch]
# main.py kopf.index "sovai_pods" (handlers/indexes.py pods_by_owner): placement evidence and
# start-up blockers (image pull errors) of the pods the operator's RayJobs made; and
# kopf.index "sovai_serving_pods" (serving_pods_by_owner): the serving pods' placement, blockers
# and fetched digest (handlers/modeldeployment.py serving_pods lists them by label only before
# the index exists).
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# backends/kuberay.py _read_logs(): progress and the result from the tail of the RayJob
# submitter pod's log (k8s/client.py log_tail: tailLines and limitBytes, never the whole log).
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
# handlers/modeldeployment.py _ensure_children() (k8s/ensure.py: create, on 409 get, then
# server-side apply of what drifted; plus a replicas patch when an HPA resumes from zero) and
# delete_children().
- apiGroups: [apps]
  resources: [deployments]
  verbs: [create, get, patch, delete]
# main.py kopf.index "sovai_deployments" (handlers/indexes.py deployments_by_owner): each
# serving Deployment's desired-spec hash and rollout, which the follow-up sweep reads instead
# of asking the API server.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch]
# handlers/modeldeployment.py _ensure_children(): the serving Service (ensure) and
# delete_children().
- apiGroups: [""]
  resources: [services]
  verbs: [create, get, patch, delete]
# handlers/modeldeployment.py _ensure_children(): the optional HPA (ensure, or delete when the
# spec has no autoscaling) and delete_children().
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [create, get, patch, delete]
# handlers/modeldeployment.py _ensure_children(): the optional PodDisruptionBudget (ensure or
# delete) and delete_children().
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [create, get, patch, delete]
# The egress NetworkPolicies (builders/network.py; ensure, then delete): backends/kuberay.py
# reconcile() and delete() for a FineTuneJob's Ray pods, ensured before the RayJob, and
# handlers/modeldeployment.py _ensure_children() and delete_children() for the serving pods.
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [create, get, patch, delete]
# handlers/state.py OperatorState.event() (the operator's client) and Kopf's own handler events.
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
