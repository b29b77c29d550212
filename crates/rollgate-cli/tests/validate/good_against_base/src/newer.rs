const X: &N = crate::transport_version![ "newer_field" ];
