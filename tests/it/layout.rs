//! Architecture checks: the dependency direction of CONVENTIONS.md holds.

fn manifest(package: &str) -> String {
    std::fs::read_to_string(format!("{}/../{package}/Cargo.toml", env!("CARGO_MANIFEST_DIR"))).expect("manifest")
}

fn dependencies(manifest: &str) -> String {
    // Everything from [dependencies] to the next section.
    manifest.split("[dependencies]").nth(1).map(|rest| rest.split("\n[").next().unwrap_or("").to_owned()).unwrap_or_default()
}

#[test]
fn core_depends_on_no_runtime() {
    let deps = dependencies(&manifest("core"));
    for forbidden in ["glommio", "confab-shards", "rustls", "redb", "tokio"] {
        assert!(!deps.contains(forbidden), "confab-core must not depend on {forbidden}");
    }
}

#[test]
fn shards_depend_on_core_only_downwards() {
    let deps = dependencies(&manifest("shards"));
    assert!(deps.contains("confab-core"));
    assert!(!deps.contains("confab-tests") && !deps.contains("confab-bench"));
}

#[test]
fn core_source_never_names_the_runtime() {
    let dir = format!("{}/../core/src", env!("CARGO_MANIFEST_DIR"));
    for entry in std::fs::read_dir(dir).expect("core/src").flatten() {
        let text = std::fs::read_to_string(entry.path()).expect("source");
        for forbidden in ["glommio", "TcpStream", "TcpListener", "UdpSocket", "std::fs", "SystemTime::now", "Instant::now", "thread::spawn"]
        {
            assert!(!text.contains(forbidden), "{} mentions {forbidden}", entry.path().display());
        }
    }
}

#[test]
fn loadgen_never_depends_on_the_server_runtime() {
    // It must drive ejabberd and Prosody too, so it speaks only the protocol (confab-core).
    let deps = dependencies(&manifest("loadgen"));
    assert!(deps.contains("confab-core"));
    assert!(!deps.contains("confab-shards"), "confab-loadgen must not depend on confab-shards");
}
