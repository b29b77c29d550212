fn a() { transport_version!("ghost_field"); }

fn b() { transport_version!("ghost_field"); }
