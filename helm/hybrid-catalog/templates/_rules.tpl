{{/*
The Prometheus rule groups, as a plain rules file body ("groups: ...").
prometheusrule.yaml puts it in a PrometheusRule; tests/chart renders it to a
file for `promtool check rules` and `promtool test rules`.
Only DESIGN.md's metric names are used; per-policy staleness budgets come
from .Values.policies as the recording rule hybridcache:policy_max_staleness_seconds,
labelled policy="<namespace>/<name>" as the operator labels its metrics.
*/}}

{{/* "10m" -> "10 * 60" (a PromQL number expression); schema allows <n>(ms|s|m|h|d). */}}
{{- define "hc.durationExpr" -}}
{{- $n := regexFind "^[0-9]+(\\.[0-9]+)?" . -}}
{{- $unit := trimPrefix $n . -}}
{{- $mult := dict "ms" "0.001" "s" "1" "m" "60" "h" "3600" "d" "86400" -}}
{{- printf "%s * %s" $n (required (printf "bad duration %q" .) (get $mult $unit)) -}}
{{- end -}}

{{- define "hc.prometheusRules" -}}
{{- $r := .Values.monitoring.prometheusRule -}}
groups:
  - name: hybridcache.budgets
    rules:
      {{- range .Values.policies.items }}
      {{- if .maxStaleness }}
      - record: hybridcache:policy_max_staleness_seconds
        expr: vector({{ include "hc.durationExpr" .maxStaleness }})
        labels:
          policy: {{ printf "%s/%s" $.Release.Namespace .name | quote }}
          data_type: {{ .dataType | quote }}
          strategy: {{ .strategy | quote }}
      {{- end }}
      {{- end }}
      - record: hybridcache:backplane_lag_budget_seconds
        expr: vector({{ $r.backplaneLagBudgetSeconds }})
  - name: hybridcache.alerts
    rules:
      - alert: HybridCacheBackplaneLagHigh
        expr: |
          histogram_quantile(0.99, sum by (pod, le) (rate(hybridcache_backplane_lag_seconds_bucket[5m])))
            > {{ $r.backplaneLagBudgetSeconds }}
        for: 5m
        labels:
          severity: warning
        annotations:
          summary: "Backplane lag p99 on {{`{{ $labels.pod }}`}} is over budget"
          description: "p99 invalidation delivery lag is {{`{{ $value | humanizeDuration }}`}} (budget {{ $r.backplaneLagBudgetSeconds }}s): replicas serve stale L1 entries for that long after a write."
      - alert: HybridCacheBackplaneDisconnected
        expr: hybridcache_backplane_connected == 0
        for: 1m
        labels:
          severity: warning
        annotations:
          summary: "{{`{{ $labels.pod }}`}} is not subscribed to the backplane"
          description: "A replica without the backplane misses invalidations; it flushes its L1 when it resubscribes."
      - alert: HybridCacheReplicasOutOfSync
        expr: |
          cache_operator_replicas_in_sync
            < on() group_left() sum(hybridcache_backplane_connected)
        for: 2m
        labels:
          severity: warning
        annotations:
          summary: "Policy {{`{{ $labels.policy }}`}}: only {{`{{ $value }}`}} replicas applied the current generation"
          description: "Some connected catalog replicas have not acknowledged the policy's current generation (kubectl get cip shows applied/total)."
      - alert: HybridCacheL1HitRatioCollapse
        expr: |
          (
            sum by (data_type) (rate(hybridcache_requests_total{layer="l1", result="hit"}[5m]))
              / sum by (data_type) (rate(hybridcache_requests_total{layer="l1"}[5m]))
          ) < {{ $r.l1HitRatioMin }}
          and sum by (data_type) (rate(hybridcache_requests_total{layer="l1"}[5m])) > {{ $r.l1MinRequestRate }}
        for: 10m
        labels:
          severity: warning
        annotations:
          summary: "L1 hit ratio for {{`{{ $labels.data_type }}`}} collapsed to {{`{{ $value | humanizePercentage }}`}}"
          description: "Most reads miss the in-process cache: look for invalidation storms (hybridcache_invalidations_total) or a too short localExpiration."
      - alert: HybridCacheRedisErrors
        expr: sum by (pod) (rate(hybridcache_l2_errors_total[5m])) > 0
        for: 5m
        labels:
          severity: warning
        annotations:
          summary: "{{`{{ $labels.pod }}`}} is failing to reach Redis (L2)"
          description: "{{`{{ $value | humanize }}`}} L2 errors/s: reads fall through to the database and invalidations may not be shared."
      - alert: HybridCacheStalenessOverBudget
        expr: |
          hybridcache:policy_max_staleness_seconds
            < on() group_left() max(cache_operator_backplane_lag_seconds)
        for: 2m
        labels:
          severity: critical
        annotations:
          summary: "Policy {{`{{ $labels.policy }}`}} ({{`{{ $labels.data_type }}`}}) misses its maxStaleness"
          description: "The slowest replica's measured backplane lag is over the policy's staleness budget of {{`{{ $value | humanizeDuration }}`}}."
{{- end -}}
