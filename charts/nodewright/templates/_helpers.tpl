{{- define "nodewright.labels" -}}
app.kubernetes.io/name: nodewright
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "nodewright.selector" -}}
app.kubernetes.io/name: nodewright
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "nodewright.serviceAccount" -}}
{{ .Values.serviceAccount.name | default "nodewright" }}
{{- end -}}

{{- define "nodewright.config" -}}
clusterName: {{ required "controller.clusterName is required" .Values.controller.clusterName | quote }}
nodeClass: {{ .Values.controller.nodeClass | quote }}
{{- with .Values.controller.interruptionQueueUrl }}
interruptionQueueUrl: {{ . | quote }}
{{- end }}
rebalanceActionable: {{ .Values.controller.rebalanceActionable }}
intervalSeconds: {{ .Values.controller.intervalSeconds | int }}
leaseName: {{ .Values.controller.leaseName | quote }}
leaseDurationSeconds: {{ .Values.controller.leaseDurationSeconds | int }}
garbageCollectionGraceSeconds: {{ .Values.controller.garbageCollectionGraceSeconds | int }}
{{- if .Values.commitments }}
commitments: /etc/nodewright/commitments.yaml
{{- end }}
{{- if .Values.prices }}
prices: /etc/nodewright/prices.yaml
{{- end }}
{{- end -}}
