{{/*
The application spec (/tmp/appspec.md, docs/operations.md "Application spec") is also read by
`pmctl app render`: every manifest here must stay identical to its output, except for the labels
app.kubernetes.io/managed-by and helm.sh/chart.
*/}}

{{/* The application's name, checked: required, a DNS-1123 label of at most 40 characters. */}}
{{- define "pipeline-app.name" -}}
{{- $name := required "name is required: the application's name (a DNS-1123 label of at most 40 characters)" .Values.name | toString -}}
{{- if gt (len $name) 40 -}}
{{- fail (printf "name %q is longer than 40 characters" $name) -}}
{{- end -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" $name) -}}
{{- fail (printf "name %q is not a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit)" $name) -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{/* metadata.namespace of every object: `namespace`, else the release namespace (else "default", as pmctl). */}}
{{- define "pipeline-app.namespace" -}}
{{- .Values.namespace | default .Release.Namespace | default "default" -}}
{{- end -}}

{{/* The queue: `queue`, else the name. */}}
{{- define "pipeline-app.queue" -}}
{{- .Values.queue | default (include "pipeline-app.name" .) -}}
{{- end -}}

{{/* Selector labels (Deployment selector, NetworkPolicy podSelector). */}}
{{- define "pipeline-app.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pipeline-app.name" . }}
app.kubernetes.io/component: pipeline
{{- end -}}

{{/* Labels of the pod template. */}}
{{- define "pipeline-app.podLabels" -}}
{{ include "pipeline-app.selectorLabels" . }}
app.kubernetes.io/part-of: pipeline-manager
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "pipeline-app.labels" -}}
{{ include "pipeline-app.podLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/* metadata of every object: name, namespace, labels. */}}
{{- define "pipeline-app.metadata" -}}
name: {{ include "pipeline-app.name" . }}
namespace: {{ include "pipeline-app.namespace" . }}
labels:
  {{- include "pipeline-app.labels" . | nindent 2 }}
{{- end -}}

{{/* The container securityContext of every container (RESTRICTED in the spec). */}}
{{- define "pipeline-app.restricted" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
{{- end -}}

{{/* A {name, key} Secret reference, checked: `what` names it in the message. Returns nothing. */}}
{{- define "pipeline-app.checkSecretRef" -}}
{{- $ref := index . 0 -}}
{{- $what := index . 1 -}}
{{- if not (kindIs "map" $ref) -}}
{{- fail (printf "%s must be a map {name, key}" $what) -}}
{{- end -}}
{{- $_ := required (printf "%s.name is required: the Secret's name" $what) $ref.name -}}
{{- $_ := required (printf "%s.key is required: the key in the Secret that holds the token" $what) $ref.key -}}
{{- end -}}

{{/* The executors, checked: at least one, each with a unique DNS-1123 name and an image. Returns nothing. */}}
{{- define "pipeline-app.checkExecutors" -}}
{{- if not .Values.executors -}}
{{- fail "executors is required: at least one executor {name, image}, one per utility container" -}}
{{- end -}}
{{- if not (kindIs "slice" .Values.executors) -}}
{{- fail "executors must be a list of {name, image, ...}" -}}
{{- end -}}
{{- $seen := dict -}}
{{- range $i, $e := .Values.executors -}}
{{- $name := required (printf "executors[%d].name is required: the executorName its steps use" $i) $e.name | toString -}}
{{- if or (gt (len $name) 58) (not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" $name)) -}}
{{- fail (printf "executors[%d].name %q must be a DNS-1123 label of at most 58 characters (its container is exec-NAME)" $i $name) -}}
{{- end -}}
{{- if hasKey $seen $name -}}
{{- fail (printf "executors[%d].name %q is used twice: executor names must be unique" $i $name) -}}
{{- end -}}
{{- $_ := set $seen $name true -}}
{{- $_ := required (printf "executors[%d] (%s): image is required" $i $name) $e.image -}}
{{- end -}}
{{- end -}}

{{/* PM_EXECUTORS: NAME=unix:///mnt/pipe/.pm/NAME.sock,... in spec order. */}}
{{- define "pipeline-app.executorList" -}}
{{- $parts := list -}}
{{- range .Values.executors -}}
{{- $parts = append $parts (printf "%s=unix:///mnt/pipe/.pm/%s.sock" (toString .name) (toString .name)) -}}
{{- end -}}
{{- join "," $parts -}}
{{- end -}}

{{/* The agent's resources: agent.resources, else the default (a value given replaces it whole, as in pmctl). */}}
{{- define "pipeline-app.agentResources" -}}
{{- $default := dict "requests" (dict "cpu" "50m" "memory" "32Mi") "limits" (dict "cpu" "500m" "memory" "128Mi") -}}
{{- toYaml (.Values.agent.resources | default $default) -}}
{{- end -}}

{{/*
Every other check `pmctl app render` makes, so that a spec one refuses the other refuses too. Returns nothing.
*/}}
{{- define "pipeline-app.validate" -}}
{{- $_ := include "pipeline-app.name" . -}}
{{- $ns := include "pipeline-app.namespace" . -}}
{{- if or (gt (len $ns) 63) (not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" $ns)) -}}
{{- fail (printf "namespace %q is not a DNS-1123 label" $ns) -}}
{{- end -}}
{{- $queue := include "pipeline-app.queue" . -}}
{{- if gt (len $queue) 128 -}}
{{- fail (printf "queue %q is longer than 128 bytes" $queue) -}}
{{- end -}}
{{- if not (regexMatch "^[A-Za-z0-9._/-]*$" $queue) -}}
{{- fail (printf "queue %q: allowed characters are letters, digits, . _ - /" $queue) -}}
{{- end -}}
{{- if lt (int .Values.concurrency) 1 -}}
{{- fail "concurrency must be at least 1" -}}
{{- end -}}
{{- $address := required "scheduler.address is required: the scheduler's host:port, or several cluster members comma-separated" .Values.scheduler.address | toString -}}
{{- if not (trim (replace "," "" $address)) -}}
{{- fail "scheduler.address is empty: give the scheduler's host:port, or several cluster members comma-separated" -}}
{{- end -}}
{{- if not (trim (toString (.Values.agent.image | default ""))) -}}
{{- fail "agent.image is required: an image with /usr/local/bin/pm-agent" -}}
{{- end -}}
{{- if lt (int .Values.agent.drainTimeoutSeconds) 1 -}}
{{- fail "agent.drainTimeoutSeconds must be at least 1" -}}
{{- end -}}
{{- if not (trim (toString (.Values.workDir.sizeLimit | default ""))) -}}
{{- fail "workDir.sizeLimit is required: the size limit of the shared emptyDir, e.g. 1Gi" -}}
{{- end -}}
{{- $a := .Values.autoscaling -}}
{{- if $a.enabled -}}
{{- if or (lt (int $a.maxReplicas) 1) (lt (int $a.maxReplicas) (int $a.minReplicas)) -}}
{{- fail "autoscaling.maxReplicas must be at least 1 and at least minReplicas" -}}
{{- end -}}
{{- if and (not (kindIs "invalid" $a.tasksPerReplica)) (lt (int $a.tasksPerReplica) 1) -}}
{{- fail "autoscaling.tasksPerReplica must be at least 1 (null: concurrency)" -}}
{{- end -}}
{{- if not (trim (toString ($a.prometheusAddress | default ""))) -}}
{{- fail "autoscaling.prometheusAddress is required: the Prometheus that scrapes the scheduler" -}}
{{- end -}}
{{- end -}}
{{- end -}}
