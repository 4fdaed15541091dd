{{/* The chart name. */}}
{{- define "pipeline-manager.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The fully qualified app name (the standard helper): the release name if it contains the chart name, else
RELEASE-CHART. At most 52 characters: the StatefulSet's pods get a controller-revision-hash label of the
StatefulSet's name plus 11 characters, which must stay within 63.
*/}}
{{- define "pipeline-manager.fullname" -}}
{{- $full := "" -}}
{{- if .Values.fullnameOverride -}}
{{- $full = .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- $full = .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $full = printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- if gt (len $full) 52 -}}
{{- fail (printf "the fullname %q is longer than 52 characters (a StatefulSet's pod labels need 11 more): use a shorter release name or fullnameOverride" $full) -}}
{{- end -}}
{{- $full -}}
{{- end -}}

{{/* The headless Service: the pods' stable DNS names (FULLNAME-N.HEADLESS.NS.svc.DOMAIN). */}}
{{- define "pipeline-manager.headlessName" -}}
{{- printf "%s-headless" (include "pipeline-manager.fullname" .) -}}
{{- end -}}

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "pipeline-manager.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels (immutable in a StatefulSet: never add to them). */}}
{{- define "pipeline-manager.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pipeline-manager.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of the pods. */}}
{{- define "pipeline-manager.podLabels" -}}
{{ include "pipeline-manager.selectorLabels" . }}
app.kubernetes.io/component: scheduler
app.kubernetes.io/part-of: pipeline-manager
{{- end -}}

{{/* Labels of every object. */}}
{{- define "pipeline-manager.labels" -}}
{{ include "pipeline-manager.podLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "pipeline-manager.chart" . }}
{{- end -}}

{{/* The ServiceAccount's name. */}}
{{- define "pipeline-manager.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pipeline-manager.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the tokens (keys producer, agent, admin, peer). */}}
{{- define "pipeline-manager.tokenSecretName" -}}
{{- if .Values.auth.existingSecret -}}
{{- .Values.auth.existingSecret -}}
{{- else -}}
{{- printf "%s-tokens" (include "pipeline-manager.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Nodes, checked: at least 1. */}}
{{- define "pipeline-manager.replicas" -}}
{{- $n := int .Values.replicas -}}
{{- if lt $n 1 -}}
{{- fail "replicas must be at least 1" -}}
{{- end -}}
{{- $n -}}
{{- end -}}

{{/* This namespace's DNS suffix of the headless Service: HEADLESS.NS.svc.DOMAIN. */}}
{{- define "pipeline-manager.headlessDomain" -}}
{{- printf "%s.%s.svc.%s" (include "pipeline-manager.headlessName" .) .Release.Namespace .Values.clusterDomain -}}
{{- end -}}

{{/* Every node's stable address, in ordinal order (what --members dns:... resolves to; NOTES.txt lists them). */}}
{{- define "pipeline-manager.members" -}}
{{- $full := include "pipeline-manager.fullname" . -}}
{{- $domain := include "pipeline-manager.headlessDomain" . -}}
{{- $members := list -}}
{{- range $i := until (int (include "pipeline-manager.replicas" .)) -}}
{{- $members = append $members (printf "%s-%d.%s:7070" $full $i $domain) -}}
{{- end -}}
{{- join "," $members -}}
{{- end -}}

{{/* An int or a percentage string, as Kubernetes' IntOrString. */}}
{{- define "pipeline-manager.intOrString" -}}
{{- if kindIs "string" . -}}
{{- . | quote -}}
{{- else -}}
{{- . | int -}}
{{- end -}}
{{- end -}}
