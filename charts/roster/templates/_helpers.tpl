{{- define "roster.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "roster.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
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
