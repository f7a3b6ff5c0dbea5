{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "mpg-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified app name; the release name alone when it already contains the chart name. */}}
{{- define "mpg-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "mpg-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mpg-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mpg-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mpg-operator.labels" -}}
helm.sh/chart: {{ include "mpg-operator.chart" . }}
{{ include "mpg-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mpg-operator
{{- end -}}

{{- define "mpg-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mpg-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository@digest when a digest is set (the tag is then ignored), else repository:tag. */}}
{{- define "mpg-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "mpg-operator.peeringName" -}}
{{- default (include "mpg-operator.fullname" .) .Values.peering.name -}}
{{- end -}}

{{/* Name of the operator-wide default credentials Secret, or "" when there is none. */}}
{{- define "mpg-operator.credentialsSecretName" -}}
{{- if .Values.credentials.existingSecret -}}
{{- .Values.credentials.existingSecret -}}
{{- else if .Values.credentials.create.keyId -}}
{{- printf "%s-credentials" (include "mpg-operator.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
RBAC rules for ManagedPostgres objects, their connection Secrets and Events: granted cluster-wide
by a ClusterRole, or per watched namespace by a Role. Only verbs the operator uses; no wildcards.
*/}}
{{- define "mpg-operator.namespacedRules" -}}
- apiGroups: ["clickhouse.cloud"]
  resources: ["managedpostgreses"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["clickhouse.cloud"]
  resources: ["managedpostgreses/status"]
  verbs: ["patch"]
- apiGroups: ["clickhouse.cloud"]
  resources: ["postgresroles", "postgresdatabases"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["clickhouse.cloud"]
  resources: ["postgresroles/status", "postgresdatabases/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{/* Cluster-scoped reads kopf performs in every mode: CRD discovery. */}}
{{- define "mpg-operator.clusterRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end -}}

{{/* Namespace-scoped mode only: kopf observes namespaces to serve the watched ones as they appear. */}}
{{- define "mpg-operator.namespaceRules" -}}
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end -}}

{{/* The operator's command-line arguments (after the image's "mpg-operator" entrypoint). */}}
{{- define "mpg-operator.args" -}}
- run
{{- if .Values.watchNamespaces }}
{{- range .Values.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
{{- else }}
- --all-namespaces
{{- end }}
- --liveness=http://0.0.0.0:{{ .Values.probes.port }}/healthz
- --metrics-port={{ if .Values.metrics.enabled }}{{ .Values.metrics.port }}{{ else }}0{{ end }}
- --log-format={{ .Values.config.logFormat }}
{{- if .Values.peering.enabled }}
- --peering={{ include "mpg-operator.peeringName" . }}
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}
