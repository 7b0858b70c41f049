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

{{/* Refuse values the schema cannot express: an external service's URL goes with its bundled one
switched off, and is required then. */}}
{{- define "orchestrator.validate" -}}
{{- if and .Values.postgresql.enabled .Values.database.url -}}
{{- fail "database.url is for an external PostgreSQL: set postgresql.enabled=false to use it, or leave database.url empty to use the chart's PostgreSQL" -}}
{{- end -}}
{{- if and .Values.redis.enabled .Values.broker.url -}}
{{- fail "broker.url is for an external Redis: set redis.enabled=false to use it, or leave broker.url empty to use the chart's Redis" -}}
{{- end -}}
{{- if not .Values.existingSecret -}}
{{- if and (not .Values.postgresql.enabled) (not .Values.database.url) -}}
{{- fail "database.url is required when postgresql.enabled is false: the PostgreSQL URL, postgresql+psycopg://USER:PASSWORD@HOST:5432/DB (or set existingSecret to a Secret holding ORCH_DATABASE_URL and ORCH_BROKER_URL)" -}}
{{- end -}}
{{- if and (not .Values.redis.enabled) (not .Values.broker.url) -}}
{{- fail "broker.url is required when redis.enabled is false: the Redis URL, redis://HOST:6379/0 (or set existingSecret to a Secret holding ORCH_DATABASE_URL and ORCH_BROKER_URL)" -}}
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

{{/* The bundled services: names, and whether the release's URLs point at them. */}}
{{- define "orchestrator.postgresqlName" -}}
{{- printf "%s-postgresql" (include "orchestrator.fullname" . | trunc 52 | trimSuffix "-") -}}
{{- end -}}
{{- define "orchestrator.redisName" -}}
{{- printf "%s-redis" (include "orchestrator.fullname" . | trunc 57 | trimSuffix "-") -}}
{{- end -}}
{{- define "orchestrator.generatedSecretName" -}}
{{- printf "%s-generated" (include "orchestrator.fullname" . | trunc 53 | trimSuffix "-") -}}
{{- end -}}
{{- define "orchestrator.usesBundledPostgresql" -}}
{{- if and .Values.postgresql.enabled (not .Values.existingSecret) }}true{{ end -}}
{{- end -}}
{{- define "orchestrator.usesBundledRedis" -}}
{{- if and .Values.redis.enabled (not .Values.existingSecret) }}true{{ end -}}
{{- end -}}

{{/* A generated password: the value given, else the one already in the cluster's generated
Secret (so upgrades keep it), else 32 random letters and digits. Call it once per render.
An upgrade that cannot read that Secret (no right to read Secrets, a client-side dry run) stops
with a message: a new password would lock the release out of the data its volume holds. */}}
{{- define "orchestrator.password" -}}
{{- $given := .given -}}
{{- if $given -}}
{{- $given -}}
{{- else -}}
{{- $name := include "orchestrator.generatedSecretName" .root -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace $name -}}
{{- if and .root.Release.IsUpgrade (not $existing) -}}
{{- fail (printf "cannot read Secret %s/%s, which holds the generated %s (no right to read Secrets, or a dry run without the cluster): a new one would lock the release out of its data. Upgrade with the right to read it, or give the value (--set %s=...; both postgresql.password and redis.password if both are bundled)" .root.Release.Namespace $name .key .value) -}}
{{- end -}}
{{- $found := "" -}}
{{- if and $existing $existing.data -}}
{{- $found = index $existing.data .key | default "" | b64dec -}}
{{- end -}}
{{- $found | default (randAlphaNum 32) -}}
{{- end -}}
{{- end -}}

{{/* Secret-backed settings, each to whom needs it: the server gets the database and broker URLs
and the keys it accepts, the migration Job the database URL, workers the broker URL and the key
they send (never the database URL). */}}
{{- define "orchestrator.secretEnv" -}}
{{- $secret := include "orchestrator.secretName" .root -}}
{{- $generated := include "orchestrator.generatedSecretName" .root -}}
{{- $optional := ternary "true" "false" (not (empty .root.Values.existingSecret)) -}}
{{- if has .component (list "server" "migrate") }}
{{- if include "orchestrator.usesBundledPostgresql" .root }}
{{- $pg := .root.Values.postgresql }}
# the URL of the release's PostgreSQL; Kubernetes puts the password in (no copy of it elsewhere)
- name: POSTGRES_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ $generated }}, key: postgres-password}}
- name: ORCH_DATABASE_URL
  value: {{ printf "postgresql+psycopg://%s:$(POSTGRES_PASSWORD)@%s:5432/%s" $pg.username (include "orchestrator.postgresqlName" .root) $pg.database | quote }}
{{- else }}
- name: ORCH_DATABASE_URL
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: ORCH_DATABASE_URL}}
{{- end }}
{{- end }}
{{- if has .component (list "server" "worker") }}
{{- if include "orchestrator.usesBundledRedis" .root }}
- name: REDIS_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ $generated }}, key: redis-password}}
- name: ORCH_BROKER_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s:6379/0" (include "orchestrator.redisName" .root) | quote }}
{{- else }}
- name: ORCH_BROKER_URL
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: ORCH_BROKER_URL}}
{{- end }}
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

{{/* Waits until the release's PostgreSQL accepts connections (a pod that migrates would
otherwise fail its first tries while the database starts). */}}
{{- define "orchestrator.waitForPostgresql" -}}
{{- if include "orchestrator.usesBundledPostgresql" . -}}
initContainers:
  - name: wait-for-postgresql
    image: {{ printf "%s:%s" .Values.postgresql.image.repository .Values.postgresql.image.tag }}
    imagePullPolicy: {{ .Values.postgresql.image.pullPolicy }}
    command: ["sh", "-c", "until pg_isready --quiet --host {{ include "orchestrator.postgresqlName" . }} --port 5432; do sleep 2; done"]
    resources:
      requests: {cpu: 10m, memory: 16Mi}
      limits: {memory: 64Mi}
    securityContext:
      {{- toYaml .Values.securityContext | nindent 6 }}
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
