{{/* Egress/ingress rule blocks the NetworkPolicies share. */}}

{{- define "nexa.np.dnsEgress" -}}
- to:
    - namespaceSelector:
        {{- toYaml .Values.networkPolicy.dnsNamespaceSelector | nindent 8 }}
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end -}}

{{- define "nexa.np.storageEgress" -}}
{{- if .Values.minio.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "nexa.selectorLabels" (dict "root" . "component" "minio") | nindent 10 }}
  ports:
    - {protocol: TCP, port: {{ .Values.minio.service.port }}}
{{- end }}
{{- if or (not .Values.minio.enabled) (not .Values.postgresql.enabled) }}
{{- if .Values.networkPolicy.externalServiceCIDRs }}
{{- range .Values.networkPolicy.externalServiceCIDRs }}
- to:
    - ipBlock: {cidr: {{ . }}}
{{- end }}
{{- else }}
{{- /* An external database or S3 endpoint with no CIDRs given: any address, or nothing would work. */}}
- to:
    - ipBlock: {cidr: 0.0.0.0/0}
{{- end }}
{{- end }}
{{- end -}}

{{/* Out to the Kubernetes API server: apiServerPorts, at apiServerCIDRs when given. */}}
{{- define "nexa.np.apiServerEgress" -}}
- ports:
    {{- range .Values.networkPolicy.apiServerPorts }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
  {{- with .Values.networkPolicy.apiServerCIDRs }}
  to:
    {{- range . }}
    - ipBlock: {cidr: {{ . }}}
    {{- end }}
  {{- end }}
{{- end -}}

{{- define "nexa.np.metricsIngress" -}}
- from:
    - namespaceSelector:
        {{- toYaml .root.Values.networkPolicy.metricsNamespaceSelector | nindent 8 }}
  ports:
    - {protocol: TCP, port: {{ .port }}}
{{- end -}}
