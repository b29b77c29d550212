//! The admin API contract: every request and answer of the admin HTTP API
//! (`rollgate-admin` serves it, the `rollgate` CLI calls it), the names it
//! accepts, the route tables nodes publish for `_capabilities`, and the
//! token file. Plain data (serde) with no runtime: a field renamed here
//! breaks the build of both sides.
//!
//! | endpoint | request | answer |
//! |---|---|---|
//! | `GET /_capabilities` | [`routes::CapabilityQuery`] (query string) | [`routes::CapabilitiesAnswer`] |
//! | `GET /admin/flags` | | [`flags::FlagList`] |
//! | `GET /admin/flags/{name}` | | [`flags::FlagStatus`] |
//! | `POST /admin/flags/enable` | [`flags::EnableRequest`] | [`flags::EnableReport`] |
//! | `POST /admin/flags/disable` | [`flags::DisableRequest`] | [`flags::DisableReport`] |
//! | `GET /admin/features` | | [`features::FeatureList`] |
//! | `GET /admin/nodes` | | [`nodes::NodeList`] |
//! | `DELETE /admin/nodes/{id}` | | [`nodes::Forgotten`] |
//! | `GET /admin/upgrade/status` | | [`upgrade::UpgradeStatus`] |
//! | `GET /admin/upgrade/plan?to=R` | | [`upgrade::UpgradePlan`] |
//! | `POST /admin/upgrade/finalize` | [`floor::FinalizeRequest`] | [`floor::FinalizeReport`] |
//! | `GET /admin/links` | | [`links::LinkReport`] |
//! | `GET /admin/audit?limit=N` | | [`audit::AuditLog`] |
//! | `GET /ui/state` (and each `GET /ui/events` event) | | [`dashboard::DashboardState`] |
//! | any, on failure | | [`error::ErrorBody`] |

#![warn(missing_docs)]

pub mod audit;
pub mod dashboard;
pub mod error;
pub mod features;
pub mod flags;
pub mod floor;
pub mod links;
pub mod migrations;
pub mod names;
pub mod nodes;
pub mod routes;
pub mod token;
pub mod upgrade;
