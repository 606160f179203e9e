//! deploy/: the systemd unit, the container image and the configuration they install agree with each other and with the daemon, and pass the real tools (systemd-analyze, systemd-sysusers, buildah) that scripts/test installs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use belfry_tests::{Daemon, PATIENCE, webhook_wasm};

const BIN: &str = env!("CARGO_BIN_EXE_belfry-under-test");

/// Where the unit and the image install the binary, the plugins, the configuration and the
/// state; deploy/belfry.toml names the same paths.
const BINARY: &str = "/usr/local/bin/belfry";
const PLUGIN_DIR: &str = "/usr/local/lib/belfry/plugins";
const CONFIG_DIR: &str = "/etc/belfry";
const STATE_DIR: &str = "/var/lib/belfry";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The `key=value` settings of one section of a unit file, in order (a key may repeat).
fn unit_section(text: &str, section: &str) -> Vec<(String, String)> {
    let mut current = String::new();
    let mut settings = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_string();
        } else if current == section {
            let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("deploy/belfry.service: `{line}` is not key=value"));
            settings.push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    settings
}

fn service() -> Vec<(String, String)> {
    unit_section(&read("deploy/belfry.service"), "Service")
}

/// Every value of `key` in the unit's `[Service]`.
fn values<'a>(service: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    service.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
}

/// One instruction of the Dockerfile: the stage it is in (0 = the first `FROM`), its name
/// (upper case) and its arguments, continuation lines joined.
struct Instruction {
    stage: usize,
    name: String,
    args: String,
}

fn dockerfile() -> Vec<Instruction> {
    let text = read("deploy/Dockerfile");
    let mut instructions = Vec::new();
    let mut stage = None::<usize>;
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                pending.push_str(part);
                pending.push(' ');
                continue;
            }
            None => pending.push_str(trimmed),
        }
        let logical = std::mem::take(&mut pending);
        let (name, args) = logical.split_once(char::is_whitespace).unwrap_or((logical.as_str(), ""));
        let name = name.to_uppercase();
        if name == "FROM" {
            stage = Some(stage.map_or(0, |s| s + 1));
        }
        // `ARG` before the first `FROM` sets the images; count it with the first stage.
        instructions.push(Instruction { stage: stage.unwrap_or(0), name, args: args.trim().to_string() });
    }
    instructions
}

/// deploy/belfry.toml with its absolute paths moved to where this test run has them: the
/// plugins it built, and `state` for the state directory.
fn shipped_config(state: &Path) -> String {
    let plugins = webhook_wasm().parent().expect("the plugins' directory");
    read("deploy/belfry.toml").replace(PLUGIN_DIR, &plugins.display().to_string()).replace(STATE_DIR, &state.display().to_string())
}

/// The members of the plugins' workspace: every channel plugin a build makes.
fn plugin_names() -> Vec<String> {
    let manifest: toml::Table = read("plugins/Cargo.toml").parse().expect("plugins/Cargo.toml is TOML");
    let members = manifest["workspace"]["members"].as_array().expect("plugins/Cargo.toml: workspace.members");
    members.iter().map(|m| m.as_str().expect("a member is a string").to_string()).collect()
}

/// Whether `tool` is on PATH. A test that needs it says why it skips when it is not:
/// scripts/test installs every tool these tests use, so a skip means a machine without it.
fn installed(tool: &str) -> bool {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIPPED: `{tool}` is not installed (scripts/test installs it as root with apt-get)");
    }
    found
}

fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn the_unit_runs_as_its_own_user_in_a_read_only_system_and_reloads_with_sighup() {
    let service = service();
    let one = |key: &str| {
        let found = values(&service, key);
        assert_eq!(found.len(), 1, "deploy/belfry.service: expected one {key}=, found {found:?}");
        found[0]
    };
    for (key, expected) in [
        ("User", "belfry"),
        ("Group", "belfry"),
        ("StateDirectory", "belfry"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallArchitectures", "native"),
        ("Restart", "on-failure"),
        // A configuration problem exits 2; restarting does not fix it.
        ("RestartPreventExitStatus", "2"),
    ] {
        assert_eq!(one(key), expected, "deploy/belfry.service: {key}=");
    }
    assert!(values(&service, "SystemCallFilter").contains(&"@system-service"), "SystemCallFilter=@system-service");
    assert!(one("LimitNOFILE").parse::<u32>().is_ok_and(|n| n >= 4096), "LimitNOFILE= leaves room for max_connections");
    // wasmtime maps the plugins' compiled code executable: W^X enforcement would stop every plugin.
    assert!(values(&service, "MemoryDenyWriteExecute").is_empty(), "MemoryDenyWriteExecute= must stay unset (wasmtime's JIT)");

    assert_eq!(one("ExecStart"), format!("{BINARY} serve --config {CONFIG_DIR} --log-format json"));
    assert_eq!(values(&service, "ExecStartPre"), [format!("{BINARY} check --config {CONFIG_DIR}")]);
    let reload = values(&service, "ExecReload");
    assert_eq!(reload.last(), Some(&"/bin/kill -HUP $MAINPID"), "ExecReload= ends with SIGHUP: {reload:?}");
    // Everything the daemon writes is under the state directory the unit makes writable.
    let config: toml::Table = read("deploy/belfry.toml").parse().expect("deploy/belfry.toml is TOML");
    for (section, key) in [("store", "path"), ("audit", "path"), ("runtime", "cache_dir")] {
        let path = config[section][key].as_str().unwrap_or_else(|| panic!("deploy/belfry.toml: {section}.{key} is set"));
        assert!(
            path.starts_with(&format!("/var/lib/{}/", one("StateDirectory"))),
            "deploy/belfry.toml: {section}.{key} = {path} is outside the unit's StateDirectory (read-only under ProtectSystem=strict)"
        );
    }
}

#[test]
fn the_unit_passes_systemd_analyze_verify_and_scores_ok_on_security() {
    if !installed("systemd-analyze") {
        return;
    }
    // verify checks that every Exec* command exists and is executable: point them at the
    // binary under test.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("belfry.service");
    std::fs::write(&unit, read("deploy/belfry.service").replace(BINARY, BIN)).unwrap();
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&unit));
    // An unknown or misspelt key is only a warning ("Unknown key ..., ignoring") with status 0.
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(said.trim().is_empty(), "systemd-analyze verify deploy/belfry.service warns:\n{said}");

    let out = run(Command::new("systemd-analyze").args(["security", "--offline=yes", "--no-pager"]).arg(&unit));
    let report = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for belfry.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{report}"));
    // 1.4 when written; the network (plugins reach the internet) and the JIT (no W^X) account
    // for most of what is left.
    assert!(exposure <= 2.0, "systemd-analyze security rates deploy/belfry.service {exposure} (was 1.4):\n{report}");
}

#[test]
fn sysusers_creates_the_user_the_unit_runs_as() {
    if !installed("systemd-sysusers") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    let sysusers = repo().join("deploy/belfry.sysusers").canonicalize().unwrap();
    run(Command::new("systemd-sysusers").arg(format!("--root={}", root.path().display())).arg(sysusers));
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let user = passwd.lines().find(|l| l.starts_with("belfry:")).unwrap_or_else(|| panic!("no belfry user in:\n{passwd}"));
    let fields: Vec<&str> = user.split(':').collect();
    assert_eq!(fields[5], STATE_DIR, "its home is the state directory: {user}");
    assert!(fields[6].ends_with("nologin"), "no login shell: {user}");
    assert_eq!(values(&service(), "User"), ["belfry"]);
}

#[test]
fn the_image_is_multi_stage_non_root_with_the_plugins_and_a_health_check() {
    let instructions = dockerfile();
    let last = instructions.iter().map(|i| i.stage).max().unwrap();
    assert!(last >= 1, "deploy/Dockerfile is multi-stage: a build stage and a runtime stage");
    let runtime: Vec<&Instruction> = instructions.iter().filter(|i| i.stage == last).collect();
    let args_of = |name: &str| runtime.iter().filter(|i| i.name == name).map(|i| i.args.as_str()).collect::<Vec<_>>();

    let user = args_of("USER");
    let user = user.last().expect("the runtime stage sets USER");
    assert!(!["root", "0", "0:0", "root:root"].contains(user), "the image runs as root: USER {user}");
    assert!(user.split(':').all(|id| id.parse::<u32>().is_ok_and(|id| id > 0)), "USER {user}: numeric, for runAsNonRoot");
    let health = args_of("HEALTHCHECK");
    assert!(health.len() == 1 && health[0].contains("belfry-healthcheck"), "HEALTHCHECK runs deploy/belfry-healthcheck: {health:?}");

    // The build stage builds the binary and every plugin; the runtime stage installs both where
    // deploy/belfry.toml looks for them.
    let build: String = instructions.iter().filter(|i| i.stage < last && i.name == "RUN").map(|i| i.args.as_str()).collect();
    assert!(build.contains("-p belfry") && build.contains("--manifest-path plugins/Cargo.toml"), "the build stage: {build}");
    let copies = args_of("COPY");
    assert!(copies.iter().any(|c| c.starts_with("--from=build") && c.ends_with(&format!(" {BINARY}"))), "{copies:?}");
    assert!(copies.iter().any(|c| c.starts_with("--from=build") && c.ends_with(&format!(" {PLUGIN_DIR}/"))), "{copies:?}");
    assert!(copies.contains(&"deploy/belfry.toml /etc/belfry/belfry.toml"), "{copies:?}");
    let config: toml::Table = read("deploy/belfry.toml").parse().unwrap();
    let plugins = config["plugins"].as_table().expect("deploy/belfry.toml: [plugins]");
    let mut declared: Vec<&String> = plugins.keys().collect();
    declared.sort();
    let mut made = plugin_names();
    made.sort();
    assert_eq!(declared, made.iter().collect::<Vec<_>>(), "deploy/belfry.toml declares every plugin the build makes");
    for (name, plugin) in plugins {
        assert_eq!(plugin["path"].as_str(), Some(format!("{PLUGIN_DIR}/{name}.wasm").as_str()), "plugins.{name}.path");
    }

    assert_eq!(args_of("VOLUME"), [format!("[\"{STATE_DIR}\"]")]);
    let port = config["server"]["listen"].as_str().and_then(|l| l.rsplit_once(':')).map(|(_, port)| port).unwrap();
    assert_eq!(args_of("EXPOSE"), [port], "EXPOSE is the configured port");
    assert_eq!(args_of("ENTRYPOINT"), [format!("[\"{BINARY}\"]")]);
    assert_eq!(args_of("CMD"), [format!("[\"serve\", \"--config\", \"{CONFIG_DIR}\", \"--log-format\", \"json\"]")]);

    // Every file copied from the build context exists, and the ignore file lets it through.
    let ignore = read("deploy/Dockerfile.dockerignore");
    for copy in instructions.iter().filter(|i| i.name == "COPY" && !i.args.starts_with("--from")) {
        let words: Vec<&str> = copy.args.split_whitespace().collect();
        for source in &words[..words.len() - 1] {
            assert!(repo().join(source).exists(), "deploy/Dockerfile copies {source}, which is not in the repository");
            assert!(ignore.lines().any(|l| l == format!("!{source}")), "deploy/Dockerfile.dockerignore does not let {source} through");
        }
    }
}

#[test]
fn the_shipped_config_passes_check() {
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("belfry.toml"), shipped_config(state.path())).unwrap();
    let out = run(Command::new(BIN).args(["check", "--config"]).arg(dir.path()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let plugins = plugin_names().len();
    assert!(stdout.contains(&format!("1 tenant(s), {plugins} plugin(s), 1 receiver(s) validated")), "{stdout}");
    assert!(state.path().join("cache").is_dir(), "check compiles the plugins into the state directory's cache");
}

#[test]
fn the_shipped_config_serves_answers_the_health_check_and_reloads_on_the_units_signal() {
    let state = tempfile::tempdir().unwrap();
    let config = shipped_config(state.path());
    assert!(config.contains("listen = \"0.0.0.0:9093\""), "deploy/belfry.toml listens on 0.0.0.0:9093");
    let daemon = Daemon::start(BIN, &config.replace("0.0.0.0:9093", "127.0.0.1:0")).expect("the shipped config starts");
    assert!(state.path().join("belfry.redb").exists(), "the store is in the state directory");

    let health = |addr: &str| Command::new("bash").arg(repo().join("deploy/belfry-healthcheck")).arg(addr).output().unwrap();
    let out = health(&daemon.addr.to_string());
    assert!(out.status.success(), "belfry-healthcheck {}: {}", daemon.addr, String::from_utf8_lossy(&out.stderr));
    // And it fails where nothing answers: a port just freed.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    assert!(!health(&free.to_string()).status.success(), "belfry-healthcheck passes with no daemon at {free}");

    // The unit's ExecReload=, with $MAINPID the daemon's.
    let reload = values(&service(), "ExecReload").last().unwrap().replace("$MAINPID", &daemon.pid().to_string());
    let words: Vec<&str> = reload.split_whitespace().collect();
    run(Command::new(words[0]).args(&words[1..]));
    let deadline = std::time::Instant::now() + PATIENCE;
    while !daemon.stderr().contains("configuration reloaded") {
        assert!(std::time::Instant::now() < deadline, "`{reload}` did not reload:\n{}", daemon.stderr());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether this process is root: debootstrap and buildah's chroot isolation need it (CI runs
/// as root); says why the test skips when it is not.
fn root() -> bool {
    let uid = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    if uid != "0" {
        eprintln!("SKIPPED: debootstrap and buildah's chroot isolation need root (CI runs as root)");
    }
    uid == "0"
}

/// A local image tag that is removed when dropped.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("buildah").args(["rmi", "--force", self.0.as_str()]).output();
    }
}

fn image_exists(name: &str) -> bool {
    Command::new("buildah").args(["inspect", "--type", "image", name]).output().is_ok_and(|o| o.status.success())
}

/// The machine's Debian release (`bookworm`): the binary under test links its glibc.
fn debian_release() -> String {
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    release.lines().find_map(|l| l.strip_prefix("VERSION_CODENAME=")).unwrap_or("bookworm").trim_matches('"').to_string()
}

/// A Debian base image of the machine's own release, made once with debootstrap from Debian's
/// archive and kept (no container registry is reachable here).
fn debian_base_image() -> String {
    let release = debian_release();
    let name = format!("localhost/belfry-test/debian:{release}");
    if image_exists(&name) {
        return name;
    }
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    run(Command::new("debootstrap").args(["--variant=minbase", release.as_str()]).arg(&rootfs).arg("http://deb.debian.org/debian"));
    let tar = dir.path().join("rootfs.tar");
    run(Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg("."));
    let container = String::from_utf8(run(Command::new("buildah").args(["from", "scratch"])).stdout).unwrap().trim().to_string();
    run(Command::new("buildah").args(["add", container.as_str()]).arg(&tar).arg("/"));
    run(Command::new("buildah").args(["commit", "--quiet", container.as_str(), name.as_str()]));
    let _ = Command::new("buildah").args(["rm", container.as_str()]).output();
    name
}

/// `buildah build` of deploy/Dockerfile from this checkout, tagged `tag`, with `extra` arguments.
fn build_image(tag: &str, extra: &[String]) -> Image {
    let image = Image(tag.to_string());
    run(Command::new("buildah")
        // The Docker format: the OCI one has no HEALTHCHECK.
        .args(["build", "--isolation", "chroot", "--pull=never", "--format", "docker", "--quiet"])
        .arg("--ignorefile")
        .arg(repo().join("deploy/Dockerfile.dockerignore"))
        .args(extra)
        .arg("-f")
        .arg(repo().join("deploy/Dockerfile"))
        .args(["-t", tag])
        .arg(repo()));
    image
}

/// In `image`: commands run as its user, `belfry check` passes on its configuration with its
/// plugins, its HEALTHCHECK command passes against `belfry serve`, and the configuration is
/// read-only for the daemon.
fn check_image(image: &str) {
    let inspect = run(Command::new("buildah").args(["inspect", "--type", "image", image]));
    let inspect: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let config = &inspect["Docker"]["config"];
    assert_eq!(config["User"], "10001:10001");
    let health: Vec<String> = config["Healthcheck"]["Test"]
        .as_array()
        .expect("the image keeps its HEALTHCHECK")
        .iter()
        .map(|v| v.as_str().unwrap().into())
        .collect();
    assert_eq!(health[0], "CMD");

    let container =
        String::from_utf8(run(Command::new("buildah").args(["from", "--pull=never", image])).stdout).unwrap().trim().to_string();
    let in_image = |args: &[&str]| {
        let output = Command::new("buildah").args(["run", "--isolation", "chroot", container.as_str(), "--"]).args(args).output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let (_, id, _) = in_image(&["id", "-u"]);
        assert_eq!(id.trim(), "10001", "commands in the image run as its user");
        let (ok, stdout, stderr) = in_image(&[BINARY, "check", "--config", CONFIG_DIR]);
        assert!(ok, "belfry check in the image:\n{stdout}{stderr}");
        assert!(stdout.contains(&format!("{} plugin(s)", plugin_names().len())), "{stdout}");
        // Serve the image's own configuration (on a free port: buildah's chroot shares this
        // machine's network) and run the image's HEALTHCHECK command against it.
        let script = r#"
            sed 's/^listen = .*/listen = "127.0.0.1:0"/' /etc/belfry/belfry.toml > /tmp/belfry.toml
            belfry serve --config /tmp/belfry.toml > /tmp/serve.out 2> /tmp/serve.err &
            pid=$!
            for _ in $(seq 300); do
                addr=$(sed -n 's#^belfry listening on http://##p' /tmp/serve.out)
                [ -n "$addr" ] && break
                sleep 0.1
            done
            BELFRY_HEALTH_ADDR=$addr "$@"
            status=$?
            kill $pid; wait $pid
            echo "health check: $status at $addr"; cat /tmp/serve.err
            exit $status
        "#;
        let mut args = vec!["bash", "-c", script, "serve-and-check"];
        args.extend(health[1..].iter().map(String::as_str));
        let (ok, stdout, stderr) = in_image(&args);
        assert!(ok, "the image's health check fails against its own daemon:\n{stdout}{stderr}");
        let (_, _, stderr) = in_image(&["touch", "/etc/belfry/belfry.toml"]);
        assert!(stderr.contains("Permission denied"), "the configuration is not writable by the daemon: {stderr}");
    }));
    let _ = Command::new("buildah").args(["rm", container.as_str()]).output();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// deploy/Dockerfile's runtime stage, built by buildah from this checkout. The build stage is
/// replaced (`--build-context build=DIR`) by what this test run built, laid out as the build
/// stage leaves it: the binary under test in `/out/bin`, the plugins in `/out/plugins`.
/// `the_whole_image_builds_from_source` runs the build stage too.
#[test]
fn the_image_builds_runs_as_its_user_passes_check_and_its_health_check() {
    if !installed("buildah") || !installed("debootstrap") || !root() {
        return;
    }
    let base = debian_base_image();
    let build = tempfile::tempdir().unwrap();
    let out = build.path().join("out");
    std::fs::create_dir_all(out.join("bin")).unwrap();
    std::fs::create_dir_all(out.join("plugins")).unwrap();
    std::fs::copy(BIN, out.join("bin/belfry")).unwrap();
    let built = webhook_wasm().parent().unwrap();
    for name in plugin_names() {
        std::fs::copy(built.join(format!("{name}.wasm")), out.join(format!("plugins/{name}.wasm"))).unwrap();
    }
    let image = build_image(
        &format!("localhost/belfry-test/belfry:{}", std::process::id()),
        &["--build-context".into(), format!("build={}", build.path().display()), "--build-arg".into(), format!("RUNTIME_IMAGE={base}")],
    );
    check_image(&image.0);
}

/// The whole deploy/Dockerfile, build stage included. The `rust` image is out of reach (no
/// container registry), so a local one stands in for it, made as the official one is: Debian
/// of this machine's release, gcc, and rustup's 1.95.0 toolchain. A release build of belfry and
/// the plugins inside the image takes about 20 minutes on 2 cores, so it runs only when asked:
/// `cargo nextest run -p belfry-tests --test deploy --run-ignored ignored-only`.
#[test]
#[ignore = "a release build inside the image: about 20 minutes on 2 cores"]
fn the_whole_image_builds_from_source() {
    if !installed("buildah") || !installed("debootstrap") || !root() {
        return;
    }
    let base = debian_base_image();
    let rust = format!("localhost/belfry-test/rust:1.95.0-{}", debian_release());
    if !image_exists(&rust) {
        let dir = tempfile::tempdir().unwrap();
        let arch = std::env::consts::ARCH;
        std::fs::write(
            dir.path().join("Containerfile"),
            format!(
                "FROM {base}\n\
                 RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl gcc libc6-dev && rm -rf /var/lib/apt/lists/*\n\
                 ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
                 RUN curl -sSf -o /tmp/rustup-init https://static.rust-lang.org/rustup/dist/{arch}-unknown-linux-gnu/rustup-init \
                     && chmod +x /tmp/rustup-init && /tmp/rustup-init -y --no-modify-path --profile minimal --default-toolchain 1.95.0 && rm /tmp/rustup-init\n"
            ),
        )
        .unwrap();
        run(Command::new("buildah")
            .args(["build", "--isolation", "chroot", "--pull=never", "--quiet", "-t", rust.as_str()])
            .arg(dir.path()));
    }
    let image = build_image(
        &format!("localhost/belfry-test/belfry-full:{}", std::process::id()),
        &["--build-arg".into(), format!("RUST_IMAGE={rust}"), "--build-arg".into(), format!("RUNTIME_IMAGE={base}")],
    );
    check_image(&image.0);
}
