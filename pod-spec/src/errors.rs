//! Field errors and warnings in Kubernetes' wording (`field.Error` of apimachinery), with the
//! manifest line they point at.

use std::collections::HashMap;
use std::fmt;

/// What is wrong with a field; the `Display` texts are those of Kubernetes' `field.ErrorType`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// `Required value` (with an optional detail).
    Required(Option<String>),
    /// `Invalid value: <value>: <detail>`; the value is already rendered (strings quoted).
    Invalid {
        /// The rendered value.
        value: String,
        /// Why it is invalid.
        detail: String,
    },
    /// `Duplicate value: <value>`.
    Duplicate(String),
    /// `Not found: <value>`.
    NotFound(String),
    /// `Unsupported value: <value>: supported values: "a", "b"`.
    NotSupported {
        /// The rendered value.
        value: String,
        /// The values that are supported.
        supported: Vec<String>,
    },
    /// `Forbidden: <detail>`.
    Forbidden(String),
    /// A field neither Kubernetes' Pod (as far as peapod knows) nor peapod has.
    Unknown {
        /// A known field with a close spelling.
        hint: Option<String>,
    },
    /// The value has the wrong type (`Invalid type: expected string, got integer`).
    Type {
        /// The expected type.
        expected: String,
        /// The type found.
        found: String,
    },
    /// A mapping key written twice.
    DuplicateKey {
        /// Line of the first occurrence.
        first_line: usize,
    },
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Required(None) => f.write_str("Required value"),
            ErrorKind::Required(Some(d)) => write!(f, "Required value: {d}"),
            ErrorKind::Invalid { value, detail } => write!(f, "Invalid value: {value}: {detail}"),
            ErrorKind::Duplicate(v) => write!(f, "Duplicate value: {v}"),
            ErrorKind::NotFound(v) => write!(f, "Not found: {v}"),
            ErrorKind::NotSupported { value, supported } => {
                let list: Vec<String> = supported.iter().map(|s| quote(s)).collect();
                write!(
                    f,
                    "Unsupported value: {value}: supported values: {}",
                    list.join(", ")
                )
            }
            ErrorKind::Forbidden(d) => write!(f, "Forbidden: {d}"),
            ErrorKind::Unknown { hint: None } => f.write_str("unknown field"),
            ErrorKind::Unknown { hint: Some(h) } => {
                write!(f, "unknown field (did you mean {}?)", quote(h))
            }
            ErrorKind::Type { expected, found } => {
                write!(f, "Invalid type: expected {expected}, got {found}")
            }
            ErrorKind::DuplicateKey { first_line } => {
                write!(
                    f,
                    "Duplicate value: mapping key already defined at line {first_line}"
                )
            }
        }
    }
}

/// One error about one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field path, `spec.containers[0].image`.
    pub path: String,
    /// What is wrong.
    pub kind: ErrorKind,
    /// The 1-based manifest line it points at, when known.
    pub line: Option<usize>,
}

impl FieldError {
    /// An error without a line yet.
    pub fn new(path: impl Into<String>, kind: ErrorKind) -> Self {
        Self {
            path: path.into(),
            kind,
            line: None,
        }
    }

    /// `Required value`.
    pub fn required(path: impl Into<String>) -> Self {
        Self::new(path, ErrorKind::Required(None))
    }

    /// `Invalid value: "<value>": <detail>` for a string value.
    pub fn invalid(path: impl Into<String>, value: &str, detail: impl Into<String>) -> Self {
        Self::new(
            path,
            ErrorKind::Invalid {
                value: quote(value),
                detail: detail.into(),
            },
        )
    }

    /// `Invalid value: <value>: <detail>` for an integer value.
    pub fn invalid_int(path: impl Into<String>, value: i64, detail: impl Into<String>) -> Self {
        Self::new(
            path,
            ErrorKind::Invalid {
                value: value.to_string(),
                detail: detail.into(),
            },
        )
    }

    /// `Duplicate value: "<value>"`.
    pub fn duplicate(path: impl Into<String>, value: &str) -> Self {
        Self::new(path, ErrorKind::Duplicate(quote(value)))
    }

    /// `Not found: "<value>"`.
    pub fn not_found(path: impl Into<String>, value: &str) -> Self {
        Self::new(path, ErrorKind::NotFound(quote(value)))
    }

    /// `Unsupported value: "<value>": supported values: …`.
    pub fn not_supported(path: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        Self::new(
            path,
            ErrorKind::NotSupported {
                value: quote(value),
                supported: supported.iter().map(|s| s.to_string()).collect(),
            },
        )
    }

    /// `Forbidden: <detail>`.
    pub fn forbidden(path: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(path, ErrorKind::Forbidden(detail.into()))
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.kind)
        } else {
            write!(f, "{}: {}", self.path, self.kind)
        }
    }
}

/// A field that was accepted but not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The field path.
    pub path: String,
    /// Why it is ignored.
    pub message: String,
    /// The 1-based manifest line.
    pub line: Option<usize>,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Go's `%q` for the strings that appear in manifests: double quotes, backslash escapes.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The line of every field path seen in a document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    /// Records the line of `path`.
    pub fn insert(&mut self, path: &str, line: usize) {
        self.lines.entry(path.to_string()).or_insert(line);
    }

    /// The line of `path`, or of its closest recorded ancestor (a missing field points at
    /// the object that lacks it).
    pub fn line_for(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            if p.is_empty() {
                return None;
            }
            p = &p[..p.rfind(['.', '[']).unwrap_or(0)];
        }
    }

    /// Fills in the line of every error that has none.
    pub fn locate(&self, errors: &mut [FieldError]) {
        for e in errors {
            if e.line.is_none() {
                e.line = self.line_for(&e.path);
            }
        }
    }
}
