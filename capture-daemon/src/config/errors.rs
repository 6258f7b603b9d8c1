//! [`ConfigError`], and turning a byte span into a line, a column, the key and a snippet.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, no permission, not UTF-8...).
    #[error("{}: cannot read config file: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    /// The file is not valid TOML. `snippet` is empty or starts with a newline.
    #[error("{}:{line}:{column}: invalid TOML: {message}{snippet}", .path.display())]
    Syntax { path: PathBuf, line: usize, column: usize, message: String, snippet: String },
    /// Valid TOML, but not a valid configuration.
    #[error("{}:{line}:{column}: {}{message}", .path.display(), key_prefix(.key.as_deref()))]
    Invalid { path: PathBuf, line: usize, column: usize, key: Option<String>, message: String },
}

/// Whole-file problems with no better position point at the start of the file.
pub(super) const FILE_START: Range<usize> = 0..0;

fn key_prefix(key: Option<&str>) -> String {
    key.map(|k| format!("key `{k}`: ")).unwrap_or_default()
}

/// An error found after deserialization: where, which key, what.
pub(super) struct Problem {
    span: Range<usize>,
    key: &'static str,
    message: String,
}

impl Problem {
    pub(super) fn new(span: Range<usize>, key: &'static str, message: String) -> Self {
        Self { span, key, message }
    }

    pub(super) fn into_error(self, text: &str, path: &Path) -> ConfigError {
        let (line, column) = line_column(text, self.span.start);
        ConfigError::Invalid {
            path: path.to_owned(),
            line,
            column,
            key: Some(self.key.to_owned()),
            message: self.message,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Positions.

/// 1-based line and column (in characters, as editors count) of byte offset `at`.
pub(super) fn line_column(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = without_bom(&before[line_start..], line_start).chars().count() + 1;
    (line, column)
}

/// `s`, less a byte-order mark if it starts the file (`at` is its offset): the TOML parser
/// skips one, and an editor shows none, so columns on line 1 do not count it.
pub(super) fn without_bom(s: &str, at: usize) -> &str {
    if at == 0 { s.strip_prefix('\u{feff}').unwrap_or(s) } else { s }
}

pub(super) fn syntax_error(e: &toml::de::Error, text: &str, path: &Path) -> ConfigError {
    let span = e.span().unwrap_or(FILE_START);
    let (line, column) = line_column(text, span.start);
    let mut message = e.message().to_owned();
    // toml says only "duplicate key": name it.
    if message == "duplicate key"
        && let Some(key) = text.get(span.clone())
        && !key.is_empty()
    {
        message = format!("duplicate key `{key}`");
    }
    ConfigError::Syntax {
        path: path.to_owned(),
        line,
        column,
        message,
        snippet: snippet(text, span),
    }
}

/// The offending line with carets under the span, indented like a compiler's.
pub(super) fn snippet(text: &str, span: Range<usize>) -> String {
    let start = span.start.min(text.len());
    let (Some(before), Some(after)) = (text.get(..start), text.get(start..)) else {
        return String::new();
    };
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = after.find('\n').map_or(text.len(), |i| start + i);
    let content = without_bom(&text[line_start..line_end], line_start).trim_end_matches('\r');
    let (line, _) = line_column(text, start);
    // Keep tabs so the carets line up under tab-indented text.
    let pad: String = without_bom(&before[line_start..], line_start)
        .chars()
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    let end = span.end.clamp(start, line_end);
    let carets = text.get(start..end).map_or(0, |s| s.chars().count()).max(1);
    let gutter = " ".repeat(line.to_string().len());
    format!("\n {gutter} |\n {line} | {content}\n {gutter} | {pad}{}", "^".repeat(carets))
}

pub(super) fn value_error(e: &toml::de::Error, text: &str, path: &Path) -> ConfigError {
    let span = e.span().unwrap_or(FILE_START);
    let (line, column) = line_column(text, span.start);
    let key = DeTable::parse(text).ok().and_then(|doc| key_at(doc.get_ref(), &span));
    ConfigError::Invalid {
        path: path.to_owned(),
        line,
        column,
        key,
        message: e.message().to_owned(),
    }
}

/// The key whose name or value most tightly encloses `span`.
pub(super) fn key_at(doc: &DeTable<'_>, span: &Range<usize>) -> Option<String> {
    fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
        outer.start <= inner.start && inner.end <= outer.end
    }
    fn visit(
        key: &str,
        value: &Spanned<DeValue<'_>>,
        span: &Range<usize>,
        best: &mut Option<(usize, String)>,
    ) {
        let vspan = value.span();
        if contains(&vspan, span) && best.as_ref().is_none_or(|(len, _)| vspan.len() <= *len) {
            *best = Some((vspan.len(), key.to_owned()));
        }
        // Table spans cover only their header, so search inside whatever the span.
        match value.get_ref() {
            DeValue::Table(t) => walk(t, span, best),
            DeValue::Array(items) => {
                for item in items.iter() {
                    visit(key, item, span, best);
                }
            }
            _ => {}
        }
    }
    fn walk(table: &DeTable<'_>, span: &Range<usize>, best: &mut Option<(usize, String)>) {
        for (k, v) in table.iter() {
            let kspan = k.span();
            if contains(&kspan, span) && best.as_ref().is_none_or(|(len, _)| kspan.len() <= *len) {
                *best = Some((kspan.len(), k.get_ref().to_string()));
            }
            visit(k.get_ref(), v, span, best);
        }
    }
    let mut best = None;
    walk(doc, span, &mut best);
    best.map(|(_, key)| key)
}
