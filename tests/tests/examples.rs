//! The example configurations load, write nothing into the source tree, and the demo tokens their comments give match their hashes.

use std::path::Path;

use belfry::config::Config;

fn example(path: &str) -> Config {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    Config::load(&file).unwrap_or_else(|e| panic!("{path} does not load:\n{e}"))
}

#[test]
fn single_tenant_example_loads() {
    let config = example("examples/belfry.toml");
    let tenants = config.tenants();
    assert_eq!(tenants.len(), 1);
    assert_eq!(tenants[0].name, "default");
    assert!(tenants[0].tokens.is_empty(), "the demo is open, like a fresh Alertmanager");
}

#[test]
fn multi_tenant_example_loads_and_its_demo_tokens_match() {
    let config = example("examples/multi-tenant/belfry.toml");
    let names: Vec<&str> = config.tenants().iter().map(|t| t.name).collect();
    assert_eq!(names, ["payments", "search"]);
    let hash = |token: &str| format!("sha256:{}", belfry::tenant::hash_token(token).iter().map(|b| format!("{b:02x}")).collect::<String>());
    assert_eq!(config.server.admin_tokens, [hash("admin-demo-token")]);
    for t in config.tenants() {
        assert_eq!(t.tokens, [hash(&format!("{}-demo-token", t.name))]);
    }
}

#[test]
fn examples_write_only_under_target() {
    let root = normalize(&Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    for path in ["examples/belfry.toml", "examples/multi-tenant/belfry.toml"] {
        let config = example(path);
        for (key, written) in
            [("store.path", &config.store.path), ("audit.path", &config.audit.path), ("runtime.cache_dir", &config.runtime.cache_dir)]
        {
            let resolved = normalize(&config.resolve(written));
            assert!(resolved.starts_with(root.join("target")), "{path}: {key} writes into {}, not under target/", resolved.display());
        }
    }
}

/// `path` with its `.` and `..` components resolved by name (the files need not exist).
fn normalize(path: &Path) -> std::path::PathBuf {
    let mut out = std::path::PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}
