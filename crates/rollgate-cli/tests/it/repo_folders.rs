//! The repository's own transport folders stay valid: the reference service's
//! (`transport/`, referenced from `crates/rollgate-kv/src`), the sample
//! protocol's and the counter example's, whose names appear only in
//! `#[wire(since/until = ..)]`.

use std::path::Path;
use std::process::Command;

fn validate(dir: &str, src: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(env!("CARGO_BIN_EXE_rollgate"))
        .current_dir(&root)
        .args(["tv", "validate", "--dir", dir, "--src", src])
        .output()
        .expect("run rollgate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "rollgate tv validate --dir {dir} failed:\n{stdout}{stderr}");
    assert!(stdout.contains("is valid"), "{stdout}");
}

#[test]
fn reference_service_transport_folder_is_valid() {
    validate("transport", "crates/rollgate-kv/src");
}

#[test]
fn sample_protocol_transport_folder_is_valid() {
    validate("crates/rollgate-sample/transport", "crates/rollgate-sample/src");
}

#[test]
fn counter_example_transport_folder_is_valid() {
    validate("examples/counter/transport", "examples/counter/src");
}
