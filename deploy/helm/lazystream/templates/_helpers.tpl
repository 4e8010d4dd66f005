{{/* Labels every object carries: the kustomize overlays' part-of label, and Helm's own. */}}
{{- define "lazystream.labels" -}}
app.kubernetes.io/part-of: lazystream
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* The lazystream image, for the worker and the global-sidecar. */}}
{{- define "lazystream.image" -}}
image: {{ printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- with .Values.image.pullPolicy }}
imagePullPolicy: {{ . }}
{{- end }}
{{- end }}

{{/* The namespaces with a global-sidecar: the release's in cluster mode, the listed ones in namespace mode. */}}
{{- define "lazystream.globalSidecarNamespaces" -}}
{{- if eq .Values.globalSidecarMode "cluster" -}}
{{ list .Release.Namespace | toJson }}
{{- else -}}
{{- if not .Values.namespaces -}}
{{- fail "namespaces: namespace mode (globalSidecarMode: namespace) needs at least one namespace" -}}
{{- end -}}
{{ .Values.namespaces | toJson }}
{{- end -}}
{{- end }}

{{/* Where the leader writes the fallback EnvoyFilter: Istio's namespace in cluster mode, else each listed one. */}}
{{- define "lazystream.fallbackNamespaces" -}}
{{- if eq .Values.globalSidecarMode "cluster" -}}
{{ list .Values.istioNamespace | toJson }}
{{- else -}}
{{ include "lazystream.globalSidecarNamespaces" . }}
{{- end -}}
{{- end }}

{{/* config.yaml: the configuration values, with the settings the chart's own values decide. */}}
{{- define "lazystream.config" -}}
{{- $config := deepCopy (.Values.config | default dict) -}}
{{- $general := get $config "general" | default dict -}}
{{- $_ := set $general "globalSidecarMode" .Values.globalSidecarMode -}}
{{- $_ = set $general "metricSourceType" .Values.metricSourceType -}}
{{- if eq .Values.globalSidecarMode "namespace" -}}
{{- $_ = set $general "namespace" (include "lazystream.globalSidecarNamespaces" . | fromJsonArray) -}}
{{- else -}}
{{- $_ = set $general "clusterGsNamespace" .Release.Namespace -}}
{{- end -}}
{{- $_ = set $config "general" $general -}}
{{- $global := get $config "global" | default dict -}}
{{- $_ = set $global "slimeNamespace" .Release.Namespace -}}
{{- $_ = set $global "istioNamespace" .Values.istioNamespace -}}
{{- $_ = set $config "global" $global -}}
{{- if and (eq .Values.metricSourceType "prometheus") (not (dig "metric" "prometheus" "address" "" $config)) -}}
{{- fail "config.metric.prometheus.address: prometheus mode (metricSourceType: prometheus) needs Prometheus' URL" -}}
{{- end -}}
{{ toYaml $config }}
{{- end }}
