//! Strict parsing of metadata store URLs (`--meta`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::StoreError;

/// Most endpoints an `etcd:` URL may list.
pub const MAX_ETCD_ENDPOINTS: usize = 16;
/// Longest URL accepted.
const MAX_URL_BYTES: usize = 4096;

/// A parsed metadata store URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// `mem:`: in memory, for unit tests.
    Mem,
    /// `redb:PATH`: the embedded store file.
    Redb(PathBuf),
    /// `etcd:HOST:PORT[,HOST:PORT...]`: `host:port` endpoints, in order.
    Etcd(Vec<String>),
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Mem => write!(f, "mem:"),
            StoreUrl::Redb(p) => write!(f, "redb:{}", p.display()),
            StoreUrl::Etcd(eps) => write!(f, "etcd:{}", eps.join(",")),
        }
    }
}

fn invalid(url: &str, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidUrl { url: rollgate_util::shorten(url), reason: reason.into() }
}

impl FromStr for StoreUrl {
    type Err = StoreError;

    fn from_str(url: &str) -> Result<Self, StoreError> {
        if url.len() > MAX_URL_BYTES {
            return Err(invalid(url, format!("longer than {MAX_URL_BYTES} bytes")));
        }
        if url.chars().any(|c| c.is_control()) {
            return Err(invalid(url, "contains control characters"));
        }
        let Some((scheme, rest)) = url.split_once(':') else {
            return Err(invalid(url, "missing the scheme"));
        };
        match scheme {
            "mem" if rest.is_empty() => Ok(StoreUrl::Mem),
            "mem" => Err(invalid(url, "`mem:` takes nothing after the colon")),
            "redb" => {
                if rest.is_empty() {
                    return Err(invalid(url, "`redb:` needs a file path, e.g. `redb:/var/lib/node/meta.redb`"));
                }
                if rest.starts_with("//") {
                    return Err(invalid(url, "write `redb:PATH`, not `redb://PATH`"));
                }
                if rest.ends_with('/') {
                    return Err(invalid(url, "the redb path names a directory; give a file path"));
                }
                Ok(StoreUrl::Redb(PathBuf::from(rest)))
            }
            "etcd" => {
                if rest.is_empty() {
                    return Err(invalid(url, "`etcd:` needs at least one HOST:PORT"));
                }
                if rest.starts_with("//") {
                    return Err(invalid(url, "write `etcd:HOST:PORT`, not `etcd://HOST:PORT`"));
                }
                let endpoints: Vec<&str> = rest.split(',').collect();
                if endpoints.len() > MAX_ETCD_ENDPOINTS {
                    return Err(invalid(url, format!("more than {MAX_ETCD_ENDPOINTS} endpoints")));
                }
                let mut out = Vec::with_capacity(endpoints.len());
                for ep in endpoints {
                    out.push(parse_endpoint(url, ep)?);
                }
                Ok(StoreUrl::Etcd(out))
            }
            "" => Err(invalid(url, "missing the scheme")),
            other => Err(invalid(url, format!("unknown scheme {:?}", rollgate_util::shorten(other)))),
        }
    }
}

fn parse_endpoint(url: &str, ep: &str) -> Result<String, StoreError> {
    if ep.is_empty() {
        return Err(invalid(url, "empty endpoint (stray comma?)"));
    }
    if ep.contains('/') || ep.contains('@') || ep.contains(char::is_whitespace) {
        return Err(invalid(url, format!("endpoint {ep:?} must be HOST:PORT, without scheme, path or user")));
    }
    let (host, port) = if let Some(rest) = ep.strip_prefix('[') {
        let Some((host, port)) = rest.split_once("]:") else {
            return Err(invalid(url, format!("endpoint {ep:?}: an IPv6 host is written [ADDR]:PORT")));
        };
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(invalid(url, format!("endpoint {ep:?}: {host:?} is not an IPv6 address")));
        }
        (format!("[{host}]"), port)
    } else {
        let Some((host, port)) = ep.rsplit_once(':') else {
            return Err(invalid(url, format!("endpoint {ep:?} has no port (HOST:PORT)")));
        };
        if host.is_empty() {
            return Err(invalid(url, format!("endpoint {ep:?} has no host")));
        }
        if host.contains(':') {
            return Err(invalid(url, format!("endpoint {ep:?}: write an IPv6 host as [ADDR]:PORT")));
        }
        if host.len() > 253 || !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_') {
            return Err(invalid(url, format!("endpoint {ep:?}: {host:?} is not a host name or address")));
        }
        (host.to_string(), port)
    };
    if port.is_empty() || port.len() > 5 || !port.chars().all(|c| c.is_ascii_digit()) {
        return Err(invalid(url, format!("endpoint {ep:?}: port {port:?} is not a number")));
    }
    match port.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(format!("{host}:{p}")),
        _ => Err(invalid(url, format!("endpoint {ep:?}: port {port} is out of range 1..=65535"))),
    }
}
