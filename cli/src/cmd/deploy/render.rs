//! The manifests an application spec renders to: a ServiceAccount, a NetworkPolicy (ingress to the agent's
//! HTTP port only), the Deployment of the pipeline pod, and a KEDA ScaledObject when autoscaling is on. The
//! spec is checked whole first ([`AppSpec::validate`](super::spec::AppSpec::validate)); rendering never fails.

use serde_json::{json, Value};

use super::spec::{
    AppError, AppSpec, ExecutorSpec, SecretKey, AGENT_BIN, API_PORT, HTTP_PORT, PIPE_DIR, RUN_AS, SECRETS_DIR,
    SHARED_BIN_DIR,
};

impl AppSpec {
    fn labels(&self) -> Value {
        json!({
            "app.kubernetes.io/name": self.name,
            "app.kubernetes.io/component": "pipeline",
            "app.kubernetes.io/part-of": "pipeline-manager",
            "app.kubernetes.io/managed-by": "pmctl",
        })
    }

    fn selector(&self) -> Value {
        json!({ "app.kubernetes.io/name": self.name, "app.kubernetes.io/component": "pipeline" })
    }

    fn metadata(&self) -> Value {
        json!({ "name": self.name, "namespace": self.namespace, "labels": self.labels() })
    }

    /// The manifests, in apply order: ServiceAccount, NetworkPolicy, Deployment, and the ScaledObject when
    /// autoscaling is enabled.
    pub fn render(&self) -> Vec<Value> {
        let mut docs = vec![self.service_account(), self.network_policy(), self.deployment()];
        if self.autoscaling.enabled {
            docs.push(self.scaled_object());
        }
        docs
    }

    fn service_account(&self) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": self.metadata(),
            "automountServiceAccountToken": false,
        })
    }

    fn network_policy(&self) -> Value {
        let mut ingress = vec![json!({ "ports": [{ "protocol": "TCP", "port": HTTP_PORT }] })];
        let api = &self.agent.direct_run_api;
        if api.enabled {
            let mut rule = json!({ "ports": [{ "protocol": "TCP", "port": API_PORT }] });
            if !api.allow_from.is_empty() {
                rule["from"] = Value::Array(api.allow_from.clone());
            }
            ingress.push(rule);
        }
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": self.metadata(),
            "spec": {
                "podSelector": { "matchLabels": self.selector() },
                "policyTypes": ["Ingress"],
                "ingress": ingress,
            },
        })
    }

    fn deployment(&self) -> Value {
        let mut spec = json!({
            "selector": { "matchLabels": self.selector() },
            "template": {
                "metadata": { "labels": self.labels() },
                "spec": self.pod_spec(),
            },
        });
        if !self.autoscaling.enabled {
            spec["replicas"] = json!(self.replicas);
        }
        json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": self.metadata(), "spec": spec })
    }

    fn pod_spec(&self) -> Value {
        let mut volumes = vec![
            json!({ "name": "pipe", "emptyDir": { "sizeLimit": self.work_dir.size_limit } }),
            json!({ "name": "tmp", "emptyDir": { "sizeLimit": "256Mi" } }),
        ];
        let secret_volume = |name: &str, s: &SecretKey| json!({ "name": name, "secret": { "secretName": s.name, "items": [{ "key": s.key, "path": "token" }] } });
        if let Some(s) = &self.scheduler.token_secret {
            volumes.push(secret_volume("agent-token", s));
        }
        if let (true, Some(s)) = (self.agent.direct_run_api.enabled, &self.agent.direct_run_api.token_secret) {
            volumes.push(secret_volume("api-token", s));
        }
        if let Some(tls) = &self.scheduler.tls {
            let ca = &tls.ca_secret;
            volumes.push(json!({
                "name": "scheduler-ca",
                "secret": { "secretName": ca.name, "items": [{ "key": ca.key, "path": "ca.crt" }] },
            }));
            if let Some(name) = &tls.client_cert_secret {
                volumes.push(json!({ "name": "client-cert", "secret": { "secretName": name } }));
            }
        }
        let mut init = vec![json!({
            "name": "install-pm-agent",
            "image": self.agent.image,
            "imagePullPolicy": self.agent.image_pull_policy,
            "command": [AGENT_BIN, "install", SHARED_BIN_DIR],
            "volumeMounts": [{ "name": "pipe", "mountPath": PIPE_DIR }],
            "securityContext": restricted(),
            "resources": self.agent_resources(),
        })];
        init.extend(self.executors.iter().map(executor_container));
        let mut pod = json!({
            "serviceAccountName": self.name,
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": self.agent.drain_timeout_seconds + 10,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": RUN_AS,
                "runAsGroup": RUN_AS,
                "fsGroup": RUN_AS,
                "seccompProfile": { "type": "RuntimeDefault" },
            },
            "volumes": volumes,
            "initContainers": init,
            "containers": [self.agent_container()],
        });
        if !self.image_pull_secrets.is_empty() {
            pod["imagePullSecrets"] = Value::Array(self.image_pull_secrets.clone());
        }
        if !self.node_selector.is_empty() {
            pod["nodeSelector"] = Value::Object(self.node_selector.clone());
        }
        if !self.tolerations.is_empty() {
            pod["tolerations"] = Value::Array(self.tolerations.clone());
        }
        pod
    }

    fn agent_resources(&self) -> Value {
        self.agent.resources.clone().unwrap_or_else(|| resources("50m", "32Mi", "500m", "128Mi"))
    }

    fn agent_container(&self) -> Value {
        let api = &self.agent.direct_run_api;
        let executors: Vec<String> =
            self.executors.iter().map(|e| format!("{}=unix://{}", e.name, socket(&e.name))).collect();
        let var = |name: &str, value: String| json!({ "name": name, "value": value });
        let mut env = vec![
            var("PM_SERVER", self.scheduler.address.clone()),
            var("PM_QUEUE", self.queue().to_string()),
            var("PM_CONCURRENCY", self.concurrency.to_string()),
            var("PM_EXECUTORS", executors.join(",")),
            var("PM_WORK_DIR", PIPE_DIR.to_string()),
            var("PM_DRAIN_TIMEOUT", format!("{}s", self.agent.drain_timeout_seconds)),
            json!({ "name": "PM_CLIENT_ID", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }),
            var("PM_HTTP_LISTEN", format!("0.0.0.0:{HTTP_PORT}")),
            var("PM_API_LISTEN", format!("{}:{API_PORT}", if api.enabled { "0.0.0.0" } else { "127.0.0.1" })),
        ];
        let mut mounts = vec![
            json!({ "name": "pipe", "mountPath": PIPE_DIR }),
            json!({ "name": "tmp", "mountPath": "/tmp", "subPath": "agent" }),
        ];
        let mut ports = vec![json!({ "name": "http", "containerPort": HTTP_PORT, "protocol": "TCP" })];
        if self.scheduler.token_secret.is_some() {
            env.push(var("PM_TOKEN_FILE", "/var/run/secrets/pipeline-manager/agent/token".into()));
            mounts.push(json!({ "name": "agent-token", "mountPath": "/var/run/secrets/pipeline-manager/agent", "readOnly": true }));
        }
        if api.enabled {
            env.push(var("PM_API_TOKEN_FILE", "/var/run/secrets/pipeline-manager/api/token".into()));
            mounts.push(
                json!({ "name": "api-token", "mountPath": "/var/run/secrets/pipeline-manager/api", "readOnly": true }),
            );
            ports.push(json!({ "name": "api", "containerPort": API_PORT, "protocol": "TCP" }));
        }
        if let Some(tls) = &self.scheduler.tls {
            let mount =
                |name: &str| json!({ "name": name, "mountPath": format!("{SECRETS_DIR}/{name}"), "readOnly": true });
            env.push(var("PM_TLS_CA_FILE", format!("{SECRETS_DIR}/scheduler-ca/ca.crt")));
            mounts.push(mount("scheduler-ca"));
            if tls.client_cert_secret.is_some() {
                env.push(var("PM_TLS_CLIENT_CERT_FILE", format!("{SECRETS_DIR}/client-cert/tls.crt")));
                env.push(var("PM_TLS_CLIENT_KEY_FILE", format!("{SECRETS_DIR}/client-cert/tls.key")));
                mounts.push(mount("client-cert"));
            }
        }
        let probe = |path: &str| json!({ "httpGet": { "path": path, "port": "http" } });
        let with = |mut p: Value, fields: Value| {
            if let (Some(p), Some(f)) = (p.as_object_mut(), fields.as_object()) {
                p.extend(f.clone());
            }
            p
        };
        json!({
            "name": "agent",
            "image": self.agent.image,
            "imagePullPolicy": self.agent.image_pull_policy,
            "command": [AGENT_BIN],
            "args": ["run"],
            "env": env,
            "ports": ports,
            "startupProbe": with(probe("/readyz"), json!({ "periodSeconds": 1, "failureThreshold": 60 })),
            "readinessProbe": with(probe("/readyz"), json!({ "periodSeconds": 5 })),
            "livenessProbe": with(probe("/healthz"), json!({ "periodSeconds": 10, "failureThreshold": 3 })),
            "volumeMounts": mounts,
            "securityContext": restricted(),
            "resources": self.agent_resources(),
        })
    }

    fn scaled_object(&self) -> Value {
        let a = &self.autoscaling;
        let q = self.queue();
        let query = format!(
            "(sum(pm_queue_depth{{queue=\"{q}\"}}) or vector(0)) + (sum(pm_leases_in_flight{{queue=\"{q}\"}}) or vector(0))"
        );
        json!({
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": self.metadata(),
            "spec": {
                "scaleTargetRef": { "name": self.name },
                "minReplicaCount": a.min_replicas,
                "maxReplicaCount": a.max_replicas,
                "pollingInterval": a.polling_interval,
                "cooldownPeriod": a.cooldown_period,
                "triggers": [{
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": a.prometheus_address,
                        "query": query,
                        "threshold": a.tasks_per_replica.unwrap_or(self.concurrency).to_string(),
                    },
                }],
            },
        })
    }
}

/// The executor's socket in the shared volume.
fn socket(name: &str) -> String {
    format!("{PIPE_DIR}/.pm/{name}.sock")
}

/// The container securityContext every container gets.
fn restricted() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": { "drop": ["ALL"] },
    })
}

fn resources(cpu: &str, memory: &str, cpu_limit: &str, memory_limit: &str) -> Value {
    json!({ "requests": { "cpu": cpu, "memory": memory }, "limits": { "cpu": cpu_limit, "memory": memory_limit } })
}

/// An executor as a native sidecar: `pm-agent exec` (from the shared volume) in the utility's image.
fn executor_container(e: &ExecutorSpec) -> Value {
    let mut c = json!({
        "name": format!("exec-{}", e.name),
        "image": e.image,
        "imagePullPolicy": e.image_pull_policy,
        "restartPolicy": "Always",
        "command": [format!("{SHARED_BIN_DIR}/pm-agent"), "exec", "--name", e.name, "--listen", format!("unix://{}", socket(&e.name))],
        "volumeMounts": [
            { "name": "pipe", "mountPath": PIPE_DIR },
            { "name": "tmp", "mountPath": "/tmp", "subPath": e.name },
        ],
        "securityContext": restricted(),
        "resources": e.resources.clone().unwrap_or_else(|| resources("50m", "32Mi", "1", "512Mi")),
    });
    if !e.env.is_empty() {
        c["env"] = Value::Array(e.env.clone());
    }
    if !e.env_from.is_empty() {
        c["envFrom"] = Value::Array(e.env_from.clone());
    }
    c
}

/// The manifests as one YAML stream (documents separated by `---`).
pub fn to_yaml(docs: &[Value]) -> Result<String, AppError> {
    let mut out = String::new();
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(doc).map_err(|e| AppError::Parse(e.to_string()))?);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}
