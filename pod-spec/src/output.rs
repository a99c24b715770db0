//! Printing normalised pods as YAML or JSON, as `kubectl -o yaml|json` does (one object, or
//! a `kind: List` when there are several).

use serde_json::Value;
use thiserror::Error;
use yaml_rust2::yaml::Hash;
use yaml_rust2::{Yaml, YamlEmitter};

use crate::model::Pod;

/// Why pods could not be printed.
#[derive(Debug, Error)]
pub enum OutputError {
    /// Serialising to JSON failed.
    #[error("cannot serialise pod: {0}")]
    Json(#[from] serde_json::Error),
    /// Emitting YAML failed.
    #[error("cannot emit yaml: {0}")]
    Yaml(#[from] yaml_rust2::EmitError),
}

/// The value to print: the pod itself, or a `List` of them.
pub fn to_value(pods: &[Pod]) -> Result<Value, OutputError> {
    if let [pod] = pods {
        return Ok(serde_json::to_value(pod)?);
    }
    let items = pods
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}))
}

/// Pretty JSON.
pub fn to_json(pods: &[Pod]) -> Result<String, OutputError> {
    Ok(serde_json::to_string_pretty(&to_value(pods)?)? + "\n")
}

/// Block-style YAML.
pub fn to_yaml(pods: &[Pod]) -> Result<String, OutputError> {
    value_to_yaml(&to_value(pods)?)
}

/// Emits any JSON value as YAML (without the leading `---`).
pub fn value_to_yaml(v: &Value) -> Result<String, OutputError> {
    let mut out = String::new();
    let mut emitter = YamlEmitter::new(&mut out);
    emitter.multiline_strings(true);
    emitter.dump(&json_to_yaml(v))?;
    let body = out.strip_prefix("---\n").unwrap_or(&out).to_string();
    Ok(body + "\n")
}

fn json_to_yaml(v: &Value) -> Yaml {
    match v {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            None => Yaml::Real(n.to_string()),
        },
        Value::String(s) => Yaml::String(s.clone()),
        Value::Array(a) => Yaml::Array(a.iter().map(json_to_yaml).collect()),
        Value::Object(m) => {
            let mut h = Hash::new();
            for (k, x) in m {
                h.insert(Yaml::String(k.clone()), json_to_yaml(x));
            }
            Yaml::Hash(h)
        }
    }
}
