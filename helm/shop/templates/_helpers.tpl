{{/*
Named templates of the shop chart: the fixed facts about the services, labels and selectors,
images, env, secret files, the caller map, and the render-time checks.
*/}}

{{/*
The fixed facts of each service (names, ports, gRPC service, env names): the binaries and
kong/kong.yaml depend on them, so they are not values. Use: fromYaml (include "shop.services" .)
*/}}
{{- define "shop.services" -}}
user:
  name: user-service
  port: 50051
  grpcService: shop.user.v1.UserService
  addrEnv: USER_GRPC_ADDR
  databaseFile: user-database-url
  databaseEnv: USER_DATABASE_URL_FILE
product:
  name: product-service
  port: 50052
  grpcService: shop.product.v1.ProductService
  addrEnv: PRODUCT_GRPC_ADDR
  databaseFile: product-database-url
  databaseEnv: PRODUCT_DATABASE_URL_FILE
order:
  name: order-service
  port: 50053
  grpcService: shop.order.v1.OrderService
  addrEnv: ORDER_GRPC_ADDR
  databaseFile: order-database-url
  databaseEnv: ORDER_DATABASE_URL_FILE
payment:
  name: payment-service
  port: 50054
  grpcService: shop.payment.v1.PaymentService
  addrEnv: PAYMENT_GRPC_ADDR
  databaseFile: payment-database-url
  databaseEnv: PAYMENT_DATABASE_URL_FILE
{{- end }}

{{/* The metrics port of every service (METRICS_ADDR). */}}
{{- define "shop.metricsPort" -}}9090{{- end }}

{{/* Where secret files are mounted (chart and existing modes); Vault Agent uses /vault/secrets. */}}
{{- define "shop.secretsDir" -}}
{{- if eq .Values.secrets.mode "vault" -}}/vault/secrets{{- else -}}/etc/shop/secrets{{- end -}}
{{- end }}

{{/* The image tag: image.tag or the chart's appVersion. */}}
{{- define "shop.tag" -}}
{{- default .Chart.AppVersion .Values.image.tag -}}
{{- end }}

{{/* An image reference. Use: include "shop.image" (dict "root" $ "binary" "user-service") */}}
{{- define "shop.image" -}}
{{- $img := .root.Values.image -}}
{{- $repo := printf "%s/%s/%s" $img.registry $img.repository .binary -}}
{{- with index $img.digests .binary -}}
{{- printf "%s@%s" $repo . -}}
{{- else -}}
{{- printf "%s:%s" $repo (include "shop.tag" .root) -}}
{{- end -}}
{{- end }}

{{/* Labels every object of the release carries. */}}
{{- define "shop.commonLabels" -}}
app.kubernetes.io/part-of: shop
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ include "shop.tag" . | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/*
Selector labels of one workload: only labels that never change for its life (no version), since
a Deployment's selector is immutable. component tells the server pods from the migration Job's
and the test pod's. Use: include "shop.selectorLabels" (dict "root" $ "name" "user-service"
"component" "server")
*/}}
{{- define "shop.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one workload's objects: selector + common. Same arguments. */}}
{{- define "shop.labels" -}}
{{ include "shop.selectorLabels" . }}
{{ include "shop.commonLabels" .root }}
{{- end }}

{{/* Pod labels of a service: its labels plus Kiali's app and version. */}}
{{- define "shop.podLabels" -}}
{{ include "shop.labels" . }}
app: {{ .name }}
version: {{ include "shop.tag" .root | quote }}
{{- end }}

{{/* The labels that select every pod of the release (the default-deny NetworkPolicy). */}}
{{- define "shop.releaseSelector" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: shop
{{- end }}

{{/* A service's in-cluster gRPC URL. Use: include "shop.url" (dict "root" $ "svc" $svc) */}}
{{- define "shop.url" -}}
http://{{ .svc.name }}.{{ .root.Release.Namespace }}.svc.cluster.local:{{ .svc.port }}
{{- end }}

{{/*
The secret files one service reads: file name -> env setting. Use:
fromYaml (include "shop.secretFiles" (dict "root" $ "key" "user"))
*/}}
{{- define "shop.secretFiles" -}}
{{- $svc := index (fromYaml (include "shop.services" .root)) .key -}}
{{ $svc.databaseFile }}: {{ $svc.databaseEnv }}
amqp-url: AMQP_URL_FILE
{{- if eq .key "user" }}
signing-key.pem: USER_SIGNING_KEY_FILE
service-clients: USER_SERVICE_CLIENTS_FILE
{{- if .root.Values.auth.bootstrapAdminEmail }}
bootstrap-admin-password: USER_BOOTSTRAP_ADMIN_PASSWORD_FILE
{{- end }}
{{- end }}
{{- if eq .key "order" }}
order-client-secret: ORDER_CLIENT_SECRET_FILE
{{- end }}
{{- end }}

{{/*
The plain settings of one service (env name -> value), the exact names the binaries read.
Server pods get them from their ConfigMap; migration Jobs inline (hooks run before the
ConfigMap exists). Use: fromYaml (include "shop.env" (dict "root" $ "key" "order"))
*/}}
{{- define "shop.baseEnv" -}}
{{- $root := .root -}}
{{- $services := fromYaml (include "shop.services" $root) -}}
{{- $svc := index $services .key -}}
{{- $v := $root.Values -}}
LOG_FORMAT: json
RUST_LOG: {{ $v.log.filter | quote }}
METRICS_ADDR: "0.0.0.0:{{ include "shop.metricsPort" $root }}"
SHUTDOWN_DRAIN_DELAY: "{{ $v.shutdown.drainDelaySeconds }}s"
SHUTDOWN_GRACE_PERIOD: "{{ $v.shutdown.gracePeriodSeconds }}s"
JWT_ISSUER: {{ $v.auth.issuer | quote }}
JWT_AUDIENCE: {{ $v.auth.audience | quote }}
{{ $svc.addrEnv }}: "0.0.0.0:{{ $svc.port }}"
{{- with $v.tracing.otlpEndpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ . | quote }}
{{- end }}
{{- if ne .key "user" }}
USER_SERVICE_URL: {{ include "shop.url" (dict "root" $root "svc" $services.user) | quote }}
{{- end }}
{{- if eq .key "order" }}
PRODUCT_SERVICE_URL: {{ include "shop.url" (dict "root" $root "svc" $services.product) | quote }}
ORDER_CLIENT_ID: order-service
{{- end }}
{{- if and (eq .key "user") $v.auth.bootstrapAdminEmail }}
USER_BOOTSTRAP_ADMIN_EMAIL: {{ $v.auth.bootstrapAdminEmail | quote }}
{{- end }}
{{- $dir := include "shop.secretsDir" $root }}
{{- range $file, $env := fromYaml (include "shop.secretFiles" .) }}
{{ $env }}: "{{ $dir }}/{{ $file }}"
{{- end }}
{{- end }}

{{/* shop.baseEnv plus services.<key>.extraEnv, which may add settings but not replace one. */}}
{{- define "shop.env" -}}
{{- $base := fromYaml (include "shop.baseEnv" .) -}}
{{- $env := deepCopy $base -}}
{{- range $name, $value := (index .root.Values.services .key).extraEnv -}}
{{- if hasKey $base $name -}}
{{- fail (printf "services.%s.extraEnv.%s: the chart sets %s itself; change the value it comes from" $.key $name $name) -}}
{{- end -}}
{{- $_ := set $env $name ($value | toString) -}}
{{- end -}}
{{- toYaml $env -}}
{{- end }}

{{/*
Who can be a caller: name -> namespace, ServiceAccount, pod labels. The four services, the
helm test pod (shop-test) and values.access.externalCallers.
Use: fromYaml (include "shop.callers" .)
*/}}
{{- define "shop.callers" -}}
{{- $root := . -}}
{{- range $key, $svc := fromYaml (include "shop.services" $root) }}
{{ $svc.name }}:
  namespace: {{ $root.Release.Namespace }}
  serviceAccount: {{ $svc.name }}
  internal: true
  podLabels:
    {{- include "shop.selectorLabels" (dict "root" $root "name" $svc.name "component" "server") | nindent 4 }}
{{- end }}
shop-test:
  namespace: {{ $root.Release.Namespace }}
  serviceAccount: shop-test
  internal: true
  podLabels:
    {{- include "shop.selectorLabels" (dict "root" $root "name" "shop-test" "component" "test") | nindent 4 }}
{{- range $name, $caller := $root.Values.access.externalCallers }}
{{ $name }}:
  namespace: {{ $caller.namespace }}
  serviceAccount: {{ $caller.serviceAccount }}
  internal: false
  podLabels:
    {{- toYaml $caller.podLabels | nindent 4 }}
{{- end }}
{{- end }}

{{/*
The effective caller map: values.access.calls plus the helm test pod's health checks, as
{calls: [{callee, from, paths, requireToken}]}, each path a full gRPC path. The NetworkPolicy
and AuthorizationPolicy templates both read this and nothing else.
Use: (fromYaml (include "shop.calls" .)).calls
*/}}
{{- define "shop.calls" -}}
{{- $root := . -}}
{{- $byName := dict -}}
{{- range $key, $svc := fromYaml (include "shop.services" $root) -}}
{{- $_ := set $byName $svc.name $svc -}}
{{- end -}}
{{- $callers := fromYaml (include "shop.callers" $root) -}}
calls:
{{- range $callee, $rules := $root.Values.access.calls }}
{{- $svc := index $byName $callee | default dict }}
{{- if not $svc.name }}
{{- fail (printf "access.calls: %q is not a service (user-service, product-service, order-service, payment-service)" $callee) }}
{{- end }}
{{- range $rules }}
{{- if not (hasKey $callers .from) }}
{{- fail (printf "access.calls.%s: caller %q is neither a service nor in access.externalCallers" $callee .from) }}
{{- end }}
  - callee: {{ $callee }}
    from: {{ .from }}
    requireToken: {{ .requireToken | default false }}
    paths:
{{- range .methods }}
      - /{{ $svc.grpcService }}/{{ . }}
{{- end }}
{{- end }}
{{- end }}
{{- if $root.Values.tests.enabled }}
{{- range $name, $svc := $byName }}
  - callee: {{ $name }}
    from: shop-test
    requireToken: false
    paths:
      - /grpc.health.v1.Health/Check
{{- end }}
{{- end }}
{{- end }}

{{/*
A NetworkPolicy peer: the CIDRs when cidrs is not empty, else {namespace, podLabels}. Use:
include "shop.peer" $peer (renders a list of peers, one item per CIDR or one selector item).
*/}}
{{- define "shop.peer" -}}
{{- if .cidrs }}
{{- range .cidrs }}
- ipBlock:
    cidr: {{ . }}
{{- end }}
{{- else }}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ required "a NetworkPolicy peer needs cidrs or a namespace" .namespace }}
  podSelector:
    {{- if .podLabels }}
    matchLabels:
      {{- toYaml .podLabels | nindent 6 }}
    {{- else }} {}
    {{- end }}
{{- end }}
{{- end }}

{{/* The restricted pod security context (UID 65532, never Istio's 1337). */}}
{{- define "shop.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The restricted container security context. */}}
{{- define "shop.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The Secret that holds the files: the chart's, or the existing one. */}}
{{- define "shop.secretName" -}}
{{- if eq .Values.secrets.mode "chart" -}}shop-secrets{{- else -}}{{ .Values.secrets.existing.name }}{{- end -}}
{{- end }}

{{/*
Volumes for one pod's secret files (chart/existing modes): only its own files, read-only, 0440.
Use: include "shop.secretVolume" (dict "root" $ "key" "user" "secretName" "shop-secrets")
*/}}
{{- define "shop.secretVolume" -}}
{{- if ne .root.Values.secrets.mode "vault" }}
- name: secrets
  projected:
    defaultMode: 0440
    sources:
      - secret:
          name: {{ .secretName }}
          items:
            {{- range $file, $env := fromYaml (include "shop.secretFiles" .) }}
            - key: {{ $file }}
              path: {{ $file }}
            {{- end }}
{{- end }}
{{- end }}

{{- define "shop.secretMount" -}}
{{- if ne .Values.secrets.mode "vault" }}
- name: secrets
  mountPath: {{ include "shop.secretsDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{/*
Vault Agent injector annotations of one pod: one file per secret under /vault/secrets, rendered
once by the init container (pre-populate only: the services read their files at start, a
refreshing sidecar would change nothing), by the app's own UID so mode 0400 works. The agent
authenticates with a projected, audience-bound token (the pods mount no ServiceAccount token).
Use: include "shop.vaultAnnotations" (dict "root" $ "key" "user")
*/}}
{{- define "shop.vaultAnnotations" -}}
{{- $vault := .root.Values.secrets.vault -}}
{{- if eq .root.Values.secrets.mode "vault" }}
vault.hashicorp.com/agent-inject: "true"
vault.hashicorp.com/agent-pre-populate-only: "true"
vault.hashicorp.com/agent-run-as-same-user: "true"
vault.hashicorp.com/role: {{ $vault.role | quote }}
vault.hashicorp.com/agent-service-account-token-volume-name: vault-token
{{- range $file, $env := fromYaml (include "shop.secretFiles" .) }}
{{- $src := index $vault.files $file }}
{{- $data := ternary (printf ".Data.data.%s" $src.field) (printf ".Data.%s" $src.field) (eq (int $vault.kvVersion) 2) }}
vault.hashicorp.com/agent-inject-secret-{{ $file }}: {{ $src.path | quote }}
vault.hashicorp.com/agent-inject-template-{{ $file }}: {{ printf "{{- with secret %q -}}{{ %s }}{{- end -}}" $src.path $data | quote }}
vault.hashicorp.com/agent-inject-perms-{{ $file }}: "0400"
{{- end }}
{{- if .root.Values.mesh.enabled }}
traffic.sidecar.istio.io/excludeOutboundPorts: {{ $vault.port | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* The projected token volume the Vault agent authenticates with (vault mode only). */}}
{{- define "shop.vaultTokenVolume" -}}
{{- if eq .Values.secrets.mode "vault" }}
- name: vault-token
  projected:
    sources:
      - serviceAccountToken:
          path: token
          audience: vault
          expirationSeconds: 3600
{{- end }}
{{- end }}

{{/* terminationGracePeriodSeconds: drain + grace + margin, or the explicit value if larger. */}}
{{- define "shop.terminationGracePeriod" -}}
{{- $s := .Values.shutdown -}}
{{- $needed := add $s.drainDelaySeconds $s.gracePeriodSeconds $s.marginSeconds -}}
{{- if $s.terminationGracePeriodSeconds -}}
{{- if lt (int $s.terminationGracePeriodSeconds) (int $needed) -}}
{{- fail (printf "shutdown.terminationGracePeriodSeconds (%d) is shorter than drainDelaySeconds + gracePeriodSeconds + marginSeconds (%d): the kubelet would kill pods still draining" (int $s.terminationGracePeriodSeconds) (int $needed)) -}}
{{- end -}}
{{- $s.terminationGracePeriodSeconds -}}
{{- else -}}
{{- $needed -}}
{{- end -}}
{{- end }}

{{/* Render-time checks that need more than the schema: each fails with what to change. */}}
{{- define "shop.validate" -}}
{{- $v := .Values -}}
{{- if lt (int $v.shutdown.drainDelaySeconds) (int $v.probes.readiness.periodSeconds) -}}
{{- fail (printf "shutdown.drainDelaySeconds (%d) must be at least one readiness period (probes.readiness.periodSeconds = %d): otherwise endpoints may still send calls when the server stops answering" (int $v.shutdown.drainDelaySeconds) (int $v.probes.readiness.periodSeconds)) -}}
{{- end -}}
{{- $_ := include "shop.terminationGracePeriod" . -}}
{{- range $key, $svc := $v.services -}}
{{- if and $svc.pdb.enabled (not $svc.autoscaling.enabled) (lt (int $svc.replicas) 2) -}}
{{- fail (printf "services.%s.pdb.enabled with replicas %d and autoscaling off: a PodDisruptionBudget over a single pod blocks every node drain. Set replicas >= 2, enable autoscaling (minReplicas >= 2), or disable the PDB" $key (int $svc.replicas)) -}}
{{- end -}}
{{- if and $svc.pdb.enabled $svc.autoscaling.enabled (lt (int $svc.autoscaling.minReplicas) 2) -}}
{{- fail (printf "services.%s.pdb.enabled with autoscaling.minReplicas %d: at one replica the PodDisruptionBudget blocks every node drain. Set minReplicas >= 2 or disable the PDB" $key (int $svc.autoscaling.minReplicas)) -}}
{{- end -}}
{{- end -}}
{{- if and $v.kong.enabled (not $v.auth.publicKeyPem) -}}
{{- fail "kong.enabled needs auth.publicKeyPem (the PEM public key of user-service's signing key): without Kong's jwt credential every token is refused. Make it and auth.jwks with `scripts/chart/token_keys.py signing-key.pem > token-keys.yaml` and pass -f token-keys.yaml" -}}
{{- end -}}
{{- if and $v.mesh.enabled $v.mesh.requestAuthentication.enabled (not $v.auth.jwks) -}}
{{- fail "mesh.requestAuthentication.enabled needs auth.jwks (user-service's JWKS JSON: `scripts/chart/token_keys.py signing-key.pem > token-keys.yaml`, pass -f token-keys.yaml), or set mesh.requestAuthentication.enabled=false" -}}
{{- end -}}
{{- if eq $v.secrets.mode "chart" -}}
{{- $c := $v.secrets.chart -}}
{{- if or (not $c.signingKeyPem) (not $c.amqpUrl) (not $c.databaseUrls.user) (not $c.databaseUrls.product) (not $c.databaseUrls.order) (not $c.databaseUrls.payment) -}}
{{- fail "secrets.mode=chart needs secrets.chart.signingKeyPem, amqpUrl and databaseUrls.{user,product,order,payment}" -}}
{{- end -}}
{{- if lt (len $c.orderClientSecret) 16 -}}
{{- fail "secrets.chart.orderClientSecret must have at least 16 characters (user-service refuses shorter client secrets)" -}}
{{- end -}}
{{- if and $v.auth.bootstrapAdminEmail (not $c.bootstrapAdminPassword) -}}
{{- fail "auth.bootstrapAdminEmail needs secrets.chart.bootstrapAdminPassword in secrets.mode=chart" -}}
{{- end -}}
{{- if and (eq $v.catalogue "mongodb") (not (hasPrefix "mongodb" $c.databaseUrls.product)) -}}
{{- fail "catalogue=mongodb needs secrets.chart.databaseUrls.product to be a mongodb:// (or mongodb+srv://) URL" -}}
{{- end -}}
{{- if and (eq $v.catalogue "postgres") (not (hasPrefix "postgres" $c.databaseUrls.product)) -}}
{{- fail "catalogue=postgres needs secrets.chart.databaseUrls.product to be a postgres:// URL" -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/* The Istio proxy settings of server pods: wait for the proxy, and keep it for the whole drain. */}}
{{- define "shop.proxyConfig" -}}
{{- $s := .Values.shutdown -}}
{{- dict "holdApplicationUntilProxyStarts" true "terminationDrainDuration" (printf "%ds" (int (add $s.drainDelaySeconds $s.gracePeriodSeconds))) | toJson -}}
{{- end }}

{{/* The data of the chart-made Secrets (secrets.mode=chart), base64-encoded, one key per file. */}}
{{- define "shop.secretData" -}}
{{- $c := .Values.secrets.chart -}}
signing-key.pem: {{ $c.signingKeyPem | b64enc }}
service-clients: {{ printf "order-service:%s" $c.orderClientSecret | b64enc }}
order-client-secret: {{ $c.orderClientSecret | b64enc }}
user-database-url: {{ $c.databaseUrls.user | b64enc }}
product-database-url: {{ $c.databaseUrls.product | b64enc }}
order-database-url: {{ $c.databaseUrls.order | b64enc }}
payment-database-url: {{ $c.databaseUrls.payment | b64enc }}
amqp-url: {{ $c.amqpUrl | b64enc }}
{{- if .Values.auth.bootstrapAdminEmail }}
bootstrap-admin-password: {{ $c.bootstrapAdminPassword | b64enc }}
{{- end }}
{{- end }}
