//! The docs' code is the code that builds: every fenced block marked `<!-- file: PATH -->` in README.md and docs/ equals that file of the repository, which the test suite builds and runs.

use std::path::{Path, PathBuf};

/// A fenced block a page says is a file, with where it says so.
struct Shown {
    page: PathBuf,
    line: usize,
    file: String,
    text: String,
}

/// Every `<!-- file: PATH -->` marker of `page` and the fenced block right under it.
fn shown_files(page: &Path) -> Vec<Shown> {
    let markdown = std::fs::read_to_string(page).unwrap();
    let lines: Vec<&str> = markdown.lines().collect();
    let mut shown = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(file) = line.trim().strip_prefix("<!-- file:").and_then(|rest| rest.strip_suffix("-->")) else { continue };
        let fence = lines.get(i + 1).copied().unwrap_or("");
        assert!(fence.starts_with("```"), "{}:{}: the marker must sit right above a fenced block", page.display(), i + 1);
        let body: Vec<&str> = lines[i + 2..].iter().take_while(|l| !l.starts_with("```")).copied().collect();
        shown.push(Shown { page: page.to_path_buf(), line: i + 1, file: file.trim().to_string(), text: body.join("\n") + "\n" });
    }
    shown
}

#[test]
fn every_file_a_page_shows_is_that_file_as_it_builds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut pages = vec![root.join("README.md")];
    pages.extend(
        std::fs::read_dir(root.join("docs")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "md")),
    );
    let shown: Vec<Shown> = pages.iter().flat_map(|p| shown_files(p)).collect();
    // docs/PLUGINS.md shows the echo plugin whole: its manifest, its code and its test.
    for file in ["tests/fixtures/echo/Cargo.toml", "tests/fixtures/echo/src/lib.rs", "tests/tests/echo.rs"] {
        assert!(shown.iter().any(|s| s.file == file), "docs/PLUGINS.md no longer shows {file}");
    }
    for s in &shown {
        let actual = std::fs::read_to_string(root.join(&s.file))
            .unwrap_or_else(|e| panic!("{}:{}: shows {}, which cannot be read: {e}", s.page.display(), s.line, s.file));
        assert!(
            actual == s.text,
            "{}:{}: the block differs from {}; change both together (the file is what builds and runs)\n--- page\n{}\n--- file\n{}",
            s.page.display(),
            s.line,
            s.file,
            s.text,
            actual
        );
    }
}
