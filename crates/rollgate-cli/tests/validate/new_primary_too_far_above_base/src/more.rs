fn a() { transport_version!("newer_field"); }
