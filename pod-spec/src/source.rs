//! Reading manifest text into position-tagged trees: YAML (1.2 core schema, several documents
//! separated by `---`) through yaml-rust2's event parser, so that every node keeps its line.
//! JSON is valid YAML and goes through the same path; JSON that the YAML parser refuses (tabs
//! used for indentation, for instance) falls back to serde_json.
//!
//! The parser is driven one event at a time (not through its recursive `load`), and every
//! event is charged to a [`Budget`] first, so that a stream over its [`Limits`] (aliases,
//! expanded size, depth, documents, text size) is refused before the node is built.

use std::collections::HashMap;

use thiserror::Error;
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::limits::{Budget, LimitError, Limits, NODE_COST};

/// Why manifest text could not be read into trees.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SourceError {
    /// A syntax error.
    #[error("line {line}: {message}")]
    Syntax {
        /// 1-based line of the error.
        line: usize,
        /// What the parser said.
        message: String,
    },
    /// The text would cost more than its limits allow.
    #[error(transparent)]
    Limit(#[from] LimitError),
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

/// Splits `text` into documents within [`Limits::DEFAULT`]; empty documents (a trailing `---`,
/// comments only) are skipped.
pub fn parse_documents(text: &str) -> Result<Vec<Node>, SourceError> {
    parse_documents_with(text, &Limits::DEFAULT)
}

/// [`parse_documents`] within `limits`.
pub fn parse_documents_with(text: &str, limits: &Limits) -> Result<Vec<Node>, SourceError> {
    Budget::new(*limits).text(text.len())?;
    // Only a syntax error falls back to JSON; a limit error is final.
    let err = match parse_yaml(text, limits) {
        Err(e @ SourceError::Syntax { .. }) => e,
        other => return other,
    };
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        // serde_json refuses nesting deeper than 128 on its own; the tree is then checked.
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
            let line = text.len() - trimmed.len();
            let line = text[..line].matches('\n').count() + 1;
            let mut budget = Budget::new(*limits);
            budget.document()?;
            return Ok(vec![from_json(&v, line, 1, &mut budget)?]);
        }
    }
    Err(err)
}

/// Feeds the parser's events to a [`Builder`] one at a time.
fn parse_yaml(text: &str, limits: &Limits) -> Result<Vec<Node>, SourceError> {
    let mut builder = Builder::new(*limits);
    let mut parser = Parser::new_from_str(text);
    loop {
        let (ev, mark) = parser.next_token().map_err(|e| SourceError::Syntax {
            line: e.marker().line(),
            message: e.info().to_string(),
        })?;
        if ev == Event::StreamEnd {
            return Ok(builder.docs);
        }
        builder.on_event(ev, mark)?;
    }
}

/// Converts a JSON value, charging `budget` as the YAML path does; `depth` is 1 at the root.
fn from_json(
    v: &serde_json::Value,
    line: usize,
    depth: usize,
    budget: &mut Budget,
) -> Result<Node, LimitError> {
    use serde_json::Value;
    let text_len = match v {
        Value::String(s) => s.len(),
        Value::Number(_) => 24, // the longest text of an f64, for a `Float`
        _ => 0,
    };
    budget.node(NODE_COST.saturating_add(text_len))?;
    let kind = match v {
        Value::Null => NodeKind::Null,
        Value::Bool(b) => NodeKind::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => NodeKind::Int(i),
            None => NodeKind::Float(n.to_string()),
        },
        Value::String(s) => NodeKind::Str(s.clone()),
        Value::Array(a) => {
            budget.depth(depth)?;
            let items = a.iter().map(|x| from_json(x, line, depth + 1, budget));
            NodeKind::Seq(items.collect::<Result<_, _>>()?)
        }
        Value::Object(m) => {
            budget.depth(depth)?;
            let mut entries = Vec::with_capacity(m.len());
            for (k, x) in m {
                budget.node(k.len())?;
                entries.push(Entry {
                    key: k.clone(),
                    line,
                    value: from_json(x, line, depth + 1, budget)?,
                });
            }
            NodeKind::Map(entries)
        }
    };
    Ok(Node { line, kind })
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

/// A collection being built; `start` is the tree's cost when it was opened.
enum Frame {
    Seq {
        line: usize,
        anchor: usize,
        start: usize,
        items: Vec<Node>,
    },
    Map {
        line: usize,
        anchor: usize,
        start: usize,
        entries: Vec<Entry>,
        key: Option<(String, usize)>,
    },
}

/// Builds trees from parser events, charging each to its budget before building it.
struct Builder {
    docs: Vec<Node>,
    stack: Vec<Frame>,
    /// Anchored nodes, with their cost (what each alias to them adds).
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    budget: Budget,
    /// The highest anchor id seen; ids grow through the stream.
    last_anchor: usize,
    /// The lowest anchor id of the current document: an alias below it names an anchor of an
    /// earlier document, which YAML does not allow (yaml-rust2's `load` forgets them).
    first_anchor: usize,
}

impl Builder {
    fn new(limits: Limits) -> Self {
        Builder {
            docs: Vec::new(),
            stack: Vec::new(),
            anchors: HashMap::new(),
            root: None,
            budget: Budget::new(limits),
            last_anchor: 0,
            first_anchor: 1,
        }
    }

    /// Places a finished node of `cost` bytes (already charged) in its parent, and keeps a copy
    /// of it (charged here) when it is anchored.
    fn push_node(&mut self, node: Node, anchor: usize, cost: usize) -> Result<(), LimitError> {
        if anchor > 0 {
            self.budget.hold(cost)?;
            self.anchors.insert(anchor, (node.clone(), cost));
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
        Ok(())
    }

    fn on_event(&mut self, ev: Event, mark: Marker) -> Result<(), SourceError> {
        let line = mark.line();
        if let Event::Scalar(_, _, anchor, _)
        | Event::SequenceStart(anchor, _)
        | Event::MappingStart(anchor, _) = &ev
        {
            self.last_anchor = self.last_anchor.max(*anchor);
        }
        match ev {
            Event::DocumentStart => {
                self.budget.document()?;
                self.root = None;
                self.anchors.clear();
                self.first_anchor = self.last_anchor.saturating_add(1);
            }
            Event::DocumentEnd => {
                if let Some(root) = self.root.take() {
                    if root.kind != NodeKind::Null {
                        self.docs.push(root);
                    }
                }
            }
            Event::SequenceStart(anchor, _) => self.open(false, anchor, line)?,
            Event::MappingStart(anchor, _) => self.open(true, anchor, line)?,
            Event::SequenceEnd | Event::MappingEnd => self.close()?,
            Event::Scalar(value, style, anchor, tag) => {
                let cost = NODE_COST.saturating_add(value.len());
                self.budget.node(cost)?;
                let is_str_tag = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let kind = if style != TScalarStyle::Plain || is_str_tag {
                    NodeKind::Str(value)
                } else {
                    resolve_plain(&value)
                };
                self.push_node(Node { line, kind }, anchor, cost)?;
            }
            Event::Alias(id) if id < self.first_anchor => {
                return Err(SourceError::Syntax {
                    line,
                    message: "while parsing node, found unknown anchor".to_string(),
                })
            }
            Event::Alias(id) => self.alias(id, line)?,
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
        Ok(())
    }

    /// Opens a mapping or a sequence, within the depth limit.
    fn open(&mut self, map: bool, anchor: usize, line: usize) -> Result<(), LimitError> {
        self.budget.depth(self.stack.len().saturating_add(1))?;
        let start = self.budget.tree();
        self.budget.node(NODE_COST)?;
        self.stack.push(if map {
            Frame::Map {
                line,
                anchor,
                start,
                entries: Vec::new(),
                key: None,
            }
        } else {
            Frame::Seq {
                line,
                anchor,
                start,
                items: Vec::new(),
            }
        });
        Ok(())
    }

    /// Closes the innermost collection; its cost is what the tree grew by while it was open.
    fn close(&mut self) -> Result<(), LimitError> {
        let Some(frame) = self.stack.pop() else {
            return Ok(());
        };
        let (line, anchor, start, kind) = match frame {
            Frame::Seq {
                line,
                anchor,
                start,
                items,
            } => (line, anchor, start, NodeKind::Seq(items)),
            Frame::Map {
                line,
                anchor,
                start,
                entries,
                ..
            } => (line, anchor, start, NodeKind::Map(entries)),
        };
        let cost = self.budget.tree().saturating_sub(start);
        self.push_node(Node { line, kind }, anchor, cost)
    }

    /// Expands an alias: counted, and charged at the full cost of its anchor's value before that
    /// value is copied.
    fn alias(&mut self, id: usize, line: usize) -> Result<(), LimitError> {
        self.budget.alias()?;
        let cost = self.anchors.get(&id).map_or(NODE_COST, |(_, cost)| *cost);
        self.budget.node(cost)?;
        let node = self.anchors.get(&id).map_or(
            Node {
                line,
                kind: NodeKind::Null,
            },
            |(node, _)| node.clone(),
        );
        self.push_node(node, 0, cost)
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
        assert!(
            matches!(err, SourceError::Syntax { line, .. } if line >= 2),
            "{err:?}"
        );
    }

    #[test]
    fn anchors_and_aliases() {
        let docs = parse_documents("a: &x\n  k: v\nb: *x\n").unwrap();
        assert_eq!(docs[0].get("b").unwrap().get_str("k").as_deref(), Some("v"));
        // Anchors do not cross documents (as yaml-rust2's own loader).
        let err = parse_documents("a: &x 1\n---\nb: *x\n").unwrap_err();
        assert!(
            matches!(&err, SourceError::Syntax { line: 3, message } if message.contains("anchor")),
            "{err:?}"
        );
        let docs = parse_documents("a: &x 1\n---\nb: &x 2\nc: *x\n").unwrap();
        assert_eq!(docs[1].get("c").unwrap().kind, NodeKind::Int(2));
    }
}
