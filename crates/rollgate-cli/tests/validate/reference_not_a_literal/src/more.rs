const NAME: &str = "x";
fn a() { transport_version!(NAME); }
fn b() {
    transport_version!(concat!("new", "_field"));
}
