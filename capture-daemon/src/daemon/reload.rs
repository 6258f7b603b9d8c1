//! Changing a running capture: a reloaded configuration (SIGHUP, `--watch-config`) and
//! interfaces that vanish from the host and come back. Only what changed is touched.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::iface::prepare;
use super::{
    IfaceRun, IfaceStats, InterfaceChange, Reconfigure, ResolvedInterface, Running, SocketSettings,
    View, describe_targets, finish_all, interface_infos, resolve_interface, warn_mirror_mode,
};
use crate::bpf::{Slots, TargetTables};
use crate::config::{Config, InterfaceConfig};
use crate::writer::Source;
use crate::{netdev, sys};

/// A configured interface that is not captured now: gone from the host, or it failed to
/// (re)start. The main loop tries it again every second ([`check_interfaces`]).
pub(super) struct Missing {
    pub(super) config: InterfaceConfig,
    /// When its last failure to come back was logged.
    pub(super) logged: Option<Instant>,
}

/// How often a missing interface's failure to come back is logged again.
pub(super) const MISSING_LOG_EVERY: Duration = Duration::from_secs(60);

/// Makes `kept` and `started` the captured interfaces, in the order of `config.interfaces`: the
/// rings of those just started get their index as interface id, the writer finishes its file
/// and starts one describing them, the metrics follow.
pub(super) fn install_interfaces(
    running: &mut Running,
    config: &Config,
    kept: Vec<IfaceRun>,
    started: Vec<(IfaceRun, Vec<Source>)>,
) {
    let mut runs: Vec<(IfaceRun, Vec<Source>)> =
        kept.into_iter().map(|r| (r, Vec::new())).chain(started).collect();
    runs.sort_by_key(|(r, _)| config.interfaces.iter().position(|i| i.name == r.spec.name));
    let mut new_sources = Vec::new();
    for (id, (_, sources)) in (0u32..).zip(&mut runs) {
        new_sources.extend(sources.drain(..).map(|s| Source { interface_id: id, ..s }));
    }
    running.ifaces = runs.into_iter().map(|(r, _)| r).collect();
    let ifaces: Vec<Arc<IfaceStats>> =
        running.ifaces.iter().map(|r| Arc::clone(&r.stats)).collect();
    if let Ok(mut list) = running.stats.ifaces.write() {
        list.clone_from(&ifaces);
    }
    running.tell_writer(config, Some(InterfaceChange { ifaces, sources: new_sources }));
    running.publish_missing();
}

impl Running {
    /// Names of the missing interfaces, for the metrics and the status line.
    pub(super) fn publish_missing(&self) {
        if let Ok(mut view) = self.stats.view.write() {
            view.missing = self.missing.iter().map(|m| m.config.name.clone()).collect();
        }
    }

    /// The names of the captured interfaces, in file order.
    pub(super) fn names(&self) -> Vec<&str> {
        self.ifaces.iter().map(|r| r.spec.name.as_str()).collect()
    }

    /// Hands the writer `config`'s output settings and interface descriptions, and `change`
    /// when the interfaces changed.
    fn tell_writer(&self, config: &Config, change: Option<InterfaceChange>) {
        let slots = self.stats.view.read().map(|v| v.targets.clone()).unwrap_or_default();
        let _ = self.reconfigure.send(Reconfigure {
            output: config.output.clone(),
            infos: interface_infos(config, &self.names(), &sys::hostname()),
            targets: super::target_routes(config, &slots),
            at_ns: crate::source::monotonic_ns(),
            interfaces: change,
        });
    }
}

/// Once a second: an interface that vanished (deleted, renamed, its driver reloaded) is
/// dropped from the capture, with an error in the log, and captured again as soon as an
/// interface of that name is back. Without this the daemon would capture nothing from it,
/// silently, for as long as it runs. A one-shot capture to a stream (whose interfaces are
/// fixed) ends instead, as dumpcap does: returns true then.
pub(super) fn check_interfaces(running: &mut Running, config: &Config) -> bool {
    let (kept, gone): (Vec<IfaceRun>, Vec<IfaceRun>) = std::mem::take(&mut running.ifaces)
        .into_iter()
        // A failed lookup (no fd left, say) is no sign that the interface is gone.
        .partition(|r| match netdev::lookup(&r.spec.name) {
            Ok(index) => index == Some(r.ifindex),
            Err(_) => true,
        });
    if running.stream && !gone.is_empty() {
        for r in &gone {
            log::error!("{}: the interface is gone; ending the capture", r.spec.name);
        }
        running.ifaces = kept.into_iter().chain(gone).collect();
        return true;
    }
    for r in &gone {
        log::error!(
            "{}: the interface is gone (deleted, renamed or its driver reloaded); not captured \
             until it is back",
            r.spec.name
        );
        if let Some(c) = config.interfaces.iter().find(|i| i.name == r.spec.name) {
            running.missing.push(Missing { config: c.clone(), logged: Some(Instant::now()) });
        }
    }
    let changed = !gone.is_empty();
    finish_all(gone);

    let settings = SocketSettings::of(&config.capture);
    let targets = describe_targets(config);
    let mut started = Vec::new();
    let mut still_missing = Vec::new();
    for mut m in std::mem::take(&mut running.missing) {
        if !matches!(netdev::lookup(&m.config.name), Ok(Some(_))) {
            still_missing.push(m);
            continue;
        }
        let spec = resolve_interface(&m.config);
        match spec.and_then(|spec| IfaceRun::start(spec, settings, &running.tables, &targets)) {
            Ok(s) => {
                log::info!("{}: back; capturing it again", m.config.name);
                warn_mirror_mode(&[&m.config]);
                started.push(s);
            }
            Err(e) => {
                if m.logged.is_none_or(|t| t.elapsed() >= MISSING_LOG_EVERY) {
                    log::warn!("{}: still not captured: {e:#}", m.config.name);
                    m.logged = Some(Instant::now());
                }
                still_missing.push(m);
            }
        }
    }
    running.missing = still_missing;
    if changed || !started.is_empty() {
        install_interfaces(running, config, kept, started);
    } else {
        running.ifaces = kept;
    }
    false
}

/// Applies a reloaded configuration, changing only what changed:
/// - targets, `snaplen` and `unmatched` go into the BPF maps of the interfaces that stay, in
///   place ([`Filter::update`]): no detach, no new program, no frame of an unchanged target lost;
/// - interfaces added are opened and attached before anything else changes (if one fails, the
///   reload is rejected as a whole); interfaces removed are detached and drained;
/// - an interface whose settings changed (`queues`, `xdp_mode`, `zero_copy`, or the socket
///   settings of `[capture]`) is restarted: its sockets must be reopened, which leaves a gap
///   (logged) in which its frames go to the host, not counted;
/// - an interface missing from the host may stay configured: it is captured when it is back;
/// - `[output]` settings apply from the next file, or at once when the interfaces changed (a
///   file describes a fixed set of interfaces);
/// - `[metrics]` changes restart the endpoint (in the caller).
pub(super) fn apply_reload(
    running: &mut Running,
    config: &mut Config,
    slots: &mut Slots,
    new: Config,
) -> anyhow::Result<()> {
    // Check everything that can be checked before changing anything. An interface that is
    // captured or missing now may be absent from the host (it is then missing); a new one may
    // not: that is most likely a typo.
    let known = |name: &str| {
        running.ifaces.iter().any(|r| r.spec.name == name)
            || running.missing.iter().any(|m| m.config.name == name)
    };
    let mut specs = Vec::new();
    let mut absent = Vec::new();
    for i in &new.interfaces {
        match resolve_interface(i) {
            Ok(spec) => specs.push(spec),
            Err(_) if known(&i.name) && netdev::ifindex(&i.name).is_err() => absent.push(i.clone()),
            Err(e) => return Err(e),
        }
    }
    if (&new.output.directory, &new.output.prefix, &new.output.group)
        != (&config.output.directory, &config.output.prefix, &config.output.group)
    {
        crate::writer::rotate::prepare_output(&new.output).context("the new [output] settings")?;
    }
    let mut new_slots = slots.clone();
    let assigned = new_slots.assign(&new.targets)?;
    let tables = TargetTables::build_with_vms(&new.capture, &new.targets, &assigned, &running.vms)?;
    let settings = SocketSettings::of(&new.capture);
    let targets = describe_targets(&new);
    let unchanged = |r: &IfaceRun| specs.contains(&r.spec) && r.settings == settings;
    let was_missing = |name: &str| running.missing.iter().any(|m| m.config.name == name);

    // Interfaces new to the capture: opened and attached first, so that a failure (a busy NIC,
    // a queue that cannot be bound) rejects the reload with nothing changed. One that was
    // missing and fails again just stays missing.
    let mut started: Vec<(IfaceRun, Vec<Source>)> = Vec::new();
    let mut failed = Vec::new();
    for spec in specs.iter().filter(|s| !running.ifaces.iter().any(|r| r.spec.name == s.name)) {
        match IfaceRun::start(spec.clone(), settings, &tables, &targets) {
            Ok(s) => started.push(s),
            Err(e) if was_missing(&spec.name) => {
                log::warn!("reload: {} is still not captured: {e:#}", spec.name);
                failed.push(spec.name.clone());
            }
            Err(e) => {
                finish_all(started.into_iter().map(|(r, _)| r).collect());
                return Err(e.context(format!("adding interface {}", spec.name)));
            }
        }
    }
    let added: Vec<&InterfaceConfig> = new
        .interfaces
        .iter()
        .filter(|i| started.iter().any(|(r, _)| r.spec.name == i.name))
        .collect();
    warn_mirror_mode(&added);

    // The interfaces that stay: new tables in place. Should that fail on one, those already
    // changed get the running tables back: a rejected reload changes nothing.
    let mut failure = None;
    for (i, r) in running.ifaces.iter_mut().filter(|r| unchanged(r)).enumerate() {
        if let Err(e) = r.filter.update(&tables) {
            failure = Some((i, r.spec.name.clone(), e));
            break;
        }
    }
    if let Some((updated, name, e)) = failure {
        for r in running.ifaces.iter_mut().filter(|r| unchanged(r)).take(updated) {
            let _ = r.filter.update(&running.tables);
        }
        finish_all(started.into_iter().map(|(r, _)| r).collect());
        return Err(anyhow::Error::new(e).context(format!("updating the maps of {name}")));
    }

    // The others are stopped; those still configured start again with their new settings.
    let (keep, gone): (Vec<IfaceRun>, Vec<IfaceRun>) =
        std::mem::take(&mut running.ifaces).into_iter().partition(|r| unchanged(r));
    let mut removed = Vec::new();
    let mut restarts = Vec::new();
    for r in gone {
        match specs.iter().find(|s| s.name == r.spec.name) {
            Some(spec) => {
                log::warn!(
                    "reload: restarting the capture on {} to apply {}: its frames are not captured \
                     until it is attached anew",
                    r.spec.name,
                    what_changed(&r.spec, r.settings, spec, settings)
                );
                restarts.push((r, spec.clone()));
            }
            None => {
                if absent.iter().any(|a| a.name == r.spec.name) {
                    log::error!("reload: {} is gone from the host; detaching", r.spec.name);
                } else {
                    log::info!("reload: {} is no longer captured; detaching", r.spec.name);
                }
                removed.push(r);
            }
        }
    }
    let interfaces_changed = !removed.is_empty() || !restarts.is_empty() || !started.is_empty();
    finish_all(removed);
    // One interface after the other, each with its new program loaded (and verified) and its
    // hand-off rings made before the old one is detached: the gap on each is only the time to
    // close and reopen its sockets.
    for (old, spec) in restarts {
        let (name, old_spec, old_settings) = (spec.name.clone(), old.spec.clone(), old.settings);
        let prepared = prepare(&spec, settings, &tables);
        let gap = Instant::now();
        finish_all(vec![old]);
        let stopped = gap.elapsed();
        let restarted =
            prepared.and_then(|prepared| IfaceRun::start_with(prepared, spec, settings, &targets));
        match restarted {
            Ok(s) => {
                log::info!(
                    "reload: {name} restarted; not captured for {} ms ({} ms to stop the old \
                     capture)",
                    gap.elapsed().as_millis(),
                    stopped.as_millis()
                );
                started.push(s);
            }
            Err(e) => {
                log::error!("reload: cannot restart the capture on {name}: {e:#}");
                match IfaceRun::start(old_spec, old_settings, &tables, &targets) {
                    Ok(s) => {
                        log::warn!("reload: {name} captures with its previous settings");
                        started.push(s);
                    }
                    Err(e) => {
                        log::error!("reload: {name} is not captured: {e:#}");
                        failed.push(name);
                    }
                }
            }
        }
    }

    *slots = new_slots;
    running.tables = tables;
    running.missing = new
        .interfaces
        .iter()
        .filter(|i| absent.iter().any(|a| a.name == i.name) || failed.contains(&i.name))
        .map(|i| Missing { config: i.clone(), logged: Some(Instant::now()) })
        .collect();
    *config = new;
    let new_view = View::of(config, slots, &running.vms);
    if let Ok(mut view) = running.stats.view.write() {
        *view = new_view;
    }
    if interfaces_changed {
        install_interfaces(running, config, keep, started);
    } else {
        running.ifaces = keep;
        running.publish_missing();
        running.tell_writer(config, None);
    }
    let missing: Vec<&str> = running.missing.iter().map(|m| m.config.name.as_str()).collect();
    log::info!(
        "reloaded: snaplen {}, unmatched {}, interfaces {}{}, targets: {}; output settings apply \
         from the {} file",
        config.capture.snaplen,
        config.capture.unmatched,
        running.names().join(", "),
        if missing.is_empty() {
            String::new()
        } else {
            format!(" (missing: {})", missing.join(", "))
        },
        describe_targets(config),
        if interfaces_changed { "new" } else { "next" }
    );
    Ok(())
}

/// "queues, ring_size" — the settings of an interface that differ between two configs.
pub(super) fn what_changed(
    old: &ResolvedInterface,
    old_settings: SocketSettings,
    new: &ResolvedInterface,
    settings: SocketSettings,
) -> String {
    let mut what = Vec::new();
    if old.mode != new.mode {
        // The queues follow from the mode (tap mode has none): not a change of their own.
        what.push(format!("mode ({} -> {})", old.mode, new.mode));
    } else if old.queues != new.queues || old.rx_queues != new.rx_queues {
        what.push("queues".to_owned());
    }
    if old.xdp_mode != new.xdp_mode {
        what.push("xdp_mode".to_owned());
    }
    if old.zero_copy != new.zero_copy {
        what.push("zero_copy".to_owned());
    }
    for (name, changed) in [
        ("ring_size", old_settings.ring_size != settings.ring_size),
        ("buffer_bytes", old_settings.buffer_bytes != settings.buffer_bytes),
        ("busy_poll_us", old_settings.busy_poll_us != settings.busy_poll_us),
        ("batch_delay_us", old_settings.batch_delay_us != settings.batch_delay_us),
        ("tap_ring_bytes", old_settings.tap_ring_bytes != settings.tap_ring_bytes),
        (
            "umem_reserved_huge_pages",
            old_settings.umem_reserved_huge_pages != settings.umem_reserved_huge_pages,
        ),
    ] {
        if changed {
            what.push(name.to_owned());
        }
    }
    what.join(", ")
}
