//! The README documents the command line: every subcommand and flag the binary has appears in it,
//! and every `capture-daemon` flag the README shows exists.

use std::collections::BTreeSet;
use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_capture-daemon"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// `--long` flags in a text.
fn flags(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2 && w.as_bytes()[2].is_ascii_alphabetic())
        .map(str::to_owned)
        .collect()
}

fn subcommands(top_help: &str) -> Vec<String> {
    top_help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn readme_and_binary_agree_on_the_command_line() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let top = help(&[]);
    let subs = subcommands(&top);
    assert!(subs.contains(&"run".to_owned()) && subs.contains(&"check".to_owned()), "{subs:?}");
    let mut binary_flags = flags(&top);
    for sub in &subs {
        assert!(
            readme.contains(&format!("capture-daemon {sub}")),
            "README does not show `capture-daemon {sub}`"
        );
        binary_flags.extend(flags(&help(&[sub])));
    }
    binary_flags.remove("--help");
    binary_flags.remove("--version");
    for flag in &binary_flags {
        assert!(readme.contains(flag.as_str()), "flag {flag} is not documented in README.md");
    }
    // Flags the README shows on capture-daemon command lines must exist.
    for line in readme.lines().filter(|l| l.contains("capture-daemon ")) {
        let shown = line.split("capture-daemon ").nth(1).unwrap_or("");
        let shown = shown.split(['|', '#']).next().unwrap_or("");
        for flag in flags(shown) {
            assert!(
                binary_flags.contains(&flag),
                "README shows {flag}, which capture-daemon does not have: {line}"
            );
        }
    }
}
