{{/*
Names and labels. Every object of the release is named from hc.fullname and
carries hc.labels; selectors use only hc.selectorLabels (immutable fields).
*/}}

{{- define "hc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hc.fullname" -}}
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

{{/* A component's name: <fullname>-<component>, e.g. release-hybrid-catalog-redis. */}}
{{- define "hc.componentName" -}}
{{- printf "%s-%s" (include "hc.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hc.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one component (dict "root" $ "component" "catalog"). */}}
{{- define "hc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hc.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Full labels of one component. */}}
{{- define "hc.labels" -}}
helm.sh/chart: {{ include "hc.chart" .root }}
{{ include "hc.selectorLabels" . }}
app.kubernetes.io/part-of: hybrid-catalog
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{/* image reference: (dict "image" .Values.catalog.image "root" $) */}}
{{- define "hc.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{- define "hc.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}

{{- define "hc.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext -}}
{{- end -}}

{{/* Secret names and keys holding the connection URLs / passwords. */}}
{{- define "hc.redis.secretName" -}}
{{- if .Values.redis.enabled -}}
{{- default (include "hc.componentName" (dict "root" . "component" "redis")) .Values.redis.existingSecret -}}
{{- else -}}
{{- default (include "hc.componentName" (dict "root" . "component" "redis-external")) .Values.redis.external.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "hc.postgresql.secretName" -}}
{{- if .Values.postgresql.enabled -}}
{{- default (include "hc.componentName" (dict "root" . "component" "postgresql")) .Values.postgresql.existingSecret -}}
{{- else -}}
{{- default (include "hc.componentName" (dict "root" . "component" "postgresql-external")) .Values.postgresql.external.existingSecret -}}
{{- end -}}
{{- end -}}

{{/*
A password that survives upgrades: the value given, else the one already in
the cluster's Secret, else a new random one.
(dict "root" $ "secret" NAME "key" KEY "value" GIVEN)
*/}}
{{- define "hc.stablePassword" -}}
{{- if .value -}}
{{- .value -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret -}}
{{- if and $existing (index $existing.data .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else -}}
{{- randAlphaNum 32 -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Pod annotation that rolls a workload when its connection settings change.
It hashes the *inputs* of the Secrets (values), never the rendered Secrets:
a generated password is random on a fresh render, so hashing it would give a
new checksum on every render (and restart every pod on every upgrade), while
the password itself is kept by hc.stablePassword and never needs a rollout.
(dict "root" $ "parts" (list "redis" "postgresql"))
*/}}
{{- define "hc.checksum.secrets" -}}
{{- $inputs := dict -}}
{{- range .parts -}}
{{- $v := index $.root.Values . -}}
{{- $_ := set $inputs . (dict "enabled" $v.enabled "password" $v.password "existingSecret" $v.existingSecret "external" $v.external "secret" (include (printf "hc.%s.secretName" .) $.root)) -}}
{{- end -}}
{{- toJson $inputs | sha256sum -}}
{{- end -}}

{{/*
Whether the Prometheus Operator's API is served: ServiceMonitor and
PrometheusRule are rendered only then (and only when their toggle is on), so
`helm install` works on a cluster without the Prometheus Operator.
*/}}
{{- define "hc.monitoringApi" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" -}}true{{- end -}}
{{- end -}}

{{/*
REDIS_URL and DATABASE_URL as container env entries. In-cluster services get
the password from their Secret and the URL is composed by Kubernetes' $(VAR)
expansion, so the password is never in the pod spec; external URLs come whole
from a Secret.
*/}}
{{- define "hc.env.redis" -}}
{{- if .Values.redis.enabled }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "hc.redis.secretName" . }}
      key: redis-password
- name: REDIS_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s:%v/%v" (include "hc.componentName" (dict "root" . "component" "redis")) .Values.redis.port .Values.redis.database | quote }}
{{- else }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "hc.redis.secretName" . }}
      key: {{ .Values.redis.external.existingSecretKey }}
{{- end }}
- name: CACHE_KEY_PREFIX
  value: {{ .Values.cacheKeyPrefix | quote }}
{{- end -}}

{{- define "hc.env.database" -}}
{{- if .Values.postgresql.enabled }}
- name: POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "hc.postgresql.secretName" . }}
      key: postgres-password
- name: DATABASE_URL
  value: {{ printf "postgresql+asyncpg://%s:$(POSTGRES_PASSWORD)@%s:%v/%s" .Values.postgresql.username (include "hc.componentName" (dict "root" . "component" "postgresql")) .Values.postgresql.port .Values.postgresql.database | quote }}
{{- else }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "hc.postgresql.secretName" . }}
      key: {{ .Values.postgresql.external.existingSecretKey }}
{{- end }}
{{- end -}}

{{/* WATCH_NAMESPACE for the operator: "" (all) for ["*"], else a comma list. */}}
{{- define "hc.operator.watchNamespaces" -}}
{{- if has "*" .Values.operator.watchNamespaces -}}
{{- else if .Values.operator.watchNamespaces -}}
{{- join "," .Values.operator.watchNamespaces -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{- define "hc.operator.clusterWide" -}}
{{- if has "*" .Values.operator.watchNamespaces -}}true{{- end -}}
{{- end -}}

{{/* The operator's RBAC rules (the list in operator/README.md). */}}
{{- define "hc.operator.rules" -}}
- apiGroups: ["caching.hybridcache.io"]
  resources: ["cacheinvalidationpolicies"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["caching.hybridcache.io"]
  resources: ["cacheinvalidationpolicies/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get"]
{{- end -}}

{{/*
The catalog's write token (CATALOG_WRITE_TOKEN): writes need it. The value
given, else the Secret you name, else one generated once and kept across
upgrades (hc.stablePassword), like the database passwords.
*/}}
{{- define "hc.writeToken.secretName" -}}
{{- default (include "hc.componentName" (dict "root" . "component" "write-token")) .Values.catalog.writeToken.existingSecret -}}
{{- end -}}

{{- define "hc.env.writeToken" -}}
- name: CATALOG_WRITE_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "hc.writeToken.secretName" . }}
      key: {{ .Values.catalog.writeToken.existingSecretKey }}
{{- end -}}

{{/* Rolls the pods that use the token when its inputs change (never the generated value). */}}
{{- define "hc.checksum.writeToken" -}}
{{- toJson .Values.catalog.writeToken | sha256sum -}}
{{- end -}}
