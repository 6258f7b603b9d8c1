//! The docs and the example config against the parser: every key documented, every documented
//! key and default real, every documented error message produced.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::schema::*;
use super::tests::{BASE, DOCS, EXAMPLE, err, interface, ok, target, with_base};
use super::*;

// --- the example file and the docs -----------------------------------------------------

#[test]
fn example_config_is_valid_and_shows_the_defaults() {
    let c = Config::parse(EXAMPLE, Path::new("config/capture.toml"))
        .unwrap_or_else(|e| panic!("config/capture.toml: {e}"));
    // The example claims every value it shows is the default.
    assert_eq!(c.capture, CaptureConfig::default());
    assert_eq!(c.output, OutputConfig::default());
    // A tap-mode interface with every default, and a mirror-mode one with its keys at
    // their defaults.
    let mirror = |name: &str| InterfaceConfig {
        name: name.into(),
        mode: Mode::Mirror,
        queues: Queues::All,
        xdp_mode: XdpMode::Auto,
        zero_copy: ZeroCopy::Auto,
    };
    assert_eq!(
        c.interfaces,
        vec![InterfaceConfig { mode: Mode::Tap, ..mirror("br0") }, mirror("enp65s0f0")]
    );
    assert_eq!(c.libvirt, LibvirtConfig::default());
    assert_eq!(c.targets.len(), 3);
    assert_eq!(c.targets[0].output, TargetOutput::Shared);
    assert_eq!((c.targets[1].vm.as_deref(), c.targets[1].vni), (Some("app07"), Some(5001)));
    assert_eq!(c.targets[0].mac.map(|m| format_mac(&m)).as_deref(), Some("52:54:00:12:34:56"));
    assert_eq!(c.targets[0].vlan, Some(100));
}

/// Field names of a derived `Deserialize` struct: the keys the parser accepts.
fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Grab<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Grab<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields taken"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Grab(&mut fields));
    fields
}

/// Each section the parser knows, with the keys it accepts, straight from the raw structs.
fn parser_sections() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    let sections = BTreeMap::from([
        ("capture", fields_of::<RawCapture>().iter().copied().collect()),
        ("output", fields_of::<RawOutput>().iter().copied().collect()),
        ("metrics", fields_of::<RawMetrics>().iter().copied().collect()),
        ("libvirt", fields_of::<RawLibvirt>().iter().copied().collect()),
        ("interface", fields_of::<RawInterface>().iter().copied().collect()),
        ("target", fields_of::<RawTarget>().iter().copied().collect()),
    ]);
    // A section added to RawConfig must be added above (and so to the docs and the example).
    let top: BTreeSet<&str> = fields_of::<RawConfig>().iter().copied().collect();
    assert_eq!(top, sections.keys().copied().collect::<BTreeSet<_>>());
    assert!(sections.values().all(|keys: &BTreeSet<&str>| !keys.is_empty()));
    sections
}

/// docs/config.md's key tables: section ("## `[capture]`") -> rows (key, default cell).
fn doc_tables() -> BTreeMap<String, Vec<(String, String)>> {
    let mut tables: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut section: Option<String> = None;
    for line in DOCS.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            section = heading
                .trim()
                .strip_prefix('`')
                .and_then(|h| h.strip_suffix('`'))
                .map(|h| h.trim_matches(['[', ']']).to_owned());
            if let Some(s) = &section {
                tables.entry(s.clone()).or_default();
            }
        } else if let Some(s) = &section
            && line.starts_with("| `")
        {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            assert!(cells.len() >= 5, "docs/config.md: short table row: {line}");
            let key = cells[1].trim_matches('`').to_owned();
            tables.entry(s.clone()).or_default().push((key, cells[3].to_owned()));
        }
    }
    tables
}

#[test]
fn docs_key_tables_match_the_parser() {
    let parser = parser_sections();
    let docs = doc_tables();
    let doc_sections: BTreeSet<&str> = docs.keys().map(String::as_str).collect();
    assert_eq!(doc_sections, parser.keys().copied().collect(), "docs/config.md sections");
    for (section, keys) in &parser {
        let documented: BTreeSet<&str> = docs[*section].iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            &documented, keys,
            "docs/config.md: keys of [{section}] (left: docs, right: parser)"
        );
        for key in keys {
            assert!(DOCS.contains(&format!("`{key}`")), "docs/config.md never writes `{key}`");
        }
    }
}

#[test]
fn example_has_every_key_and_only_known_ones() {
    let example: toml::Table = toml::from_str(EXAMPLE).expect("config/capture.toml is TOML");
    let parser = parser_sections();
    assert_eq!(
        example.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        parser.keys().copied().collect()
    );
    for (section, keys) in &parser {
        let tables: Vec<&toml::Table> = match &example[*section] {
            toml::Value::Table(t) => vec![t],
            toml::Value::Array(a) => a.iter().filter_map(toml::Value::as_table).collect(),
            other => panic!("[{section}] is {other:?}"),
        };
        let present: BTreeSet<&str> =
            tables.iter().flat_map(|t| t.keys()).map(String::as_str).collect();
        assert_eq!(
            &present, keys,
            "config/capture.toml: keys of [{section}] (left: example, right: parser)"
        );
    }
}

/// The example file's value for `section.key`, as TOML source.
fn example_value(section: &str, key: &str) -> String {
    let example: toml::Table = toml::from_str(EXAMPLE).expect("config/capture.toml is TOML");
    let value = match &example[section] {
        toml::Value::Array(a) => a.iter().find_map(|t| t.get(key)),
        t => t.get(key),
    };
    value.unwrap_or_else(|| panic!("config/capture.toml has no {section}.{key}")).to_string()
}

/// Keys that apply to mirror mode only (an error on a tap-mode interface).
const MIRROR_KEYS: [&str; 3] = ["queues", "xdp_mode", "zero_copy"];

/// A minimal valid config with `key = value` in `section` (a mirror-mode interface for the
/// keys of mirror mode).
fn config_with(section: &str, key: &str, value: &str) -> String {
    let mirror = MIRROR_KEYS.iter().any(|k| key.starts_with(k));
    match section {
        "interface" if key == "name" => interface(&format!("name = {value}")),
        // Instead of `name`, and only with a `vm` target.
        "interface" if key == "vm_taps" && value == "true" => {
            "[[interface]]\nvm_taps = true\n\n[[target]]\nname = \"t\"\nvm = \"t\"\n".to_owned()
        }
        "interface" if mirror => {
            interface(&format!("name = \"eth0\"\nmode = \"mirror\"\n{key} = {value}"))
        }
        "interface" => interface(&format!("name = \"eth0\"\n{key} = {value}")),
        "target" if key == "name" => target(&format!("name = {value}")),
        "target" => target(&format!("name = \"t\"\n{key} = {value}")),
        _ => with_base(&format!("[{section}]\n{key} = {value}")),
    }
}

#[test]
fn each_documented_key_is_accepted_and_a_misspelt_one_is_not() {
    for (section, rows) in doc_tables() {
        for (key, _) in rows {
            ok(&config_with(&section, &key, &example_value(&section, &key)));
            let typo = format!("{key}x");
            let e = err(&config_with(&section, &typo, &example_value(&section, &key)));
            assert!(e.contains(&format!("key `{typo}`: unknown field `{typo}`, expected")), "{e}");
        }
    }
}

#[test]
fn documented_defaults_are_the_parser_defaults() {
    for (section, rows) in doc_tables() {
        for (key, default) in rows {
            let literal = default.strip_prefix('`').and_then(|d| d.strip_suffix('`'));
            let Some(literal) = literal else {
                // Only required and optional-without-default keys may lack a literal default.
                assert!(
                    matches!(section.as_str(), "interface" | "target")
                        && ["name", "mac", "vlan", "vni", "vm"].contains(&key.as_str()),
                    "docs/config.md: [{section}] {key} has no default written as `value`: {default}"
                );
                continue;
            };
            let explicit = ok(&config_with(&section, &key, literal));
            let implicit = match section.as_str() {
                "interface" if MIRROR_KEYS.contains(&key.as_str()) => {
                    ok(&interface("name = \"eth0\"\nmode = \"mirror\""))
                }
                "interface" => ok(&interface("name = \"eth0\"")),
                "target" => ok(&target("name = \"t\"")),
                _ => ok(BASE),
            };
            assert_eq!(explicit, implicit, "docs/config.md: [{section}] {key} default {literal}");
        }
    }
}
/// Error examples shown in docs/config.md, with the TOML that produces each.
const DOC_ERRORS: &[(&str, &str)] = &[
    (
        "[[interface]]\nname = \"enp65s0f0\"\n\n[[target]]\nname = \"web01\"\nvlan = 4095\n",
        "/etc/capture-daemon/capture.toml:6:8: key `vlan`: VLAN 4095 is reserved; use 1..=4094",
    ),
    (
        "[[interface]]\nname = \"enp65s0f0\"\n\n[[target]]\nname = \"web01\"\nmac = \"00:00:00:00:00:00\"\n",
        "/etc/capture-daemon/capture.toml:6:7: key `mac`: the all-zero MAC 00:00:00:00:00:00 is not a real address; give the VM's MAC, or leave out `mac` to match any MAC",
    ),
    (
        "[[interface]]\nname = \"enp65s0f0\"\n\n[[target]]\nname = \"web01\"\nmac = \"52:54:00:12:34\"\n",
        "/etc/capture-daemon/capture.toml:6:7: key `mac`: invalid MAC address \"52:54:00:12:34\"; write six hex pairs separated by ':' or '-', e.g. \"52:54:00:12:34:56\"",
    ),
    (
        "[capture]\nsnap_len = 128\n",
        "/etc/capture-daemon/capture.toml:2:1: key `snap_len`: unknown field `snap_len`, expected one of `unmatched`, `snaplen`, `ring_size`, `buffer_bytes`, `busy_poll_us`, `batch_delay_us`, `tap_ring_bytes`, `umem_reserved_huge_pages`, `vxlan_ports`, `geneve_ports`",
    ),
    (
        "[capture]\nsnaplen = 10\n",
        "/etc/capture-daemon/capture.toml:2:11: key `snaplen`: snap length 10 is shorter than an Ethernet header; use 0 (whole frame) or 14..=65535",
    ),
    (
        "[capture]\nring_size = 1000\n",
        "/etc/capture-daemon/capture.toml:2:13: key `ring_size`: ring size 1000 is not a power of two; use e.g. 1024",
    ),
    (
        "[capture]\nbuffer_bytes = \"64 MB/s\"\n",
        "/etc/capture-daemon/capture.toml:2:16: key `buffer_bytes`: invalid size \"64 MB/s\": unknown unit \"MB/s\"; use B, k, kB, KiB, M, MB, MiB, G, GB, GiB, T, TB or TiB",
    ),
    (
        "[output]\nprefix = \".capture\"\n",
        "/etc/capture-daemon/capture.toml:2:10: key `prefix`: prefix \".capture\" starts with '.', which would hide the capture files",
    ),
    (
        "[output]\nrotate_bytes = 100\n",
        "/etc/capture-daemon/capture.toml:2:16: key `rotate_bytes`: rotating every 100 bytes would make a file per frame; use 0 (never) or at least 4096",
    ),
    (
        "[[interface]]\nname = \"enp65s0f0np0-mgmt\"\n",
        "/etc/capture-daemon/capture.toml:2:8: key `name`: interface name \"enp65s0f0np0-mgmt\" is 17 bytes long; Linux allows at most 15",
    ),
    (
        "[[interface]]\nname = \"enp65s0f0\"\nqueues = [0, 1, 300]\n",
        "/etc/capture-daemon/capture.toml:3:17: key `queues`: RX queue 300 is out of range; use 0..=255",
    ),
    (
        "[[interface]]\nname = \"enp65s0f0\"\nxdp_mode = \"skb\"\n",
        "/etc/capture-daemon/capture.toml:3:12: key `xdp_mode`: unknown XDP mode \"skb\"; use \"auto\", \"native\" or \"generic\"",
    ),
    (
        "[[interface]]\nname = \"enp65s0f0\"\n",
        "/etc/capture-daemon/capture.toml:1:1: key `target`: no [[target]] configured: nothing would be captured; add one (a target with neither mac nor vlan captures everything)",
    ),
    (
        "[[target]]\nname = \"web01\"\n",
        "/etc/capture-daemon/capture.toml:1:1: key `interface`: no [[interface]] configured; add one naming the NIC to capture on, e.g. [[interface]] name = \"enp65s0f0\"",
    ),
    (
        "[[interface]]\nname = \"enp65s0f0\"\n\n[[target]]\nname = \"web01\"\n\n[[target]]\nname = \"web01\"\nvlan = 200\n",
        "/etc/capture-daemon/capture.toml:8:8: key `name`: target name \"web01\" is already used on line 5; target names must be unique",
    ),
    (
        "[[interface]]\nname = \"enp65s0f0\"\n\n[[target]]\nmac = \"52:54:00:12:34:56\"\n",
        "/etc/capture-daemon/capture.toml:4:1: key `name`: missing: every [[target]] needs a name",
    ),
    (
        "[[interface]]\nname = \"enp65s0f0\"\n\n[target]\nname = \"web01\"\n",
        "/etc/capture-daemon/capture.toml:4:1: key `target`: invalid type: map, expected one or more [[target]] tables (note the double brackets)",
    ),
    (
        "[capture]\nsnaplen = 128\n\n[capture]\nring_size = 2048\n",
        "/etc/capture-daemon/capture.toml:4:2: invalid TOML: duplicate key `capture`\n   |\n 4 | [capture]\n   |  ^^^^^^^",
    ),
];

#[test]
fn documented_error_examples_are_real() {
    for (text, message) in DOC_ERRORS {
        assert_eq!(&err(text), message);
        assert!(DOCS.contains(message), "docs/config.md lacks the example:\n{message}");
    }
}
