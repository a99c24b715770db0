//! The v1 Pod model: loading, validation, explain and translation to a runtime plan.
//!
//! The pipeline for one manifest document is
//! [`source`] (YAML/JSON text → position-tagged tree, within the [`limits`]) → [`check`]
//! (unknown, unsupported and mistyped fields against the [`schema`] derived from [`model`]) →
//! serde into [`model::Pod`] → [`defaults`] → [`validate`]; [`load`] drives it for text, files,
//! directories and `kind: List`. [`plan`] turns a valid pod into the runtime plan, [`explain`]
//! prints the schema, [`output`] prints normalised pods. docs/pod-spec.md describes the rules.

pub mod check;
pub mod defaults;
pub mod errors;
pub mod explain;
pub mod limits;
pub mod load;
pub mod model;
pub mod names;
pub mod output;
pub mod plan;
pub mod quantity;
pub mod schema;
pub mod source;
pub mod validate;

pub use limits::{LimitError, Limits};
pub use load::{load_path, load_str, Document, LoadError};
pub use model::Pod;
pub use plan::{plan_pod, ImageConfigView, PodPlan};
pub use quantity::Quantity;
