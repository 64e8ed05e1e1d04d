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
{{- $_ := set $inputs . (dict "enabled" $v.enabled "password" $v.password "users" $v.users "adminPassword" $v.adminPassword "username" $v.username "existingSecret" $v.existingSecret "external" $v.external "mode" $v.mode "tls" $v.tls "sentinel" $v.sentinel "cluster" $v.cluster "secret" (include (printf "hc.%s.secretName" .) $.root)) -}}
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
A password as it may appear in a URL's userinfo: percent-encoded, so that
`@ : / # ?` in a user-supplied password cannot end the userinfo early.
urlquery encodes a space as "+", which userinfo would read literally: "%20".
*/}}
{{- define "hc.urlPassword" -}}
{{- urlquery . | replace "+" "%20" -}}
{{- end -}}

{{/*
The in-cluster Redis's users. `default` is the admin (every command), used
only by the readiness probe; each component has its own user with the
commands and keys it uses (redis-acl.yaml has the rules), and its password in
the Redis Secret under "<user>-password".
*/}}
{{- define "hc.redis.users" -}}
{{- list "catalog" "operator" | toJson -}}
{{- end -}}

{{- define "hc.redis.host" -}}
{{- include "hc.componentName" (dict "root" . "component" "redis") -}}
{{- end -}}

{{/* "true" when the in-cluster Redis runs under Sentinel (redis.mode). */}}
{{- define "hc.redis.sentinel" -}}
{{- if and .Values.redis.enabled (eq .Values.redis.mode "sentinel") -}}true{{- end -}}
{{- end -}}

{{/* "true" when the in-cluster Redis is a Redis Cluster (redis.mode). */}}
{{- define "hc.redis.cluster" -}}
{{- if and .Values.redis.enabled (eq .Values.redis.mode "cluster") -}}true{{- end -}}
{{- end -}}

{{/* How many Redis pods the StatefulSet runs in the current mode. */}}
{{- define "hc.redis.replicas" -}}
{{- $r := .Values.redis -}}
{{- if include "hc.redis.sentinel" . -}}
{{- $r.sentinel.replicas -}}
{{- else if include "hc.redis.cluster" . -}}
{{- mul $r.cluster.masters (add1 $r.cluster.replicasPerMaster) -}}
{{- else -}}
1
{{- end -}}
{{- end -}}

{{/* "true" when the in-cluster Redis speaks TLS only. */}}
{{- define "hc.redis.tls" -}}
{{- if and .Values.redis.enabled .Values.redis.tls.enabled -}}true{{- end -}}
{{- end -}}

{{/* The Secret with the in-cluster Redis's tls.crt, tls.key and ca.crt. */}}
{{- define "hc.redis.tlsSecret" -}}
{{- if .Values.redis.tls.certManager.enabled -}}
{{- printf "%s-tls" (include "hc.redis.host" .) -}}
{{- else -}}
{{- required "redis.tls.enabled needs redis.tls.existingSecret (or redis.tls.certManager.enabled)" .Values.redis.tls.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* Sentinel and cluster modes: the stable DNS name of each Redis pod (the
headless Service's records), comma-separated, with the port given:
(dict "root" $ "port" N) */}}
{{- define "hc.redis.podHosts" -}}
{{- $host := include "hc.redis.host" .root -}}
{{- $hosts := list -}}
{{- range $i := until (int (include "hc.redis.replicas" .root)) -}}
{{- $hosts = append $hosts (printf "%s-%d.%s.%s.svc:%v" $host $i $host $.root.Release.Namespace $.port) -}}
{{- end -}}
{{- join "," $hosts -}}
{{- end -}}

{{/* Shell, shared by both start scripts: `me` (this pod's DNS name) and
`master` (what the first sentinel that answers calls the master, else pod
0). redis-cli authenticates as the admin from REDISCLI_AUTH. */}}
{{- define "hc.redis.findMaster" -}}
me="${REDIS_ME:-$POD_NAME.$REDIS_DOMAIN}"
master=""
tls=""
[ -z "${REDIS_TLS_DIR:-}" ] || tls="--tls --cacert $REDIS_TLS_DIR/ca.crt --cert $REDIS_TLS_DIR/tls.crt --key $REDIS_TLS_DIR/tls.key"
for s in $(echo "$SENTINEL_HOSTS" | tr ',' ' '); do
  # shellcheck disable=SC2086
  master=$(timeout 3 redis-cli -h "${s%:*}" -p "${s##*:}" $tls --no-auth-warning \
    sentinel get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | head -n 1) || master=""
  case "$master" in ""|*ERR*|*NOAUTH*|*Could*) master="" ;; *) break ;; esac
done
[ -n "$master" ] || master="${REDIS_FIRST:-${POD_NAME%-*}-0.$REDIS_DOMAIN}"
{{- end -}}

{{/* What both start scripts read in sentinel mode (redis-acl.yaml). */}}
{{- define "hc.redis.sentinelEnv" -}}
{{- $r := .Values.redis -}}
{{- $host := include "hc.redis.host" . -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: REDIS_DOMAIN
  value: {{ printf "%s.%s.svc" $host .Release.Namespace | quote }}
- name: REDIS_PORT
  value: {{ $r.port | quote }}
- name: SENTINEL_PORT
  value: {{ $r.sentinel.port | quote }}
- name: SENTINEL_HOSTS
  value: {{ include "hc.redis.podHosts" (dict "root" . "port" $r.sentinel.port) | quote }}
- name: MASTER_NAME
  value: {{ $r.sentinel.masterName | quote }}
- name: SENTINEL_QUORUM
  value: {{ $r.sentinel.quorum | quote }}
- name: SENTINEL_DOWN_AFTER_MS
  value: {{ $r.sentinel.downAfterMilliseconds | quote }}
- name: SENTINEL_FAILOVER_TIMEOUT_MS
  value: {{ $r.sentinel.failoverTimeout | quote }}
{{- if include "hc.redis.tls" . }}
- name: REDIS_TLS_DIR
  value: /etc/redis-tls
- name: REDIS_TLS_AUTH_CLIENTS
  value: {{ ternary "yes" "no" $r.tls.authClients | quote }}
{{- end }}
{{- end -}}

{{/* What the cluster-mode start script and the forming Job read
(redis-acl.yaml, redis-cluster-job.yaml). POD_IP is what the node announces
on the bus (cluster-announce-ip); its DNS name is what it announces to
clients (cluster-announce-hostname). */}}
{{- define "hc.redis.clusterEnv" -}}
{{- $r := .Values.redis -}}
{{- $host := include "hc.redis.host" . -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: REDIS_DOMAIN
  value: {{ printf "%s.%s.svc" $host .Release.Namespace | quote }}
- name: REDIS_PORT
  value: {{ $r.port | quote }}
- name: CLUSTER_BUS_PORT
  value: {{ $r.cluster.busPort | quote }}
- name: CLUSTER_NODE_TIMEOUT
  value: {{ $r.cluster.nodeTimeout | quote }}
- name: CLUSTER_NODES
  value: {{ include "hc.redis.podHosts" (dict "root" . "port" $r.port) | quote }}
- name: CLUSTER_REPLICAS
  value: {{ $r.cluster.replicasPerMaster | quote }}
- name: CLUSTER_FORM_TIMEOUT
  value: {{ $r.cluster.formTimeoutSeconds | quote }}
{{- if include "hc.redis.tls" . }}
- name: REDIS_TLS_DIR
  value: /etc/redis-tls
{{- end }}
{{- end -}}

{{/* Redis users that only the servers use (no URL): in sentinel mode the
replicas' `replication` user and the sentinels' `sentinel` user; in cluster
mode the replicas' `replication` user (the cluster bus has no ACL: it is
closed to everything but the Redis pods by the NetworkPolicies). */}}
{{- define "hc.redis.systemUsers" -}}
{{- if include "hc.redis.sentinel" . -}}
{{- list "replication" "sentinel" | toJson -}}
{{- else if include "hc.redis.cluster" . -}}
{{- list "replication" | toJson -}}
{{- else -}}
{{- list | toJson -}}
{{- end -}}
{{- end -}}

{{/* A component's URL with an already-encoded password (or a $(VAR)):
redis[s]://user:pw@host:port/db, or in sentinel mode
redis[s]+sentinel://user:pw@pod-0:26379,pod-1:26379,.../<master>/<db> (the
same user and password serve the sentinels: redis-acl.yaml), or in cluster
mode redis[s]+cluster://user:pw@pod-0:6379,pod-1:6379,... (every pod: any
one that answers is enough to learn the slot map; a cluster has database 0
only, so no path).
(dict "root" $ "user" "catalog" "password" ENCODED) */}}
{{- define "hc.redis.urlRaw" -}}
{{- $r := .root.Values.redis -}}
{{- $scheme := ternary "rediss" "redis" (eq (include "hc.redis.tls" .root) "true") -}}
{{- if include "hc.redis.sentinel" .root -}}
{{- printf "%s+sentinel://%s:%s@%s/%s/%v" $scheme .user .password (include "hc.redis.podHosts" (dict "root" .root "port" $r.sentinel.port)) $r.sentinel.masterName $r.database -}}
{{- else if include "hc.redis.cluster" .root -}}
{{- printf "%s+cluster://%s:%s@%s" $scheme .user .password (include "hc.redis.podHosts" (dict "root" .root "port" $r.port)) -}}
{{- else -}}
{{- printf "%s://%s:%s@%s:%v/%v" $scheme .user .password (include "hc.redis.host" .root) $r.port $r.database -}}
{{- end -}}
{{- end -}}

{{/* The URL with the password URL-encoded
(dict "root" $ "user" "catalog" "password" PW) */}}
{{- define "hc.redis.url" -}}
{{- include "hc.redis.urlRaw" (dict "root" .root "user" .user "password" (include "hc.urlPassword" .password)) -}}
{{- end -}}

{{/*
REDIS_URL (and CACHE_KEY_PREFIX) for one Redis user: (dict "root" $ "user" "catalog").
In-cluster Redis with the chart's Secret: the whole URL (password URL-encoded
when the Secret was rendered) comes from the Secret key "<user>-url", so no
password is ever in the pod spec. With redis.existingSecret the URL is composed
by Kubernetes' $(VAR) expansion from "<user>-password" (which must then be
URL-safe: expansion cannot encode). External Redis: the URL you gave, whole,
from its Secret (the operator's own URL if you gave one).
*/}}
{{- define "hc.env.redisAs" -}}
{{- $root := .root -}}
{{- if $root.Values.redis.enabled }}
{{- if $root.Values.redis.existingSecret }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "hc.redis.secretName" $root }}
      key: {{ printf "%s-password" .user }}
- name: REDIS_URL
  value: {{ include "hc.redis.urlRaw" (dict "root" $root "user" .user "password" "$(REDIS_PASSWORD)") | quote }}
{{- else }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "hc.redis.secretName" $root }}
      key: {{ printf "%s-url" .user }}
{{- end }}
{{- if include "hc.redis.tls" $root }}
- name: REDIS_TLS_CA_FILE
  value: /etc/hybrid-catalog/redis-ca/ca.crt
{{- end }}
{{- else }}
{{- $ext := $root.Values.redis.external }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "hc.redis.secretName" $root }}
      key: {{ include "hc.redis.externalKey" . }}
{{- with $ext.caBundle }}
{{- if or .secretName .configMapName }}
- name: REDIS_TLS_CA_FILE
  value: {{ printf "/etc/hybrid-catalog/redis-ca/%s" .key | quote }}
{{- end }}
{{- end }}
{{- end }}
- name: CACHE_KEY_PREFIX
  value: {{ $root.Values.cacheKeyPrefix | quote }}
{{- end -}}

{{/* The Secret key holding an external Redis URL for a user: the operator's
own URL when one is given (redis.external.operatorUrl, or operatorSecretKey in
your Secret), else the one URL everybody uses. */}}
{{- define "hc.redis.externalKey" -}}
{{- $ext := .root.Values.redis.external -}}
{{- if and (eq .user "operator") $ext.existingSecret $ext.operatorSecretKey -}}
{{- $ext.operatorSecretKey -}}
{{- else if and (eq .user "operator") (not $ext.existingSecret) $ext.operatorUrl -}}
operator-url
{{- else -}}
{{- $ext.existingSecretKey -}}
{{- end -}}
{{- end -}}

{{/* The catalog's Redis env (kept under this name for templates that include it). */}}
{{- define "hc.env.redis" -}}
{{- include "hc.env.redisAs" (dict "root" . "user" "catalog") -}}
{{- end -}}

{{- define "hc.postgresql.host" -}}
{{- include "hc.componentName" (dict "root" . "component" "postgresql") -}}
{{- end -}}

{{/* The app role's URL, password URL-encoded: (dict "root" $ "password" PW) */}}
{{- define "hc.postgresql.url" -}}
{{- $p := .root.Values.postgresql -}}
{{- printf "postgresql+asyncpg://%s:%s@%s:%v/%s" (urlquery $p.username) (include "hc.urlPassword" .password) (include "hc.postgresql.host" .root) $p.port $p.database -}}
{{- end -}}

{{/*
DATABASE_URL for the catalog and the seed Job: the app role (not a superuser,
see postgresql-init.yaml). Same three cases as REDIS_URL: the chart's Secret
holds the whole URL ("database-url"); with postgresql.existingSecret it is
composed from "postgres-password"; external: your URL, whole, plus the CA
bundle (PGSSLROOTCERT, PGSSLMODE: read by asyncpg) when one is mounted.
*/}}
{{- define "hc.env.database" -}}
{{- if .Values.postgresql.enabled }}
{{- if .Values.postgresql.existingSecret }}
- name: POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "hc.postgresql.secretName" . }}
      key: postgres-password
- name: DATABASE_URL
  value: {{ printf "postgresql+asyncpg://%s:$(POSTGRES_PASSWORD)@%s:%v/%s" .Values.postgresql.username (include "hc.postgresql.host" .) .Values.postgresql.port .Values.postgresql.database | quote }}
{{- else }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "hc.postgresql.secretName" . }}
      key: database-url
{{- end }}
{{- else }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "hc.postgresql.secretName" . }}
      key: {{ .Values.postgresql.external.existingSecretKey }}
{{- with .Values.postgresql.external.caBundle }}
{{- if or .secretName .configMapName }}
- name: PGSSLROOTCERT
  value: {{ printf "/etc/hybrid-catalog/postgresql-ca/%s" .key | quote }}
- name: PGSSLMODE
  value: {{ .sslMode | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
CA bundles of an external Redis / PostgreSQL with a private CA: volumes and
mounts (read-only) for the pods that connect. (dict "root" $ "parts" (list "redis" "postgresql"))
*/}}
{{- define "hc.caBundle.volumes" -}}
{{- range .parts }}
{{- $v := index $.root.Values . }}
{{- $ca := $v.external.caBundle }}
{{- if and (eq . "redis") (include "hc.redis.tls" $.root) }}
{{- /* The in-cluster Redis's CA: only ca.crt of its TLS Secret. */}}
- name: redis-ca
  secret:
    secretName: {{ include "hc.redis.tlsSecret" $.root }}
    items: [{key: ca.crt, path: ca.crt}]
{{- else if and (not $v.enabled) (or $ca.secretName $ca.configMapName) }}
- name: {{ . }}-ca
  {{- if $ca.secretName }}
  secret:
    secretName: {{ $ca.secretName }}
    items: [{key: {{ $ca.key | quote }}, path: {{ $ca.key | quote }}}]
  {{- else }}
  configMap:
    name: {{ $ca.configMapName }}
    items: [{key: {{ $ca.key | quote }}, path: {{ $ca.key | quote }}}]
  {{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "hc.caBundle.mounts" -}}
{{- range .parts }}
{{- $v := index $.root.Values . }}
{{- $ca := $v.external.caBundle }}
{{- if or (and (eq . "redis") (include "hc.redis.tls" $.root)) (and (not $v.enabled) (or $ca.secretName $ca.configMapName)) }}
- name: {{ . }}-ca
  mountPath: /etc/hybrid-catalog/{{ . }}-ca
  readOnly: true
{{- end }}
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

{{/*
NetworkPolicy pieces (networkpolicies.yaml). Each renders YAML that the caller
parses back (fromYaml/fromYamlArray) into its rule lists.
*/}}
{{/* Peers: this release's pods of some components (dict "root" $ "components" (list ...)). */}}
{{- define "hc.np.pods" -}}
- podSelector:
    matchExpressions:
      - {key: app.kubernetes.io/name, operator: In, values: [{{ include "hc.name" .root | quote }}]}
      - {key: app.kubernetes.io/instance, operator: In, values: [{{ .root.Release.Name | quote }}]}
      - {key: app.kubernetes.io/component, operator: In, values: {{ toJson .components }}}
{{- end -}}

{{/* Peer: Prometheus, as networkPolicy.prometheus selects it. */}}
{{- define "hc.np.prometheus" -}}
{{- $p := .Values.networkPolicy.prometheus -}}
- namespaceSelector:
    matchLabels: {{ toJson ($p.namespaceSelector | default dict) }}
  podSelector:
    matchLabels: {{ toJson ($p.podSelector | default dict) }}
{{- end -}}

{{- define "hc.np.cidrs" -}}
{{- range . }}
- ipBlock:
    cidr: {{ . | quote }}
{{- end }}
{{- end -}}

{{- define "hc.np.ports" -}}
{{- range . }}
- {port: {{ . }}, protocol: TCP}
{{- end }}
{{- end -}}

{{/* Egress rule to Redis: the in-cluster pods, or where the external one is. */}}
{{- define "hc.np.redisEgress" -}}
{{- if .Values.redis.enabled -}}
to: {{ include "hc.np.pods" (dict "root" . "components" (list "redis")) | fromYamlArray | toJson }}
ports: [{port: {{ .Values.redis.port }}, protocol: TCP}{{ if include "hc.redis.sentinel" . }}, {port: {{ .Values.redis.sentinel.port }}, protocol: TCP}{{ end }}]
{{- else -}}
to: {{ include "hc.np.cidrs" .Values.networkPolicy.externalRedis.cidrs | fromYamlArray | toJson }}
ports: {{ include "hc.np.ports" .Values.networkPolicy.externalRedis.ports | fromYamlArray | toJson }}
{{- end -}}
{{- end -}}

{{- define "hc.np.postgresqlEgress" -}}
{{- if .Values.postgresql.enabled -}}
to: {{ include "hc.np.pods" (dict "root" . "components" (list "postgresql")) | fromYamlArray | toJson }}
ports: [{port: {{ .Values.postgresql.port }}, protocol: TCP}]
{{- else -}}
to: {{ include "hc.np.cidrs" .Values.networkPolicy.externalPostgresql.cidrs | fromYamlArray | toJson }}
ports: {{ include "hc.np.ports" .Values.networkPolicy.externalPostgresql.ports | fromYamlArray | toJson }}
{{- end -}}
{{- end -}}
