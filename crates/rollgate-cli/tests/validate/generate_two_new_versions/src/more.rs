fn a() { transport_version!("first_new"); transport_version!("second_new"); }
