fn a() { transport_version!("last_field"); transport_version!("one_more"); }
