fn a() { transport_version!("initial_9_0"); }
