//! Field paths (`spec.transform[0].sql`) and where each one is written in the file.

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path from the document root to a field, such as `spec.sink.part_size`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath(pub Vec<Seg>);

impl FieldPath {
    pub fn root() -> FieldPath {
        FieldPath(Vec::new())
    }

    /// Parses a dotted path made of plain keys and `[n]` indexes (for code, not for users).
    pub fn parse(text: &str) -> FieldPath {
        let mut segs = Vec::new();
        for part in text.split('.').filter(|p| !p.is_empty()) {
            let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
            if !key.is_empty() {
                segs.push(Seg::Key(key.to_string()));
            }
            while let Some((index, after)) = rest.split_once(']') {
                if let Ok(i) = index.parse() {
                    segs.push(Seg::Index(i));
                }
                rest = after.trim_start_matches('[');
            }
        }
        FieldPath(segs)
    }

    pub fn key(&self, key: &str) -> FieldPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_string()));
        FieldPath(segs)
    }

    pub fn index(&self, index: usize) -> FieldPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        FieldPath(segs)
    }

    pub fn join(&self, rest: &FieldPath) -> FieldPath {
        let mut segs = self.0.clone();
        segs.extend(rest.0.iter().cloned());
        FieldPath(segs)
    }

    pub fn parent(&self) -> Option<FieldPath> {
        let mut segs = self.0.clone();
        segs.pop().map(|_| FieldPath(segs))
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Key(k) if is_plain_key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Key(k) => write!(f, "[{k:?}]")?,
            }
        }
        Ok(())
    }
}

/// Keys that print without quotes in a path.
fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A 1-based line and column in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn of(mark: &Marker) -> Pos {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Pos {
            line: mark.line(),
            column: mark.col() + 1,
        }
    }
}

/// Which part of a field an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// The value (for a mapping or list value: its key, which is where a reader looks).
    Value,
    /// The key itself (an unknown or duplicate field).
    Key,
    /// A 1-based line and column inside a text value (a SQL error position).
    Within { line: usize, column: usize },
}

#[derive(Debug, Clone, Copy)]
struct Span {
    key: Option<Pos>,
    value: Pos,
    /// How a scalar value is written; `None` for mappings, lists and aliases.
    style: Option<TScalarStyle>,
}

/// Where every field path of a document is written.
#[derive(Debug, Default)]
pub struct SpanIndex {
    spans: HashMap<FieldPath, Span>,
    /// Keys given twice in one mapping: the path and where the second one is.
    pub duplicates: Vec<(FieldPath, Pos)>,
}

impl SpanIndex {
    /// Indexes the first document of `text`; a syntax error comes back with its position.
    pub fn build(text: &str) -> Result<SpanIndex, (Pos, String)> {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        parser
            .load(&mut builder, false)
            .map_err(|e| (Pos::of(e.marker()), e.info().to_string()))?;
        Ok(builder.index)
    }

    /// The position to report for `path`: the nearest indexed field at or above it.
    pub fn locate(&self, path: &FieldPath, at: At) -> Pos {
        let mut current = Some(path.clone());
        let mut exact = true;
        while let Some(p) = current {
            if let Some(span) = self.spans.get(&p) {
                return span_pos(span, if exact { at } else { At::Value });
            }
            exact = false;
            current = p.parent();
        }
        Pos { line: 1, column: 1 }
    }
}

fn span_pos(span: &Span, at: At) -> Pos {
    match at {
        At::Key => span.key.unwrap_or(span.value),
        At::Value if span.style.is_some() => span.value,
        At::Value => span.key.unwrap_or(span.value),
        At::Within { line, column } => match span.style {
            // A block scalar's content starts on its own line at the content indentation,
            // and each line keeps it.
            Some(TScalarStyle::Literal) => Pos {
                line: span.value.line + line - 1,
                column: span.value.column + column - 1,
            },
            // A single-line plain scalar: offsets on its first line are exact.
            Some(TScalarStyle::Plain) if line == 1 => Pos {
                line: span.value.line,
                column: span.value.column + column - 1,
            },
            Some(TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted) if line == 1 => Pos {
                line: span.value.line,
                column: span.value.column + column,
            },
            _ => span.key.unwrap_or(span.value),
        },
    }
}

enum Frame {
    Map {
        path: FieldPath,
        /// The key whose value comes next, with where the key is written.
        key: Option<(String, Pos)>,
        seen: HashMap<String, Pos>,
    },
    Seq {
        path: FieldPath,
        next: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    index: SpanIndex,
}

impl Builder {
    /// The path and key position of the value that starts now; advances the parent frame.
    fn next_value(&mut self) -> (FieldPath, Option<Pos>) {
        match self.stack.last_mut() {
            None => (FieldPath::root(), None),
            Some(Frame::Seq { path, next }) => {
                let p = path.index(*next);
                *next += 1;
                (p, None)
            }
            Some(Frame::Map { path, key, .. }) => match key.take() {
                Some((k, pos)) => (path.key(&k), Some(pos)),
                None => (path.key("?"), None),
            },
        }
    }

    /// Whether the scalar that starts now is a mapping key.
    fn expects_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }

    fn record(
        &mut self,
        path: FieldPath,
        key: Option<Pos>,
        value: Pos,
        style: Option<TScalarStyle>,
    ) {
        self.index
            .spans
            .entry(path)
            .or_insert(Span { key, value, style });
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let pos = Pos::of(&mark);
        match event {
            Event::Scalar(text, style, ..) => {
                if self.expects_key() {
                    if let Some(Frame::Map { path, key, seen }) = self.stack.last_mut() {
                        if seen.contains_key(&text) {
                            self.index.duplicates.push((path.key(&text), pos));
                        } else {
                            seen.insert(text.clone(), pos);
                        }
                        *key = Some((text, pos));
                    }
                } else {
                    let (path, key) = self.next_value();
                    self.record(path, key, pos, Some(style));
                }
            }
            Event::Alias(_) => {
                if self.expects_key() {
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some(("?".to_string(), pos));
                    }
                } else {
                    let (path, key) = self.next_value();
                    self.record(path, key, pos, None);
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let is_map = matches!(event, Event::MappingStart(..));
                let (path, key) = if self.expects_key() {
                    // A complex key (a mapping or list used as a key): not addressable.
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some(("?".to_string(), pos));
                    }
                    (FieldPath(vec![Seg::Key("?".to_string())]), None)
                } else {
                    self.next_value()
                };
                self.record(path.clone(), key, pos, None);
                self.stack.push(if is_map {
                    Frame::Map {
                        path,
                        key: None,
                        seen: HashMap::new(),
                    }
                } else {
                    Frame::Seq { path, next: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
apiVersion: sluice.dev/v1alpha1
spec:
  source:
    uri: s3://raw/x/
    include: [\"a\", \"b\"]
  transform:
    - name: one
      sql: |
        SELECT *
          FROM input
  labels: {\"app.kubernetes.io/name\": x}
";

    #[test]
    fn paths_print_like_the_docs() {
        let p = FieldPath::root()
            .key("spec")
            .key("transform")
            .index(0)
            .key("sql");
        assert_eq!(p.to_string(), "spec.transform[0].sql");
        assert_eq!(FieldPath::parse("spec.transform[0].sql"), p);
        let odd = FieldPath::root()
            .key("labels")
            .key("app.kubernetes.io/name");
        assert_eq!(odd.to_string(), "labels[\"app.kubernetes.io/name\"]");
    }

    #[test]
    fn locates_keys_values_and_nearest_ancestors() {
        let index = SpanIndex::build(TEXT).unwrap();
        let at = |p: &str, at| {
            let pos = index.locate(&FieldPath::parse(p), at);
            (pos.line, pos.column)
        };
        assert_eq!(at("apiVersion", At::Value), (1, 13));
        assert_eq!(at("apiVersion", At::Key), (1, 1));
        assert_eq!(at("spec.source.uri", At::Value), (4, 10));
        assert_eq!(at("spec.source.uri", At::Key), (4, 5));
        // A mapping value is reported at its key.
        assert_eq!(at("spec.source", At::Value), (3, 3));
        assert_eq!(at("spec.source.include[1]", At::Value), (5, 20));
        assert_eq!(at("spec.transform[0].name", At::Value), (7, 13));
        // Missing fields fall back to the nearest ancestor that is written.
        assert_eq!(at("spec.source.format", At::Value), (3, 3));
        assert_eq!(at("spec.sink.uri", At::Value), (2, 1));
        // Positions inside a literal block: SQL line 2, column 3 is "FROM".
        assert_eq!(
            at("spec.transform[0].sql", At::Within { line: 2, column: 3 }),
            (10, 11)
        );
        let label = FieldPath::root()
            .key("spec")
            .key("labels")
            .key("app.kubernetes.io/name");
        assert_eq!(index.locate(&label, At::Key).line, 11);
    }

    #[test]
    fn finds_duplicate_keys_and_syntax_errors() {
        let index = SpanIndex::build("a: 1\nb:\n  c: 1\n  c: 2\n").unwrap();
        assert_eq!(index.duplicates.len(), 1);
        assert_eq!(index.duplicates[0].0.to_string(), "b.c");
        assert_eq!(index.duplicates[0].1, Pos { line: 4, column: 3 });
        let (pos, message) = SpanIndex::build("a: 1\n b: 2\n").unwrap_err();
        assert_eq!(pos.line, 2);
        assert!(message.contains("mapping values"), "{message}");
    }
}
