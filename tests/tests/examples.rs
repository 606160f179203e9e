//! The example configurations load, and the demo tokens their comments give match their hashes.

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
