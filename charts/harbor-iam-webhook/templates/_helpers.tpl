{{/*
Names. With release name "harbor-iam-webhook" every object has the name
manifests/ gives it.
*/}}
{{- define "harbor-iam-webhook.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "harbor-iam-webhook.fullname" -}}
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

{{/* The Secret holding tls.crt, tls.key (and ca.crt) that the pods mount. */}}
{{- define "harbor-iam-webhook.tlsSecretName" -}}
{{- if and .Values.tls.existingSecret (not .Values.certManager.enabled) }}
{{- .Values.tls.existingSecret }}
{{- else }}
{{- printf "%s-tls" (include "harbor-iam-webhook.fullname" .) }}
{{- end }}
{{- end }}

{{/* The Service name, and the names the serving certificate must cover. */}}
{{- define "harbor-iam-webhook.dnsNames" -}}
{{- $svc := include "harbor-iam-webhook.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $names := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) }}
{{- toYaml (concat $names .Values.tls.extraDNSNames) }}
{{- end }}

{{/* Labels of every object: the two manifests/ sets, Helm's own, then commonLabels (which cannot replace those). */}}
{{- define "harbor-iam-webhook.labels" -}}
{{- $labels := dict
  "app.kubernetes.io/name" (include "harbor-iam-webhook.name" .)
  "app.kubernetes.io/part-of" "harbor-iam-webhook"
  "app.kubernetes.io/instance" .Release.Name
  "app.kubernetes.io/managed-by" .Release.Service
  "app.kubernetes.io/version" .Chart.AppVersion
  "helm.sh/chart" (printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-") }}
{{- toYaml (merge $labels .Values.commonLabels) }}
{{- end }}

{{/* Labels of the pods: the selector's, part-of, then commonLabels and podLabels (which cannot replace those). */}}
{{- define "harbor-iam-webhook.podLabels" -}}
{{- $labels := include "harbor-iam-webhook.selectorLabels" . | fromYaml }}
{{- $_ := set $labels "app.kubernetes.io/part-of" "harbor-iam-webhook" }}
{{- toYaml (merge $labels .Values.commonLabels .Values.podLabels) }}
{{- end }}

{{/* The Deployment's selector (immutable: the same as manifests/). */}}
{{- define "harbor-iam-webhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "harbor-iam-webhook.name" . }}
app.kubernetes.io/component: webhook
{{- end }}

{{/*
metadata of an object; args: (list $ name namespaced [annotations]). Namespaced
objects go to the release namespace. Annotations: the given ones, then
commonAnnotations.
*/}}
{{- define "harbor-iam-webhook.metadata" -}}
{{- $ := index . 0 -}}
name: {{ index . 1 }}
{{- if index . 2 }}
namespace: {{ $.Release.Namespace }}
{{- end }}
labels:
  {{- include "harbor-iam-webhook.labels" $ | nindent 2 }}
{{- $annotations := dict }}
{{- if gt (len .) 3 }}{{ $annotations = merge $annotations (index . 3) }}{{ end }}
{{- $annotations = merge $annotations $.Values.commonAnnotations }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The image reference. */}}
{{- define "harbor-iam-webhook.image" -}}
{{- $ref := .Values.image.repository }}
{{- with .Values.image.tag }}{{ $ref = printf "%s:%s" $ref . }}{{ end }}
{{- with .Values.image.digest }}{{ $ref = printf "%s@%s" $ref . }}{{ end }}
{{- $ref }}
{{- end }}

{{/* The region, required: rendering stops here without it. */}}
{{- define "harbor-iam-webhook.awsRegion" -}}
{{- required "awsRegion is required: the AWS region of your RDS instance, e.g. --set awsRegion=eu-west-1" .Values.awsRegion }}
{{- end }}

{{/* Values that cannot be combined, with the message to fix them. */}}
{{- define "harbor-iam-webhook.validate" -}}
{{- if and .Values.certManager.enabled .Values.tls.existingSecret }}
{{- fail "certManager.enabled and tls.existingSecret exclude each other: cert-manager writes the Secret <fullname>-tls itself" }}
{{- end }}
{{- if and .Values.tls.existingSecret (not .Values.tls.caBundle) }}
{{- fail "tls.existingSecret needs tls.caBundle: the PEM of the CA that signed it, e.g. --set-file tls.caBundle=certs/out/ca-bundle.crt" }}
{{- end }}
{{- if and .Values.tls.caBundle (not .Values.tls.existingSecret) }}
{{- fail "tls.caBundle is only used with tls.existingSecret (the generated and cert-manager certificates bring their own CA)" }}
{{- end }}
{{- end }}

{{/* clientConfig of a webhook; args: (list $ path caBundle). */}}
{{- define "harbor-iam-webhook.clientConfig" -}}
{{- $ := index . 0 -}}
{{- if $.Values.webhookURL }}
url: {{ printf "%s%s" (trimSuffix "/" $.Values.webhookURL) (index . 1) }}
{{- else }}
service:
  name: {{ include "harbor-iam-webhook.fullname" $ }}
  namespace: {{ $.Release.Namespace }}
  path: {{ index . 1 }}
  port: 443
{{- end }}
{{- with index . 2 }}
caBundle: {{ . }}
{{- end }}
{{- end }}

{{/* The namespaceSelector of both webhooks: the opt-in label unless given, never the release namespace. */}}
{{- define "harbor-iam-webhook.namespaceSelector" -}}
{{- $selector := deepCopy (default (dict "matchLabels" (dict "harbor-iam-webhook/inject" "enabled")) .Values.webhook.namespaceSelector) }}
{{- $exclude := dict "key" "kubernetes.io/metadata.name" "operator" "NotIn" "values" (list .Release.Namespace) }}
{{- $_ := set $selector "matchExpressions" (append (default (list) $selector.matchExpressions) $exclude) }}
{{- toYaml $selector }}
{{- end }}
