//! VMs named through libvirt: what a `vm = "NAME"` target resolves to.
//!
//! This is the pure core the daemon's watcher builds on: reading a domain's interface MACs and tap
//! devices from its XML, deciding what a lifecycle event means for a target, and resolving a set of
//! VM names over one libvirt connection. A VM counts as present on this host while its domain is
//! running here; an absent VM's target must match nothing (not "any MAC") until it arrives.

use std::collections::BTreeMap;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

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
    #[error("registering libvirt's event loop: {0}")]
    EventLoop(String),
    #[error("starting the libvirt watcher thread: {0}")]
    Thread(String),
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

/// A change of one watched VM: `None` means absent (its targets match nothing).
pub type VmUpdate = (String, Option<VmInfo>);

/// A running watcher thread; dropping it stops the thread.
pub struct Watcher {
    pub uri: String,
    pub vms: Vec<String>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        // The loop looks at `stop` at least twice a second (the tick), or between retries.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How long to wait before reconnecting after `failures` failed attempts in a row: 1 s,
/// doubling, at most 30 s.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(5)).min(Duration::from_secs(30))
}

/// Watches `vms` on `uri` from a thread of its own: on each connection, first sends each VM's
/// current state, then one update per lifecycle or interface event that concerns a watched VM;
/// `notify` runs after each batch of updates (it wakes the daemon's main loop). A connection
/// that cannot be opened or is lost is retried with [`backoff`]; meanwhile nothing is sent, so
/// the last known MACs stay armed. Logs a warning once per outage and an info line on
/// reconnecting.
pub fn spawn_watcher(
    uri: String,
    vms: Vec<String>,
    updates: Sender<VmUpdate>,
    notify: Box<dyn Fn() + Send>,
) -> Result<Watcher, Error> {
    init_event_loop()?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (uri, vms, stop) = (uri.clone(), vms.clone(), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("libvirt".into())
            .spawn(move || watch(&uri, &vms, &updates, &*notify, &stop))
            .map_err(|e| Error::Thread(e.to_string()))?
    };
    Ok(Watcher { uri, vms, stop, thread: Some(thread) })
}

/// Registers libvirt's default event loop (once per process: it must exist before a
/// connection registers callbacks) and a timer that wakes it twice a second, so the watcher
/// looks at its stop flag and the connection's health even without events.
fn init_event_loop() -> Result<(), Error> {
    static INIT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let done = INIT.get_or_init(|| {
        virt::event::event_register_default_impl().map_err(|e| e.to_string())?;
        // SAFETY: a no-op callback with no opaque data to free.
        unsafe { sys::virEventAddTimeout(500, Some(tick), std::ptr::null_mut(), None) };
        Ok(())
    });
    done.clone().map_err(Error::EventLoop)
}

/// Why a watch session ended.
enum Ended {
    /// Stopped, or nobody listens any more.
    Done,
    /// The connection failed or was lost: retry.
    Lost(String),
}

fn watch(
    uri: &str,
    vms: &[String],
    updates: &Sender<VmUpdate>,
    notify: &dyn Fn(),
    stop: &AtomicBool,
) {
    let mut failures = 0u32;
    let mut outage = false;
    while !stop.load(Relaxed) {
        match session(uri, vms, updates, notify, stop, &mut outage, &mut failures) {
            Ended::Done => return,
            Ended::Lost(why) => {
                if !outage {
                    log::warn!(
                        "libvirt at {uri:?}: {why}; retrying, and the last known MACs of the VMs                          stay armed meanwhile"
                    );
                    outage = true;
                }
                let until = Instant::now() + backoff(failures);
                failures = failures.saturating_add(1);
                while Instant::now() < until && !stop.load(Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// One connection's life: connect, register, send every VM's state, then follow events until
/// stopped or the connection is lost.
fn session(
    uri: &str,
    vms: &[String],
    updates: &Sender<VmUpdate>,
    notify: &dyn Fn(),
    stop: &AtomicBool,
    outage: &mut bool,
    failures: &mut u32,
) -> Ended {
    let mut conn = match connect(uri) {
        Ok(c) => c,
        Err(Error::Libvirt { source, .. }) => return Ended::Lost(source.to_string()),
        Err(e) => return Ended::Lost(e.to_string()),
    };
    // Remote connections: notice a dead peer within ~15 s. Local drivers refuse; that is fine.
    let _ = conn.set_keep_alive(5, 3);
    let (events_tx, events) = std::sync::mpsc::channel::<(String, Action)>();
    let ended = match register_events(&conn, &events_tx) {
        Err(e) => Ended::Lost(e.to_string()),
        Ok(ids) => {
            if std::mem::take(outage) {
                log::info!("libvirt at {uri:?}: connected again; reading the VMs");
            }
            *failures = 0;
            let ended = follow(&conn, uri, vms, &events, updates, notify, stop);
            for id in ids {
                // SAFETY: ids returned by virConnectDomainEventRegisterAny on this connection.
                unsafe { sys::virConnectDomainEventDeregisterAny(conn.as_ptr(), id) };
            }
            ended
        }
    };
    let _ = conn.close();
    ended
}

fn follow(
    conn: &Connect,
    uri: &str,
    vms: &[String],
    events: &std::sync::mpsc::Receiver<(String, Action)>,
    updates: &Sender<VmUpdate>,
    notify: &dyn Fn(),
    stop: &AtomicBool,
) -> Ended {
    let lost = |e: Error| match e {
        Error::Libvirt { source, .. } => Ended::Lost(source.to_string()),
        e => Ended::Lost(e.to_string()),
    };
    // Everything may have changed while not connected.
    for vm in vms {
        match resolve_one(conn, uri, vm) {
            Ok(info) => {
                if updates.send((vm.clone(), info)).is_err() {
                    return Ended::Done;
                }
            }
            // A domain whose XML cannot be read keeps its last known MACs.
            Err(e @ (Error::Xml { .. } | Error::BadMac { .. })) => log::warn!("VM {vm:?}: {e}"),
            Err(e) => return lost(e),
        }
    }
    notify();
    loop {
        if stop.load(Relaxed) {
            return Ended::Done;
        }
        if let Err(e) = virt::event::event_run_default_impl() {
            log::warn!("libvirt event loop: {e}");
        }
        let mut sent = false;
        for (vm, action) in events.try_iter() {
            if !vms.contains(&vm) {
                continue;
            }
            let info = match action {
                Action::Keep => continue,
                Action::Forget => None,
                Action::Reread => match resolve_one(conn, uri, &vm) {
                    Ok(info) => info,
                    Err(e @ (Error::Xml { .. } | Error::BadMac { .. })) => {
                        // Keep the last known MACs armed rather than guessing.
                        log::warn!("VM {vm:?}: {e}");
                        continue;
                    }
                    Err(e) => return lost(e),
                },
            };
            if updates.send((vm, info)).is_err() {
                return Ended::Done;
            }
            sent = true;
        }
        if sent {
            notify();
        }
        if !conn.is_alive().unwrap_or(false) {
            return Ended::Lost("the connection was lost".into());
        }
    }
}

unsafe extern "C" fn tick(_timer: libc::c_int, _opaque: *mut libc::c_void) {}

type EventSender = std::sync::mpsc::Sender<(String, Action)>;

/// Registers the lifecycle and device callbacks; each pushes (domain name, action) to `tx`.
fn register_events(conn: &Connect, tx: &EventSender) -> Result<Vec<i32>, virt::error::Error> {
    // virt 0.4 has no wrapper for virConnectDomainEventRegisterAny: libvirt takes a generic
    // callback pointer whose real signature depends on the event ID, and an opaque pointer that
    // it frees with `free_sender` when the registration ends.
    type Generic = unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut libc::c_void);
    type LifecycleCb = unsafe extern "C" fn(
        sys::virConnectPtr,
        sys::virDomainPtr,
        libc::c_int,
        libc::c_int,
        *mut libc::c_void,
    ) -> libc::c_int;
    type DeviceCb = unsafe extern "C" fn(
        sys::virConnectPtr,
        sys::virDomainPtr,
        *const libc::c_char,
        *mut libc::c_void,
    );
    let lifecycle_cb: LifecycleCb = lifecycle;
    let device_cb: DeviceCb = device;
    let regs: [(u32, Generic); 3] = [
        // SAFETY: these are the signatures libvirt documents for these event IDs.
        (sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE, unsafe {
            std::mem::transmute::<LifecycleCb, Generic>(lifecycle_cb)
        }),
        (sys::VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, unsafe {
            std::mem::transmute::<DeviceCb, Generic>(device_cb)
        }),
        (sys::VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, unsafe {
            std::mem::transmute::<DeviceCb, Generic>(device_cb)
        }),
    ];
    let mut ids = Vec::new();
    for (id, cb) in regs {
        let opaque = Box::into_raw(Box::new(tx.clone())).cast::<libc::c_void>();
        // SAFETY: conn is a live connection; opaque is owned by libvirt from here on.
        let ret = unsafe {
            sys::virConnectDomainEventRegisterAny(
                conn.as_ptr(),
                std::ptr::null_mut(),
                id as libc::c_int,
                Some(cb),
                opaque,
                Some(free_sender),
            )
        };
        if ret < 0 {
            // SAFETY: libvirt did not take ownership on failure.
            drop(unsafe { Box::from_raw(opaque.cast::<EventSender>()) });
            let err = virt::error::Error::last_error();
            for id in ids {
                // SAFETY: registered just above on this connection.
                unsafe { sys::virConnectDomainEventDeregisterAny(conn.as_ptr(), id) };
            }
            return Err(err);
        }
        ids.push(ret);
    }
    Ok(ids)
}

/// The domain's name, or None for a null/odd pointer (never expected from libvirt).
unsafe fn domain_name(dom: sys::virDomainPtr) -> Option<String> {
    // SAFETY: dom is valid for the callback's duration; the name belongs to it.
    let name = unsafe { sys::virDomainGetName(dom) };
    (!name.is_null())
        .then(|| unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy().into_owned())
}

unsafe extern "C" fn lifecycle(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    event: libc::c_int,
    detail: libc::c_int,
    opaque: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: opaque is the EventSender boxed in register_events, alive until free_sender.
    let tx = unsafe { &*opaque.cast::<EventSender>() };
    if let Some(name) = unsafe { domain_name(dom) } {
        log::info!("libvirt: domain {name:?} event {event} detail {detail}");
        let _ = tx.send((name, handle_lifecycle(event, detail)));
    }
    0
}

unsafe extern "C" fn device(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    _alias: *const libc::c_char,
    opaque: *mut libc::c_void,
) {
    // SAFETY: as in `lifecycle`.
    let tx = unsafe { &*opaque.cast::<EventSender>() };
    if let Some(name) = unsafe { domain_name(dom) } {
        let _ = tx.send((name, handle_device_change()));
    }
}

unsafe extern "C" fn free_sender(opaque: *mut libc::c_void) {
    // SAFETY: called once by libvirt with the pointer boxed in register_events.
    drop(unsafe { Box::from_raw(opaque.cast::<EventSender>()) });
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

    /// Live updates through real libvirt events on the test driver: starting a VM arms its
    /// MACs, destroying it makes it absent.
    #[test]
    fn watcher_follows_start_and_stop() {
        let uri = "test:///default";
        let (tx, updates) = std::sync::mpsc::channel();
        // A guard against hanging if an event never comes, not a timing assertion.
        let rx = Guard(updates);
        let _watcher =
            spawn_watcher(uri.into(), vec!["evt01".into()], tx, Box::new(|| {})).unwrap();
        assert_eq!(rx.recv().unwrap(), ("evt01".to_string(), None));
        let rw = Connect::open(Some(uri)).unwrap();
        let xml = "<domain type='test'><name>evt01</name><memory>1024</memory><os><type>hvm</type></os>\
            <devices><interface type='ethernet'><mac address='52:54:00:00:e0:01'/>\
            <target dev='ctap-evt01'/></interface></devices></domain>";
        let dom = Domain::create_xml(&rw, xml, 0).unwrap();
        let (vm, info) = rx.recv().unwrap();
        assert_eq!(vm, "evt01");
        let info = info.expect("started VM is present");
        assert_eq!(info.macs, vec![[0x52, 0x54, 0, 0, 0xe0, 1]]);
        assert_eq!(info.taps, vec!["ctap-evt01".to_string()]);
        dom.destroy().unwrap();
        assert_eq!(rx.recv().unwrap(), ("evt01".to_string(), None));
    }

    /// An unreachable libvirt is not fatal: the watcher keeps retrying (sending nothing, so
    /// the last known MACs stay armed) until it is dropped.
    #[test]
    fn unreachable_libvirt_is_retried_not_fatal() {
        let uri = "qemu+unix:///system?socket=/nonexistent/libvirt-sock";
        let (tx, updates) = std::sync::mpsc::channel();
        let watcher = spawn_watcher(uri.into(), vec!["web01".into()], tx, Box::new(|| {}))
            .expect("an unreachable libvirt does not fail the watcher");
        // Two attempts at least (the first retry comes after 1 s), and not one update.
        std::thread::sleep(Duration::from_millis(1500));
        assert!(updates.try_recv().is_err());
        drop(watcher);
        assert!(matches!(updates.try_recv(), Err(std::sync::mpsc::TryRecvError::Disconnected)));
        assert_eq!(
            (0..8).map(|n| backoff(n).as_secs()).collect::<Vec<_>>(),
            vec![1, 2, 4, 8, 16, 30, 30, 30]
        );
    }

    struct Guard(std::sync::mpsc::Receiver<VmUpdate>);
    impl Guard {
        fn recv(&self) -> Result<VmUpdate, std::sync::mpsc::RecvTimeoutError> {
            self.0.recv_timeout(std::time::Duration::from_secs(60))
        }
    }
}
