//! `peapod explain pod.spec.containers`: a field's type, description and sub-fields, in the
//! layout of `kubectl explain`, generated from the model's schema and rules.

use thiserror::Error;

use crate::schema::{rules_for, Field, ObjectType, Schema, Shape};

/// Why a path cannot be explained.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExplainError {
    /// The first segment is not a resource peapod knows.
    #[error("peapod has no resource type \"{0}\" (it runs pods: try `pod`)")]
    UnknownResource(String),
    /// A segment names no field.
    #[error("field \"{field}\" does not exist")]
    NoSuchField {
        /// The segment.
        field: String,
    },
    /// A segment names a Kubernetes field that peapod rejects.
    #[error("field \"{field}\" exists in Kubernetes but is not supported by peapod")]
    Unsupported {
        /// The segment.
        field: String,
    },
    /// A segment names a Kubernetes field that peapod accepts and ignores.
    #[error("field \"{field}\" is informational: peapod accepts and ignores it")]
    Informational {
        /// The segment.
        field: String,
    },
    /// A path goes below a field that has no sub-fields.
    #[error("field \"{field}\" has no sub-fields")]
    NotAnObject {
        /// The segment.
        field: String,
    },
}

/// The object type inside a shape (`[]Container` → `Container`).
fn object_name(shape: &Shape) -> Option<&str> {
    match shape {
        Shape::Object(n) => Some(n),
        Shape::Array(inner) | Shape::Map(inner) => object_name(inner),
        _ => None,
    }
}

/// Explains `path` (`pod`, `pods.spec.volumes.hostPath`, …). With `recursive`, lists the
/// whole tree of sub-fields with their types instead of the descriptions.
pub fn explain(schema: &Schema, path: &str, recursive: bool) -> Result<String, ExplainError> {
    let mut segments = path.split('.').filter(|s| !s.is_empty());
    let resource = segments.next().unwrap_or_default();
    if !matches!(resource.to_lowercase().as_str(), "pod" | "pods" | "po") {
        return Err(ExplainError::UnknownResource(resource.to_string()));
    }
    let root = schema
        .root()
        .ok_or_else(|| ExplainError::UnknownResource(resource.to_string()))?;
    let mut current: &ObjectType = root;
    let mut field: Option<&Field> = None;
    for seg in segments {
        if let Some(f) = field {
            let name = object_name(&f.shape).ok_or_else(|| ExplainError::NotAnObject {
                field: f.name.clone(),
            })?;
            current = schema
                .object(name)
                .ok_or_else(|| ExplainError::NotAnObject {
                    field: f.name.clone(),
                })?;
        }
        match current.field(seg) {
            Some(f) => field = Some(f),
            None => {
                let rules = rules_for(&current.name);
                return Err(if rules.unsupported.contains(&seg) {
                    ExplainError::Unsupported {
                        field: seg.to_string(),
                    }
                } else if rules.informational.contains(&seg) {
                    ExplainError::Informational {
                        field: seg.to_string(),
                    }
                } else {
                    ExplainError::NoSuchField {
                        field: seg.to_string(),
                    }
                });
            }
        }
    }
    let mut out = String::from("KIND:       Pod\nVERSION:    v1\n\n");
    let (description, object) = match field {
        None => (root.description.clone(), Some(root)),
        Some(f) => {
            out.push_str(&format!("FIELD: {} <{}>\n\n", f.name, f.shape.display()));
            (
                f.description.clone(),
                object_name(&f.shape).and_then(|n| schema.object(n)),
            )
        }
    };
    out.push_str("DESCRIPTION:\n");
    for line in wrap(&description, 76) {
        out.push_str(&format!("    {line}\n"));
    }
    if let Some(obj) = object {
        if field.is_some() && !obj.description.is_empty() && obj.description != description {
            out.push('\n');
            for line in wrap(&format!("{}: {}", obj.name, obj.description), 76) {
                out.push_str(&format!("    {line}\n"));
            }
        }
        out.push_str("\nFIELDS:\n");
        if recursive {
            recurse(schema, obj, 1, &mut out, &mut Vec::new());
        } else {
            for f in &obj.fields {
                out.push_str(&format!(
                    "  {}\t<{}>{}\n",
                    f.name,
                    f.shape.display(),
                    req(f)
                ));
                for line in wrap(&f.description, 74) {
                    out.push_str(&format!("    {line}\n"));
                }
                out.push('\n');
            }
        }
        let rules = rules_for(&obj.name);
        if !rules.unsupported.is_empty() {
            if !out.ends_with("\n\n") {
                out.push('\n');
            }
            out.push_str("NOT SUPPORTED BY PEAPOD (an error when set):\n");
            for line in wrap(&rules.unsupported.join(", "), 74) {
                out.push_str(&format!("  {line}\n"));
            }
        }
        if !rules.informational.is_empty() {
            out.push_str("\nINFORMATIONAL (accepted and ignored, with a warning):\n");
            for line in wrap(&rules.informational.join(", "), 74) {
                out.push_str(&format!("  {line}\n"));
            }
        }
    }
    Ok(out)
}

fn req(f: &Field) -> &'static str {
    if f.required {
        " -required-"
    } else {
        ""
    }
}

fn recurse<'a>(
    schema: &'a Schema,
    obj: &'a ObjectType,
    depth: usize,
    out: &mut String,
    stack: &mut Vec<&'a str>,
) {
    stack.push(&obj.name);
    for f in &obj.fields {
        let indent = "  ".repeat(depth);
        out.push_str(&format!(
            "{indent}{}\t<{}>{}\n",
            f.name,
            f.shape.display(),
            req(f)
        ));
        if let Some(child) = object_name(&f.shape).and_then(|n| schema.object(n)) {
            if !stack.contains(&child.name.as_str()) {
                recurse(schema, child, depth + 1, out, stack);
            }
        }
    }
    stack.pop();
}

/// Greedy word wrap.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}
