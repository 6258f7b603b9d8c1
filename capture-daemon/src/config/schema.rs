//! The file's shape: sections and keys (field names here are the keys the parser accepts, and
//! the docs test reads them), and the checks across entries that need more than one value.

use std::collections::HashMap;
use std::ops::Range;

use capture_common::MAX_TARGETS;
use serde::Deserialize;
use toml::Spanned;

use super::errors::*;
use super::values::*;
use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    capture: Option<Section<RawCapture>>,
    output: Option<Section<RawOutput>>,
    metrics: Option<Section<RawMetrics>>,
    libvirt: Option<Section<RawLibvirt>>,
    interface: Option<Spanned<Tables<RawInterface>>>,
    target: Option<Spanned<Tables<RawTarget>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawCapture {
    unmatched: Option<Spanned<UnmatchedValue>>,
    snaplen: Option<Snaplen>,
    ring_size: Option<RingSize>,
    buffer_bytes: Option<BufferBytes>,
    busy_poll_us: Option<BusyPoll>,
    batch_delay_us: Option<BatchDelay>,
    tap_ring_bytes: Option<TapRingBytes>,
    umem_reserved_huge_pages: Option<bool>,
    vxlan_ports: Option<Vec<Spanned<Port>>>,
    geneve_ports: Option<Vec<Spanned<Port>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLibvirt {
    uri: Option<LibvirtUri>,
}

impl TableName for RawLibvirt {
    const ONE: &'static str = "a [libvirt] table";
}

impl TableName for RawCapture {
    const ONE: &'static str = "a [capture] table";
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawMetrics {
    enabled: Option<bool>,
    listen: Option<ListenAddr>,
}

impl TableName for RawMetrics {
    const ONE: &'static str = "a [metrics] table";
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawOutput {
    directory: Option<Directory>,
    prefix: Option<Prefix>,
    rotate_bytes: Option<RotateBytes>,
    rotate_seconds: Option<Count>,
    rotate_packets: Option<Count>,
    keep_files: Option<Count>,
    keep_bytes: Option<Size>,
    keep_free_bytes: Option<Size>,
    keep_free_percent: Option<Percent>,
    group: Option<GroupValue>,
}

impl TableName for RawOutput {
    const ONE: &'static str = "an [output] table";
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInterface {
    name: Option<Spanned<IfName>>,
    mode: Option<ModeValue>,
    queues: Option<Spanned<RawQueues>>,
    xdp_mode: Option<Spanned<XdpModeValue>>,
    zero_copy: Option<Spanned<ZeroCopyValue>>,
    vm_taps: Option<Spanned<bool>>,
}

impl TableName for RawInterface {
    const ONE: &'static str = "an [[interface]] table";
    const MANY: &'static str = "one or more [[interface]] tables (note the double brackets)";
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    name: Option<Spanned<TargetName>>,
    mac: Option<Mac>,
    vlan: Option<Vlan>,
    vni: Option<Vni>,
    vm: Option<VmName>,
    output: Option<TargetOutputValue>,
}

impl TableName for RawTarget {
    const ONE: &'static str = "a [[target]] table";
    const MANY: &'static str = "one or more [[target]] tables (note the double brackets)";
}

/// The `name` of one `[[section]]` table: present, and not used by an earlier table (`seen` maps
/// names to the offset of their first use; `duplicate` words the error from the name and line).
pub(super) fn unique_name(
    name: Option<(Range<usize>, String)>,
    table_span: Range<usize>,
    section: &str,
    seen: &mut HashMap<String, usize>,
    text: &str,
    duplicate: impl Fn(&str, usize) -> String,
) -> Result<String, Problem> {
    let (span, name) = name.ok_or_else(|| {
        Problem::new(table_span, "name", format!("missing: every [[{section}]] needs a name"))
    })?;
    if let Some(&first) = seen.get(&name) {
        return Err(Problem::new(span, "name", duplicate(&name, line_column(text, first).0)));
    }
    seen.insert(name.clone(), span.start);
    Ok(name)
}

impl RawConfig {
    /// Checks across entries, then builds the public [`Config`].
    pub(super) fn validate(self, text: &str) -> Result<Config, Problem> {
        let unmatched_span;
        let capture = {
            let d = CaptureConfig::default();
            let r = self.capture.map(|s| s.0).unwrap_or_default();
            unmatched_span = r.unmatched.as_ref().map(Spanned::span);
            let vxlan_ports = tunnel_ports(r.vxlan_ports, "vxlan_ports", &None, text)?;
            let geneve_ports = tunnel_ports(r.geneve_ports, "geneve_ports", &vxlan_ports, text)?;
            CaptureConfig {
                unmatched: r.unmatched.map_or(d.unmatched, |v| v.into_inner().0),
                snaplen: r.snaplen.map_or(d.snaplen, |v| v.0),
                ring_size: r.ring_size.map_or(d.ring_size, |v| v.0),
                buffer_bytes: r.buffer_bytes.map_or(d.buffer_bytes, |v| v.0),
                busy_poll_us: r.busy_poll_us.map_or(d.busy_poll_us, |v| v.0),
                batch_delay_us: r.batch_delay_us.map_or(d.batch_delay_us, |v| v.0),
                tap_ring_bytes: r.tap_ring_bytes.map_or(d.tap_ring_bytes, |v| v.0),
                umem_reserved_huge_pages: r
                    .umem_reserved_huge_pages
                    .unwrap_or(d.umem_reserved_huge_pages),
                vxlan_ports: vxlan_ports
                    .map_or(d.vxlan_ports, |p| p.into_iter().map(|p| p.1).collect()),
                geneve_ports: geneve_ports
                    .map_or(d.geneve_ports, |p| p.into_iter().map(|p| p.1).collect()),
            }
        };
        let output = {
            let d = OutputConfig::default();
            let r = self.output.map(|s| s.0).unwrap_or_default();
            OutputConfig {
                directory: r.directory.map_or(d.directory, |v| v.0),
                prefix: r.prefix.map_or(d.prefix, |v| v.0),
                rotate_bytes: r.rotate_bytes.map_or(d.rotate_bytes, |v| v.0),
                rotate_seconds: r.rotate_seconds.map_or(d.rotate_seconds, |v| v.0),
                rotate_packets: r.rotate_packets.map_or(d.rotate_packets, |v| v.0),
                keep_files: r.keep_files.map_or(d.keep_files, |v| v.0),
                keep_bytes: r.keep_bytes.map_or(d.keep_bytes, |v| v.0),
                keep_free_bytes: r.keep_free_bytes.map_or(d.keep_free_bytes, |v| v.0),
                keep_free_percent: r.keep_free_percent.map_or(d.keep_free_percent, |v| v.0),
                group: r.group.map_or(d.group, |v| v.0),
            }
        };
        let (interfaces, vm_taps) = validate_interfaces(self.interface, text)?;
        if capture.unmatched == Unmatched::Drop
            && let Some(tap) = interfaces.iter().find(|i| i.mode == Mode::Tap)
        {
            return Err(Problem::new(
                unmatched_span.unwrap_or(FILE_START),
                "unmatched",
                format!(
                    "\"drop\" applies to mirror mode only, and interface \"{}\" is in tap mode \
                     (the default), where every frame goes on untouched; remove `unmatched`, or \
                     set mode = \"mirror\" on interfaces fed by a SPAN/TAP port",
                    tap.name
                ),
            ));
        }
        let targets = validate_targets(self.target, text)?;
        if let Some(span) = &vm_taps
            && !targets.iter().any(|t| t.vm.is_some())
        {
            return Err(Problem::new(
                span.clone(),
                "vm_taps",
                "captures on the tap devices of the `vm` targets, and no [[target]] has `vm`; \
                 add vm = \"NAME\" to the targets of the VMs, or name the interface instead"
                    .to_owned(),
            ));
        }
        let metrics = {
            let d = MetricsConfig::default();
            let r = self.metrics.map(|s| s.0).unwrap_or_default();
            MetricsConfig {
                enabled: r.enabled.unwrap_or(d.enabled),
                listen: r.listen.map_or(d.listen, |v| v.0),
            }
        };
        let libvirt = {
            let d = LibvirtConfig::default();
            let r = self.libvirt.map(|s| s.0).unwrap_or_default();
            LibvirtConfig { uri: r.uri.map_or(d.uri, |v| v.0) }
        };
        let vm_taps = vm_taps.is_some();
        Ok(Config { capture, output, metrics, libvirt, interfaces, targets, vm_taps })
    }
}

/// `vxlan_ports` or `geneve_ports`: each port once, and in only one of the two lists (`other`:
/// the ports of the list checked first). Keeps each port's offset for the other list's check.
fn tunnel_ports(
    raw: Option<Vec<Spanned<Port>>>,
    key: &'static str,
    other: &Option<Vec<(usize, u16)>>,
    text: &str,
) -> Result<Option<Vec<(usize, u16)>>, Problem> {
    let Some(raw) = raw else { return Ok(None) };
    let mut ports: Vec<(usize, u16)> = Vec::with_capacity(raw.len());
    for p in raw {
        let (span, port) = (p.span(), p.into_inner().0);
        if ports.iter().any(|(_, q)| *q == port) {
            return Err(Problem::new(span, key, format!("UDP port {port} is listed twice")));
        }
        if let Some((at, _)) = other.iter().flatten().find(|(_, q)| *q == port) {
            return Err(Problem::new(
                span,
                key,
                format!(
                    "UDP port {port} is already a VXLAN port (vxlan_ports, line {}); a port \
                     carries one of the two",
                    line_column(text, *at).0
                ),
            ));
        }
        ports.push((span.start, port));
    }
    Ok(Some(ports))
}

/// The named interfaces, and where `vm_taps = true` was given (at most once).
pub(super) fn validate_interfaces(
    raw: Option<Spanned<Tables<RawInterface>>>,
    text: &str,
) -> Result<(Vec<InterfaceConfig>, Option<Range<usize>>), Problem> {
    let tables = match raw {
        Some(t) if !t.get_ref().0.is_empty() => t.into_inner().0,
        other => {
            return Err(Problem::new(
                other.map_or(FILE_START, |t| t.span()),
                "interface",
                "no [[interface]] configured; add one naming the NIC to capture on, e.g. \
                 [[interface]] name = \"enp65s0f0\""
                    .to_owned(),
            ));
        }
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut interfaces = Vec::with_capacity(tables.len());
    let mut vm_taps: Option<Range<usize>> = None;
    for table in tables {
        let table_span = table.span();
        let raw = table.into_inner().0;
        if let Some(on) = raw.vm_taps.as_ref().filter(|v| *v.get_ref()) {
            vm_tap_table(&raw, on.span(), vm_taps.as_ref(), text)?;
            vm_taps = Some(on.span());
            continue;
        }
        let name = unique_name(
            raw.name.map(|n| (n.span(), n.into_inner().0)),
            table_span,
            "interface",
            &mut seen,
            text,
            |name, line| {
                format!(
                    "interface \"{name}\" is already configured on line {line}; list each interface once"
                )
            },
        )?;
        let queue_span = raw.queues.as_ref().map(Spanned::span);
        let queues = match raw.queues {
            None => Queues::All,
            Some(q) => match q.into_inner() {
                RawQueues::All => Queues::All,
                RawQueues::List(list) => {
                    let mut out: Vec<u32> = Vec::with_capacity(list.len());
                    for q in list {
                        let index = q.get_ref().0;
                        if out.contains(&index) {
                            return Err(Problem::new(
                                q.span(),
                                "queues",
                                format!("RX queue {index} is listed twice"),
                            ));
                        }
                        out.push(index);
                    }
                    Queues::List(out)
                }
            },
        };
        let mode = raw.mode.map_or(Mode::Tap, |m| m.0);
        if mode == Mode::Tap {
            // Keys of the AF_XDP path: in tap mode they would silently do nothing.
            let spans = [
                ("queues", queue_span),
                ("xdp_mode", raw.xdp_mode.as_ref().map(Spanned::span)),
                ("zero_copy", raw.zero_copy.as_ref().map(Spanned::span)),
            ];
            if let Some((key, Some(span))) = spans.into_iter().find(|(_, s)| s.is_some()) {
                return Err(Problem::new(
                    span,
                    key,
                    format!(
                        "applies to mirror mode only, and interface \"{name}\" is in tap mode (the \
                         default: frames are copied, the traffic goes on untouched); remove `{key}`, \
                         or add mode = \"mirror\" if this NIC is fed by a SPAN/TAP port"
                    ),
                ));
            }
        }
        let xdp_mode = raw.xdp_mode.map_or(XdpMode::Auto, |m| m.into_inner().0);
        let zero_copy = raw.zero_copy.map_or(ZeroCopy::Auto, |z| z.into_inner().0);
        interfaces.push(InterfaceConfig { name, mode, queues, xdp_mode, zero_copy });
    }
    Ok((interfaces, vm_taps))
}

/// An `[[interface]]` with `vm_taps = true` (at `span`): no `name`, tap mode, only one such.
fn vm_tap_table(
    raw: &RawInterface,
    span: Range<usize>,
    earlier: Option<&Range<usize>>,
    text: &str,
) -> Result<(), Problem> {
    if let Some(first) = earlier {
        let line = line_column(text, first.start).0;
        return Err(Problem::new(
            span,
            "vm_taps",
            format!("vm_taps = true is already given on line {line}; once is enough"),
        ));
    }
    if let Some(name) = &raw.name {
        return Err(Problem::new(
            name.span(),
            "name",
            "an interface with vm_taps = true has no name (it captures on the taps of the `vm` \
             targets); remove `name`, or vm_taps, and give the tap devices their own \
             [[interface]] tables"
                .to_owned(),
        ));
    }
    if raw.mode.as_ref().is_some_and(|m| m.0 == Mode::Mirror) {
        return Err(Problem::new(
            span,
            "vm_taps",
            "VM tap devices are live interfaces: vm_taps needs tap mode (frames are copied), and \
             mirror mode would take the VMs' frames away; remove mode = \"mirror\""
                .to_owned(),
        ));
    }
    let mirror_keys = [
        ("queues", raw.queues.as_ref().map(Spanned::span)),
        ("xdp_mode", raw.xdp_mode.as_ref().map(Spanned::span)),
        ("zero_copy", raw.zero_copy.as_ref().map(Spanned::span)),
    ];
    if let Some((key, Some(span))) = mirror_keys.into_iter().find(|(_, s)| s.is_some()) {
        return Err(Problem::new(
            span,
            key,
            format!(
                "applies to mirror mode only, and vm_taps captures in tap mode; remove `{key}`"
            ),
        ));
    }
    Ok(())
}

pub(super) fn validate_targets(
    raw: Option<Spanned<Tables<RawTarget>>>,
    text: &str,
) -> Result<Vec<TargetConfig>, Problem> {
    let tables = match raw {
        Some(t) if !t.get_ref().0.is_empty() => t.into_inner().0,
        other => {
            return Err(Problem::new(
                other.map_or(FILE_START, |t| t.span()),
                "target",
                "no [[target]] configured: nothing would be captured; add one (a target with \
                 neither mac nor vlan captures everything)"
                    .to_owned(),
            ));
        }
    };
    if let Some(extra) = tables.get(MAX_TARGETS) {
        return Err(Problem::new(
            extra.span(),
            "target",
            format!(
                "too many targets: {} configured, at most {MAX_TARGETS} (each takes one bit of the \
                 XDP program's match mask)",
                tables.len()
            ),
        ));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut targets = Vec::with_capacity(tables.len());
    for table in tables {
        let table_span = table.span();
        let raw = table.into_inner().0;
        let name = unique_name(
            raw.name.map(|n| (n.span(), n.into_inner().0)),
            table_span,
            "target",
            &mut seen,
            text,
            |name, line| {
                format!(
                    "target name \"{name}\" is already used on line {line}; target names must be unique"
                )
            },
        )?;
        targets.push(TargetConfig {
            name,
            mac: raw.mac.map(|m| m.0),
            vlan: raw.vlan.map(|v| v.0),
            vni: raw.vni.map(|v| v.0),
            vm: raw.vm.map(|v| v.0),
            output: raw.output.map_or(TargetOutput::Shared, |o| o.0),
        });
    }
    Ok(targets)
}
