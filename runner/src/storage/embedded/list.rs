//! ListObjectsV2 for the embedded server: one page of a bucket directory in S3 key order,
//! from a sorted walk that starts at the resume point, so a listing of N keys in pages
//! reads each directory about once instead of walking the whole bucket for every page.
//!
//! Siblings sort by their key (a directory's as `name/`): every key below a directory
//! starts with its `name/`, and a file name holds no `/`, so this order is the keys' byte
//! order. A directory wholly at or before the resume point is not entered; with the `/`
//! delimiter a directory is a common prefix and is not entered at all.

use std::fs::Metadata;
use std::io;
use std::path::Path;

/// One page of a listing.
#[derive(Debug, Default)]
pub struct Page {
    /// Objects in key order, with their file metadata.
    pub objects: Vec<(String, Metadata)>,
    /// Common prefixes in order (with a delimiter).
    pub prefixes: Vec<String>,
    /// More keys or prefixes follow the last one returned.
    pub truncated: bool,
    /// The last key or prefix returned: the next page starts after it.
    pub last: Option<String>,
}

/// What a listing asks for.
pub struct Query<'a> {
    pub prefix: &'a str,
    pub delimiter: Option<&'a str>,
    /// Return keys and prefixes strictly after this one.
    pub after: Option<&'a str>,
    pub max_keys: usize,
}

/// Lists one page of the bucket whose directory is `bucket`.
pub fn list_page(bucket: &Path, query: &Query<'_>) -> io::Result<Page> {
    let mut walk = Walk {
        query,
        page: Page::default(),
        full: false,
    };
    // Start in the deepest directory the prefix names whole: `a/b/c` starts in `a/b/`.
    let (dir_key, _) = query.prefix.rsplit_once('/').unwrap_or(("", ""));
    let start = if dir_key.is_empty() {
        bucket.to_path_buf()
    } else {
        bucket.join(dir_key)
    };
    let base = if dir_key.is_empty() {
        String::new()
    } else {
        format!("{dir_key}/")
    };
    match std::fs::metadata(&start) {
        Ok(meta) if meta.is_dir() => walk.dir(&start, &base)?,
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(walk.page)
}

struct Walk<'a> {
    query: &'a Query<'a>,
    page: Page,
    /// `max_keys` entries are in the page: the next one found only marks it truncated.
    full: bool,
}

impl Walk<'_> {
    /// Walks the directory whose keys start with `base`, in key order. Returns once the
    /// page is complete and truncated.
    fn dir(&mut self, path: &Path, base: &str) -> io::Result<()> {
        let mut entries: Vec<(String, bool, std::fs::DirEntry)> = Vec::new();
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue; // not UTF-8: not a key
            };
            let is_dir = entry.file_type()?.is_dir();
            let key = if is_dir {
                format!("{base}{name}/")
            } else {
                format!("{base}{name}")
            };
            entries.push((key, is_dir, entry));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let (prefix, after) = (self.query.prefix, self.query.after);
        for (key, is_dir, entry) in entries {
            if self.page.truncated {
                return Ok(());
            }
            if is_dir {
                // Keys below start with `key`: the directory matters if that range meets the
                // prefix and reaches past the resume point.
                let meets_prefix = key.starts_with(prefix) || prefix.starts_with(&key);
                let wholly_before = after.is_some_and(|a| key.as_str() < a && !a.starts_with(&key));
                if !meets_prefix || wholly_before {
                    continue;
                }
                if self.query.delimiter == Some("/") && key.len() > prefix.len() {
                    // A directory below the prefix is one common prefix.
                    if after.is_none_or(|a| key.as_str() > a) && has_file(&entry.path())? {
                        self.push_prefix(key);
                    }
                    continue;
                }
                self.dir(&entry.path(), &key)?;
            } else {
                if !key.starts_with(prefix) || after.is_some_and(|a| key.as_str() <= a) {
                    continue;
                }
                let common = self.query.delimiter.and_then(|d| {
                    let rest = &key[prefix.len()..];
                    rest.find(d)
                        .map(|at| format!("{prefix}{}", &rest[..at + d.len()]))
                });
                match common {
                    Some(common) => {
                        let seen = self.page.last.as_deref() == Some(common.as_str());
                        if !seen && after.is_none_or(|a| common.as_str() > a) {
                            self.push_prefix(common);
                        }
                    }
                    None => {
                        let meta = entry.metadata()?;
                        self.push_object(key, meta);
                    }
                }
            }
        }
        Ok(())
    }

    fn push_object(&mut self, key: String, meta: Metadata) {
        if self.full {
            self.page.truncated = true;
            return;
        }
        self.page.last = Some(key.clone());
        self.page.objects.push((key, meta));
        self.note_count();
    }

    fn push_prefix(&mut self, prefix: String) {
        if self.full {
            self.page.truncated = true;
            return;
        }
        self.page.last = Some(prefix.clone());
        self.page.prefixes.push(prefix);
        self.note_count();
    }

    fn note_count(&mut self) {
        self.full = self.page.objects.len() + self.page.prefixes.len() >= self.query.max_keys;
    }
}

/// Whether the directory holds a file anywhere below it (an empty directory is no prefix).
fn has_file(dir: &Path) -> io::Result<bool> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            if has_file(&entry.path())? {
                return Ok(true);
            }
        } else {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(keys: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for key in keys {
            let path = dir.path().join(key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, key.as_bytes()).unwrap();
        }
        dir
    }

    /// Every page in turn, as a client does with continuation tokens.
    fn pages(dir: &Path, prefix: &str, delimiter: Option<&str>, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = list_page(
                dir,
                &Query {
                    prefix,
                    delimiter,
                    after: after.as_deref(),
                    max_keys: max,
                },
            )
            .unwrap();
            let mut items: Vec<String> = page.objects.iter().map(|(k, _)| k.clone()).collect();
            items.extend(page.prefixes.iter().map(|p| format!("{p}*")));
            items.sort_by(|a, b| a.trim_end_matches('*').cmp(b.trim_end_matches('*')));
            out.extend(items);
            if !page.truncated {
                return out;
            }
            after = page.last;
        }
    }

    #[test]
    fn keys_come_in_byte_order_across_directories() {
        let keys = ["a-c", "a/b", "a/b/c", "a0", "b", "a/a", "a/b-", "z/y/x"];
        // "a/b" is both a file and a directory on S3; on a disk it cannot be, so leave it out.
        let keys: Vec<&str> = keys.into_iter().filter(|k| *k != "a/b").collect();
        let dir = bucket(&keys);
        let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        expected.sort();
        for max in [1, 2, 3, 1000] {
            assert_eq!(pages(dir.path(), "", None, max), expected, "max {max}");
        }
    }

    #[test]
    fn prefixes_and_delimiters_group_as_s3_does() {
        let dir = bucket(&[
            "in/a.csv",
            "in/b/c.csv",
            "in/b/d.csv",
            "in/c.csv",
            "inx",
            "out/e",
        ]);
        assert_eq!(
            pages(dir.path(), "in/", Some("/"), 1),
            ["in/a.csv", "in/b/*", "in/c.csv"]
        );
        assert_eq!(
            pages(dir.path(), "", Some("/"), 2),
            ["in/*", "inx", "out/*"]
        );
        assert_eq!(
            pages(dir.path(), "in", None, 2),
            ["in/a.csv", "in/b/c.csv", "in/b/d.csv", "in/c.csv", "inx"]
        );
        assert_eq!(
            pages(dir.path(), "in/b", None, 1),
            ["in/b/c.csv", "in/b/d.csv"]
        );
        // Another delimiter groups inside names too.
        assert_eq!(
            pages(dir.path(), "in/", Some("."), 1),
            ["in/a.*", "in/b/c.*", "in/b/d.*", "in/c.*"]
        );
        assert!(pages(dir.path(), "nothing/", None, 5).is_empty());
    }

    #[test]
    fn an_empty_directory_is_no_prefix() {
        let dir = bucket(&["k/v"]);
        std::fs::create_dir_all(dir.path().join("empty/deeper")).unwrap();
        assert_eq!(pages(dir.path(), "", Some("/"), 10), ["k/*"]);
        assert_eq!(pages(dir.path(), "", None, 10), ["k/v"]);
    }
}
