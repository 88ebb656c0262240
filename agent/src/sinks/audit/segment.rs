//! Segment files: naming, listing and the directory fsyncs that make creating them durable.

use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

const PREFIX: &str = "audit-";
const SUFFIX: &str = ".jsonl";
/// Suffix of files holding bytes cut from a torn tail.
pub(crate) const TORN_SUFFIX: &str = ".torn";

/// Segment files are readable by the agent's group (operators running `audit verify`), not
/// by everyone: violation details name clients and endpoints.
pub(crate) const FILE_MODE: u32 = 0o640;

/// A segment file in the audit directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    pub number: u64,
    pub path: PathBuf,
}

/// `audit-000001.jsonl` for segment 1 (wider once the number needs more digits).
pub(crate) fn name(number: u64) -> String {
    format!("{PREFIX}{number:06}{SUFFIX}")
}

fn parse_name(file_name: &str) -> Option<u64> {
    let digits = file_name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl Segment {
    pub fn new(dir: &Path, number: u64) -> Self {
        Self {
            number,
            path: dir.join(name(number)),
        }
    }

    pub fn file_name(&self) -> String {
        name(self.number)
    }
}

/// Segment files in `dir`, ordered by number. Other files (`.torn`, the lock) are ignored.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(number) = entry.file_name().to_str().and_then(parse_name) else {
            continue;
        };
        if entry.file_type()?.is_file() {
            segments.push(Segment {
                number,
                path: entry.path(),
            });
        }
    }
    segments.sort_by_key(|s| s.number);
    Ok(segments)
}

/// `.torn` files in `dir`, sorted by name.
pub(crate) fn list_torn(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut torn = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(TORN_SUFFIX))
        {
            torn.push(entry.path());
        }
    }
    torn.sort();
    Ok(torn)
}

/// Makes a created, renamed or removed directory entry durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Opens a segment for appending, creating it if needed.
pub(crate) fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Creates a file that must not exist yet.
pub(crate) fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_foreign_files_are_ignored() {
        assert_eq!(name(1), "audit-000001.jsonl");
        assert_eq!(parse_name("audit-000001.jsonl"), Some(1));
        assert_eq!(parse_name("audit-1234567.jsonl"), Some(1_234_567));
        assert_eq!(parse_name("audit-000001.jsonl.torn"), None);
        assert_eq!(parse_name("audit-.jsonl"), None);
        assert_eq!(parse_name("audit-+1.jsonl"), None);
    }
}
