{{/* Chart name, overridable with nameOverride. */}}
{{- define "storyteller.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name of the operator's objects. The release name alone when it already contains the chart
name, so `helm install storyteller` gives "storyteller", not "storyteller-storyteller".
*/}}
{{- define "storyteller.fullname" -}}
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

{{- define "storyteller.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of the operator pod: never change them, a Deployment's selector is immutable. */}}
{{- define "storyteller.selectorLabels" -}}
app.kubernetes.io/name: {{ include "storyteller.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels of every object but the component, which says which part of the release it is. */}}
{{- define "storyteller.commonLabels" -}}
helm.sh/chart: {{ include "storyteller.chart" . }}
app.kubernetes.io/name: {{ include "storyteller.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: storyteller
{{- end }}

{{- define "storyteller.labels" -}}
{{ include "storyteller.commonLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "storyteller.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "storyteller.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image: global.imageRegistry replaces the image's registry; a digest wins over a tag; the tag
defaults to the chart's appVersion.
*/}}
{{- define "storyteller.image" -}}
{{- $img := .Values.operator.image -}}
{{- $registry := default $img.registry (.Values.global).imageRegistry -}}
{{- $name := ternary (printf "%s/%s" $registry $img.repository) $img.repository (ne $registry "") -}}
{{- if $img.digest }}
{{- printf "%s@%s" $name $img.digest }}
{{- else }}
{{- printf "%s:%s" $name (default .Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{/* Pull secrets of every pod of the chart: global.imagePullSecrets, then operator.imagePullSecrets. */}}
{{- define "storyteller.imagePullSecrets" -}}
{{- $secrets := concat ((.Values.global).imagePullSecrets | default list) .Values.operator.imagePullSecrets -}}
{{- with $secrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
What the operator renders for every tenant's worker pods (storyteller_api.contract, checked equal by
tests/unit/test_chart.py): their status port and their managed-by label.
*/}}
{{- define "storyteller.workerStatusPort" -}}
8081
{{- end }}

{{- define "storyteller.workerManagedBy" -}}
storyteller-operator
{{- end }}

{{/*
The operator's rights on tenants and what they own: exactly the resources and verbs storyteller_operator
uses (operator/storyteller_operator/kube.py), in a ClusterRole (all namespaces) or a Role per watched
namespace. Every kind read is listed and watched once into the operator's memory (watch-backed caches,
operator/storyteller_operator/informer.py), children and pods by the managed-by label; get is the
fallback while a cache fills. Children are written with server-side apply (PATCH; creating through apply
also needs create); owner references delete them, so the operator deletes only
what it must: old config revisions, a canary Deployment once it is promoted or rolled back, and the
ScaledObject of a tenant that leaves pool.autoscaler keda.
*/}}
{{- define "storyteller.tenantRules" -}}
# Tenants: watched (the reconciles read the watch's copy); the operator writes only their status.
- apiGroups: ["storyteller.dev"]
  resources: ["storytellerdeployments"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["storyteller.dev"]
  resources: ["storytellerdeployments/status"]
  verbs: ["get", "patch"]
# Once per none/keda tenant without spec.replicas: its running size is written there (see plan.py).
- apiGroups: ["storyteller.dev"]
  resources: ["storytellerdeployments/scale"]
  verbs: ["patch"]
# Owner references with blockOwnerDeletion need this where OwnerReferencesPermissionEnforcement is on.
- apiGroups: ["storyteller.dev"]
  resources: ["storytellerdeployments/finalizers"]
  verbs: ["update"]
# ConfigMaps: one immutable revision per worker config; list + delete remove the revisions no pod mounts.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["serviceaccounts", "services"]
  verbs: ["get", "list", "watch", "create", "patch"]
# patch: a repeated Event (same object, reason and message) raises the count of the one posted before.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
# The worker pods are listed to ask each one (its :8081/worker status) how many sessions it runs and which
# config revision it mounts. patch: before the pool shrinks, each pod's controller.kubernetes.io/
# pod-deletion-cost is set to its sessions, so the ReplicaSet removes idle pods first and no call is cut
# (the only pod field the operator writes; it never creates or deletes pods).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "patch"]
# Deployments are watched too: their status becomes the tenant's readiness. delete: a canary Deployment
# goes once its revision is promoted or rolled back (its pods drain like any scale-in).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# A pool whose pods must not roll (a child they need was refused, a Secret not allowed) is still resized.
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Only used when the Prometheus Operator's CRDs are installed.
- apiGroups: ["monitoring.coreos.com"]
  resources: ["podmonitors"]
  verbs: ["get", "create", "patch"]
# Only used for tenants with pool.autoscaler keda, on clusters that run KEDA. delete: a tenant that
# leaves keda must not keep an HPA writing its spec.replicas.
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["get", "create", "patch", "delete"]
{{- end }}

{{/* The Lease the operator replicas elect their leader on, in the release namespace. */}}
{{- define "storyteller.leaseName" -}}
{{- printf "%s-leader" (include "storyteller.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The operator's rights on its leader-election Lease (operator/storyteller_operator/leadership.py): read and
renew that one Lease by name. create cannot be limited to a name (RBAC's resourceNames never match a create:
its URL names no object, and the new object's name is not known when the request is authorized), so it is
granted on all leases of the release namespace; the operator creates only its own, once.
*/}}
{{- define "storyteller.leaseRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ include "storyteller.leaseName" . | quote }}]
  verbs: ["get", "update"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
{{- end }}

{{/* Secret metadata: whether the referenced Secrets exist, and their resourceVersion (a rotated key rolls
     the pool). The operator lists and watches them as PartialObjectMetadata: key material never reaches
     it. RBAC cannot grant metadata alone, so these verbs would allow reading the keys too. */}}
{{- define "storyteller.secretRules" -}}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
{{- end }}
