//! Parser tests: good configs, and each bad value with its position and message.

use super::checks::*;
use super::*;

pub(super) const P: &str = "/etc/capture-daemon/capture.toml";
/// The smallest valid tail: one interface, one catch-all target.
pub(super) const BASE: &str = "[[interface]]\nname = \"eth0\"\n\n[[target]]\nname = \"all\"\n";
pub(super) const EXAMPLE: &str = include_str!("../../../config/capture.toml");
pub(super) const DOCS: &str = include_str!("../../../docs/config.md");

pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new(P))
}

#[track_caller]
pub(super) fn ok(text: &str) -> Config {
    parse(text).unwrap_or_else(|e| panic!("expected a valid config, got:\n{e}\n--- input:\n{text}"))
}

#[track_caller]
pub(super) fn err(text: &str) -> String {
    match parse(text) {
        Ok(c) => panic!("expected an error, got {c:?}\n--- input:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// `extra` (sections before the interface and target) + BASE.
pub(super) fn with_base(extra: &str) -> String {
    format!("{extra}\n{BASE}")
}

pub(super) fn target(body: &str) -> String {
    format!("[[interface]]\nname = \"eth0\"\n\n[[target]]\n{body}\n")
}

pub(super) fn interface(body: &str) -> String {
    format!("[[interface]]\n{body}\n\n[[target]]\nname = \"all\"\n")
}

// --- good configs ----------------------------------------------------------------------

#[test]
fn minimal_config_gets_defaults() {
    let c = ok(BASE);
    assert_eq!(c.capture, CaptureConfig::default());
    assert_eq!(c.output, OutputConfig::default());
    assert_eq!(
        c.interfaces,
        vec![InterfaceConfig {
            name: "eth0".into(),
            mode: Mode::Tap,
            queues: Queues::All,
            xdp_mode: XdpMode::Auto,
            zero_copy: ZeroCopy::Auto,
        }]
    );
    assert_eq!(
        c.targets,
        vec![TargetConfig { name: "all".into(), mac: None, vlan: None, ..TargetConfig::default() }]
    );
}

#[test]
fn defaults_are_the_documented_values() {
    let c = CaptureConfig::default();
    assert_eq!(
        (c.unmatched, c.snaplen, c.ring_size, c.buffer_bytes, c.tap_ring_bytes),
        (Unmatched::Pass, 0, 4096, 64 << 20, 4 << 20)
    );
    let o = OutputConfig::default();
    assert_eq!(o.directory, Path::new("/var/lib/capture-daemon"));
    assert_eq!(o.prefix, "capture");
    assert_eq!(
        (o.rotate_bytes, o.rotate_seconds, o.rotate_packets, o.keep_files, o.keep_bytes),
        (1 << 30, 300, 0, 0, 0)
    );
}

#[test]
fn every_key_set() {
    let c = ok(r#"
[capture]
unmatched = "drop"
snaplen = 128
ring_size = 2048
buffer_bytes = 8388608
busy_poll_us = 50
batch_delay_us = 500
tap_ring_bytes = "16 MiB"
umem_reserved_huge_pages = true
vxlan_ports = [4789]
geneve_ports = [6081, 6082]

[libvirt]
uri = "qemu+ssh://hv02/system"

[output]
directory = "/srv/pcap"
prefix = "hv01_cap-1.0"
rotate_bytes = "500 MB"
rotate_seconds = 0
rotate_packets = 1000000
keep_files = 48
keep_bytes = "2 TiB"
keep_free_bytes = "50 GiB"
keep_free_percent = 5
group = "0"

[[interface]]
name = "enp65s0f0"
mode = "mirror"
queues = [0, 3, 1]
xdp_mode = "native"
zero_copy = "on"

[[interface]]
name = "bond0.100"
mode = "mirror"
xdp_mode = "generic"
zero_copy = "off"

[[target]]
name = "web01"
mac = "52-54-00-AB-cd-EF"
vlan = 4094
vni = 16777215
vm = "web01.example"
output = "own"

[[target]]
name = "vlan:7"
vlan = 1

[[target]]
name = "bcast"
mac = "ff:ff:ff:ff:ff:ff"
"#);
    assert_eq!(
        c.capture,
        CaptureConfig {
            unmatched: Unmatched::Drop,
            snaplen: 128,
            ring_size: 2048,
            buffer_bytes: 8 << 20,
            busy_poll_us: 50,
            batch_delay_us: 500,
            tap_ring_bytes: 16 << 20,
            umem_reserved_huge_pages: true,
            vxlan_ports: vec![4789],
            geneve_ports: vec![6081, 6082],
        }
    );
    assert_eq!(c.libvirt.uri, "qemu+ssh://hv02/system");
    assert_eq!(
        c.output,
        OutputConfig {
            directory: "/srv/pcap".into(),
            prefix: "hv01_cap-1.0".into(),
            rotate_bytes: 500_000_000,
            rotate_seconds: 0,
            rotate_packets: 1_000_000,
            keep_files: 48,
            keep_bytes: 2 << 40,
            keep_free_bytes: 50 << 30,
            keep_free_percent: 5,
            group: Some(FileGroup { name: "0".into(), gid: 0 }),
        }
    );
    assert_eq!(
        c.interfaces,
        vec![
            InterfaceConfig {
                name: "enp65s0f0".into(),
                mode: Mode::Mirror,
                queues: Queues::List(vec![0, 3, 1]),
                xdp_mode: XdpMode::Native,
                zero_copy: ZeroCopy::On,
            },
            InterfaceConfig {
                name: "bond0.100".into(),
                mode: Mode::Mirror,
                queues: Queues::All,
                xdp_mode: XdpMode::Generic,
                zero_copy: ZeroCopy::Off,
            },
        ]
    );
    assert_eq!(
        c.targets,
        vec![
            TargetConfig {
                name: "web01".into(),
                mac: Some([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]),
                vlan: Some(4094),
                vni: Some(0xff_ffff),
                vm: Some("web01.example".into()),
                output: TargetOutput::Own,
            },
            TargetConfig {
                name: "vlan:7".into(),
                mac: None,
                vlan: Some(1),
                ..TargetConfig::default()
            },
            TargetConfig {
                name: "bcast".into(),
                mac: Some([0xff; 6]),
                vlan: None,
                ..TargetConfig::default()
            },
        ]
    );
}

#[test]
fn inline_tables_and_dotted_keys() {
    let c = ok(r#"
capture.snaplen = 96
output = { prefix = "x", keep_files = 3 }
interface = [{ name = "eth1", mode = "mirror", queues = [2] }]
target = [{ name = "a", vlan = 5 }, { name = "b" }]
"#);
    assert_eq!(c.capture.snaplen, 96);
    assert_eq!((c.output.prefix.as_str(), c.output.keep_files), ("x", 3));
    assert_eq!(c.interfaces[0].queues, Queues::List(vec![2]));
    assert_eq!(c.targets.len(), 2);
}

#[test]
fn boundary_values_accepted() {
    for (section, key, value) in [
        ("capture", "snaplen", "14"),
        ("capture", "snaplen", "65535"),
        ("capture", "ring_size", "64"),
        ("capture", "ring_size", "65536"),
        ("capture", "buffer_bytes", "\"1 MiB\""),
        ("capture", "buffer_bytes", "4294967296"),
        ("capture", "busy_poll_us", "0"),
        ("capture", "busy_poll_us", "1000"),
        ("capture", "batch_delay_us", "0"),
        ("capture", "batch_delay_us", "20000"),
        ("output", "rotate_bytes", "0"),
        ("output", "rotate_bytes", "4096"),
        ("output", "rotate_bytes", "\"4 KiB\""),
        ("output", "keep_bytes", "\"0\""),
    ] {
        ok(&with_base(&format!("[{section}]\n{key} = {value}")));
    }
    ok(&interface("name = \"a23456789012345\"\nmode = \"mirror\"\nqueues = [255, 0]"));
    ok(&target(&format!("name = \"{}\"\nvlan = 1", "t".repeat(64))));
}

#[test]
fn target_without_mac_or_vlan_is_fine() {
    let c = ok(&target("name = \"everything\""));
    assert_eq!(
        c.targets[0],
        TargetConfig {
            name: "everything".into(),
            mac: None,
            vlan: None,
            ..TargetConfig::default()
        }
    );
}

#[test]
fn sixty_four_targets_are_allowed() {
    let mut text = String::from("[[interface]]\nname = \"eth0\"\n");
    for i in 0..64 {
        text += &format!("[[target]]\nname = \"t{i}\"\nvlan = {}\n", i + 1);
    }
    assert_eq!(ok(&text).targets.len(), 64);
}

#[test]
fn crlf_line_endings() {
    let text = "[capture]\r\nsnaplen = 64\r\n\r\n[[interface]]\r\nname = \"eth0\"\r\n[[target]]\r\nname = \"a\"\r\nvlan = 4095\r\n";
    assert_eq!(err(text), format!("{P}:8:8: key `vlan`: VLAN 4095 is reserved; use 1..=4094"));
}

#[test]
fn interfaces_are_in_tap_mode_unless_they_say_mirror() {
    let c = ok(&interface("name = \"br0\""));
    assert_eq!(c.interfaces[0].mode, Mode::Tap);
    let c = ok(&interface("name = \"span0\"\nmode = \"mirror\"\nxdp_mode = \"native\""));
    assert_eq!((c.interfaces[0].mode, c.interfaces[0].xdp_mode), (Mode::Mirror, XdpMode::Native));
    assert_eq!(
        err(&interface("name = \"eth0\"\nmode = \"steal\"")),
        format!("{P}:3:8: key `mode`: unknown mode \"steal\"; use \"tap\" or \"mirror\"")
    );
}

#[test]
fn mirror_only_settings_on_a_tap_interface_are_errors() {
    for (line, column) in
        [("queues = [0]", 10), ("xdp_mode = \"native\"", 12), ("zero_copy = \"on\"", 13)]
    {
        let key = line.split(' ').next().unwrap_or_default();
        let e = err(&interface(&format!("name = \"vnet3\"\n{line}")));
        assert_eq!(
            e,
            format!(
                "{P}:3:{column}: key `{key}`: applies to mirror mode only, and interface \"vnet3\" \
                 is in tap mode (the default: frames are copied, the traffic goes on \
                 untouched); remove `{key}`, or add mode = \"mirror\" if this NIC is fed by a \
                 SPAN/TAP port"
            )
        );
    }
    let e = err(&with_base("[capture]\nunmatched = \"drop\""));
    assert!(
        e.starts_with(&format!("{P}:2:13: key `unmatched`: \"drop\" applies to mirror mode only")),
        "{e}"
    );
    ok(&interface("name = \"span0\"\nmode = \"mirror\"")
        .replace("[[interface]]", "[capture]\nunmatched = \"drop\"\n\n[[interface]]"));
}

#[test]
fn tap_ring_bytes_is_a_power_of_two_in_range() {
    let text = |v: &str| with_base(&format!("[capture]\ntap_ring_bytes = {v}"));
    assert_eq!(ok(&text("\"256 KiB\"")).capture.tap_ring_bytes, 256 << 10);
    assert_eq!(
        err(&text("\"3 MiB\"")),
        format!(
            "{P}:2:18: key `tap_ring_bytes`: ring size 3145728 bytes is not a power of two; use e.g. 4194304 (4 MiB)"
        )
    );
    assert_eq!(
        err(&text("4096")),
        format!(
            "{P}:2:18: key `tap_ring_bytes`: ring size 4096 bytes is out of range; use a power of two in 64 KiB..=1 GiB"
        )
    );
}

// --- value errors, with positions --------------------------------------------------------

#[test]
fn metrics_listen_needs_a_fixed_port() {
    let text = |l: &str| with_base(&format!("[metrics]\nlisten = \"{l}\""));
    assert_eq!(ok(&text("[::1]:9000")).metrics.listen.port(), 9000);
    let e = err(&text("127.0.0.1:0"));
    assert!(e.contains(":2:10: key `listen`: \"127.0.0.1:0\": port 0 is not a fixed port"), "{e}");
}

#[test]
fn output_group_is_looked_up_when_the_config_is_read() {
    let text = |g: &str| with_base(&format!("[output]\ngroup = \"{g}\""));
    // "root" is group 0 on every Linux host.
    assert_eq!(ok(&text("root")).output.group, Some(FileGroup { name: "root".into(), gid: 0 }));
    assert_eq!(ok(&text("")).output.group, None);
    let e = err(&text("no-such-group-x"));
    assert!(e.contains(":2:9: key `group`: no group \"no-such-group-x\" on this host"), "{e}");
}

#[test]
fn vlan_errors_name_line_column_and_key() {
    let text = target("name = \"web01\"\nvlan = 4095");
    // [[interface]], name, blank, [[target]], name, vlan: line 6, value at column 8.
    assert_eq!(err(&text), format!("{P}:6:8: key `vlan`: VLAN 4095 is reserved; use 1..=4094"));
    assert_eq!(
        err(&target("name = \"a\"\nvlan = 0")),
        format!(
            "{P}:6:8: key `vlan`: VLAN 0 is reserved (it marks priority-tagged frames); use 1..=4094"
        )
    );
    assert_eq!(
        err(&target("name = \"a\"\nvlan = 5000")),
        format!("{P}:6:8: key `vlan`: VLAN 5000 is out of range; use 1..=4094")
    );
    assert_eq!(
        err(&target("name = \"a\"\nvlan = -3")),
        format!("{P}:6:8: key `vlan`: VLAN -3 is out of range; use 1..=4094")
    );
    assert_eq!(
        err(&target("name = \"a\"\nvlan = \"100\"")),
        format!(
            "{P}:6:8: key `vlan`: invalid type: string \"100\", expected a VLAN ID (an integer)"
        )
    );
}

#[test]
fn mac_errors() {
    let bad = |mac: &str| {
        format!(
            "{P}:6:7: key `mac`: invalid MAC address \"{mac}\"; write six hex pairs separated by ':' or '-', e.g. \"52:54:00:12:34:56\""
        )
    };
    for mac in [
        "52:54:00:12:34",
        "52:54:00:12:34:56:78",
        "52:54:00:12:34:5g",
        "52:54-00:12:34:56",
        "5254.0012.3456",
        "525400123456",
        "",
        "52:54:00:12:34:5",
        "52:54:00:12:34:566",
    ] {
        assert_eq!(err(&target(&format!("name = \"a\"\nmac = \"{mac}\""))), bad(mac), "{mac}");
    }
    assert_eq!(
        err(&target("name = \"a\"\nmac = \"00:00:00:00:00:00\"")),
        format!(
            "{P}:6:7: key `mac`: the all-zero MAC 00:00:00:00:00:00 is not a real address; give the VM's MAC, or leave out `mac` to match any MAC"
        )
    );
    assert_eq!(
        err(&target("name = \"a\"\nmac = 42")),
        format!(
            "{P}:6:7: key `mac`: invalid type: integer `42`, expected a MAC address (a string such as \"52:54:00:12:34:56\")"
        )
    );
    // Any other MAC is accepted, multicast and broadcast included.
    for (mac, bytes) in [
        ("FF-FF-FF-FF-FF-FF", [0xff; 6]),
        ("01:00:5e:00:00:fb", [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]),
        ("00:00:00:00:00:01", [0, 0, 0, 0, 0, 1]),
    ] {
        assert_eq!(
            ok(&target(&format!("name = \"a\"\nmac = \"{mac}\""))).targets[0].mac,
            Some(bytes)
        );
    }
}

#[test]
fn format_mac_is_lower_case_colon_separated() {
    assert_eq!(format_mac(&[0x52, 0x54, 0x00, 0x12, 0x34, 0x56]), "52:54:00:12:34:56");
    assert_eq!(format_mac(&[0xAB, 0xcd, 0xEF, 0x01, 0x02, 0xff]), "ab:cd:ef:01:02:ff");
    let parsed = check_mac(&format_mac(&[1, 2, 3, 4, 5, 6])).expect("round trip");
    assert_eq!(parsed, [1, 2, 3, 4, 5, 6]);
}

#[test]
fn enum_display() {
    assert_eq!(Unmatched::Pass.to_string(), "pass");
    assert_eq!(Unmatched::Drop.to_string(), "drop");
    assert_eq!(XdpMode::Auto.to_string(), "auto");
    assert_eq!(XdpMode::Native.to_string(), "native");
    assert_eq!(XdpMode::Generic.to_string(), "generic");
    // Display gives back what the parser takes.
    for m in [XdpMode::Auto, XdpMode::Native, XdpMode::Generic] {
        assert_eq!(check_xdp_mode(&m.to_string()), Ok(m));
    }
    for u in [Unmatched::Pass, Unmatched::Drop] {
        assert_eq!(check_unmatched(&u.to_string()), Ok(u));
    }
}

#[test]
fn capture_errors() {
    let e = |body: &str| err(&with_base(&format!("[capture]\n{body}")));
    assert_eq!(
        e("batch_delay_us = -1"),
        format!(
            "{P}:2:18: key `batch_delay_us`: batch delay -1 is out of range; use 0 (read at once) to 20000 microseconds"
        )
    );
    assert_eq!(
        e("busy_poll_us = 5000"),
        format!(
            "{P}:2:16: key `busy_poll_us`: busy-poll time 5000 is out of range; use 0 (off) to 1000 microseconds"
        )
    );
    assert_eq!(
        e("unmatched = \"Drop\""),
        format!("{P}:2:13: key `unmatched`: unknown verdict \"Drop\"; use \"pass\" or \"drop\"")
    );
    assert_eq!(
        e("unmatched = true"),
        format!(
            "{P}:2:13: key `unmatched`: invalid type: boolean `true`, expected \"pass\" or \"drop\""
        )
    );
    assert_eq!(
        e("snaplen = 13"),
        format!(
            "{P}:2:11: key `snaplen`: snap length 13 is shorter than an Ethernet header; use 0 (whole frame) or 14..=65535"
        )
    );
    assert_eq!(
        e("snaplen = 65536"),
        format!(
            "{P}:2:11: key `snaplen`: snap length 65536 is out of range; use 0 (whole frame) or 14..=65535"
        )
    );
    assert_eq!(
        e("snaplen = -1"),
        format!(
            "{P}:2:11: key `snaplen`: snap length -1 is out of range; use 0 (whole frame) or 14..=65535"
        )
    );
    assert_eq!(
        e("snaplen = 1.5"),
        format!(
            "{P}:2:11: key `snaplen`: invalid type: floating point `1.5`, expected an integer number of bytes"
        )
    );
    assert_eq!(
        e("ring_size = 1000"),
        format!("{P}:2:13: key `ring_size`: ring size 1000 is not a power of two; use e.g. 1024")
    );
    assert_eq!(
        e("ring_size = 32"),
        format!(
            "{P}:2:13: key `ring_size`: ring size 32 is out of range; use a power of two in 64..=65536"
        )
    );
    assert_eq!(
        e("ring_size = 131072"),
        format!(
            "{P}:2:13: key `ring_size`: ring size 131072 is out of range; use a power of two in 64..=65536"
        )
    );
    assert_eq!(
        e("buffer_bytes = \"512 KiB\""),
        format!(
            "{P}:2:16: key `buffer_bytes`: buffer size 524288 bytes is out of range; use 1 MiB..=4 GiB"
        )
    );
    assert_eq!(
        e("buffer_bytes = \"4.5 GiB\""),
        format!(
            "{P}:2:16: key `buffer_bytes`: buffer size 4831838208 bytes is out of range; use 1 MiB..=4 GiB"
        )
    );
    assert_eq!(
        e("buffer_bytes = -1"),
        format!("{P}:2:16: key `buffer_bytes`: size -1 is negative")
    );
    assert_eq!(
        e("buffer_bytes = 64.0"),
        format!(
            "{P}:2:16: key `buffer_bytes`: invalid type: floating point `64.0`, expected a size: integer bytes or a string such as \"64 MiB\""
        )
    );
    assert_eq!(
        e("buffer_bytes = \"64 MiBs\""),
        format!(
            "{P}:2:16: key `buffer_bytes`: invalid size \"64 MiBs\": unknown unit \"MiBs\"; use B, k, kB, KiB, M, MB, MiB, G, GB, GiB, T, TB or TiB"
        )
    );
}

#[test]
fn output_errors() {
    let e = |body: &str| err(&with_base(&format!("[output]\n{body}")));
    assert_eq!(
        e("directory = \"\""),
        format!(
            "{P}:2:13: key `directory`: empty directory; give the directory for capture files, e.g. \"/var/lib/capture-daemon\""
        )
    );
    assert_eq!(
        e("prefix = \"\""),
        format!(
            "{P}:2:10: key `prefix`: empty prefix; it starts every file name, e.g. \"capture\""
        )
    );
    assert_eq!(
        e("prefix = \".cap\""),
        format!(
            "{P}:2:10: key `prefix`: prefix \".cap\" starts with '.', which would hide the capture files"
        )
    );
    assert_eq!(
        e("prefix = \"hv/01\""),
        format!(
            "{P}:2:10: key `prefix`: prefix \"hv/01\" contains '/'; use only A-Z, a-z, 0-9, '.', '_' and '-' (it becomes part of file names)"
        )
    );
    assert_eq!(
        e(&format!("prefix = \"{}\"", "p".repeat(129))),
        format!(
            "{P}:2:10: key `prefix`: prefix is 129 characters long; use at most 128 (file names are limited)"
        )
    );
    assert_eq!(
        e("rotate_bytes = 100"),
        format!(
            "{P}:2:16: key `rotate_bytes`: rotating every 100 bytes would make a file per frame; use 0 (never) or at least 4096"
        )
    );
    assert_eq!(
        e("rotate_seconds = -5"),
        format!("{P}:2:18: key `rotate_seconds`: -5 is negative; use 0 or a positive integer")
    );
    assert_eq!(
        e("rotate_packets = \"1M\""),
        format!("{P}:2:18: key `rotate_packets`: invalid type: string \"1M\", expected an integer")
    );
    assert_eq!(
        e("keep_files = 2.0"),
        format!(
            "{P}:2:14: key `keep_files`: invalid type: floating point `2.0`, expected an integer"
        )
    );
    assert_eq!(
        e("keep_bytes = \"-1 GiB\""),
        format!("{P}:2:14: key `keep_bytes`: invalid size \"-1 GiB\": sizes cannot be negative")
    );
    assert_eq!(
        ok(&with_base("[output]\nkeep_bytes = \"10 GB\"")).output.keep_bytes,
        10_000_000_000
    );
}

#[test]
fn columns_count_characters_not_bytes() {
    // "ü" and "ï" are two bytes each in UTF-8; editors count them as one column.
    let text = with_base("output = { directory = \"/srv/üï\", prefix = \".x\" }");
    assert_eq!(
        err(&text),
        format!(
            "{P}:1:44: key `prefix`: prefix \".x\" starts with '.', which would hide the capture files"
        )
    );
}

#[test]
fn interface_errors() {
    assert_eq!(
        err(&interface("name = \"eth0\"\nzero_copy = \"yes\"")),
        format!(
            "{P}:3:13: key `zero_copy`: unknown zero-copy setting \"yes\"; use \"auto\", \"on\" or \"off\""
        )
    );
    assert_eq!(
        err(&interface("name = \"enp65s0f0np0xyzw\"")),
        format!(
            "{P}:2:8: key `name`: interface name \"enp65s0f0np0xyzw\" is 16 bytes long; Linux allows at most 15"
        )
    );
    assert_eq!(
        err(&interface("name = \"eth 0\"")),
        format!(
            "{P}:2:8: key `name`: interface name \"eth 0\" contains ' '; Linux interface names cannot contain '/', ':', whitespace or control characters"
        )
    );
    assert!(err(&interface("name = \"eth/0\"")).contains("contains '/'"));
    assert!(err(&interface("name = \"eth0:1\"")).contains("contains ':'"));
    assert_eq!(
        err(&interface("name = \"\"")),
        format!("{P}:2:8: key `name`: empty interface name")
    );
    assert_eq!(
        err(&interface("name = \"..\"")),
        format!("{P}:2:8: key `name`: \"..\" is not a valid interface name")
    );
    assert_eq!(
        err(&interface("queues = \"all\"")),
        format!("{P}:1:1: key `name`: missing: every [[interface]] needs a name")
    );
    assert_eq!(
        err(&interface("name = \"eth0\"\nqueues = [0, 1, 300]")),
        format!("{P}:3:17: key `queues`: RX queue 300 is out of range; use 0..=255")
    );
    assert_eq!(
        err(&interface("name = \"eth0\"\nqueues = [0, -1]")),
        format!("{P}:3:14: key `queues`: RX queue -1 is out of range; use 0..=255")
    );
    assert_eq!(
        err(&interface("name = \"eth0\"\nqueues = [2, 3, 2]")),
        format!("{P}:3:17: key `queues`: RX queue 2 is listed twice")
    );
    assert_eq!(
        err(&interface("name = \"eth0\"\nqueues = []")),
        format!(
            "{P}:3:10: key `queues`: empty queue list; list at least one RX queue index, or use \"all\""
        )
    );
    assert_eq!(
        err(&interface("name = \"eth0\"\nqueues = \"any\"")),
        format!(
            "{P}:3:10: key `queues`: unknown value \"any\"; use \"all\" or a list of RX queue indices such as [0, 1]"
        )
    );
    assert_eq!(
        err(&interface("name = \"eth0\"\nqueues = 4")),
        format!(
            "{P}:3:10: key `queues`: invalid type: integer `4`, expected \"all\" or a list of RX queue indices such as [0, 1]"
        )
    );
    assert_eq!(
        err(&interface("name = \"eth0\"\nxdp_mode = \"skb\"")),
        format!(
            "{P}:3:12: key `xdp_mode`: unknown XDP mode \"skb\"; use \"auto\", \"native\" or \"generic\""
        )
    );
    assert_eq!(
        err(
            "[[interface]]\nname = \"eth0\"\n[[interface]]\nname = \"eth0\"\n[[target]]\nname = \"a\"\n"
        ),
        format!(
            "{P}:4:8: key `name`: interface \"eth0\" is already configured on line 2; list each interface once"
        )
    );
}

#[test]
fn missing_or_empty_interfaces() {
    let msg = "no [[interface]] configured; add one naming the NIC to capture on, e.g. [[interface]] name = \"enp65s0f0\"";
    assert_eq!(err("[[target]]\nname = \"a\"\n"), format!("{P}:1:1: key `interface`: {msg}"));
    assert_eq!(
        err("[capture]\ninterface = 1\n"),
        format!(
            "{P}:2:1: key `interface`: unknown field `interface`, expected one of `unmatched`, `snaplen`, `ring_size`, `buffer_bytes`, `busy_poll_us`, `batch_delay_us`, `tap_ring_bytes`, `umem_reserved_huge_pages`, `vxlan_ports`, `geneve_ports`"
        )
    );
    assert_eq!(
        err("interface = []\n[[target]]\nname = \"a\"\n"),
        format!("{P}:1:13: key `interface`: {msg}")
    );
    assert_eq!(
        err("[interface]\nname = \"eth0\"\n[[target]]\nname = \"a\"\n"),
        format!(
            "{P}:1:1: key `interface`: invalid type: map, expected one or more [[interface]] tables (note the double brackets)"
        )
    );
}

#[test]
fn target_errors() {
    let zero = "no [[target]] configured: nothing would be captured; add one (a target with neither mac nor vlan captures everything)";
    assert_eq!(err("[[interface]]\nname = \"eth0\"\n"), format!("{P}:1:1: key `target`: {zero}"));
    assert_eq!(
        err("target = []\n[[interface]]\nname = \"eth0\"\n"),
        format!("{P}:1:10: key `target`: {zero}")
    );
    assert_eq!(
        err(&target("vlan = 5")),
        format!("{P}:4:1: key `name`: missing: every [[target]] needs a name")
    );
    assert_eq!(
        err(&target("name = \"web 01\"")),
        format!(
            "{P}:5:8: key `name`: target name \"web 01\" contains ' '; use only A-Z, a-z, 0-9, '.', '_', ':' and '-'"
        )
    );
    assert_eq!(err(&target("name = \"\"")), format!("{P}:5:8: key `name`: empty target name"));
    assert_eq!(
        err(&target(&format!("name = \"{}\"", "t".repeat(65)))),
        format!("{P}:5:8: key `name`: target name is 65 characters long; use at most 64")
    );
    assert_eq!(
        err(&target("name = \"web01\"\n\n[[target]]\nname = \"web01\"")),
        format!(
            "{P}:8:8: key `name`: target name \"web01\" is already used on line 5; target names must be unique"
        )
    );
    assert_eq!(
        err("[[interface]]\nname = \"eth0\"\n[target]\nname = \"a\"\n"),
        format!(
            "{P}:3:1: key `target`: invalid type: map, expected one or more [[target]] tables (note the double brackets)"
        )
    );
}

#[test]
fn too_many_targets() {
    let mut text = String::from("[[interface]]\nname = \"eth0\"\n");
    for i in 0..70 {
        text += &format!("[[target]]\nname = \"t{i}\"\n");
    }
    // The 65th [[target]] header: after 2 lines, 64 targets of 2 lines each.
    assert_eq!(
        err(&text),
        format!(
            "{P}:131:1: key `target`: too many targets: 70 configured, at most 64 (each takes one bit of the XDP program's match mask)"
        )
    );
}

#[test]
fn unknown_keys_name_the_key_and_the_allowed_ones() {
    assert_eq!(
        err(&with_base("[capture]\nsnap_len = 64")),
        format!(
            "{P}:2:1: key `snap_len`: unknown field `snap_len`, expected one of `unmatched`, `snaplen`, `ring_size`, `buffer_bytes`, `busy_poll_us`, `batch_delay_us`, `tap_ring_bytes`, `umem_reserved_huge_pages`, `vxlan_ports`, `geneve_ports`"
        )
    );
    assert_eq!(
        err(&with_base("[output]\nrotate_minutes = 5")),
        format!(
            "{P}:2:1: key `rotate_minutes`: unknown field `rotate_minutes`, expected one of `directory`, `prefix`, `rotate_bytes`, `rotate_seconds`, `rotate_packets`, `keep_files`, `keep_bytes`, `keep_free_bytes`, `keep_free_percent`, `group`"
        )
    );
    assert_eq!(
        err(&interface("name = \"eth0\"\nqueue = [0]")),
        format!(
            "{P}:3:1: key `queue`: unknown field `queue`, expected one of `name`, `mode`, `queues`, `xdp_mode`, `zero_copy`, `vm_taps`"
        )
    );
    assert_eq!(
        err(&target("name = \"a\"\nip = \"10.0.0.1\"")),
        format!(
            "{P}:6:1: key `ip`: unknown field `ip`, expected one of `name`, `mac`, `vlan`, `vni`, `vm`, `output`"
        )
    );
    assert_eq!(
        err(&with_base("[outputs]\nprefix = \"x\"")),
        format!(
            "{P}:1:2: key `outputs`: unknown field `outputs`, expected one of `capture`, `output`, `metrics`, `libvirt`, `interface`, `target`"
        )
    );
    assert_eq!(
        err(&with_base("[capture.extra]\nx = 1")),
        format!(
            "{P}:1:10: key `extra`: unknown field `extra`, expected one of `unmatched`, `snaplen`, `ring_size`, `buffer_bytes`, `busy_poll_us`, `batch_delay_us`, `tap_ring_bytes`, `umem_reserved_huge_pages`, `vxlan_ports`, `geneve_ports`"
        )
    );
    assert_eq!(
        err("interface = [[\"eth0\"]]\n[[target]]\nname = \"a\"\n"),
        format!(
            "{P}:1:14: key `interface`: invalid type: sequence, expected an [[interface]] table"
        )
    );
    assert_eq!(
        err(&with_base("[[capture]]\nsnaplen = 1")),
        format!("{P}:1:1: key `capture`: invalid type: sequence, expected a [capture] table")
    );
}

#[test]
fn syntax_errors_show_the_line() {
    assert_eq!(
        err("[capture]\nsnaplen = 64\n\n[capture]\n"),
        format!(
            "{P}:4:2: invalid TOML: duplicate key `capture`\n   |\n 4 | [capture]\n   |  ^^^^^^^"
        )
    );
    assert_eq!(
        err("[output]\n\tprefix = cap\n"),
        format!(
            "{P}:2:11: invalid TOML: string values must be quoted, expected literal string\n   |\n 2 | \tprefix = cap\n   | \t         ^^^"
        )
    );
    match parse("[capture\n") {
        Err(ConfigError::Syntax { line: 1, column: 9, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn odd_inputs() {
    let none = "no [[interface]] configured; add one naming the NIC to capture on, e.g. [[interface]] name = \"enp65s0f0\"";
    assert_eq!(err(""), format!("{P}:1:1: key `interface`: {none}"));
    assert_eq!(err("# only a comment\n"), format!("{P}:1:1: key `interface`: {none}"));
    // A byte-order mark, as some Windows editors write, is fine, and not a column.
    ok(&format!("\u{feff}{BASE}"));
    let e = err(&format!("\u{feff}[capture]\nsnaplen = 5\n{BASE}"));
    assert!(e.starts_with(&format!("{P}:2:11: key `snaplen`")), "{e}");
    let e = err(&format!("\u{feff}bogus = 1\n{BASE}"));
    assert!(e.starts_with(&format!("{P}:1:1: ")), "{e}");
    assert_eq!(
        err(&with_base("[capture]\nsnaplen = 99999999999999999999")),
        format!(
            "{P}:2:11: key `snaplen`: snap length 99999999999999999999 is out of range; use 0 (whole frame) or 14..=65535"
        )
    );
    // At the end of the file, the caret goes just past the line.
    assert_eq!(
        err("[capture]\nsnaplen ="),
        format!(
            "{P}:2:10: invalid TOML: string values must be quoted, expected literal string\n   |\n 2 | snaplen =\n   |          ^"
        )
    );
    // Errors inside inline tables and arrays point at the element.
    assert_eq!(
        err("interface = [{ name = \"eth0\", queues = [0, 0] }]\ntarget = [{ vlan = 7 }]\n"),
        format!("{P}:1:44: key `queues`: RX queue 0 is listed twice")
    );
    assert_eq!(
        err("interface = [{ name = \"eth0\" }]\ntarget = [{ name = \"a\" }, { vlan = 7 }]\n"),
        format!("{P}:2:27: key `name`: missing: every [[target]] needs a name")
    );
    assert_eq!(
        err("interface = [{ name = \"eth0\", speed = \"native\" }]\ntarget = [{ name = \"a\" }]\n"),
        format!(
            "{P}:1:31: key `speed`: unknown field `speed`, expected one of `name`, `mode`, `queues`, `xdp_mode`, `zero_copy`, `vm_taps`"
        )
    );
}

#[test]
fn error_variants_carry_positions() {
    match parse(&target("name = \"a\"\nvlan = 0")) {
        Err(ConfigError::Invalid { path, line: 6, column: 8, key: Some(key), .. }) => {
            assert_eq!(path, Path::new(P));
            assert_eq!(key, "vlan");
        }
        other => panic!("{other:?}"),
    }
}

// --- load ------------------------------------------------------------------------------

#[test]
fn load_reads_the_file_and_names_it_in_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("capture.toml");
    std::fs::write(&path, EXAMPLE).expect("write");
    assert_eq!(Config::load(&path).expect("load").interfaces[0].name, "br0");

    std::fs::write(&path, target("name = \"a\"\nvlan = 4095")).expect("write");
    let e = Config::load(&path).expect_err("invalid");
    assert_eq!(
        e.to_string(),
        format!("{}:6:8: key `vlan`: VLAN 4095 is reserved; use 1..=4094", path.display())
    );

    let missing = dir.path().join("nope.toml");
    let e = Config::load(&missing).expect_err("missing");
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(
        e.to_string().starts_with(&format!("{}: cannot read config file: ", missing.display())),
        "{e}"
    );

    std::fs::write(&path, b"\xff\xfe").expect("write");
    assert!(matches!(Config::load(&path), Err(ConfigError::Read { .. })));
}

#[test]
fn overlay_vm_and_output_errors() {
    let t = |body: &str| err(&target(&format!("name = \"t\"\n{body}")));
    assert_eq!(
        t("vni = 0"),
        format!(
            "{P}:6:7: key `vni`: VNI 0 is out of range; use 1..=16777215 (24 bits, 0 is not a VNI)"
        )
    );
    assert_eq!(
        t("vni = 16777216"),
        format!(
            "{P}:6:7: key `vni`: VNI 16777216 is out of range; use 1..=16777215 (24 bits, 0 is not a VNI)"
        )
    );
    assert_eq!(
        t("vm = \"\""),
        format!(
            "{P}:6:6: key `vm`: empty VM name; write the libvirt domain name, as `virsh list --all` shows it"
        )
    );
    assert_eq!(
        t("vm = \"a/b\""),
        format!(
            "{P}:6:6: key `vm`: VM name \"a/b\" contains '/', which no libvirt domain name has"
        )
    );
    assert_eq!(
        t("output = \"mine\""),
        format!(
            "{P}:6:10: key `output`: unknown output \"mine\"; use \"shared\" (the one stream, the default) or \"own\" (the target's own files)"
        )
    );
    let c = |body: &str| err(&with_base(&format!("[capture]\n{body}")));
    assert_eq!(
        c("vxlan_ports = [4789, 0]"),
        format!("{P}:2:22: key `vxlan_ports`: UDP port 0 is out of range; use 1..=65535")
    );
    assert_eq!(
        c("vxlan_ports = [4789, 4789]"),
        format!("{P}:2:22: key `vxlan_ports`: UDP port 4789 is listed twice")
    );
    assert_eq!(
        c("vxlan_ports = [6081]\ngeneve_ports = [6081]"),
        format!(
            "{P}:3:17: key `geneve_ports`: UDP port 6081 is already a VXLAN port (vxlan_ports, line 2); a port carries one of the two"
        )
    );
    assert_eq!(
        err(&with_base("[libvirt]\nuri = \"system\"")),
        format!(
            "{P}:2:7: key `uri`: \"system\" is not a libvirt URI; write e.g. \"qemu:///system\" (see `virsh uri`)"
        )
    );
    // Empty lists are allowed: they turn that encapsulation off.
    let ok = parse(&with_base("[capture]\nvxlan_ports = []\ngeneve_ports = []")).unwrap();
    assert!(ok.capture.vxlan_ports.is_empty() && ok.capture.geneve_ports.is_empty());
}

#[test]
fn vm_taps_interface() {
    const VM: &str = "[[target]]\nname = \"web01\"\nvm = \"web01\"\n";
    let c = ok(&format!("[[interface]]\nvm_taps = true\n\n{VM}"));
    assert!(c.vm_taps);
    assert!(c.interfaces.is_empty(), "vm_taps names no interface of its own");
    let c = ok(&format!(
        "[[interface]]\nname = \"br0\"\n\n[[interface]]\nvm_taps = true\nmode = \"tap\"\n\n{VM}"
    ));
    assert!(c.vm_taps);
    assert_eq!(c.interfaces.len(), 1);
    // `vm_taps = false` is an ordinary interface table.
    let c = ok(&format!("[[interface]]\nname = \"br0\"\nvm_taps = false\n\n{VM}"));
    assert!(!c.vm_taps);
    assert!(!ok(&format!("[[interface]]\nname = \"br0\"\n\n{VM}")).vm_taps);

    assert_eq!(
        err(&format!("[[interface]]\nvm_taps = true\nmode = \"mirror\"\n\n{VM}")),
        format!(
            "{P}:2:11: key `vm_taps`: VM tap devices are live interfaces: vm_taps needs tap mode (frames are copied), and mirror mode would take the VMs' frames away; remove mode = \"mirror\""
        )
    );
    assert_eq!(
        err(&format!("[[interface]]\nname = \"vnet0\"\nvm_taps = true\n\n{VM}")),
        format!(
            "{P}:2:8: key `name`: an interface with vm_taps = true has no name (it captures on the taps of the `vm` targets); remove `name`, or vm_taps, and give the tap devices their own [[interface]] tables"
        )
    );
    assert_eq!(
        err(
            "[[interface]]\nvm_taps = true\n\n[[target]]\nname = \"web01\"\nmac = \"52:54:00:00:00:01\"\n"
        ),
        format!(
            "{P}:2:11: key `vm_taps`: captures on the tap devices of the `vm` targets, and no [[target]] has `vm`; add vm = \"NAME\" to the targets of the VMs, or name the interface instead"
        )
    );
    assert_eq!(
        err(&format!("[[interface]]\nvm_taps = true\nqueues = [0]\n\n{VM}")),
        format!(
            "{P}:3:10: key `queues`: applies to mirror mode only, and vm_taps captures in tap mode; remove `queues`"
        )
    );
    assert_eq!(
        err(&format!("[[interface]]\nvm_taps = true\n\n[[interface]]\nvm_taps = true\n\n{VM}")),
        format!(
            "{P}:5:11: key `vm_taps`: vm_taps = true is already given on line 2; once is enough"
        )
    );
}
