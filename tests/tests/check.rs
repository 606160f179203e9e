//! Black-box: `belfry check` validates a whole configuration without starting, naming every problem by file and line.

use std::process::Command;

use belfry_tests::*;

const BIN: &str = env!("CARGO_BIN_EXE_belfry-under-test");

fn write(dir: &std::path::Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

fn config(url: &str) -> String {
    format!(
        "[plugins.webhook]\npath = \"{}\"\n\n[[receivers]]\nname = \"ops\"\nplugin = \"webhook\"\nallowed_hosts = [\"hooks.example.com\"]\nconfig = {{ url = \"{url}\" }}\n\n[route]\nreceiver = \"ops\"\nscript = \"route.rhai\"\n",
        webhook_wasm().display()
    )
}

#[test]
fn a_clean_configuration_passes_and_a_broken_one_lists_every_problem_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let good_script = "fn route(alert) { \"ops\" }\nfn tests() { [#{ labels: #{alertname: \"A\"}, expect: \"ops\" }] }\n";
    write(dir.path(), &[("belfry.toml", &config("https://hooks.example.com/x")), ("route.rhai", good_script)]);
    let out = Command::new(BIN).args(["check", "--config"]).arg(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("1 receiver(s) validated by their plugins, 1 routing script(s) with their self-tests"), "{stdout}");
    assert!(!dir.path().join("data").exists(), "check opens no store");

    // Two problems in two files: a URL the plugin rejects, a self-test the script fails.
    let bad_script = "fn route(alert) {\n  \"ops\"\n}\nfn tests() { [#{ labels: #{alertname: \"A\"}, expect: \"pager\" }] }\n";
    write(dir.path(), &[("belfry.toml", &config("ftp://hooks.example.com/x")), ("route.rhai", bad_script)]);
    let out = Command::new(BIN).args(["check", "--config"]).arg(dir.path().join("belfry.toml")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let toml = dir.path().join("belfry.toml");
    assert!(stderr.contains(&format!("{}:8: receivers[0].config.url: ", toml.display())), "{stderr}");
    assert!(stderr.contains("route.rhai:") && stderr.contains("expected receivers [\"pager\"]"), "{stderr}");
    assert!(stderr.contains("the configuration has 2 problem(s)"), "{stderr}");
}
