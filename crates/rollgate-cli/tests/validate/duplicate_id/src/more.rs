fn a() { transport_version!("copy_field"); }
