//! Compiles every plugin (`plugins/`) and test fixture (`tests/fixtures/`) to components, and
//! exposes their paths as `BELFRY_WASM_<NAME>` environment variables to the tests. No `.wasm`
//! is checked in: the tests always run against components built from the current sources.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let tests_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = tests_dir.parent().unwrap().to_path_buf();
    // A target dir of its own: the outer cargo holds the lock on the main one.
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target")).join("wasm");
    for watched in ["wit", "plugin-sdk/src", "plugin-sdk/Cargo.toml", "plugins", "tests/fixtures"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    for workspace in [root.join("plugins"), tests_dir.join("fixtures")] {
        build_components(&workspace, &target);
    }
    let out = target.join("wasm32-wasip2").join("release");
    for name in
        ["webhook", "slack", "pagerduty", "discord", "telegram", "opsgenie", "sms", "msteams", "email", "misbehave", "hostile", "echo"]
    {
        let path = out.join(format!("{name}.wasm"));
        assert!(path.exists(), "{} was not built", path.display());
        println!("cargo:rustc-env=BELFRY_WASM_{}={}", name.to_uppercase(), path.display());
    }
}

fn build_components(workspace: &Path, target: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target)
        // Flags meant for the host build must not leak into the guest build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("running cargo to build the plugins");
    if !status.success() {
        panic!("building the components in {} failed: {}", workspace.display(), failure_hint());
    }
}

/// Why the component build may have failed: the one cause cargo's own error does not name
/// plainly (the target's standard library not installed), or else a pointer to cargo's error.
fn failure_hint() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(rustc).args(["--print", "sysroot"]).output().ok().filter(|o| o.status.success());
    let installed = sysroot.is_some_and(|o| {
        let root = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        root.join("lib/rustlib/wasm32-wasip2").is_dir()
    });
    if installed {
        "cargo's error above names the cause (a compile error in a plugin, a full disk...); `cargo build --release --target wasm32-wasip2` in that directory repeats it".into()
    } else {
        "the wasm32-wasip2 target is not installed; run `rustup target add wasm32-wasip2` (scripts/test does)".into()
    }
}
