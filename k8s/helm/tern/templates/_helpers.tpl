{{/* Names, labels and the pieces of Tern's config shared by the templates. */}}

{{- define "tern.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The StatefulSet's name, so also the pods' host names: `<fullname>-N`. */}}
{{- define "tern.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The headless Service that gives each pod its DNS name. */}}
{{- define "tern.headless" -}}
{{- printf "%s-headless" (include "tern.fullname" .) }}
{{- end }}

{{/* `<pod>.<headless>.<namespace>.svc.<domain>` without the pod part. */}}
{{- define "tern.peerDomain" -}}
{{- printf "%s.%s.svc.%s" (include "tern.headless" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{- define "tern.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tern.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tern.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tern.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* HS256 puts the JWT secret into the config, which then goes into a Secret. */}}
{{- define "tern.configInSecret" -}}
{{- if and .Values.auth.jwt.enabled (eq .Values.auth.jwt.algorithm "HS256") }}true{{ end }}
{{- end }}

{{- define "tern.tlsSecret" -}}
{{- default (printf "%s-tls" (include "tern.fullname" .)) .Values.tls.existingSecret }}
{{- end }}

{{- define "tern.passwordSecret" -}}
{{- default (printf "%s-auth" (include "tern.fullname" .)) .Values.auth.existingPasswordSecret }}
{{- end }}

{{- define "tern.aclSecret" -}}
{{- default (printf "%s-auth" (include "tern.fullname" .)) .Values.acl.existingSecret }}
{{- end }}

{{- define "tern.jwtSecret" -}}
{{- default (printf "%s-auth" (include "tern.fullname" .)) .Values.auth.jwt.existingSecret }}
{{- end }}

{{- define "tern.hasPasswords" -}}
{{- if or .Values.auth.passwords .Values.auth.existingPasswordSecret }}true{{ end }}
{{- end }}

{{- define "tern.hasAcl" -}}
{{- if or .Values.acl.rules .Values.acl.existingSecret }}true{{ end }}
{{- end }}

{{- define "tern.hasJwtKey" -}}
{{- if and .Values.auth.jwt.enabled (eq .Values.auth.jwt.algorithm "RS256") }}true{{ end }}
{{- end }}

{{/* A TOML value: JSON's strings, numbers and booleans are TOML's too. */}}
{{- define "tern.tomlTable" -}}
{{- range $key, $value := . }}
{{ $key }} = {{ $value | toJson }}
{{- end }}
{{- end }}

{{/* Tern's TOML config, the same for every pod: what differs (node id,
advertised addresses) comes from the host name and the environment. */}}
{{- define "tern.config" -}}
{{- $v := .Values -}}
# Rendered by the Tern Helm chart from its values.
data_dir = "/var/lib/tern"
log_level = {{ $v.config.logLevel | toJson }}
log_format = {{ $v.config.logFormat | toJson }}
workers = {{ $v.config.workers | int }}

[[listeners]]
bind = "0.0.0.0:{{ $v.ports.mqtt | int }}"
protocol = "tcp"
max_connections = {{ $v.config.maxConnections | int64 }}

[[listeners]]
bind = "0.0.0.0:{{ $v.ports.ws | int }}"
protocol = "ws"
path = "/mqtt"
max_connections = {{ $v.config.maxConnections | int64 }}
{{- if $v.tls.enabled }}

[[listeners]]
bind = "0.0.0.0:{{ $v.ports.mqttTls | int }}"
protocol = "tls"
max_connections = {{ $v.config.maxConnections | int64 }}
[listeners.tls]
cert = "/etc/tern/tls/tls.crt"
key = "/etc/tern/tls/tls.key"
{{- if ne $v.tls.clientAuth "none" }}
ca = "/etc/tern/tls/ca.crt"
{{- end }}
client_auth = {{ $v.tls.clientAuth | toJson }}
identity = {{ $v.tls.identity | toJson }}
{{- end }}
{{- with $v.config.mqtt }}

[mqtt]
{{- include "tern.tomlTable" . }}
{{- end }}
{{- with $v.config.storage }}

[storage]
{{- include "tern.tomlTable" . }}
{{- end }}
{{- with $v.config.limits }}

[limits]
{{- include "tern.tomlTable" . }}
{{- end }}

[auth]
allow_anonymous = {{ $v.auth.allowAnonymous }}
use_identity_as_username = {{ $v.auth.useIdentityAsUsername }}
{{- if include "tern.hasPasswords" . }}
password_file = "/etc/tern/auth/passwd"
{{- end }}
{{- if $v.auth.jwt.enabled }}
{{- if eq $v.auth.jwt.algorithm "HS256" }}
jwt = { algorithm = "HS256", secret = {{ $v.auth.jwt.secret | toJson }}, username_claim = {{ $v.auth.jwt.usernameClaim | toJson }} }
{{- else }}
jwt = { algorithm = "RS256", public_key_file = "/etc/tern/jwt/jwt.pem", username_claim = {{ $v.auth.jwt.usernameClaim | toJson }} }
{{- end }}
{{- end }}
{{- if include "tern.hasAcl" . }}

[acl]
file = "/etc/tern/acl/acl"
{{- end }}

[cluster]
# node id = pod ordinal + 1; advertise and mqtt_advertise come from
# TERN_CLUSTER_ADVERTISE / TERN_MQTT_ADVERTISE (the pod's DNS name).
node_id_from_hostname = true
listen = "0.0.0.0:{{ $v.cluster.port | int }}"
seeds = [
{{- range $i := until ($v.replicaCount | int) }}
  "{{ include "tern.fullname" $ }}-{{ $i }}.{{ include "tern.peerDomain" $ }}:{{ $v.cluster.port | int }}",
{{- end }}
]
tick_ms = {{ $v.cluster.tickMs | int }}
election_ticks = {{ $v.cluster.electionTicks | int }}
forward_timeout_secs = {{ $v.cluster.forwardTimeoutSecs | int }}
forward_queue_limit = {{ $v.cluster.forwardQueueLimit | int }}
drain_timeout_secs = {{ $v.cluster.drainTimeoutSecs | int }}

[http]
{{- if $v.http.enabled }}
bind = "0.0.0.0:{{ $v.http.port | int }}"
{{- else }}
# Off (Tern's default would be 0.0.0.0:8080).
bind = ""
{{- end }}
{{- with $v.telemetry.otlpEndpoint }}

[telemetry]
otlp_endpoint = {{ . | toJson }}
{{- end }}
{{ end }}
