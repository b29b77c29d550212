//! One registration per HTTP route: a service declares each route once
//! (method, path, parameters, capabilities, the feature it needs) with its
//! handler, and both its axum router and the [`RouteTable`] it publishes
//! for `_capabilities` come from that registration, so they cannot differ.
//!
//! ```
//! use axum::routing::MethodRouter;
//! use rollgate_admin::register::Registered;
//! use rollgate_api::routes::Route;
//!
//! async fn get_key() -> &'static str { "value" }
//! async fn put_key() -> &'static str { "stored" }
//!
//! let routes: Registered<()> = Registered::new()
//!     .route(Route::new("GET", "/kv/{key}"), get_key)
//!     .unwrap()
//!     .route(Route::new("PUT", "/kv/{key}").parameters(["ttl_s"]), put_key)
//!     .unwrap();
//! assert_eq!(routes.table().routes.len(), 2);
//! let (_router, _table) = routes.into_parts();
//! ```

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, on};
use rollgate_api::routes::{CapabilityError, Route, RouteTable};

/// Why a route cannot be registered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The route breaks the route-table rules (bad path, too many, ...).
    #[error(transparent)]
    Capability(#[from] CapabilityError),
    /// A method axum cannot route (`GET`, `PUT`, `POST`, `DELETE`, `PATCH`,
    /// `HEAD`, `OPTIONS`, `TRACE` and `CONNECT` can).
    #[error(
        "route {method} {path}: axum cannot route method {method}; use one of GET, PUT, POST, DELETE, PATCH, HEAD, OPTIONS, TRACE, CONNECT"
    )]
    Method {
        /// The method.
        method: String,
        /// The path.
        path: String,
    },
    /// The same method and path registered twice.
    #[error("route {method} {path} is registered twice: register each route once")]
    Duplicate {
        /// The method.
        method: String,
        /// The path.
        path: String,
    },
}

/// A service's routes, each registered once: the router (state `S`, given
/// later with `with_state`) and the route table, built together.
pub struct Registered<S = ()> {
    router: Router<S>,
    table: RouteTable,
}

impl<S: Clone + Send + Sync + 'static> Default for Registered<S> {
    fn default() -> Self {
        Registered { router: Router::new(), table: RouteTable::new() }
    }
}

impl<S: Clone + Send + Sync + 'static> Registered<S> {
    /// No routes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `route`, answered by `handler`: added to the table (checked
    /// as the table checks routes) and to the router (axum path syntax is
    /// the table's: literal segments and `{name}` placeholders).
    pub fn route<H, T>(mut self, route: Route, handler: H) -> Result<Self, RegisterError>
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let filter = method_filter(&route)?;
        if self.table.routes.iter().any(|r| r.method == route.method && r.path == route.path) {
            return Err(RegisterError::Duplicate { method: route.method.clone(), path: route.path.clone() });
        }
        let path = route.path.clone();
        self.table.add(route)?;
        self.router = self.router.route(&path, on(filter, handler));
        Ok(self)
    }

    /// The route table (what the node publishes).
    pub fn table(&self) -> &RouteTable {
        &self.table
    }

    /// The router and the table.
    pub fn into_parts(self) -> (Router<S>, RouteTable) {
        (self.router, self.table)
    }
}

fn method_filter(route: &Route) -> Result<MethodFilter, RegisterError> {
    let bad = || RegisterError::Method { method: route.method.clone(), path: route.path.clone() };
    let method = Method::from_bytes(route.method.as_bytes()).map_err(|_| bad())?;
    MethodFilter::try_from(method).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ok() -> &'static str {
        "ok"
    }

    #[test]
    fn a_route_is_registered_once_with_a_routable_method() {
        let r = Registered::<()>::new().route(Route::new("GET", "/a/{x}"), ok).unwrap();
        let err = r.route(Route::new("GET", "/a/{x}"), ok).err().unwrap();
        assert_eq!(err.to_string(), "route GET /a/{x} is registered twice: register each route once");
        let err = Registered::<()>::new().route(Route::new("FETCH", "/a"), ok).err().unwrap();
        assert!(err.to_string().contains("axum cannot route method FETCH"), "{err}");
        let err = Registered::<()>::new().route(Route::new("GET", "no-slash"), ok).err().unwrap();
        assert!(matches!(err, RegisterError::Capability(_)), "{err}");
    }
}
