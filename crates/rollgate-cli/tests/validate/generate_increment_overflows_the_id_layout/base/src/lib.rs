fn a() { transport_version!("last_field"); }
