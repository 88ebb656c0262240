//! Contract errors: every problem, each with its field path and position.

use std::{fmt, path::PathBuf};

/// One problem in a contract file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The field path, like `spec.stages[1].startsAt`; empty for YAML
    /// syntax errors and problems with the document as a whole.
    pub path: String,
    /// 1-based line and column of the offending node (for a missing field:
    /// of the mapping that lacks it).
    pub line: usize,
    pub column: usize,
    /// One sentence: what is wrong and what to do.
    pub message: String,
}

impl Diagnostic {
    /// `FILE:LINE:COL: path: message`, the format `contract check` prints.
    pub fn display_with<'a>(&'a self, source_name: &'a str) -> impl fmt::Display + 'a {
        DisplayWith {
            diag: self,
            source_name,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

struct DisplayWith<'a> {
    diag: &'a Diagnostic,
    source_name: &'a str,
}

impl fmt::Display for DisplayWith<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source_name, self.diag)
    }
}

/// Why a contract could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("cannot read contract file {}: {source}; check the path and its permissions", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid contract. `Display` prints every
    /// diagnostic on its own line as `FILE:LINE:COL: path: message`.
    #[error("{}", render(source_name, diagnostics))]
    Invalid {
        source_name: String,
        /// Sorted by position; never empty.
        diagnostics: Vec<Diagnostic>,
    },
}

impl ContractError {
    /// The diagnostics, empty for read errors.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            Self::Invalid { diagnostics, .. } => diagnostics,
            Self::Read { .. } => &[],
        }
    }
}

fn render(source_name: &str, diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| d.display_with(source_name).to_string())
        .collect::<Vec<_>>()
        .join("\n")
}
