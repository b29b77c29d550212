// transport/ -> $OUT_DIR/rollgate_transport_versions.rs (included by src/lib.rs).
fn main() {
    rollgate_build::compile("transport");
}
