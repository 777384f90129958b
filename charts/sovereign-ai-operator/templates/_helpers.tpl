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
