{{/* Name of the chart, overridable. */}}
{{- define "sovai.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name alone when it already holds the chart name. */}}
{{- define "sovai.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sovai.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sovai.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sovai.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "sovai.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sovereign-ai-operator
{{- end }}

{{- define "sovai.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sovai.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sovai.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The operator's environment: one SOVAI_<SNAKE_CASE> variable per key of .Values.config, so the
values stay one-to-one with sovereign_operator.config.Settings (a unit test checks both ways).
Null (and an empty list) leaves the variable unset; lists are comma-joined (Settings splits
them).
*/}}
{{- define "sovai.env" -}}
{{- range $key, $value := .Values.config }}
{{- if not (or (kindIs "invalid" $value) (and (kindIs "slice" $value) (empty $value))) }}
- name: {{ printf "SOVAI_%s" (snakecase $key | upper) }}
  {{- if kindIs "slice" $value }}
  value: {{ join "," $value | quote }}
  {{- else }}
  value: {{ toString $value | quote }}
  {{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The audit log's S3 credentials, as env entries: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and an
optional AWS_SESSION_TOKEN, each by secretKeyRef from audit.credentialsSecret (never envFrom,
which would pass on whatever else the Secret holds). boto3's default chain reads them. Empty
when config.auditUri is unset. Fails on settings that would do nothing, or not work: an
auditUri without credentials, and an endpoint, region or credentials without an auditUri.
*/}}
{{- /*
The operator's own MLflow credentials (mlflow.credentialsSecret), MLflow's variables read by
secretKeyRef, each optional: a token, or a user and password. The operator reads the tracking
server only to find a job's kept result; it reads no Secret itself.
*/}}
{{- define "sovai.mlflowEnv" -}}
{{- $secret := (.Values.mlflow | default dict).credentialsSecret }}
{{- if $secret }}
{{- if not .Values.config.mlflowTrackingUri }}
{{- fail "mlflow.credentialsSecret is set but config.mlflowTrackingUri is not: without a tracking server the operator reads no MLflow and the Secret does nothing; set config.mlflowTrackingUri or unset mlflow.credentialsSecret" }}
{{- end }}
{{- range $key := list "MLFLOW_TRACKING_TOKEN" "MLFLOW_TRACKING_USERNAME" "MLFLOW_TRACKING_PASSWORD" }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret | quote }}
      key: {{ $key }}
      optional: true
{{- end }}
{{- end }}
{{- end }}

{{- define "sovai.auditEnv" -}}
{{- $config := .Values.config }}
{{- $secret := (.Values.audit | default dict).credentialsSecret }}
{{- if $config.auditUri }}
{{- if not $secret }}
{{- fail "config.auditUri is set but audit.credentialsSecret is not: name a Secret in the release namespace with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (optionally AWS_SESSION_TOKEN), the operator's credentials for the audit log's bucket" }}
{{- end }}
{{- range $key := list "AWS_ACCESS_KEY_ID" "AWS_SECRET_ACCESS_KEY" "AWS_SESSION_TOKEN" }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret | quote }}
      key: {{ $key }}
      {{- if eq $key "AWS_SESSION_TOKEN" }}
      optional: true
      {{- end }}
{{- end }}
{{- else }}
{{- range $name, $value := dict "config.auditEndpoint" $config.auditEndpoint "config.auditRegion" $config.auditRegion "audit.credentialsSecret" $secret }}
{{- if $value }}
{{- fail (printf "%s is set but config.auditUri is not: without an auditUri (s3://bucket/prefix) no audit log is kept and %s does nothing; set config.auditUri or unset %s" $name $name $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Whether Kopf peering is on: more than one replica. */}}
{{- define "sovai.peering" -}}
{{- if gt (int .Values.config.replicas) 1 }}true{{- end }}
{{- end }}

{{/*
The pod's affinity: .Values.affinity and, with more than one replica, a preferred pod
anti-affinity between the operator's own pods on kubernetes.io/hostname, so that the standby
replicas of Kopf peering do not share the active one's node (and its loss). An
affinity.podAntiAffinity of the values replaces it ({} for none).
*/}}
{{- define "sovai.affinity" -}}
{{- $affinity := deepCopy (default dict .Values.affinity) }}
{{- if and (include "sovai.peering" .) (not (hasKey $affinity "podAntiAffinity")) }}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (include "sovai.selectorLabels" . | fromYaml)) }}
{{- $_ := set $affinity "podAntiAffinity" (dict "preferredDuringSchedulingIgnoredDuringExecution" (list (dict "weight" 100 "podAffinityTerm" $term))) }}
{{- end }}
{{- toYaml $affinity }}
{{- end }}

{{/* Annotations that make Argo CD apply CRDs and policies before custom resources. */}}
{{- define "sovai.syncWave" -}}
argocd.argoproj.io/sync-wave: {{ . | quote }}
{{- end }}
