//! The Kubernetes deployment in contrib/kubernetes: every manifest validated
//! against the Kubernetes API's schemas (kubernetes-validate, strict) and the
//! ServiceMonitor against the Prometheus Operator's CRD; the DaemonSet held to
//! flowlat's own options and to the privileges docs/kubernetes.md lists; the
//! image built from scratch with the static binary, where podman or docker is.
//!
//! scripts/test.sh installs kubernetes-validate (pinned) into a virtual
//! environment, target/kubernetes-validate, which also brings the PyYAML and
//! jsonschema that tests/kubernetes/manifests.py uses.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kit::json::{self, Json};

/// The kubernetes-validate release scripts/test.sh installs.
const KUBERNETES_VALIDATE: &str = "1.37.0";
/// The Kubernetes versions the manifests are valid for: the oldest with the
/// `appArmorProfile` field, and the newest that release knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];
/// The ServiceMonitor CRD of Prometheus Operator 0.93.0, as kube-prometheus ships it.
const SERVICEMONITOR_CRD: &str =
    "tests/kubernetes/servicemonitors.monitoring.coreos.com-v0.93.0.yaml";
/// flowlat's capabilities, as docs/kubernetes.md explains them.
const CAPABILITIES: [&str; 4] = ["BPF", "NET_ADMIN", "PERFMON", "SYS_PTRACE"];
/// Where flowlat serves its metrics: the proxy's upstream, nobody else's.
const METRICS_ADDR: &str = "127.0.0.1:9464";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn venv_bin(name: &str) -> PathBuf {
    let bin = root().join("target/kubernetes-validate/bin").join(name);
    assert!(
        bin.exists(),
        "no {}: scripts/test.sh makes it (python3 -m venv target/kubernetes-validate && \
         target/kubernetes-validate/bin/pip install kubernetes-validate=={KUBERNETES_VALIDATE})",
        bin.display()
    );
    bin
}

fn run(cmd: &mut Command) -> Output {
    cmd.current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Every manifest: the YAML files below contrib/kubernetes, relative to the root.
fn manifests() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir)
            .expect("list contrib/kubernetes")
            .flatten()
        {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("contrib/kubernetes"), &mut files);
    let mut files: Vec<String> = files
        .iter()
        .map(|p| {
            p.strip_prefix(root())
                .expect("below the root")
                .display()
                .to_string()
        })
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    files
}

fn is_crd_kind(doc: &Json) -> bool {
    doc.get("apiVersion")
        .and_then(Json::as_str)
        .is_some_and(|v| v.starts_with("monitoring.coreos.com/"))
}

/// Every document of every manifest, with its file.
fn documents() -> Vec<(String, Json)> {
    let out = run(Command::new(venv_bin("python"))
        .args(["tests/kubernetes/manifests.py", "json"])
        .args(manifests()));
    assert!(out.status.success(), "{}", text(&out));
    let all = json::parse(&String::from_utf8_lossy(&out.stdout)).expect("JSON from manifests.py");
    let Json::Arr(list) = all else {
        panic!("not an array: {all:?}")
    };
    list.into_iter()
        .map(|i| {
            let file = i
                .get("file")
                .and_then(Json::as_str)
                .expect("file")
                .to_string();
            (file, i.get("doc").expect("doc").clone())
        })
        .collect()
}

fn of_kind<'a>(docs: &'a [(String, Json)], kind: &str) -> Vec<&'a Json> {
    docs.iter()
        .map(|(_, d)| d)
        .filter(|d| d.get("kind").and_then(Json::as_str) == Some(kind))
        .collect()
}

fn path<'a>(j: &'a Json, keys: &[&str]) -> Option<&'a Json> {
    keys.iter().try_fold(j, |j, k| j.get(k))
}

fn items(j: Option<&Json>) -> &[Json] {
    match j {
        Some(Json::Arr(v)) => v,
        _ => &[],
    }
}

fn strings(j: Option<&Json>) -> Vec<&str> {
    items(j)
        .iter()
        .map(|s| s.as_str().expect("a string"))
        .collect()
}

fn the_daemonset(docs: &[(String, Json)]) -> &Json {
    let sets = of_kind(docs, "DaemonSet");
    assert_eq!(sets.len(), 1, "one DaemonSet");
    sets[0]
}

fn container<'a>(pod: &'a Json, name: &str) -> &'a Json {
    items(pod.get("containers"))
        .iter()
        .find(|c| c.get("name").and_then(Json::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

#[test]
fn built_in_kinds_pass_the_kubernetes_schemas_strictly() {
    let bin = venv_bin("kubernetes-validate");
    let version = run(Command::new(&bin).arg("--version"));
    assert_eq!(
        text(&version).trim(),
        KUBERNETES_VALIDATE,
        "scripts/test.sh pins kubernetes-validate {KUBERNETES_VALIDATE}"
    );
    let docs = documents();
    let built_in = docs.iter().filter(|(_, d)| !is_crd_kind(d)).count();
    for k8s in KUBERNETES_VERSIONS {
        let out = run(Command::new(&bin)
            .args(["--strict", "--kubernetes-version", k8s])
            .args(manifests()));
        let said = text(&out);
        assert!(out.status.success(), "Kubernetes {k8s}:\n{said}");
        let passed = said
            .lines()
            .filter(|l| l.starts_with("INFO ") && l.contains(" passed "))
            .count();
        assert_eq!(
            passed, built_in,
            "every built-in kind validated ({k8s}):\n{said}"
        );
        // kubernetes-validate has no schema for a CRD's kinds: it warns and
        // goes on. Those are checked against the CRD below, and nothing else
        // may be skipped.
        for l in said.lines().filter(|l| !l.starts_with("INFO ")) {
            assert!(
                l.starts_with("WARN contrib/kubernetes/prometheus-operator/")
                    && l.contains("Couldn't find schema for kind ServiceMonitor"),
                "unexpected ({k8s}): {l}"
            );
        }
    }
}

#[test]
fn the_servicemonitor_passes_the_prometheus_operator_crd() {
    let monitors: Vec<String> = manifests()
        .into_iter()
        .filter(|f| f.contains("/prometheus-operator/"))
        .collect();
    assert!(!monitors.is_empty());
    let out = run(Command::new(venv_bin("python"))
        .args(["tests/kubernetes/manifests.py", "crd", SERVICEMONITOR_CRD])
        .args(&monitors));
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.lines()
            .any(|l| l.starts_with("OK ") && l.contains("ServiceMonitor/flowlat")),
        "{said}"
    );

    // What it scrapes exists: the Service's port, which the proxy serves.
    let docs = documents();
    let monitor = of_kind(&docs, "ServiceMonitor")[0];
    let service = of_kind(&docs, "Service")[0];
    assert_eq!(
        path(service, &["spec", "clusterIP"]).and_then(Json::as_str),
        Some("None"),
        "headless"
    );
    let port = path(monitor, &["spec", "endpoints"])
        .and_then(|e| e.at(0))
        .and_then(|e| e.get("port"))
        .and_then(Json::as_str);
    let ports: Vec<_> = items(path(service, &["spec", "ports"]))
        .iter()
        .map(|p| p.get("name").and_then(Json::as_str))
        .collect();
    assert_eq!(
        ports,
        [port],
        "the ServiceMonitor scrapes the Service's one port"
    );
}

/// Whether `word` stands as a word of its own in `text`.
fn known_word(text: &str, word: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .any(|w| w == word)
}

#[test]
fn daemonset_uses_only_options_flowlat_has() {
    let out = run(Command::new(kit::run::binary()).arg("--help"));
    assert!(out.status.success(), "{}", text(&out));
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let known: BTreeSet<&str> = help
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .collect();

    let docs = documents();
    let pod = path(the_daemonset(&docs), &["spec", "template", "spec"]).expect("pod spec");
    let flowlat = container(pod, "flowlat");
    let args = strings(flowlat.get("args"));
    let unknown: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| a.starts_with("--") && !known.contains(a))
        .collect();
    assert!(
        unknown.is_empty(),
        "the DaemonSet gives flowlat options its --help does not list: {unknown:?}"
    );
    let value = |opt: &str| {
        let i = args
            .iter()
            .position(|a| *a == opt)
            .unwrap_or_else(|| panic!("no {opt}"));
        args[i + 1]
    };
    for key in value("--metrics-by").split(',') {
        assert!(
            known_word(&help, key),
            "--metrics-by {key}: flowlat's --help names no such key"
        );
    }
    assert_eq!(value("--metrics"), METRICS_ADDR);
    assert!(args.contains(&"--quiet"), "{args:?}");
    // The image's entry point is the binary, and the tag is this version.
    assert_eq!(strings(flowlat.get("command")), ["/flowlat"]);
    let image = flowlat.get("image").and_then(Json::as_str).expect("image");
    assert!(
        image.ends_with(&format!("/flowlat:{}", env!("CARGO_PKG_VERSION"))),
        "{image}: the tag build-image.sh gives this version"
    );
}

#[test]
fn daemonset_has_exactly_the_documented_privileges() {
    let docs = documents();
    let pod = path(the_daemonset(&docs), &["spec", "template", "spec"]).expect("pod spec");
    let yes = |j: Option<&Json>| matches!(j, Some(Json::Bool(true)));
    assert!(yes(pod.get("hostNetwork")) && yes(pod.get("hostPID")));
    assert!(pod.get("hostIPC").is_none(), "no host IPC namespace");
    assert!(
        !yes(pod.get("automountServiceAccountToken")),
        "flowlat gets no API token"
    );
    assert_eq!(
        path(pod, &["securityContext", "seccompProfile", "type"]).and_then(Json::as_str),
        Some("RuntimeDefault")
    );
    assert_eq!(
        pod.get("priorityClassName").and_then(Json::as_str),
        Some("system-node-critical")
    );

    let doc =
        std::fs::read_to_string(root().join("docs/kubernetes.md")).expect("docs/kubernetes.md");
    for c in items(pod.get("containers")) {
        let name = c.get("name").and_then(Json::as_str).expect("name");
        let sc = c
            .get("securityContext")
            .unwrap_or_else(|| panic!("{name}: no securityContext"));
        assert!(!yes(sc.get("privileged")), "{name} is privileged");
        assert!(
            matches!(sc.get("allowPrivilegeEscalation"), Some(Json::Bool(false))),
            "{name}"
        );
        assert!(
            yes(sc.get("readOnlyRootFilesystem")),
            "{name}: writable root"
        );
        assert_eq!(
            strings(path(sc, &["capabilities", "drop"])),
            ["ALL"],
            "{name}"
        );
        assert_eq!(
            path(sc, &["seccompProfile", "type"]).and_then(Json::as_str),
            Some("RuntimeDefault"),
            "{name}"
        );
        let mut added = strings(path(sc, &["capabilities", "add"]));
        added.sort();
        if name == "flowlat" {
            assert_eq!(added, CAPABILITIES, "flowlat's capabilities");
            for cap in CAPABILITIES {
                assert!(
                    doc.contains(&format!("CAP_{cap}")),
                    "docs/kubernetes.md does not explain CAP_{cap}"
                );
            }
            assert!(
                c.get("ports").is_none(),
                "flowlat's endpoint is not a container port"
            );
        } else {
            assert!(added.is_empty(), "{name} adds {added:?}");
            assert!(yes(sc.get("runAsNonRoot")), "{name} runs as root");
        }
    }

    // Every host path is mounted read-only, and none is / or /sys/fs/bpf.
    let host_paths: Vec<(&str, &str)> = items(pod.get("volumes"))
        .iter()
        .filter_map(|v| {
            let p = path(v, &["hostPath", "path"])?.as_str()?;
            Some((v.get("name")?.as_str()?, p))
        })
        .collect();
    let expected: BTreeSet<&str> = ["/sys/fs/cgroup", "/var/log/pods", "/run/netns"].into();
    assert_eq!(
        host_paths.iter().map(|(_, p)| *p).collect::<BTreeSet<_>>(),
        expected
    );
    for (volume, host) in &host_paths {
        for c in items(pod.get("containers")) {
            for m in items(c.get("volumeMounts")) {
                if m.get("name").and_then(Json::as_str) == Some(volume) {
                    assert!(yes(m.get("readOnly")), "{host} is mounted writable");
                }
            }
        }
        assert!(
            doc.contains(&format!("`{host}`")),
            "docs/kubernetes.md does not explain {host}"
        );
    }

    // flowlat listens on the loopback only; the proxy reaches it there.
    let proxy = container(pod, "kube-rbac-proxy");
    let pargs = strings(proxy.get("args"));
    assert!(
        pargs.contains(&format!("--upstream=http://{METRICS_ADDR}/").as_str()),
        "{pargs:?}"
    );
    assert!(pargs.contains(&"--allow-paths=/metrics"), "{pargs:?}");
    let image = proxy.get("image").and_then(Json::as_str).expect("image");
    assert!(image.contains(":v"), "{image}: a pinned version");
}

/// podman, or a docker whose daemon answers; None when there is neither.
fn engine() -> Option<&'static str> {
    let works = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works("podman", "--version") {
        Some("podman")
    } else if works("docker", "info") {
        Some("docker")
    } else {
        None
    }
}

/// Removes the test's image, however the test ends.
struct Image<'a> {
    engine: &'a str,
    tag: String,
}

impl Drop for Image<'_> {
    fn drop(&mut self) {
        let _ = Command::new(self.engine)
            .args(["rmi", "-f", &self.tag])
            .output();
    }
}

#[test]
fn image_from_scratch_holds_the_static_binary_alone() {
    let Some(engine) = engine() else {
        eprintln!(
            "SKIPPED: neither podman nor a working docker is installed, so the image is not \
             built (scripts/test.sh installs podman)"
        );
        return;
    };
    let bin = kit::musl::static_binary();
    let image = Image {
        engine,
        tag: format!("localhost/flowlat-test:{}", std::process::id()),
    };
    let out = run(Command::new("contrib/kubernetes/build-image.sh")
        .arg("--binary")
        .arg(bin)
        .args(["--tag", &image.tag]));
    assert!(out.status.success(), "build-image.sh: {}", text(&out));

    let inspect = |format: &str| {
        let out =
            run(Command::new(engine).args(["image", "inspect", "--format", format, &image.tag]));
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(inspect("{{json .Config.Entrypoint}}"), r#"["/flowlat"]"#);
    assert_eq!(inspect("{{.Config.User}}"), "0:0");
    assert_eq!(
        inspect("{{len .RootFS.Layers}}"),
        "1",
        "one layer: FROM scratch and the binary"
    );
    let labels = inspect("{{json .Config.Labels}}");
    let version = format!(
        r#""org.opencontainers.image.version":"{}""#,
        env!("CARGO_PKG_VERSION")
    );
    assert!(labels.contains(&version), "{labels}");

    // Its file system: /flowlat, executable, and nothing else.
    let created = run(Command::new(engine).args(["create", &image.tag]));
    assert!(created.status.success(), "{}", text(&created));
    let id = String::from_utf8_lossy(&created.stdout).trim().to_string();
    let scratch = kit::Scratch::new("image");
    let tar = scratch.path().join("rootfs.tar");
    let exported = run(Command::new(engine)
        .arg("export")
        .arg("-o")
        .arg(&tar)
        .arg(&id));
    let _ = run(Command::new(engine).args(["rm", &id]));
    assert!(exported.status.success(), "{}", text(&exported));
    let exported = run(Command::new("tar").arg("-tvf").arg(&tar));
    let listing = String::from_utf8_lossy(&exported.stdout).into_owned();
    assert!(exported.status.success(), "{}", text(&exported));
    let entries: Vec<&str> = listing.lines().collect();
    assert_eq!(entries.len(), 1, "{listing}");
    assert!(
        entries[0].starts_with("-r-xr-xr-x") && entries[0].ends_with(" flowlat"),
        "{listing}"
    );

    // Run it where this machine can run containers. The limits are lowered
    // because a sandbox without CAP_SYS_RESOURCE cannot raise them; runc is
    // the fallback where crun refuses a host with cgroup v1 and v2 mounted.
    let attempt = |extra: &[&str]| {
        run(Command::new(engine)
            .args(["run", "--rm", "--network", "none"])
            .args([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
            ])
            .args(extra)
            .args([image.tag.as_str(), "--version"]))
    };
    let mut ran = attempt(&[]);
    if !ran.status.success()
        && engine == "podman"
        && Command::new("runc").arg("--version").output().is_ok()
    {
        ran = attempt(&["--runtime", "runc"]);
    }
    if ran.status.success() {
        assert_eq!(
            String::from_utf8_lossy(&ran.stdout).trim(),
            format!("flowlat {}", env!("CARGO_PKG_VERSION"))
        );
    } else {
        eprintln!(
            "NOT RUN: {engine} built and listed the image but cannot run a container on this \
             machine ({}); the image's configuration and files were checked",
            text(&ran).trim()
        );
    }
}
