{{/* Names, labels and the settings every container shares. */}}

{{- define "orchestrator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "orchestrator.fullname" -}}
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

{{- define "orchestrator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "orchestrator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "orchestrator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "orchestrator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "orchestrator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "orchestrator.secretName" -}}
{{- default (include "orchestrator.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{- define "orchestrator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (printf "%s-worker" (include "orchestrator.fullname" .)) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "orchestrator.apiUrl" -}}
{{- if .Values.apiUrl -}}
{{- .Values.apiUrl -}}
{{- else -}}
{{- printf "http://%s-server.%s.svc:%v/api" (include "orchestrator.fullname" .) .Release.Namespace .Values.server.service.port -}}
{{- end -}}
{{- end -}}

{{/* Refuse values the schema cannot express: the external services are required. */}}
{{- define "orchestrator.validate" -}}
{{- if not .Values.existingSecret -}}
{{- if not .Values.database.url -}}
{{- fail "database.url is required: the PostgreSQL URL, postgresql+psycopg://USER:PASSWORD@HOST:5432/DB (or set existingSecret to a Secret holding ORCH_DATABASE_URL and ORCH_BROKER_URL)" -}}
{{- end -}}
{{- if not .Values.broker.url -}}
{{- fail "broker.url is required: the Redis URL, redis://HOST:6379/0 (or set existingSecret to a Secret holding ORCH_DATABASE_URL and ORCH_BROKER_URL)" -}}
{{- end -}}
{{- end -}}
{{- $seen := dict -}}
{{- range .Values.workers -}}
{{- if hasKey $seen .name -}}
{{- fail (printf "workers: the name %q is used twice; each worker entry needs its own name" .name) -}}
{{- end -}}
{{- $_ := set $seen .name true -}}
{{- end -}}
{{- end -}}

{{/* Secret-backed settings, each to whom needs it: the server gets the database and broker URLs
and the keys it accepts, the migration Job the database URL, workers the broker URL and the key
they send (never the database URL). */}}
{{- define "orchestrator.secretEnv" -}}
{{- $secret := include "orchestrator.secretName" .root -}}
{{- $optional := ternary "true" "false" (not (empty .root.Values.existingSecret)) -}}
{{- if has .component (list "server" "migrate") }}
- name: ORCH_DATABASE_URL
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: ORCH_DATABASE_URL}}
{{- end }}
{{- if has .component (list "server" "worker") }}
- name: ORCH_BROKER_URL
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: ORCH_BROKER_URL}}
{{- end }}
{{- if eq .component "server" }}
- name: ORCH_SERVER_API_KEYS
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: ORCH_SERVER_API_KEYS, optional: {{ $optional }}}}
{{- end }}
{{- if eq .component "worker" }}
- name: ORCH_API_KEY
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: ORCH_API_KEY, optional: {{ $optional }}}}
{{- end }}
{{- end -}}

{{/* Writable places for a read-only root filesystem. */}}
{{- define "orchestrator.volumeMounts" -}}
- {name: tmp, mountPath: /tmp}
- {name: home, mountPath: /home/orch}
{{- end -}}
{{- define "orchestrator.volumes" -}}
- {name: tmp, emptyDir: {}}
- {name: home, emptyDir: {}}
{{- end -}}
