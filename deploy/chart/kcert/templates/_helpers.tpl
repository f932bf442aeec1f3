{{/*
The Deployment's controller flags (approver and signer). The webhook's DaemonSet does not take
them: it runs `--controllers=webhook` with its own few flags (templates/webhook.yaml).
*/}}
{{- define "kcert.controllerArgs" -}}
- --signer-name={{ join "," .Values.signerNames }}
{{- if .Values.pkcs11.enabled }}
{{- if .Values.pkcs11.caCertConfigMap }}
- --ca-cert=/etc/kcert/ca/ca.crt
{{- end }}
- --ca-pkcs11-module={{ .Values.pkcs11.module }}
- --ca-pkcs11-token={{ .Values.pkcs11.token }}
- --ca-pkcs11-key-label={{ .Values.pkcs11.keyLabel }}
- --ca-pkcs11-pin-file=/etc/kcert/pin/pin
{{- else }}
- --ca-secret={{ .Release.Namespace }}/{{ .Values.caSecret }}
{{- end }}
- --max-duration={{ .Values.maxDuration }}
- --log-format={{ .Values.logFormat }}
{{- if .Values.leaderElection.enabled }}
- --leader-elect
{{- end }}
{{- if .Values.clusterTrustBundles }}
- --cluster-trust-bundles
{{- end }}
{{- if .Values.policy }}
- --policy-file=/etc/kcert/policy/policy.yaml
{{- end }}
{{- if .Values.kubelet.serving }}
- --kubelet-serving
{{- end }}
{{- if .Values.kubelet.client }}
- --kubelet-client
{{- end }}
{{- if .Values.kubelet.approveOnly }}
- --kubelet-approve-only
{{- end }}
{{- if .Values.kubelet.sign }}
- --kubelet-sign
{{- end }}
{{- range .Values.kubelet.servingDnsSuffixes }}
- --kubelet-serving-dns-suffix={{ . }}
{{- end }}
{{- range .Values.kubelet.servingCidrs }}
- --kubelet-serving-cidr={{ . }}
{{- end }}
{{- range .Values.kubelet.reservedCidrs }}
- --kubelet-serving-reserved-cidr={{ . }}
{{- end }}
{{- range .Values.kubelet.reservedNames }}
- --kubelet-serving-reserved-name={{ . }}
{{- end }}
{{- if .Values.kubelet.allowSharedAddresses }}
- --kubelet-serving-allow-shared-addresses
{{- end }}
{{- end }}

