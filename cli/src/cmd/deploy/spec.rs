//! The app deployer's core: an application spec (YAML), its defaults and its validation; the manifests it
//! renders to are in [`render`](mod@super::render) (the commands are in
//! [`super`]).
//!
//! An application is one pod layout that runs one pipeline queue: the agent container, one executor per
//! utility (`pm-agent exec` in the utility's own image, started from a binary that an init container copies
//! into the shared volume), and an `emptyDir` at `/mnt/pipe`. The spec is also the values file of the Helm
//! chart `charts/pipeline-app`, and both render the same manifests (a test compares them), so a team can
//! choose `pmctl app render | kubectl apply -f -` or `helm install` without the pods differing.
//!
//! Why the executors are native sidecars (`initContainers` with `restartPolicy: Always`): Kubernetes starts
//! them before the agent and stops them only after the agent has exited, so an agent that drains on SIGTERM
//! (a KEDA scale-down) still has its executors while the running tasks finish. Plain containers would all
//! get SIGTERM at once.
//!
//! The spec's keys and defaults are documented in `docs/operations.md` ("Application spec"); unknown keys
//! are refused, so a misspelt key never silently falls back to a default.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::{Map, Value};

/// Where the shared volume is mounted in every container.
pub const PIPE_DIR: &str = "/mnt/pipe";
/// The agent binary in the agent image.
pub const AGENT_BIN: &str = "/usr/local/bin/pm-agent";
/// Where the init container copies the agent binary (inside the shared volume) for the executors.
pub const SHARED_BIN_DIR: &str = "/mnt/pipe/.pm/bin";
/// Port of the agent's probes and `/metrics` endpoint (`--http-listen`).
pub const HTTP_PORT: u16 = 7072;
/// Port of the agent's direct-run API (`--api-listen`).
pub const API_PORT: u16 = 7071;
/// Where the agent's Secrets are mounted.
pub const SECRETS_DIR: &str = "/var/run/secrets/pipeline-manager";
/// The non-root user every container runs as.
pub const RUN_AS: u32 = 65532;

/// Why a spec cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Not YAML, or not the shape of a spec (unknown key, wrong type).
    #[error("{0}")]
    Parse(String),
    /// A value is out of its allowed range or form.
    #[error("{field}: {why}")]
    Invalid {
        /// The key, as a path (`executors[1].name`).
        field: String,
        /// What is wrong.
        why: String,
    },
}

fn invalid(field: impl Into<String>, why: impl Into<String>) -> AppError {
    AppError::Invalid { field: field.into(), why: why.into() }
}

/// A Secret key (`name`, `key`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretKey {
    /// Secret name.
    pub name: String,
    /// Key in the Secret.
    pub key: String,
}

/// Where the agents find the scheduler.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSpec {
    /// `host:port`, or cluster members comma-separated.
    pub address: String,
    /// The Secret key holding the agent token.
    #[serde(default, rename = "tokenSecret")]
    pub token_secret: Option<SecretKey>,
    /// TLS to the scheduler (unset: plain TCP).
    #[serde(default)]
    pub tls: Option<SchedulerTls>,
}

/// How the agents check the scheduler's certificate, and the certificate they present (mutual TLS).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerTls {
    /// The Secret key holding the CA certificate (PEM) the scheduler's certificate is checked against.
    #[serde(rename = "caSecret")]
    pub ca_secret: SecretKey,
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`) presented to a scheduler requiring mutual TLS.
    #[serde(default, rename = "clientCertSecret")]
    pub client_cert_secret: Option<String>,
}

/// The agent's direct-run API in the pod.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectRunApi {
    /// Listen on the pod's network (with a token) instead of loopback only.
    #[serde(default)]
    pub enabled: bool,
    /// The Secret key holding the API's bearer token (required when enabled).
    #[serde(default, rename = "tokenSecret")]
    pub token_secret: Option<SecretKey>,
    /// NetworkPolicy peers allowed to reach the API (empty: any source).
    #[serde(default, rename = "allowFrom")]
    pub allow_from: Vec<Value>,
}

/// The agent container.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// Image holding `/usr/local/bin/pm-agent`.
    #[serde(default = "default_agent_image")]
    pub image: String,
    /// Pull policy.
    #[serde(default = "default_pull_policy", rename = "imagePullPolicy")]
    pub image_pull_policy: String,
    /// Resource requests and limits.
    #[serde(default)]
    pub resources: Option<Value>,
    /// How long running tasks may finish after SIGTERM before they are handed back.
    #[serde(default = "default_drain", rename = "drainTimeoutSeconds")]
    pub drain_timeout_seconds: u32,
    /// The direct-run API.
    #[serde(default, rename = "directRunApi")]
    pub direct_run_api: DirectRunApi,
}

impl Default for AgentSpec {
    fn default() -> Self {
        AgentSpec {
            image: default_agent_image(),
            image_pull_policy: default_pull_policy(),
            resources: None,
            drain_timeout_seconds: default_drain(),
            direct_run_api: DirectRunApi::default(),
        }
    }
}

/// The shared volume.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkDir {
    /// `emptyDir` size limit (a Kubernetes quantity).
    #[serde(default = "default_size_limit", rename = "sizeLimit")]
    pub size_limit: String,
}

impl Default for WorkDir {
    fn default() -> Self {
        WorkDir { size_limit: default_size_limit() }
    }
}

/// One utility container.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorSpec {
    /// The `executorName` the pipeline's steps use.
    pub name: String,
    /// The utility's image (needs `/bin/sh`; it does not need pm-agent).
    pub image: String,
    /// Pull policy.
    #[serde(default = "default_pull_policy", rename = "imagePullPolicy")]
    pub image_pull_policy: String,
    /// Resource requests and limits.
    #[serde(default)]
    pub resources: Option<Value>,
    /// Environment variables (Kubernetes `EnvVar`s, e.g. from a Secret).
    #[serde(default)]
    pub env: Vec<Value>,
    /// Environment sources (Kubernetes `EnvFromSource`s).
    #[serde(default, rename = "envFrom")]
    pub env_from: Vec<Value>,
}

/// KEDA autoscaling on queue depth plus running tasks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Autoscaling {
    /// Render a ScaledObject.
    #[serde(default)]
    pub enabled: bool,
    /// Fewest pods (0 allowed: KEDA scales to zero).
    #[serde(default = "one", rename = "minReplicas")]
    pub min_replicas: u32,
    /// Most pods.
    #[serde(default = "ten", rename = "maxReplicas")]
    pub max_replicas: u32,
    /// Ready plus running tasks per pod (default: the concurrency).
    #[serde(default, rename = "tasksPerReplica")]
    pub tasks_per_replica: Option<u32>,
    /// Prometheus that scrapes the scheduler.
    #[serde(default = "default_prometheus", rename = "prometheusAddress")]
    pub prometheus_address: String,
    /// Seconds between KEDA's queries.
    #[serde(default = "fifteen", rename = "pollingInterval")]
    pub polling_interval: u32,
    /// Seconds after the last activity before scaling to `minReplicas` 0.
    #[serde(default = "three_hundred", rename = "cooldownPeriod")]
    pub cooldown_period: u32,
}

impl Default for Autoscaling {
    fn default() -> Self {
        Autoscaling {
            enabled: false,
            min_replicas: one(),
            max_replicas: ten(),
            tasks_per_replica: None,
            prometheus_address: default_prometheus(),
            polling_interval: fifteen(),
            cooldown_period: three_hundred(),
        }
    }
}

/// An application spec (= the values of `charts/pipeline-app`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// Name of every object (a DNS-1123 label).
    pub name: String,
    /// Namespace of every object.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Queue the agents take tasks from (default: `name`).
    #[serde(default)]
    pub queue: Option<String>,
    /// Tasks one pod runs at once.
    #[serde(default = "one")]
    pub concurrency: u32,
    /// Where the scheduler is.
    pub scheduler: SchedulerSpec,
    /// The agent container.
    #[serde(default)]
    pub agent: AgentSpec,
    /// The shared volume.
    #[serde(default, rename = "workDir")]
    pub work_dir: WorkDir,
    /// The utility containers.
    pub executors: Vec<ExecutorSpec>,
    /// KEDA autoscaling.
    #[serde(default)]
    pub autoscaling: Autoscaling,
    /// Pods when autoscaling is off.
    #[serde(default = "one")]
    pub replicas: u32,
    /// Image pull Secrets (`{name}` objects).
    #[serde(default, rename = "imagePullSecrets")]
    pub image_pull_secrets: Vec<Value>,
    /// Node selector.
    #[serde(default, rename = "nodeSelector")]
    pub node_selector: Map<String, Value>,
    /// Tolerations.
    #[serde(default)]
    pub tolerations: Vec<Value>,
}

fn default_agent_image() -> String {
    format!("pipeline-manager/pm-agent:{}", env!("CARGO_PKG_VERSION"))
}
fn default_pull_policy() -> String {
    "IfNotPresent".into()
}
fn default_drain() -> u32 {
    25
}
fn default_size_limit() -> String {
    "1Gi".into()
}
fn default_prometheus() -> String {
    "http://prometheus-operated.monitoring.svc.cluster.local:9090".into()
}
fn default_namespace() -> String {
    "default".into()
}
fn one() -> u32 {
    1
}
fn ten() -> u32 {
    10
}
fn fifteen() -> u32 {
    15
}
fn three_hundred() -> u32 {
    300
}

/// Longest application name: leaves room for the suffixes Kubernetes adds to pod names.
pub const MAX_NAME_LEN: usize = 40;

/// True for a DNS-1123 label: lowercase letters, digits and `-`, starting and ending alphanumeric.
fn is_dns_label(s: &str, max: usize) -> bool {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    !s.is_empty() && s.len() <= max && s.chars().all(ok_char) && !s.starts_with('-') && !s.ends_with('-')
}

impl AppSpec {
    /// Parses a YAML spec; unknown keys and wrong types are errors naming the line.
    pub fn from_yaml(text: &str) -> Result<AppSpec, AppError> {
        let spec: AppSpec = serde_saphyr::from_str(text).map_err(|e| AppError::Parse(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// The queue: `queue`, else `name`.
    pub fn queue(&self) -> &str {
        self.queue.as_deref().unwrap_or(&self.name)
    }

    /// Checks every value a cluster would refuse, or that would render a pod that cannot work.
    pub fn validate(&self) -> Result<(), AppError> {
        if !is_dns_label(&self.name, MAX_NAME_LEN) {
            return Err(invalid(
                "name",
                format!("{:?} is not a DNS-1123 label of at most {MAX_NAME_LEN} characters (a-z, 0-9, -)", self.name),
            ));
        }
        if !is_dns_label(&self.namespace, 63) {
            return Err(invalid("namespace", format!("{:?} is not a DNS-1123 label", self.namespace)));
        }
        pm_task::pipeline::validate_queue_name(self.queue()).map_err(|why| invalid("queue", why))?;
        if self.concurrency == 0 {
            return Err(invalid("concurrency", "must be at least 1"));
        }
        if self.scheduler.address.split(',').all(|a| a.trim().is_empty()) {
            return Err(invalid("scheduler.address", "is empty"));
        }
        if let Some(s) = &self.scheduler.token_secret {
            check_secret("scheduler.tokenSecret", s)?;
        }
        if let Some(tls) = &self.scheduler.tls {
            check_secret("scheduler.tls.caSecret", &tls.ca_secret)?;
            if let Some(name) = &tls.client_cert_secret {
                check_secret(
                    "scheduler.tls.clientCertSecret",
                    &SecretKey { name: name.clone(), key: "tls.crt".into() },
                )?;
            }
        }
        if self.agent.image.trim().is_empty() {
            return Err(invalid("agent.image", "is empty"));
        }
        if self.agent.drain_timeout_seconds == 0 || self.agent.drain_timeout_seconds > 86_400 {
            return Err(invalid("agent.drainTimeoutSeconds", "must be from 1 to 86400"));
        }
        check_pull_policy("agent.imagePullPolicy", &self.agent.image_pull_policy)?;
        let api = &self.agent.direct_run_api;
        match (&api.token_secret, api.enabled) {
            (Some(s), _) => check_secret("agent.directRunApi.tokenSecret", s)?,
            (None, true) => {
                return Err(invalid(
                    "agent.directRunApi.tokenSecret",
                    "is required when the direct-run API is enabled (it runs shell commands)",
                ))
            }
            (None, false) => {}
        }
        if self.work_dir.size_limit.trim().is_empty() {
            return Err(invalid("workDir.sizeLimit", "is empty"));
        }
        if self.executors.is_empty() {
            return Err(invalid("executors", "name at least one executor (the utilities the pipeline's steps use)"));
        }
        let mut seen = HashSet::new();
        for (i, e) in self.executors.iter().enumerate() {
            // `exec-<name>` must stay a valid container name (63 characters).
            if !is_dns_label(&e.name, 58) {
                return Err(invalid(
                    format!("executors[{i}].name"),
                    format!("{:?} is not a DNS-1123 label of at most 58 characters", e.name),
                ));
            }
            if !seen.insert(e.name.as_str()) {
                return Err(invalid(format!("executors[{i}].name"), format!("{:?} is listed twice", e.name)));
            }
            if e.image.trim().is_empty() {
                return Err(invalid(format!("executors[{i}].image"), "is empty"));
            }
            check_pull_policy(&format!("executors[{i}].imagePullPolicy"), &e.image_pull_policy)?;
            if e.name == "agent" {
                return Err(invalid(format!("executors[{i}].name"), "\"agent\" is the agent container's own name"));
            }
        }
        let a = &self.autoscaling;
        if a.enabled {
            if a.max_replicas == 0 || a.max_replicas < a.min_replicas {
                return Err(invalid("autoscaling.maxReplicas", "must be at least 1 and at least minReplicas"));
            }
            if a.tasks_per_replica == Some(0) {
                return Err(invalid("autoscaling.tasksPerReplica", "must be at least 1"));
            }
            if a.prometheus_address.trim().is_empty() {
                return Err(invalid("autoscaling.prometheusAddress", "is empty"));
            }
        }
        Ok(())
    }
}

fn check_pull_policy(field: &str, policy: &str) -> Result<(), AppError> {
    match policy {
        "Always" | "IfNotPresent" | "Never" => Ok(()),
        other => Err(invalid(field, format!("{other:?} is not Always, IfNotPresent or Never"))),
    }
}

fn check_secret(field: &str, s: &SecretKey) -> Result<(), AppError> {
    if !is_dns_label(&s.name, 253) && !s.name.split('.').all(|p| is_dns_label(p, 63)) {
        return Err(invalid(format!("{field}.name"), format!("{:?} is not a Secret name", s.name)));
    }
    if s.name.len() > 253 {
        return Err(invalid(format!("{field}.name"), "is longer than 253 characters"));
    }
    if s.key.is_empty() || !s.key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(invalid(
            format!("{field}.key"),
            format!("{:?} is not a Secret key (letters, digits, - _ .)", s.key),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::super::render::to_yaml;
    use super::*;

    const MINIMAL: &str =
        "name: demo\nscheduler: {address: 'pm:7070'}\nexecutors: [{name: sh, image: 'busybox:1.36'}]\n";

    fn err(yaml: &str) -> String {
        AppSpec::from_yaml(yaml).unwrap_err().to_string()
    }

    #[test]
    fn a_minimal_spec_gets_the_defaults() {
        let spec = AppSpec::from_yaml(MINIMAL).unwrap();
        assert_eq!((spec.queue(), spec.namespace.as_str(), spec.concurrency), ("demo", "default", 1));
        let docs = spec.render();
        let kinds: Vec<_> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["ServiceAccount", "NetworkPolicy", "Deployment"], "no ScaledObject unless enabled");
        let pod = &docs[2]["spec"]["template"]["spec"];
        assert_eq!(docs[2]["spec"]["replicas"], 1);
        assert_eq!(pod["terminationGracePeriodSeconds"], 35);
        assert_eq!(pod["initContainers"][1]["restartPolicy"], "Always", "executors are native sidecars");
        assert_eq!(pod["initContainers"][1]["name"], "exec-sh");
        let env = pod["containers"][0]["env"].as_array().unwrap();
        let value = |name: &str| env.iter().find(|e| e["name"] == name).map(|e| e["value"].clone());
        assert_eq!(value("PM_EXECUTORS").unwrap(), "sh=unix:///mnt/pipe/.pm/sh.sock");
        assert_eq!(value("PM_API_LISTEN").unwrap(), "127.0.0.1:7071", "the direct-run API stays in the pod");
        assert_eq!(value("PM_CONCURRENCY").unwrap(), "1", "env values are strings");
        assert!(value("PM_TOKEN_FILE").is_none());
    }

    #[test]
    fn autoscaling_renders_a_scaled_object_on_ready_plus_running_tasks() {
        let yaml =
            format!("{MINIMAL}queue: ocr/main\nconcurrency: 3\nautoscaling: {{enabled: true, minReplicas: 0}}\n");
        let docs = AppSpec::from_yaml(&yaml).unwrap().render();
        assert_eq!(docs.len(), 4);
        assert!(docs[2]["spec"].get("replicas").is_none(), "KEDA owns the replica count");
        let trigger = &docs[3]["spec"]["triggers"][0]["metadata"];
        assert_eq!(trigger["threshold"], "3", "default: the concurrency");
        let query = trigger["query"].as_str().unwrap();
        assert!(
            query.contains(r#"pm_queue_depth{queue="ocr/main"}"#) && query.contains("pm_leases_in_flight"),
            "{query}"
        );
        assert_eq!(docs[3]["spec"]["minReplicaCount"], 0);
    }

    #[test]
    fn bad_specs_are_refused_with_the_key_named() {
        assert!(err("name: demo\nexecutors: []\n").contains("scheduler"), "missing key");
        assert!(err(&format!("{MINIMAL}replicsa: 3\n")).contains("replicsa"), "unknown key");
        assert!(err(&MINIMAL.replace("demo", "Demo_App")).starts_with("name:"));
        assert!(err(&MINIMAL.replace("[{name: sh, image: 'busybox:1.36'}]", "[]")).starts_with("executors:"));
        let twice = MINIMAL.replace("}]", "}, {name: sh, image: x}]");
        assert!(err(&twice).contains("listed twice"), "{}", err(&twice));
        assert!(err(&format!("{MINIMAL}agent: {{directRunApi: {{enabled: true}}}}\n")).contains("tokenSecret"));
        assert!(err(&format!("{MINIMAL}autoscaling: {{enabled: true, minReplicas: 5, maxReplicas: 2}}\n"))
            .starts_with("autoscaling.maxReplicas"));
        assert!(err(&format!("{MINIMAL}queue: 'a b'\n")).starts_with("queue:"));
        assert!(err("name: [").contains("line"), "a YAML error says where: {}", err("name: ["));
    }

    #[test]
    fn tls_to_the_scheduler_mounts_the_ca_and_the_client_certificate() {
        let yaml = MINIMAL.replace(
            "scheduler: {address: 'pm:7070'}",
            "scheduler: {address: 'pm:7070', tls: {caSecret: {name: pm-tls, key: ca.crt}, clientCertSecret: ocr-client}}",
        );
        let docs = AppSpec::from_yaml(&yaml).unwrap().render();
        let pod = &docs[2]["spec"]["template"]["spec"];
        let env = pod["containers"][0]["env"].as_array().unwrap();
        let value = |name: &str| env.iter().find(|e| e["name"] == name).map(|e| e["value"].clone());
        assert_eq!(value("PM_TLS_CA_FILE").unwrap(), "/var/run/secrets/pipeline-manager/scheduler-ca/ca.crt");
        assert_eq!(value("PM_TLS_CLIENT_KEY_FILE").unwrap(), "/var/run/secrets/pipeline-manager/client-cert/tls.key");
        let volumes: Vec<_> = pod["volumes"].as_array().unwrap().iter().map(|v| v["name"].clone()).collect();
        assert!(volumes.contains(&json!("scheduler-ca")) && volumes.contains(&json!("client-cert")), "{volumes:?}");
        assert!(err(&MINIMAL.replace("{address: 'pm:7070'}", "{address: 'pm:7070', tls: {}}")).contains("caSecret"));
    }

    #[test]
    fn the_yaml_stream_keeps_strings_strings() {
        let spec = AppSpec::from_yaml(MINIMAL).unwrap();
        let text = to_yaml(&spec.render()).unwrap();
        assert_eq!(text.matches("---\n").count(), 3);
        // Read back, every document is the same value: "1" stays a string, 1 a number.
        let back: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        assert_eq!(back, spec.render());
    }
}
