{{/*
The Prometheus rule groups, as a plain rules file body ("groups: ...").
prometheusrule.yaml puts it in a PrometheusRule; tests/chart renders it to a
file for `promtool check rules` and `promtool test rules`.

Only the metric names of docs/design.md are used. Per-policy facts (staleness budget,
Ready, expected replicas) come from the operator's own metrics, so a policy
created with kubectl is alerted on like the chart's. Every expression keeps
`namespace` and `job` (what the ServiceMonitors give each target), so two
releases scraped by one Prometheus never mix; every alert carries a
runbook_url into docs/runbooks.md (the anchor is the alert name, lower-cased).
*/}}

{{- define "hc.runbook" -}}
{{- printf "%s#%s" .root.Values.monitoring.prometheusRule.runbookBaseUrl (lower .alert) -}}
{{- end -}}

{{/* The error budget (1 - objective) as a PromQL number expression. */}}
{{- define "hc.budgetExpr" -}}
{{- printf "(1 - %v)" . -}}
{{- end -}}

{{/* Recording rules for one ratio over the windows the burn-rate alerts use. */}}
{{- define "hc.ratioRules" -}}
{{- range list "5m" "30m" "1h" "6h" }}
- record: {{ $.name }}:ratio_rate{{ . }}
  expr: |
    sum by (namespace, job) (rate({{ $.errors }}[{{ . }}]))
      / sum by (namespace, job) (rate({{ $.total }}[{{ . }}]))
{{- end }}
{{- end -}}

{{/*
Multi-window multi-burn-rate alerts on one ratio (the SRE workbook's pair):
a fast burn (14.4x the budget over 1h, confirmed over 5m: 2 % of a 30-day
budget in an hour) pages; a slow burn (6x over 6h, confirmed over 30m) warns.
*/}}
{{- define "hc.burnAlerts" -}}
{{- $budget := include "hc.budgetExpr" .objective -}}
{{- range list (dict "speed" "Fast" "long" "1h" "short" "5m" "factor" "14.4" "severity" "critical" "for" "2m")
               (dict "speed" "Slow" "long" "6h" "short" "30m" "factor" "6" "severity" "warning" "for" "15m") }}
- alert: {{ $.alert }}{{ .speed }}Burn
  expr: |
    {{ $.name }}:ratio_rate{{ .long }} > ({{ .factor }} * {{ $budget }})
      and {{ $.name }}:ratio_rate{{ .short }} > ({{ .factor }} * {{ $budget }})
  for: {{ .for }}
  labels:
    severity: {{ .severity }}
  annotations:
    summary: "{{ $.what }} in {{`{{ $labels.namespace }}`}}/{{`{{ $labels.job }}`}} burn the error budget {{ .factor }}x too fast"
    description: "{{`{{ $value | humanizePercentage }}`}} of {{ $.of }} over {{ .long }} (objective {{ $.objective }}); at this rate the 30-day budget lasts {{ if eq .speed "Fast" }}about 2 days{{ else }}about 5 days{{ end }}."
    runbook_url: {{ include "hc.runbook" (dict "root" $.root "alert" (printf "%s%sBurn" $.alert .speed)) | quote }}
{{- end }}
{{- end -}}

{{- define "hc.prometheusRules" -}}
{{- $r := .Values.monitoring.prometheusRule -}}
{{- $stale := dict "root" . "name" "catalog_checker:stale_reads" "errors" "catalog_checker_stale_reads_total" "total" "catalog_checker_reads_total" "alert" "HybridCacheStaleReads" "what" "Stale reads" "of" "the checker's reads were stale beyond maxStaleness" "objective" $r.staleReadsObjective -}}
{{- $unconfirmed := dict "root" . "name" "catalog:invalidations_unconfirmed" "errors" "catalog_invalidation_unconfirmed_total" "total" "catalog_invalidations_total{consistency=\"acknowledged\"}" "alert" "HybridCacheUnconfirmedInvalidations" "what" "Unconfirmed acknowledged invalidations" "of" "acknowledged invalidations were not confirmed by every live replica" "objective" $r.unconfirmedInvalidationsObjective -}}
groups:
  - name: hybridcache.slo
    rules:
      # The chart's lag budget, for the dashboards' threshold line; labelled like
      # the catalog's series so two releases' budgets stay apart.
      - record: hybridcache:backplane_lag_budget_seconds
        expr: vector({{ $r.backplaneLagBudgetSeconds }})
        labels:
          namespace: {{ .Release.Namespace | quote }}
          job: {{ include "hc.componentName" (dict "root" . "component" "catalog") | quote }}
      {{- include "hc.ratioRules" $stale | trim | nindent 6 }}
      {{- include "hc.ratioRules" $unconfirmed | trim | nindent 6 }}
  - name: hybridcache.alerts
    rules:
      - alert: HybridCacheBackplaneLagHigh
        expr: |
          histogram_quantile(0.99,
            sum by (namespace, job, pod, le) (rate(hybridcache_backplane_lag_seconds_bucket[5m])))
            > {{ $r.backplaneLagBudgetSeconds }}
        for: 5m
        labels:
          severity: warning
        annotations:
          summary: "Backplane lag p99 on {{`{{ $labels.namespace }}`}}/{{`{{ $labels.pod }}`}} is over budget"
          description: "p99 invalidation delivery lag is {{`{{ $value | humanizeDuration }}`}} (budget {{ $r.backplaneLagBudgetSeconds }}s): replicas serve stale L1 entries for that long after a write."
          runbook_url: {{ include "hc.runbook" (dict "root" . "alert" "HybridCacheBackplaneLagHigh") | quote }}
      - alert: HybridCacheBackplaneDisconnected
        expr: hybridcache_backplane_connected == 0
        for: 1m
        labels:
          severity: warning
        annotations:
          summary: "{{`{{ $labels.namespace }}`}}/{{`{{ $labels.pod }}`}} is not subscribed to the backplane"
          description: "A replica without the backplane misses invalidations; it flushes its L1 when it resubscribes."
          runbook_url: {{ include "hc.runbook" (dict "root" . "alert" "HybridCacheBackplaneDisconnected") | quote }}
      - alert: HybridCacheReplicasOutOfSync
        expr: cache_operator_replicas_in_sync < cache_operator_expected_replicas
        for: 2m
        labels:
          severity: warning
        annotations:
          summary: "Policy {{`{{ $labels.policy }}`}}: only {{`{{ $value }}`}} replicas applied the current generation"
          description: "Fewer catalog replicas acknowledged the policy's current generation than the catalog workload should run (kubectl get cip shows in-sync/expected)."
          runbook_url: {{ include "hc.runbook" (dict "root" . "alert" "HybridCacheReplicasOutOfSync") | quote }}
      - alert: HybridCachePolicyNotReady
        expr: cache_operator_policy_ready == 0
        for: 5m
        labels:
          severity: warning
        annotations:
          summary: "Policy {{`{{ $labels.policy }}`}} is not Ready"
          description: "The operator reports the policy's Ready condition False: the catalog may not run it (kubectl describe cip shows the reason)."
          runbook_url: {{ include "hc.runbook" (dict "root" . "alert" "HybridCachePolicyNotReady") | quote }}
      - alert: HybridCacheL1HitRatioCollapse
        expr: |
          (
            sum by (namespace, job, data_type) (rate(hybridcache_requests_total{layer="l1", result="hit"}[5m]))
              / sum by (namespace, job, data_type) (rate(hybridcache_requests_total{layer="l1"}[5m]))
          ) < {{ $r.l1HitRatioMin }}
          and sum by (namespace, job, data_type) (rate(hybridcache_requests_total{layer="l1"}[5m])) > {{ $r.l1MinRequestRate }}
        for: 10m
        labels:
          severity: warning
        annotations:
          summary: "L1 hit ratio for {{`{{ $labels.data_type }}`}} in {{`{{ $labels.namespace }}`}} collapsed to {{`{{ $value | humanizePercentage }}`}}"
          description: "Most reads miss the in-process cache: look for invalidation storms (hybridcache_invalidations_total) or a too short localExpiration."
          runbook_url: {{ include "hc.runbook" (dict "root" . "alert" "HybridCacheL1HitRatioCollapse") | quote }}
      - alert: HybridCacheRedisErrors
        expr: sum by (namespace, job, pod) (rate(hybridcache_l2_errors_total[5m])) > 0
        for: 5m
        labels:
          severity: warning
        annotations:
          summary: "{{`{{ $labels.namespace }}`}}/{{`{{ $labels.pod }}`}} is failing to reach Redis (L2)"
          description: "{{`{{ $value | humanize }}`}} L2 errors/s: reads fall through to the database and invalidations may not be shared."
          runbook_url: {{ include "hc.runbook" (dict "root" . "alert" "HybridCacheRedisErrors") | quote }}
      - alert: HybridCacheStalenessOverBudget
        expr: |
          cache_operator_policy_max_staleness_seconds
            < on (namespace, job) group_left ()
              max by (namespace, job) (cache_operator_backplane_lag_p99_seconds)
        for: 2m
        labels:
          severity: critical
        annotations:
          summary: "Policy {{`{{ $labels.policy }}`}} ({{`{{ $labels.data_type }}`}}) misses its maxStaleness"
          description: "The backplane lag p99 the operator measures is over the policy's staleness budget of {{`{{ $value | humanizeDuration }}`}}."
          runbook_url: {{ include "hc.runbook" (dict "root" . "alert" "HybridCacheStalenessOverBudget") | quote }}
      {{- include "hc.burnAlerts" $stale | trim | nindent 6 }}
      {{- include "hc.burnAlerts" $unconfirmed | trim | nindent 6 }}
{{- end -}}
