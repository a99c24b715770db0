//! Loading manifests: files, directories and text with several `---` documents and
//! `kind: List` documents, each turned into a defaulted, validated Pod or its errors.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::check::check_pod;
use crate::defaults::apply_defaults;
use crate::errors::{ErrorKind, FieldError, Warning};
use crate::limits::{LimitError, Limits};
use crate::model::Pod;
use crate::schema::Schema;
use crate::source::{parse_documents_with, Node, NodeKind, SourceError};
use crate::validate::validate_pod;

/// Why manifests could not be read at all.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The text is not YAML or JSON.
    #[error("{source_name}:{line}: {message}")]
    Syntax {
        /// The file name (or `<stdin>`).
        source_name: String,
        /// 1-based line.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// A file or directory could not be read.
    #[error("cannot read {path}: {error}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        error: std::io::Error,
    },
    /// A directory holds no manifests.
    #[error("no manifests (.yaml, .yml, .json) in {0}")]
    EmptyDirectory(PathBuf),
    /// Reading the text would cost more than the [`Limits`] allow (YAML amplification).
    #[error("{source_name}: {error}")]
    Limit {
        /// The file name (or `<stdin>`).
        source_name: String,
        /// Which limit.
        #[source]
        error: LimitError,
    },
}

/// One object found in the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The file it came from (or `<stdin>`).
    pub source_name: String,
    /// The line the object starts on.
    pub line: usize,
    /// Its `kind` as written.
    pub kind: String,
    /// Its `metadata.name` as written (or `generateName`, or "").
    pub name: String,
    /// The defaulted, valid Pod, or every error found.
    pub outcome: Result<Pod, Vec<FieldError>>,
    /// Fields accepted but ignored.
    pub warnings: Vec<Warning>,
}

impl Document {
    /// `The Pod "name" is invalid:` followed by one `* path: message (file:line)` per error,
    /// as kubectl prints them, or an empty string for a valid document.
    pub fn render_errors(&self) -> String {
        let Err(errors) = &self.outcome else {
            return String::new();
        };
        let kind = if self.kind.is_empty() {
            "object"
        } else {
            &self.kind
        };
        let mut out = format!(
            "The {kind} {} is invalid:\n",
            crate::errors::quote(&self.name)
        );
        for e in errors {
            match e.line {
                Some(l) => out.push_str(&format!("* {e} ({}:{l})\n", self.source_name)),
                None => out.push_str(&format!("* {e} ({})\n", self.source_name)),
            }
        }
        out
    }

    /// One `Warning: file:line: path: message` line per ignored field.
    pub fn render_warnings(&self) -> String {
        self.warnings
            .iter()
            .map(|w| match w.line {
                Some(l) => format!("Warning: {}:{l}: {w}\n", self.source_name),
                None => format!("Warning: {}: {w}\n", self.source_name),
            })
            .collect()
    }
}

/// Loads every object of `text`, read from `source_name`, within [`Limits::DEFAULT`].
pub fn load_str(source_name: &str, text: &str) -> Result<Vec<Document>, LoadError> {
    load_str_with(source_name, text, &Limits::DEFAULT)
}

/// [`load_str`] within `limits`.
pub fn load_str_with(
    source_name: &str,
    text: &str,
    limits: &Limits,
) -> Result<Vec<Document>, LoadError> {
    let docs = parse_documents_with(text, limits).map_err(|e| match e {
        SourceError::Syntax { line, message } => LoadError::Syntax {
            source_name: source_name.to_string(),
            line,
            message,
        },
        SourceError::Limit(error) => LoadError::Limit {
            source_name: source_name.to_string(),
            error,
        },
    })?;
    let schema = Schema::new();
    let mut out = Vec::new();
    for node in &docs {
        load_node(&schema, source_name, node, &mut out);
    }
    Ok(out)
}

/// Reads a manifest file, refusing one larger than `limits.max_bytes` without reading past it.
fn read_manifest(path: &Path, limits: &Limits) -> Result<String, LoadError> {
    use std::io::Read;
    let io = |error| LoadError::Io {
        path: path.to_path_buf(),
        error,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let cap = u64::try_from(limits.max_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let mut text = String::new();
    file.take(cap).read_to_string(&mut text).map_err(io)?;
    if text.len() > limits.max_bytes {
        return Err(LoadError::Limit {
            source_name: path.display().to_string(),
            error: LimitError::TooLarge {
                max: limits.max_bytes,
            },
        });
    }
    Ok(text)
}

/// Loads a file, or every `.yaml`, `.yml` and `.json` file of a directory in name order;
/// stops at the first file that cannot be read or parsed.
pub fn load_path(path: &Path) -> Result<Vec<Document>, LoadError> {
    let mut out = Vec::new();
    for (_, docs) in load_path_each(path)? {
        out.extend(docs?);
    }
    Ok(out)
}

/// The manifest files `path` names: itself, or the `.yaml`, `.yml` and `.json` files of a
/// directory in name order (not recursive, as kubectl without `-R`).
pub fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let io = |error| LoadError::Io {
        path: path.to_path_buf(),
        error,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let files = if meta.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml" | "json")
                    )
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(LoadError::EmptyDirectory(path.to_path_buf()));
        }
        files
    } else {
        vec![path.to_path_buf()]
    };
    Ok(files)
}

/// Loads every manifest file of `path` separately, so that one unreadable or malformed file
/// does not hide the others.
#[allow(clippy::type_complexity)]
pub fn load_path_each(
    path: &Path,
) -> Result<Vec<(PathBuf, Result<Vec<Document>, LoadError>)>, LoadError> {
    Ok(manifest_files(path)?
        .into_iter()
        .map(|f| {
            let docs = read_manifest(&f, &Limits::DEFAULT)
                .and_then(|text| load_str(&f.display().to_string(), &text));
            (f, docs)
        })
        .collect())
}

fn load_node(schema: &Schema, source_name: &str, node: &Node, out: &mut Vec<Document>) {
    let kind = node.get_str("kind").unwrap_or_default();
    let name = node
        .get("metadata")
        .and_then(|m| m.get_str("name").or_else(|| m.get_str("generateName")))
        .unwrap_or_default();
    let mut doc = Document {
        source_name: source_name.to_string(),
        line: node.line,
        kind: kind.clone(),
        name,
        outcome: Err(Vec::new()),
        warnings: Vec::new(),
    };
    let at = |mut e: FieldError, n: Option<&Node>| {
        e.line = Some(n.map_or(node.line, |n| n.line));
        e
    };
    if !matches!(node.kind, NodeKind::Map(_)) {
        doc.outcome = Err(vec![at(
            FieldError::new(
                "",
                ErrorKind::Type {
                    expected: "object".to_string(),
                    found: node.kind.type_name().to_string(),
                },
            ),
            None,
        )]);
        out.push(doc);
        return;
    }
    if kind == "List" {
        match node.get("items").map(|n| &n.kind) {
            Some(NodeKind::Seq(items)) => {
                for item in items {
                    load_node(schema, source_name, item, out);
                }
            }
            None | Some(NodeKind::Null) => {}
            Some(_) => {
                doc.outcome = Err(vec![at(
                    FieldError::new(
                        "items",
                        ErrorKind::Type {
                            expected: "array".to_string(),
                            found: node
                                .get("items")
                                .map_or("null", |n| n.kind.type_name())
                                .to_string(),
                        },
                    ),
                    node.get("items"),
                )]);
                out.push(doc);
            }
        }
        return;
    }
    let mut errors = Vec::new();
    if kind.is_empty() {
        errors.push(at(FieldError::required("kind"), node.get("kind")));
    } else if kind != "Pod" {
        errors.push(at(
            FieldError::not_supported("kind", &kind, &["Pod", "List"]),
            node.get("kind"),
        ));
        doc.outcome = Err(errors);
        out.push(doc);
        return;
    }
    match node.get_str("apiVersion") {
        None => errors.push(at(FieldError::required("apiVersion"), None)),
        Some(v) if v != "v1" => errors.push(at(
            FieldError::not_supported("apiVersion", &v, &["v1"]),
            node.get("apiVersion"),
        )),
        Some(_) => {}
    }
    let checked = check_pod(schema, node);
    errors.extend(checked.errors);
    doc.warnings = checked.warnings;
    match serde_json::from_value::<Pod>(checked.value) {
        Ok(mut pod) => {
            apply_defaults(&mut pod);
            let mut verrs = validate_pod(&pod);
            // A field already reported as unknown, unsupported or mistyped was dropped; do not
            // report the consequences (`Required value` for it, errors about its parent).
            verrs.retain(|v| !errors.iter().any(|s| related(&s.path, &v.path)));
            checked.lines.locate(&mut verrs);
            errors.extend(verrs);
            doc.outcome = if errors.is_empty() {
                Ok(pod)
            } else {
                Err(errors)
            };
        }
        Err(e) => {
            errors.push(at(
                FieldError::new(
                    "",
                    ErrorKind::Invalid {
                        value: "<document>".to_string(),
                        detail: format!("cannot decode: {e}"),
                    },
                ),
                None,
            ));
            doc.outcome = Err(errors);
        }
    }
    out.push(doc);
}

/// Whether one path is the other or lies below it.
fn related(a: &str, b: &str) -> bool {
    fn below(child: &str, parent: &str) -> bool {
        child
            .strip_prefix(parent)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    }
    !a.is_empty() && !b.is_empty() && (a == b || below(a, b) || below(b, a))
}
