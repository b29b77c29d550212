pub fn encode(v: TransportVersion) {
    let message = "transport_version!(\"in_a_string\")";
    if v.supports(transport_version!("new_field")) {
        write_new_field(message);
    }
}
