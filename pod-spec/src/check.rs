//! The structural pass over a document: walks the position-tagged tree against the model's
//! schema, reports every unknown, unsupported or mistyped field with its full path and line,
//! warns about informational fields, and produces a clean JSON value for typed decoding.

use serde_json::{Map, Value};

use crate::errors::{ErrorKind, FieldError, LineIndex, Warning};
use crate::quantity::Quantity;
use crate::schema::{rules_for, ObjectType, Schema, Shape};
use crate::source::{Node, NodeKind};

/// The result of the structural pass.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The document reduced to the fields the model knows, ready for serde.
    pub value: Value,
    /// Unknown, unsupported and mistyped fields.
    pub errors: Vec<FieldError>,
    /// Informational fields that were dropped.
    pub warnings: Vec<Warning>,
    /// The line of every field path.
    pub lines: LineIndex,
}

/// Walks `node` as a `Pod`.
pub fn check_pod(schema: &Schema, node: &Node) -> Checked {
    let mut walker = Walker {
        schema,
        errors: Vec::new(),
        warnings: Vec::new(),
        lines: LineIndex::default(),
    };
    walker.lines.insert("", node.line);
    let value = match schema.root() {
        Some(root) => walker.object(root, node, "").unwrap_or(Value::Null),
        None => Value::Null,
    };
    Checked {
        value,
        errors: walker.errors,
        warnings: walker.warnings,
        lines: walker.lines,
    }
}

struct Walker<'a> {
    schema: &'a Schema,
    errors: Vec<FieldError>,
    warnings: Vec<Warning>,
    lines: LineIndex,
}

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// Whether a value asks for nothing (`{}`, `[]`, `null`, `false`, `""`, `0`).
fn is_empty(node: &Node) -> bool {
    match &node.kind {
        NodeKind::Null | NodeKind::Bool(false) | NodeKind::Int(0) => true,
        NodeKind::Str(s) => s.is_empty(),
        NodeKind::Seq(v) => v.is_empty(),
        NodeKind::Map(v) => v.is_empty(),
        _ => false,
    }
}

impl Walker<'_> {
    fn error(&mut self, path: String, kind: ErrorKind, line: usize) {
        self.errors.push(FieldError {
            path,
            kind,
            line: Some(line),
        });
    }

    fn type_error(&mut self, path: String, shape: &Shape, node: &Node) {
        let expected = match shape {
            Shape::Array(_) => "array".to_string(),
            Shape::Map(_) | Shape::Object(_) => "object".to_string(),
            Shape::Quantity => "quantity (string or number)".to_string(),
            other => other.display(),
        };
        self.error(
            path,
            ErrorKind::Type {
                expected,
                found: node.kind.type_name().to_string(),
            },
            node.line,
        );
    }

    fn object(&mut self, ty: &ObjectType, node: &Node, path: &str) -> Option<Value> {
        let entries = match &node.kind {
            NodeKind::Null => return None,
            NodeKind::Map(entries) => entries,
            _ => {
                self.type_error(path.to_string(), &Shape::Object(ty.name.clone()), node);
                return None;
            }
        };
        let rules = rules_for(&ty.name);
        let mut out = Map::new();
        let mut seen: Vec<(&str, usize)> = Vec::new();
        for entry in entries {
            let p = child(path, &entry.key);
            if let Some((_, first)) = seen.iter().find(|(k, _)| *k == entry.key) {
                self.error(
                    p,
                    ErrorKind::DuplicateKey { first_line: *first },
                    entry.line,
                );
                continue;
            }
            seen.push((&entry.key, entry.line));
            self.lines.insert(&p, entry.line);
            if let Some(field) = ty.field(&entry.key) {
                if let Some(v) = self.value(&field.shape, &entry.value, &p) {
                    out.insert(entry.key.clone(), v);
                }
            } else if rules.unsupported.contains(&entry.key.as_str()) {
                if is_empty(&entry.value) {
                    self.warnings.push(Warning {
                        path: p,
                        message: "ignored: not supported by peapod, and empty".to_string(),
                        line: Some(entry.line),
                    });
                } else {
                    self.error(
                        p,
                        ErrorKind::Forbidden("not supported by peapod".to_string()),
                        entry.line,
                    );
                }
            } else if rules.informational.contains(&entry.key.as_str()) {
                self.warnings.push(Warning {
                    path: p,
                    message: "ignored: informational field".to_string(),
                    line: Some(entry.line),
                });
            } else {
                let hint = closest(
                    &entry.key,
                    ty.fields
                        .iter()
                        .map(|f| f.name.as_str())
                        .chain(rules.unsupported.iter().copied())
                        .chain(rules.informational.iter().copied()),
                );
                self.error(p, ErrorKind::Unknown { hint }, entry.line);
            }
        }
        self.fill_required(ty, &mut out);
        Some(Value::Object(out))
    }

    /// Required fields that are absent get their zero value so that typed decoding succeeds;
    /// validation then reports them as `Required value`. Optional scalars stay absent.
    fn fill_required(&self, ty: &ObjectType, out: &mut Map<String, Value>) {
        for field in ty.fields.iter().filter(|f| f.required) {
            if out.contains_key(&field.name) {
                continue;
            }
            if matches!(
                field.shape,
                Shape::Integer | Shape::Boolean | Shape::Quantity
            ) {
                continue;
            }
            out.insert(field.name.clone(), self.zero(&field.shape));
        }
    }

    fn zero(&self, shape: &Shape) -> Value {
        match shape {
            Shape::String => Value::String(String::new()),
            Shape::Integer => Value::from(0),
            Shape::Boolean => Value::Bool(false),
            Shape::Quantity => Value::String("0".to_string()),
            Shape::Array(_) => Value::Array(Vec::new()),
            Shape::Map(_) => Value::Object(Map::new()),
            Shape::Object(name) => {
                let mut out = Map::new();
                if let Some(ty) = self.schema.object(name) {
                    self.fill_required(ty, &mut out);
                }
                Value::Object(out)
            }
        }
    }

    fn value(&mut self, shape: &Shape, node: &Node, path: &str) -> Option<Value> {
        if node.kind == NodeKind::Null {
            return None;
        }
        match (shape, &node.kind) {
            (Shape::String, NodeKind::Str(s)) => Some(Value::String(s.clone())),
            (Shape::Integer, NodeKind::Int(i)) => Some(Value::from(*i)),
            (Shape::Boolean, NodeKind::Bool(b)) => Some(Value::Bool(*b)),
            (Shape::Quantity, NodeKind::Str(_) | NodeKind::Int(_) | NodeKind::Float(_)) => {
                let text = node.scalar_text().unwrap_or_default();
                match Quantity::parse(&text) {
                    Ok(_) => Some(Value::String(text)),
                    Err(e) => {
                        self.error(
                            path.to_string(),
                            ErrorKind::Invalid {
                                value: crate::errors::quote(&text),
                                detail: e.to_string(),
                            },
                            node.line,
                        );
                        None
                    }
                }
            }
            (Shape::Array(inner), NodeKind::Seq(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    self.lines.insert(&p, item.line);
                    // Keep indices aligned with the document: a bad item becomes a zero value.
                    let v = self
                        .value(inner, item, &p)
                        .unwrap_or_else(|| self.zero(inner));
                    out.push(v);
                }
                Some(Value::Array(out))
            }
            (Shape::Map(inner), NodeKind::Map(entries)) => {
                let mut out = Map::new();
                let mut seen: Vec<(&str, usize)> = Vec::new();
                for entry in entries {
                    let p = format!("{path}[{}]", entry.key);
                    if let Some((_, first)) = seen.iter().find(|(k, _)| *k == entry.key) {
                        self.error(
                            p,
                            ErrorKind::DuplicateKey { first_line: *first },
                            entry.line,
                        );
                        continue;
                    }
                    seen.push((&entry.key, entry.line));
                    self.lines.insert(&p, entry.line);
                    if let Some(v) = self.value(inner, &entry.value, &p) {
                        out.insert(entry.key.clone(), v);
                    }
                }
                Some(Value::Object(out))
            }
            (Shape::Object(name), _) => match self.schema.object(name) {
                Some(ty) => self.object(ty, node, path),
                None => None,
            },
            _ => {
                self.type_error(path.to_string(), shape, node);
                None
            }
        }
    }
}

/// The candidate closest to `word` if it is within two edits (a likely typo).
fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    candidates
        .map(|c| (levenshtein(&word.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::parse_documents;

    fn run(text: &str) -> Checked {
        let docs = parse_documents(text).unwrap();
        check_pod(&Schema::new(), &docs[0])
    }

    #[test]
    fn reports_every_unknown_and_unsupported_field() {
        let c = run("apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n  creationTimestamp: null\nspec:\n  containers:\n  - name: a\n    image: b\n    imagePullPolicyy: Always\n    livenessProbe:\n      exec: {}\n    securityContext: {}\n  nodeSelector:\n    a: b\nstatus: {}\n");
        let errs: Vec<String> = c
            .errors
            .iter()
            .map(|e| format!("{}:{}", e.line.unwrap(), e))
            .collect();
        assert_eq!(
            errs,
            [
                "10:spec.containers[0].imagePullPolicyy: unknown field (did you mean \"imagePullPolicy\"?)",
                "11:spec.containers[0].livenessProbe: Forbidden: not supported by peapod",
                "14:spec.nodeSelector: Forbidden: not supported by peapod",
            ]
        );
        let warns: Vec<String> = c.warnings.iter().map(|w| w.path.clone()).collect();
        assert_eq!(
            warns,
            [
                "metadata.creationTimestamp",
                "spec.containers[0].securityContext",
                "status"
            ]
        );
        assert!(c.value["spec"]["containers"][0]
            .get("imagePullPolicyy")
            .is_none());
    }

    #[test]
    fn typos_get_hints_only_when_close() {
        assert_eq!(
            closest("imag", ["image", "name"].into_iter()),
            Some("image".into())
        );
        assert_eq!(closest("foobar", ["image", "name"].into_iter()), None);
    }
}
