{{- define "gpupool.labels" -}}
app.kubernetes.io/name: gpupool
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: gpupool
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "gpupool.selector" -}}
app.kubernetes.io/name: gpupool
app.kubernetes.io/component: operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The operator's namespace: namespace.name, or the release's. */}}
{{- define "gpupool.namespace" -}}
{{ .Values.namespace.name | default .Release.Namespace }}
{{- end -}}

{{/* The MIG manager ConfigMap's namespace: migManager.namespace, or the operator's. */}}
{{- define "gpupool.migNamespace" -}}
{{ .Values.migManager.namespace | default (include "gpupool.namespace" .) }}
{{- end -}}

{{- define "gpupool.serviceAccount" -}}
{{ .Values.serviceAccount.name | default "gpupool-operator" }}
{{- end -}}

{{/* HOST:PORT for a listener; "podIP" binds the pod's own address only. */}}
{{- define "gpupool.listen" -}}
{{- if eq .bindAddress "podIP" -}}$(POD_IP):{{ .port }}
{{- else if contains ":" .bindAddress -}}[{{ .bindAddress }}]:{{ .port }}
{{- else -}}{{ .bindAddress }}:{{ .port }}
{{- end -}}
{{- end -}}
