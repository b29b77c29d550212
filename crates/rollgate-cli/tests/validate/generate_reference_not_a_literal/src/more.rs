fn a() { transport_version!(NAME); }
