fn a() { transport_version!("moved_field"); }
