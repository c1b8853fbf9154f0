//! CA bundles that packages ship and verify against instead of the
//! system's: certifi (in every virtualenv; requests, httpx and pip use
//! it), botocore's, grpcio's `roots.pem`, httplib2's, an SDK's own
//! `data/*.crt`. The jail has its own mount namespace, so each one found is
//! overlaid with its own contents plus the CA, as the system bundle is, and
//! no installed file changes.
//!
//! Where to look: the working directory, `VIRTUAL_ENV`, `CONDA_PREFIX`,
//! the site-packages of the Pythons on `PATH` (pyenv's versions too) and
//! the user's site-packages; `node_modules` is found under the working
//! directory. What counts: a file with a well-known bundle name that holds
//! at least `MIN_CERTS` PEM certificates (a root bundle, not a test
//! fixture). `--trust-path` adds files or globs beyond these.
//!
//! Bounded: each root is walked `MAX_DEPTH` levels deep and `MAX_ENTRIES`
//! entries at most, without following symlinked directories, and files
//! above `MAX_BUNDLE` bytes are skipped.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::TlsError;

/// File names packages give their CA bundles.
const NAMES: &[&str] = &[
    "cacert.pem",
    "cacerts.pem",
    "cacerts.txt",
    "ca-bundle.crt",
    "ca-bundle.pem",
    "ca-certificates.crt",
    "roots.pem",
    "trusted-certs.pem",
];

/// Fewer certificates than this is a test certificate or a chain, not a
/// bundle of roots (certifi holds about 140).
const MIN_CERTS: usize = 10;
const MAX_DEPTH: usize = 8;
const MAX_ENTRIES: usize = 100_000;
const MAX_BUNDLE: u64 = 8 << 20;

/// Directories that never hold a package's bundle, skipped for speed.
const SKIP_DIRS: &[&str] = &[".git", "target", "__pycache__", ".cache", "proc", "sys"];

/// A bundle to overlay, and why it was picked.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bundle {
    /// The file's real path (symlinks resolved): what gets the bind mount.
    pub path: PathBuf,
    pub found_by: String,
}

/// Where bundles are looked for, from the SUT's environment and its
/// program (`program` is the command's first word: a Python run by path is
/// searched even when it is not on PATH).
pub fn search_roots(program: Option<&std::ffi::OsStr>) -> Vec<(PathBuf, String)> {
    let mut roots = Vec::new();
    if let Some(prefix) = program.and_then(python_prefix_of) {
        for lib in site_packages(&prefix) {
            roots.push((lib, "the SUT's Python".to_string()));
        }
    }
    if let Ok(cwd) = std::env::current_dir() {
        roots.push((cwd, "the working directory".to_string()));
    }
    for var in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(v) = std::env::var_os(var) {
            roots.push((PathBuf::from(v), format!("${var}")));
        }
    }
    for prefix in python_prefixes() {
        for lib in site_packages(&prefix) {
            roots.push((lib, "a Python on PATH".to_string()));
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        for lib in site_packages(&Path::new(&home).join(".local")) {
            roots.push((lib, "the user's site-packages".to_string()));
        }
    }
    roots
}

/// `PREFIX` of a program named python* (given by path or found on PATH).
fn python_prefix_of(program: &std::ffi::OsStr) -> Option<PathBuf> {
    let path = Path::new(program);
    let name = path.file_name()?.to_string_lossy();
    if !name.starts_with("python") {
        return None;
    }
    let found = if path.components().count() > 1 {
        path.to_path_buf()
    } else {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|d| d.join(path))
            .find(|p| p.is_file())?
    };
    let real = std::fs::canonicalize(found).ok()?;
    Some(real.parent()?.parent()?.to_path_buf())
}

/// The install prefixes of the Pythons on PATH: `PREFIX/bin/python3`, and
/// pyenv's versions behind its shims.
fn python_prefixes() -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let Some(path) = std::env::var_os("PATH") else {
        return out;
    };
    for dir in std::env::split_paths(&path) {
        let has_python = ["python3", "python"].iter().any(|p| dir.join(p).exists());
        if !has_python {
            continue;
        }
        if dir.ends_with("shims") {
            if let Some(root) = dir.parent() {
                if let Ok(versions) = std::fs::read_dir(root.join("versions")) {
                    out.extend(versions.flatten().map(|e| e.path()));
                }
            }
            continue;
        }
        for py in ["python3", "python"] {
            if let Ok(real) = std::fs::canonicalize(dir.join(py)) {
                if let Some(prefix) = real.parent().and_then(Path::parent) {
                    out.insert(prefix.to_path_buf());
                }
            }
        }
        if let Some(prefix) = dir.parent() {
            out.insert(prefix.to_path_buf());
        }
    }
    out
}

/// `PREFIX/lib/python3*/{site,dist}-packages`, Debian's
/// `PREFIX/lib/python3/dist-packages` and `PREFIX/local/lib/…`.
fn site_packages(prefix: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for lib in [prefix.join("lib"), prefix.join("local/lib")] {
        let Ok(entries) = std::fs::read_dir(&lib) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if !name.to_string_lossy().starts_with("python") {
                continue;
            }
            for sub in ["site-packages", "dist-packages"] {
                let p = e.path().join(sub);
                if p.is_dir() {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// Whether `text` is a bundle of roots: `MIN_CERTS` certificates or more.
fn is_root_bundle(text: &str) -> bool {
    text.matches("-----BEGIN CERTIFICATE-----")
        .take(MIN_CERTS)
        .count()
        >= MIN_CERTS
}

fn read_small(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_BUNDLE {
        return None;
    }
    std::fs::read_to_string(path).ok()
}

/// The bundles under `roots`, each once (by real path).
pub fn discover(roots: &[(PathBuf, String)]) -> Vec<Bundle> {
    let mut found = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for (root, why) in roots {
        let walk = walkdir::WalkDir::new(root)
            .max_depth(MAX_DEPTH)
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| {
                !(e.file_type().is_dir()
                    && e.depth() > 0
                    && SKIP_DIRS.iter().any(|s| e.file_name() == *s))
            })
            .take(MAX_ENTRIES);
        for entry in walk.flatten() {
            let name = entry.file_name().to_string_lossy();
            if !NAMES.contains(&name.as_ref()) {
                continue;
            }
            let Ok(real) = std::fs::canonicalize(entry.path()) else {
                continue;
            };
            if !seen.insert(real.clone()) {
                continue;
            }
            if read_small(&real).is_some_and(|t| is_root_bundle(&t)) {
                found.insert(Bundle {
                    path: real,
                    found_by: why.clone(),
                });
            }
        }
    }
    found.into_iter().collect()
}

/// The files `--trust-path` names: paths or globs. A pattern that matches
/// nothing, or a file that holds no PEM certificate, is an error: the user
/// asked for it by name.
pub fn explicit(patterns: &[String]) -> Result<Vec<Bundle>, TlsError> {
    let mut out = Vec::new();
    for pat in patterns {
        let bad = |why: String| TlsError::TrustPath {
            pattern: pat.clone(),
            why,
        };
        let paths: Vec<PathBuf> = glob::glob(pat)
            .map_err(|e| bad(format!("not a valid glob: {e}")))?
            .flatten()
            .filter(|p| p.is_file())
            .collect();
        if paths.is_empty() {
            return Err(bad("matches no file".into()));
        }
        for p in paths {
            let text = read_small(&p)
                .ok_or_else(|| bad(format!("{} is not a readable text file", p.display())))?;
            if !text.contains("-----BEGIN CERTIFICATE-----") {
                return Err(bad(format!(
                    "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    p.display()
                )));
            }
            let path = std::fs::canonicalize(&p).unwrap_or(p);
            out.push(Bundle {
                path,
                found_by: format!("--trust-path {pat}"),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("meshwrap-bundled-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    fn bundle(n: usize) -> String {
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".repeat(n)
    }

    #[test]
    fn finds_package_bundles_by_name_and_content_only() {
        let dir = scratch("discover");
        let root = dir.as_path();
        for (rel, certs) in [
            ("venv/lib/python3.11/site-packages/certifi/cacert.pem", 140),
            ("grpc/_cython/_credentials/roots.pem", 120),
            ("tests/fixtures/cacert.pem", 1),
            ("other/notabundle.pem", 140),
            (".git/cacert.pem", 140),
        ] {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, bundle(certs)).unwrap();
        }
        let found = discover(&[(root.to_path_buf(), "test".into())]);
        let names: Vec<String> = found
            .iter()
            .map(|b| {
                b.path
                    .strip_prefix(std::fs::canonicalize(root).unwrap())
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            [
                "grpc/_cython/_credentials/roots.pem",
                "venv/lib/python3.11/site-packages/certifi/cacert.pem"
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn explicit_paths_must_match_and_hold_certificates() {
        let dir = scratch("explicit");
        let good = dir.join("sdk.crt");
        std::fs::write(&good, bundle(1)).unwrap();
        let bad = dir.join("notes.txt");
        std::fs::write(&bad, "hello").unwrap();
        let glob = format!("{}/*.crt", dir.display());
        assert_eq!(explicit(&[glob]).unwrap().len(), 1);
        let none = format!("{}/*.nothing", dir.display());
        assert!(explicit(&[none])
            .unwrap_err()
            .to_string()
            .contains("matches no file"));
        let err = explicit(&[bad.display().to_string()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
