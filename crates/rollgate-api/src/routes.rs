//! The `_capabilities` API (Elasticsearch style): does **every** member of
//! the cluster support a REST endpoint (method + path), some of its query
//! parameters and some of its named capabilities?
//!
//! A node registers its routes in a [`RouteTable`] (each route with its
//! supported parameters and capabilities, optionally conditional on a cluster
//! feature) and publishes the table in its node record. A query
//! ([`CapabilityQuery`]) is answered:
//!
//! - for this node, from its own table ([`RouteTable::supports`]);
//! - for every other **running** member, by asking it over HTTP
//!   (`GET /_capabilities?...&local_only=true` on its admin address), all in
//!   parallel, each bounded by a timeout;
//! - for a **stopped** member, from the route table it published in its node
//!   record (it may come back with that binary); a stopped member that
//!   published none answers "unknown".
//!
//! The answers combine ([`combine`]): `false` as soon as one member does not
//! support the query (a definite "no" wins), else `null` when one member did
//! not answer (timeout, refused connection, garbage, stopped without a
//! table), else `true`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use rollgate_util::shorten;

/// Most routes a table may hold.
pub const MAX_ROUTES: usize = 1024;
/// Longest path (template or query).
pub const MAX_PATH_BYTES: usize = 1024;
/// Most parameters or capabilities in one route or query.
pub const MAX_NAMES: usize = 64;
/// Longest parameter or capability name.
pub const MAX_NAME_BYTES: usize = 128;

/// The HTTP methods a route or a query may name.
pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// A bad route declaration or a bad query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CapabilityError {
    /// The method is not one of [`METHODS`].
    #[error("unknown HTTP method {method:?}: use one of GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS")]
    Method {
        /// The method as given.
        method: String,
    },
    /// The path is missing, does not start with `/`, is too long or has bad characters.
    #[error("invalid path {path:?}: {reason}")]
    Path {
        /// The path (shortened).
        path: String,
        /// Why.
        reason: String,
    },
    /// A parameter or capability name is empty, too long or has bad characters.
    #[error("invalid {what} name {name:?}: use 1 to 128 of a-z, A-Z, 0-9, '_', '-' and '.'")]
    Name {
        /// `parameter` or `capability`.
        what: &'static str,
        /// The name (shortened).
        name: String,
    },
    /// Too many parameters, capabilities or routes.
    #[error("too many {what}: {count}, the limit is {max}")]
    TooMany {
        /// What.
        what: &'static str,
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
}

fn check_method(method: &str) -> Result<String, CapabilityError> {
    let upper = method.to_ascii_uppercase();
    if METHODS.contains(&upper.as_str()) { Ok(upper) } else { Err(CapabilityError::Method { method: shorten(method) }) }
}

fn check_path(path: &str) -> Result<(), CapabilityError> {
    let reason = if path.is_empty() {
        Some("it is empty")
    } else if path.len() > MAX_PATH_BYTES {
        Some("it is longer than 1024 bytes")
    } else if !path.starts_with('/') {
        Some("it must start with '/'")
    } else if path.chars().any(|c| c.is_control() || c.is_whitespace() || c == '?' || c == '#') {
        Some("it contains whitespace, control characters, '?' or '#'")
    } else {
        None
    };
    match reason {
        Some(r) => Err(CapabilityError::Path { path: shorten(path), reason: r.into() }),
        None => Ok(()),
    }
}

fn check_names(what: &'static str, names: &BTreeSet<String>) -> Result<(), CapabilityError> {
    if names.len() > MAX_NAMES {
        return Err(CapabilityError::TooMany { what, count: names.len(), max: MAX_NAMES });
    }
    for name in names {
        let ok = !name.is_empty()
            && name.len() <= MAX_NAME_BYTES
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !ok {
            return Err(CapabilityError::Name { what, name: shorten(name) });
        }
    }
    Ok(())
}

/// Splits a comma-separated list (`a,b,c`), dropping empty items.
fn split_list(what: &'static str, list: Option<&str>) -> Result<BTreeSet<String>, CapabilityError> {
    let Some(list) = list else { return Ok(BTreeSet::new()) };
    // Bounded before splitting: a huge list is refused without allocating per item.
    if list.len() > MAX_NAMES * (MAX_NAME_BYTES + 1) {
        return Err(CapabilityError::TooMany { what, count: list.split(',').count(), max: MAX_NAMES });
    }
    let names: BTreeSet<String> = list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    check_names(what, &names)?;
    Ok(names)
}

/// One REST route a node serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The HTTP method, upper case.
    pub method: String,
    /// The path template: literal segments and `{name}` placeholders
    /// (`/kv/{key}`).
    pub path: String,
    /// The query parameters it supports.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub parameters: BTreeSet<String>,
    /// The named capabilities it supports.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub capabilities: BTreeSet<String>,
    /// When set, the route counts as supported only while the cluster has
    /// this cluster feature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_feature: Option<String>,
}

impl Route {
    /// A route; the method is upper-cased. Checked when added to a table.
    pub fn new(method: &str, path: &str) -> Route {
        Route {
            method: method.to_ascii_uppercase(),
            path: path.to_string(),
            parameters: BTreeSet::new(),
            capabilities: BTreeSet::new(),
            requires_feature: None,
        }
    }
    /// Adds supported query parameters.
    pub fn parameters<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Route {
        self.parameters.extend(names.into_iter().map(Into::into));
        self
    }
    /// Adds supported capabilities.
    pub fn capabilities<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Route {
        self.capabilities.extend(names.into_iter().map(Into::into));
        self
    }
    /// Makes the route conditional on a cluster feature.
    pub fn requires_feature(mut self, feature: &str) -> Route {
        self.requires_feature = Some(feature.to_string());
        self
    }

    fn check(&self) -> Result<(), CapabilityError> {
        check_method(&self.method)?;
        check_path(&self.path)?;
        check_names("parameter", &self.parameters)?;
        check_names("capability", &self.capabilities)?;
        if let Some(f) = &self.requires_feature {
            crate::names::check_feature_name(f)
                .map_err(|_| CapabilityError::Name { what: "feature", name: shorten(f) })?;
        }
        Ok(())
    }

    fn matches_path(&self, path: &str) -> bool {
        let template = self.path.trim_end_matches('/');
        let path = path.trim_end_matches('/');
        let mut t = template.split('/');
        let mut p = path.split('/');
        loop {
            match (t.next(), p.next()) {
                (None, None) => return true,
                (Some(ts), Some(ps)) => {
                    let placeholder = ts.len() >= 2 && ts.starts_with('{') && ts.ends_with('}');
                    if !(ts == ps || (placeholder && !ps.is_empty())) {
                        return false;
                    }
                }
                _ => return false,
            }
        }
    }
}

/// The routes a node serves, with what each supports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTable {
    /// The routes.
    pub routes: Vec<Route>,
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> RouteTable {
        RouteTable::default()
    }

    /// Adds a route after checking it.
    pub fn add(&mut self, route: Route) -> Result<&mut Self, CapabilityError> {
        route.check()?;
        if self.routes.len() >= MAX_ROUTES {
            return Err(CapabilityError::TooMany { what: "routes", count: self.routes.len() + 1, max: MAX_ROUTES });
        }
        self.routes.push(route);
        Ok(self)
    }

    /// Adds a route (builder style).
    pub fn with(mut self, route: Route) -> Result<Self, CapabilityError> {
        self.add(route)?;
        Ok(self)
    }

    /// The routes of the admin API itself (`/_capabilities`, `/admin/...`).
    pub fn admin_routes() -> RouteTable {
        let routes = [
            Route::new("GET", "/_capabilities").parameters([
                "method",
                "path",
                "parameters",
                "capabilities",
                "local_only",
            ]),
            Route::new("GET", "/admin/flags"),
            Route::new("GET", "/admin/flags/{name}"),
            Route::new("POST", "/admin/flags/enable").capabilities(["dry_run", "all", "experimental"]),
            Route::new("POST", "/admin/flags/disable"),
            Route::new("GET", "/admin/features"),
            Route::new("GET", "/admin/nodes"),
            Route::new("DELETE", "/admin/nodes/{id}"),
            Route::new("GET", "/admin/upgrade/status"),
            Route::new("GET", "/admin/upgrade/plan").parameters(["to"]),
            Route::new("POST", "/admin/upgrade/finalize").capabilities(["dry_run"]),
        ];
        RouteTable { routes: routes.into() }
    }

    /// Appends every route of `other` that this table lacks.
    pub fn merge(&mut self, other: &RouteTable) {
        for r in &other.routes {
            if !self.routes.contains(r) && self.routes.len() < MAX_ROUTES {
                self.routes.push(r.clone());
            }
        }
    }

    /// Checks a table read from outside (a node record).
    pub fn check(&self) -> Result<(), CapabilityError> {
        if self.routes.len() > MAX_ROUTES {
            return Err(CapabilityError::TooMany { what: "routes", count: self.routes.len(), max: MAX_ROUTES });
        }
        self.routes.iter().try_for_each(Route::check)
    }

    /// Whether this table supports the query: a route with the method and a
    /// matching path supports every parameter and capability asked for, and
    /// its required cluster feature (if any) is present per `has_feature`.
    pub fn supports(&self, query: &CapabilityQuery, has_feature: impl Fn(&str) -> bool) -> bool {
        self.routes.iter().any(|r| {
            r.method == query.method
                && r.matches_path(&query.path)
                && query.parameters.is_subset(&r.parameters)
                && query.capabilities.is_subset(&r.capabilities)
                && r.requires_feature.as_deref().is_none_or(&has_feature)
        })
    }
}

/// A `_capabilities` query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityQuery {
    /// The method (default `GET`).
    pub method: String,
    /// The path asked about (a concrete path or a template).
    pub path: String,
    /// Query parameters that must be supported.
    #[serde(default)]
    pub parameters: BTreeSet<String>,
    /// Capabilities that must be supported.
    #[serde(default)]
    pub capabilities: BTreeSet<String>,
}

impl CapabilityQuery {
    /// Parses the query's parts as they come from a URL: the method defaults
    /// to `GET`, the lists are comma-separated.
    pub fn parse(
        method: Option<&str>,
        path: Option<&str>,
        parameters: Option<&str>,
        capabilities: Option<&str>,
    ) -> Result<CapabilityQuery, CapabilityError> {
        let method = check_method(method.filter(|m| !m.is_empty()).unwrap_or("GET"))?;
        let path = path.ok_or_else(|| CapabilityError::Path {
            path: String::new(),
            reason: "the `path` parameter is required".into(),
        })?;
        check_path(path)?;
        Ok(CapabilityQuery {
            method,
            path: path.to_string(),
            parameters: split_list("parameter", parameters)?,
            capabilities: split_list("capability", capabilities)?,
        })
    }
}

/// Combines the members' answers: any `false` gives `false`, else any
/// `None` (no answer) gives `None`, else `true`.
pub fn combine(answers: impl IntoIterator<Item = Option<bool>>) -> Option<bool> {
    let mut unknown = false;
    for a in answers {
        match a {
            Some(false) => return Some(false),
            None => unknown = true,
            Some(true) => {}
        }
    }
    if unknown { None } else { Some(true) }
}

/// One member's answer, for diagnostics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAnswer {
    /// The member.
    pub node_id: String,
    /// Its answer (`None`: unknown).
    pub supported: Option<bool>,
    /// Where the answer came from.
    pub source: AnswerSource,
}

/// Where a member's `_capabilities` answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnswerSource {
    /// The node answering, from its own table.
    #[serde(rename = "local")]
    Local,
    /// A running member, asked over HTTP.
    #[serde(rename = "http")]
    Http,
    /// A stopped member, from the table it published in its node record.
    #[serde(rename = "published table")]
    PublishedTable,
    /// A source of a newer API version this one does not know.
    #[serde(other)]
    Unknown,
}

/// The answer of `GET /_capabilities`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilitiesAnswer {
    /// `true`: every member supports the query; `false`: one does not;
    /// `None` (`null`): one did not answer.
    pub supported: Option<bool>,
    /// Each member's answer (absent with `local_only=true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<MemberAnswer>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(method: &str, path: &str, params: &str, caps: &str) -> CapabilityQuery {
        CapabilityQuery::parse(Some(method), Some(path), Some(params), Some(caps)).unwrap()
    }

    #[test]
    fn routes_match_templates_parameters_capabilities_and_features() {
        let table = RouteTable::new()
            .with(Route::new("get", "/kv/{key}").parameters(["consistency"]))
            .unwrap()
            .with(Route::new("PUT", "/kv/{key}").parameters(["ttl_s"]).capabilities(["ttl"]).requires_feature("kv_ttl"))
            .unwrap();
        let none = |_: &str| false;
        let all = |_: &str| true;
        assert!(table.supports(&q("GET", "/kv/a", "", ""), none));
        assert!(table.supports(&q("GET", "/kv/{key}", "consistency", ""), none));
        assert!(table.supports(&q("GET", "/kv/a/", "", ""), none), "a trailing slash is the same path");
        assert!(!table.supports(&q("GET", "/kv", "", ""), none));
        assert!(!table.supports(&q("GET", "/kv/a/b", "", ""), none));
        assert!(!table.supports(&q("GET", "/kv/a", "ttl_s", ""), none));
        assert!(!table.supports(&q("DELETE", "/kv/a", "", ""), none));
        assert!(!table.supports(&q("PUT", "/kv/a", "ttl_s", "ttl"), none), "needs the feature");
        assert!(table.supports(&q("PUT", "/kv/a", "ttl_s", "ttl"), all));
        assert!(!table.supports(&q("PUT", "/kv/a", "", "ttl,other"), all));
    }

    #[test]
    fn bad_routes_and_queries_are_typed_errors() {
        assert!(matches!(RouteTable::new().add(Route::new("FETCH", "/x")), Err(CapabilityError::Method { .. })));
        assert!(matches!(RouteTable::new().add(Route::new("GET", "x")), Err(CapabilityError::Path { .. })));
        assert!(matches!(
            RouteTable::new().add(Route::new("GET", "/x").parameters(["a b"])),
            Err(CapabilityError::Name { .. })
        ));
        assert!(CapabilityQuery::parse(None, None, None, None).unwrap_err().to_string().contains("`path`"));
        assert_eq!(CapabilityQuery::parse(None, Some("/x"), None, None).unwrap().method, "GET");
        let many = (0..100).map(|i| format!("p{i}")).collect::<Vec<_>>().join(",");
        assert!(matches!(
            CapabilityQuery::parse(None, Some("/x"), Some(&many), None),
            Err(CapabilityError::TooMany { .. })
        ));
        let huge = "a,".repeat(100_000);
        assert!(matches!(
            CapabilityQuery::parse(None, Some("/x"), Some(&huge), None),
            Err(CapabilityError::TooMany { .. })
        ));
        assert!(CapabilityQuery::parse(None, Some("/x?y"), None, None).is_err());
        assert!(CapabilityQuery::parse(None, Some(&format!("/{}", "a".repeat(2000))), None, None).is_err());
    }

    #[test]
    fn combine_prefers_a_definite_no() {
        assert_eq!(combine([Some(true), Some(true)]), Some(true));
        assert_eq!(combine([Some(true), None]), None);
        assert_eq!(combine([None, Some(false)]), Some(false));
        assert_eq!(combine([]), Some(true));
    }
}
