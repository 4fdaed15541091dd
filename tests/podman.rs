//! Driving podman from the end-to-end tests: each test gets names of its own (containers, pods, volumes, a
//! network) that are removed when it ends, the machine's podman settings (`docker/podman/containers.conf`),
//! and a translation of a rendered Kubernetes Deployment (`pmctl app render`) into a podman pod.
//!
//! Why a translation and not `podman kube play`: podman 4.3 hangs on native sidecars (init containers with
//! `restartPolicy: Always`), which is how the rendered pod runs its executors, and maps every `emptyDir` to a
//! named volume shared by all pods using the name. The translation keeps what the pod means: init containers
//! run to the end first, in order; sidecars start next (restarted when they die); then the containers. Each
//! keeps its image, command, arguments, environment, mounts, user and read-only root. What it leaves out
//! (probes, resource limits, KEDA) is listed in docs/operations.md.
//!
//! Tests that need podman call [`Podman::start`], which says why it cannot run (no podman, an image missing);
//! the test then skips with that reason, or fails when `PM_IMAGE_TEST=require` (as `.ci/run` sets).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// What a pod's containers get that the manifest names but does not hold: Secrets, by name, as
/// (key, value) pairs (for `envFrom: secretRef` and `secret` volumes).
pub type Secrets = HashMap<String, Vec<(String, String)>>;

/// One test's podman namespace.
pub struct Podman {
    prefix: String,
    conf: PathBuf,
    /// Host directories made for `secret` volumes (removed with the test).
    scratch: tempfile::TempDir,
    made: Mutex<Made>,
}

#[derive(Default)]
struct Made {
    pods: Vec<String>,
    containers: Vec<String>,
    volumes: Vec<String>,
    networks: Vec<String>,
}

impl Podman {
    /// A namespace for one test, or why podman cannot run it here (podman missing, or one of `images` not in
    /// local storage: build them with `docker/build.sh`).
    pub fn start(test: &str, images: &[&str]) -> Result<Podman, String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let conf = std::env::var_os("CONTAINERS_CONF")
            .map_or_else(|| root.join("docker/podman/containers.conf"), PathBuf::from);
        let p = Podman {
            prefix: format!("pmt-{test}-{}", std::process::id()),
            conf,
            scratch: tempfile::tempdir().map_err(|e| e.to_string())?,
            made: Mutex::default(),
        };
        p.run(&["version", "--format", "{{.Client.Version}}"]).map_err(|e| format!("podman does not run: {e}"))?;
        for image in images {
            if p.run(&["image", "exists", image]).is_err() {
                return Err(format!("image {image} is not in local storage (build it with docker/build.sh)"));
            }
        }
        Ok(p)
    }

    /// Skips the calling test with `why`, or fails it when `PM_IMAGE_TEST=require`.
    pub fn skip(why: &str) {
        if std::env::var("PM_IMAGE_TEST").as_deref() == Ok("require") {
            panic!("PM_IMAGE_TEST=require, but: {why}");
        }
        eprintln!("SKIPPED (set PM_IMAGE_TEST=require to fail instead): {why}");
    }

    /// This test's name for `what`.
    pub fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }

    /// Runs `podman ARGS`; its stdout, or its stderr as the error.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("podman")
            .env("CONTAINERS_CONF", &self.conf)
            .args(args)
            .output()
            .map_err(|e| format!("podman {}: {e}", args.join(" ")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!("podman {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// Runs `podman ARGS` and returns what it did, whatever its exit status.
    pub fn output(&self, args: &[&str]) -> std::process::Output {
        Command::new("podman")
            .env("CONTAINERS_CONF", &self.conf)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("podman {}: {e}", args.join(" ")))
    }

    /// Container `name`'s log (stdout and stderr) once it holds `want`; fails the test after `limit`.
    pub fn wait_log(&self, name: &str, want: &str, limit: Duration) -> String {
        let end = Instant::now() + limit;
        loop {
            let out = self.output(&["logs", name]);
            let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            if log.contains(want) {
                return log;
            }
            assert!(Instant::now() < end, "{name} did not log {want:?} within {limit:?}:\n{log}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// As [`Podman::run`], failing the test on an error.
    pub fn must(&self, args: &[&str]) -> String {
        self.run(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// This test's network (made on first use): containers on it find each other by name and alias.
    pub fn network(&self) -> String {
        let name = self.name("net");
        let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        if !made.networks.contains(&name) {
            self.must(&["network", "create", &name]);
            made.networks.push(name.clone());
        }
        name
    }

    /// This test's volume `what` (made on first use).
    pub fn volume(&self, what: &str) -> String {
        let name = self.name(what);
        let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        if !made.volumes.contains(&name) {
            self.must(&["volume", "create", &name]);
            made.volumes.push(name.clone());
        }
        name
    }

    /// The DNS server of this test's network (aardvark-dns, on its gateway), as the only resolver of its
    /// containers: podman 4.3 also lists the host's servers, whose "no such name" for a container name can
    /// come first (about one lookup in eight here). A kubelet lists only the cluster DNS.
    pub fn dns(&self) -> String {
        let net = self.network();
        self.must(&["network", "inspect", &net, "--format", "{{range .Subnets}}{{.Gateway}}{{end}}"])
    }

    /// Starts a detached container named `what` on this test's network, with `args` before the image and
    /// `cmd` after it. Returns its name.
    pub fn container(&self, what: &str, args: &[&str], image: &str, cmd: &[&str]) -> String {
        let name = self.name(what);
        let net = self.network();
        let dns = self.dns();
        let mut all = vec!["run", "-d", "--name", &name, "--network", &net, "--dns", &dns];
        all.extend_from_slice(args);
        all.push(image);
        all.extend_from_slice(cmd);
        self.must(&all);
        self.made.lock().unwrap_or_else(|e| e.into_inner()).containers.push(name.clone());
        name
    }

    /// The host port that `port` of container (or pod infra) `name` is published on.
    pub fn host_port(&self, name: &str, port: u16) -> u16 {
        let out = self.must(&["port", name, &port.to_string()]);
        out.lines()
            .filter_map(|l| l.rsplit(':').next())
            .find_map(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no host port for {name}:{port} in {out:?}\n{}", self.logs(name)))
    }

    /// The host process id of container `name`'s first process.
    pub fn pid(&self, name: &str) -> u32 {
        let out = self.must(&["inspect", "--format", "{{.State.Pid}}", name]);
        out.parse().unwrap_or_else(|_| panic!("pid of {name}: {out:?}"))
    }

    /// The last lines of container `name`'s log, for failure messages.
    pub fn logs(&self, name: &str) -> String {
        let out = Command::new("podman")
            .env("CONTAINERS_CONF", &self.conf)
            .args(["logs", "--tail", "40", name])
            .output()
            .map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
            .unwrap_or_default();
        format!("--- {name}:\n{out}")
    }

    /// Runs the pod of a rendered `Deployment` as pod `what` on this test's network, publishing `publish`
    /// (container ports) on loopback. Init containers run to the end first, in order (one that fails fails
    /// the call); then the sidecars (init containers with `restartPolicy: Always`, restarted by podman when
    /// they die) and the containers start, detached. Returns the pod's name; container `C` is `POD-C`.
    pub fn play(&self, what: &str, deployment: &Value, secrets: &Secrets, publish: &[u16]) -> Result<String, String> {
        let spec = &deployment["spec"]["template"]["spec"];
        let pod = self.name(what);
        let net = self.network();
        let mut create = vec!["pod".to_string(), "create".into(), "--name".into(), pod.clone()];
        create.extend(["--network".into(), net, "--dns".into(), self.dns()]);
        for p in publish {
            create.extend(["-p".into(), format!("127.0.0.1::{p}")]);
        }
        self.run(&create.iter().map(String::as_str).collect::<Vec<_>>())?;
        self.made.lock().unwrap_or_else(|e| e.into_inner()).pods.push(pod.clone());
        let empty = Vec::new();
        let inits = spec["initContainers"].as_array().unwrap_or(&empty);
        let containers = spec["containers"].as_array().unwrap_or(&empty);
        for c in inits.iter().filter(|c| c["restartPolicy"] != "Always") {
            let args = self.container_args(&pod, spec, c, secrets, &["--rm"])?;
            self.run(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        }
        for c in inits.iter().filter(|c| c["restartPolicy"] == "Always") {
            let args = self.container_args(&pod, spec, c, secrets, &["-d", "--restart=always"])?;
            self.run(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        }
        for c in containers {
            let args = self.container_args(&pod, spec, c, secrets, &["-d"])?;
            self.run(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        }
        Ok(pod)
    }

    /// `podman run` arguments for container `c` of pod spec `spec`.
    fn container_args(
        &self,
        pod: &str,
        spec: &Value,
        c: &Value,
        secrets: &Secrets,
        mode: &[&str],
    ) -> Result<Vec<String>, String> {
        let cname = c["name"].as_str().ok_or("a container without a name")?;
        let mut a: Vec<String> = vec!["run".into()];
        a.extend(mode.iter().map(|s| s.to_string()));
        a.extend(["--pod".into(), pod.into(), "--name".into(), format!("{pod}-{cname}")]);
        // Without an init process, a stop waits 10 s for a shell that ignores SIGTERM.
        a.extend(["--stop-timeout".into(), "1".into()]);
        let psc = &spec["securityContext"];
        let sc = &c["securityContext"];
        let user = sc["runAsUser"].as_u64().or(psc["runAsUser"].as_u64());
        let group = sc["runAsGroup"].as_u64().or(psc["runAsGroup"].as_u64());
        if let Some(u) = user {
            a.extend(["--user".into(), group.map_or(u.to_string(), |g| format!("{u}:{g}"))]);
        }
        if sc["readOnlyRootFilesystem"] == true {
            a.push("--read-only".into());
        }
        if sc["allowPrivilegeEscalation"] == false {
            a.extend(["--security-opt".into(), "no-new-privileges".into()]);
        }
        for cap in sc["capabilities"]["drop"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            a.extend(["--cap-drop".into(), cap.into()]);
        }
        for e in c["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().ok_or("env without a name")?;
            let value = match (&e["value"], &e["valueFrom"]["fieldRef"]["fieldPath"]) {
                (Value::String(v), _) => v.clone(),
                (_, Value::String(f)) if f == "metadata.name" => pod.to_string(),
                _ => return Err(format!("{cname}: env {name}: only values and metadata.name are translated")),
            };
            a.extend(["-e".into(), format!("{name}={value}")]);
        }
        for from in c["envFrom"].as_array().into_iter().flatten() {
            let secret = from["secretRef"]["name"].as_str().ok_or("envFrom other than a secretRef")?;
            let pairs = secrets.get(secret).ok_or_else(|| format!("{cname}: no Secret {secret} given"))?;
            for (k, v) in pairs {
                a.extend(["-e".into(), format!("{k}={v}")]);
            }
        }
        let volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let vname = m["name"].as_str().ok_or("a mount without a name")?;
            let path = m["mountPath"].as_str().ok_or("a mount without a path")?;
            let v = volumes.iter().find(|v| v["name"] == vname).ok_or_else(|| format!("no volume {vname}"))?;
            let ro = if m["readOnly"] == true { ":ro" } else { "" };
            let source = if v.get("emptyDir").is_some() {
                // A subPath gets a volume of its own (podman 4.3 has no subpath for named volumes).
                let sub = m["subPath"].as_str().map_or(String::new(), |s| format!("-{s}"));
                let of_pod = pod.strip_prefix(&self.prefix).unwrap_or(pod).trim_start_matches('-');
                self.volume(&format!("{of_pod}-{vname}{sub}"))
            } else if let Some(secret) = v["secret"]["secretName"].as_str() {
                self.secret_dir(secret, &v["secret"]["items"], secrets)?
            } else {
                return Err(format!("{cname}: volume {vname}: only emptyDir and secret are translated"));
            };
            a.extend(["-v".into(), format!("{source}:{path}{ro}")]);
        }
        let image = c["image"].as_str().ok_or("a container without an image")?;
        let cmd: Vec<String> =
            c["command"].as_array().into_iter().flatten().filter_map(Value::as_str).map(String::from).collect();
        if let Some((entry, rest)) = cmd.split_first() {
            a.extend(["--entrypoint".into(), entry.clone(), image.into()]);
            a.extend(rest.iter().cloned());
        } else {
            a.push(image.into());
        }
        a.extend(c["args"].as_array().into_iter().flatten().filter_map(Value::as_str).map(String::from));
        Ok(a)
    }

    /// A host directory holding Secret `secret`'s keys as files (named by `items`' paths when given).
    fn secret_dir(&self, secret: &str, items: &Value, secrets: &Secrets) -> Result<String, String> {
        let pairs = secrets.get(secret).ok_or_else(|| format!("no Secret {secret} given"))?;
        let dir = self.scratch.path().join(format!("secret-{secret}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        for (k, v) in pairs {
            let path = items
                .as_array()
                .and_then(|items| items.iter().find(|i| i["key"] == k.as_str()))
                .and_then(|i| i["path"].as_str())
                .unwrap_or(k);
            std::fs::write(dir.join(path), v).map_err(|e| e.to_string())?;
        }
        // Readable by the pod's non-root user.
        let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(&dir).status();
        let _ = Command::new("chmod").arg("a+rx").arg(self.scratch.path()).status();
        Ok(dir.display().to_string())
    }

    /// Waits until `check` holds, up to `limit`; false if it never did.
    pub fn wait_for(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if check() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        check()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let made = std::mem::take(&mut *self.made.lock().unwrap_or_else(|e| e.into_inner()));
        for pod in &made.pods {
            let _ = self.run(&["pod", "rm", "-f", "-t", "0", pod]);
        }
        for c in &made.containers {
            let _ = self.run(&["rm", "-f", "-t", "0", c]);
        }
        for v in &made.volumes {
            let _ = self.run(&["volume", "rm", "-f", v]);
        }
        for n in &made.networks {
            let _ = self.run(&["network", "rm", "-f", n]);
        }
    }
}
