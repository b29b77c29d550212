//! `rollgate-kv`: the reference replicated key-value service.

rollgate::include_transport_versions!();

fn main() {
    println!(
        "rollgate-kv: transport version {} (minimum compatible {})",
        transport_versions::CURRENT,
        transport_versions::MINIMUM_COMPATIBLE
    );
}
