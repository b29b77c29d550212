

fn a() { transport_version!("New-Field"); }
