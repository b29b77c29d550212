fn a() { transport_version!("future_field"); }
