//! Which server files SQL may read or write (`CREATE EXTERNAL TABLE … LOCATION`,
//! `COPY … TO 'file'`): never anything inside the data directory — its commit log holds the
//! catalog and every user's SCRAM verifier, and a write there could erase acknowledged
//! records — and, when `--file-root` is set, only what lies under it. Who may use server
//! files at all is the roles' business (`pg_read_server_files`, `pg_write_server_files`).
//!
//! Paths are resolved as the server will open them (relative to its working directory),
//! through symbolic links, before they are compared.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileUse {
    Read,
    Write,
}

#[derive(Debug, Clone)]
pub struct ServerFiles {
    /// The data directory, resolved.
    data_dir: PathBuf,
    /// Files outside this directory (resolved) are refused, when it is set.
    root: Option<PathBuf>,
}

impl ServerFiles {
    pub fn new(data_dir: &Path, root: Option<&Path>) -> Result<ServerFiles> {
        let resolve = |p: &Path| {
            std::fs::canonicalize(p).map_err(|e| {
                Error::plan(
                    "58030",
                    format!("cannot resolve directory {}: {e}", p.display()),
                )
            })
        };
        Ok(ServerFiles {
            data_dir: resolve(data_dir)?,
            root: root.map(resolve).transpose()?,
        })
    }

    /// Refuses `location` (a path, `file://` URL or glob) if it reaches into the data
    /// directory or out of the file root. Other URL schemes (`s3://…`) are not server files.
    pub fn check(&self, location: &str, use_: FileUse) -> Result<()> {
        if let Some((scheme, _)) = location.split_once("://")
            && !scheme.eq_ignore_ascii_case("file")
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+')
        {
            return Ok(());
        }
        let path = location
            .strip_prefix("file://")
            .unwrap_or(location)
            .to_string();
        // A glob reads what its fixed prefix names.
        let fixed = match path.find(['*', '?', '[', '{']) {
            Some(at) => &path[..at],
            None => path.as_str(),
        };
        let resolved = resolve(Path::new(fixed))
            .map_err(|e| Error::plan("58030", format!("cannot resolve \"{location}\": {e}")))?;
        let verb = match use_ {
            FileUse::Read => "read",
            FileUse::Write => "write",
        };
        if resolved.starts_with(&self.data_dir) || self.data_dir.starts_with(&resolved) {
            return Err(Error::plan(
                "42501",
                format!(
                    "permission denied to {verb} \"{location}\": it is (or holds) the data directory, whose files only the server itself reads and writes"
                ),
            ));
        }
        if let Some(root) = &self.root
            && !resolved.starts_with(root)
        {
            return Err(Error::plan(
                "42501",
                format!(
                    "permission denied to {verb} \"{location}\": server files must be under {} (--file-root)",
                    root.display()
                ),
            ));
        }
        Ok(())
    }
}

/// `path` made absolute, with `.`, `..` and symbolic links resolved as far as it exists
/// (a file about to be written does not yet).
fn resolve(path: &Path) -> std::io::Result<PathBuf> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    // The longest prefix that exists, resolved, then the rest appended lexically.
    let mut existing = absolute.clone();
    let mut rest: Vec<std::ffi::OsString> = vec![];
    loop {
        match std::fs::canonicalize(&existing) {
            Ok(resolved) => {
                let mut out = resolved;
                for part in rest.iter().rev() {
                    match part.to_str() {
                        Some("..") => {
                            out.pop();
                        }
                        Some(".") => {}
                        _ => out.push(part),
                    }
                }
                return Ok(out);
            }
            Err(_) => {
                let Some(name) = existing.components().next_back() else {
                    return Ok(absolute);
                };
                rest.push(name.as_os_str().to_os_string());
                if !existing.pop() {
                    return Ok(absolute);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_directory_is_out_of_reach_however_it_is_named() {
        let base = tempfile::tempdir().unwrap();
        let data = base.path().join("data");
        std::fs::create_dir_all(data.join("topics")).unwrap();
        std::fs::write(data.join("commit.log"), b"x").unwrap();
        let outside = base.path().join("files");
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&data, outside.join("sneaky")).unwrap();
        let files = ServerFiles::new(&data, None).unwrap();
        let d = data.display();
        let o = outside.display();
        for bad in [
            format!("{d}/commit.log"),
            format!("file://{d}/commit.log"),
            format!("{d}/topics/"),
            format!("{d}"),
            format!("{o}/../data/commit.log"),
            format!("{o}/sneaky/commit.log"),
            format!("{o}/sneaky/*.log"),
            format!("{d}/not-yet/out.csv"),
            base.path().display().to_string(),
        ] {
            let e = files.check(&bad, FileUse::Write).unwrap_err();
            assert_eq!(e.sqlstate(), "42501", "{bad}");
        }
        files
            .check(&format!("{o}/out.csv"), FileUse::Write)
            .unwrap();
        files.check(&format!("{o}/*.csv"), FileUse::Read).unwrap();
        files.check("s3://bucket/trips/", FileUse::Read).unwrap();
    }

    #[test]
    fn a_file_root_confines_server_files() {
        let base = tempfile::tempdir().unwrap();
        let data = base.path().join("data");
        let root = base.path().join("shared");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        let files = ServerFiles::new(&data, Some(&root)).unwrap();
        files
            .check(&format!("{}/in/x.csv", root.display()), FileUse::Read)
            .unwrap();
        for bad in ["/etc/shadow", "/etc/passwd"] {
            assert_eq!(
                files.check(bad, FileUse::Read).unwrap_err().sqlstate(),
                "42501"
            );
        }
        let escape = format!("{}/../data/x", root.display());
        assert_eq!(
            files.check(&escape, FileUse::Read).unwrap_err().sqlstate(),
            "42501"
        );
    }
}
