//! Download progress: one bar per layer on a terminal (indicatif), plain lines otherwise.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::io::IsTerminal;

/// Errors of this module (none can occur today; kept for the one-enum-per-module rule).
#[derive(Debug, thiserror::Error)]
pub enum ProgressError {}

/// How to report progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProgressMode {
    /// Bars when stderr is a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// Plain lines on stderr.
    Plain,
    /// Nothing.
    Quiet,
}

/// Progress for one pull.
pub struct Progress {
    multi: Option<MultiProgress>,
    plain: bool,
}

/// Progress of one blob.
pub struct BlobProgress {
    bar: Option<ProgressBar>,
    label: String,
    plain: bool,
}

impl Progress {
    /// Starts reporting in `mode`.
    pub fn new(mode: ProgressMode) -> Self {
        let tty = std::io::stderr().is_terminal();
        match mode {
            ProgressMode::Auto if tty => Self {
                multi: Some(MultiProgress::new()),
                plain: false,
            },
            ProgressMode::Auto | ProgressMode::Plain => Self {
                multi: None,
                plain: true,
            },
            ProgressMode::Quiet => Self {
                multi: None,
                plain: false,
            },
        }
    }

    /// A line of status.
    pub fn note(&self, msg: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(msg);
            }
            None if self.plain => eprintln!("{msg}"),
            None => {}
        }
    }

    /// Starts a blob of `size` bytes.
    pub fn blob(&self, label: &str, size: u64) -> BlobProgress {
        let bar = self.multi.as_ref().map(|m| {
            let b = m.add(ProgressBar::new(size));
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_prefix(label.to_string());
            b
        });
        if self.plain {
            eprintln!("{label}: downloading {size} bytes");
        }
        BlobProgress {
            bar,
            label: label.to_string(),
            plain: self.plain,
        }
    }
}

impl BlobProgress {
    /// Adds downloaded bytes.
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// Marks the blob done (`how`: "done", "already exists").
    pub fn finish(&self, how: &str) {
        if let Some(b) = &self.bar {
            b.finish_with_message(how.to_string());
        }
        if self.plain {
            eprintln!("{}: {how}", self.label);
        }
    }
}
