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
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "a clean check prints its result only, no log lines: {stderr}");
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

#[test]
fn a_url_outside_the_receivers_allowed_hosts_is_a_problem_of_that_field() {
    let dir = tempfile::tempdir().unwrap();
    let good_script = "fn route(alert) { \"ops\" }\n";
    write(dir.path(), &[("belfry.toml", &config("https://hooks.example.org/x")), ("route.rhai", good_script)]);
    let out = Command::new(BIN).args(["check", "--config"]).arg(dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let toml = dir.path().join("belfry.toml");
    let expected =
        format!("{}:8: receivers[0].config.url: host `hooks.example.org:443` is not in allowed_hosts of receiver `ops`", toml.display());
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn template_render_previews_the_request_with_secrets_masked_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[plugins.webhook]\npath = \"{}\"\n\n[templates]\nlocale = \"fr\"\ntimezone = \"Europe/Paris\"\n\n[[receivers]]\nname = \"ops\"\nplugin = \"webhook\"\nallowed_hosts = [\"127.0.0.1:9\"]\nallow_private_addresses = true\ntemplates = {{ title = \"{{{{ commonLabels.alertname }}}} chez {{{{ tenant }}}}\" }}\nconfig = {{ url = \"http://127.0.0.1:9/hook\", bearer_token = \"tok-5ecr3t-value\" }}\n\n[route]\nreceiver = \"ops\"\n",
        webhook_wasm().display()
    );
    write(
        dir.path(),
        &[("belfry.toml", &config), ("alert.json", r#"{"labels":{"alertname":"DiskFull"},"annotations":{"summary":"Disque plein"}}"#)],
    );
    let out = Command::new(BIN)
        .args(["template", "render", "--config"])
        .arg(dir.path())
        .args(["--receiver", "ops"])
        .arg(dir.path().join("alert.json"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("── title\nDiskFull chez default"), "{stdout}");
    assert!(stdout.contains("[ALERTE] Disque plein") && stdout.contains("depuis "), "the French default body: {stdout}");
    assert!(stdout.contains("── request 1 (not sent)\nPOST http://127.0.0.1:9/hook"), "{stdout}");
    assert!(stdout.contains("Authorization: Bearer ***") || stdout.contains("authorization: Bearer ***"), "{stdout}");
    assert!(!stdout.contains("tok-5ecr3t-value"), "{stdout}");
    assert!(stdout.contains("\"commonAnnotations\""), "the plugin's real payload: {stdout}");
    assert!(stdout.contains("── note: plugin `webhook` does not show a title or body"), "{stdout}");
    assert!(stdout.contains("── plugin result\ndelivered (status 200, remote id none)") && !stdout.contains("Some("), "{stdout}");
    // The acknowledge link a firing notification carries, in the preview and in the webhook's payload.
    let link = stdout.split("── acknowledge link").nth(1).and_then(|rest| rest.lines().nth(1)).unwrap_or_default();
    assert!(link.starts_with("http://") && link.contains("/api/belfry/v1/ack/"), "{stdout}");
    assert!(stdout.contains(&format!("\"ackURL\": \"{link}\"")), "{stdout}");

    // A template that does not parse is a configuration problem naming the receiver's key.
    write(dir.path(), &[("belfry.toml", &config.replace("chez {{ tenant }}", "chez {{ tenant }"))]);
    let out = Command::new(BIN).args(["check", "--config"]).arg(dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("receivers[0].templates.title: syntax error"), "{stderr}");
    assert!(stderr.contains("at line 1 of the template") && !stderr.contains("(line 1)"), "the line once: {stderr}");

    // One that parses but cannot render: caught by rendering a sample alert.
    let unrenderable = config.replace("chez {{ tenant }}", "à {{ now|datetime('Mars/Olympus') }}");
    write(dir.path(), &[("belfry.toml", &unrenderable)]);
    let out = Command::new(BIN).args(["check", "--config"]).arg(dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("receivers[0].templates: rendering a sample alert failed") && stderr.contains("Mars/Olympus"), "{stderr}");
}

#[test]
fn serve_takes_the_configuration_directory_like_check() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        config("https://hooks.example.com/x").replace("[plugins.webhook]", "[server]\nlisten = \"127.0.0.1:0\"\n\n[plugins.webhook]");
    write(dir.path(), &[("belfry.toml", &config), ("route.rhai", "fn route(alert) { \"ops\" }\n")]);
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut first).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(first.starts_with("belfry listening on http://127.0.0.1:"), "{first:?}");
}

#[test]
fn check_reports_the_problems_of_every_layer_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    // A TOML typo (an unknown key), a broken cross-reference in a tenant, a URL its plugin
    // refuses, and a script returning a receiver the tenant does not have: four layers.
    let main =
        config("ftp://hooks.example.com/x").replace("[route]\n", "[route]\ngruop_wait = \"5m\"\n") + "\n[tenants]\ndir = \"tenants\"\n";
    let tenant = "[[receivers]]\nname = \"chat\"\nplugin = \"webhook\"\nallowed_hosts = [\"hooks.example.com\"]\nconfig = { url = \"https://hooks.example.com/c\" }\nsend_resolvd = true\n\n[route]\nreceiver = \"nobody\"\n";
    let script = "fn route(alert) {\n  if alert.labels.team == \"db\" {\n    \"opps\"\n  }\n}\n";
    write(dir.path(), &[("belfry.toml", &main), ("route.rhai", script), ("tenants/checkout/tenant.toml", tenant)]);
    let out = Command::new(BIN).args(["check", "--config"]).arg(dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let main_file = dir.path().join("belfry.toml");
    let tenant_file = dir.path().join("tenants/checkout/tenant.toml");
    for expected in [
        format!("{}:11: route.gruop_wait: unknown field `gruop_wait`", main_file.display()),
        format!("{}:6: receivers[0].send_resolvd: unknown field `send_resolvd`", tenant_file.display()),
        format!("{}:9: route.receiver: no receiver is named `nobody`", tenant_file.display()),
        format!("{}:8: receivers[0].config.url: ", main_file.display()),
        format!("{}:3: route() can return the receiver `opps`", dir.path().join("route.rhai").display()),
    ] {
        assert!(stderr.contains(&expected), "missing `{expected}` in:\n{stderr}");
    }
    assert!(stderr.contains("the configuration has 5 problem(s)"), "{stderr}");
}

#[test]
fn a_tenant_checks_their_own_directory_against_the_platforms_configuration() {
    let platform = tempfile::tempdir().unwrap();
    // The platform's configuration: plugins, and secrets only its servers can resolve.
    let main = format!(
        "[plugins.webhook]\npath = \"{}\"\n\n[[receivers]]\nname = \"ops\"\nplugin = \"webhook\"\nallowed_hosts = [\"hooks.example.com\"]\nconfig = {{ url = \"https://hooks.example.com/x\", bearer_token = \"${{env:BELFRY_TEST_UNSET_TOKEN}}\" }}\n\n[route]\nreceiver = \"ops\"\n\n[tenants]\ndir = \"tenants\"\n",
        webhook_wasm().display()
    );
    let deployed = "[[receivers]]\nname = \"checkout-chat\"\nplugin = \"webhook\"\nallowed_hosts = [\"hooks.example.com\"]\nconfig = { url = \"https://hooks.example.com/c\" }\n\n[route]\nreceiver = \"checkout-chat\"\n";
    write(platform.path(), &[("belfry.toml", &main), ("tenants/checkout/tenant.toml", deployed)]);
    // The tenant's own repository, with a change: a script with a typo in a branch no
    // self-test covers.
    let repo = tempfile::tempdir().unwrap();
    let tenant = format!("{deployed}script = \"route.rhai\"\n");
    let script = "fn route(alert) {\n  if alert.labels.severity == \"page\" {\n    return \"checkout-chatt\";\n  }\n}\n";
    write(repo.path(), &[("checkout/tenant.toml", &tenant), ("checkout/route.rhai", script)]);
    let tenant_dir = repo.path().join("checkout");

    let out = Command::new(BIN).args(["check", "--config"]).arg(platform.path()).arg("--tenant").arg(&tenant_dir).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let expected = format!("{}:3: route() can return the receiver `checkout-chatt`", tenant_dir.join("route.rhai").display());
    assert!(stderr.contains(&expected), "the daemon's message, at the tenant's file: {stderr}");
    assert!(!stderr.contains("BELFRY_TEST_UNSET_TOKEN"), "the platform's own problems are not the tenant's: {stderr}");
    assert!(stderr.contains("the configuration has 1 problem(s)"), "{stderr}");

    write(repo.path(), &[("checkout/route.rhai", &script.replace("chatt", "chat"))]);
    let out = Command::new(BIN).args(["check", "--config"]).arg(platform.path()).arg("--tenant").arg(&tenant_dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.starts_with("ok: tenant `checkout`") && stdout.contains("1 receiver(s) validated by their plugins, 1 routing script(s)"),
        "{stdout}"
    );

    // A directory that is not a tenant's says so.
    let out = Command::new(BIN).args(["check", "--config"]).arg(platform.path()).arg("--tenant").arg(repo.path()).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no tenant.toml here"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_webhook_url_that_is_its_own_secret_is_required_and_held_against_allowed_hosts() {
    // `plugin inspect` marks Discord's webhook URL required, secret and a URL.
    let out = Command::new(BIN).args(["plugin", "inspect"]).arg(discord_wasm()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| l.trim_start().starts_with("webhook_url")).unwrap_or_default();
    assert!(line.contains(" url ") && line.contains("required,secret"), "{stdout}");

    // A host the receiver may not reach is found at check, and the URL (a credential) is not shown.
    let dir = tempfile::tempdir().unwrap();
    let token = "Zx9SECRETv4lue0123456789abcdefAB";
    let config = format!(
        "[plugins.discord]\npath = \"{}\"\n\n[[receivers]]\nname = \"dc\"\nplugin = \"discord\"\nallowed_hosts = [\"discord.com\"]\nconfig = {{ webhook_url = \"https://discordapp.com/api/webhooks/1/{token}\" }}\n\n[route]\nreceiver = \"dc\"\n",
        discord_wasm().display()
    );
    write(dir.path(), &[("belfry.toml", &config)]);
    let out = Command::new(BIN).args(["check", "--config"]).arg(dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("receivers[0].config.webhook_url: ") && stderr.contains("is not in allowed_hosts of receiver `dc`"),
        "{stderr}"
    );
    assert!(!stderr.contains(token), "{stderr}");
}
