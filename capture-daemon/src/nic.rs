//! What an interface's driver and offloads mean for a capture on it: `check` says it before
//! anything is attached, `run` logs the warnings once the programs are (the XDP mode is known
//! then).

use crate::config::{Mode, XdpMode, ZeroCopy};
use crate::netdev::Features;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub text: String,
}

impl Finding {
    fn ok(text: String) -> Finding {
        Finding { level: Level::Ok, text }
    }
    fn warn(text: String) -> Finding {
        Finding { level: Level::Warn, text }
    }
}

/// Where the capture runs on the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Tap mode: tcx, on the skb.
    Tcx,
    /// Mirror mode: XDP attached natively, generically, or (`check`, before attaching) as
    /// `xdp_mode = "auto"` will: native where the driver can.
    Xdp(XdpMode),
}

impl Hook {
    /// What `check` knows before attaching: the mode and `xdp_mode` of the config.
    pub fn planned(mode: Mode, xdp_mode: XdpMode) -> Hook {
        match mode {
            Mode::Tap => Hook::Tcx,
            Mode::Mirror => Hook::Xdp(xdp_mode),
        }
    }

    /// How the programs ended up attached ([`crate::bpf::Filter::mode`]).
    pub fn attached(mode: Mode, how: Option<&str>) -> Hook {
        match (mode, how) {
            (Mode::Tap, _) => Hook::Tcx,
            (Mode::Mirror, Some("generic")) => Hook::Xdp(XdpMode::Generic),
            (Mode::Mirror, _) => Hook::Xdp(XdpMode::Native),
        }
    }
}

/// "rx-vlan-hw-parse on, rx-vlan-stag-hw-parse off" for the features of `names` the kernel has.
fn states(f: &Features, names: &[&str]) -> String {
    let list: Vec<String> = names
        .iter()
        .filter_map(|n| f.active(n).map(|on| format!("{n} {}", if on { "on" } else { "off" })))
        .collect();
    list.join(", ")
}

fn any_on(f: &Features, names: &[&str]) -> bool {
    names.iter().any(|n| f.active(n) == Some(true))
}

const VLAN_PARSE: [&str; 2] = ["rx-vlan-hw-parse", "rx-vlan-stag-hw-parse"];
const NIC_MERGE: [&str; 2] = ["rx-lro", "rx-gro-hw"];

/// What the offload features `f` of interface `name` (driver `driver`) mean for a capture
/// through `hook`; `vlan_targets` says whether some target names a VLAN.
pub fn offloads(
    name: &str,
    driver: &str,
    f: &Features,
    hook: Hook,
    vlan_targets: bool,
) -> Vec<Finding> {
    let Hook::Xdp(xdp) = hook else {
        return vec![Finding::ok(format!(
            "{}: tcx reads the VLAN tag the NIC or the stack took out of the frame from the skb, \
             matches on it and writes it back into the record; frames are captured as the stack \
             has them (merged by GRO where it is on, as tcpdump sees them)",
            states(f, &VLAN_PARSE)
        ))];
    };
    let mut out = Vec::new();
    let lost = if vlan_targets {
        "VLAN targets match nothing in such frames, and they are captured without their tag"
    } else {
        "such frames are captured without their tag (and match as untagged)"
    };
    let vlan = states(f, &VLAN_PARSE);
    if driver == "veth" {
        // Measured on Linux 6.18: the peer's tx-vlan-offload decides, this side's rxvlan not.
        out.push(Finding::warn(format!(
            "veth ({vlan}): a VLAN tag the sending side keeps beside the frame (a VLAN device or \
             tc on the peer, with tx-vlan-offload on) never reaches XDP, whatever \
             rx-vlan-hw-parse says: {lost}; mode = \"tap\" reads it from the skb"
        )));
    } else if any_on(f, &VLAN_PARSE) {
        out.push(Finding::warn(format!(
            "{vlan}: the NIC takes the outer VLAN tag out of the frame before XDP runs: {lost}. \
             On a NIC fed by a SPAN port turn it off (`ethtool -K {name} rxvlan off`, and \
             `rx-vlan-stag-hw-parse off`), or use mode = \"tap\", which reads the tag from the \
             skb. (XDP's rx_vlan_tag hint needs a device-bound program, which this build's BPF \
             loader, aya 0.16, cannot load.)"
        )));
    } else if !vlan.is_empty() {
        out.push(Finding::ok(format!("{vlan}: XDP sees VLAN tags in the frame")));
    }
    if f.active("rx-vlan-filter") == Some(true) {
        out.push(Finding::warn(format!(
            "rx-vlan-filter on: the NIC may drop frames of VLANs the host has not joined before \
             XDP sees them (most drivers stop filtering in promiscuous mode, which the daemon \
             sets); `ethtool -K {name} rx-vlan-filter off`"
        )));
    }
    if any_on(f, &NIC_MERGE) {
        out.push(Finding::warn(format!(
            "{}: the NIC merges TCP frames before XDP sees them: they are captured merged, not \
             as on the wire; `ethtool -K {name} lro off rx-gro-hw off` (attaching generic XDP \
             turns them off; most drivers refuse native XDP while they are on)",
            states(f, &NIC_MERGE)
        )));
    }
    if f.active("rx-gro") == Some(true) && xdp != XdpMode::Native {
        let when = if xdp == XdpMode::Generic {
            "XDP runs generic, after GRO"
        } else {
            "where XDP ends up generic (no native XDP in the driver, or no metadata room), it \
             runs after GRO"
        };
        out.push(Finding::warn(format!(
            "rx-gro on and {when}: TCP frames are captured as GRO merged them (up to 64 KiB, \
             each spanning many UMEM frames, or cut to their first 3840 bytes where the sockets \
             have no multi-buffer), not as on the wire; `ethtool -K {name} gro off`"
        )));
    }
    out
}

/// Drivers whose native XDP gives programs no room for metadata (`xdp_prepare_buff(...,
/// false)` in drivers/net of Linux 6.14). Zero-copy sockets get it from the AF_XDP buffer pool
/// whatever the driver.
const NO_META_DRIVERS: [&str; 15] = [
    "sfc",
    "gve",
    "mana",
    "mvneta",
    "mvpp2",
    "atlantic",
    "netsec",
    "thunder-nicvf",
    "rvu_nicpf",
    "rvu_nicvf",
    "fsl_enetc",
    "fsl_enetc_vf",
    "mtk_soc_eth",
    "am65-cpsw-nuss",
    "cpsw",
];

/// Mirror mode: whether the program will find room for the frame's metadata, as far as can be
/// known before a frame arrives (the kernel advertises it nowhere; the daemon watches the first
/// matched frames, see `IfaceRun::check_metadata`).
pub fn metadata(driver: &str, xdp: XdpMode, zero_copy: ZeroCopy) -> Finding {
    let watch = "the daemon sees it on the first matched frame and then moves to generic XDP \
                 (xdp_mode \"auto\", copy-mode sockets) or logs that nothing is captured";
    if xdp == XdpMode::Generic {
        return Finding::ok("generic XDP always has room for the frame's metadata".into());
    }
    if !NO_META_DRIVERS.contains(&driver) {
        return Finding::ok(format!(
            "driver {driver} is not known to lack room for the frame's metadata in native XDP; \
             if it does, {watch}"
        ));
    }
    let what = format!(
        "driver {driver}'s native XDP gives programs no room for the frame's metadata (as of \
         Linux 6.14); zero-copy sockets have it"
    );
    match (xdp, zero_copy) {
        (_, ZeroCopy::On) => Finding::ok(format!("{what}, and zero_copy = \"on\"")),
        (XdpMode::Auto, ZeroCopy::Off) => Finding::warn(format!(
            "{what}: with copy-mode sockets the daemon moves to generic XDP (slower) at the first \
             matched frame"
        )),
        (XdpMode::Auto, _) => Finding::warn(format!(
            "{what}: where a queue binds in copy mode the daemon moves to generic XDP at the \
             first matched frame"
        )),
        _ => Finding::warn(format!(
            "{what}: with xdp_mode \"native\" and copy-mode sockets nothing is captured; set \
             xdp_mode = \"auto\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(f: &[Finding], level: Level) -> Vec<&str> {
        f.iter().filter(|f| f.level == level).map(|f| f.text.as_str()).collect()
    }

    #[test]
    fn vlan_stripping_is_a_warning_for_xdp_only() {
        let f = Features::of(&[("rx-vlan-hw-parse", true), ("rx-vlan-stag-hw-parse", false)]);
        let xdp = offloads("eth1", "ixgbe", &f, Hook::Xdp(XdpMode::Native), true);
        let warn = texts(&xdp, Level::Warn);
        assert_eq!(warn.len(), 1, "{xdp:?}");
        assert!(warn[0].starts_with("rx-vlan-hw-parse on, rx-vlan-stag-hw-parse off"), "{xdp:?}");
        assert!(warn[0].contains("VLAN targets match nothing"), "{xdp:?}");
        assert!(warn[0].contains("ethtool -K eth1 rxvlan off"), "{xdp:?}");
        let tap = offloads("eth1", "ixgbe", &f, Hook::Tcx, true);
        assert!(texts(&tap, Level::Warn).is_empty(), "{tap:?}");
        let off = Features::of(&[("rx-vlan-hw-parse", false)]);
        let xdp = offloads("eth1", "ixgbe", &off, Hook::Xdp(XdpMode::Native), true);
        assert_eq!(
            texts(&xdp, Level::Ok),
            ["rx-vlan-hw-parse off: XDP sees VLAN tags in the frame"]
        );
    }

    #[test]
    fn gro_matters_where_xdp_may_be_generic() {
        let f = Features::of(&[("rx-gro", true)]);
        let warns = |xdp| texts(&offloads("e", "x", &f, Hook::Xdp(xdp), false), Level::Warn).len();
        assert_eq!(warns(XdpMode::Native), 0);
        assert_eq!(warns(XdpMode::Generic), 1);
        assert_eq!(warns(XdpMode::Auto), 1);
        let merged = Features::of(&[("rx-lro", true), ("rx-gro-hw", false)]);
        let native = offloads("e", "x", &merged, Hook::Xdp(XdpMode::Native), false);
        assert!(texts(&native, Level::Warn)[0].starts_with("rx-lro on, rx-gro-hw off"));
    }

    #[test]
    fn known_drivers_without_metadata_room_are_named() {
        assert_eq!(metadata("sfc", XdpMode::Auto, ZeroCopy::Off).level, Level::Warn);
        assert!(
            metadata("sfc", XdpMode::Native, ZeroCopy::Off).text.contains("nothing is captured")
        );
        assert_eq!(metadata("sfc", XdpMode::Generic, ZeroCopy::Off).level, Level::Ok);
        assert_eq!(metadata("veth", XdpMode::Native, ZeroCopy::Auto).level, Level::Ok);
    }
}
