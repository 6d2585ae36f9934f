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

{{/* The operator image: a digest wins over a tag; the tag defaults to the chart's appVersion. */}}
{{- define "storyteller.image" -}}
{{- $img := .Values.operator.image -}}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}
