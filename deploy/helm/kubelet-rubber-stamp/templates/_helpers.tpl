{{/*
Labels of an object's metadata: its component name (omitted when empty: the cluster-wide
RBAC objects carry only part-of, as in deploy/base), part-of, and commonLabels.
Call with (dict "name" "rubber-stamp-approver" "root" $).
*/}}
{{- define "rubber-stamp.labels" -}}
{{ with .name }}app.kubernetes.io/name: {{ . }}
{{ end -}}
app.kubernetes.io/part-of: kubelet-rubber-stamp
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
An image reference: repository@digest when a digest is set, else repository:tag, the tag
defaulting to the chart's appVersion. Call with (dict "image" .Values.approver.image "root" $).
*/}}
{{- define "rubber-stamp.image" -}}
{{- if .image.digest -}}
{{ .image.repository }}@{{ .image.digest }}
{{- else -}}
{{ .image.repository }}:{{ .image.tag | default .root.Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/*
The policy ConfigMap's data.
*/}}
{{- define "rubber-stamp.policyData" -}}
{{- dict "policy.yaml" .Values.policy | toYaml }}
{{- end }}

{{/*
The policy ConfigMap's name: rubber-stamp-policy-<hash>, the hash kustomize's
configMapGenerator gives the same data (sigs.k8s.io/kustomize/api/hasher): the first ten
hex digits of the SHA-256 of the JSON {"data":…,"kind":"ConfigMap","name":""} with
0, 1, 3, a, e spelled g, h, k, m, t. (kustomize looks the name up under the path
"metadata/name" as one key, so the name it hashes is empty.) The same policy thus gets the
same name from the chart and from deploy/, and a changed policy a new name, which rolls
the approver.
*/}}
{{- define "rubber-stamp.policyConfigMapName" -}}
{{- $encoded := dict "kind" "ConfigMap" "name" "" "data" (dict "policy.yaml" .Values.policy) | toJson -}}
{{- $hash := $encoded | sha256sum | trunc 10 | replace "0" "g" | replace "1" "h" | replace "3" "k" | replace "a" "m" | replace "e" "t" -}}
rubber-stamp-policy-{{ $hash }}
{{- end }}

{{/*
The --agent-identity flag of the approver.
*/}}
{{- define "rubber-stamp.approverIdentities" -}}
{{- if eq .Values.agentIdentity "kubelet-cert" -}}
kubelet-cert
{{- else -}}
token,kubelet-cert
{{- end -}}
{{- end }}
