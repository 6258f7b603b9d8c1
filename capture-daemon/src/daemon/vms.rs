//! `vm` targets in a running daemon: the VMs' MACs as libvirt reports them, kept up to date by
//! the watcher thread ([`crate::libvirt::spawn_watcher`]) and pushed into the BPF maps of every
//! interface in place ([`crate::bpf::Filter::update`]): no reload, no restart, no frame of
//! another target lost.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, Sender};

use super::reload::apply_reload;
use super::{Control, Running};
use crate::bpf::{Slots, TargetTables, VmMacs};
use crate::config::{Config, InterfaceConfig, Mode, Queues, XdpMode, ZeroCopy, format_mac};
use crate::libvirt::{self, VmUpdate, Watcher};
use crate::netdev;

/// The distinct VM names of `config`'s targets, sorted.
pub(super) fn vm_names(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = config.targets.iter().filter_map(|t| t.vm.clone()).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The tap devices of the VMs present on this host, by VM name.
pub(super) type VmTaps = BTreeMap<String, Vec<String>>;

/// Reads the VMs once, before the programs are attached, so that the capture starts with
/// them armed. libvirt unreachable: a warning, every VM absent until the watcher gets through.
pub(super) fn resolve_at_start(config: &Config) -> (VmMacs, VmTaps) {
    let names = vm_names(config);
    if names.is_empty() {
        return (VmMacs::new(), VmTaps::new());
    }
    let uri = &config.libvirt.uri;
    let resolved = libvirt::connect(uri).and_then(|mut conn| {
        let r = libvirt::resolve(&conn, uri, names.iter().map(String::as_str));
        let _ = conn.close();
        r
    });
    match resolved {
        Ok(found) => {
            let (mut vms, mut taps) = (VmMacs::new(), VmTaps::new());
            for (vm, info) in found {
                log_change(&vm, info.as_ref().map(|i| i.macs.as_slice()));
                if let Some(info) = info {
                    vms.insert(vm.clone(), info.macs);
                    taps.insert(vm, info.taps);
                }
            }
            (vms, taps)
        }
        Err(e) => {
            log::warn!(
                "{e}; the vm targets match nothing until libvirt answers (retried in the \
                 background; see docs/operations.md on the socket's permissions)"
            );
            (VmMacs::new(), VmTaps::new())
        }
    }
}

/// `config` with, if it has `vm_taps`, the tap devices of its VMs that are present and exist on
/// the host as tap-mode interfaces (after its own, each name once).
pub(super) fn with_taps(config: &Config, taps: &VmTaps) -> Config {
    let mut c = config.clone();
    if !c.vm_taps {
        return c;
    }
    for tap in vm_names(config).iter().filter_map(|vm| taps.get(vm)).flatten() {
        if c.interfaces.iter().any(|i| &i.name == tap) {
            continue;
        }
        // A tap libvirt names but the host lacks (yet) is taken when it appears.
        if matches!(netdev::lookup(tap), Ok(Some(_))) {
            c.interfaces.push(InterfaceConfig {
                name: tap.clone(),
                mode: Mode::Tap,
                queues: Queues::All,
                xdp_mode: XdpMode::Auto,
                zero_copy: ZeroCopy::Auto,
            });
        }
    }
    c
}

/// With `vm_taps`: when the VMs' taps on the host differ from the interfaces captured, capture
/// exactly those, through the same path as a reload (those that stay are not touched).
pub(super) fn follow_taps(
    running: &mut Running,
    config: &mut Config,
    file_config: &Config,
    slots: &mut Slots,
) {
    if !file_config.vm_taps {
        return;
    }
    let want = with_taps(file_config, &running.vm_taps);
    let names = |c: &Config| c.interfaces.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
    let (before, after) = (names(config), names(&want));
    // A set that failed is tried again only once it changes, not every second.
    if after == before || running.vm_taps_failed.as_ref() == Some(&after) {
        return;
    }
    if let Err(e) = apply_reload(running, config, slots, want) {
        log::error!("vm_taps: cannot capture on {after:?} (was {before:?}): {e:#}");
        running.vm_taps_failed = Some(after);
        return;
    }
    running.vm_taps_failed = None;
    log::info!("vm_taps: capturing on {} (was {})", after.join(", "), before.join(", "));
}

fn log_change(vm: &str, macs: Option<&[[u8; 6]]>) {
    match macs {
        Some(macs) => {
            let list: Vec<String> = macs.iter().map(format_mac).collect();
            log::info!(
                "VM {vm}: on this host, MACs [{}]; its targets capture them",
                list.join(", ")
            );
        }
        None => log::info!(
            "VM {vm}: not running on this host; its targets match nothing until it starts or \
             migrates here"
        ),
    }
}

/// The watcher for `config`'s VMs, if it has any; its updates go to `updates` and wake the
/// main loop. A failure costs the live updates, not the capture.
pub(super) fn start_watcher(
    config: &Config,
    updates: &Sender<VmUpdate>,
    control: &Control,
) -> Option<Watcher> {
    let names = vm_names(config);
    if names.is_empty() {
        return None;
    }
    let control = control.clone();
    let notify = Box::new(move || control.wake());
    libvirt::spawn_watcher(config.libvirt.uri.clone(), names, updates.clone(), notify)
        .map_err(|e| log::error!("{e}; VMs are not followed live (a reload retries)"))
        .ok()
}

/// After a reload: a new watcher if the VMs or the URI changed (the old one stops).
pub(super) fn rewatch(
    watcher: &mut Option<Watcher>,
    config: &Config,
    updates: &Sender<VmUpdate>,
    control: &Control,
) {
    let names = vm_names(config);
    let same = match watcher {
        Some(w) => w.uri == config.libvirt.uri && w.vms == names,
        None => names.is_empty(),
    };
    if !same {
        *watcher = None;
        *watcher = start_watcher(config, updates, control);
    }
}

/// Applies the watcher's pending updates: the maps of every interface are rewritten in place
/// when a VM's MACs changed. Returns whether any did.
pub(super) fn apply_updates(
    running: &mut Running,
    config: &Config,
    slots: &Slots,
    updates: &Receiver<VmUpdate>,
) -> bool {
    let mut changed = false;
    for (vm, info) in updates.try_iter() {
        let macs = info.as_ref().map(|i| &i.macs);
        let taps = info.as_ref().map(|i| &i.taps);
        if running.vms.get(&vm) == macs && running.vm_taps.get(&vm) == taps {
            continue;
        }
        log_change(&vm, macs.map(Vec::as_slice));
        match info {
            Some(info) => {
                running.vm_taps.insert(vm.clone(), info.taps);
                running.vms.insert(vm, info.macs);
            }
            None => {
                running.vm_taps.remove(&vm);
                running.vms.remove(&vm);
            }
        }
        changed = true;
    }
    if !changed {
        return false;
    }
    // The targets are those the slots were assigned for: each keeps its slot.
    let tables = slots.clone().assign(&config.targets).and_then(|s| {
        TargetTables::build_with_vms(&config.capture, &config.targets, &s, &running.vms)
    });
    let tables = match tables {
        Ok(t) => t,
        Err(e) => {
            log::error!("VM update: {e}; the previous MACs stay armed");
            return true;
        }
    };
    for r in &mut running.ifaces {
        if let Err(e) = r.filter.update(&tables) {
            log::error!("{}: cannot update the maps for a VM change: {e}", r.spec.name);
        }
    }
    running.tables = tables;
    if let Ok(mut view) = running.stats.view.write() {
        view.vms = presence(config, &running.vms);
    }
    true
}

/// Per `vm` target: (target, vm, present on this host).
pub(super) fn presence(config: &Config, vms: &VmMacs) -> Vec<(String, String, bool)> {
    (config.targets.iter())
        .filter_map(|t| t.vm.as_ref().map(|vm| (t.name.clone(), vm.clone(), vms.contains_key(vm))))
        .collect()
}
