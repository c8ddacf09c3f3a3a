{{/* Names and labels. */}}

{{- define "eddy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "eddy.fullname" -}}
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

{{- define "eddy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "eddy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "eddy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "eddy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "eddy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "eddy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret the workers read their settings from: the existing one, or the one this chart creates. */}}
{{- define "eddy.secretName" -}}
{{- if .Values.secret.existingSecret }}
{{- .Values.secret.existingSecret }}
{{- else if .Values.secret.create }}
{{- include "eddy.fullname" . }}
{{- else }}
{{- fail "secret.create is false and secret.existingSecret is empty: the workers need EDDY_BROKER, EDDY_STATE, EDDY_REGISTRY and EDDY_SECRET; set secret.existingSecret to a Secret holding them, or secret.create=true" }}
{{- end }}
{{- end }}

{{/* EDDY_SECRET for a created Secret: the value given, else the installed Secret's (upgrades keep it, so
     checkpoints stay readable), else a random one. */}}
{{- define "eddy.eddySecret" -}}
{{- if .Values.secret.eddySecret }}
{{- .Values.secret.eddySecret }}
{{- else }}
{{- $installed := lookup "v1" "Secret" .Release.Namespace (include "eddy.fullname" .) }}
{{- if and $installed $installed.data (hasKey $installed.data "EDDY_SECRET") }}
{{- index $installed.data "EDDY_SECRET" | b64dec }}
{{- else }}
{{- randAlphaNum 48 }}
{{- end }}
{{- end }}
{{- end }}

{{/* The enabled pipelines as a JSON list of names (range over a map is in key order, so output is stable). */}}
{{- define "eddy.enabledPipelines" -}}
{{- $names := list }}
{{- range $name, $pipeline := .Values.pipelines }}
{{- if or (not (hasKey $pipeline "enabled")) $pipeline.enabled }}
{{- $names = append $names $name }}
{{- end }}
{{- end }}
{{- toJson $names }}
{{- end }}

{{/* Per-pipeline helpers take (dict "root" $ "name" NAME "pipeline" VALUES). */}}

{{- define "eddy.pipeline.fullname" -}}
{{- printf "%s-%s" (include "eddy.fullname" .root) .name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "eddy.pipeline.selectorLabels" -}}
{{ include "eddy.selectorLabels" .root }}
app.kubernetes.io/component: worker
eddy/pipeline: {{ .name }}
{{- end }}

{{- define "eddy.pipeline.labels" -}}
{{ include "eddy.labels" .root }}
app.kubernetes.io/component: worker
eddy/pipeline: {{ .name }}
{{- end }}

{{/* The pipeline spec as YAML: pipelines.NAME.spec, a mapping or YAML text (--set-file), its name defaulting to
     the key. */}}
{{- define "eddy.pipeline.spec" -}}
{{- $spec := .pipeline.spec }}
{{- if kindIs "string" $spec }}
{{- $spec = fromYaml $spec }}
{{- if hasKey $spec "Error" }}
{{- fail (printf "pipelines.%s.spec is not a YAML mapping: %s" .name (get $spec "Error")) }}
{{- end }}
{{- end }}
{{- $spec = merge (deepCopy $spec) (dict "name" .name) }}
{{- if ne (toString $spec.name) .name }}
{{- fail (printf "pipelines.%s.spec.name is %q: it must be the pipeline's key %q (or be left out)" .name (toString $spec.name) .name) }}
{{- end }}
{{- toYaml $spec }}
{{- end }}

{{/* Whether the pipeline runs on a GPU ("true" or ""). */}}
{{- define "eddy.pipeline.gpu" -}}
{{- if and (hasKey .pipeline "gpu") .pipeline.gpu }}true{{ end }}
{{- end }}

{{/* Checks that no schema can express; fails with what to change. */}}
{{- define "eddy.pipeline.validate" -}}
{{- $p := .pipeline }}
{{- $partitions := int $p.partitions }}
{{- $autoscaling := default dict $p.autoscaling }}
{{- if $autoscaling.enabled }}
{{- $max := int $autoscaling.maxReplicas }}
{{- $min := int (default 1 $autoscaling.minReplicas) }}
{{- if gt $max $partitions }}
{{- fail (printf "pipelines.%s: autoscaling.maxReplicas (%d) must be <= partitions (%d): each partition goes to one worker of the consumer group, so extra replicas would get none and never turn ready; lower autoscaling.maxReplicas or raise partitions" .name $max $partitions) }}
{{- end }}
{{- if gt $min $max }}
{{- fail (printf "pipelines.%s: autoscaling.minReplicas (%d) must be <= autoscaling.maxReplicas (%d)" .name $min $max) }}
{{- end }}
{{- $resources := default .root.Values.worker.resources $p.resources }}
{{- if and (or $autoscaling.targetCPUUtilizationPercentage (not $autoscaling.targetMemoryUtilizationPercentage)) (not (dig "requests" "cpu" "" $resources)) }}
{{- fail (printf "pipelines.%s: autoscaling on CPU needs resources.requests.cpu, the amount utilization is measured against; set it, or autoscale on memory only" .name) }}
{{- end }}
{{- else }}
{{- $replicas := ternary $p.replicas 1 (hasKey $p "replicas") | int }}
{{- if gt $replicas $partitions }}
{{- fail (printf "pipelines.%s: replicas (%d) must be <= partitions (%d): each partition goes to one worker of the consumer group, so extra replicas would get none and never turn ready; lower replicas or raise partitions" .name $replicas $partitions) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The worker image; GPU pipelines run the CUDA build. */}}
{{- define "eddy.pipeline.image" -}}
{{- $image := .root.Values.image }}
{{- $tag := default .root.Chart.AppVersion $image.tag }}
{{- if include "eddy.pipeline.gpu" . }}
{{- $tag = default (printf "%s-cuda" $tag) $image.gpuTag }}
{{- end }}
{{- printf "%s:%s" $image.repository $tag }}
{{- end }}
