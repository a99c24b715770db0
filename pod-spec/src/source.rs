//! Reading manifest text into position-tagged trees: YAML (1.2 core schema, several documents
//! separated by `---`) through yaml-rust2's event parser, so that every node keeps its line.
//! JSON is valid YAML and goes through the same path; JSON that the YAML parser refuses (tabs
//! used for indentation, for instance) falls back to serde_json.

use std::collections::HashMap;

use thiserror::Error;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A syntax error in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {message}")]
pub struct SyntaxError {
    /// 1-based line of the error.
    pub line: usize,
    /// What the parser said.
    pub message: String,
}

/// One node of a document, with the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// 1-based line.
    pub line: usize,
    /// The value.
    pub kind: NodeKind,
}

/// The value of a node, after YAML 1.2 core-schema resolution of plain scalars.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// `null`, `~` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits in i64.
    Int(i64),
    /// A float, with its text as written (quantities keep it exactly).
    Float(String),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order; duplicate keys are kept so they can be reported.
    Map(Vec<Entry>),
}

/// One `key: value` of a mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key, as a string.
    pub key: String,
    /// Line of the key.
    pub line: usize,
    /// The value.
    pub value: Node,
}

impl NodeKind {
    /// The name of the node's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            NodeKind::Null => "null",
            NodeKind::Bool(_) => "boolean",
            NodeKind::Int(_) => "integer",
            NodeKind::Float(_) => "number",
            NodeKind::Str(_) => "string",
            NodeKind::Seq(_) => "array",
            NodeKind::Map(_) => "object",
        }
    }
}

impl Node {
    /// The value of `key` when this node is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Map(entries) => entries.iter().find(|e| e.key == key).map(|e| &e.value),
            _ => None,
        }
    }

    /// The string value of `key` when this node is a mapping and the value a scalar.
    pub fn get_str(&self, key: &str) -> Option<String> {
        self.get(key).and_then(|n| n.scalar_text())
    }

    /// A scalar's text (strings as they are, numbers and booleans printed).
    pub fn scalar_text(&self) -> Option<String> {
        match &self.kind {
            NodeKind::Str(s) | NodeKind::Float(s) => Some(s.clone()),
            NodeKind::Int(i) => Some(i.to_string()),
            NodeKind::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// Splits `text` into documents; empty documents (a trailing `---`, comments only) are skipped.
pub fn parse_documents(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    match parser.load(&mut builder, true) {
        Ok(()) => Ok(builder.docs),
        Err(e) => {
            let trimmed = text.trim_start();
            if trimmed.starts_with('{') || trimmed.starts_with('[') {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
                    let line = text.len() - trimmed.len();
                    let line = text[..line].matches('\n').count() + 1;
                    return Ok(vec![from_json(&v, line)]);
                }
            }
            Err(SyntaxError {
                line: e.marker().line(),
                message: e.info().to_string(),
            })
        }
    }
}

fn from_json(v: &serde_json::Value, line: usize) -> Node {
    use serde_json::Value;
    let kind = match v {
        Value::Null => NodeKind::Null,
        Value::Bool(b) => NodeKind::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => NodeKind::Int(i),
            None => NodeKind::Float(n.to_string()),
        },
        Value::String(s) => NodeKind::Str(s.clone()),
        Value::Array(a) => NodeKind::Seq(a.iter().map(|x| from_json(x, line)).collect()),
        Value::Object(m) => NodeKind::Map(
            m.iter()
                .map(|(k, x)| Entry {
                    key: k.clone(),
                    line,
                    value: from_json(x, line),
                })
                .collect(),
        ),
    };
    Node { line, kind }
}

/// Resolves a plain scalar by the YAML 1.2 core schema.
fn resolve_plain(v: &str) -> NodeKind {
    match v {
        "" | "~" | "null" | "Null" | "NULL" => return NodeKind::Null,
        "true" | "True" | "TRUE" => return NodeKind::Bool(true),
        "false" | "False" | "FALSE" => return NodeKind::Bool(false),
        _ => {}
    }
    if let Some(hex) = v.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return NodeKind::Int(i);
        }
    }
    if let Some(oct) = v.strip_prefix("0o") {
        if let Ok(i) = i64::from_str_radix(oct, 8) {
            return NodeKind::Int(i);
        }
    }
    if let Ok(i) = v.strip_prefix('+').unwrap_or(v).parse::<i64>() {
        return NodeKind::Int(i);
    }
    if is_yaml_float(v) {
        return NodeKind::Float(v.to_string());
    }
    NodeKind::Str(v.to_string())
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`, `.inf`, `.nan` (YAML 1.2 core).
fn is_yaml_float(v: &str) -> bool {
    let body = v.strip_prefix(['-', '+']).unwrap_or(v);
    if matches!(body, ".inf" | ".Inf" | ".INF") || matches!(v, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((a, b)) => {
            (!a.is_empty() || !b.is_empty())
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
                && !(a.is_empty() && b.is_empty())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|c| c.is_ascii_digit()),
    };
    let exponent_ok = match exponent {
        None => true,
        Some(e) => {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit())
        }
    };
    mantissa_ok && exponent_ok
}

/// A collection being built.
enum Frame {
    Seq {
        line: usize,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        line: usize,
        anchor: usize,
        entries: Vec<Entry>,
        key: Option<(String, usize)>,
    },
}

#[derive(Default)]
struct Builder {
    docs: Vec<Node>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
}

impl Builder {
    fn push_node(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => {
                    let text = match &node.kind {
                        NodeKind::Null => "null".to_string(),
                        other => Node {
                            line: node.line,
                            kind: other.clone(),
                        }
                        .scalar_text()
                        .unwrap_or_default(),
                    };
                    *key = Some((text, node.line));
                }
                Some((k, line)) => entries.push(Entry {
                    key: k,
                    line,
                    value: node,
                }),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::DocumentStart => self.root = None,
            Event::DocumentEnd => {
                if let Some(root) = self.root.take() {
                    if root.kind != NodeKind::Null {
                        self.docs.push(root);
                    }
                }
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                line,
                anchor,
                items: Vec::new(),
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                line,
                anchor,
                entries: Vec::new(),
                key: None,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(frame) = self.stack.pop() {
                    let (node, anchor) = match frame {
                        Frame::Seq {
                            line,
                            anchor,
                            items,
                        } => (
                            Node {
                                line,
                                kind: NodeKind::Seq(items),
                            },
                            anchor,
                        ),
                        Frame::Map {
                            line,
                            anchor,
                            entries,
                            ..
                        } => (
                            Node {
                                line,
                                kind: NodeKind::Map(entries),
                            },
                            anchor,
                        ),
                    };
                    self.push_node(node, anchor);
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                let is_str_tag = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let kind = if style != TScalarStyle::Plain || is_str_tag {
                    NodeKind::Str(value)
                } else {
                    resolve_plain(&value)
                };
                self.push_node(Node { line, kind }, anchor);
            }
            Event::Alias(id) => {
                let node = self.anchors.get(&id).cloned().unwrap_or(Node {
                    line,
                    kind: NodeKind::Null,
                });
                self.push_node(node, 0);
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_types() {
        let docs = parse_documents("a: 1\nb:\n  - x\n  - 2.5\n---\nc: true\n---\n").unwrap();
        assert_eq!(docs.len(), 2);
        let a = docs[0].get("a").unwrap();
        assert_eq!((a.line, &a.kind), (1, &NodeKind::Int(1)));
        let b = docs[0].get("b").unwrap();
        match &b.kind {
            NodeKind::Seq(items) => {
                assert_eq!(items[0].line, 3);
                assert_eq!(items[1].kind, NodeKind::Float("2.5".into()));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(docs[1].get("c").unwrap().kind, NodeKind::Bool(true));
        assert_eq!(docs[1].get("c").unwrap().line, 6);
    }

    #[test]
    fn quoted_scalars_stay_strings_and_on_is_a_string() {
        let docs = parse_documents("a: \"1\"\nb: on\nc: 1e3\nd: '0.5'\n").unwrap();
        assert_eq!(docs[0].get("a").unwrap().kind, NodeKind::Str("1".into()));
        assert_eq!(docs[0].get("b").unwrap().kind, NodeKind::Str("on".into()));
        assert_eq!(
            docs[0].get("c").unwrap().kind,
            NodeKind::Float("1e3".into())
        );
        assert_eq!(docs[0].get("d").unwrap().kind, NodeKind::Str("0.5".into()));
    }

    #[test]
    fn json_and_syntax_errors() {
        let docs = parse_documents("{\n  \"a\": [1, 2],\n  \"b\": \"x\"\n}\n").unwrap();
        assert_eq!(docs[0].get("b").unwrap().line, 3);
        let err = parse_documents("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(err.line >= 2, "{err:?}");
    }

    #[test]
    fn anchors_and_aliases() {
        let docs = parse_documents("a: &x\n  k: v\nb: *x\n").unwrap();
        assert_eq!(docs[0].get("b").unwrap().get_str("k").as_deref(), Some("v"));
    }
}
