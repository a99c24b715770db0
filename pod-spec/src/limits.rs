//! Bounds on what reading one manifest stream may cost, against YAML amplification ("billion
//! laughs" aliases, deep nesting, huge texts, many documents): the text's size, the number of
//! aliases, the nesting depth, the number of documents, and the memory of the tree that
//! [`crate::source`] builds, with every alias counted at its expanded size.

use thiserror::Error;

use crate::source::{Entry, Node};

/// Largest manifest text read, in bytes (4 MiB; kube-apiserver takes request bodies of 3 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Largest tree built from one stream, in bytes of memory (64 MiB), aliases expanded.
pub const MAX_EXPANDED_BYTES: usize = 64 << 20;
/// Most aliases (`*name`) in one stream.
pub const MAX_ALIASES: usize = 1000;
/// Deepest nesting of sequences and mappings.
pub const MAX_DEPTH: usize = 64;
/// Most documents (`---`) in one stream.
pub const MAX_DOCUMENTS: usize = 1000;

/// What one manifest stream is allowed to cost; [`Limits::DEFAULT`] is what loading uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest text, in bytes.
    pub max_bytes: usize,
    /// Largest tree, in bytes of memory, aliases counted at their expanded size.
    pub max_expanded_bytes: usize,
    /// Most aliases.
    pub max_aliases: usize,
    /// Deepest nesting.
    pub max_depth: usize,
    /// Most documents.
    pub max_documents: usize,
}

impl Limits {
    /// The limits used by [`crate::load`].
    pub const DEFAULT: Limits = Limits {
        max_bytes: MAX_MANIFEST_BYTES,
        max_expanded_bytes: MAX_EXPANDED_BYTES,
        max_aliases: MAX_ALIASES,
        max_depth: MAX_DEPTH,
        max_documents: MAX_DOCUMENTS,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// A manifest refused because reading it would cost more than a [`Limits`] allows.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LimitError {
    /// The text is too large.
    #[error("manifest is larger than {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// Too many aliases.
    #[error("too many YAML aliases (more than {max})")]
    TooManyAliases {
        /// The limit.
        max: usize,
    },
    /// The tree, aliases expanded, would be too large.
    #[error("YAML expands past {max} bytes in memory (aliases counted at their expanded size)")]
    Expanded {
        /// The limit.
        max: usize,
    },
    /// Sequences and mappings nested too deeply.
    #[error("YAML nested deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// Too many documents.
    #[error("too many YAML documents in one stream (more than {max})")]
    TooManyDocuments {
        /// The limit.
        max: usize,
    },
}

/// The memory one node costs in the tree, besides its text: a node counted as a mapping entry
/// (the larger of the two), whether it is one or not.
pub(crate) const NODE_COST: usize = std::mem::size_of::<Entry>();

// A mapping entry holds a node; counting entries covers both.
const _: () = assert!(std::mem::size_of::<Entry>() >= std::mem::size_of::<Node>());

/// Running totals of one stream, checked against its [`Limits`].
#[derive(Debug)]
pub(crate) struct Budget {
    limits: Limits,
    /// Bytes of the tree built so far (aliases expanded).
    tree: usize,
    /// Bytes of everything held: the tree plus the anchors' copies.
    held: usize,
    aliases: usize,
    documents: usize,
}

impl Budget {
    pub(crate) fn new(limits: Limits) -> Self {
        Budget {
            limits,
            tree: 0,
            held: 0,
            aliases: 0,
            documents: 0,
        }
    }

    /// Refuses a text longer than the limit.
    pub(crate) fn text(&self, len: usize) -> Result<(), LimitError> {
        if len > self.limits.max_bytes {
            return Err(LimitError::TooLarge {
                max: self.limits.max_bytes,
            });
        }
        Ok(())
    }

    /// Bytes of the tree built so far; the difference of two readings is a subtree's cost.
    pub(crate) fn tree(&self) -> usize {
        self.tree
    }

    /// Charges a node (or an expanded alias) of `cost` bytes to the tree.
    pub(crate) fn node(&mut self, cost: usize) -> Result<(), LimitError> {
        self.hold(cost)?;
        self.tree = self.tree.saturating_add(cost);
        Ok(())
    }

    /// Charges a copy kept outside the tree (an anchor's value).
    pub(crate) fn hold(&mut self, cost: usize) -> Result<(), LimitError> {
        match self.held.checked_add(cost) {
            Some(held) if held <= self.limits.max_expanded_bytes => {
                self.held = held;
                Ok(())
            }
            _ => Err(LimitError::Expanded {
                max: self.limits.max_expanded_bytes,
            }),
        }
    }

    /// Counts one alias.
    pub(crate) fn alias(&mut self) -> Result<(), LimitError> {
        self.aliases += 1;
        if self.aliases > self.limits.max_aliases {
            return Err(LimitError::TooManyAliases {
                max: self.limits.max_aliases,
            });
        }
        Ok(())
    }

    /// Counts one document.
    pub(crate) fn document(&mut self) -> Result<(), LimitError> {
        self.documents += 1;
        if self.documents > self.limits.max_documents {
            return Err(LimitError::TooManyDocuments {
                max: self.limits.max_documents,
            });
        }
        Ok(())
    }

    /// Refuses a collection opened at nesting level `depth` (1 for a document's root).
    pub(crate) fn depth(&self, depth: usize) -> Result<(), LimitError> {
        if depth > self.limits.max_depth {
            return Err(LimitError::TooDeep {
                max: self.limits.max_depth,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{parse_documents, parse_documents_with, SourceError};

    fn limit_error(text: &str, limits: &Limits) -> LimitError {
        match parse_documents_with(text, limits) {
            Err(SourceError::Limit(e)) => e,
            other => panic!("expected a limit error, got {other:?}"),
        }
    }

    /// Nine levels of nine aliases each: 9^9 (387 million) strings once expanded, from 500 bytes.
    fn billion_laughs() -> String {
        let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..9 {
            let p = i - 1;
            let refs = vec![format!("*a{p}"); 9].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        text
    }

    #[test]
    fn nested_aliases_are_refused_at_the_expansion_bound() {
        let text = billion_laughs();
        assert!(text.len() < 1024);
        assert_eq!(
            limit_error(&text, &Limits::DEFAULT),
            LimitError::Expanded {
                max: MAX_EXPANDED_BYTES
            }
        );
        // A smaller bound is met sooner, by the same rule.
        let small = Limits {
            max_expanded_bytes: 64 << 10,
            ..Limits::DEFAULT
        };
        assert_eq!(
            limit_error(&text, &small),
            LimitError::Expanded { max: 64 << 10 }
        );
    }

    #[test]
    fn alias_count_is_bounded() {
        let refs = vec!["*x"; MAX_ALIASES + 1].join(", ");
        let text = format!("x: &x 1\ny: [{refs}]\n");
        assert_eq!(
            limit_error(&text, &Limits::DEFAULT),
            LimitError::TooManyAliases { max: MAX_ALIASES }
        );
        // A few aliases are fine.
        let docs = parse_documents("x: &x {a: 1}\ny: [*x, *x, *x]\nz: *x\n").unwrap();
        assert_eq!(
            docs[0].get("z").and_then(|z| z.get_str("a")).as_deref(),
            Some("1")
        );
    }

    #[test]
    fn nesting_is_bounded_in_flow_block_and_json() {
        let deep = MAX_DEPTH + 1;
        let flow = format!("{}{}", "[".repeat(deep), "]".repeat(deep));
        let too_deep = LimitError::TooDeep { max: MAX_DEPTH };
        assert_eq!(limit_error(&flow, &Limits::DEFAULT), too_deep);
        // Block nesting is not limited by the parser's flow level; 100 000 levels would
        // overflow the stack of a recursive loader.
        let block = format!("{}x\n", "- ".repeat(100_000));
        assert_eq!(limit_error(&block, &Limits::DEFAULT), too_deep);
        // JSON the YAML parser refuses (a tab before a key) takes the serde_json path.
        let json = format!("{{\t\"a\": {}1{}}}", "[".repeat(deep), "]".repeat(deep));
        assert_eq!(limit_error(&json, &Limits::DEFAULT), too_deep);
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse_documents(&ok).is_ok());
    }

    #[test]
    fn documents_and_text_size_are_bounded() {
        let limits = Limits {
            max_documents: 3,
            max_bytes: 100,
            ..Limits::DEFAULT
        };
        assert!(parse_documents_with("a: 1\n---\nb: 2\n---\nc: 3\n", &limits).is_ok());
        assert_eq!(
            limit_error("a: 1\n---\nb: 2\n---\nc: 3\n---\nd: 4\n", &limits),
            LimitError::TooManyDocuments { max: 3 }
        );
        // Empty documents count too: they cost parsing time.
        assert_eq!(
            limit_error("---\n---\n---\n---\n", &limits),
            LimitError::TooManyDocuments { max: 3 }
        );
        assert_eq!(
            limit_error(&"#".repeat(101), &limits),
            LimitError::TooLarge { max: 100 }
        );
    }

    #[test]
    fn wide_documents_are_bounded_without_aliases() {
        let limits = Limits {
            max_expanded_bytes: 1 << 20,
            ..Limits::DEFAULT
        };
        let wide = format!("[{}]", vec!["1"; 100_000].join(","));
        assert_eq!(
            limit_error(&wide, &limits),
            LimitError::Expanded { max: 1 << 20 }
        );
        let json = format!("{{\t\"a\": [{}]}}", vec!["1"; 100_000].join(","));
        assert_eq!(
            limit_error(&json, &limits),
            LimitError::Expanded { max: 1 << 20 }
        );
    }
}
