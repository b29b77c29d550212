//! Code gating fields on the transport versions of an Elasticsearch-layout folder.

pub fn encode(v: TransportVersion) {
    if v.supports(transport_version!("esql_driver_warnings")) {
        write_warnings();
    }
    if v.supports(transport_version!("batched_response_might_include_reduction_failure")) {
        write_reduction_failure();
    }
}
