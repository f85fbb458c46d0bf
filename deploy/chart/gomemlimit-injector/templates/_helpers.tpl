{{/* Chart name, overridable with nameOverride. */}}
{{- define "gomemlimit-injector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: fullnameOverride, else the release name when it contains the
chart name, else <release>-<chart>. Truncated to 63 characters (DNS label).
*/}}
{{- define "gomemlimit-injector.fullname" -}}
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

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "gomemlimit-injector.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "gomemlimit-injector.labels" -}}
helm.sh/chart: {{ include "gomemlimit-injector.chart" . }}
{{ include "gomemlimit-injector.selectorLabels" . }}
app.kubernetes.io/version: {{ include "gomemlimit-injector.imageTag" . | trunc 63 | quote }}
app.kubernetes.io/component: admission-webhook
app.kubernetes.io/part-of: gomemlimit-injector
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the webhook's pods (immutable in the Deployment selector). */}}
{{- define "gomemlimit-injector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gomemlimit-injector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the pods run as. */}}
{{- define "gomemlimit-injector.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gomemlimit-injector.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image tag: image.tag, else the chart's appVersion. */}}
{{- define "gomemlimit-injector.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/* Image reference: repository@digest when a digest is given, else repository:tag. */}}
{{- define "gomemlimit-injector.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "gomemlimit-injector.imageTag" .) }}
{{- end }}
{{- end }}

{{/* Names of the objects, one place for all templates. */}}
{{- define "gomemlimit-injector.serviceName" -}}
{{- include "gomemlimit-injector.fullname" . }}
{{- end }}

{{- define "gomemlimit-injector.webhookConfigurationName" -}}
{{- include "gomemlimit-injector.fullname" . }}
{{- end }}

{{/*
A name derived from the fullname: "<fullname>-<suffix>", cut to 63 characters.
  include "gomemlimit-injector.suffixedName" (dict "root" . "suffix" "policy")
*/}}
{{- define "gomemlimit-injector.suffixedName" -}}
{{- printf "%s-%s" (include "gomemlimit-injector.fullname" .root) .suffix | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The namespaces never sent to the webhook with selection=clusterWide, comma-separated: the
system namespaces, the release namespace and excludeNamespaces. The webhook configuration's
namespaceSelector and the background audit (--exclude-namespaces) both take them from here.
*/}}
{{- define "gomemlimit-injector.excludedNamespaces" -}}
{{- concat (list "kube-system" "kube-public" "kube-node-lease" .Release.Namespace) .Values.excludeNamespaces | uniq | join "," }}
{{- end }}

{{/*
"true" when the background audit runs (the webhook engine and an interval other than 0),
else empty. It runs in the webhook's replicas: engine=native has none.
*/}}
{{- define "gomemlimit-injector.backgroundAudit" -}}
{{- if and (eq .Values.engine "webhook") (not (regexMatch "^0+(ms|s|m|h)?$" (toString .Values.backgroundAudit.interval))) }}true{{ end }}
{{- end }}

{{/* The Lease that decides which replica runs the background audit. */}}
{{- define "gomemlimit-injector.backgroundAuditLeaseName" -}}
{{- include "gomemlimit-injector.suffixedName" (dict "root" . "suffix" "background-audit") }}
{{- end }}

{{- define "gomemlimit-injector.policyConfigMapName" -}}
{{- include "gomemlimit-injector.suffixedName" (dict "root" . "suffix" "policy") }}
{{- end }}

{{/* cert-manager objects. */}}
{{- define "gomemlimit-injector.selfSignedIssuerName" -}}
{{- include "gomemlimit-injector.suffixedName" (dict "root" . "suffix" "selfsigned") }}
{{- end }}

{{/* The chart's CA: its Certificate, the Secret holding it and the Issuer that signs with it. */}}
{{- define "gomemlimit-injector.caName" -}}
{{- include "gomemlimit-injector.suffixedName" (dict "root" . "suffix" "ca") }}
{{- end }}

{{- define "gomemlimit-injector.servingCertificateName" -}}
{{- include "gomemlimit-injector.suffixedName" (dict "root" . "suffix" "serving") }}
{{- end }}

{{/* The Secret with the serving key pair: cert-manager's target or the self-managed one. */}}
{{- define "gomemlimit-injector.tlsSecretName" -}}
{{- if eq .Values.certificates.source "selfManaged" }}
{{- default (include "gomemlimit-injector.suffixedName" (dict "root" . "suffix" "certs")) .Values.certificates.selfManaged.secretName }}
{{- else }}
{{- include "gomemlimit-injector.suffixedName" (dict "root" . "suffix" "tls") }}
{{- end }}
{{- end }}

{{/* The in-cluster DNS names of the Service, as a YAML list. */}}
{{- define "gomemlimit-injector.dnsNames" -}}
{{- $svc := include "gomemlimit-injector.serviceName" . }}
{{- $ns := .Release.Namespace }}
- {{ $svc }}
- {{ printf "%s.%s" $svc $ns }}
- {{ printf "%s.%s.svc" $svc $ns }}
- {{ printf "%s.%s.svc.cluster.local" $svc $ns }}
{{- end }}

{{/*
The namespaces the API server sends to the webhook (or applies the native policies in):
labelled gomemlimit.io/inject=enabled (optIn), or every namespace but those labelled
disabled, the system ones, the release namespace and excludeNamespaces (clusterWide).
*/}}
{{- define "gomemlimit-injector.namespaceSelector" -}}
{{- if eq .Values.selection "clusterWide" -}}
matchExpressions:
  - key: gomemlimit.io/inject
    operator: NotIn
    values: ["disabled"]
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values:
      {{- range splitList "," (include "gomemlimit-injector.excludedNamespaces" .) }}
      - {{ . }}
      {{- end }}
{{- else -}}
matchLabels:
  gomemlimit.io/inject: enabled
{{- end }}
{{- end }}

{{/*
engine=native: what every policy's spec starts with: CREATE of pods and, for the validating
policies (resize true), UPDATE of pods/resize. Called with (dict "root" . "resize" BOOL).
*/}}
{{- define "gomemlimit-injector.native.policySpec" -}}
failurePolicy: {{ .root.Values.native.failurePolicy }}
matchConstraints:
  matchPolicy: Equivalent
  resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE"]
      resources: ["pods"]
      scope: Namespaced
    {{- if .resize }}
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["UPDATE"]
      resources: ["pods/resize"]
      scope: Namespaced
    {{- end }}
matchConditions:
  {{- include "gomemlimit-injector.native.matchConditions" .root | nindent 2 }}
{{- end }}

{{/* engine=native: the selection of every binding, as the webhook configuration's. */}}
{{- define "gomemlimit-injector.native.matchResources" -}}
matchResources:
  namespaceSelector:
    {{- include "gomemlimit-injector.namespaceSelector" . | nindent 4 }}
  objectSelector:
    matchExpressions:
      - key: gomemlimit.io/inject
        operator: NotIn
        values: ["disabled"]
{{- end }}

{{/*
Checks of combinations a JSON schema cannot express; `helm template`, `helm install` and
`helm lint` stop with the message. The webhook checks the policy again at start-up.
*/}}
{{- define "gomemlimit-injector.validate" -}}
{{- $p := .Values.policy }}
{{- if or (lt (int $p.percent) (int $p.minPercent)) (gt (int $p.percent) (int $p.maxPercent)) }}
{{- fail (printf "policy.percent=%v must lie within [policy.minPercent=%v, policy.maxPercent=%v]" $p.percent $p.minPercent $p.maxPercent) }}
{{- end }}
{{- if gt (int $p.minPercent) (int $p.maxPercent) }}
{{- fail (printf "policy.minPercent=%v is above policy.maxPercent=%v" $p.minPercent $p.maxPercent) }}
{{- end }}
{{- if and (eq $p.missingLimit "default") (not $p.defaultMemory) }}
{{- fail "policy.missingLimit=default needs policy.defaultMemory (e.g. 256Mi)" }}
{{- end }}
{{- if kindIs "bool" $p.gogc }}
{{- fail "policy.gogc is a boolean: quote it (gogc: \"off\"; with --set use --set-string policy.gogc=off)" }}
{{- end }}
{{- $gogc := toString $p.gogc }}
{{- if not (or (eq $gogc "off") (eq $gogc "keep") (regexMatch "^[0-9]{1,6}$" $gogc)) }}
{{- fail (printf "policy.gogc=%q: allowed values are off, keep or an integer 0..999999" $gogc) }}
{{- end }}
{{- if and (eq .Values.engine "native") (or .Values.metrics.serviceMonitor.enabled .Values.metrics.prometheusRule.enabled .Values.metrics.dashboard.enabled) }}
{{- fail "metrics.* watch the webhook's replicas: engine=native has none (the API server's own apiserver_mutating_admission_policy_* and apiserver_validating_admission_policy_* metrics count the policies)" }}
{{- end }}
{{- if and (eq .Values.certificates.source "certManager") .Values.certificates.certManager.issuerRef (not .Values.certificates.certManager.issuerRef.name) }}
{{- fail "certificates.certManager.issuerRef needs a name" }}
{{- end }}
{{- end }}
