{{/* Names and labels shared by every template. */}}

{{- define "nexa.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "nexa.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "nexa.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "nexa.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The name of one component's objects: <fullname>-<component>. */}}
{{- define "nexa.componentName" -}}
{{- printf "%s-%s" (include "nexa.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "nexa.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nexa.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "nexa.labels" -}}
{{ include "nexa.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: nexa
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Labels for objects that belong to no single component. */}}
{{- define "nexa.commonLabels" -}}
app.kubernetes.io/name: {{ include "nexa.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: nexa
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* A Nexa image: <registry>/<repository>:<tag>, the tag defaulting to the chart version. */}}
{{- define "nexa.image" -}}
{{- $registry := .root.Values.image.registry -}}
{{- $tag := .image.tag | default .root.Values.image.tag | default .root.Chart.Version -}}
{{- if $registry -}}
{{- printf "%s/%s:%s" $registry .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* A third-party image (MinIO, PostgreSQL): repository:tag as given. */}}
{{- define "nexa.thirdPartyImage" -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}

{{- define "nexa.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Pod-level security context meeting the "restricted" Pod Security Standard. */}}
{{- define "nexa.podSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .uid }}
  runAsGroup: {{ .uid }}
  fsGroup: {{ .uid }}
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* Container-level security context meeting the "restricted" Pod Security Standard. */}}
{{- define "nexa.containerSecurityContext" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  capabilities:
    drop: ["ALL"]
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* Secret holding NEXA_S3_ACCESS_KEY / NEXA_S3_SECRET_KEY (the chart's, or the external one). */}}
{{- define "nexa.s3SecretName" -}}
{{- if .Values.minio.enabled -}}
{{- .Values.minio.existingSecret | default (include "nexa.componentName" (dict "root" . "component" "s3")) -}}
{{- else -}}
{{- required "externalS3.existingSecret is required when minio.enabled is false" .Values.externalS3.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "nexa.s3Endpoint" -}}
{{- if .Values.minio.enabled -}}
{{- printf "%s:%d" (include "nexa.componentName" (dict "root" . "component" "minio")) (int .Values.minio.service.port) -}}
{{- else -}}
{{- required "externalS3.endpoint is required when minio.enabled is false" .Values.externalS3.endpoint -}}
{{- end -}}
{{- end -}}

{{- define "nexa.s3Secure" -}}
{{- if .Values.minio.enabled -}}false{{- else -}}{{ .Values.externalS3.secure }}{{- end -}}
{{- end -}}

{{/* The S3 settings every Nexa process reads (gateway, operator, workers). */}}
{{- define "nexa.s3Env" -}}
- name: NEXA_S3_ENDPOINT
  value: {{ include "nexa.s3Endpoint" . | quote }}
- name: NEXA_S3_BUCKET
  value: {{ .Values.artifacts.bucket | quote }}
- name: NEXA_S3_PREFIX
  value: {{ .Values.artifacts.prefix | quote }}
- name: NEXA_S3_SECURE
  value: {{ include "nexa.s3Secure" . | quote }}
{{- if and (not .Values.minio.enabled) .Values.externalS3.region }}
- name: NEXA_S3_REGION
  value: {{ .Values.externalS3.region | quote }}
{{- end }}
- name: NEXA_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "nexa.s3SecretName" . }}
      key: {{ ternary "NEXA_S3_ACCESS_KEY" .Values.externalS3.accessKeyKey .Values.minio.enabled }}
- name: NEXA_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "nexa.s3SecretName" . }}
      key: {{ ternary "NEXA_S3_SECRET_KEY" .Values.externalS3.secretKeyKey .Values.minio.enabled }}
{{- end -}}

{{/* Secret with NEXA_WORKER_SECRET (and NEXA_DATABASE_URL for the bundled PostgreSQL). */}}
{{- define "nexa.gatewaySecretName" -}}
{{- include "nexa.componentName" (dict "root" . "component" "gateway") -}}
{{- end -}}

{{- define "nexa.databaseSecretName" -}}
{{- if .Values.postgresql.enabled -}}
{{- include "nexa.gatewaySecretName" . -}}
{{- else -}}
{{- required "externalDatabase.existingSecret is required when postgresql.enabled is false" .Values.externalDatabase.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* A random secret value kept across upgrades: the live Secret's value when there is one. */}}
{{- define "nexa.keptSecretValue" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else if .hex -}}
{{- randAlphaNum 64 | sha256sum -}}
{{- else -}}
{{- randAlphaNum (int .length) -}}
{{- end -}}
{{- end -}}

{{/* "true" in cluster mode (the gateway runs jobs as NexaJobs), else empty. */}}
{{- define "nexa.clusterMode" -}}
{{- if eq .Values.gateway.backend "kubernetes" -}}true{{- end -}}
{{- end -}}

{{/* "true" when pull workers are deployed: enabled, and the gateway keeps the SQL queue they claim from. */}}
{{- define "nexa.workersEnabled" -}}
{{- if and .Values.workers.enabled (not (include "nexa.clusterMode" .)) -}}true{{- end -}}
{{- end -}}

{{- define "nexa.gatewayUrl" -}}
{{- printf "http://%s:%d" (include "nexa.componentName" (dict "root" . "component" "gateway")) (int .Values.gateway.service.port) -}}
{{- end -}}

{{/*
The model catalog and defaults (values `models`), for the gateway and the operator's engine pods.
*/}}
{{- define "nexa.modelEnv" -}}
{{- with .Values.models.catalog }}
- name: NEXA_MODEL_CATALOG
  value: {{ toJson . | quote }}
{{- end }}
{{- with .Values.models.defaultTeacher }}
- name: NEXA_DEFAULT_TEACHER
  value: {{ . | quote }}
{{- end }}
- name: NEXA_DEFAULT_MODEL
  value: {{ .Values.models.defaultModel | quote }}
{{- end }}

{{/* Engine pods reach the store through the gateway with attempt tokens: cluster mode, both parts installed. */}}
{{- define "nexa.podsThroughGateway" -}}
{{- if and (include "nexa.clusterMode" .) .Values.operator.enabled (eq .Values.operator.podStoreAccess "gateway") -}}true{{- end -}}
{{- end -}}
