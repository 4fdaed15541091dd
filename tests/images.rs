//! The container images, run for real with podman (`docker/build.sh` builds them):
//! - every image exists under its version tag, runs its tool, and runs as user 65532; the `mc` stand-in of
//!   the upload image makes a bucket and copies a directory into it;
//! - the static `pm-agent`, copied into a volume by the pm-agent image as a pipeline pod's init container
//!   does, runs in a Debian image, in a busybox image without a libc and in a distroless-like image without
//!   a shell: `--version`, and `pm-agent exec` serves its socket and stops cleanly on SIGTERM;
//! - in each of those images it resolves the scheduler's service name (`pipeline-manager`, a network alias
//!   on a podman network) and connects: it logs `agent ready` and the scheduler counts the connections.
//!
//! Without podman or the images the tests pass with a message saying they were skipped, unless
//! `PM_IMAGE_TEST=require` (CI), which makes that a failure. podman runs with
//! `CONTAINERS_CONF=docker/podman/containers.conf` unless `CONTAINERS_CONF` is set.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use pm_tests::podman::Podman;

/// The images `docker/build.sh` builds, tagged with the workspace version.
const IMAGES: [&str; 5] = ["pm-scheduler", "pm-agent", "ocr-wget", "ocr-tesseract", "ocr-mc"];
/// The bases the static agent must run in (tagged `latest` by `docker/build.sh`).
const BASES: [&str; 3] = ["base-debian", "base-busybox", "base-static"];
/// The stripped static agent's size limit: every pipeline pod copies it.
const AGENT_MAX_BYTES: u64 = 5_000_000;

/// `localhost/pipeline-manager/NAME:VERSION`.
fn image(name: &str) -> String {
    format!("localhost/pipeline-manager/{name}:{}", env!("CARGO_PKG_VERSION"))
}

/// `localhost/pipeline-manager/NAME:latest`.
fn base(name: &str) -> String {
    format!("localhost/pipeline-manager/{name}:latest")
}

/// podman with the project's settings and every image and base, or `None` after saying why not (a failure
/// with `PM_IMAGE_TEST=require`).
fn podman(test: &str) -> Option<Podman> {
    let all: Vec<String> = IMAGES.iter().map(|n| image(n)).chain(BASES.iter().map(|n| base(n))).collect();
    match Podman::start(&format!("images-{test}"), &all.iter().map(String::as_str).collect::<Vec<_>>()) {
        Ok(p) => Some(p),
        Err(why) => {
            Podman::skip(&why);
            None
        }
    }
}

/// A new volume holding the static agent at /mnt/pipe/.pm/bin/pm-agent, installed by the pm-agent image as a
/// pipeline pod's init container does.
fn volume_with_agent(p: &Podman) -> String {
    let vol = p.volume("pipe");
    let out =
        p.must(&["run", "--rm", "-v", &format!("{vol}:/mnt/pipe"), &image("pm-agent"), "install", "/mnt/pipe/.pm/bin"]);
    assert!(out.contains("installed /mnt/pipe/.pm/bin/pm-agent"), "{out}");
    vol
}

#[test]
fn every_image_runs_its_tool_as_user_65532() {
    let Some(p) = podman("tools") else { return };
    let version = env!("CARGO_PKG_VERSION");
    let runs: [(&str, &[&str], &str); 5] = [
        ("pm-scheduler", &["--version"], "pm-scheduler "),
        ("pm-agent", &["--version"], "pm-agent "),
        ("ocr-wget", &["wget", "--version"], "GNU Wget"),
        ("ocr-tesseract", &["tesseract", "--version"], "tesseract 5"),
        ("ocr-mc", &["mc", "--version"], "rclone"),
    ];
    for (name, args, want) in runs {
        let img = image(name);
        let mut all = vec!["run", "--rm", img.as_str()];
        all.extend_from_slice(args);
        let out = p.output(&all);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.contains(want), "{name} {args:?}: {}\n{text}", out.status);
        if name.starts_with("pm-") {
            assert!(text.contains(version), "{name} --version: {text}");
        }
        let user = p.must(&["image", "inspect", "--format", "{{.Config.User}}", &img]);
        assert_eq!(user.trim(), "65532:65532", "{name} runs as");
    }
}

#[test]
fn the_mc_stand_in_makes_a_bucket_and_copies_a_directory_into_it() {
    let Some(p) = podman("mc") else { return };
    // A local rclone remote stands in for the S3 endpoint: the shim only translates mc's arguments.
    let script =
        "set -e; mkdir -p /tmp/pipe/sub /tmp/store; echo one > /tmp/pipe/a.txt; echo two > /tmp/pipe/sub/b.txt; \
                  mc mb buckets/5840e11b; mc cp --recursive /tmp/pipe/ buckets/5840e11b; \
                  cat /tmp/store/5840e11b/a.txt /tmp/store/5840e11b/sub/b.txt; \
                  if mc cp /tmp/pipe buckets/5840e11b 2>/tmp/err; then exit 1; fi; cat /tmp/err";
    let out = p.must(&[
        "run",
        "--rm",
        "-e",
        "RCLONE_CONFIG_BUCKETS_TYPE=alias",
        "-e",
        "RCLONE_CONFIG_BUCKETS_REMOTE=/tmp/store",
        &image("ocr-mc"),
        "sh",
        "-c",
        script,
    ]);
    assert!(out.starts_with("one\ntwo\n"), "{out}");
}

/// The Debian, busybox and distroless-like bases, with what each lacks.
fn bases() -> [(&'static str, String); 3] {
    [
        ("debian (glibc, apt, bash)", base("base-debian")),
        ("busybox (no libc)", base("base-busybox")),
        ("distroless-like (no shell, no libc, user 65532)", base("base-static")),
    ]
}

#[test]
fn the_static_agent_runs_in_debian_busybox_and_distroless_images() {
    let Some(p) = podman("exec") else { return };
    let vol = volume_with_agent(&p);
    let mount = format!("{vol}:/mnt/pipe:ro");
    let size =
        p.must(&["run", "--rm", "-v", &mount, &base("base-debian"), "stat", "-c", "%s", "/mnt/pipe/.pm/bin/pm-agent"]);
    let size: u64 = size.trim().parse().unwrap();
    assert!(size <= AGENT_MAX_BYTES, "the static agent is {size} bytes, over {AGENT_MAX_BYTES}");
    for (i, (what, img)) in bases().iter().enumerate() {
        let out = p.must(&["run", "--rm", "-v", &mount, img, "/mnt/pipe/.pm/bin/pm-agent", "--version"]);
        assert!(out.starts_with("pm-agent "), "{what}: {out}");
        let name = p.container(
            &format!("exec{i}"),
            &["-v", &mount],
            img,
            &["/mnt/pipe/.pm/bin/pm-agent", "exec", "--name", "x", "--listen", "unix:///tmp/x.sock"],
        );
        p.wait_log(&name, "executor ready", Duration::from_secs(30));
        p.must(&["stop", &name]);
        let code = p.must(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
        assert_eq!(code.trim(), "0", "{what}: pm-agent exec after SIGTERM");
    }
}

#[test]
fn the_static_agent_resolves_the_schedulers_service_name_in_every_base() {
    let Some(p) = podman("dns") else { return };
    let vol = volume_with_agent(&p);
    // Every container gets the network's DNS server as its only resolver (see `Podman::dns`).
    let sched = p.container(
        "scheduler",
        &["--network-alias", "pipeline-manager", "-p", "127.0.0.1::7072"],
        &image("pm-scheduler"),
        &["--listen", "0.0.0.0:7070", "--http-listen", "0.0.0.0:7072", "--insecure"],
    );
    p.wait_log(&sched, "http listening on", Duration::from_secs(30));
    let mount = format!("{vol}:/mnt/pipe:ro");
    for (i, (what, img)) in bases().iter().enumerate() {
        let id = format!("agent-{i}");
        let name = p.container(
            &format!("agent{i}"),
            &["-v", &mount],
            img,
            &[
                "/mnt/pipe/.pm/bin/pm-agent",
                "run",
                "--server",
                "pipeline-manager:7070",
                "--work-dir",
                "/tmp/work",
                "--concurrency",
                "1",
                "--client-id",
                &id,
            ],
        );
        let log = p.wait_log(&name, "agent ready", Duration::from_secs(30));
        assert!(log.contains("pipeline-manager:7070"), "{what}: {log}");
    }
    // The scheduler counts the three agents' connections.
    let port = p.must(&["port", &sched, "7072"]);
    let addr = port.lines().next().unwrap().trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = pm_tests::http(&addr, "GET", "/metrics", &[], b"");
        let text = String::from_utf8_lossy(&metrics.body).to_string();
        let connections: f64 = text
            .lines()
            .filter(|l| l.starts_with("pm_connections{") && l.contains("\"ROLE_AGENT\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if connections >= 3.0 {
            break;
        }
        assert!(Instant::now() < deadline, "pm_connections of agents is {connections}, want 3:\n{text}");
        std::thread::sleep(Duration::from_millis(250));
    }
}
