{{/* The chart's name, or nameOverride. */}}
{{- define "roster.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The release's full name: fullnameOverride, else the release name (when it already holds the chart's name),
else <release>-<name>; at most 63 characters, the longest Kubernetes name label.
*/}}
{{- define "roster.fullname" -}}
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

{{/*
The full name with a suffix ("metrics" gives <fullname>-metrics), the full name shortened so that the whole
stays within 63 characters for every release name Helm accepts. Call with (list . "suffix").
*/}}
{{- define "roster.suffixedName" -}}
{{- $root := index . 0 -}}
{{- $suffix := index . 1 -}}
{{- $base := include "roster.fullname" $root | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" -}}
{{- printf "%s-%s" $base $suffix -}}
{{- end -}}

{{- define "roster.labels" -}}
app.kubernetes.io/name: {{ include "roster.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "roster.selectorLabels" -}}
app.kubernetes.io/name: {{ include "roster.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "roster.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "roster.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Lease the replicas elect a leader with: one per release, so two releases never share one. */}}
{{- define "roster.leaseName" -}}
{{- include "roster.fullname" . -}}
{{- end -}}

{{/*
PodDisruptionBudget's API: policy/v1 where the cluster serves it (1.21+), policy/v1beta1 before. Against a
cluster (helm install/upgrade) the discovered APIVersions decide; offline (helm template) the kube version
decides, so `helm template` renders policy/v1 by default and policy/v1beta1 with --kube-version 1.20.
*/}}
{{- define "roster.pdbApiVersion" -}}
{{- if or (.Capabilities.APIVersions.Has "policy/v1/PodDisruptionBudget") (semverCompare ">=1.21-0" .Capabilities.KubeVersion.Version) -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end -}}
{{- end -}}

{{/*
The rules for what roster watches and writes in the namespaces it manages: exactly the API calls roster
makes (see src/controller, src/write, src/backendset), no wildcards. A ClusterRole holds them when roster
manages every namespace, a Role in that namespace when controller.namespace restricts it.
*/}}
{{- define "roster.namespacedRules" -}}
# The watches (list + watch) that feed roster's caches.
- apiGroups: [""]
  resources: [pods, services]
  verbs: [list, watch]
# Endpoints: read all (hand-made ones are mirrored), write roster's own (create, replace = update, delete).
- apiGroups: [""]
  resources: [endpoints]
  verbs: [list, watch, create, update, delete]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch, create, update, delete]
# Warning Events: kube-runtime's recorder creates one, then patches its series when it repeats.
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
# BackendSets: watched; their status is written with a merge patch on the status subresource.
- apiGroups: [roster.dev]
  resources: [backendsets]
  verbs: [list, watch]
- apiGroups: [roster.dev]
  resources: [backendsets/status]
  verbs: [patch]
# Owner references with blockOwnerDeletion (slices -> Service; Endpoints and slices -> BackendSet): clusters
# running the OwnerReferencesPermissionEnforcement admission plugin require update on the owner's finalizers.
- apiGroups: [""]
  resources: [services/finalizers]
  verbs: [update]
- apiGroups: [roster.dev]
  resources: [backendsets/finalizers]
  verbs: [update]
{{- end -}}

{{/* The image: repository@digest when a digest is given (the tag is then only informative), else repository:tag. */}}
{{- define "roster.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/*
The networks BackendSet probes and backends never reach, beyond the built-in loopback and link-local ones:
controller.probeDenyCIDRs, the Service CIDRs and the pod CIDRs, each with its own flag.
*/}}
{{- define "roster.denyArgs" -}}
{{- range .Values.controller.probeDenyCIDRs }}
- --probe-deny-cidrs={{ . }}
{{- end }}
{{- range .Values.controller.serviceCIDRs }}
- --service-cidr={{ . }}
{{- end }}
{{- range .Values.controller.podCIDRs }}
- --pod-cidr={{ . }}
{{- end }}
{{- end -}}

{{/* The BackendSet controller's flags. */}}
{{- define "roster.backendSetArgs" -}}
- --backendsets={{ .Values.backendSets.enabled }}
- --probe-concurrency={{ .Values.backendSets.probeConcurrency }}
{{- with .Values.backendSets.dnsServer }}
- --dns-server={{ . }}
{{- end }}
- --dns-min-ttl={{ .Values.backendSets.dnsMinTTL }}
- --dns-max-ttl={{ .Values.backendSets.dnsMaxTTL }}
- --dns-failure-grace={{ .Values.backendSets.dnsFailureGrace }}
{{- end -}}

{{/*
topologySpreadConstraints as given; one without a labelSelector gets the pods' selector labels, which are
the chart's to know.
*/}}
{{- define "roster.topologySpreadConstraints" -}}
{{- $constraints := list -}}
{{- range .Values.topologySpreadConstraints -}}
{{- $constraint := deepCopy . -}}
{{- if not (hasKey $constraint "labelSelector") -}}
{{- $_ := set $constraint "labelSelector" (dict "matchLabels" (include "roster.selectorLabels" $ | fromYaml)) -}}
{{- end -}}
{{- $constraints = append $constraints $constraint -}}
{{- end -}}
{{- with $constraints }}{{ toYaml . }}{{ end -}}
{{- end -}}
