fn a() { transport_version!("new_field"); }
fn b() { transport_version!("ghost_field"); }
fn c() { transport_version!(NAME); }
