//! VMs named through libvirt: what a `vm = "NAME"` target resolves to.
//!
//! This is the pure core the daemon's watcher builds on: reading a domain's interface MACs and tap
//! devices from its XML, deciding what a lifecycle event means for a target, and resolving a set of
//! VM names over one libvirt connection. A VM counts as present on this host while its domain is
//! running here; an absent VM's target must match nothing (not "any MAC") until it arrives.

use std::collections::BTreeMap;

use virt::connect::Connect;
use virt::domain::Domain;
use virt::sys;

/// What libvirt says about one VM on this host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmInfo {
    /// The domain's interface MACs, in XML order, without duplicates.
    pub macs: Vec<[u8; 6]>,
    /// The host-side tap devices (`<target dev>`), for interfaces that have one.
    pub taps: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("domain XML of {vm:?} is not valid XML: {source}")]
    Xml { vm: String, source: roxmltree::Error },
    #[error(
        "domain XML of {vm:?}: interface MAC {mac:?} is not a MAC address (want aa:bb:cc:dd:ee:ff)"
    )]
    BadMac { vm: String, mac: String },
    #[error("libvirt at {uri:?}: {source}")]
    Libvirt { uri: String, source: virt::error::Error },
}

/// Reads the interface MACs and tap devices of a domain's XML (`virsh dumpxml`).
/// Only `<devices><interface>` counts; an interface without `<mac>` (libvirt always writes one for
/// a defined domain) contributes nothing rather than failing the whole VM.
pub fn parse_domain_xml(vm: &str, xml: &str) -> Result<VmInfo, Error> {
    let doc = roxmltree::Document::parse(xml)
        .map_err(|source| Error::Xml { vm: vm.to_string(), source })?;
    let mut info = VmInfo::default();
    let interfaces = doc
        .root_element()
        .children()
        .filter(|n| n.has_tag_name("devices"))
        .flat_map(|d| d.children())
        .filter(|n| n.has_tag_name("interface"));
    for iface in interfaces {
        for child in iface.children().filter(roxmltree::Node::is_element) {
            match child.tag_name().name() {
                "mac" => {
                    if let Some(text) = child.attribute("address") {
                        let mac = parse_mac(text).ok_or_else(|| Error::BadMac {
                            vm: vm.to_string(),
                            mac: text.to_string(),
                        })?;
                        if !info.macs.contains(&mac) {
                            info.macs.push(mac);
                        }
                    }
                }
                "target" => {
                    if let Some(dev) = child.attribute("dev").filter(|d| !d.is_empty())
                        && !info.taps.iter().any(|t| t == dev)
                    {
                        info.taps.push(dev.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(info)
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// What a domain event means for the targets that name that domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read the domain again (it may have started, arrived, or changed its interfaces).
    Reread,
    /// The VM is no longer running on this host: its targets match nothing.
    Forget,
    /// Nothing to do; in particular the MACs stay armed.
    Keep,
}

/// Decides what a lifecycle event (`VIR_DOMAIN_EVENT_*` with its detail) means. The detail does
/// not change the decision today, but the watcher passes it so a migration is logged as one.
///
/// Migration: the destination sees STARTED/MIGRATED (and RESUMED/MIGRATED when it takes over),
/// so the VM is read and armed there; the source sees SUSPENDED/MIGRATED while the memory is
/// copied (traffic may still flow: keep) and then STOPPED/MIGRATED once the VM runs elsewhere.
pub fn handle_lifecycle(event: i32, _detail: i32) -> Action {
    let event = event as u32;
    match event {
        sys::VIR_DOMAIN_EVENT_DEFINED
        | sys::VIR_DOMAIN_EVENT_STARTED
        | sys::VIR_DOMAIN_EVENT_RESUMED => Action::Reread,
        sys::VIR_DOMAIN_EVENT_STOPPED | sys::VIR_DOMAIN_EVENT_UNDEFINED => Action::Forget,
        // A crashed domain may be kept for a dump or restarted; reading it decides.
        sys::VIR_DOMAIN_EVENT_CRASHED => Action::Reread,
        // SUSPENDED (also SUSPENDED_MIGRATED on the source while memory is copied), SHUTDOWN
        // (the guest is going down; STOPPED follows), PMSUSPENDED: the VM is still here.
        _ => Action::Keep,
    }
}

/// Interface attached or detached (VIR_DOMAIN_EVENT_ID_DEVICE_ADDED / _REMOVED): the MAC set changed.
pub fn handle_device_change() -> Action {
    Action::Reread
}

/// Opens a read-only connection (enough to list domains and read their XML).
pub fn connect(uri: &str) -> Result<Connect, Error> {
    // libvirt's default handler prints every error (e.g. "Domain not found" for an absent VM) to
    // the terminal; the errors come back as values and are logged by the caller instead.
    virt::error::clear_error_callback();
    Connect::open_read_only(Some(uri))
        .map_err(|source| Error::Libvirt { uri: uri.to_string(), source })
}

/// Resolves one VM: `None` when it is not running on this host (unknown or shut off).
pub fn resolve_one(conn: &Connect, uri: &str, vm: &str) -> Result<Option<VmInfo>, Error> {
    let Ok(domain) = Domain::lookup_by_name(conn, vm) else {
        return Ok(None);
    };
    let libvirt = |source| Error::Libvirt { uri: uri.to_string(), source };
    if !domain.is_active().map_err(libvirt)? {
        return Ok(None);
    }
    let xml = domain.get_xml_desc(0).map_err(libvirt)?;
    parse_domain_xml(vm, &xml).map(Some)
}

/// Resolves every named VM over one connection.
pub fn resolve<'a>(
    conn: &Connect,
    uri: &str,
    vms: impl IntoIterator<Item = &'a str>,
) -> Result<BTreeMap<String, Option<VmInfo>>, Error> {
    vms.into_iter().map(|vm| Ok((vm.to_string(), resolve_one(conn, uri, vm)?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = r#"<domain type='kvm' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
  <name>web01</name>
  <devices>
    <disk type='file'><target dev='vda'/></disk>
    <interface type='bridge'>
      <mac address='52:54:00:AA:bb:01'/>
      <source bridge='br0'/>
      <target dev='vnet3'/>
    </interface>
    <interface type='network'>
      <mac address='52:54:00:aa:bb:02'/>
      <source network='default'/>
    </interface>
    <interface type='ethernet'><target dev='ctap-web01'/></interface>
  </devices>
</domain>"#;

    #[test]
    fn reads_interface_macs_and_taps_only() {
        let info = parse_domain_xml("web01", XML).unwrap();
        assert_eq!(info.macs, vec![[0x52, 0x54, 0, 0xaa, 0xbb, 1], [0x52, 0x54, 0, 0xaa, 0xbb, 2]]);
        // The disk's <target dev='vda'> is not a tap.
        assert_eq!(info.taps, vec!["vnet3".to_string(), "ctap-web01".to_string()]);
    }

    #[test]
    fn bad_xml_and_bad_mac_are_errors_naming_the_vm() {
        let err = parse_domain_xml("web01", "<domain><devices>").unwrap_err();
        assert!(err.to_string().contains("\"web01\""), "{err}");
        let bad = XML.replace("52:54:00:aa:bb:02", "52:54:00:aa:bb");
        let err = parse_domain_xml("web01", &bad).unwrap_err();
        assert!(err.to_string().contains("52:54:00:aa:bb"), "{err}");
        assert_eq!(parse_mac("52:54:00:aa:bb:0g"), None);
        assert_eq!(parse_mac("52:54:00:aa:bb:01:02"), None);
    }

    #[test]
    fn migration_events() {
        use sys::*;
        let ev = |e: u32, d: u32| handle_lifecycle(e as i32, d as i32);
        // Destination: the VM arrives.
        assert_eq!(ev(VIR_DOMAIN_EVENT_STARTED, VIR_DOMAIN_EVENT_STARTED_MIGRATED), Action::Reread);
        assert_eq!(ev(VIR_DOMAIN_EVENT_RESUMED, VIR_DOMAIN_EVENT_RESUMED_MIGRATED), Action::Reread);
        // Source: paused while memory is copied (still armed), then gone.
        assert_eq!(
            ev(VIR_DOMAIN_EVENT_SUSPENDED, VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED),
            Action::Keep
        );
        assert_eq!(ev(VIR_DOMAIN_EVENT_STOPPED, VIR_DOMAIN_EVENT_STOPPED_MIGRATED), Action::Forget);
        assert_eq!(ev(VIR_DOMAIN_EVENT_UNDEFINED, 0), Action::Forget);
        assert_eq!(ev(VIR_DOMAIN_EVENT_DEFINED, 0), Action::Reread);
        assert_eq!(handle_device_change(), Action::Reread);
    }

    /// A real libvirt connection (the test driver, no daemon): a running VM resolves to its
    /// MACs and tap, an unknown one to absent, and destroying the VM makes it absent.
    #[test]
    fn resolves_through_the_test_driver() {
        let uri = "test:///default";
        let rw = Connect::open(Some(uri)).unwrap();
        let conn = connect(uri).unwrap();
        let got = resolve(&conn, uri, ["test", "nosuchvm"]).unwrap();
        let test = got["test"].clone().expect("test domain is running");
        assert_eq!(test.macs, vec![[0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]]);
        assert_eq!(test.taps, vec!["testnet0".to_string()]);
        assert_eq!(got["nosuchvm"], None);
        // test:///default is one shared instance per process: the read-only connection sees it.
        Domain::lookup_by_name(&rw, "test").unwrap().destroy().unwrap();
        assert_eq!(resolve_one(&conn, uri, "test").unwrap(), None);
    }
}
